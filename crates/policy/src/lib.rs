//! The policies a process serves, over the engine: local ones (a GGUF on this box) and remote ones (another
//! server's API, through a provider) behind one seam, [`served`], that the HTTP server and the batch
//! command score through; what they report ([`report`], [`ratios`]) and the limits a request is held to
//! ([`request_policy`], [`request_budget`], [`input`]). Free of HTTP-framework types; it knows the engine
//! below it and nothing above.

pub mod input;
pub mod ratios;
pub mod remote;
pub mod report;
pub mod request_budget;
pub mod request_policy;
pub mod served;

use llama_scorer_engine as engine;

#[cfg(test)]
#[path = "../../../tests/support/fuzz_strategies.rs"]
mod fuzz_strategies;

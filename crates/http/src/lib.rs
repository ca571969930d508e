//! The HTTP server: [`server`] binds, loads the engine while probes answer, serves and drains; [`api`] holds
//! the routes (the native `/v1/logprobs`, the Fireworks/OpenAI compatibility endpoints, the tokenizer,
//! probes, metrics and the page) and maps every error to the wire's shape; [`listener`] is the accept loop
//! with per-connection timeouts and a connection limit. It scores through the policy seam
//! ([`llama_scorer_policy::served`]) and reads nothing of the command line or the YAML configuration: it
//! starts from its own [`server::ServerSettings`].

pub mod api;
pub mod listener;
pub mod server;

use llama_scorer_engine as engine;
use llama_scorer_policy::{input, ratios, remote, report, request_budget, request_policy, served};

#[cfg(test)]
#[path = "../../../tests/support/fuzz_strategies.rs"]
mod fuzz_strategies;

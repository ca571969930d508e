//! llama-scorer: exact, reproducible teacher-forcing log-probabilities over llama.cpp, served over HTTP
//! in the native `/v1/logprobs` shape and the Fireworks/OpenAI completions and chat wire format.

pub mod api;
pub mod batch;
pub mod bench;
pub mod config;
pub mod engine;
pub mod gguf;
pub mod input;
pub mod listener;
pub mod ratios;
pub mod remote;
pub mod report;
pub mod request_budget;
pub mod request_policy;
pub mod served;
pub mod server;
pub mod shard;
pub mod sigbus;

#[cfg(test)]
mod fuzz_strategies;

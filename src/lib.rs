//! llama-scorer: exact, reproducible teacher-forcing log-probabilities over llama.cpp, served over HTTP
//! in the native `/v1/logprobs` shape and the Fireworks/OpenAI completions and chat wire format.

pub mod api;
pub mod bench;
pub mod config;
pub mod engine;
pub mod gguf;
pub mod input;
pub mod merge_cmd;
pub mod ratios;
pub mod remote;
pub mod report;
pub mod request_budget;
pub mod request_policy;
pub mod score_cmd;
pub mod served;
pub mod server;
pub mod shard;
pub mod sigbus;
pub mod weights_report;

#[cfg(test)]
mod fuzz_strategies;

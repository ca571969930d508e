//! Integration tests: the real llama.cpp engine on the real GGUF test models, over real HTTP.

mod attack;
mod boundary;
mod cache;
mod cli;
mod common;
mod compat;
mod determinism;
mod devices;
mod digest_cache;
mod errors;
mod fleet;
mod fuzz_http;
/// The hostile-text generators of the library's own property tests.
#[path = "../../src/fuzz_strategies.rs"]
mod fuzz_strategies;
mod hardening;
mod harness_clients;
mod identities;
mod layers;
mod lifetime;
mod model_files;
mod openapi;
mod origin;
mod page;
mod prefix;
mod remote;
mod remote_policies;
mod score_server;
mod startup;
mod weights;

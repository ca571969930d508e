//! Integration tests: the real llama.cpp engine on the real GGUF test models, over real HTTP.

mod boundary;
mod cli;
mod common;
mod compat;
mod determinism;
mod devices;
mod errors;
mod identities;
mod openapi;

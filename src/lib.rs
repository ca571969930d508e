//! llama-scorer: exact, reproducible teacher-forcing log-probabilities over llama.cpp, served over HTTP
//! in the native `/v1/logprobs` shape and the Fireworks/OpenAI completions and chat wire format.
//!
//! # Layout
//!
//! A cargo workspace whose crate graph is the architecture. Each crate's manifest lists only the crates
//! below it, so an import that points up the graph does not compile:
//!
//! ```text
//!   llama-scorer (this package: src/)       the command line and its configuration
//!        │             │
//!   llama-scorer-http  │  (crates/http)     the HTTP server
//!        │     llama-scorer-batch (crates/batch)   the batch formats and commands
//!        │             │
//!   llama-scorer-policy (crates/policy)     served policies, remote providers, reports
//!        │
//!   llama-scorer-engine (crates/engine)     models, inference threads, the decode schedule, GGUF checks
//!        │
//!   llama-cpp-2 / llama-cpp-sys-2           llama.cpp
//! ```
//!
//! **[`engine`]** (`crates/engine`): knows nothing above it.
//! - `lib.rs`: [`engine::Engine`], every loaded model and its policies; [`engine::EngineGuard`] owns the
//!   inference threads and stops and joins them when dropped.
//! - `gguf/`: model files read and checked in plain Rust before llama.cpp sees them.
//! - `model/`: one loaded GGUF — its facts and fingerprint (`info.rs`) and the bounded queue to its
//!   inference threads (`queue.rs`).
//! - `worker.rs`: an inference thread, one llama.cpp context, one job at a time.
//! - `schedule.rs`: the fixed decode schedule (`decode_chunk`-token decodes) every number comes from.
//! - `scoring.rs`, `generate.rs`: one sequence scored, one continuation generated, on that schedule.
//! - `logsoftmax.rs`: log-probabilities of a row of logits, at any temperature.
//! - `policy.rs`: a named distribution — model, template, system prompt, temperature — and its
//!   tokenization with an exact prompt/response boundary (`vocab.rs`, `chat_template.rs`).
//! - `types.rs`, `error.rs`, `settings.rs`: what goes in and comes out, why it failed, what it starts from.
//! - `cache.rs`, `prefix.rs`: the response cache and the prefix cache (saved states of whole prompts).
//! - `fingerprint.rs`, `digest_cache.rs`: what defines the numbers, and the model-file hashes it reuses.
//! - `backend.rs`, `load.rs`, `progress.rs`, `bench.rs`: devices, load gauges, start-up progress, the
//!   engine-only benchmark.
//!
//! **`crates/policy`**: the policies a process serves, free of HTTP.
//! - [`served`]: the policy seam — local and remote policies behind one interface; every front end scores
//!   through it (`completion.rs`: the compatibility endpoints' planning and running of choices).
//! - [`remote`]: scoring through another server; `providers/` holds one file per provider (its name,
//!   defaults, key variable, capabilities and calls) and the registry; `native.rs` and `completions.rs`
//!   are the two protocols they speak; `retry.rs`, `cache.rs`, `status.rs` the rest of a remote call.
//! - [`report`], [`ratios`]: an item's scores wherever computed, and log-ratios against a base.
//! - [`input`], [`request_policy`], [`request_budget`]: inputs as clients write them and the limits a
//!   request is held to.
//!
//! **[`batch`]** (`crates/batch`): `score` and `merge` over JSONL files — records, resume, shards
//! ([`shard`]) and the importance-weight report.
//!
//! **`crates/http`**: [`server`] (bind, load while probes answer, serve, drain), [`api`] (the routes and
//! the wire formats, `compat/` for Fireworks/OpenAI) and [`listener`] (the accept loop and its limits).
//!
//! **This package** (`src/`): `main.rs` and `cli/`, the command line; [`config`], the YAML file and flags
//! validated and turned into each crate's settings; [`bench`] (`bench-engine`); [`sigbus`], the message a
//! truncated model file's SIGBUS leaves.
//!
//! The crates are re-exported under their old module names (`llama_scorer::engine`, `::served`,
//! `::server`, …), so the binary and the integration tests (tests/it) reach everything from here.

pub use llama_scorer_batch as batch;
pub use llama_scorer_batch::shard;
pub use llama_scorer_engine as engine;
pub use llama_scorer_engine::gguf;
pub use llama_scorer_http::{api, listener, server};
pub use llama_scorer_policy::{
    input, ratios, remote, report, request_budget, request_policy, served,
};

pub mod bench;
pub mod config;
pub mod sigbus;

#[cfg(test)]
#[path = "../tests/support/models.rs"]
mod test_models;

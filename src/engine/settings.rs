//! What the engine needs to start, in its own terms: the configuration layer builds these (see
//! `Config::engine_settings`), so the engine never reads the YAML-facing types and the arrow between the
//! two runs one way (config → engine).

use std::path::PathBuf;

pub use super::cache::CacheSettings;

/// Default context size when a policy does not set `n_ctx` (capped by the model's training context).
pub const DEFAULT_N_CTX: u32 = 4096;

/// The context size a policy gets when it does not set `n_ctx`: [`DEFAULT_N_CTX`], capped by what the
/// model was trained with (and never below the smallest context llama.cpp accepts here).
pub fn default_n_ctx(n_ctx_train: u32) -> u32 {
    DEFAULT_N_CTX.min(n_ctx_train.max(8))
}

/// A validated policy: a name bound to a model file and the parameters that define the distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    pub name: String,
    /// Canonical path of the GGUF file: the key of the model pool.
    pub model_path: PathBuf,
    pub temperature: f64,
    pub seed: Option<u64>,
    /// Largest sequence (prompt + response tokens) this policy scores; `None` = server default.
    pub n_ctx: Option<u32>,
    pub n_gpu_layers: i32,
    pub system_prompt: Option<String>,
    pub chat_template: Option<String>,
}

/// Everything [`super::Engine::start`] reads: how threads, queues and caches are sized, and the policies.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// CPU threads for inference, divided between the inference threads of all models.
    pub threads: usize,
    /// Inference threads (llama.cpp contexts) per model.
    pub parallel: usize,
    /// Items that may wait in one model's queue.
    pub queue_size: usize,
    /// Decode chunk size in tokens (part of the decode schedule, so it changes numbers).
    pub decode_chunk: u32,
    /// Byte budget per model of the prefix cache (see [`super::prefix`]); 0 turns it off.
    pub prefix_cache_bytes: u64,
    /// Map model files into memory (llama.cpp's default) rather than read them into it.
    pub mmap: bool,
    /// The response cache.
    pub cache: CacheSettings,
    /// The policies, in configuration order.
    pub policies: Vec<PolicySettings>,
}

//! The scoring engine: a pool of loaded GGUF models, their inference threads, and the policies that
//! name them. Knows nothing of HTTP; the API layer and the batch command are thin front ends over it.

mod backend;
pub mod bench;
pub mod cache;
pub mod chat_template;
pub mod digest_cache;
mod error;
pub mod fingerprint;
pub mod generate;
pub mod load;
pub mod logsoftmax;
mod model;
mod policy;
pub mod prefix;
pub mod progress;
pub mod schedule;
mod scoring;
pub mod settings;
pub mod types;
pub mod vocab;
mod worker;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

pub use backend::{DeviceInfo, Devices, devices, set_backends_dir, set_cpu_variant};
pub use error::ScoreError;
pub use model::{LoadedModel, ModelInfo, QueuePlace, Scored};
pub use policy::Policy;
pub use progress::{FileProgress, FileState, LOAD_HOLD_ENV, LoadProgress};
pub use settings::{CacheSettings, DEFAULT_N_CTX, EngineSettings, PolicySettings};
pub use types::*;
pub use worker::{HOLD_ENV, PANIC_ENV};

/// A start-up failure, naming the policy or model it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// All loaded models and the policies over them. Whatever scores shares it (`Arc<Engine>`); one
/// [`EngineGuard`] owns its inference threads.
pub struct Engine {
    policies: Vec<Arc<Policy>>,
    by_name: HashMap<String, usize>,
    models: Vec<Arc<LoadedModel>>,
    cache: Option<Arc<cache::ScoreCache>>,
}

impl Engine {
    /// Loads every model file once (policies naming the same file share it), starts the inference
    /// threads, and compiles each policy's chat template. Blocks until all contexts exist.
    pub fn start(cfg: &EngineSettings) -> Result<EngineGuard, StartupError> {
        Engine::start_reporting(cfg, &LoadProgress::default())
    }

    /// [`Engine::start`], writing each model file's progress to `progress` as it goes (a server reads it
    /// to answer its probes meanwhile). While the test file [`LOAD_HOLD_ENV`] names exists, a file waits
    /// in `loading` before llama.cpp reads it.
    pub fn start_reporting(
        cfg: &EngineSettings,
        progress: &LoadProgress,
    ) -> Result<EngineGuard, StartupError> {
        backend::backend().map_err(StartupError)?;
        // One entry per distinct file, in the order policies first name them.
        let mut files: Vec<&std::path::Path> = Vec::new();
        for p in &cfg.policies {
            if !files.contains(&p.model_path.as_path()) {
                files.push(&p.model_path);
            }
        }
        // Every context gets at least one thread, so with more contexts than `threads` the decodes
        // oversubscribe the CPU; the log-softmax runs on rayon's pool besides (one thread per core).
        let threads_per_worker = (cfg.threads / (files.len().max(1) * cfg.parallel)).max(1);
        let cache = cache::ScoreCache::new(cfg.cache).map(Arc::new);
        progress.plan(&files);
        let hold = std::env::var_os(LOAD_HOLD_ENV).map(std::path::PathBuf::from);
        let mut models = Vec::new();
        for path in files {
            progress.begin(path);
            if let Some(hold) = &hold {
                worker::wait_while_held(hold);
            }
            let users: Vec<_> = cfg
                .policies
                .iter()
                .filter(|p| p.model_path == path)
                .collect();
            let model = LoadedModel::load(
                path,
                users[0].n_gpu_layers,
                cfg.mmap,
                users.iter().map(|p| p.n_ctx).collect(),
                model::QueueSettings {
                    capacity: cfg.queue_size,
                    workers: cfg.parallel,
                    threads_per_worker,
                    decode_chunk: cfg.decode_chunk,
                    cache: cache.clone(),
                    prefix_cache_bytes: cfg.prefix_cache_bytes,
                },
            )
            .inspect(|_| progress.end(path, true))
            .map_err(|e| {
                progress.end(path, false);
                let names: Vec<_> = users
                    .iter()
                    .map(|p| format!("policies.{}", p.name))
                    .collect();
                StartupError(format!("{}.model: {e}", names.join(", ")))
            })?;
            models.push(Arc::new(model));
        }
        let mut policies = Vec::new();
        let mut by_name = HashMap::new();
        for p in &cfg.policies {
            let model = models
                .iter()
                .find(|m| m.info.path == p.model_path)
                .expect("every policy's model was loaded")
                .clone();
            let policy = Policy::new(p, model).map_err(StartupError)?;
            by_name.insert(p.name.clone(), policies.len());
            policies.push(Arc::new(policy));
        }
        Ok(EngineGuard(Arc::new(Engine {
            policies,
            by_name,
            models,
            cache,
        })))
    }

    /// The policy a request names, if it exists.
    pub fn policy(&self, name: &str) -> Option<&Arc<Policy>> {
        self.by_name.get(name).map(|&i| &self.policies[i])
    }

    /// All policies, in configuration order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    /// Response-cache counters, when the cache is on.
    pub async fn cache_stats(&self) -> Option<cache::CacheStats> {
        match &self.cache {
            Some(c) => Some(c.stats().await),
            None => None,
        }
    }

    /// Stops every model's inference threads and waits for them (see [`LoadedModel::shutdown`]); only
    /// the [`EngineGuard`] calls it, when it is dropped.
    fn shutdown(&self) {
        for model in &self.models {
            model.shutdown();
        }
        tracing::info!("inference threads stopped");
    }

    /// All loaded models (one per distinct GGUF file).
    pub fn models(&self) -> &[Arc<LoadedModel>] {
        &self.models
    }
}

/// The owner of a started [`Engine`]: dropping it stops every model's inference threads and waits for
/// them (queued work is refused, a job being computed stops at its next decode, each thread frees its
/// llama.cpp context), whoever else still holds the engine and however the owner's scope ends — an early
/// `?` included. It dereferences to the engine; [`EngineGuard::shared`] hands out the handle that request
/// handlers keep. Dropping it blocks until the threads are joined: an async caller drops it on a blocking
/// thread (`tokio::task::spawn_blocking(move || drop(guard))`).
pub struct EngineGuard(Arc<Engine>);

impl EngineGuard {
    /// A shared handle to the engine (it stops working, with 503s, once this guard is dropped).
    pub fn shared(&self) -> Arc<Engine> {
        self.0.clone()
    }
}

impl Deref for EngineGuard {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.0
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

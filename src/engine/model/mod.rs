//! One loaded GGUF file: the llama.cpp model, its vocabulary, and the bounded queue feeding its
//! inference threads. What the model is lives in [`info`], how work reaches the threads in [`queue`].

mod info;
mod queue;

pub use info::ModelInfo;
pub use queue::QueuePlace;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::{Semaphore, mpsc};

use super::backend::{backend, devices};
use super::cache::{ModelIdentity, ScoreCache};
use super::fingerprint;
use super::load::{Load, LoadNow};
use super::prefix::{PrefixStats, PrefixStore};
use super::schedule::ContextSettings;
use super::types::{ItemScore, StageTimes};
use super::vocab::Vocabulary;
use super::worker::{self, Job, Work, WorkerShared};

/// How a model's queue and inference threads are sized.
#[derive(Clone)]
pub struct QueueSettings {
    /// Items that may wait in the queue.
    pub capacity: usize,
    /// Inference threads (one llama.cpp context each).
    pub workers: usize,
    /// CPU threads each context uses for its decodes.
    pub threads_per_worker: usize,
    /// Decode chunk size in tokens.
    pub decode_chunk: u32,
    /// The engine's response cache, shared by all models.
    pub cache: Option<Arc<ScoreCache>>,
    /// Byte budget of the prefix cache (0: off).
    pub prefix_cache_bytes: u64,
}

/// A scored item and whether this request found it computed (cache hit or a shared computation).
#[derive(Debug, Clone)]
pub struct Scored {
    pub score: Arc<ItemScore>,
    pub cached: bool,
    /// This request's queue wait and compute time for it (zero when it was found computed).
    pub times: StageTimes,
}

/// A model loaded once and shared by every policy that names its file.
pub struct LoadedModel {
    pub info: ModelInfo,
    /// Context settings of its inference threads (the benchmark builds an identical context).
    pub context_settings: ContextSettings,
    pub llama: Arc<LlamaModel>,
    pub vocab: Arc<Vocabulary>,
    queue: mpsc::Sender<Job>,
    admission: Arc<Semaphore>,
    capacity: usize,
    /// Jobs dropped without being computed because whoever asked had gone.
    abandoned: Arc<AtomicU64>,
    /// The file's identity, for cache keys.
    identity: Arc<ModelIdentity>,
    cache: Option<Arc<ScoreCache>>,
    /// The prefix cache, shared by this model's inference threads.
    prefixes: Option<Arc<PrefixStore>>,
    /// The inference threads, joined at shutdown.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Tells the inference threads to skip what is left (see [`LoadedModel::shutdown`]).
    cancel: Arc<AtomicBool>,
    /// Jobs and KV cells in use on the inference threads now.
    load: Arc<Load>,
}

impl LoadedModel {
    /// Loads `path` (mapped into memory, or read into it when `mmap` is false) and starts its inference
    /// threads; `policy_n_ctx` lists the `n_ctx` of each policy using the file (`None` = default), which
    /// sizes the contexts.
    pub fn load(
        path: &Path,
        n_gpu_layers: i32,
        mmap: bool,
        policy_n_ctx: Vec<Option<u32>>,
        settings: QueueSettings,
    ) -> Result<LoadedModel, String> {
        let started = Instant::now();
        // The content hash reads the file while llama.cpp loads it (the two share the page cache).
        let hashing = fingerprint::spawn_sha256(path.to_path_buf());
        let layers = if n_gpu_layers < 0 {
            u32::MAX
        } else {
            n_gpu_layers as u32
        };
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(layers)
            .with_use_mmap(mmap);
        let llama = LlamaModel::load_from_file(backend()?, path, &params)
            .map_err(|e| format!("llama.cpp could not load {}: {e}", path.display()))?;
        let llama = Arc::new(llama);
        let vocab = Arc::new(Vocabulary::from_model(&llama));
        if vocab.is_empty() {
            return Err(format!("{} has an empty vocabulary", path.display()));
        }
        let info = ModelInfo::describe(
            path,
            &llama,
            n_gpu_layers,
            &policy_n_ctx,
            settings.decode_chunk,
            devices()?,
            hashing,
        )?;
        let context_settings = ContextSettings {
            n_ctx: info.n_ctx,
            // The configured decode chunk capped at the context, as the fingerprint records it.
            decode_chunk: info.fingerprint.components.decode_chunk,
            threads: settings.threads_per_worker as i32,
        };
        let (tx, rx) = mpsc::channel(settings.capacity);
        let shared = WorkerShared {
            cancel: Arc::new(AtomicBool::new(false)),
            model: llama.clone(),
            vocab: vocab.clone(),
            abandoned: Arc::new(AtomicU64::new(0)),
            prefixes: PrefixStore::new(settings.prefix_cache_bytes).map(Arc::new),
            settings: context_settings,
            label: display_name(path).into(),
            load: Arc::new(Load::new(settings.workers, info.n_ctx)),
        };
        let threads = start_threads(&shared, rx, settings.workers)?;
        tracing::info!(
            model = %path.display(),
            n_params = info.n_params,
            size_mib = info.size_bytes / (1 << 20),
            device = %info.device,
            offloaded_layers = format!("{}/{}", info.offloaded_layers, info.n_offloadable_layers),
            n_ctx = info.n_ctx,
            n_ctx_train = info.n_ctx_train,
            workers = settings.workers,
            threads_per_worker = settings.threads_per_worker,
            decode_chunk = context_settings.decode_chunk,
            seconds = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        Ok(LoadedModel {
            identity: Arc::new(
                ModelIdentity::of(path, context_settings.decode_chunk)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            info,
            context_settings,
            llama,
            vocab,
            queue: tx,
            admission: Arc::new(Semaphore::new(settings.capacity)),
            capacity: settings.capacity,
            abandoned: shared.abandoned,
            cache: settings.cache,
            prefixes: shared.prefixes,
            threads: Mutex::new(threads),
            cancel: shared.cancel,
            load: shared.load,
        })
    }

    /// Stops the inference threads and waits for them: work still queued is skipped (its requesters get
    /// 503), a scoring job being computed stops at its next decode, and each thread frees its llama.cpp
    /// context before this returns, so the process never exits while a thread is inside llama.cpp.
    /// Blocking, but callable from any thread (an async one included: nothing here needs a runtime).
    /// Called by the engine's guard and when the model is dropped; later calls do nothing.
    pub(crate) fn shutdown(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for _ in &threads {
            let mut stop = Job {
                work: Work::Stop,
                permit: None,
                enqueued: Instant::now(),
            };
            // A full queue drains fast once cancelled (skipped jobs); closed means every thread has
            // already ended (nothing left to stop).
            loop {
                match self.queue.try_send(stop) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => break,
                    Err(mpsc::error::TrySendError::Full(job)) => {
                        stop = job;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
        }
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!(model = %self.display_name(), "an inference thread panicked");
            }
        }
    }

    /// A short name for logs and errors.
    pub fn display_name(&self) -> String {
        display_name(&self.info.path)
    }

    /// Jobs skipped so far because their requester had gone before an inference thread took them.
    pub fn abandoned_jobs(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Prefix-cache counters, when it is on.
    pub fn prefix_stats(&self) -> Option<PrefixStats> {
        self.prefixes.as_ref().map(|p| p.stats())
    }

    /// Items waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }

    /// Inference contexts (threads, one job each at a time).
    pub fn contexts(&self) -> u64 {
        self.load.contexts()
    }

    /// Jobs being computed now and the share (0–1) of KV cells they hold (see [`super::load`]).
    pub fn load_now(&self) -> LoadNow {
        self.load.now()
    }

    /// The `system_fingerprint` of this model's numbers here.
    pub fn system_fingerprint(&self) -> &str {
        &self.info.fingerprint.system_fingerprint
    }
}

impl Drop for LoadedModel {
    /// A model dropped without the engine's guard (one loaded before another failed to) stops its threads.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A model file's name without its directory: its label in logs, metrics and thread names.
fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Starts `workers` inference threads on one shared queue and waits until each has created its llama.cpp
/// context (or one reports why it could not).
fn start_threads(
    shared: &WorkerShared,
    jobs: mpsc::Receiver<Job>,
    workers: usize,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let jobs = Arc::new(Mutex::new(jobs));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let (shared, jobs, ready) = (shared.clone(), jobs.clone(), ready_tx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("infer-{i}-{}", shared.label))
            .spawn(move || worker::run(shared, jobs, ready))
            .map_err(|e| format!("cannot start an inference thread: {e}"))?;
        threads.push(thread);
    }
    for _ in 0..workers {
        ready_rx
            .recv()
            .map_err(|_| "an inference thread died while starting".to_string())??;
    }
    Ok(threads)
}

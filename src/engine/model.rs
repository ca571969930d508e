//! One loaded GGUF file: the llama.cpp model, its vocabulary, and the bounded queue feeding its
//! inference threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::backend::{Devices, backend, devices};
use super::cache::{ModelIdentity, ScoreCache, ScoreKey};
use super::fingerprint::{self, Fingerprint, FingerprintParts};
use super::generate::{GenEvent, GenerateJob, GenerateOptions};
use super::load::{Load, LoadNow};
use super::prefix::{PrefixStats, PrefixStore};
use super::schedule::{ContextSettings, JobOptions, RowOptions};
use super::settings::default_n_ctx;
use super::types::{ItemScore, PreparedItem, ScoreError, StageTimes};
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
    pub chunk: u32,
    /// The engine's response cache, shared by all models.
    pub cache: Option<Arc<ScoreCache>>,
    /// Byte budget for saved whole-prompt states (0: no reuse).
    pub prefix_bytes: u64,
}

/// Facts about a loaded model that policies and the API report.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Canonical path: the pool's key.
    pub path: PathBuf,
    /// Context size the model was trained with.
    pub n_ctx_train: u32,
    /// Context size of its inference threads (the largest `n_ctx` of the policies using it).
    pub n_ctx: u32,
    /// The GGUF's own `tokenizer.chat_template`, if it has one.
    pub chat_template: Option<String>,
    /// Parameters and bytes of the weights.
    pub n_params: u64,
    pub size_bytes: u64,
    /// Layers the policy asked to offload (-1 = all).
    pub n_gpu_layers: i32,
    /// Where the model runs: `CPU`, or the GPU devices holding its offloaded layers (e.g. `CUDA0`).
    pub device: String,
    /// Layers on the GPU out of `n_offloadable_layers` (the repeating layers plus the output layer, as
    /// llama.cpp counts them); 0 on a CPU-only host whatever `n_gpu_layers` asked.
    pub offloaded_layers: u32,
    pub n_offloadable_layers: u32,
    /// What defines this model's numbers here, and its `system_fingerprint`.
    pub fingerprint: Fingerprint,
}

/// Where llama.cpp puts a model's layers: (device, offloaded layers, offloadable layers). Mirrors
/// llama.cpp's rule (`n_gpu_layers` of the `n_layer + 1` layers go to the GPUs, none without a GPU),
/// since the library reports it only in a log line.
fn placement(devices: &Devices, n_layer: u32, n_gpu_layers: i32) -> (String, u32, u32) {
    let total = n_layer + 1;
    let asked = u32::try_from(n_gpu_layers).map_or(total, |n| n.min(total));
    let targets = devices.offload_targets();
    if targets.is_empty() || asked == 0 {
        return ("CPU".to_string(), 0, total);
    }
    let names: Vec<&str> = targets.iter().map(|d| d.name.as_str()).collect();
    (names.join("+"), asked, total)
}

/// The device part of a fingerprint: `CPU`, or the GPUs with their names and how many layers they hold
/// (partial offload changes numbers). The CPU's model is left out: the same code gives the same bits on any.
fn fingerprint_device(devices: &Devices, device: &str, offloaded: u32, total: u32) -> String {
    if offloaded == 0 {
        return "CPU".to_string();
    }
    let names: Vec<&str> = devices
        .offload_targets()
        .iter()
        .map(|d| d.description.as_str())
        .collect();
    format!(
        "{device} ({}), {offloaded}/{total} layers",
        names.join(" + ")
    )
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
    /// Saved prompt states, shared by this model's inference threads.
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
        let n_ctx_train = llama.n_ctx_train();
        let n_ctx = policy_n_ctx
            .iter()
            .map(|n| n.unwrap_or_else(|| default_n_ctx(n_ctx_train)))
            .max()
            .unwrap_or_else(|| default_n_ctx(n_ctx_train));
        let chat_template = llama
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok());
        let found = devices()?;
        let (device, offloaded_layers, n_offloadable_layers) =
            placement(found, llama.n_layer(), n_gpu_layers);
        let chunk = settings.chunk.min(n_ctx);
        let model_sha256 = hashing
            .join()
            .map_err(|_| "the thread hashing the model file panicked".to_string())?
            .map_err(|e| format!("cannot read {} to hash it: {e}", path.display()))?;
        let fingerprint = FingerprintParts {
            model_sha256,
            llama_cpp: fingerprint::llama_cpp_build(),
            backend_features: found.system_info.clone(),
            device: fingerprint_device(found, &device, offloaded_layers, n_offloadable_layers),
            cpu_variant: found.cpu_variant.clone(),
            decode_chunk: chunk,
            n_ctx,
            scorer: env!("CARGO_PKG_VERSION").to_string(),
        }
        .fingerprint();
        let info = ModelInfo {
            path: path.to_path_buf(),
            n_ctx_train,
            n_ctx,
            chat_template,
            n_params: llama.n_params(),
            size_bytes: llama.size(),
            n_gpu_layers,
            device,
            offloaded_layers,
            n_offloadable_layers,
            fingerprint,
        };

        let (tx, rx) = mpsc::channel(settings.capacity);
        let rx = Arc::new(Mutex::new(rx));
        let context_settings = ContextSettings {
            n_ctx,
            chunk,
            threads: settings.threads_per_worker as i32,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let abandoned = Arc::new(AtomicU64::new(0));
        let prefixes = PrefixStore::new(settings.prefix_bytes).map(Arc::new);
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cancel = Arc::new(AtomicBool::new(false));
        let load = Arc::new(Load::new(settings.workers, n_ctx));
        let mut threads = Vec::with_capacity(settings.workers);
        for i in 0..settings.workers {
            let shared = WorkerShared {
                cancel: cancel.clone(),
                model: llama.clone(),
                vocab: vocab.clone(),
                abandoned: abandoned.clone(),
                prefixes: prefixes.clone(),
                settings: context_settings,
                label: name.as_str().into(),
                load: load.clone(),
            };
            let (r, ready) = (rx.clone(), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("infer-{i}-{name}"))
                .spawn(move || worker::run(shared, r, ready))
                .map_err(|e| format!("cannot start an inference thread: {e}"))?;
            threads.push(thread);
        }
        for _ in 0..settings.workers {
            ready_rx
                .recv()
                .map_err(|_| "an inference thread died while starting".to_string())??;
        }
        tracing::info!(
            model = %path.display(),
            n_params = info.n_params,
            size_mib = info.size_bytes / (1 << 20),
            device = %info.device,
            offloaded_layers = format!("{}/{}", info.offloaded_layers, info.n_offloadable_layers),
            n_ctx,
            n_ctx_train,
            workers = settings.workers,
            threads_per_worker = settings.threads_per_worker,
            chunk = context_settings.chunk,
            seconds = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        Ok(LoadedModel {
            info,
            context_settings,
            llama,
            vocab,
            queue: tx,
            admission: Arc::new(Semaphore::new(settings.capacity)),
            capacity: settings.capacity,
            abandoned,
            identity: Arc::new(
                ModelIdentity::of(path, context_settings.chunk)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            cache: settings.cache,
            prefixes,
            threads: Mutex::new(threads),
            cancel,
            load,
        })
    }

    /// Stops the inference threads and waits for them: work still queued is skipped (its requesters get
    /// 503), a scoring job being computed stops at its next decode, and each thread frees its llama.cpp
    /// context before this returns, so the process never exits while a thread is inside llama.cpp.
    /// Blocking; call it once the front end has stopped sending work. Later calls do nothing.
    pub fn shutdown(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for _ in &threads {
            let stop = Job {
                work: Work::Stop,
                permit: None,
                enqueued: Instant::now(),
            };
            // Fails only when every thread has already ended (nothing left to stop).
            let _ = self.queue.blocking_send(stop);
        }
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!(model = %self.display_name(), "an inference thread panicked");
            }
        }
    }

    /// A short name for logs and errors.
    pub fn display_name(&self) -> String {
        self.info
            .path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Jobs skipped so far because their requester had gone before an inference thread took them.
    pub fn abandoned_jobs(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Prefix-reuse counters, when it is on.
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

    /// Scores every item, in order: cache hits at once, the rest queued (all or none: a batch whose
    /// misses do not fit is refused with `QueueFull`); with the response cache on, identical items in flight
    /// at once are computed once (without it, each is computed). Dropping the returned future abandons the
    /// items still queued.
    pub async fn score(
        &self,
        items: Vec<Arc<PreparedItem>>,
        options: JobOptions,
    ) -> Result<Vec<Scored>, ScoreError> {
        let units = items
            .into_iter()
            .map(|item| (item, vec![options.temperature]))
            .collect();
        let scored = self.score_shared(units, options.rows).await?;
        Ok(scored.into_iter().map(|mut at| at.remove(0)).collect())
    }

    /// Scores each item at each of its temperatures (one result per temperature, in order), the way
    /// [`LoadedModel::score`] scores one: cache hits at once, then one decode per item for all of its
    /// temperatures that missed, so policies sharing this model and a rendered prompt share the decode.
    /// Admission is all or none, one queue place per item decoded.
    pub async fn score_shared(
        &self,
        units: Vec<(Arc<PreparedItem>, Vec<f64>)>,
        rows: RowOptions,
    ) -> Result<Vec<Vec<Scored>>, ScoreError> {
        let mut results: Vec<Vec<Option<Scored>>> = Vec::with_capacity(units.len());
        for (item, temperatures) in &units {
            let mut found = Vec::with_capacity(temperatures.len());
            for &temperature in temperatures {
                let hit = match &self.cache {
                    Some(cache) => cache.get(&self.key(item, rows, temperature)).await,
                    None => None,
                };
                found.push(hit.map(|score| Scored {
                    score,
                    cached: true,
                    times: StageTimes::default(),
                }));
            }
            results.push(found);
        }
        // Per item with a miss, the indices of the temperatures still to compute.
        let misses: Vec<(usize, Vec<usize>)> = results
            .iter()
            .enumerate()
            .filter_map(|(u, found)| {
                let missing: Vec<usize> =
                    (0..found.len()).filter(|&j| found[j].is_none()).collect();
                (!missing.is_empty()).then_some((u, missing))
            })
            .collect();
        if !misses.is_empty() {
            let full = || self.queue_full();
            let mut permits = self
                .admission
                .clone()
                .try_acquire_many_owned(u32::try_from(misses.len()).map_err(|_| full())?)
                .map_err(|_| full())?;
            let runs = misses.iter().map(|(u, missing)| {
                let permit = permits.split(1).expect("one permit per item decoded");
                let (item, temperatures) = &units[*u];
                let wanted = missing.iter().map(|&j| temperatures[j]).collect();
                self.compute_missing(item.clone(), rows, wanted, permit)
            });
            let computed = futures_util::future::try_join_all(runs).await?;
            for ((u, missing), scored) in misses.into_iter().zip(computed) {
                for (j, one) in missing.into_iter().zip(scored) {
                    results[u][j] = Some(one);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|found| {
                found
                    .into_iter()
                    .map(|s| s.expect("every temperature scored"))
                    .collect()
            })
            .collect())
    }

    /// The response cache's key of one item at one temperature.
    fn key(&self, item: &PreparedItem, rows: RowOptions, temperature: f64) -> ScoreKey {
        ScoreKey::new(&self.identity, item, &JobOptions { rows, temperature })
    }

    /// Computes one item at the temperatures its cache lookups missed: a single one through the cache's
    /// in-flight sharing (identical requests at once compute it once), several from one decode whose results
    /// are then cached one by one.
    async fn compute_missing(
        &self,
        item: Arc<PreparedItem>,
        rows: RowOptions,
        temperatures: Vec<f64>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Vec<Scored>, ScoreError> {
        if let (&[temperature], Some(cache)) = (temperatures.as_slice(), &self.cache) {
            let key = self.key(&item, rows, temperature);
            let times = Mutex::new(StageTimes::default());
            let compute = async {
                let (mut scores, t) = self
                    .run_scoring_job(item, rows, temperatures, permit)
                    .await?;
                *times.lock().unwrap_or_else(|e| e.into_inner()) = t;
                Ok(scores.remove(0))
            };
            let (score, cached) = cache.get_or_compute(key, compute).await?;
            let times = times.into_inner().unwrap_or_else(|e| e.into_inner());
            return Ok(vec![Scored {
                score,
                cached,
                times,
            }]);
        }
        let (scores, times) = self
            .run_scoring_job(item.clone(), rows, temperatures.clone(), permit)
            .await?;
        let mut out = Vec::with_capacity(scores.len());
        for (score, &temperature) in scores.into_iter().zip(&temperatures) {
            let score = Arc::new(score);
            if let Some(cache) = &self.cache {
                cache
                    .insert(self.key(&item, rows, temperature), score.clone())
                    .await;
            }
            out.push(Scored {
                score,
                cached: false,
                times,
            });
        }
        Ok(out)
    }

    /// Sends one scoring job to the inference threads and waits for its answer (one score per temperature).
    async fn run_scoring_job(
        &self,
        item: Arc<PreparedItem>,
        options: RowOptions,
        temperatures: Vec<f64>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(Vec<ItemScore>, StageTimes), ScoreError> {
        let (reply, rx) = oneshot::channel();
        let work = Work::Score {
            item,
            options,
            temperatures,
            reply,
        };
        self.enqueue(work, permit).await?;
        rx.await.map_err(|_| {
            ScoreError::Unavailable("an inference thread stopped before answering".into())
        })?
    }

    /// Queues one generation and returns the stream of its events (tokens, then `Done` or `Error`).
    /// Dropping the receiver abandons the generation at its next token.
    pub async fn generate(
        &self,
        prompt: Arc<PreparedItem>,
        options: GenerateOptions,
        echo: bool,
        top_logprobs: usize,
    ) -> Result<mpsc::Receiver<GenEvent>, ScoreError> {
        let permit = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.queue_full())?;
        let (events, rx) = mpsc::channel(64);
        let work = Work::Generate(GenerateJob {
            prompt,
            options,
            echo,
            top_logprobs,
            events,
        });
        self.enqueue(work, permit).await?;
        Ok(rx)
    }

    /// Hands admitted work to the inference threads (the permit travels with it and frees its queue slot
    /// when a thread takes the job, or when the job is dropped unqueued).
    async fn enqueue(
        &self,
        work: Work,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), ScoreError> {
        let job = Job {
            work,
            permit: Some(permit),
            enqueued: std::time::Instant::now(),
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| ScoreError::Unavailable("the inference threads have stopped".into()))
    }

    /// A full queue; [`crate::engine::Policy`] names the policy before the error leaves the engine.
    fn queue_full(&self) -> ScoreError {
        tracing::debug!(model = %self.info.path.display(), capacity = self.capacity, "queue full");
        ScoreError::QueueFull {
            policy: String::new(),
            capacity: self.capacity,
            retry_after_secs: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DeviceInfo;

    fn device(name: &str, kind: &'static str) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            description: String::new(),
            backend: String::new(),
            kind,
            memory_total_mib: 0,
            memory_free_mib: 0,
        }
    }

    fn found(devices: Vec<DeviceInfo>) -> Devices {
        Devices {
            dynamic_backends: false,
            backends_dir: None,
            cpu_variant: None,
            system_info: String::new(),
            devices,
        }
    }

    #[test]
    fn placement_follows_llama_cpp() {
        let cpu = found(vec![device("CPU", "cpu")]);
        assert_eq!(placement(&cpu, 32, -1), ("CPU".into(), 0, 33));
        assert_eq!(placement(&cpu, 32, 10), ("CPU".into(), 0, 33));
        let gpu = found(vec![device("CPU", "cpu"), device("CUDA0", "gpu")]);
        assert_eq!(placement(&gpu, 32, -1), ("CUDA0".into(), 33, 33));
        assert_eq!(placement(&gpu, 32, 99), ("CUDA0".into(), 33, 33));
        assert_eq!(placement(&gpu, 32, 10), ("CUDA0".into(), 10, 33));
        assert_eq!(placement(&gpu, 32, 0), ("CPU".into(), 0, 33));
        // Integrated GPUs only when there is no discrete one, as llama.cpp picks them.
        let both = found(vec![
            device("CPU", "cpu"),
            device("Vulkan0", "igpu"),
            device("CUDA0", "gpu"),
            device("CUDA1", "gpu"),
        ]);
        assert_eq!(placement(&both, 2, -1), ("CUDA0+CUDA1".into(), 3, 3));
        let igpu = found(vec![device("CPU", "cpu"), device("Vulkan0", "igpu")]);
        assert_eq!(placement(&igpu, 2, -1), ("Vulkan0".into(), 3, 3));
    }
}

//! Inference threads: each owns one llama.cpp context and runs one job at a time (a scoring or a
//! generation), each on the fixed decode schedule of [`super::schedule`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::error::ScoreError;
use super::generate::{self, GenEvent, GenerateJob};
use super::load::{Busy, Load};
use super::prefix::PrefixStore;
use super::schedule::{ContextSettings, Session, create_context};
use super::scoring::score_sequence;
use super::types::{ItemScore, PreparedItem, RowOptions, StageTimes};
use super::vocab::Vocabulary;

/// One unit of work waiting for an inference thread.
pub struct Job {
    pub work: Work,
    /// The job's place in the bounded queue, given back as soon as a thread takes it (so the queue depth
    /// counts waiting work, not work being computed); `None` for [`Work::Stop`], which takes no place.
    pub permit: Option<OwnedSemaphorePermit>,
    /// When it was queued (for the queue-wait metric).
    pub enqueued: std::time::Instant,
}

/// What a job asks an inference thread to do.
pub enum Work {
    /// Score one item at each of `temperatures` from one decode; the results (one per temperature, in
    /// order) go back through `reply`.
    Score {
        item: Arc<PreparedItem>,
        options: RowOptions,
        temperatures: Vec<f64>,
        reply: oneshot::Sender<Result<(Vec<ItemScore>, StageTimes), ScoreError>>,
    },
    /// Generate a continuation, streaming events.
    Generate(GenerateJob),
    /// End the thread that takes it (one per thread at shutdown, queued behind all other work).
    Stop,
}

impl Work {
    /// Whether whoever asked for this work has gone away (then it is not computed).
    fn abandoned(&self) -> bool {
        match self {
            Work::Score { reply, .. } => reply.is_closed(),
            Work::Generate(job) => job.events.is_closed(),
            Work::Stop => false,
        }
    }

    /// KV cells the job holds while it runs (see [`super::load`]): a scoring job its whole sequence, a
    /// generation its prompt plus what it may generate; `None` for [`Work::Stop`].
    fn cells(&self, n_ctx: usize) -> Option<usize> {
        match self {
            Work::Score { item, .. } => Some(item.tokens.len()),
            Work::Generate(job) => {
                Some((job.prompt.tokens.len() + job.options.max_tokens).min(n_ctx))
            }
            Work::Stop => None,
        }
    }
}

/// Shared receiving end of a model's queue: whichever idle thread locks it takes the next job.
pub type SharedReceiver = Arc<Mutex<mpsc::Receiver<Job>>>;

/// What the inference threads of one model share.
#[derive(Clone)]
pub struct WorkerShared {
    pub model: Arc<LlamaModel>,
    pub vocab: Arc<Vocabulary>,
    /// Counts jobs skipped because their requester had gone.
    pub abandoned: Arc<AtomicU64>,
    pub prefixes: Option<Arc<PrefixStore>>,
    pub settings: ContextSettings,
    /// Set at shutdown: queued work is skipped and the job being computed stops at its next decode.
    pub cancel: Arc<AtomicBool>,
    /// The model's name in metrics.
    pub label: Arc<str>,
    /// Jobs and KV cells in use now, for the load gauges.
    pub load: Arc<Load>,
}

/// Test hook: when this environment variable names a file, inference threads take no job while that file
/// exists, so tests can fill a queue and watch it (`/ready`'s `queue_depth`) whatever the machine's speed.
/// Read once per thread at start-up; unset (production), it costs nothing.
pub const HOLD_ENV: &str = "LLAMA_SCORER_TEST_HOLD_FILE";

/// Blocks while the hold file exists (see [`HOLD_ENV`]).
pub(crate) fn wait_while_held(path: &std::path::Path) {
    while path.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Body of an inference thread: create the context, report readiness, then serve jobs until the queue
/// closes. A job whose requester has gone away is dropped without being computed.
pub fn run(
    shared: WorkerShared,
    jobs: SharedReceiver,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut ctx = match create_context(&shared.model, shared.settings) {
        Ok(ctx) => {
            let _ = ready.send(Ok(()));
            ctx
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut batch: LlamaBatch<'static> = LlamaBatch::new(shared.settings.decode_chunk as usize, 1);
    let hold = std::env::var_os(HOLD_ENV).map(std::path::PathBuf::from);
    let panic_marker = std::env::var(PANIC_ENV).ok();
    let panic_marker = panic_marker.as_deref();
    let label = shared.label.to_string();
    while let Some(Job {
        work,
        permit,
        enqueued,
    }) = next_job(&jobs, hold.as_deref())
    {
        // Counted as running from before it stops counting as waiting, so a job is never in neither gauge.
        let busy = work
            .cells(shared.settings.n_ctx as usize)
            .map(|c| shared.load.begin(c));
        drop(permit);
        let waited = enqueued.elapsed();
        metrics::histogram!("llama_scorer_queue_wait_seconds", "model" => label.clone())
            .record(waited.as_secs_f64());
        if matches!(work, Work::Stop) {
            break;
        }
        if work.abandoned() || shared.cancel.load(Ordering::Relaxed) {
            shared.abandoned.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("llama_scorer_jobs_abandoned_total", "model" => label.clone())
                .increment(1);
            continue;
        }
        let mut session = Session {
            ctx: &mut ctx,
            batch: &mut batch,
            decode_chunk: shared.settings.decode_chunk as usize,
            n_ctx: shared.settings.n_ctx as usize,
            vocab: &shared.vocab,
        };
        let panicked = match work {
            Work::Score {
                item,
                options,
                temperatures,
                reply,
            } => {
                let job = ScoringJob {
                    item,
                    options,
                    temperatures,
                    reply,
                    waited,
                };
                run_scoring(&mut session, &shared, &label, job, busy, panic_marker)
            }
            Work::Generate(job) => {
                let started = std::time::Instant::now();
                let (result, panicked) = guarded(|| {
                    test_panic(panic_marker, &job.prompt, &shared.vocab);
                    generate::run(&mut session, &job)
                });
                if let Err(e) = result {
                    let _ = job.events.blocking_send(GenEvent::Error(e));
                }
                metrics::histogram!("llama_scorer_compute_seconds", "model" => label.clone(), "kind" => "generate")
                    .record(started.elapsed().as_secs_f64());
                panicked
            }
            Work::Stop => unreachable!("handled before the abandoned check"),
        };
        if let Some(message) = panicked {
            metrics::counter!("llama_scorer_inference_panics_total", "model" => label.clone())
                .increment(1);
            tracing::error!(model = %label, panic = %message, "an inference job panicked; it failed and this thread goes on with a fresh context");
            // The context may have been left mid-decode: the next job starts from a fresh one.
            drop(ctx);
            ctx = match create_context(&shared.model, shared.settings) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::error!(model = %label, error = %e, "no fresh context after a panic; this inference thread stops");
                    return;
                }
            };
            batch = LlamaBatch::new(shared.settings.decode_chunk as usize, 1);
        }
    }
}

/// Test hook: when this environment variable is set, a job whose prompt text contains its value panics on
/// the inference thread, so tests can check that a panic fails only that job. Read once per thread at
/// start-up; unset (production), no prompt is looked at.
pub const PANIC_ENV: &str = "LLAMA_SCORER_TEST_PANIC_MARKER";

/// Panics when the test hook is on and `item`'s prompt contains the marker (see [`PANIC_ENV`]).
fn test_panic(marker: Option<&str>, item: &PreparedItem, vocab: &Vocabulary) {
    let Some(marker) = marker else { return };
    let text: Vec<u8> = item.tokens[..item.prompt_len]
        .iter()
        .flat_map(|&t| vocab.piece(t).iter().copied())
        .collect();
    if String::from_utf8_lossy(&text).contains(marker) {
        panic!("test panic: the prompt contains the marker of {PANIC_ENV}");
    }
}

/// Runs a job's computation with a panic guard: a panic becomes an internal error for that job (a 500)
/// and its message is returned, so the thread replaces its context and lives on.
fn guarded<T>(
    work: impl FnOnce() -> Result<T, ScoreError>,
) -> (Result<T, ScoreError>, Option<String>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => (result, None),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let error = ScoreError::Internal(
                "the inference thread failed on this job (it goes on serving others)".into(),
            );
            (Err(error), Some(message))
        }
    }
}

/// The next job from the shared queue (after the test hold, if any); `None` once the queue has closed.
fn next_job(jobs: &SharedReceiver, hold: Option<&std::path::Path>) -> Option<Job> {
    if let Some(path) = hold {
        wait_while_held(path);
    }
    let mut rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
    rx.blocking_recv()
}

/// A scoring job as the thread runs it: [`Work::Score`] plus how long it waited.
struct ScoringJob {
    item: Arc<PreparedItem>,
    options: RowOptions,
    temperatures: Vec<f64>,
    reply: oneshot::Sender<Result<(Vec<ItemScore>, StageTimes), ScoreError>>,
    waited: std::time::Duration,
}

/// Scores one item on this thread's context, records its metrics, ends its share of the load gauges and
/// then answers (so whoever reads the load after the answer sees the job ended). Returns the message of a
/// panic the scoring raised (then the answer was an internal error).
fn run_scoring(
    session: &mut Session<'_, '_>,
    shared: &WorkerShared,
    label: &str,
    job: ScoringJob,
    busy: Option<Busy<'_>>,
    panic_marker: Option<&str>,
) -> Option<String> {
    let started = std::time::Instant::now();
    let reply = &job.reply;
    let (result, panicked) = guarded(|| {
        test_panic(panic_marker, &job.item, session.vocab);
        score_sequence(
            session,
            &job.item,
            job.options,
            &job.temperatures,
            shared.prefixes.as_deref(),
            || reply.is_closed() || shared.cancel.load(Ordering::Relaxed),
        )
    });
    if let Ok(scores) = &result {
        // Positions decoded and scored, once however many temperatures they were reported at.
        let positions = scores.first().map_or(0, |s| s.scored().count());
        metrics::counter!("llama_scorer_tokens_scored_total", "model" => label.to_string())
            .increment(positions as u64);
    }
    let compute = started.elapsed();
    metrics::histogram!("llama_scorer_compute_seconds", "model" => label.to_string(), "kind" => "score")
        .record(compute.as_secs_f64());
    let times = StageTimes {
        queue: job.waited,
        compute,
    };
    drop(busy);
    let _ = job.reply.send(result.map(|scores| (scores, times)));
    panicked
}

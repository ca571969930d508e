//! Inference threads: each owns one llama.cpp context and scores one sequence at a time.
//!
//! The decode schedule is a function of the sequence alone — the prompt in `chunk`-token decodes from
//! position 0, then the response in `chunk`-token decodes from the prompt's end, with the context's memory
//! cleared before every item — so the numbers for an item never depend on what else is queued, which thread
//! runs it, or how busy the server is. Logits are requested only at positions whose next token is scored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use rayon::prelude::*;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::backend::backend;
use super::generate::{self, GenEvent, GenerateJob};
use super::logsoftmax::{self, Temperature};
use super::prefix::{MIN_PREFIX_TOKENS, PrefixState, PrefixStore};
use super::types::{ItemScore, PreparedItem, ScoreError, TokenScore, TopEntry};
use super::vocab::{TokenId, Vocabulary};

/// What a job asks for beyond the tokens.
#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    pub echo: bool,
    pub top_logprobs: usize,
    pub temperature: f64,
}

/// One unit of work waiting for an inference thread.
pub struct Job {
    pub work: Work,
    /// The job's place in the bounded queue, given back as soon as a thread takes it.
    pub permit: OwnedSemaphorePermit,
    /// When it was queued (for the queue-wait metric).
    pub enqueued: std::time::Instant,
}

/// What a job asks an inference thread to do.
pub enum Work {
    /// Score one item; the result goes back through `reply`.
    Score {
        item: Arc<PreparedItem>,
        options: JobOptions,
        reply: oneshot::Sender<Result<ItemScore, ScoreError>>,
    },
    /// Generate a continuation, streaming events.
    Generate(GenerateJob),
}

impl Work {
    /// Whether whoever asked for this work has gone away (then it is not computed).
    fn abandoned(&self) -> bool {
        match self {
            Work::Score { reply, .. } => reply.is_closed(),
            Work::Generate(job) => job.events.is_closed(),
        }
    }
}

/// Shared receiving end of a model's queue: whichever idle thread locks it takes the next job.
pub type SharedReceiver = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Settings of one inference thread's context.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    pub n_ctx: u32,
    pub chunk: u32,
    pub threads: i32,
}

/// llama.cpp's context creation mutates the model, so contexts are created one at a time.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

/// Creates a context for `settings` (one at a time: llama.cpp's context creation mutates the model).
pub fn create_context(
    model: &LlamaModel,
    settings: WorkerSettings,
) -> Result<LlamaContext<'_>, String> {
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(settings.n_ctx))
        .with_n_batch(settings.chunk)
        .with_n_ubatch(settings.chunk)
        .with_n_seq_max(1)
        .with_n_threads(settings.threads)
        .with_n_threads_batch(settings.threads);
    let _guard = CONTEXT_CREATION.lock().unwrap_or_else(|e| e.into_inner());
    let backend = backend()?;
    model
        .new_context(backend, params)
        .map_err(|e| format!("cannot create a llama.cpp context: {e}"))
}

/// What the inference threads of one model share.
#[derive(Clone)]
pub struct WorkerShared {
    pub model: Arc<LlamaModel>,
    pub vocab: Arc<Vocabulary>,
    /// Counts jobs skipped because their requester had gone.
    pub abandoned: Arc<AtomicU64>,
    pub prefixes: Option<Arc<PrefixStore>>,
    pub settings: WorkerSettings,
    /// The model's name in metrics.
    pub label: Arc<str>,
}

/// Body of an inference thread: create the context, report readiness, then serve jobs until the queue
/// closes. A job whose requester has gone away is dropped without being computed.
pub fn run(
    shared: WorkerShared,
    jobs: SharedReceiver,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let WorkerShared {
        model,
        vocab,
        abandoned,
        prefixes,
        settings,
        label,
    } = shared;
    let created = create_context(&model, settings);
    let mut ctx = match created {
        Ok(ctx) => {
            let _ = ready.send(Ok(()));
            ctx
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut batch: LlamaBatch<'static> = LlamaBatch::new(settings.chunk as usize, 1);
    loop {
        let job = {
            let mut rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.blocking_recv()
        };
        let Some(Job {
            work,
            permit,
            enqueued,
        }) = job
        else {
            break;
        };
        drop(permit);
        let model_label = label.to_string();
        metrics::histogram!("llama_scorer_queue_wait_seconds", "model" => model_label.clone())
            .record(enqueued.elapsed().as_secs_f64());
        if work.abandoned() {
            abandoned.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("llama_scorer_jobs_abandoned_total", "model" => model_label)
                .increment(1);
            continue;
        }
        let started = std::time::Instant::now();
        let chunk = settings.chunk as usize;
        match work {
            Work::Score {
                item,
                options,
                reply,
            } => {
                let result = score_sequence(
                    &mut ctx,
                    &mut batch,
                    chunk,
                    &item,
                    options,
                    prefixes.as_deref(),
                    &reply,
                );
                if let Ok(score) = &result {
                    metrics::counter!("llama_scorer_tokens_scored_total", "model" => model_label.clone())
                        .increment(score.scored().count() as u64);
                }
                metrics::histogram!("llama_scorer_compute_seconds", "model" => model_label, "kind" => "score")
                    .record(started.elapsed().as_secs_f64());
                let _ = reply.send(result);
            }
            Work::Generate(job) => {
                let mut session = Session {
                    ctx: &mut ctx,
                    batch: &mut batch,
                    chunk,
                    n_ctx: settings.n_ctx as usize,
                    vocab: &vocab,
                };
                if let Err(e) = generate::run(&mut session, &job) {
                    let _ = job.events.blocking_send(GenEvent::Error(e));
                }
                metrics::histogram!("llama_scorer_compute_seconds", "model" => model_label, "kind" => "generate")
                    .record(started.elapsed().as_secs_f64());
            }
        }
    }
}

/// An inference thread's context and batch, lent to one job at a time.
pub struct Session<'a, 'm> {
    pub ctx: &'a mut LlamaContext<'m>,
    pub batch: &'a mut LlamaBatch<'static>,
    pub chunk: usize,
    pub n_ctx: usize,
    pub vocab: &'a Vocabulary,
}

/// Where logits are needed: positions `first..end` (the logits at position q score token q + 1).
pub fn logit_positions(item: &PreparedItem, echo: bool) -> std::ops::Range<usize> {
    let n = item.tokens.len();
    let first = if echo { 0 } else { item.prompt_len - 1 };
    let end = if item.end_of_turn.is_some() { n } else { n - 1 };
    first..end.max(first)
}

/// Runs the fixed decode schedule of one sequence: memory cleared, then the prompt in `chunk`-token
/// decodes from position 0, then the response in `chunk`-token decodes from the prompt's end, with
/// logits requested only at `wanted` positions. After each decode, `on_rows` gets the context and the
/// (position, batch index) of each row with logits; `stop` is asked before each decode.
pub fn decode_sequence<'m>(
    ctx: &mut LlamaContext<'m>,
    batch: &mut LlamaBatch<'_>,
    chunk: usize,
    item: &PreparedItem,
    wanted: std::ops::Range<usize>,
    mut stop: impl FnMut() -> bool,
    mut on_rows: impl FnMut(&LlamaContext<'m>, &[(usize, i32)]) -> Result<(), ScoreError>,
) -> Result<(), ScoreError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let (p, n) = (item.prompt_len, item.tokens.len());
    ctx.clear_kv_cache();
    for segment in [0..p, p..n] {
        decode_segment(
            ctx,
            batch,
            chunk,
            &item.tokens,
            segment,
            &wanted,
            &mut stop,
            &mut on_rows,
        )?;
    }
    Ok(())
}

/// Decodes `tokens[segment]` in `chunk`-token decodes from the segment's start (one part of the fixed
/// schedule), with logits at the `wanted` positions; see [`decode_sequence`].
#[allow(clippy::too_many_arguments)]
pub fn decode_segment<'m>(
    ctx: &mut LlamaContext<'m>,
    batch: &mut LlamaBatch<'_>,
    chunk: usize,
    tokens: &[TokenId],
    segment: std::ops::Range<usize>,
    wanted: &std::ops::Range<usize>,
    stop: &mut impl FnMut() -> bool,
    on_rows: &mut impl FnMut(&LlamaContext<'m>, &[(usize, i32)]) -> Result<(), ScoreError>,
) -> Result<(), ScoreError> {
    let mut rows = Vec::with_capacity(chunk);
    for start in segment.clone().step_by(chunk) {
        if stop() {
            return Err(ScoreError::Unavailable("the client went away".into()));
        }
        let end = (start + chunk).min(segment.end);
        batch.clear();
        rows.clear();
        for (q, &token) in (start..end).zip(&tokens[start..end]) {
            let logits = wanted.contains(&q);
            batch
                .add(LlamaToken(token), q as i32, &[0], logits)
                .map_err(|e| ScoreError::Internal(format!("batch: {e}")))?;
            if logits {
                rows.push((q, (q - start) as i32));
            }
        }
        ctx.decode(batch)
            .map_err(|e| ScoreError::Internal(format!("llama_decode: {e}")))?;
        on_rows(ctx, &rows)?;
    }
    Ok(())
}

fn score_sequence(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    chunk: usize,
    item: &PreparedItem,
    options: JobOptions,
    prefixes: Option<&PrefixStore>,
    reply: &oneshot::Sender<Result<ItemScore, ScoreError>>,
) -> Result<ItemScore, ScoreError> {
    let tokens = &item.tokens;
    let n = tokens.len();
    let p = item.prompt_len;
    let wanted = logit_positions(item, options.echo);
    let temperature = Temperature::new(options.temperature);
    let target = |q: usize| -> TokenId {
        if q + 1 < n {
            tokens[q + 1]
        } else {
            item.end_of_turn
                .expect("a logit at the last position implies end of turn")
        }
    };
    let mut scores: Vec<TokenScore> = Vec::with_capacity(wanted.len());
    // Prefix reuse applies when only the prompt's last row is needed (no echo).
    let store = prefixes.filter(|_| !options.echo && !wanted.is_empty() && p >= MIN_PREFIX_TOKENS);
    let prompt = &tokens[..p];
    let saved = store.and_then(|s| s.get(prompt));
    if let Some(saved) = &saved {
        ctx.clear_kv_cache();
        ctx.state_seq_set(&saved.kv, 0)
            .map_err(|e| ScoreError::Internal(format!("restoring a saved prompt: {e}")))?;
        scores.push(score_row(
            &saved.last_row,
            target(p - 1),
            &temperature,
            options.top_logprobs,
        )?);
    }
    let mut on_rows = |ctx: &LlamaContext<'_>, rows: &[(usize, i32)]| {
        let rows: Vec<(&[f32], TokenId)> = rows
            .iter()
            .map(|&(q, i)| (ctx.get_logits_ith(i), target(q)))
            .collect();
        let chunk_scores: Result<Vec<TokenScore>, ScoreError> = rows
            .par_iter()
            .with_min_len(4)
            .map(|&(row, token)| score_row(row, token, &temperature, options.top_logprobs))
            .collect();
        scores.extend(chunk_scores?);
        Ok(())
    };
    let mut stop = || reply.is_closed();
    match (saved, store) {
        (Some(_), _) => {
            let rest = p..wanted.end;
            decode_segment(
                ctx,
                batch,
                chunk,
                tokens,
                p..n,
                &rest,
                &mut stop,
                &mut on_rows,
            )?;
        }
        (None, Some(store)) => {
            ctx.clear_kv_cache();
            decode_segment(
                ctx,
                batch,
                chunk,
                tokens,
                0..p,
                &wanted,
                &mut stop,
                &mut on_rows,
            )?;
            let last = ((p - 1) % chunk) as i32;
            let state = PrefixState {
                kv: ctx
                    .state_seq_get(0, LlamaStateSeqFlags::empty())
                    .map_err(|e| ScoreError::Internal(format!("saving a prompt: {e}")))?,
                last_row: ctx.get_logits_ith(last).to_vec(),
            };
            store.insert(prompt, state);
            decode_segment(
                ctx,
                batch,
                chunk,
                tokens,
                p..n,
                &wanted,
                &mut stop,
                &mut on_rows,
            )?;
        }
        (None, None) => decode_sequence(ctx, batch, chunk, item, wanted, stop, on_rows)?,
    }
    // Split the positional scores back into prompt, response and end of turn.
    let prompt_count = if options.echo { p - 1 } else { 0 };
    let mut rest = scores.split_off(prompt_count.min(scores.len()));
    let end_of_turn = if item.end_of_turn.is_some() {
        rest.pop()
    } else {
        None
    };
    Ok(ItemScore {
        prompt: scores,
        response: rest,
        end_of_turn,
    })
}

/// Scores one position: the target token's log-probabilities and the top alternatives.
pub fn score_row(
    row: &[f32],
    token: TokenId,
    temperature: &Temperature,
    top_k: usize,
) -> Result<TokenScore, ScoreError> {
    let stats =
        logsoftmax::row_stats(row, temperature).map_err(|e| ScoreError::Internal(e.to_string()))?;
    let (logprob, sampling_logprob) =
        logsoftmax::token_logprobs(row[token as usize], &stats, temperature);
    let top = logsoftmax::top_k(row, top_k)
        .into_iter()
        .map(|(id, z)| {
            let (lp, slp) = logsoftmax::token_logprobs(z, &stats, temperature);
            TopEntry {
                token: id as TokenId,
                logprob: lp,
                sampling_logprob: slp,
            }
        })
        .collect();
    Ok(TokenScore {
        token,
        logprob,
        sampling_logprob,
        top,
    })
}

//! The fixed decode schedule, shared by scoring, generation, the response cache's key and the benchmark.
//!
//! A sequence is decoded as a function of itself alone: the context's memory cleared, the prompt in
//! `decode_chunk`-token decodes from position 0, then the response in `decode_chunk`-token decodes from the prompt's end.
//! So the numbers for an item never depend on what else is queued, which thread runs it, or how busy the
//! server is. Logits are requested only at positions whose next token is scored.

use std::sync::Mutex;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::backend::backend;
use super::error::ScoreError;
use super::types::{PreparedItem, RowOptions};
use super::vocab::{TokenId, Vocabulary};

/// What one scored result asks for beyond the tokens: with the tokens and the context settings, everything
/// that shapes its numbers (and so the response cache's key).
#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    pub rows: RowOptions,
    pub temperature: f64,
}

/// Settings of one inference thread's context (the benchmark builds an identical one).
#[derive(Debug, Clone, Copy)]
pub struct ContextSettings {
    /// Context size in tokens.
    pub n_ctx: u32,
    /// Decode chunk in tokens (llama.cpp `n_batch` = `n_ubatch`): part of the schedule.
    pub decode_chunk: u32,
    /// CPU threads of this context's decodes.
    pub threads: i32,
}

/// llama.cpp's context creation mutates the model, so contexts are created one at a time.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

/// Creates a context for `settings` (one at a time: llama.cpp's context creation mutates the model).
pub fn create_context(
    model: &LlamaModel,
    settings: ContextSettings,
) -> Result<LlamaContext<'_>, String> {
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(settings.n_ctx))
        .with_n_batch(settings.decode_chunk)
        .with_n_ubatch(settings.decode_chunk)
        .with_n_seq_max(1)
        .with_n_threads(settings.threads)
        .with_n_threads_batch(settings.threads);
    let _guard = CONTEXT_CREATION.lock().unwrap_or_else(|e| e.into_inner());
    let backend = backend()?;
    model
        .new_context(backend, params)
        .map_err(|e| format!("cannot create a llama.cpp context: {e}"))
}

/// An inference thread's context and batch, lent to one job at a time.
pub struct Session<'a, 'm> {
    pub ctx: &'a mut LlamaContext<'m>,
    pub batch: &'a mut LlamaBatch<'static>,
    pub decode_chunk: usize,
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

/// Runs the fixed decode schedule of one sequence: memory cleared, then the prompt in `decode_chunk`-token
/// decodes from position 0, then the response in `decode_chunk`-token decodes from the prompt's end, with
/// logits requested only at `wanted` positions. After each decode, `on_rows` gets the context and the
/// (position, batch index) of each row with logits; `stop` is asked before each decode.
pub fn decode_sequence<'m>(
    ctx: &mut LlamaContext<'m>,
    batch: &mut LlamaBatch<'_>,
    decode_chunk: usize,
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
            decode_chunk,
            &item.tokens,
            segment,
            &wanted,
            &mut stop,
            &mut on_rows,
        )?;
    }
    Ok(())
}

/// Decodes `tokens[segment]` in `decode_chunk`-token decodes from the segment's start (one part of the fixed
/// schedule), with logits at the `wanted` positions; see [`decode_sequence`].
#[allow(clippy::too_many_arguments)]
pub fn decode_segment<'m>(
    ctx: &mut LlamaContext<'m>,
    batch: &mut LlamaBatch<'_>,
    decode_chunk: usize,
    tokens: &[TokenId],
    segment: std::ops::Range<usize>,
    wanted: &std::ops::Range<usize>,
    stop: &mut impl FnMut() -> bool,
    on_rows: &mut impl FnMut(&LlamaContext<'m>, &[(usize, i32)]) -> Result<(), ScoreError>,
) -> Result<(), ScoreError> {
    let mut rows = Vec::with_capacity(decode_chunk);
    for start in segment.clone().step_by(decode_chunk) {
        if stop() {
            return Err(ScoreError::Unavailable("the client went away".into()));
        }
        let end = (start + decode_chunk).min(segment.end);
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

//! Scoring one sequence on an inference thread: the fixed schedule (see [`super::schedule`]) with whole-prompt
//! reuse when a saved prompt state exists, and the log-softmax of each wanted row.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::llama_batch::LlamaBatch;
use rayon::prelude::*;

use super::logsoftmax::{self, Temperature};
use super::prefix::{MIN_PREFIX_TOKENS, PrefixState, PrefixStore};
use super::schedule::{JobOptions, decode_segment, decode_sequence, logit_positions};
use super::types::{ItemScore, PreparedItem, ScoreError, TokenScore, TopEntry};
use super::vocab::TokenId;

/// Scores one prepared item: its prompt restored from `prefixes` when saved there (and saved after
/// decoding when not), otherwise the plain schedule; `stopped` turning true stops it between decodes.
pub fn score_sequence(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    chunk: usize,
    item: &PreparedItem,
    options: JobOptions,
    prefixes: Option<&PrefixStore>,
    stopped: impl Fn() -> bool,
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
    // Whole-prompt reuse applies when only the prompt's last row is needed (no echo).
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
    let mut stop = || stopped();
    if saved.is_none() && store.is_none() {
        decode_sequence(ctx, batch, chunk, item, wanted, stop, on_rows)?;
    } else {
        if let (None, Some(store)) = (&saved, store) {
            // Decode the prompt alone (the schedule's first part) and save it for the next response.
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
        }
        // The response after the restored or just-saved prompt (the prompt's last row, position p - 1,
        // is outside this segment, so `wanted` asks only for response rows here).
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

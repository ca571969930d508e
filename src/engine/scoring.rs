//! Scoring one sequence on an inference thread: the fixed schedule (see [`super::schedule`]) with whole-prompt
//! reuse when a saved prompt state exists, and the log-softmax of each wanted row at every temperature asked
//! (policies that share a model and a rendered prompt share the decode; only the log-softmax is per
//! temperature, the same function on the same row as a job of its own, so the bits are the same).

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::llama_batch::LlamaBatch;
use rayon::prelude::*;

use super::logsoftmax::{self, Temperature};
use super::prefix::{MIN_PREFIX_TOKENS, PrefixState, PrefixStore};
use super::schedule::{RowOptions, decode_segment, decode_sequence, logit_positions};
use super::types::{ItemScore, PreparedItem, ScoreError, TokenScore, TopEntry};
use super::vocab::TokenId;

/// Scores one prepared item at each of `temperatures` (one result per temperature, in order) from one
/// decode: its prompt restored from `prefixes` when saved there (and saved after decoding when not),
/// otherwise the plain schedule; `stopped` turning true stops it between decodes.
#[allow(clippy::too_many_arguments)]
pub fn score_sequence(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    chunk: usize,
    item: &PreparedItem,
    options: RowOptions,
    temperatures: &[f64],
    prefixes: Option<&PrefixStore>,
    stopped: impl Fn() -> bool,
) -> Result<Vec<ItemScore>, ScoreError> {
    let tokens = &item.tokens;
    let n = tokens.len();
    let p = item.prompt_len;
    let wanted = logit_positions(item, options.echo);
    let temperatures: Vec<Temperature> =
        temperatures.iter().map(|&t| Temperature::new(t)).collect();
    let target = |q: usize| -> TokenId {
        if q + 1 < n {
            tokens[q + 1]
        } else {
            item.end_of_turn
                .expect("a logit at the last position implies end of turn")
        }
    };
    // Per position, the row's score at each temperature.
    let mut scores: Vec<Vec<TokenScore>> = Vec::with_capacity(wanted.len());
    // Whole-prompt reuse applies when only the prompt's last row is needed (no echo).
    let store = prefixes.filter(|_| !options.echo && !wanted.is_empty() && p >= MIN_PREFIX_TOKENS);
    let prompt = &tokens[..p];
    let saved = store.and_then(|s| s.get(prompt));
    if let Some(saved) = &saved {
        ctx.clear_kv_cache();
        ctx.state_seq_set(&saved.kv, 0)
            .map_err(|e| ScoreError::Internal(format!("restoring a saved prompt: {e}")))?;
        scores.push(score_row_at(
            &saved.last_row,
            target(p - 1),
            &temperatures,
            options.top_logprobs,
        )?);
    }
    let mut on_rows = |ctx: &LlamaContext<'_>, rows: &[(usize, i32)]| {
        let rows: Vec<(&[f32], TokenId)> = rows
            .iter()
            .map(|&(q, i)| (ctx.get_logits_ith(i), target(q)))
            .collect();
        let chunk_scores: Result<Vec<Vec<TokenScore>>, ScoreError> = rows
            .par_iter()
            .with_min_len(4)
            .map(|&(row, token)| score_row_at(row, token, &temperatures, options.top_logprobs))
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
    // Per temperature, split the positional scores back into prompt, response and end of turn.
    let prompt_count = if options.echo { p - 1 } else { 0 };
    let mut per_temperature: Vec<Vec<TokenScore>> = (0..temperatures.len())
        .map(|_| Vec::with_capacity(scores.len()))
        .collect();
    for row in scores {
        for (out, score) in per_temperature.iter_mut().zip(row) {
            out.push(score);
        }
    }
    Ok(per_temperature
        .into_iter()
        .map(|mut scores| {
            let mut rest = scores.split_off(prompt_count.min(scores.len()));
            let end_of_turn = if item.end_of_turn.is_some() {
                rest.pop()
            } else {
                None
            };
            ItemScore {
                prompt: scores,
                response: rest,
                end_of_turn,
            }
        })
        .collect())
}

/// Scores one position at each temperature (one result per temperature, in order): the top alternatives
/// are found once (their order does not depend on the temperature), the statistics are per temperature, each
/// by the same function on the same row as a job of its own would run, so each result has that job's bits.
fn score_row_at(
    row: &[f32],
    token: TokenId,
    temperatures: &[Temperature],
    top_k: usize,
) -> Result<Vec<TokenScore>, ScoreError> {
    let top = logsoftmax::top_k(row, top_k);
    temperatures
        .iter()
        .map(|temperature| {
            let stats = logsoftmax::row_stats(row, temperature)
                .map_err(|e| ScoreError::Internal(e.to_string()))?;
            let (logprob, sampling_logprob) =
                logsoftmax::token_logprobs(row[token as usize], &stats, temperature);
            let top = top
                .iter()
                .map(|&(id, z)| {
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
        })
        .collect()
}

/// Scores one position: the target token's log-probabilities and the top alternatives.
pub fn score_row(
    row: &[f32],
    token: TokenId,
    temperature: &Temperature,
    top_k: usize,
) -> Result<TokenScore, ScoreError> {
    let mut one = score_row_at(row, token, std::slice::from_ref(temperature), top_k)?;
    Ok(one.remove(0))
}

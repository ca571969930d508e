//! Scoring one sequence on an inference thread: the fixed schedule (see [`super::schedule`]) with the prefix
//! cache's saved prompt state when there is one, and the log-softmax of each wanted row at every temperature asked
//! (policies that share a model and a rendered prompt share the decode; only the log-softmax is per
//! temperature, the same function on the same row as a job of its own, so the bits are the same).

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use rayon::prelude::*;

use super::error::ScoreError;
use super::logsoftmax::{self, Temperature};
use super::prefix::{MIN_PREFIX_TOKENS, PrefixState, PrefixStore};
use super::schedule::{Session, decode_segment, decode_sequence, logit_positions};
use super::types::{ItemScore, PreparedItem, RowOptions, TokenScore, TopEntry};
use super::vocab::TokenId;

/// Scores one prepared item at each of `temperatures` (one result per temperature, in order) from one
/// decode: its prompt restored from `prefixes` when saved there (and saved after decoding when not),
/// otherwise the plain schedule; `stopped` turning true stops it between decodes.
pub fn score_sequence(
    session: &mut Session<'_, '_>,
    item: &PreparedItem,
    options: RowOptions,
    temperatures: &[f64],
    prefixes: Option<&PrefixStore>,
    stopped: impl Fn() -> bool,
) -> Result<Vec<ItemScore>, ScoreError> {
    let (p, n) = (item.prompt_len, item.tokens.len());
    let wanted = logit_positions(item, options.echo);
    let scorer = RowScorer {
        item,
        temperatures: temperatures.iter().map(|&t| Temperature::new(t)).collect(),
        top_k: options.top_logprobs,
    };
    // Per position, the row's score at each temperature.
    let mut scores: Vec<Vec<TokenScore>> = Vec::with_capacity(wanted.len());
    // The prefix cache applies when only the prompt's last row is needed (no echo).
    let store = prefixes.filter(|_| !options.echo && !wanted.is_empty() && p >= MIN_PREFIX_TOKENS);
    let saved = store.and_then(|s| s.get(&item.tokens[..p]));
    if let Some(saved) = &saved {
        session.ctx.clear_kv_cache();
        session
            .ctx
            .state_seq_set(&saved.kv, 0)
            .map_err(|e| ScoreError::Internal(format!("restoring a saved prompt: {e}")))?;
        scores.push(scorer.score(&saved.last_row, p - 1)?);
    }
    let mut on_rows = |ctx: &LlamaContext<'_>, rows: &[(usize, i32)]| {
        scores.extend(scorer.score_rows(ctx, rows)?);
        Ok(())
    };
    let mut stop = || stopped();
    let (ctx, batch, decode_chunk) = (&mut *session.ctx, &mut *session.batch, session.decode_chunk);
    match store {
        None => decode_sequence(ctx, batch, decode_chunk, item, wanted, stop, on_rows)?,
        Some(store) => {
            if saved.is_none() {
                // Decode the prompt alone (the schedule's first part) and save it for the next response.
                ctx.clear_kv_cache();
                let prompt = 0..p;
                decode_segment(
                    ctx,
                    batch,
                    decode_chunk,
                    &item.tokens,
                    prompt,
                    &wanted,
                    &mut stop,
                    &mut on_rows,
                )?;
                store.insert(
                    &item.tokens[..p],
                    saved_prompt(ctx, (p - 1) % decode_chunk)?,
                );
            }
            // The response after the restored or just-saved prompt (the prompt's last row, position p - 1,
            // is outside this segment, so `wanted` asks only for response rows here).
            decode_segment(
                ctx,
                batch,
                decode_chunk,
                &item.tokens,
                p..n,
                &wanted,
                &mut stop,
                &mut on_rows,
            )?;
        }
    }
    Ok(per_temperature(
        item,
        options.echo,
        scores,
        temperatures.len(),
    ))
}

/// The state to keep after decoding a prompt alone: its KV cells and its last row of logits (`last_row`
/// is that row's index in the final decode).
fn saved_prompt(ctx: &LlamaContext<'_>, last_row: usize) -> Result<PrefixState, ScoreError> {
    Ok(PrefixState {
        kv: ctx
            .state_seq_get(0, LlamaStateSeqFlags::empty())
            .map_err(|e| ScoreError::Internal(format!("saving a prompt: {e}")))?,
        last_row: ctx.get_logits_ith(last_row as i32).to_vec(),
    })
}

/// What one item's rows are scored for: the token each position predicts, at every temperature asked.
struct RowScorer<'a> {
    item: &'a PreparedItem,
    temperatures: Vec<Temperature>,
    top_k: usize,
}

impl RowScorer<'_> {
    /// The token the logits at position `q` are asked about: the next one, or end of turn after the last.
    fn target(&self, q: usize) -> TokenId {
        let tokens = &self.item.tokens;
        if q + 1 < tokens.len() {
            tokens[q + 1]
        } else {
            self.item
                .end_of_turn
                .expect("a logit at the last position implies end of turn")
        }
    }

    /// Position `q`'s row at each temperature.
    fn score(&self, row: &[f32], q: usize) -> Result<Vec<TokenScore>, ScoreError> {
        score_row_at(row, self.target(q), &self.temperatures, self.top_k)
    }

    /// The rows of one decode (position, batch index), scored in parallel (the log-softmax of a row is a
    /// pass over the whole vocabulary; its numbers do not depend on the thread).
    fn score_rows(
        &self,
        ctx: &LlamaContext<'_>,
        rows: &[(usize, i32)],
    ) -> Result<Vec<Vec<TokenScore>>, ScoreError> {
        let rows: Vec<(&[f32], usize)> = rows
            .iter()
            .map(|&(q, i)| (ctx.get_logits_ith(i), q))
            .collect();
        rows.par_iter()
            .with_min_len(4)
            .map(|&(row, q)| self.score(row, q))
            .collect()
    }
}

/// Positional scores (per position, one per temperature) turned into one result per temperature, each split
/// into prompt (with echo), response and end of turn.
fn per_temperature(
    item: &PreparedItem,
    echo: bool,
    scores: Vec<Vec<TokenScore>>,
    count: usize,
) -> Vec<ItemScore> {
    let prompt_count = if echo { item.prompt_len - 1 } else { 0 };
    let mut columns: Vec<Vec<TokenScore>> = (0..count)
        .map(|_| Vec::with_capacity(scores.len()))
        .collect();
    for row in scores {
        for (column, score) in columns.iter_mut().zip(row) {
            column.push(score);
        }
    }
    columns
        .into_iter()
        .map(|mut prompt| {
            let mut response = prompt.split_off(prompt_count.min(prompt.len()));
            let end_of_turn = if item.end_of_turn.is_some() {
                response.pop()
            } else {
                None
            };
            ItemScore {
                prompt,
                response,
                end_of_turn,
            }
        })
        .collect()
}

/// Scores one position at each temperature (one result per temperature, in order): the top alternatives,
/// the row's maximum and its T = 1 sum are computed once (none depends on the temperature), the scaled sum
/// per temperature — the same passes on the same row as a job of its own, so each result has that job's bits.
fn score_row_at(
    row: &[f32],
    token: TokenId,
    temperatures: &[Temperature],
    top_k: usize,
) -> Result<Vec<TokenScore>, ScoreError> {
    let top = logsoftmax::top_k(row, top_k);
    let stats = logsoftmax::row_stats_at(row, temperatures)
        .map_err(|e| ScoreError::Internal(e.to_string()))?;
    temperatures
        .iter()
        .zip(stats)
        .map(|(temperature, stats)| {
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

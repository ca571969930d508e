//! Generation for the completions APIs: the prompt decoded with the same fixed schedule as scoring, then
//! one token per decode, sampled by llama.cpp's sampler chain. For a given seed and request the tokens are
//! the same whatever the server is doing: each job runs alone in its context from an empty memory.

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use rayon::prelude::*;
use tokio::sync::mpsc;

use super::error::ScoreError;
use super::logsoftmax::Temperature;
use super::schedule::{Session, decode_sequence};
use super::scoring::score_row;
use super::types::{PreparedItem, TokenScore};
use super::vocab::TokenId;
use std::sync::Arc;

/// Sampling parameters (OpenAI/Fireworks names and meanings).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (≥ 1).
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// 1 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: i32,
    /// 0 = off.
    pub min_p: f64,
    pub seed: u32,
    /// Generation ends before the first occurrence of any of these (shared: the same for every choice of
    /// a request, so a request's choices hold one copy).
    pub stop: Arc<[String]>,
    /// 1 = off (llama.cpp's repeat penalty over the generated tokens).
    pub repetition_penalty: f64,
    /// 0 = off (OpenAI's frequency and presence penalties over the generated tokens).
    pub frequency_penalty: f64,
    pub presence_penalty: f64,
    /// Added to the logits of these tokens before sampling (shared, as `stop`).
    pub logit_bias: Arc<[(TokenId, f32)]>,
}

/// How many generated tokens the penalties look back over.
const PENALTY_WINDOW: i32 = 64;

/// Why generation ended (`finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
}

impl FinishReason {
    /// The wire spelling of `finish_reason` (OpenAI's values).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a generation job reports, in order: optionally the echoed prompt, tokens, then `Done` or `Error`.
#[derive(Debug)]
pub enum GenEvent {
    /// Scores of prompt tokens 1..P (only when echo was asked), before any generated token.
    Prompt(Vec<TokenScore>),
    /// A generated token and its log-probability at temperature 1 (with top alternatives).
    Token(TokenScore),
    /// The end-of-generation token (EOS, EOT, ...) the generation stopped on, scored like any generated
    /// token: it is part of what was generated (clients of the echo recipe drop the last listed token as
    /// the generated one), but not of the text. `Done` follows.
    End(TokenScore),
    /// The end. `text_len` is how many bytes of the generated tokens' text to keep (a stop string and
    /// whatever follows it are cut).
    Done {
        reason: FinishReason,
        text_len: usize,
    },
    Error(ScoreError),
}

/// A generation request for an inference thread.
pub struct GenerateJob {
    pub prompt: Arc<PreparedItem>,
    pub options: GenerateOptions,
    pub echo: bool,
    pub top_logprobs: usize,
    pub events: mpsc::Sender<GenEvent>,
}

/// llama.cpp's sampler chain in its usual order: logit bias, penalties, top-k, top-p, min-p, temperature,
/// then a seeded draw (or the arg-max at temperature 0).
fn sampler(o: &GenerateOptions, n_vocab: usize) -> LlamaSampler {
    let mut chain = Vec::new();
    if !o.logit_bias.is_empty() {
        let biases: Vec<LlamaLogitBias> = o
            .logit_bias
            .iter()
            .map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab as i32, &biases));
    }
    if o.repetition_penalty != 1.0 || o.frequency_penalty != 0.0 || o.presence_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab as i32,
            PENALTY_WINDOW,
            o.repetition_penalty as f32,
            o.frequency_penalty as f32,
            o.presence_penalty as f32,
        ));
    }
    if o.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if o.top_k > 0 {
        chain.push(LlamaSampler::top_k(o.top_k));
    }
    if o.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(o.top_p as f32, 1));
    }
    if o.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(o.min_p as f32, 1));
    }
    chain.push(LlamaSampler::temp(o.temperature as f32));
    chain.push(LlamaSampler::dist(o.seed));
    LlamaSampler::chain_simple(chain)
}

/// Byte offset of the first stop string in `text` that ends after `from` (earlier text was checked).
fn find_stop(text: &[u8], stops: &[String], from: usize) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = s.as_bytes();
            let start = from.saturating_sub(s.len() - 1);
            text[start..]
                .windows(s.len())
                .position(|w| w == s)
                .map(|i| start + i)
        })
        .min()
}

/// Runs one generation job to its end, sending events; stops early if the receiver goes away.
pub fn run(session: &mut Session<'_, '_>, job: &GenerateJob) -> Result<(), ScoreError> {
    let gone = || ScoreError::Unavailable("the client went away".into());
    let item = &job.prompt;
    let tokens = &item.tokens;
    let p = tokens.len();
    let t1 = Temperature::new(1.0);
    let wanted = if job.echo { 0..p } else { p - 1..p };
    let mut prompt_scores = Vec::new();
    let mut last_row = None;
    decode_sequence(
        session.ctx,
        session.batch,
        session.decode_chunk,
        item,
        wanted,
        || job.events.is_closed(),
        |ctx, rows| {
            let scored: Vec<(&[f32], i32)> = rows
                .iter()
                .filter(|&&(q, _)| q + 1 < p)
                .map(|&(q, i)| (ctx.get_logits_ith(i), tokens[q + 1]))
                .collect();
            let scores: Result<Vec<TokenScore>, ScoreError> = scored
                .par_iter()
                .map(|&(row, t)| score_row(row, t, &t1, job.top_logprobs))
                .collect();
            prompt_scores.extend(scores?);
            if let Some(&(_, i)) = rows.iter().find(|&&(q, _)| q + 1 == p) {
                last_row = Some(i);
            }
            Ok(())
        },
    )?;
    if job.echo {
        job.events
            .blocking_send(GenEvent::Prompt(prompt_scores))
            .map_err(|_| gone())?;
    }
    let mut row =
        last_row.ok_or_else(|| ScoreError::Internal("no logits for the prompt".into()))?;
    let mut sampler = sampler(&job.options, session.vocab.len());
    let mut text: Vec<u8> = Vec::new();
    let done = |reason, text_len| {
        job.events
            .blocking_send(GenEvent::Done { reason, text_len })
            .map_err(|_| gone())
    };
    for i in 0..job.options.max_tokens {
        let token = sampler.sample(session.ctx, row).0;
        let score = score_row(
            session.ctx.get_logits_ith(row),
            token,
            &t1,
            job.top_logprobs,
        )?;
        if session.vocab.is_end_of_generation(token) {
            job.events
                .blocking_send(GenEvent::End(score))
                .map_err(|_| gone())?;
            return done(FinishReason::Stop, text.len());
        }
        let before = text.len();
        text.extend_from_slice(session.vocab.piece(token));
        job.events
            .blocking_send(GenEvent::Token(score))
            .map_err(|_| gone())?;
        if let Some(at) = find_stop(&text, &job.options.stop[..], before) {
            return done(FinishReason::Stop, at);
        }
        let pos = p + i;
        if i + 1 == job.options.max_tokens || pos + 1 > session.n_ctx {
            break;
        }
        session.batch.clear();
        session
            .batch
            .add(LlamaToken(token), pos as i32, &[0], true)
            .map_err(|e| ScoreError::Internal(format!("batch: {e}")))?;
        session
            .ctx
            .decode(session.batch)
            .map_err(|e| ScoreError::Internal(format!("llama_decode: {e}")))?;
        row = 0;
    }
    done(FinishReason::Length, text.len())
}

#[cfg(test)]
mod tests {
    use super::find_stop;

    #[test]
    fn stop_strings_are_found_across_token_boundaries() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop(b"abc\n", &stops, 3), None);
        assert_eq!(find_stop(b"abc\n\nx", &stops, 4), Some(3));
        assert_eq!(find_stop(b"xxEN", &stops, 3), None);
        assert_eq!(find_stop(b"xxEND", &stops, 4), Some(2));
        assert_eq!(find_stop(b"END", &[String::new()], 0), None);
        // The earliest match wins.
        assert_eq!(find_stop(b"a\n\nEND", &stops, 0), Some(1));
    }
}

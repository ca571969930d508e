//! One item's scores in a form that does not depend on where they were computed: the local engine and every
//! remote provider produce an [`ItemReport`], and `/v1/logprobs` and `llama-scorer score` write it out. The
//! token entries serialize in the wire shape (Fireworks' `logprobs.content[]` plus `sampling_logprob`), so
//! the API layer adds only the item's envelope.

use serde::Serialize;

use crate::engine::vocab::Vocabulary;
use crate::engine::{ItemScore, PreparedItem, ScoreOptions, TokenScore};

/// The scores of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemReport {
    /// log π(response | prompt) at temperature 1 (plus end of turn when asked): the engine's f64 sum, the
    /// remote llama-scorer's own total, or the f64 sum of a completions API's echoed response tokens.
    pub logprob: f64,
    /// The same at the request's temperature, where it is known; never the T = 1 value relabelled.
    pub sampling_logprob: Option<f64>,
    /// Sum over the echoed prompt tokens after the first (only with `echo`).
    pub prompt_logprob: Option<f64>,
    pub prompt_tokens: usize,
    pub response_tokens: usize,
    /// Tokens whose log-probs make up `logprob`.
    pub scored_tokens: usize,
    /// Per-token detail: the echoed prompt's tokens (with `echo`) then the scored ones.
    pub tokens: Vec<TokenReport>,
    /// Found in a response cache (this process's, or the remote's) rather than computed for this request.
    pub cached: bool,
    /// What defines the numbers (model file, llama.cpp build, decode chunk, device; see
    /// `engine::fingerprint`): this server's for a local policy, the upstream's for a remote one where it
    /// says (`None` where it does not).
    pub system_fingerprint: Option<String>,
}

/// One token's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenReport {
    /// The token's bytes as UTF-8, with U+FFFD where it holds part of a character.
    pub token: String,
    /// `null` where the upstream does not report ids (completions APIs without `token_ids`).
    pub token_id: Option<i64>,
    /// Exact bytes; `null` where they are unknown (a completions API's token holding part of a character).
    pub bytes: Option<Vec<u8>>,
    /// Byte offset of the token in the text of prompt + response (whether or not the prompt is echoed).
    pub text_offset: usize,
    /// `null` only for an echoed first token, which has no context to be scored in.
    pub logprob: Option<f64>,
    pub sampling_logprob: Option<f64>,
    /// The most likely alternatives, most likely first.
    pub top_logprobs: Vec<TopReport>,
}

/// One alternative at a position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopReport {
    pub token: String,
    pub token_id: Option<i64>,
    pub bytes: Option<Vec<u8>>,
    pub logprob: f64,
    pub sampling_logprob: Option<f64>,
}

impl ItemReport {
    /// The report of an item scored by the local engine: sums, counts and the token list, with byte
    /// offsets into the concatenated token text of prompt + response.
    pub fn local(
        item: &PreparedItem,
        score: &ItemScore,
        cached: bool,
        options: &ScoreOptions,
        vocab: &Vocabulary,
        system_fingerprint: &str,
    ) -> ItemReport {
        let mut tokens = Vec::new();
        let ids = &item.tokens;
        // Without echo, offsets still count from the prompt's start, as OpenAI's do.
        let mut offset: usize = if options.echo {
            0
        } else {
            ids[..item.prompt_len]
                .iter()
                .map(|&t| vocab.piece(t).len())
                .sum()
        };
        let mut push = |id: i32, score: Option<&TokenScore>| {
            let (token, bytes) = shown(vocab, id);
            let len = bytes.len();
            tokens.push(TokenReport {
                token,
                token_id: Some(i64::from(id)),
                bytes: Some(bytes),
                text_offset: offset,
                logprob: score.map(|s| s.logprob),
                sampling_logprob: score.map(|s| s.sampling_logprob),
                top_logprobs: score.map_or_else(Vec::new, |s| {
                    s.top
                        .iter()
                        .map(|t| {
                            let (token, bytes) = shown(vocab, t.token);
                            TopReport {
                                token,
                                token_id: Some(i64::from(t.token)),
                                bytes: Some(bytes),
                                logprob: t.logprob,
                                sampling_logprob: Some(t.sampling_logprob),
                            }
                        })
                        .collect()
                }),
            });
            offset += len;
        };
        if options.echo {
            push(ids[0], None);
            for (i, s) in score.prompt.iter().enumerate() {
                push(ids[i + 1], Some(s));
            }
        }
        for s in score.scored() {
            push(s.token, Some(s));
        }
        ItemReport {
            logprob: score.logprob(),
            sampling_logprob: Some(score.sampling_logprob()),
            prompt_logprob: options.echo.then(|| score.prompt_logprob()),
            prompt_tokens: item.prompt_len,
            response_tokens: item.response_len(),
            scored_tokens: score.scored().count(),
            tokens,
            cached,
            system_fingerprint: Some(system_fingerprint.to_string()),
        }
    }

    /// Rough heap size, for byte-bounded caches.
    pub fn approx_bytes(&self) -> usize {
        let token = |t: &TokenReport| {
            96 + t.token.len()
                + t.bytes.as_ref().map_or(0, Vec::len)
                + t.top_logprobs
                    .iter()
                    .map(|a| 72 + a.token.len() + a.bytes.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
        };
        128 + self.tokens.iter().map(token).sum::<usize>()
    }
}

/// A token's text and exact bytes.
fn shown(vocab: &Vocabulary, id: i32) -> (String, Vec<u8>) {
    let bytes = vocab.piece(id).to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

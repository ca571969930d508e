//! A served policy's tokenizer, as the tokenizer routes offer it (`/tokenize`, `/detokenize`,
//! `/tokenizer_info`, `/props`): evaluation harnesses tokenize through the server instead of downloading
//! the model's tokenizer, so what they get must be exactly the tokens scoring uses. Only a local policy has
//! one; a remote policy's tokenizer is its upstream's.

use std::sync::Arc;

use super::ServedPolicy;
use super::prepare::prepare_where_cheapest;
use crate::engine::vocab::TokenId;
use crate::engine::{Policy, ScoreError};

/// The tokenizer of one local policy.
#[derive(Clone)]
pub struct Tokenizer {
    policy: Arc<Policy>,
}

/// What a client needs to use the tokenizer through the routes, and to size its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerInfo {
    /// The policy's name (what clients put in `model`).
    pub name: String,
    /// BOS as text; `None` where the model has none.
    pub bos_text: Option<String>,
    /// EOS as text; `None` where the model has none.
    pub eos_text: Option<String>,
    /// Whether tokenizing a prompt adds BOS.
    pub add_bos: bool,
    /// The chat template in use: the policy's override, else the GGUF's.
    pub chat_template: Option<String>,
    /// The policy's context length in tokens.
    pub n_ctx: usize,
    pub vocab_size: usize,
    /// How many requests the policy's model runs at once (its inference threads): what llama.cpp's server
    /// calls slots, by which lm-eval's `gguf` backend sizes its thread pool.
    pub slots: u64,
}

impl ServedPolicy {
    /// This policy's tokenizer, or why there is none here (a message for the request's `model` field).
    pub fn tokenizer(&self) -> Result<Tokenizer, String> {
        match self {
            ServedPolicy::Local(policy) => Ok(Tokenizer {
                policy: policy.clone(),
            }),
            ServedPolicy::Remote(r) => Err(format!(
                "policy `{}` is served by a remote {} API, whose tokenizer this server does not have",
                r.name,
                r.provider()
            )),
        }
    }
}

/// A special token's text, `None` where the model has none.
fn special_text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Tokenizer {
    /// `text`'s tokens as scoring sees them (control-token text parsed as control tokens, as in a
    /// prompt), with BOS where the model adds one if `add_special`. Runs off the async workers when the
    /// request was large (`body_bytes`).
    pub async fn tokenize(
        &self,
        text: String,
        add_special: bool,
        body_bytes: usize,
    ) -> Result<Vec<TokenId>, ScoreError> {
        let policy = self.policy.clone();
        prepare_where_cheapest(body_bytes, move || {
            let model = &policy.model;
            Ok(if add_special {
                model.vocab.tokenize_prompt(&model.llama, &text)
            } else {
                model.vocab.tokenize_prompt_text(&model.llama, &text)
            })
        })
        .await
    }

    /// The tokens' bytes joined, as text (invalid UTF-8 as U+FFFD). At most the context's length of
    /// tokens, each a valid id; the error names the field `tokens[i]`.
    pub fn detokenize(&self, tokens: &[i64]) -> Result<String, ScoreError> {
        let n_ctx = self.policy.n_ctx;
        if tokens.len() > n_ctx {
            return Err(ScoreError::invalid(
                "tokens",
                format!(
                    "at most the policy's context ({n_ctx}) tokens, got {}",
                    tokens.len()
                ),
            ));
        }
        let vocab = &self.policy.model.vocab;
        let mut bytes = Vec::new();
        for (i, &id) in tokens.iter().enumerate() {
            let id = vocab
                .check_id(id)
                .map_err(|m| ScoreError::invalid(format!("tokens[{i}]"), m))?;
            bytes.extend_from_slice(vocab.piece(id));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The policy's context length in tokens (what `/tokenize` reports beside every answer, without the
    /// copies of [`Tokenizer::info`]).
    pub fn n_ctx(&self) -> usize {
        self.policy.n_ctx
    }

    /// What the info routes report.
    pub fn info(&self) -> TokenizerInfo {
        let policy = &self.policy;
        let vocab = &policy.model.vocab;
        TokenizerInfo {
            name: policy.name.clone(),
            bos_text: vocab.bos.and_then(|_| special_text(&vocab.bos_text)),
            eos_text: special_text(&vocab.eos_text),
            add_bos: vocab.add_bos,
            chat_template: policy.chat_template_source.clone(),
            n_ctx: policy.n_ctx,
            vocab_size: vocab.len(),
            slots: policy.model.contexts(),
        }
    }
}

//! Tokenization with an exact prompt/response boundary, and the per-token byte pieces used in answers.
//!
//! The prompt and the response are tokenized separately and concatenated, so no token ever spans the
//! boundary. The prompt is tokenized with control tokens parsed (as HF tokenizers and llama.cpp's server do);
//! the response is plain text, and its tokens' bytes must concatenate to the response exactly — otherwise
//! the item is refused rather than scored against a different string.

use std::sync::Arc;

use llama_cpp_2::model::{LlamaModel, VocabType};
use llama_cpp_2::token::LlamaToken;

/// A token id as used throughout the engine (llama.cpp's `llama_token`).
pub type TokenId = i32;

/// The tokenizer facts scoring depends on, read once from the GGUF, plus every token's bytes.
pub struct Vocabulary {
    /// Bytes of each token as llama.cpp renders it (control tokens as their text).
    pieces: Vec<Box<[u8]>>,
    /// BOS token, when the model has one.
    pub bos: Option<TokenId>,
    /// Whether the model's metadata asks for BOS at the start of every sequence.
    pub add_bos: bool,
    /// The model's own end-of-turn token (llama.cpp's EOT, else EOS); a policy's chat template may
    /// name a better one (see `Policy`).
    pub end_of_turn: Option<TokenId>,
    /// Tokens that end generation (EOS, EOT and their kin, as llama.cpp classifies them).
    end_of_generation: std::collections::HashSet<TokenId>,
    /// BOS and EOS as text, for chat templates (`bos_token`, `eos_token`).
    pub bos_text: String,
    pub eos_text: String,
    /// The longest token's bytes, when every token of this tokenizer covers at most its own bytes of the
    /// input (byte-level BPE and SentencePiece, which drop nothing): then a text of `b` bytes has at least
    /// ⌈b / longest⌉ tokens and can be refused as too long without tokenizing it. `None` for tokenizers
    /// that may drop input (WordPiece's whitespace, Unigram's normalizer).
    longest_piece: Option<usize>,
    /// Recent tokenizations by (control tokens parsed?, text): repeated prompts and responses — the same
    /// item under several policies, cache hits — skip llama.cpp's tokenizer.
    recent: moka::sync::Cache<(bool, Arc<str>), Arc<[TokenId]>>,
}

/// Byte budget of the tokenization cache of one model.
const RECENT_TOKENIZATIONS_BYTES: u64 = 32 << 20;

fn optional(t: LlamaToken) -> Option<TokenId> {
    (t.0 >= 0).then_some(t.0)
}

impl Vocabulary {
    /// Reads the vocabulary of a loaded model (a few hundred ms for a 262k vocabulary, once per model).
    pub fn from_model(model: &LlamaModel) -> Vocabulary {
        let vocab = model.vocab();
        let pieces = vocab
            .tokens()
            .map(|t| vocab.token_to_piece(t, true, None).into_boxed_slice())
            .collect::<Vec<_>>();
        let bos = optional(vocab.bos());
        let eos = optional(vocab.eos());
        let end_of_turn = optional(vocab.eot()).or(eos);
        let text = |t: Option<TokenId>| {
            t.map(|id| String::from_utf8_lossy(&pieces[id as usize]).into_owned())
                .unwrap_or_default()
        };
        let end_of_generation = vocab
            .tokens()
            .filter(|&t| vocab.is_eog(t))
            .map(|t| t.0)
            .collect();
        // llama-cpp-2 knows only BPE and SPM by name and panics on the others: those get no bound.
        let keeps_every_byte =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vocab.vocab_type()))
                .is_ok_and(|t| matches!(t, VocabType::BPE | VocabType::SPM));
        let longest_piece =
            keeps_every_byte.then(|| pieces.iter().map(|p| p.len()).max().unwrap_or(0).max(1));
        Vocabulary {
            longest_piece,
            recent: moka::sync::Cache::builder()
                .max_capacity(RECENT_TOKENIZATIONS_BYTES)
                .weigher(|k: &(bool, Arc<str>), v: &Arc<[TokenId]>| {
                    u32::try_from(k.1.len() + v.len() * 4 + 64).unwrap_or(u32::MAX)
                })
                .build(),
            end_of_generation,
            bos,
            add_bos: vocab.should_add_bos() && bos.is_some(),
            end_of_turn,
            bos_text: text(bos),
            eos_text: text(eos),
            pieces,
        }
    }

    /// Number of tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the vocabulary is empty (never, for a usable model).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The bytes of one token; `id` must be valid (see [`Vocabulary::check_id`]).
    pub fn piece(&self, id: TokenId) -> &[u8] {
        &self.pieces[id as usize]
    }

    /// Checks a client-supplied token id, returning a message for the caller to attach to its field.
    pub fn check_id(&self, id: i64) -> Result<TokenId, String> {
        if (0..self.pieces.len() as i64).contains(&id) {
            Ok(id as TokenId)
        } else {
            Err(format!(
                "token id {id} is outside the vocabulary (0..{})",
                self.pieces.len()
            ))
        }
    }

    /// The fewest tokens a text of `bytes` bytes can tokenize into, when this tokenizer bounds it (see
    /// `longest_piece`): a cheap check before tokenizing a text that cannot fit a context anyway.
    pub fn min_tokens_of(&self, bytes: usize) -> Option<usize> {
        self.longest_piece.map(|l| bytes.div_ceil(l))
    }

    /// Whether llama.cpp treats `id` as ending generation (EOS, EOT and their kin).
    pub fn is_end_of_generation(&self, id: TokenId) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// Tokenizes a prompt: control-token text becomes control tokens, and BOS is prepended exactly when
    /// the model asks for it and the text does not already start with it (chat templates often write it).
    pub fn tokenize_prompt(&self, model: &LlamaModel, text: &str) -> Vec<TokenId> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if self.add_bos {
            out.push(self.bos.expect("add_bos implies a BOS token"));
        }
        let body = self.tokenize_prompt_text(model, text);
        if self.add_bos && body.first() == self.bos.as_ref() {
            out.clear();
        }
        out.extend(body);
        out
    }

    /// Tokenizes a response as plain text and checks that its tokens' bytes are exactly the response.
    pub fn tokenize_response(
        &self,
        model: &LlamaModel,
        text: &str,
    ) -> Result<Vec<TokenId>, String> {
        // Only checked tokenizations are kept under this key, so a hit needs no second check.
        let key: (bool, Arc<str>) = (false, text.into());
        if let Some(tokens) = self.recent.get(&key) {
            return Ok(tokens.to_vec());
        }
        let tokens = raw_tokenize(model, text, false);
        let mut joined = Vec::with_capacity(text.len());
        for &t in &tokens {
            joined.extend_from_slice(self.piece(t));
        }
        if joined != text.as_bytes() {
            return Err(format!(
                "this model's tokenizer does not reproduce the response exactly (its tokens spell {:?}); \
                 send response_token_ids instead",
                String::from_utf8_lossy(&joined)
            ));
        }
        self.recent.insert(key, tokens.as_slice().into());
        Ok(tokens)
    }

    /// llama.cpp's tokenization of a prompt's text with control tokens parsed (no BOS/EOS added), from the
    /// recent-tokenizations cache if there.
    pub fn tokenize_prompt_text(&self, model: &LlamaModel, text: &str) -> Vec<TokenId> {
        let key: (bool, Arc<str>) = (true, text.into());
        if let Some(tokens) = self.recent.get(&key) {
            return tokens.to_vec();
        }
        let tokens = raw_tokenize(model, text, true);
        self.recent.insert(key, tokens.as_slice().into());
        tokens
    }
}

fn raw_tokenize(model: &LlamaModel, text: &str, parse_special: bool) -> Vec<TokenId> {
    if text.is_empty() {
        return Vec::new();
    }
    model
        .vocab()
        .tokenize(text.as_bytes(), false, parse_special)
        .into_iter()
        .map(|t| t.0)
        .collect()
}

#[cfg(test)]
mod tests {
    //! The byte bound on token counts, checked against llama.cpp's own tokenizer on the real test models.

    use std::sync::OnceLock;

    use llama_cpp_2::model::params::LlamaModelParams;
    use proptest::prelude::*;

    use super::*;
    use crate::backend::backend;
    use crate::fuzz_strategies::hostile_text;
    use crate::test_models::model_path;

    /// Each test model's tokenizer alone (vocab_only: no weights), loaded once.
    fn models() -> &'static [(LlamaModel, Vocabulary)] {
        static MODELS: OnceLock<Vec<(LlamaModel, Vocabulary)>> = OnceLock::new();
        MODELS.get_or_init(|| {
            [
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                "gemma-3-270m-q4_k_m.gguf",
            ]
            .into_iter()
            .map(|file| {
                let params = LlamaModelParams::default().with_vocab_only(true);
                let model =
                    LlamaModel::load_from_file(backend().unwrap(), model_path(file), &params)
                        .unwrap();
                let vocab = Vocabulary::from_model(&model);
                (model, vocab)
            })
            .collect()
        })
    }

    #[test]
    fn both_test_tokenizers_have_a_byte_bound() {
        for (_, vocab) in models() {
            assert!(vocab.longest_piece.is_some_and(|l| l >= 1));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// ⌈bytes / longest token's bytes⌉ never exceeds the token count, so refusing a text on it never
        /// refuses one that would have fitted.
        #[test]
        fn a_texts_bytes_bound_its_tokens_from_below(text in hostile_text()) {
            for (model, vocab) in models() {
                let tokens = raw_tokenize(model, &text, true).len();
                let bound = vocab.min_tokens_of(text.len()).unwrap();
                prop_assert!(bound <= tokens, "{} bytes: bound {} > {} tokens", text.len(), bound, tokens);
                let plain = raw_tokenize(model, &text, false).len();
                prop_assert!(bound <= plain, "{} bytes: bound {} > {} plain tokens", text.len(), bound, plain);
            }
        }
    }
}

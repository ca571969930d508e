//! A policy: a named distribution over responses (model file, temperature, system prompt, template).
//! It turns an item into the exact token sequence to score, and scores prepared items on its model.

use std::sync::Arc;

use super::chat_template::{ChatTemplate, render_policy_prompt};
use super::error::ScoreError;
use super::generate::{GenEvent, GenerateOptions};
use super::model::{LoadedModel, QueuePlace, Scored};
use super::schedule::JobOptions;
use super::settings::{PolicySettings, default_n_ctx};
use super::types::{
    ChatMessage, ItemInput, PreparedItem, PromptInput, ResponseInput, ScoreOptions,
};
use super::vocab::{TokenId, Vocabulary};

/// A configured policy bound to its (shared) loaded model.
pub struct Policy {
    pub name: String,
    pub model: Arc<LoadedModel>,
    /// Default temperature for `sampling_logprob`.
    pub temperature: f64,
    pub seed: Option<u64>,
    /// Longest sequence (prompt + response tokens) this policy scores.
    pub n_ctx: usize,
    pub system_prompt: Option<String>,
    /// The token scored by `score_end_of_turn`: what the chat template writes after an assistant
    /// message, else the model's end-of-turn token.
    pub end_of_turn: Option<TokenId>,
    /// The chat template's source (the config's override, else the GGUF's), as tokenizer clients render it.
    pub chat_template_source: Option<String>,
    template: Option<ChatTemplate>,
}

impl Policy {
    /// Binds a policy to its model and compiles its chat template (the override, else the GGUF's).
    pub fn new(cfg: &PolicySettings, model: Arc<LoadedModel>) -> Result<Policy, String> {
        let source = cfg
            .chat_template
            .as_deref()
            .or(model.info.chat_template.as_deref());
        let template = source
            .map(|s| ChatTemplate::new(s, &model.vocab.bos_text, &model.vocab.eos_text))
            .transpose()
            .map_err(|e| format!("policies.{}.chat_template: {e:#}", cfg.name))?;
        let n_ctx = cfg
            .n_ctx
            .unwrap_or_else(|| default_n_ctx(model.info.n_ctx_train)) as usize;
        let end_of_turn = template
            .as_ref()
            .and_then(|t| end_of_turn_from_template(t, &model))
            .or(model.vocab.end_of_turn);
        Ok(Policy {
            name: cfg.name.clone(),
            end_of_turn,
            temperature: cfg.temperature,
            seed: cfg.seed,
            n_ctx,
            system_prompt: cfg.system_prompt.clone(),
            chat_template_source: source.map(str::to_string),
            template,
            model,
        })
    }

    /// Whether `messages` prompts can be rendered (the model or the config supplies a chat template).
    pub fn supports_chat(&self) -> bool {
        self.template.is_some()
    }

    /// Renders a conversation as the policy's prompt text: its system prompt first, then the messages,
    /// then the generation prompt, through the chat template.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, ScoreError> {
        render_policy_prompt(
            self.template.as_ref(),
            self.system_prompt.as_deref(),
            &self.name,
            "its GGUF has none and the config sets no chat_template",
            messages,
        )
    }

    /// Tokenizes a prompt (text with control tokens parsed and BOS as the model asks, a rendered chat,
    /// or ids checked against the vocabulary). Returns the tokens and the name of the field they came from.
    fn tokenize_prompt(
        &self,
        prompt: &PromptInput,
    ) -> Result<(Vec<TokenId>, &'static str), ScoreError> {
        let model = &self.model;
        let vocab = &model.vocab;
        let (tokens, field) = match prompt {
            PromptInput::Text(text) => {
                self.check_text_fits(text, "prompt")?;
                (vocab.tokenize_prompt(&model.llama, text), "prompt")
            }
            PromptInput::Messages(messages) => {
                if messages.is_empty() {
                    return Err(ScoreError::invalid("messages", "must not be empty"));
                }
                let text = self.render_chat(messages)?;
                self.check_text_fits(&text, "messages")?;
                (vocab.tokenize_prompt(&model.llama, &text), "messages")
            }
            PromptInput::TokenIds(raw) => (
                check_ids(vocab, "prompt_token_ids", raw)?,
                "prompt_token_ids",
            ),
        };
        if tokens.is_empty() {
            return Err(ScoreError::invalid(
                field,
                "the prompt is empty and this model adds no BOS token, so the first token would have \
                 no context to be scored in; give a non-empty prompt",
            ));
        }
        Ok((tokens, field))
    }

    /// Refuses a text whose byte length alone shows it has more tokens than the context holds, before
    /// tokenizing it (see [`Vocabulary::min_tokens_of`]).
    fn check_text_fits(&self, text: &str, field: &str) -> Result<(), ScoreError> {
        match self.model.vocab.min_tokens_of(text.len()) {
            Some(min_tokens) if min_tokens > self.n_ctx => Err(ScoreError::TextTooLong {
                field: field.into(),
                bytes: text.len(),
                min_tokens,
                limit: self.n_ctx,
                policy: self.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// A prompt alone (for generation, or for scoring its own tokens with echo), checked against n_ctx.
    pub fn prepare_prompt(&self, prompt: &PromptInput) -> Result<PreparedItem, ScoreError> {
        let (tokens, field) = self.tokenize_prompt(prompt)?;
        if tokens.len() > self.n_ctx {
            return Err(ScoreError::TooLong {
                field: field.into(),
                tokens: tokens.len(),
                prompt_tokens: tokens.len(),
                response_tokens: 0,
                limit: self.n_ctx,
                policy: self.name.clone(),
            });
        }
        Ok(PreparedItem {
            prompt_len: tokens.len(),
            tokens,
            end_of_turn: None,
        })
    }

    /// Tokenizes an item into the sequence to score, checking every limit. CPU work: call it off the
    /// async runtime for large batches.
    pub fn prepare(
        &self,
        item: &ItemInput,
        options: &ScoreOptions,
    ) -> Result<PreparedItem, ScoreError> {
        let (mut tokens, _) = self.tokenize_prompt(&item.prompt)?;
        let prompt_len = tokens.len();
        let (response, field) = match &item.response {
            ResponseInput::Text(text) => (
                {
                    self.check_text_fits(text, "response")?;
                    &self.model.vocab
                }
                .tokenize_response(&self.model.llama, text)
                .map_err(|m| ScoreError::invalid("response", m))?,
                "response",
            ),
            ResponseInput::TokenIds(raw) => (
                check_ids(&self.model.vocab, "response_token_ids", raw)?,
                "response_token_ids",
            ),
        };
        tokens.extend_from_slice(&response);
        let end_of_turn = if options.score_end_of_turn {
            Some(self.end_of_turn.ok_or_else(|| {
                ScoreError::invalid(
                    "score_end_of_turn",
                    "this model defines no end-of-turn or end-of-sequence token",
                )
            })?)
        } else {
            None
        };
        if tokens.len() > self.n_ctx {
            return Err(ScoreError::TooLong {
                field: field.into(),
                tokens: tokens.len(),
                prompt_tokens: prompt_len,
                response_tokens: response.len(),
                limit: self.n_ctx,
                policy: self.name.clone(),
            });
        }
        Ok(PreparedItem {
            tokens,
            prompt_len,
            end_of_turn,
        })
    }

    /// Reserves `n` places in this policy's model queue, all or none (see [`LoadedModel::reserve`]).
    pub fn reserve(&self, n: usize) -> Result<Vec<QueuePlace>, ScoreError> {
        self.model.reserve(n).map_err(|e| e.for_policy(&self.name))
    }

    /// Starts generating a continuation of `prompt` on this policy's model in a reserved place (see
    /// [`LoadedModel::generate`]).
    pub async fn generate(
        &self,
        prompt: Arc<PreparedItem>,
        options: GenerateOptions,
        echo: bool,
        top_logprobs: usize,
        place: QueuePlace,
    ) -> Result<tokio::sync::mpsc::Receiver<GenEvent>, ScoreError> {
        self.model
            .generate(prompt, options, echo, top_logprobs, place)
            .await
            .map_err(|e| e.for_policy(&self.name))
    }

    /// The `system_fingerprint` of this policy's numbers: its model's here (model file, llama.cpp build, decode
    /// chunk, device); answers and score files carry it so results from different servers can be compared.
    pub fn system_fingerprint(&self) -> &str {
        self.model.system_fingerprint()
    }

    /// Scores prepared items on this policy's model, in order.
    pub async fn score(
        &self,
        items: Vec<Arc<PreparedItem>>,
        options: &ScoreOptions,
    ) -> Result<Vec<Scored>, ScoreError> {
        let job = JobOptions {
            rows: options.rows(),
            temperature: options.temperature,
        };
        self.model
            .score(items, job)
            .await
            .map_err(|e| e.for_policy(&self.name))
    }
}

/// Checks client-supplied token ids against the vocabulary, naming the first bad one (`field[i]`).
fn check_ids(vocab: &Vocabulary, field: &str, raw: &[i64]) -> Result<Vec<TokenId>, ScoreError> {
    raw.iter()
        .enumerate()
        .map(|(i, &t)| {
            vocab
                .check_id(t)
                .map_err(|m| ScoreError::invalid(format!("{field}[{i}]"), m))
        })
        .collect()
}

/// The end-of-generation token a chat template writes right after an assistant message's content
/// (`<|im_end|>` for ChatML, `<end_of_turn>` for Gemma), found by rendering a sample conversation.
fn end_of_turn_from_template(template: &ChatTemplate, model: &LoadedModel) -> Option<TokenId> {
    const MARK: &str = "\u{1}llama-scorer-response\u{1}";
    let conversation = [
        ChatMessage {
            role: "user".into(),
            content: "Hi".into(),
            name: None,
        },
        ChatMessage {
            role: "assistant".into(),
            content: MARK.into(),
            name: None,
        },
    ];
    let text = template.render(&conversation, false).ok()?;
    let after = &text[text.find(MARK)? + MARK.len()..];
    let first = *model
        .llama
        .vocab()
        .tokenize(after.as_bytes(), false, true)
        .first()?;
    model.vocab.is_end_of_generation(first.0).then_some(first.0)
}

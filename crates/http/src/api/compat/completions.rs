//! `POST /v1/completions` (and `/inference/v1/completions`): OpenAI/Fireworks completions. With
//! `max_tokens: 0`, `echo: true` and `logprobs` it is the teacher-forcing call hosted-API users already
//! make; with `max_tokens > 0` it generates with llama.cpp's sampler chain.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::answer::{AnswerPlan, ChoiceFormat, ChunkHeader, answer};
use super::choice::{self, ChoiceOutcome, chars_in};
use super::params::{self, LogprobsMode, StreamOptions};
use super::request::{CompatRequest, LocalRequest, Opened, open};
use super::stream::Delta;
use super::{Budget, plan_choices};
use crate::api::tokens::TokenView;
use crate::api::{ApiError, AppState};
use crate::engine::PromptInput;
use crate::engine::vocab::TokenId;
use crate::engine::vocab::Vocabulary;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The policy; may be left out while the server serves one policy (clients such as lm-eval's
    /// `gguf` backend send none).
    pub model: Option<String>,
    pub prompt: Value,
    #[serde(default)]
    pub echo: bool,
    pub echo_last: Option<u32>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub return_token_ids: bool,
    /// End-user id (OpenAI): accepted and ignored; it changes no number.
    #[allow(dead_code)]
    pub user: Option<String>,
    /// llama.cpp's slot pinning: accepted, no effect (see [`params::check_id_slot`]).
    pub id_slot: Option<i64>,
}

/// The OpenAI `prompt` forms: a string, strings, token ids, or lists of token ids.
fn prompts(value: Value) -> Result<Vec<PromptInput>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "prompt",
            "must be a string, a list of strings, a list of token ids, or a list of token-id lists",
        )
    };
    let ids = |v: &[Value]| -> Option<Vec<i64>> { v.iter().map(Value::as_i64).collect() };
    match value {
        Value::String(s) => Ok(vec![PromptInput::Text(s)]),
        Value::Array(items) if items.is_empty() => {
            Err(ApiError::invalid("prompt", "must not be an empty list"))
        }
        Value::Array(items) => match &items[0] {
            Value::String(_) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(PromptInput::Text(s)),
                    _ => Err(bad()),
                })
                .collect(),
            Value::Number(_) => Ok(vec![PromptInput::TokenIds(ids(&items).ok_or_else(bad)?)]),
            Value::Array(_) => items
                .iter()
                .map(|v| {
                    v.as_array()
                        .and_then(|a| ids(a))
                        .map(PromptInput::TokenIds)
                        .ok_or_else(bad)
                })
                .collect(),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[derive(Serialize)]
struct CompletionChoice {
    index: usize,
    text: String,
    logprobs: Option<ChoiceLogprobs>,
    finish_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_token_ids: Option<Vec<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ids: Option<Vec<i32>>,
}

/// A choice's logprobs in the shape asked for, serialized as it is (no intermediate JSON tree).
#[derive(Serialize)]
#[serde(untagged)]
enum ChoiceLogprobs {
    Legacy(choice::LegacyLogprobs),
    /// Without echo, the legacy object also carries the same tokens as llama.cpp's server answers an integer
    /// `logprobs` on completions (`content[]` whose entries have `id`), which llama.cpp clients read
    /// (lm-eval's `gguf` backend since its rewrite); with echo (the scoring recipe, long answers) it is the
    /// legacy object alone.
    LegacyWithLlamaContent {
        #[serde(flatten)]
        legacy: choice::LegacyLogprobs,
        content: LlamaContent,
    },
    Content(choice::ContentLogprobs),
}

/// `content[]` with llama.cpp's `id` beside each `token_id` (entries and their alternatives).
struct LlamaContent(choice::ContentLogprobs);

/// One `content[]` entry as llama.cpp writes it.
#[derive(Serialize)]
struct LlamaEntry<'a> {
    id: TokenId,
    #[serde(flatten)]
    view: &'a TokenView,
    logprob: f64,
    top_logprobs: Vec<LlamaTop<'a>>,
    text_offset: usize,
}

/// One alternative of a [`LlamaEntry`].
#[derive(Serialize)]
struct LlamaTop<'a> {
    id: TokenId,
    #[serde(flatten)]
    view: &'a TokenView,
    logprob: f64,
}

impl Serialize for LlamaContent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.content.iter().map(|e| {
            LlamaEntry {
                id: e.view.token_id,
                view: &e.view,
                logprob: e.logprob,
                top_logprobs: e
                    .top_logprobs
                    .iter()
                    .map(|t| LlamaTop {
                        id: t.view.token_id,
                        view: &t.view,
                        logprob: t.logprob,
                    })
                    .collect(),
                text_offset: e.text_offset,
            }
        }))
    }
}

/// The logprobs of a choice (or a streamed delta) in the requested shape.
fn logprobs_value(
    vocab: &Vocabulary,
    mode: LogprobsMode,
    echo: bool,
    lines: &[choice::Line<'_>],
    offset: usize,
) -> Option<ChoiceLogprobs> {
    match mode {
        LogprobsMode::Off => None,
        LogprobsMode::Legacy(k) if echo => Some(ChoiceLogprobs::Legacy(choice::legacy(
            vocab, lines, k, offset,
        ))),
        LogprobsMode::Legacy(k) => Some(ChoiceLogprobs::LegacyWithLlamaContent {
            legacy: choice::legacy(vocab, lines, k, offset),
            content: LlamaContent(choice::content(vocab, lines, offset)),
        }),
        LogprobsMode::Content(_) => Some(ChoiceLogprobs::Content(choice::content(
            vocab, lines, offset,
        ))),
    }
}

/// Completions' choices: `text`, with logprobs in the shape asked for and, if asked, the token ids.
struct CompletionChoices {
    vocab: Arc<Vocabulary>,
    mode: LogprobsMode,
    echo: bool,
    echo_last: Option<usize>,
    return_token_ids: bool,
}

impl ChoiceFormat for CompletionChoices {
    const OBJECT: &'static str = "text_completion";
    type Choice = CompletionChoice;

    fn delta(&mut self, d: &Delta, lines: &[choice::Line<'_>]) -> Value {
        let mut lines = lines.to_vec();
        lines.extend(d.end.as_ref().map(|l| l.as_line()));
        let logprobs = if lines.is_empty() {
            None
        } else {
            logprobs_value(&self.vocab, self.mode, self.echo, &lines, d.offset)
        };
        json!({"index": d.index, "text": d.text, "logprobs": logprobs,
               "finish_reason": d.finish.map(|f| f.as_str())})
    }

    fn whole(&self, index: usize, outcome: &ChoiceOutcome) -> CompletionChoice {
        let vocab = &self.vocab;
        let echo_last = self.echo_last;
        let mut text = outcome.echo_text(vocab, echo_last);
        // Without echo, offsets count from the start of the prompt text, as OpenAI's do.
        let offset = if outcome.echo.is_some() {
            0
        } else {
            outcome.prompt.tokens[..outcome.prompt.prompt_len]
                .iter()
                .map(|&t| chars_in(vocab.piece(t)))
                .sum()
        };
        text.extend_from_slice(&outcome.text);
        let lines = outcome.lines_with_end(echo_last);
        let ids = self.return_token_ids;
        CompletionChoice {
            index,
            text: String::from_utf8_lossy(&text).into_owned(),
            logprobs: logprobs_value(vocab, self.mode, self.echo, &lines, offset),
            finish_reason: outcome.finish.as_str(),
            prompt_token_ids: ids
                .then(|| outcome.prompt.tokens[..outcome.prompt.prompt_len].to_vec()),
            token_ids: ids.then(|| outcome.tokens.iter().map(|t| t.token).collect()),
        }
    }
}

impl CompatRequest for CompletionRequest {
    const ENDPOINT: &'static str = "completions";
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    fn stream(&self) -> bool {
        self.stream
    }
}

/// Handler for `POST /v1/completions` and `POST /inference/v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let LocalRequest {
        mut req,
        model,
        sampling,
        policy,
        body_bytes,
    } = match open::<CompletionRequest>(&state, body).await? {
        Opened::Local(local) => local,
        Opened::Forwarded(answer) => return Ok(answer),
    };
    let mode = LogprobsMode::for_completions(&req.logprobs, req.top_logprobs)?;
    params::check_id_slot(req.id_slot)?;
    let sampling = sampling.validate(&policy, 16)?;
    let inputs = prompts(std::mem::take(&mut req.prompt))?;
    let echo = req.echo || req.echo_last.is_some();
    let echo_last = req.echo_last.map(|n| n as usize);
    let budget = Budget {
        max_items: state.max_batch_items,
        deadline: state.deadline(),
        alternatives_field: match mode {
            LogprobsMode::Content(_) => "top_logprobs",
            _ => "logprobs",
        },
    };
    let (plans, usage) = plan_choices(
        body_bytes,
        &policy,
        inputs,
        &sampling,
        echo,
        mode.top_k(),
        budget,
    )
    .await?;
    let format = CompletionChoices {
        vocab: policy.model.vocab.clone(),
        mode,
        echo,
        echo_last,
        return_token_ids: req.return_token_ids,
    };
    let plan = AnswerPlan {
        header: ChunkHeader::new("cmpl", CompletionChoices::OBJECT, model, &policy),
        policy,
        plans,
        echo_last,
        usage,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
    };
    answer(plan, req.stream, format).await
}

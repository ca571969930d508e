//! `POST /v1/chat/completions` (and `/inference/v1/chat/completions`): messages rendered with the policy's
//! chat template (its system prompt first), then the same scoring or generation as completions.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::answer::{AnswerPlan, ChoiceFormat, ChunkHeader, answer};
use super::choice::{self, ChoiceOutcome};
use super::params::{self, LogprobsMode, StreamOptions};
use super::request::{CompatRequest, LocalRequest, Opened, open};
use super::stream::Delta;
use super::{Budget, plan_choices};
use crate::api::{ApiError, AppState};
use crate::engine::ChatMessage;
use crate::engine::PromptInput;
use crate::engine::vocab::Vocabulary;
use crate::input::WireMessage;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The policy; may be left out while the server serves one policy (clients such as lm-eval's
    /// `gguf` backend send none).
    pub model: Option<String>,
    pub messages: Vec<WireMessage>,
    /// Also return the rendered prompt (in `content`) and its tokens' log-probabilities.
    #[serde(default)]
    pub echo: bool,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// End-user id (OpenAI): accepted and ignored; it changes no number.
    #[allow(dead_code)]
    pub user: Option<String>,
    /// llama.cpp's slot pinning: accepted, no effect (see [`params::check_id_slot`]).
    pub id_slot: Option<i64>,
}

impl CompatRequest for ChatRequest {
    const ENDPOINT: &'static str = "chat/completions";
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    fn stream(&self) -> bool {
        self.stream
    }
}

/// Handler for `POST /v1/chat/completions` and `POST /inference/v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let LocalRequest {
        req,
        model,
        sampling,
        policy,
        body_bytes,
    } = match open::<ChatRequest>(&state, body).await? {
        Opened::Local(local) => local,
        Opened::Forwarded(answer) => return Ok(answer),
    };
    let mode = LogprobsMode::for_chat(req.logprobs, req.top_logprobs)?;
    params::check_id_slot(req.id_slot)?;
    let sampling = sampling.validate(&policy, policy.n_ctx as u32)?;
    let inputs = vec![PromptInput::Messages(messages(req.messages)?)];
    let (plans, usage) = plan_choices(
        body_bytes,
        &policy,
        inputs,
        &sampling,
        req.echo,
        mode.top_k(),
        Budget {
            max_items: state.max_batch_items,
            deadline: state.deadline(),
            alternatives_field: "top_logprobs",
        },
    )
    .await?;
    let format = ChatChoices {
        vocab: policy.model.vocab.clone(),
        logprobs: mode != LogprobsMode::Off,
        started: HashSet::new(),
    };
    let plan = AnswerPlan {
        header: ChunkHeader::new("chatcmpl", "chat.completion.chunk", model, &policy),
        policy,
        plans,
        echo_last: None,
        usage,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
    };
    answer(plan, req.stream, format).await
}

/// The conversation as the chat template takes it; there must be one.
fn messages(wire: Vec<WireMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::invalid("messages", "must not be empty"));
    }
    Ok(wire.into_iter().map(ChatMessage::from).collect())
}

/// Chat's choices: an assistant `message` (a `delta` when streamed, its role in the first one only) with
/// `content[]` logprobs.
struct ChatChoices {
    vocab: Arc<Vocabulary>,
    logprobs: bool,
    /// Choices whose first delta has been sent.
    started: HashSet<usize>,
}

impl ChatChoices {
    /// The `logprobs` value of these lines: `content[]`, or null when not asked for.
    fn logprobs_of(&self, lines: &[choice::Line<'_>], offset: usize) -> Value {
        serde_json::to_value(self.content_of(lines, offset)).expect("serializes")
    }

    /// `content[]` of these lines when asked for.
    fn content_of(
        &self,
        lines: &[choice::Line<'_>],
        offset: usize,
    ) -> Option<choice::ContentLogprobs> {
        self.logprobs
            .then(|| choice::content(&self.vocab, lines, offset))
    }
}

/// A choice of the whole chat answer, serialized as it is (no intermediate JSON tree).
#[derive(Serialize)]
struct ChatChoice {
    index: usize,
    message: AssistantMessage,
    logprobs: Option<choice::ContentLogprobs>,
    finish_reason: &'static str,
}

/// The assistant's message of a whole chat answer.
#[derive(Serialize)]
struct AssistantMessage {
    role: &'static str,
    content: String,
}

impl ChoiceFormat for ChatChoices {
    const OBJECT: &'static str = "chat.completion";
    type Choice = ChatChoice;

    fn delta(&mut self, d: &Delta, lines: &[choice::Line<'_>]) -> Value {
        let logprobs = if lines.is_empty() {
            Value::Null
        } else {
            self.logprobs_of(lines, d.offset)
        };
        let mut delta = json!({});
        if self.started.insert(d.index) {
            delta["role"] = json!("assistant");
        }
        if !d.text.is_empty() || d.finish.is_none() {
            delta["content"] = json!(d.text);
        }
        json!({"index": d.index, "delta": delta, "logprobs": logprobs,
               "finish_reason": d.finish.map(|f| f.as_str())})
    }

    fn whole(&self, index: usize, o: &ChoiceOutcome) -> ChatChoice {
        let mut text = o.echo_text(&self.vocab, None);
        text.extend_from_slice(&o.text);
        let lines = o.lines(None);
        ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant",
                content: String::from_utf8_lossy(&text).into_owned(),
            },
            logprobs: self.content_of(&lines, 0),
            finish_reason: o.finish.as_str(),
        }
    }
}

//! `POST /v1/chat/completions` (and `/inference/v1/chat/completions`): messages rendered with the policy's
//! chat template (its system prompt first), then the same scoring or generation as completions.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::choice;
use super::params::{LogprobsMode, StreamOptions, parse_with_sampling};
use super::stream::ChoiceEvent;
use super::{ChunkHeader, StreamPlan, local_or_forward, plan_choices, stream_response};
use crate::api::{ApiError, AppState, new_id, unix_time};
use crate::engine::PromptInput;
use crate::engine::chat_template::ChatMessage;
use crate::input::WireMessage;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
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
}

/// Handler for `POST /v1/chat/completions` and `POST /inference/v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body_bytes = body.as_ref().map_or(0, |b| b.len());
    let raw = body.as_ref().ok().cloned();
    let (req, sampling_fields) = parse_with_sampling::<ChatRequest>(body)?;
    let policy =
        match local_or_forward(&state, &req.model, "chat/completions", raw, req.stream).await? {
            Ok(local) => local,
            Err(forwarded) => return Ok(forwarded),
        };
    let mode = LogprobsMode::for_chat(req.logprobs, req.top_logprobs)?;
    let sampling = sampling_fields.validate(&policy, policy.n_ctx as u32)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "must not be empty"));
    }
    let messages = req.messages.into_iter().map(ChatMessage::from).collect();
    let inputs = vec![PromptInput::Messages(messages)];
    let (plans, usage) = plan_choices(
        body_bytes,
        &policy,
        inputs,
        &sampling,
        req.echo,
        mode.top_k(),
    )
    .await?;
    let header = ChunkHeader {
        id: new_id("chatcmpl"),
        object: "chat.completion.chunk",
        created: unix_time(),
        model: req.model,
        system_fingerprint: policy.system_fingerprint().to_string(),
    };
    let vocab = policy.model.vocab.clone();
    let logprobs_of = move |lines: &[choice::Line<'_>], offset: usize| -> Value {
        match mode {
            LogprobsMode::Off => Value::Null,
            _ => serde_json::to_value(choice::content(&vocab, lines, offset)).expect("serializes"),
        }
    };

    if req.stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        let mut started = HashSet::new();
        let format = move |header: &ChunkHeader, event: ChoiceEvent| -> String {
            match event {
                ChoiceEvent::Delta(d) => {
                    let lines: Vec<_> = d.lines.iter().map(|l| l.as_line()).collect();
                    let logprobs = if lines.is_empty() {
                        Value::Null
                    } else {
                        logprobs_of(&lines, d.offset)
                    };
                    let mut delta = json!({});
                    if started.insert(d.index) {
                        delta["role"] = json!("assistant");
                    }
                    if !d.text.is_empty() || d.finish.is_none() {
                        delta["content"] = json!(d.text);
                    }
                    header.chunk(
                        json!([{"index": d.index, "delta": delta, "logprobs": logprobs,
                                "finish_reason": d.finish.map(|f| f.as_str())}]),
                        None,
                    )
                }
                ChoiceEvent::Error(e) => e.body().to_string(),
            }
        };
        let plan = StreamPlan {
            policy,
            plans,
            echo_last: None,
            usage,
            include_usage,
            header,
        };
        return Ok(stream_response(plan, format));
    }

    let outcomes = super::run_all(&policy, plans).await?;
    let vocab = &policy.model.vocab;
    let choices: Vec<Value> = outcomes
        .iter()
        .enumerate()
        .map(|(index, o)| {
            let mut text = o.echo_text(vocab, None);
            text.extend_from_slice(&o.text);
            let lines = o.lines(None);
            json!({
                "index": index,
                "message": {"role": "assistant", "content": String::from_utf8_lossy(&text)},
                "logprobs": logprobs_of(&lines, 0),
                "finish_reason": o.finish.as_str(),
            })
        })
        .collect();
    Ok(Json(json!({
        "id": header.id,
        "object": "chat.completion",
        "created": header.created,
        "model": header.model,
        "system_fingerprint": header.system_fingerprint,
        "choices": choices,
        "usage": usage.with_completions(&outcomes),
    }))
    .into_response())
}

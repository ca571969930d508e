//! `POST /v1/logprobs`: the native scoring API — log π(response | prompt) for one item or a batch, with
//! per-token detail in Fireworks' logprobs shape.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderName;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::json::parse;
use super::observe::server_timing;
use super::{AppState, Usage, new_id, unix_time};
use crate::engine::{ItemInput, ScoreOptions};
use crate::input::{WireItem, WireMessage};
use crate::report::{ItemReport, TokenReport};
use crate::request_policy::{MAX_TOP_LOGPROBS, check_temperature, check_top_logprobs};
use crate::served::ScoreRequest;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogprobsRequest {
    pub model: String,
    pub prompt: Option<String>,
    pub messages: Option<Vec<WireMessage>>,
    pub prompt_token_ids: Option<Vec<i64>>,
    pub response: Option<String>,
    pub response_token_ids: Option<Vec<i64>>,
    pub items: Option<Vec<WireItem>>,
    #[serde(default)]
    pub top_logprobs: u32,
    #[serde(default)]
    pub echo: bool,
    #[serde(default)]
    pub score_end_of_turn: bool,
    pub temperature: Option<f64>,
}

/// `logprobs` of an item, in Fireworks' `content[]` shape so existing parsers read it.
#[derive(Debug, Serialize)]
pub struct WireLogprobs {
    pub content: Vec<TokenReport>,
}

/// The scores of one item.
#[derive(Debug, Serialize)]
pub struct WireItemResult {
    pub index: usize,
    pub object: &'static str,
    /// log π(response | prompt) at temperature 1 (plus end of turn when asked).
    pub logprob: f64,
    /// The same at `temperature`; `null` where a remote provider does not compute it.
    pub sampling_logprob: Option<f64>,
    pub temperature: f64,
    /// Sum over the echoed prompt tokens after the first (only with `echo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprob: Option<f64>,
    pub prompt_tokens: usize,
    pub response_tokens: usize,
    /// Tokens whose scores make up `logprob` (response tokens, plus one with `score_end_of_turn`).
    pub scored_tokens: usize,
    pub cached: bool,
    pub logprobs: WireLogprobs,
}

impl WireItemResult {
    /// The wire form of item `index`'s report.
    fn new(index: usize, r: ItemReport, temperature: f64) -> WireItemResult {
        WireItemResult {
            index,
            object: "logprobs",
            logprob: r.logprob,
            sampling_logprob: r.sampling_logprob,
            temperature,
            prompt_logprob: r.prompt_logprob,
            prompt_tokens: r.prompt_tokens,
            response_tokens: r.response_tokens,
            scored_tokens: r.scored_tokens,
            cached: r.cached,
            logprobs: WireLogprobs { content: r.tokens },
        }
    }
}

/// The response body.
#[derive(Debug, Serialize)]
pub struct LogprobsResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub data: Vec<WireItemResult>,
    pub usage: Usage,
}

/// Handler for `POST /v1/logprobs` and `POST /inference/v1/logprobs`.
pub async fn logprobs(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body_bytes = body.as_ref().map_or(0, |b| b.len());
    let req: LogprobsRequest = parse(body)?;
    let policy = state.policy(&req.model)?.clone();
    let top_logprobs = check_top_logprobs(req.top_logprobs, MAX_TOP_LOGPROBS)
        .map_err(|m| ApiError::invalid("top_logprobs", m))?;
    let temperature = req.temperature.unwrap_or(policy.temperature());
    check_temperature(temperature).map_err(|m| ApiError::invalid("temperature", m))?;
    let options = ScoreOptions {
        top_logprobs,
        echo: req.echo,
        score_end_of_turn: req.score_end_of_turn,
        temperature,
    };
    let inline = WireItem {
        prompt: req.prompt,
        messages: req.messages,
        prompt_token_ids: req.prompt_token_ids,
        response: req.response,
        response_token_ids: req.response_token_ids,
    };
    let (items, batch) = match req.items {
        Some(items) => {
            if !inline.is_empty() {
                return Err(ApiError::invalid(
                    "items",
                    "give either `items` or one inline item (prompt/messages + response), not both",
                ));
            }
            if items.is_empty() {
                return Err(ApiError::invalid("items", "must not be empty"));
            }
            if items.len() > state.max_batch_items {
                return Err(ApiError::invalid(
                    "items",
                    format!(
                        "{} items is more than this server's limit of {} per request",
                        items.len(),
                        state.max_batch_items
                    ),
                ));
            }
            let inputs = items
                .into_iter()
                .enumerate()
                .map(|(i, it)| it.into_input(&format!("items[{i}]")))
                .collect::<Result<Vec<ItemInput>, _>>()?;
            (inputs, true)
        }
        None => (vec![inline.into_input("")?], false),
    };
    let scores = policy
        .score(ScoreRequest {
            items,
            options,
            batch,
            deadline: state.deadline(),
            body_bytes,
        })
        .await?;
    let timing = server_timing(&scores.stages);
    let usage = Usage::new(
        scores.items.iter().map(|r| r.prompt_tokens).sum(),
        scores.items.iter().map(|r| r.response_tokens).sum(),
    );
    let data = scores
        .items
        .into_iter()
        .enumerate()
        .map(|(index, r)| WireItemResult::new(index, r, temperature))
        .collect();
    let headers = [(HeaderName::from_static("server-timing"), timing)];
    Ok((
        headers,
        Json(LogprobsResponse {
            id: new_id("lp"),
            object: "list",
            created: unix_time(),
            model: req.model,
            data,
            usage,
        }),
    ))
}

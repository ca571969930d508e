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
use super::tokens::{TokenView, token_view};
use super::{AppState, Usage, new_id, unix_time};
use crate::api::prepare::prepare_where_cheapest;
use crate::engine::{
    ItemInput, ItemScore, PreparedItem, ScoreError, ScoreOptions, TokenScore, vocab::Vocabulary,
};
use crate::input::{WireItem, WireMessage};
use crate::request_policy::{MAX_TOP_LOGPROBS, check_temperature, check_top_logprobs};

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

/// One token's scores on the wire (Fireworks' `logprobs.content[]` entry plus `sampling_logprob`).
#[derive(Debug, Serialize)]
pub struct WireToken {
    #[serde(flatten)]
    pub view: TokenView,
    pub text_offset: usize,
    /// `null` only for an echoed first token, which has no context to be scored in.
    pub logprob: Option<f64>,
    pub sampling_logprob: Option<f64>,
    pub top_logprobs: Vec<WireTop>,
}

/// One alternative in `top_logprobs`.
#[derive(Debug, Serialize)]
pub struct WireTop {
    #[serde(flatten)]
    pub view: TokenView,
    pub logprob: f64,
    pub sampling_logprob: f64,
}

/// `logprobs` of an item, in Fireworks' `content[]` shape so existing parsers read it.
#[derive(Debug, Serialize)]
pub struct WireLogprobs {
    pub content: Vec<WireToken>,
}

/// The scores of one item.
#[derive(Debug, Serialize)]
pub struct WireItemResult {
    pub index: usize,
    pub object: &'static str,
    /// log π(response | prompt) at temperature 1 (plus end of turn when asked).
    pub logprob: f64,
    /// The same at `temperature`.
    pub sampling_logprob: f64,
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
    let temperature = req.temperature.unwrap_or(policy.temperature);
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
    let inputs: Vec<(String, ItemInput)> = match req.items {
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
            items
                .into_iter()
                .enumerate()
                .map(|(i, it)| {
                    let at = format!("items[{i}]");
                    it.into_input(&at).map(|input| (at, input))
                })
                .collect::<Result<_, _>>()?
        }
        None => vec![(String::new(), inline.into_input("")?)],
    };

    let p = policy.clone();
    let tokenize_started = std::time::Instant::now();
    let prepared: Vec<Arc<PreparedItem>> = prepare_where_cheapest(body_bytes, move || {
        inputs
            .iter()
            .map(|(at, input)| {
                p.prepare(input, &options)
                    .map(Arc::new)
                    .map_err(|e| if at.is_empty() { e } else { e.within(at) })
            })
            .collect::<Result<Vec<_>, ScoreError>>()
    })
    .await?;

    let tokenize = tokenize_started.elapsed();
    let scores = policy.score(prepared.clone(), &options).await?;
    let timing = server_timing(tokenize, &scores);

    let vocab = &policy.model.vocab;
    let usage = Usage::new(
        prepared.iter().map(|i| i.prompt_len).sum(),
        prepared.iter().map(|i| i.response_len()).sum(),
    );
    let data = prepared
        .iter()
        .zip(&scores)
        .enumerate()
        .map(|(index, (item, score))| {
            item_result(index, item, &score.score, score.cached, &options, vocab)
        })
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

/// Assembles one item's answer: sums, counts, and the token list (echoed prompt first, with byte offsets
/// into the concatenated token text).
fn item_result(
    index: usize,
    item: &PreparedItem,
    score: &ItemScore,
    cached: bool,
    options: &ScoreOptions,
    vocab: &Vocabulary,
) -> WireItemResult {
    let mut content = Vec::new();
    let mut offset = 0usize;
    let tokens = &item.tokens;
    let mut push = |token: i32, score: Option<&TokenScore>, offset: &mut usize| {
        let view = token_view(vocab, token);
        let len = view.bytes.len();
        content.push(WireToken {
            view,
            text_offset: *offset,
            logprob: score.map(|s| s.logprob),
            sampling_logprob: score.map(|s| s.sampling_logprob),
            top_logprobs: score.map_or_else(Vec::new, |s| {
                s.top
                    .iter()
                    .map(|t| WireTop {
                        view: token_view(vocab, t.token),
                        logprob: t.logprob,
                        sampling_logprob: t.sampling_logprob,
                    })
                    .collect()
            }),
        });
        *offset += len;
    };
    if options.echo {
        push(tokens[0], None, &mut offset);
        for (i, s) in score.prompt.iter().enumerate() {
            push(tokens[i + 1], Some(s), &mut offset);
        }
    } else {
        offset = tokens[..item.prompt_len]
            .iter()
            .map(|&t| vocab.piece(t).len())
            .sum();
    }
    for s in score.scored() {
        push(s.token, Some(s), &mut offset);
    }
    WireItemResult {
        index,
        object: "logprobs",
        logprob: score.logprob(),
        sampling_logprob: score.sampling_logprob(),
        temperature: options.temperature,
        prompt_logprob: options.echo.then(|| score.prompt_logprob()),
        prompt_tokens: item.prompt_len,
        response_tokens: item.response_len(),
        scored_tokens: score.scored().count(),
        cached,
        logprobs: WireLogprobs { content },
    }
}

//! The served model's tokenizer over HTTP, where evaluation harnesses look for it: `POST /tokenize`,
//! `POST /detokenize`, `GET /tokenizer_info` and `GET /props` at the server's root, in the request and
//! answer shapes of vLLM (lm-eval's `local-completions` uses them instead of downloading a tokenizer from
//! the hub) and of llama.cpp's server (lm-eval's `gguf` backend reads `/props` for the slot count). Parsing
//! and writing only: the tokenizer itself is the policy layer's ([`Tokenizer`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::parse;
use super::{ApiError, AppState};
use crate::served::{Tokenizer, TokenizerInfo};

/// `POST /tokenize`: vLLM's `{prompt, add_special_tokens}` or llama.cpp's `{content, add_special}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The policy; may be left out while one policy is served.
    pub model: Option<String>,
    /// The text (vLLM's name).
    pub prompt: Option<String>,
    /// The text (llama.cpp's name).
    pub content: Option<String>,
    /// Whether to add BOS as the model asks (vLLM's name; default true, as vLLM).
    pub add_special_tokens: Option<bool>,
    /// The same (llama.cpp's name; default false, as llama.cpp).
    pub add_special: Option<bool>,
}

/// `POST /detokenize`: token ids to text (vLLM answers `prompt`, llama.cpp `content`; both are given).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<i64>,
}

/// `GET /tokenizer_info?model=...`.
#[derive(Debug, Deserialize)]
pub struct InfoQuery {
    pub model: Option<String>,
}

/// The tokenizer of the policy a request names (or of the only one served).
fn tokenizer_of(state: &AppState, model: Option<&str>) -> Result<Tokenizer, ApiError> {
    state
        .policy_or_only(model)?
        .tokenizer()
        .map_err(|m| ApiError::invalid("model", m))
}

/// Which of the two spellings of a field was sent; both at once is an error naming the second.
fn one_of<T>(
    a: Option<T>,
    b: Option<T>,
    b_name: &str,
    a_name: &str,
) -> Result<Option<T>, ApiError> {
    match (a, b) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            b_name,
            format!("give either `{a_name}` or `{b_name}`, not both"),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// Handler for `POST /tokenize`: `{"tokens": [...], "count": n, "max_model_len": n_ctx}`.
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body_bytes = body.as_ref().map_or(0, |b| b.len());
    let req: TokenizeRequest = parse(body)?;
    let tokenizer = tokenizer_of(&state, req.model.as_deref())?;
    let vllm = req.prompt.is_some();
    let text = one_of(req.prompt, req.content, "content", "prompt")?.ok_or_else(|| {
        ApiError::invalid(
            "prompt",
            "give the text to tokenize in `prompt` (or `content`)",
        )
    })?;
    let add_special = one_of(
        req.add_special_tokens,
        req.add_special,
        "add_special",
        "add_special_tokens",
    )?
    .unwrap_or(vllm);
    let tokens = tokenizer.tokenize(text, add_special, body_bytes).await?;
    Ok(Json(json!({
        "tokens": tokens,
        "count": tokens.len(),
        "max_model_len": tokenizer.n_ctx(),
    })))
}

/// Handler for `POST /detokenize`: the tokens' bytes joined, as text (invalid UTF-8 as U+FFFD).
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(body)?;
    let text = tokenizer_of(&state, req.model.as_deref())?.detokenize(&req.tokens)?;
    Ok(Json(json!({"prompt": text, "content": text})))
}

/// What the tokenizer of the policy a `GET` route's `?model=` names (or of the only one served) reports.
fn queried_info(
    state: &AppState,
    query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<TokenizerInfo, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("", e.body_text()))?;
    Ok(tokenizer_of(state, q.model.as_deref())?.info())
}

/// Handler for `GET /props` (llama.cpp's server's properties route): the slots a client may keep busy at
/// once (lm-eval's `gguf` backend sizes its thread pool from `total_slots`), the context length, the
/// special tokens and the chat template.
pub async fn props(
    State(state): State<Arc<AppState>>,
    query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let info = queried_info(&state, query)?;
    Ok(Json(json!({
        "model_alias": info.name,
        "total_slots": info.slots,
        "default_generation_settings": {"n_ctx": info.n_ctx},
        "bos_token": info.bos_text,
        "eos_token": info.eos_text,
        "chat_template": info.chat_template,
        "modalities": {"vision": false, "audio": false},
    })))
}

/// Handler for `GET /tokenizer_info`: what a client needs to use the tokenizer through `/tokenize`: the
/// special tokens as text (`null` where the model has none), whether BOS is added, the chat template
/// (the policy's override, else the GGUF's) and the context length.
pub async fn tokenizer_info(
    State(state): State<Arc<AppState>>,
    query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let info = queried_info(&state, query)?;
    Ok(Json(json!({
        "model": info.name,
        "tokenizer_class": "llama.cpp",
        "bos_token": info.bos_text,
        "eos_token": info.eos_text,
        "pad_token": Value::Null,
        "add_bos_token": info.add_bos,
        "chat_template": info.chat_template,
        "model_max_length": info.n_ctx,
        "vocab_size": info.vocab_size,
    })))
}

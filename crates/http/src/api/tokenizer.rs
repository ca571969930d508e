//! The served model's tokenizer over HTTP, where evaluation harnesses look for it: `POST /tokenize`,
//! `POST /detokenize` and `GET /tokenizer_info` at the server's root, in the request and answer shapes of
//! vLLM (lm-eval's `local-completions` uses them instead of downloading a tokenizer from the hub) and of
//! llama.cpp's server (lm-eval's `gguf` backend, which also reads `GET /props` for the slot count). Tokens are the ones scoring uses: control-token text is
//! parsed as control tokens, as in a prompt.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::parse;
use super::{ApiError, AppState};
use crate::engine::{Policy, ScoreError};
use crate::served::{ServedPolicy, prepare_where_cheapest};

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

/// The local policy a tokenizer request names (or the only one served); a remote policy's tokenizer is
/// not here.
fn local_policy(state: &AppState, model: Option<&str>) -> Result<Arc<Policy>, ApiError> {
    let served = state.policy_or_only(model)?;
    match served {
        ServedPolicy::Local(p) => Ok(p.clone()),
        ServedPolicy::Remote(r) => Err(ApiError::invalid(
            "model",
            format!(
                "policy `{}` is served by a remote {} API, whose tokenizer this server does not have",
                served.name(),
                r.provider()
            ),
        )),
    }
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
    let policy = local_policy(&state, req.model.as_deref())?;
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
    let p = policy.clone();
    let tokens = prepare_where_cheapest(body_bytes, move || {
        let model = &p.model;
        Ok::<_, ScoreError>(if add_special {
            model.vocab.tokenize_prompt(&model.llama, &text)
        } else {
            model.vocab.tokenize_prompt_text(&model.llama, &text)
        })
    })
    .await?;
    Ok(Json(json!({
        "tokens": tokens,
        "count": tokens.len(),
        "max_model_len": policy.n_ctx,
    })))
}

/// Handler for `POST /detokenize`: the tokens' bytes joined, as text (invalid UTF-8 as U+FFFD).
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(body)?;
    let policy = local_policy(&state, req.model.as_deref())?;
    let vocab = &policy.model.vocab;
    if req.tokens.len() > policy.n_ctx {
        return Err(ApiError::invalid(
            "tokens",
            format!(
                "at most the policy's context ({}) tokens, got {}",
                policy.n_ctx,
                req.tokens.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    for (i, &id) in req.tokens.iter().enumerate() {
        let id = vocab
            .check_id(id)
            .map_err(|m| ApiError::invalid(format!("tokens[{i}]"), m))?;
        bytes.extend_from_slice(vocab.piece(id));
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(Json(json!({"prompt": text, "content": text})))
}

/// The local policy a `GET` route's `?model=` names (or the only one served).
fn queried_policy(
    state: &AppState,
    query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Arc<Policy>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("", e.body_text()))?;
    local_policy(state, q.model.as_deref())
}

/// A special token's text, `None` where the model has none.
fn special_text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Handler for `GET /props` (llama.cpp's server's properties route): the slots a client may keep busy at
/// once (the policy's model's inference threads; lm-eval's `gguf` backend sizes its thread pool from
/// `total_slots`), the context length, the special tokens and the chat template.
pub async fn props(
    State(state): State<Arc<AppState>>,
    query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let policy = queried_policy(&state, query)?;
    let vocab = &policy.model.vocab;
    Ok(Json(json!({
        "model_alias": policy.name,
        "total_slots": policy.model.contexts(),
        "default_generation_settings": {"n_ctx": policy.n_ctx},
        "bos_token": vocab.bos.and_then(|_| special_text(&vocab.bos_text)),
        "eos_token": special_text(&vocab.eos_text),
        "chat_template": policy.chat_template_source,
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
    let policy = queried_policy(&state, query)?;
    let vocab = &policy.model.vocab;
    Ok(Json(json!({
        "model": policy.name,
        "tokenizer_class": "llama.cpp",
        "bos_token": vocab.bos.and_then(|_| special_text(&vocab.bos_text)),
        "eos_token": special_text(&vocab.eos_text),
        "pad_token": Value::Null,
        "add_bos_token": vocab.add_bos,
        "chat_template": policy.chat_template_source,
        "model_max_length": policy.n_ctx,
        "vocab_size": vocab.len(),
    })))
}

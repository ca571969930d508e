//! Opening a compatibility request, the first step both endpoints share: the body parsed against the
//! endpoint's fields and the sampling fields, and handed to the policy it names at the policy seam (see
//! [`crate::served::ServedPolicy::complete`]), which answers a remote one upstream.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::params::{Sampling, parse_with_sampling};
use crate::api::{ApiError, AppState};
use crate::engine::Policy;
use crate::served::completion::Completion;

/// What opening needs to know of an endpoint's request body.
pub trait CompatRequest: DeserializeOwned {
    /// The endpoint's path after `/v1/`, as a remote policy's upstream is called.
    const ENDPOINT: &'static str;
    /// The policy asked for; `None` when the client sent no `model` (allowed while one policy is served).
    fn model(&self) -> Option<&str>;
    /// Whether the client asked for server-sent events.
    fn stream(&self) -> bool;
}

/// A request for a local policy, parsed but not yet validated.
pub struct LocalRequest<R> {
    pub req: R,
    /// The policy's name as the answer's `model` gives it: as the client wrote it, else the one served.
    pub model: String,
    pub sampling: Sampling,
    pub policy: Arc<Policy>,
    /// The body's size, which decides where its prompts are tokenized.
    pub body_bytes: usize,
}

/// Where an opened request goes next.
pub enum Opened<R> {
    /// A local policy: plan and run it here.
    Local(LocalRequest<R>),
    /// A remote policy's answer, to return as it is.
    Forwarded(Response),
}

/// Parses the body (refusing fields neither the endpoint nor sampling knows) and routes it by policy.
pub async fn open<R: CompatRequest>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Opened<R>, ApiError> {
    let body_bytes = body.as_ref().map_or(0, |b| b.len());
    let raw = body.as_ref().ok().cloned();
    let (req, sampling) = parse_with_sampling::<R>(body)?;
    let served = state.policy_or_only(req.model())?;
    let model = served.name().to_string();
    let body = || raw.and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    Ok(
        match served
            .complete(R::ENDPOINT, body, req.stream(), state.deadline())
            .await?
        {
            Completion::Local(policy) => Opened::Local(LocalRequest {
                model: req.model().map_or(model, str::to_string),
                req,
                sampling,
                policy,
                body_bytes,
            }),
            Completion::Answered(answer) => Opened::Forwarded(axum::Json(answer).into_response()),
        },
    )
}

//! Opening a compatibility request, the first step both endpoints share: the body parsed against the
//! endpoint's fields and the sampling fields, and the policy it names looked up, a remote one getting the
//! request forwarded as the client sent it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::params::{Sampling, parse_with_sampling};
use crate::api::{ApiError, AppState};
use crate::engine::Policy;
use crate::served::{RemotePolicy, ServedPolicy};

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
    let model = state.policy_or_only(req.model())?.name().to_string();
    let routed = local_or_forward(state, &model, R::ENDPOINT, raw, req.stream()).await?;
    Ok(match routed {
        Ok(policy) => Opened::Local(LocalRequest {
            model: req.model().map_or(model, str::to_string),
            req,
            sampling,
            policy,
            body_bytes,
        }),
        Err(answer) => Opened::Forwarded(answer),
    })
}

/// The local policy a compatibility request names; a remote one gets the request forwarded instead
/// (`Err(Ok(response))`): the body as the client sent it (already checked against this API's fields),
/// the upstream's answer under the policy's own name.
async fn local_or_forward(
    state: &AppState,
    model: &str,
    endpoint: &str,
    raw: Option<Bytes>,
    stream: bool,
) -> Result<Result<Arc<Policy>, Response>, ApiError> {
    let remote: Arc<RemotePolicy> = match state.policy(model)? {
        ServedPolicy::Local(p) => return Ok(Ok(p.clone())),
        ServedPolicy::Remote(r) => r.clone(),
    };
    if stream {
        return Err(ApiError::invalid(
            "stream",
            format!(
                "policy `{model}` is served by a remote {} API, through which this server does not \
                 stream; send `stream: false`",
                remote.provider()
            ),
        ));
    }
    let body: Value = raw
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::invalid("", "the body is not a JSON object"))?;
    let answer = remote.forward(endpoint, body, state.deadline()).await?;
    Ok(Err(axum::Json(answer).into_response()))
}

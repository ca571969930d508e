//! Request bodies are received before a request takes a concurrency slot, within their own time limit:
//! uploads that stall cannot hold the slots every client needs. A declared `Content-Length` over the limit
//! is refused at once with 413; a body slower than `server.body_timeout_secs` gets 408 `body_timeout` (the
//! client's fault, not the server's 504). While a body arrives its connection counts as waiting, so a full
//! connection table may close it to make room.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::ApiError;
use crate::listener::ConnHandle;

/// How large and how slow a body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Middleware: receives the whole body (bounded in size and time), then runs the request with it.
pub async fn receive(
    State(limits): State<Arc<BodyLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limits.max_bytes as u64) {
        return too_large(&format!(
            "request body: Content-Length declares {n} bytes, over the limit of {} bytes \
             (server.max_body_bytes)",
            limits.max_bytes
        ));
    }
    let (parts, body) = request.into_parts();
    let receiving = parts
        .extensions
        .get::<ConnHandle>()
        .map(ConnHandle::receiving_body);
    let capacity = declared.map_or(0, |n| n as usize);
    let received = tokio::time::timeout(limits.timeout, collect(body, limits.max_bytes, capacity));
    let bytes = match received.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(Collect::TooLarge)) => {
            return too_large(&format!(
                "request body: larger than the limit of {} bytes (server.max_body_bytes)",
                limits.max_bytes
            ));
        }
        Ok(Err(Collect::Broken(e))) => {
            return ApiError::with_status(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("request body: {e}"),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::with_status(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s (server.body_timeout_secs)",
                    limits.timeout.as_secs()
                ),
            )
            .into_response();
        }
    };
    drop(receiving);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

enum Collect {
    TooLarge,
    Broken(axum::Error),
}

async fn collect(body: Body, max: usize, capacity: usize) -> Result<Vec<u8>, Collect> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::with_capacity(capacity.min(max));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Collect::Broken)?;
        if bytes.len() + chunk.len() > max {
            return Err(Collect::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn too_large(message: &str) -> Response {
    ApiError::with_status(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message).into_response()
}

//! Liveness and readiness. Models load before the listener opens, so a server that answers is ready.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// `GET /health`: the process is alive and answering.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: every model is loaded and its inference threads are running (503 once shutdown began).
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let ready = state.ready.load(std::sync::atomic::Ordering::Relaxed);
    let models: Vec<Value> = state
        .engine
        .models()
        .iter()
        .map(|m| {
            json!({
                "path": m.info.path,
                "n_ctx": m.info.n_ctx,
                "queue_depth": m.queue_depth(),
                "abandoned_jobs": m.abandoned_jobs(),
                "prefix_reuse": m.prefix_stats(),
            })
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": ready, "models": models, "cache": state.engine.cache_stats().await})),
    )
}

/// Any other path: 404 in the API's error shape.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::with_status(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

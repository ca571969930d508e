//! Health and readiness once the models are in (while they load, `starting` answers both with 503).

use std::sync::Arc;

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::{Method, StatusCode, Uri};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::engine::devices;

/// `GET /health`: the process is alive and its models are loaded.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: every model is loaded and its inference threads are running (503 once shutdown began);
/// says where each model runs (`device`, offloaded layers) and which devices llama.cpp found, so a GPU
/// deployment can be checked, and each remote policy's last upstream success and failure (its own state:
/// a failing upstream does not make this server unready).
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
                "device": m.info.device,
                "n_gpu_layers": m.info.n_gpu_layers,
                "offloaded_layers": m.info.offloaded_layers,
                "n_offloadable_layers": m.info.n_offloadable_layers,
                "queue_depth": m.queue_depth(),
                "abandoned_jobs": m.abandoned_jobs(),
                "prefix_reuse": m.prefix_stats(),
                "system_fingerprint": m.system_fingerprint(),
                "fingerprint": m.info.fingerprint.components,
            })
        })
        .collect();
    let found = devices().ok();
    let devices: Vec<Value> = found
        .map(|d| d.devices.iter().map(|d| json!(d)).collect())
        .unwrap_or_default();
    let cpu_variant = found.and_then(|d| d.cpu_variant.clone());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let cache = state.engine.cache_stats().await;
    let remotes: Vec<Value> = state
        .policies
        .remotes()
        .map(|r| json!(r.status()))
        .collect();
    let remote_cache = state.policies.remote_cache_stats().await;
    (
        status,
        Json(json!({
            "ready": ready,
            "models": models,
            "devices": devices,
            "cpu_variant": cpu_variant,
            "cache": cache,
            "remotes": remotes,
            "remote_cache": remote_cache,
        })),
    )
}

/// A served path asked with the wrong method: 405 in the API's error shape (clients parse every error body).
pub async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}", uri.path()),
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

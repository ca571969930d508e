//! The HTTP layer: routes, wire types and errors. Thin by design — parsing, validation of wire-only
//! rules, and formatting; everything that changes a number lives in the engine.

mod auth;
mod compat;
mod error;
mod health;
pub(crate) mod json;
pub mod logprobs;
mod models;
mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::response::Response;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::engine::{Engine, Policy};

/// What every handler can reach.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub max_batch_items: usize,
}

impl AppState {
    /// The policy a request's `model` names, or 404 listing the served ones.
    pub fn policy(&self, name: &str) -> Result<&Arc<Policy>, ApiError> {
        self.engine.policy(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .engine
                .policies()
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            ApiError::model_not_found(name, &known)
        })
    }
}

/// The application's routes; each API route is served under both `/v1` and `/inference/v1` (Fireworks).
pub fn router(state: Arc<AppState>, max_body_bytes: usize, api_keys: Vec<String>) -> Router {
    let api = Router::new()
        .route("/logprobs", post(logprobs::logprobs))
        .route("/completions", post(compat::completions::completions))
        .route("/chat/completions", post(compat::chat::chat_completions))
        .route("/models", get(models::list));
    Router::new()
        .nest("/v1", api.clone())
        .nest("/inference/v1", api)
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth::Keys(api_keys)),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(server_timing))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Adds `Server-Timing: app;dur=<ms>` (time until the response headers) so clients and benchmarks can
/// tell server time from network time.
async fn server_timing(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}

/// A response id: a prefix, the time and a per-process counter, unique within a server's life.
pub fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{prefix}-{t:x}-{n:x}")
}

/// Seconds since the Unix epoch, for `created`.
pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

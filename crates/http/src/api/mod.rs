//! The HTTP layer: routes, wire types and errors. Thin by design — parsing, validation of wire-only
//! rules, and formatting; everything that changes a number lives in the engine.

mod auth;
mod body;
mod compat;
mod deadline;
mod error;
mod health;
mod host;
pub(crate) mod json;
mod load_report;
pub mod logprobs;
mod models;
mod observe;
pub(crate) mod origin;
mod page;
mod starting;
mod tokenizer;
pub(crate) mod tokens;
mod unread_body;
mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use starting::{Starting, loading_router};
pub use usage::Usage;

use crate::engine::Engine;
use crate::served::{Policies, ServedPolicy};

/// What every handler can reach.
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Every served policy, local and remote.
    pub policies: Arc<Policies>,
    pub max_batch_items: usize,
    /// The request timeout: remote calls and their retries must end within it.
    pub request_timeout: Duration,
    /// False once shutdown has begun: `/ready` says so before the listener closes.
    pub ready: AtomicBool,
}

impl AppState {
    /// The policy a request's `model` names, or 404 listing the served ones.
    pub fn policy(&self, name: &str) -> Result<&ServedPolicy, ApiError> {
        self.policies.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.policies.all().iter().map(|p| p.name()).collect();
            ApiError::model_not_found(name, &known)
        })
    }

    /// The policy `name` names, or with no name the one policy served (a client that sends no `model`,
    /// as lm-eval's `gguf` backend, works against a one-model server); several served need a name.
    pub fn policy_or_only(&self, name: Option<&str>) -> Result<&ServedPolicy, ApiError> {
        match (name, self.policies.all()) {
            (Some(name), _) => self.policy(name),
            (None, [only]) => Ok(only),
            (None, all) => {
                let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
                Err(ApiError::invalid(
                    "model",
                    format!(
                        "is required when several policies are served: one of {}",
                        known.join(", ")
                    ),
                ))
            }
        }
    }

    /// When a request that starts now must be answered (the timeout layer's own limit).
    pub fn deadline(&self) -> std::time::Instant {
        std::time::Instant::now() + self.request_timeout
    }
}

/// HTTP limits, from the configuration.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    /// Longest a request may take; past it the answer is 504 and its queued work is dropped.
    pub request_timeout: Duration,
    /// Requests handled at once; more are refused with 503 rather than queued without bound.
    pub max_concurrent_requests: usize,
    pub api_keys: Vec<String>,
    /// Browser origins besides the server's own that may call it (see `origin`); they also get CORS
    /// headers and preflight answers.
    pub allowed_origins: Vec<String>,
    /// Longest a request body may take to arrive (408 past it, see `body`).
    pub body_timeout: Duration,
    /// `Host` names answered besides the loopback ones (see `host`); `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

/// Maps failures of the tower layers (load shedding, timeout) to the API's error shape.
async fn layer_error(error: BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        let mut e = ApiError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is handling as many requests as it is configured for; retry shortly",
        );
        e.retry_after_secs = Some(1);
        e
    } else if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::with_status(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            "the request took longer than the server's request timeout; its queued work was dropped",
        )
    } else {
        ApiError::with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("unhandled error: {error}"),
        )
    }
}

/// A handler panic becomes a 500 in the API's error shape (the server keeps serving).
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::with_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the request failed inside the server",
    )
    .into_response()
}

/// The application's routes; each API route is served under both `/v1` and `/inference/v1` (Fireworks).
/// The API routes sit behind load shedding, a concurrency limit and a timeout; health, readiness and
/// metrics do not, so that probes answer even under overload.
pub fn router(state: Arc<AppState>, limits: HttpLimits) -> Router {
    // Install the metrics recorder before anything records.
    observe::handle();
    let api = Router::new()
        .route("/logprobs", post(logprobs::logprobs))
        .route("/completions", post(compat::completions::completions))
        .route("/chat/completions", post(compat::chat::chat_completions))
        .route("/models", get(models::list))
        .method_not_allowed_fallback(health::method_not_allowed);
    let reporter = Arc::new(load_report::Reporter {
        engine: state.engine.clone(),
        rate: load_report::Rate::default(),
    });
    let body_limits = Arc::new(body::BodyLimits {
        max_bytes: limits.max_body_bytes,
        timeout: limits.body_timeout,
    });
    // The tokenizer at the root, where vLLM and llama.cpp serve it, behind the same guards as the API.
    let tokenizer = Router::new()
        .route("/tokenize", post(tokenizer::tokenize))
        .route("/detokenize", post(tokenizer::detokenize))
        .route("/tokenizer_info", get(tokenizer::tokenizer_info))
        .route("/props", get(tokenizer::props));
    let guarded = Router::new()
        .nest("/v1", api.clone())
        .nest("/inference/v1", api)
        .merge(tokenizer)
        .layer(axum::middleware::from_fn_with_state(
            reporter,
            load_report::add_header,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits.request_timeout,
            deadline::stream_deadline,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(layer_error))
                .load_shed()
                .concurrency_limit(limits.max_concurrent_requests)
                .timeout(limits.request_timeout),
        )
        // Outside the concurrency limit: a request takes a slot only once its body is in.
        .layer(axum::middleware::from_fn_with_state(
            body_limits,
            body::receive,
        ));
    let app = Router::new()
        .merge(guarded)
        .merge(page::routes())
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(observe::metrics))
        .method_not_allowed_fallback(health::method_not_allowed)
        .fallback(health::not_found);
    guard(app, limits).with_state(state)
}

/// The guards every answer passes, whatever the routes behind them: the key check, the origin and Host
/// checks, CORS, the body limit, request ids, tracing, metrics and the panic catcher.
fn guard<S: Clone + Send + Sync + 'static>(app: Router<S>, limits: HttpLimits) -> Router<S> {
    let request_id = HeaderName::from_static("x-request-id");
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth::Keys(limits.api_keys)),
            auth::require_key,
        ))
        .layer(tower::util::option_layer(
            (!limits.allowed_origins.is_empty()).then(|| cors(&limits.allowed_origins)),
        ))
        .layer(origin::OriginLayer::new(&limits.allowed_origins));
    let app = match &limits.allowed_hosts {
        Some(names) => app.layer(axum::middleware::from_fn_with_state(
            Arc::new(host::AllowedHosts::new(names)),
            host::check_host,
        )),
        None => app,
    };
    app.layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(server_timing))
        .layer(axum::middleware::from_fn(observe::track))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(unread_body::announce_close))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", id, method = %request.method(), uri = %request.uri().path())
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
}

/// CORS for `server.allowed_origins`: preflights answered, and the answers readable by those pages (the
/// origin check has already refused every other origin).
fn cors(allowed: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter_map(|o| crate::request_policy::normalize_origin(o))
        .filter_map(|o| HeaderValue::from_str(&o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            AUTHORIZATION,
            CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("server-timing"),
            RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Adds `Server-Timing: app;dur=<ms>` (time until the response headers) so clients and benchmarks can
/// tell server time from network time; a handler's own stages (scoring: tokenize, queue, compute) follow it.
async fn server_timing(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let value = match response
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
    {
        Some(stages) => format!("app;dur={ms:.3}, {stages}"),
        None => format!("app;dur={ms:.3}"),
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
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

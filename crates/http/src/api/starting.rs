//! The server while its models load. The port answers from the first second, behind the same guards as
//! later: `/health` is 503 `loading` (as llama.cpp's server answers) until every model is in, so probes and
//! clients that wait for a 200 keep waiting but can tell a loading server from a dead one; `/ready` lists
//! each model file's progress; every other route is 503 `loading` with `Retry-After`. Once the engine is
//! up, [`Starting`] hands every request to the full application.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use serde_json::json;
use tower::{Service, ServiceExt};

use super::error::ApiError;
use super::{HttpLimits, guard, observe};
use crate::engine::{FileState, LoadProgress};

/// Seconds a client is asked to wait before it retries a request refused while loading.
const RETRY_AFTER_SECS: u64 = 2;

/// The routes answered while the models load, behind the application's guards.
pub fn loading_router(progress: LoadProgress, limits: HttpLimits) -> Router {
    observe::handle();
    let app = Router::new()
        .route("/health", get(loading))
        .route("/ready", get(ready_while_loading))
        .route("/metrics", get(|| async { observe::handle().render() }))
        .fallback(loading);
    guard(app, limits).with_state(progress)
}

/// 503 `loading`, saying how many model files are in.
async fn loading(State(progress): State<LoadProgress>) -> ApiError {
    let files = progress.snapshot();
    let loaded = files
        .iter()
        .filter(|f| f.state == FileState::Loaded)
        .count();
    let mut e = ApiError::with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        "loading",
        format!(
            "the server is loading its models ({loaded} of {} files loaded; /ready lists them); retry shortly",
            files.len()
        ),
    );
    e.retry_after_secs = Some(RETRY_AFTER_SECS);
    e
}

/// `/ready` while loading: 503, and every model file with its state and seconds so far.
async fn ready_while_loading(State(progress): State<LoadProgress>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"ready": false, "loading": progress.snapshot(), "models": []})),
    )
        .into_response()
}

/// The application the listener serves: the loading routes until [`Starting::loaded`] is set, then the
/// full application for every request after.
#[derive(Clone)]
pub struct Starting {
    loaded: Arc<OnceLock<Router>>,
    loading: Router,
}

impl Starting {
    /// Answers with `loading` until [`Starting::finish`] is called.
    pub fn new(loading: Router) -> Starting {
        Starting {
            loaded: Arc::new(OnceLock::new()),
            loading,
        }
    }

    /// From now on every request goes to `app`.
    pub fn finish(&self, app: Router) {
        let _ = self.loaded.set(app);
    }

    /// A router for the listener that dispatches as described above.
    pub fn into_router(self) -> Router {
        Router::new().fallback_service(self)
    }
}

impl Service<Request> for Starting {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let app = self
            .loaded
            .get()
            .cloned()
            .unwrap_or_else(|| self.loading.clone());
        Box::pin(app.oneshot(request))
    }
}

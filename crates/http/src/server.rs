//! Starting the service: bind the listener, load the engine while the port already answers (probes get
//! 503 `loading`), serve until SIGINT/SIGTERM, then drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{AppState, HttpLimits, Starting, loading_router, router};
use crate::engine::{Engine, EngineGuard, LoadProgress, StartupError};
use crate::listener::{self, ConnLimits, nofile};
use crate::served::ServedSettings;

/// Everything the server needs to start, in its own terms (the configuration layer builds it): what to
/// serve, and where to listen with which limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where to listen, and the limits of requests and connections.
    pub http: HttpSettings,
    /// The engine, the local and remote policies, and their order.
    pub served: ServedSettings,
}

/// The HTTP front's address, request and connection limits and access rules: the `server:` keys that are
/// the HTTP layer's, held once here and embedded in the configuration as they are.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Largest `items` list (and compat fan-out) a single request may carry.
    pub max_batch_items: usize,
    pub max_body_bytes: usize,
    /// Seconds a request may take before it is answered 504 and its queued work dropped.
    pub request_timeout_secs: u64,
    /// Requests handled at once; more get 503.
    pub max_concurrent_requests: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Accepted bearer keys (empty: authentication off).
    pub api_keys: Vec<String>,
    /// Browser origins allowed besides the server's own (empty: same-origin only).
    pub allowed_origins: Vec<String>,
    /// Seconds a started request head may take.
    pub header_read_timeout_secs: u64,
    /// Seconds an idle keep-alive connection is kept.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may take to arrive (408 past it).
    pub body_timeout_secs: u64,
    /// Connections open at once, before the open-files clamp.
    pub max_connections: usize,
    /// Extra `Host` names answered on a loopback bind (`*`: the check is off).
    pub allowed_hosts: Vec<String>,
}

/// A server whose port is bound and whose models are loading (on a blocking thread).
pub struct Server {
    listener: TcpListener,
    cfg: ServerSettings,
    limits: HttpLimits,
    connections: ConnLimits,
    progress: LoadProgress,
    loading: JoinHandle<Result<EngineGuard, StartupError>>,
}

impl Server {
    /// Binds `host:port` (port 0 picks a free one) and starts loading every model; [`Server::serve`]
    /// answers from the moment it is called, with 503 `loading` until the models are in.
    pub async fn start(settings: impl Into<ServerSettings>) -> anyhow::Result<Server> {
        let cfg: ServerSettings = settings.into();
        let listener = listener::bind(&cfg.http.host, cfg.http.port)
            .await
            .with_context(|| format!("cannot listen on {}:{}", cfg.http.host, cfg.http.port))?;
        let loopback = listener.local_addr()?.ip().is_loopback();
        let progress = LoadProgress::default();
        let settings = cfg.served.engine.clone();
        let reporting = progress.clone();
        let loading =
            tokio::task::spawn_blocking(move || Engine::start_reporting(&settings, &reporting));
        Ok(Server {
            listener,
            limits: http_limits(&cfg.http, loopback),
            connections: connection_limits(&cfg.http),
            progress,
            loading,
            cfg,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves: the loading answers first, the application once every model is
    /// in (a model that fails to load ends the server with its error). On shutdown `/ready` turns false,
    /// the listener closes, requests in flight get the shutdown timeout to finish (those still running
    /// after it are dropped), and the engine's inference threads are stopped and joined.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let starting = Starting::new(loading_router(self.progress, self.limits.clone()));
        let state_slot: Arc<OnceLock<Arc<AppState>>> = Arc::new(OnceLock::new());
        let draining_state = state_slot.clone();
        let (draining_tx, draining) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            if let Some(state) = draining_state.get() {
                state.ready.store(false, Ordering::SeqCst);
            }
            let _ = draining_tx.send(());
        };
        let serving = listener::serve(
            self.listener,
            starting.clone().into_router(),
            self.connections,
            signal,
        );
        let mut serving = std::pin::pin!(serving);
        let engine = tokio::select! {
            loaded = self.loading => loaded.context("engine start-up panicked")??,
            // Shut down before the models were in: nothing to drain (the loading thread ends with the
            // process).
            () = &mut serving => return Ok(()),
        };
        let state = match app_state(&self.cfg, engine.shared()) {
            Ok(state) => state,
            Err(e) => {
                stop_engine(engine).await?;
                return Err(e);
            }
        };
        let _ = state_slot.set(state.clone());
        starting.finish(router(state, self.limits));
        tracing::info!("models loaded: serving");
        let deadline = Duration::from_secs(self.cfg.http.shutdown_timeout_secs);
        let give_up = async move {
            if draining.await.is_ok() {
                tokio::time::sleep(deadline).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = serving => {}
            _ = give_up => {
                tracing::warn!(seconds = deadline.as_secs(), "shutdown timeout passed; dropping the requests still in flight");
            }
        };
        // Then the engine: what is left is cancelled and the inference threads are joined, so the process
        // exits only after every llama.cpp context is freed.
        stop_engine(engine).await
    }
}

/// Drops the engine's guard on a blocking thread: what is left is cancelled and the inference threads are
/// joined there, off the async runtime (dropped anywhere else, the guard does the same on that thread).
async fn stop_engine(engine: EngineGuard) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || drop(engine))
        .await
        .context("engine shutdown panicked")
}

/// What every handler reaches, once the engine is up: the policies over it (remote ones included).
fn app_state(cfg: &ServerSettings, engine: Arc<Engine>) -> anyhow::Result<Arc<AppState>> {
    let policies = cfg.served.policies(&engine).map_err(anyhow::Error::msg)?;
    Ok(Arc::new(AppState {
        engine,
        policies: Arc::new(policies),
        request_timeout: Duration::from_secs(cfg.http.request_timeout_secs),
        max_batch_items: cfg.http.max_batch_items,
        ready: AtomicBool::new(true),
    }))
}

/// The HTTP limits from the configuration (the Host rule depends on whether the bind is loopback).
fn http_limits(cfg: &HttpSettings, loopback: bool) -> HttpLimits {
    HttpLimits {
        max_body_bytes: cfg.max_body_bytes,
        request_timeout: Duration::from_secs(cfg.request_timeout_secs),
        max_concurrent_requests: cfg.max_concurrent_requests,
        api_keys: cfg.api_keys.clone(),
        allowed_origins: cfg.allowed_origins.clone(),
        body_timeout: Duration::from_secs(cfg.body_timeout_secs),
        allowed_hosts: host_rule(loopback, &cfg.allowed_hosts),
    }
}

/// The connection limits: the open-files soft limit is raised to the hard one, and the connection limit
/// kept under it (a warning says when the configured one does not fit).
fn connection_limits(cfg: &HttpSettings) -> ConnLimits {
    let files = nofile::raise_to_hard();
    let max_connections = nofile::clamp(cfg.max_connections, files);
    if max_connections < cfg.max_connections {
        tracing::warn!(
            configured = cfg.max_connections,
            used = max_connections,
            open_files_limit = files,
            "server.max_connections does not fit under the open-files limit (ulimit -n); using less"
        );
    }
    ConnLimits {
        header_read_timeout: Duration::from_secs(cfg.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        answer_timeout: Duration::from_secs(cfg.request_timeout_secs + cfg.idle_timeout_secs),
        max_connections,
    }
}

/// The `Host` names answered: on a loopback bind only loopback names and `server.allowed_hosts` (`None`
/// when `*` is listed, or when the server is bound to a reachable address and no list is given).
fn host_rule(loopback: bool, allowed: &[String]) -> Option<Vec<String>> {
    if allowed.iter().any(|h| h == "*") || (!loopback && allowed.is_empty()) {
        None
    } else {
        Some(allowed.to_vec())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received: not ready, finishing requests in flight");
}

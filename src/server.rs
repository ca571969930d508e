//! Starting the service: load the engine, bind the listener, serve until SIGINT/SIGTERM, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{AppState, HttpLimits, router};
use crate::config::Config;
use crate::engine::Engine;
use crate::listener::{self, ConnLimits, nofile};
use crate::served::Policies;

/// A server whose models are loaded and whose port is bound, ready to serve.
pub struct Server {
    listener: TcpListener,
    app: axum::Router,
    state: Arc<AppState>,
    connections: ConnLimits,
    shutdown_timeout: Duration,
    pub engine: Arc<Engine>,
}

impl Server {
    /// Loads every model (on a blocking thread) and binds `host:port` (port 0 picks a free one).
    pub async fn start(cfg: Config) -> anyhow::Result<Server> {
        let engine_cfg = cfg.clone();
        let engine =
            tokio::task::spawn_blocking(move || Engine::start(&engine_cfg.engine_settings()))
                .await
                .context("engine start-up panicked")??;
        let engine = Arc::new(engine);
        let listener = listener::bind(&cfg.host, cfg.port)
            .await
            .with_context(|| format!("cannot listen on {}:{}", cfg.host, cfg.port))?;
        let loopback = listener.local_addr()?.ip().is_loopback();
        let connections = connection_limits(&cfg);
        let policies = Policies::new(
            &engine,
            cfg.remote_policies.clone(),
            cfg.cache,
            &cfg.policy_order,
        )
        .map_err(anyhow::Error::msg)?;
        let state = Arc::new(AppState {
            engine: engine.clone(),
            policies: Arc::new(policies),
            request_timeout: Duration::from_secs(cfg.request_timeout_secs),
            max_batch_items: cfg.max_batch_items,
            ready: AtomicBool::new(true),
        });
        let limits = HttpLimits {
            max_body_bytes: cfg.max_body_bytes,
            request_timeout: Duration::from_secs(cfg.request_timeout_secs),
            max_concurrent_requests: cfg.max_concurrent_requests,
            api_keys: cfg.api_keys.clone(),
            allowed_origins: cfg.allowed_origins.clone(),
            body_timeout: Duration::from_secs(cfg.body_timeout_secs),
            allowed_hosts: host_rule(loopback, &cfg.allowed_hosts),
        };
        Ok(Server {
            listener,
            app: router(state.clone(), limits),
            state,
            connections,
            shutdown_timeout: Duration::from_secs(cfg.shutdown_timeout_secs),
            engine,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves; then `/ready` turns false, the listener closes, requests in
    /// flight get the shutdown timeout to finish (those still running after it are dropped), and the
    /// engine's inference threads are stopped and joined.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let engine = self.engine.clone();
        let (draining_tx, draining) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            state.ready.store(false, Ordering::SeqCst);
            let _ = draining_tx.send(());
        };
        let serve = async move {
            listener::serve(self.listener, self.app, self.connections, signal).await;
            Ok(())
        };
        let deadline = self.shutdown_timeout;
        let give_up = async move {
            if draining.await.is_ok() {
                tokio::time::sleep(deadline).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = serve => result,
            _ = give_up => {
                tracing::warn!(seconds = deadline.as_secs(), "shutdown timeout passed; dropping the requests still in flight");
                Ok(())
            }
        };
        // Then the engine: what is left is cancelled and the inference threads are joined, so the process
        // exits only after every llama.cpp context is freed.
        tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .map_err(std::io::Error::other)?;
        result
    }
}

/// The connection limits: the open-files soft limit is raised to the hard one, and the connection limit
/// kept under it (a warning says when the configured one does not fit).
fn connection_limits(cfg: &Config) -> ConnLimits {
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

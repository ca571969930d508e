//! Starting the service: load the engine, bind the listener, serve until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::config::Config;
use crate::engine::Engine;

/// A server whose models are loaded and whose port is bound, ready to serve.
pub struct Server {
    listener: TcpListener,
    app: axum::Router,
    pub engine: Arc<Engine>,
}

impl Server {
    /// Loads every model (on a blocking thread) and binds `host:port` (port 0 picks a free one).
    pub async fn start(cfg: Config) -> anyhow::Result<Server> {
        let engine_cfg = cfg.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::start(&engine_cfg))
            .await
            .context("engine start-up panicked")??;
        let engine = Arc::new(engine);
        let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", cfg.host, cfg.port))?;
        let state = Arc::new(AppState {
            engine: engine.clone(),
            max_batch_items: cfg.max_batch_items,
        });
        Ok(Server {
            listener,
            app: router(state, cfg.max_body_bytes, cfg.api_keys.clone()),
            engine,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await
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
    tracing::info!("shutdown signal received; finishing requests in flight");
}

//! The server's accept loop: connections served by hyper with limits axum::serve does not have — a
//! header-read timeout, an idle keep-alive timeout and a maximum number of open connections kept under the
//! process's open-files limit. When the table is full, the connection that has waited longest without
//! being answered is closed to make room; when every connection is being answered, the newcomer gets
//! 503 `too_many_connections`. Shutdown stops accepting, lets requests in flight finish and closes the
//! rest.

mod conn;
pub mod nofile;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower::ServiceExt;

use conn::{Conn, Handling, Phase, Registry, Watched};

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// At most this many `too_many_connections` answers are written at once; past it, newcomers are closed
/// without one.
const MAX_REFUSALS: usize = 32;

/// Sockets of evicted connections that may still be closing when the next one is accepted; past it the
/// accept loop waits for them. With [`MAX_REFUSALS`] well inside [`nofile::reserve`].
const CLOSING_SLACK: usize = 16;

/// The connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest a request head may take to arrive once its first byte has.
    pub header_read_timeout: Duration,
    /// Longest a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest a request may hold its connection once its body is in (the request timeout plus the idle
    /// timeout): past it the client has stopped reading its answer.
    pub answer_timeout: Duration,
    /// Connections open at once (already clamped under the open-files limit, see [`nofile::clamp`]).
    pub max_connections: usize,
}

/// Binds `host:port` (the first address that binds) with a large listen backlog.
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match bind_one(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host} resolves to no address"))))
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A request's connection, in the request's extensions: the body reader marks the time spent receiving
/// the body, during which the connection may be evicted like an idle one.
#[derive(Clone, Debug)]
pub struct ConnHandle(Arc<Conn>);

impl ConnHandle {
    /// Marks the body as being received until the returned guard is dropped.
    pub fn receiving_body(&self) -> ReceivingBody {
        self.0.enter(Phase::Body);
        ReceivingBody(self.0.clone())
    }
}

/// While alive, the connection counts as receiving a body (see [`ConnHandle::receiving_body`]).
#[derive(Debug)]
pub struct ReceivingBody(Arc<Conn>);

impl Drop for ReceivingBody {
    fn drop(&mut self) {
        if self.0.phase().0 == Phase::Body {
            self.0.enter(Phase::Busy);
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and returns once every
/// connection has closed (requests in flight finish first; the caller bounds how long that may take).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let registry = Arc::new(Registry::default());
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header timer is this module's own (see `conn`): hyper's also runs while a connection is idle.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let http = Arc::new(http);
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_error_log: Option<Instant> = None;
    'accepting: loop {
        // Evicted connections' sockets close on their own tasks: wait for them rather than run out of
        // descriptors when newcomers arrive faster than they close.
        while registry.live() >= limits.max_connections + CLOSING_SLACK {
            tokio::select! {
                () = registry.released.notified() => {}
                () = &mut shutdown => break 'accepting,
            }
        }
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (or a connection reset before accept): wait a little rather than
                    // spin; log at most once a second.
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        tracing::warn!(error = %e, open = registry.len(), "accept failed");
                        last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break 'accepting,
        };
        if registry.len() >= limits.max_connections && !registry.evict_one() {
            refuse(stream, &refusing);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let entry = registry.open();
        let (http, app, closing) = (http.clone(), app.clone(), closing_rx.clone());
        tokio::spawn(async move {
            run_connection(stream, entry, &http, app, limits, closing).await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(closing_rx);
    // Every connection task holds a receiver: all are gone once the sender sees none.
    closing_tx.closed().await;
}

/// Serves one connection until it closes, times out, is evicted, or shutdown has let its request finish.
async fn run_connection(
    stream: TcpStream,
    entry: conn::Entry,
    http: &hyper::server::conn::http1::Builder,
    app: axum::Router,
    limits: ConnLimits,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let conn = entry.conn.clone();
    let io = TokioIo::new(Watched {
        inner: stream,
        conn: conn.clone(),
    });
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (app, conn) = (app.clone(), service_conn.clone());
        async move {
            conn.enter(Phase::Busy);
            let handling = Handling(conn.clone());
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnHandle(conn));
            let response = app.oneshot(request).await?;
            // The connection is idle again once the answer's last byte has been handed to hyper.
            Ok::<_, Infallible>(response.map(|body| Body::new(Answer { body, handling })))
        }
    });
    let served = http.serve_connection(io, service);
    let mut served = std::pin::pin!(served);
    let mut draining = *closing.borrow();
    if draining {
        served.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = conn.deadline(&limits);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = conn.evicted.notified() => {
                tracing::debug!("connection closed to make room for a new one");
                break;
            }
            () = conn.changed.notified() => {}
            () = sleep_until(deadline) => {
                if conn.expired(&limits) {
                    tracing::debug!(phase = ?conn.phase().0, "connection timed out");
                    break;
                }
            }
            _ = closing.changed(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    drop(entry);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// An answer's body that marks its connection idle when dropped (written out, or the connection gone).
struct Answer {
    body: Body,
    #[allow(dead_code)]
    handling: Handling,
}

impl http_body::Body for Answer {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers a connection the table has no room for with 503 `too_many_connections` (after reading its
/// request head, so that the client sees the answer rather than a reset), within a second.
fn refuse(mut stream: TcpStream, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = br#"{"error":{"object":"error","type":"server_error","code":"too_many_connections","message":"the server has as many connections open as it is configured for (server.max_connections), all of them being answered; retry shortly"}}"#;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
                 connection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body).await;
            let _ = stream.shutdown().await;
        })
        .await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

//! One connection's life: which phase it is in (idle, receiving a request head, receiving a body, being
//! answered), since when, and the registry of open connections the accept loop evicts from when full.
//!
//! The phases decide both timeouts and eviction: an idle connection is closed after the idle timeout, one
//! whose request head has started arriving after the header-read timeout (hyper's own header timer also
//! runs while idle, so it is not used), one whose answer is not written within the answer timeout (a
//! client that stopped reading) after that. Idle, slow-head and body-receiving connections are the ones evicted
//! when the connection table is full: they cost the server nothing to close, while a request being answered
//! is never cut.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::ConnLimits;

/// Milliseconds since the first call: a clock that fits in an atomic.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Between requests (or before the first): waiting for a request head.
    Idle = 0,
    /// Bytes of a request head have arrived; the rest has not.
    Head = 1,
    /// The request's head is in; its body is being received.
    Body = 2,
    /// The request is being handled or its answer written.
    Busy = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Idle,
            1 => Phase::Head,
            2 => Phase::Body,
            _ => Phase::Busy,
        }
    }
}

/// The shared state of one open connection.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    phase: AtomicU8,
    since_ms: AtomicU64,
    /// The phase changed: the connection's watchdog recomputes its deadline.
    pub(super) changed: Notify,
    /// The accept loop chose this connection to close to make room.
    pub(super) evicted: Notify,
}

impl Conn {
    fn new(id: u64) -> Conn {
        Conn {
            id,
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(now_ms()),
            changed: Notify::new(),
            evicted: Notify::new(),
        }
    }

    /// The present phase and when it began.
    pub fn phase(&self) -> (Phase, u64) {
        (
            Phase::from_u8(self.phase.load(Ordering::Acquire)),
            self.since_ms.load(Ordering::Acquire),
        )
    }

    /// Enters `phase` now.
    pub fn enter(&self, phase: Phase) {
        self.since_ms.store(now_ms(), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts receiving a head.
    fn bytes_arrived(&self) {
        if self
            .phase
            .compare_exchange(
                Phase::Idle as u8,
                Phase::Head as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.since_ms.store(now_ms(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the watchdog must close the connection if its phase has not changed by then (`None`: never,
    /// the body's own limit applies).
    pub(super) fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let (phase, since) = self.phase();
        let limit = match phase {
            Phase::Idle => limits.idle_timeout,
            Phase::Head => limits.header_read_timeout,
            Phase::Body => return None,
            Phase::Busy => limits.answer_timeout,
        };
        let at = since + limit.as_millis() as u64;
        Some(Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// Whether the phase began more than its limit ago.
    pub(super) fn expired(&self, limits: &ConnLimits) -> bool {
        self.deadline(limits).is_some_and(|d| d <= Instant::now())
    }
}

/// Marks a request being handled on its connection; dropped when its answer has been written, which makes
/// the connection idle again.
#[derive(Debug)]
pub struct Handling(pub(super) Arc<Conn>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.enter(Phase::Idle);
    }
}

/// The open connections, for the connection limit and eviction.
#[derive(Debug, Default)]
pub struct Registry {
    /// Connections that may still be evicted (an evicted one leaves at once, its socket a little later).
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    /// Sockets not yet closed, evicted ones included: what the open-files limit sees.
    live: AtomicUsize,
    /// A socket was closed.
    pub(super) released: Notify,
}

impl Registry {
    /// Registers a new connection; it leaves the registry when the returned entry is dropped (or evicted).
    pub fn open(self: &Arc<Self>) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id));
        self.live.fetch_add(1, Ordering::AcqRel);
        self.lock().insert(id, conn.clone());
        Entry {
            conn,
            registry: self.clone(),
        }
    }

    /// Connections open now, not counting those evicted and about to close.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Sockets open now, evicted ones not yet closed included.
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Closes the connection that has waited longest without being answered (idle, slow head or slow
    /// body); false when every open connection is being answered.
    pub fn evict_one(&self) -> bool {
        let mut open = self.lock();
        let victim = open
            .values()
            .filter_map(|c| match c.phase() {
                (Phase::Busy, _) => None,
                (_, since) => Some((since, c.id)),
            })
            .min()
            .map(|(_, id)| id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(conn) => {
                conn.evicted.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's place in the registry, given up on drop.
#[derive(Debug)]
pub struct Entry {
    pub conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.conn.id);
        self.registry.live.fetch_sub(1, Ordering::AcqRel);
        self.registry.released.notify_one();
    }
}

/// A socket that tells its connection when request bytes arrive.
pub struct Watched<S> {
    pub inner: S,
    pub conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_takes_the_longest_waiting_unanswered_connection() {
        let registry = Arc::new(Registry::default());
        let busy = registry.open();
        busy.conn.enter(Phase::Busy);
        assert!(
            !registry.evict_one(),
            "a connection being answered is never cut"
        );
        std::thread::sleep(Duration::from_millis(5));
        let old = registry.open();
        std::thread::sleep(Duration::from_millis(5));
        let young = registry.open();
        young.conn.enter(Phase::Body);
        assert_eq!(registry.len(), 3);
        assert!(registry.evict_one());
        assert_eq!(registry.len(), 2);
        assert_eq!(
            registry.live(),
            3,
            "the evicted socket is open until its entry drops"
        );
        assert!(registry.lock().contains_key(&young.conn.id));
        assert!(!registry.lock().contains_key(&old.conn.id));
        drop(young);
        assert_eq!(registry.len(), 1);
        drop(old);
        drop(busy);
        assert_eq!((registry.len(), registry.live()), (0, 0));
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let c = Conn::new(0);
        let mut limits = ConnLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            answer_timeout: Duration::from_secs(675),
            max_connections: 1,
        };
        let idle = c.deadline(&limits).unwrap();
        c.bytes_arrived();
        assert_eq!(c.phase().0, Phase::Head);
        assert!(c.deadline(&limits).unwrap() < idle);
        c.enter(Phase::Body);
        assert_eq!(c.deadline(&limits), None);
        c.enter(Phase::Busy);
        assert!(c.deadline(&limits).unwrap() > idle);
        assert!(!c.expired(&limits));
        c.enter(Phase::Idle);
        limits.idle_timeout = Duration::ZERO;
        assert!(c.expired(&limits));
    }
}

//! Streamed answers obey the request timeout too: the timeout layer only bounds the time until the answer's
//! head, so an event stream is cut here when the request's time is up — an error event (`request_timeout`),
//! then `[DONE]`, and the rest of its work dropped with the stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::ApiError;

/// Middleware: an event-stream answer ends `timeout` after the request began.
pub async fn stream_deadline(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = Instant::now() + timeout;
    let response = next.run(request).await;
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streamed {
        return response;
    }
    response.map(|inner| {
        Body::new(Cut {
            inner: Some(inner),
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            tail: None,
            timeout,
        })
    })
}

/// A stream that ends with an error event and `[DONE]` at its deadline.
struct Cut {
    inner: Option<Body>,
    sleep: Pin<Box<Sleep>>,
    /// The closing events, once the deadline has passed and until they are sent.
    tail: Option<Bytes>,
    timeout: Duration,
}

impl http_body::Body for Cut {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.inner.is_some() && self.sleep.as_mut().poll(cx).is_ready() {
            // Dropping the stream drops its work (the choices stop at their next token).
            self.inner = None;
            let e = ApiError::with_status(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                format!(
                    "the answer took longer than the request timeout of {} s \
                     (server.request_timeout_secs); the rest was dropped",
                    self.timeout.as_secs()
                ),
            );
            self.tail = Some(Bytes::from(format!(
                "data: {}\n\ndata: [DONE]\n\n",
                e.body()
            )));
        }
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(self.tail.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none() && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

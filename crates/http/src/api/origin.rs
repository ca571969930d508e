//! Browser safety: a server on localhost is reachable by every web page its user visits, so requests whose
//! `Origin` header names another site are refused with 403 before any route (or the API-key check) sees
//! them. Requests without `Origin` — curl, SDKs, same-origin navigations — pass untouched.
//!
//! Same-origin means the `Origin` equals `http(s)://` + the `Host` the request was addressed to; other
//! origins pass only when listed in `server.allowed_origins`. `Origin: null` (sandboxed frames, `file://`
//! pages, some redirects) is always refused. An attacker who rebinds their own DNS name to this address
//! sends a matching `Host`: the `Host` check (`host`) refuses such names on a loopback bind.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::request_policy::normalize_origin as normalize;

use super::ApiError;

/// The layer, built once from the configured extra origins; clones share the list.
#[derive(Clone, Debug)]
pub struct OriginLayer {
    allowed: Arc<Vec<String>>,
}

impl OriginLayer {
    /// Accepts same-origin requests plus `allowed` (each `scheme://host[:port]`, compared normalized).
    pub fn new(allowed: &[String]) -> Self {
        OriginLayer {
            allowed: Arc::new(allowed.iter().filter_map(|o| normalize(o)).collect()),
        }
    }

    /// Why a request is refused (the message names the origin), or `None` when it may proceed.
    fn refusal(&self, request: &Request) -> Option<String> {
        let origin = request.headers().get(header::ORIGIN)?;
        let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let Some(origin) = origin.to_str().ok().and_then(normalize) else {
            return Some(format!(
                "requests from origin `{shown}` are not allowed; only this server's own pages and \
                 server.allowed_origins may call it from a browser"
            ));
        };
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let same = host.is_some_and(|h| {
            ["http", "https"]
                .iter()
                .filter_map(|scheme| normalize(&format!("{scheme}://{h}")))
                .any(|own| own == origin)
        });
        if same || self.allowed.contains(&origin) {
            None
        } else {
            Some(format!(
                "requests from origin `{shown}` are not allowed; only this server's own pages and \
                 server.allowed_origins may call it from a browser"
            ))
        }
    }
}

impl<S> Layer<S> for OriginLayer {
    type Service = OriginService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer wraps around the router.
#[derive(Clone, Debug)]
pub struct OriginService<S> {
    inner: S,
    layer: OriginLayer,
}

impl<S> Service<Request> for OriginService<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.layer.refusal(&request) {
            None => Box::pin(self.inner.call(request)),
            Some(message) => {
                tracing::warn!(reason = %message, "refused a cross-origin request");
                let mut e =
                    ApiError::with_status(StatusCode::FORBIDDEN, "origin_not_allowed", message);
                e.kind = "permission_error";
                Box::pin(std::future::ready(Ok(e.into_response())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(allowed: &[&str], origin: Option<&str>, host: &str) -> bool {
        let layer = OriginLayer::new(&allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut b = Request::builder()
            .uri("/v1/models")
            .header(header::HOST, host);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        layer
            .refusal(&b.body(axum::body::Body::empty()).unwrap())
            .is_some()
    }

    #[test]
    fn origins_are_checked_against_the_host_and_the_list() {
        let host = "127.0.0.1:8080";
        assert!(!refused(&[], None, host));
        assert!(!refused(&[], Some("http://127.0.0.1:8080"), host));
        assert!(!refused(&[], Some("HTTP://127.0.0.1:8080"), host));
        assert!(!refused(&[], Some("https://127.0.0.1:8080"), host));
        assert!(!refused(&[], Some("http://localhost"), "localhost:80"));
        assert!(refused(&[], Some("http://127.0.0.1:8081"), host));
        assert!(refused(&[], Some("http://localhost:8080"), host));
        assert!(refused(&[], Some("https://evil.example"), host));
        assert!(refused(&[], Some("null"), host));
        assert!(refused(&["null"], Some("null"), host));
        assert!(refused(&[], Some("http://127.0.0.1:8080/x"), host));
        assert!(!refused(
            &["https://app.example"],
            Some("https://app.example"),
            host
        ));
        assert!(!refused(
            &["https://app.example:443"],
            Some("https://app.example"),
            host
        ));
        assert!(refused(
            &["https://app.example"],
            Some("http://app.example"),
            host
        ));
    }
}

//! DNS rebinding: a web page whose own name the attacker points at 127.0.0.1 reaches a server on loopback
//! with a `Host` (and a matching `Origin`) of the attacker's name, so the origin check alone passes it. On a
//! loopback bind the server therefore answers only loopback `Host` names (`localhost`, `127.0.0.1`, `[::1]`,
//! any port) and those in `server.allowed_hosts`; others get 403 `host_not_allowed`. Requests without a
//! `Host` (HTTP/1.0 tools, never browsers) pass.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The extra names answered besides the loopback ones (lowercase, without port or brackets).
#[derive(Debug)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// From `server.allowed_hosts` as written.
    pub fn new(names: &[String]) -> Self {
        AllowedHosts(names.iter().map(|n| bare(n).to_string()).collect())
    }

    /// Whether a `Host` header value is answered.
    fn answers(&self, host: &str) -> bool {
        let name = bare(strip_port(host.trim()));
        name == "localhost"
            || name.ends_with(".localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.0.contains(&name)
    }
}

/// `name:port` → `name`; `[v6]:port` → `[v6]`; a bare IPv6 address is kept whole.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Lowercase, without IPv6 brackets or a trailing dot.
fn bare(name: &str) -> String {
    name.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Middleware: refuses a foreign `Host` with 403 naming the setting that would allow it.
pub async fn check_host(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(host) = request.headers().get(header::HOST) else {
        return next.run(request).await;
    };
    let shown = String::from_utf8_lossy(host.as_bytes()).into_owned();
    if host.to_str().is_ok_and(|h| allowed.answers(h)) {
        return next.run(request).await;
    }
    tracing::warn!(host = %shown, "refused a request for a foreign Host");
    let mut e = ApiError::with_status(
        StatusCode::FORBIDDEN,
        "host_not_allowed",
        format!(
            "requests addressed to host `{shown}` are not answered: this server listens on a loopback \
             address and answers only localhost, 127.0.0.1 and [::1]; add the name to \
             server.allowed_hosts (--allowed-host) to answer it, or `*` to answer any"
        ),
    );
    e.kind = "permission_error";
    e.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_listed_ones_are_answered() {
        let none = AllowedHosts::new(&[]);
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:9",
            "[::1]",
            "[::1]:8080",
            "::1",
            "localhost.",
            "app.localhost:3000",
        ] {
            assert!(none.answers(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::2]:80",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!none.answers(host), "{host}");
        }
        let listed = AllowedHosts::new(&["Scorer.internal".into(), "[fd00::1]".into()]);
        assert!(listed.answers("scorer.internal:8080"));
        assert!(listed.answers("[fd00::1]:80"));
        assert!(listed.answers("localhost"));
        assert!(!listed.answers("other.internal"));
    }
}

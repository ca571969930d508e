//! Bearer-key authentication: off unless keys are configured; then every route but `/health` and the
//! page's files (which hold no data) needs `Authorization: Bearer KEY`. Keys are compared in constant
//! time, and never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;

/// The accepted keys.
pub struct Keys(pub Vec<String>);

impl Keys {
    /// Whether `presented` equals one of the keys; every key is compared, in constant time.
    fn accepts(&self, presented: &[u8]) -> bool {
        self.0
            .iter()
            .fold(0u8, |ok, k| ok | k.as_bytes().ct_eq(presented).unwrap_u8())
            == 1
    }
}

/// Middleware: refuses requests without a valid key with 401 in the API's error shape.
pub async fn require_key(State(keys): State<Arc<Keys>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if keys.0.is_empty() || path == "/health" || super::page::is_public(path) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(key) if keys.accepts(key.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("the API key is not valid"),
        None => unauthorized("missing `Authorization: Bearer <API key>` header"),
    }
}

/// The key of an `Authorization: Bearer KEY` value; the scheme's name is case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

fn unauthorized(message: &str) -> Response {
    let mut e = ApiError::with_status(StatusCode::UNAUTHORIZED, "invalid_api_key", message);
    e.kind = "authentication_error";
    e.into_response()
}

#[cfg(test)]
mod tests {
    use super::{Keys, bearer};

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer k1"), Some("k1"));
        assert_eq!(bearer("bearer k1"), Some("k1"));
        assert_eq!(bearer("BEARER  k1 "), Some("k1"));
        assert_eq!(bearer("Basic k1"), None);
        assert_eq!(bearer("Bearerk1"), None);
    }

    #[test]
    fn only_exact_keys_are_accepted() {
        let keys = Keys(vec!["alpha".into(), "beta-key".into()]);
        assert!(keys.accepts(b"alpha"));
        assert!(keys.accepts(b"beta-key"));
        assert!(!keys.accepts(b"alph"));
        assert!(!keys.accepts(b"alphaa"));
        assert!(!keys.accepts(b""));
        assert!(!Keys(vec![]).accepts(b""));
    }
}

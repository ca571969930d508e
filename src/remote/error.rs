//! Why a remote policy could not score: each variant says whose fault it is (the client's input, or the
//! upstream) and maps to one HTTP status, without this module knowing any HTTP framework.

use std::time::Duration;

/// A failure of a remote scoring call. Nothing that failed is ever turned into a number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    /// A token of the upstream's joint tokenization of prompt + response straddles the boundary, so no
    /// exact log π(response | prompt) exists in its answer. Offsets are bytes into prompt + response.
    #[error(
        "items[{item}]: the upstream tokenizes prompt + response with token {token:?} at bytes \
         {start}..{end}, across the prompt/response boundary at byte {boundary}; no exact score exists \
         for this split (move the boundary to a token edge)"
    )]
    TokenBoundary {
        item: usize,
        token: String,
        start: usize,
        end: usize,
        boundary: usize,
    },
    /// The request itself is invalid (checked here, or refused by the upstream with a 4xx).
    #[error("{field}: {message}")]
    InvalidRequest { field: String, message: String },
    /// The upstream does not know the configured model (a configuration problem of this server).
    #[error("remote policy `{remote}`: the upstream does not know model `{model}`: {message}")]
    UnknownModel {
        remote: String,
        model: String,
        message: String,
    },
    /// The upstream refused this server's own API key (401/403): a configuration problem of this server,
    /// never the client's credentials.
    #[error(
        "remote policy `{remote}`: the upstream rejected this server's API key (HTTP {status})"
    )]
    KeyRejected { remote: String, status: u16 },
    /// No answer could be had: connection refused, reset, DNS, TLS.
    #[error("remote policy `{remote}`: upstream unreachable: {message}")]
    Unreachable { remote: String, message: String },
    /// The request's deadline passed before the upstream answered.
    #[error("remote policy `{remote}`: no upstream answer within {waited:?}")]
    Timeout { remote: String, waited: Duration },
    /// The upstream kept answering 429/503 through every retry the deadline allowed.
    #[error(
        "remote policy `{remote}`: upstream overloaded (HTTP {status}) after {attempts} attempts"
    )]
    Overloaded {
        remote: String,
        status: u16,
        attempts: u32,
        /// The upstream's last `Retry-After`, to pass on to the client.
        retry_after: Option<Duration>,
    },
    /// The upstream failed (5xx, or an unexpected status) through every retry.
    #[error("remote policy `{remote}`: upstream error (HTTP {status}): {message}")]
    Upstream {
        remote: String,
        status: u16,
        message: String,
    },
    /// The upstream answered 200 with something that is not a valid, consistent answer.
    #[error("remote policy `{remote}`: malformed upstream answer: {message}")]
    Malformed { remote: String, message: String },
}

impl RemoteError {
    /// The HTTP status our API answers with: 4xx only where the client's request is at fault.
    pub fn http_status(&self) -> u16 {
        match self {
            RemoteError::TokenBoundary { .. } => 422,
            RemoteError::InvalidRequest { .. } => 400,
            RemoteError::Overloaded { .. } => 503,
            RemoteError::Timeout { .. } => 504,
            RemoteError::UnknownModel { .. }
            | RemoteError::KeyRejected { .. }
            | RemoteError::Unreachable { .. }
            | RemoteError::Upstream { .. }
            | RemoteError::Malformed { .. } => 502,
        }
    }

    /// The machine-readable `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            RemoteError::TokenBoundary { .. } => "token_boundary",
            RemoteError::InvalidRequest { .. } => "invalid_request_error",
            RemoteError::UnknownModel { .. } => "upstream_model_not_found",
            RemoteError::KeyRejected { .. } => "upstream_auth_failed",
            RemoteError::Unreachable { .. } => "upstream_unreachable",
            RemoteError::Timeout { .. } => "upstream_timeout",
            RemoteError::Overloaded { .. } => "upstream_overloaded",
            RemoteError::Upstream { .. } => "upstream_error",
            RemoteError::Malformed { .. } => "upstream_malformed",
        }
    }

    /// The field the error is about, for the body's `param` (client errors only).
    pub fn param(&self) -> Option<String> {
        match self {
            RemoteError::TokenBoundary { item, .. } => Some(format!("items[{item}].response")),
            RemoteError::InvalidRequest { field, .. } => Some(field.clone()),
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying, when the upstream said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RemoteError::Overloaded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        self.code()
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> RemoteError {
        RemoteError::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clients_faults_are_4xx() {
        let r = || "r".to_string();
        let upstream = [
            RemoteError::UnknownModel {
                remote: r(),
                model: "m".into(),
                message: "x".into(),
            },
            RemoteError::KeyRejected {
                remote: r(),
                status: 401,
            },
            RemoteError::Unreachable {
                remote: r(),
                message: "x".into(),
            },
            RemoteError::Timeout {
                remote: r(),
                waited: Duration::from_secs(1),
            },
            RemoteError::Overloaded {
                remote: r(),
                status: 429,
                attempts: 3,
                retry_after: None,
            },
            RemoteError::Upstream {
                remote: r(),
                status: 500,
                message: "x".into(),
            },
            RemoteError::Malformed {
                remote: r(),
                message: "x".into(),
            },
        ];
        for e in upstream {
            assert!(e.http_status() >= 500, "{e}");
            assert!(e.code().starts_with("upstream_"), "{e}");
        }
        let b = RemoteError::TokenBoundary {
            item: 0,
            token: "world".into(),
            start: 6,
            end: 11,
            boundary: 9,
        };
        assert_eq!((b.http_status(), b.code()), (422, "token_boundary"));
        assert!(b.to_string().contains("\"world\" at bytes 6..11"), "{b}");
        assert_eq!(
            RemoteError::invalid("items[0].prompt", "x").http_status(),
            400
        );
    }
}

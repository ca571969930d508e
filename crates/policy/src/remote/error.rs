//! Why a remote policy could not score: each variant says whose fault it is (the client's input, or the
//! upstream) and maps to one HTTP status, without this module knowing any HTTP framework.

use std::time::Duration;

/// A failure of a remote scoring call. Nothing that failed is ever turned into a number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    /// A token of the upstream's joint tokenization of prompt + response straddles the boundary, so no
    /// exact log π(response | prompt) exists in its answer. Offsets are bytes into prompt + response.
    #[error(
        "{}: the upstream tokenizes prompt + response with token {token:?} at bytes \
         {start}..{end}, across the prompt/response boundary at byte {boundary}; no exact score exists \
         for this split (move the boundary to a token edge)",
        response_field(*.item)
    )]
    TokenBoundary {
        /// The item's index in a batch; `None` for a request's one inline item.
        item: Option<usize>,
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
    /// The upstream's answer grew past the policy's `max_answer_bytes`; reading stopped there.
    #[error(
        "remote policy `{remote}`: the upstream's answer is larger than this policy's limit of {limit} \
         bytes (max_answer_bytes)"
    )]
    AnswerTooLarge { remote: String, limit: usize },
    /// The upstream answered with a redirect, which is not followed (it would re-send the request, key
    /// included, wherever it points).
    #[error(
        "remote policy `{remote}`: the upstream answered with a redirect (HTTP {status}), which this \
         server does not follow; point the policy's base_url at the final address"
    )]
    Redirected { remote: String, status: u16 },
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
            | RemoteError::AnswerTooLarge { .. }
            | RemoteError::Redirected { .. }
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
            RemoteError::AnswerTooLarge { .. } => "upstream_answer_too_large",
            RemoteError::Redirected { .. } => "upstream_redirect",
        }
    }

    /// The field the error is about, for the body's `param` (client errors only).
    pub fn param(&self) -> Option<String> {
        match self {
            RemoteError::TokenBoundary { item, .. } => Some(response_field(*item)),
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

    /// The same error with item indexes mapped through `place` (a request sent in parts names its items by
    /// their place in the whole).
    pub(crate) fn renumbered(self, place: impl Fn(usize) -> usize) -> RemoteError {
        match self {
            RemoteError::TokenBoundary {
                item,
                token,
                start,
                end,
                boundary,
            } => RemoteError::TokenBoundary {
                item: item.map(place),
                token,
                start,
                end,
                boundary,
            },
            RemoteError::InvalidRequest { field, message } => RemoteError::InvalidRequest {
                field: renumber_item(&field, &place),
                message,
            },
            RemoteError::Malformed { remote, message } => RemoteError::Malformed {
                remote,
                message: renumber_item(&message, &place),
            },
            other => other,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> RemoteError {
        RemoteError::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The field a token-boundary error is about: the item's response.
fn response_field(item: Option<usize>) -> String {
    match item {
        Some(i) => format!("items[{i}].response"),
        None => "response".into(),
    }
}

/// `items[K]…` with K mapped through `place`; anything else unchanged.
fn renumber_item(text: &str, place: &impl Fn(usize) -> usize) -> String {
    text.strip_prefix("items[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(k, tail)| Some(format!("items[{}]{tail}", place(k.parse().ok()?))))
        .unwrap_or_else(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_name_items_by_their_place_in_the_whole() {
        let e = RemoteError::invalid("items[1].prompt", "x").renumbered(|k| [4, 7][k]);
        assert_eq!(e.param().as_deref(), Some("items[7].prompt"));
        let e = RemoteError::invalid("temperature", "x").renumbered(|k| k + 1);
        assert_eq!(e.param().as_deref(), Some("temperature"));
    }

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
            item: Some(0),
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

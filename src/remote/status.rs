//! A remote policy's health record: when it last worked and when and how it last failed, for `/ready`,
//! plus the failure counter in metrics.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::error::RemoteError;
use super::settings::RemoteSettings;

/// Longest failure message kept.
const MAX_MESSAGE: usize = 200;

/// What `/ready` shows about a remote policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteStatus {
    pub name: String,
    pub provider: &'static str,
    pub base_url: String,
    pub model: String,
    /// Unix time (s) of the last call the upstream answered properly.
    pub last_success: Option<u64>,
    pub last_failure: Option<RemoteFailure>,
    /// Upstream calls in flight now (at most `max_concurrency`).
    pub in_flight: usize,
}

/// The last call that failed because of the upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteFailure {
    /// Unix time (s).
    pub at: u64,
    pub code: &'static str,
    pub message: String,
}

/// `base_url` without any `user:password@` in it, so a credential put there does not reach `/ready`.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<(Option<u64>, Option<RemoteFailure>)>,
}

impl Stats {
    /// Records an outcome: a client-side error (bad input, token boundary) still means the upstream
    /// answered, so it counts as a success of the upstream.
    pub fn record<T>(&self, name: &str, result: &Result<T, RemoteError>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => inner.0 = Some(now),
            Err(e) => {
                metrics::counter!("llama_scorer_remote_failures_total",
                    "remote" => name.to_string(), "kind" => e.kind())
                .increment(1);
                if e.http_status() < 500 {
                    inner.0 = Some(now);
                } else {
                    tracing::warn!(remote = %name, code = e.code(), error = %e, "remote scoring failed");
                    inner.1 = Some(RemoteFailure {
                        at: now,
                        code: e.code(),
                        message: e.to_string().chars().take(MAX_MESSAGE).collect(),
                    });
                }
            }
        }
    }

    pub fn status(
        &self,
        settings: &RemoteSettings,
        base_url: &str,
        in_flight: usize,
    ) -> RemoteStatus {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        RemoteStatus {
            name: settings.name.clone(),
            provider: settings.provider.name(),
            base_url: without_userinfo(base_url),
            model: settings.model.clone(),
            last_success: inner.0,
            last_failure: inner.1.clone(),
            in_flight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_userinfo;

    #[test]
    fn credentials_in_the_url_are_not_shown() {
        assert_eq!(without_userinfo("https://u:p@h:1/v1"), "https://h:1/v1");
        assert_eq!(without_userinfo("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(without_userinfo("http://h"), "http://h");
    }
}

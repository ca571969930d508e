//! One upstream POST with its retry policy, all inside the request's deadline: 429/503 wait
//! for `Retry-After`, connection errors and other 5xx back off exponentially with jitter, other 4xx are
//! final. Classifies every outcome into a [`RemoteError`] and counts it in metrics.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::affinity::AFFINITY_HEADER;
use super::error::RemoteError;
use super::settings::RemoteSettings;

/// First backoff step; doubled per retry, capped at [`MAX_BACKOFF`], then jittered to 50–100 %.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest piece of an upstream error body quoted in our messages.
const MAX_QUOTE: usize = 300;

/// What one attempt came to.
enum Attempt {
    Done(Value),
    /// Worth another try after `wait` (the upstream's `Retry-After`, or `None` = back off).
    Retry {
        error: RemoteError,
        wait: Option<Duration>,
    },
    Final(RemoteError),
}

/// Everything an upstream call needs from its scorer: the connection pool, the policy's settings and its
/// concurrency limit. A provider's scoring call posts through it.
pub struct Caller<'a> {
    pub(crate) client: &'a reqwest::Client,
    pub settings: &'a RemoteSettings,
    pub(crate) slots: &'a tokio::sync::Semaphore,
}

impl Caller<'_> {
    /// POSTs `body` to `url` and returns the parsed JSON answer of the first 2xx, retrying as the policy
    /// allows before `deadline`.
    pub async fn post(
        &self,
        url: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, RemoteError> {
        self.post_with_affinity(url, body, None, deadline).await
    }

    /// [`Caller::post`] with an [`AFFINITY_HEADER`] for balancers that keep one prompt's work together.
    pub async fn post_with_affinity(
        &self,
        url: &str,
        body: &Value,
        affinity: Option<&str>,
        deadline: Instant,
    ) -> Result<Value, RemoteError> {
        let name = &self.settings.name;
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return Err(self.timeout(started));
            };
            let permit = tokio::time::timeout(left, self.slots.acquire())
                .await
                .map_err(|_| self.timeout(started))?
                .map_err(|_| self.unreachable("the remote scorer is shut down"))?;
            let left = deadline.saturating_duration_since(Instant::now());
            attempts += 1;
            let outcome = self
                .attempt(
                    url,
                    body,
                    affinity,
                    left.min(self.settings.timeout),
                    deadline,
                    started,
                )
                .await;
            drop(permit);
            let (error, wait) = match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Final(e) => return Err(e),
                Attempt::Retry { error, wait } => (error, wait),
            };
            if attempts > self.settings.max_retries {
                return Err(exhausted(error, attempts));
            }
            let wait = wait.unwrap_or_else(|| backoff(attempts - 1));
            if Instant::now() + wait >= deadline {
                // The wait alone would pass the deadline: the last error is the answer.
                return Err(exhausted(error, attempts));
            }
            metrics::counter!("llama_scorer_remote_retries_total", "remote" => name.clone())
                .increment(1);
            tracing::debug!(remote = %name, attempt = attempts, ?wait, error = %error, "retrying upstream call");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        affinity: Option<&str>,
        timeout: Duration,
        deadline: Instant,
        started: Instant,
    ) -> Attempt {
        let name = &self.settings.name;
        let t0 = Instant::now();
        let mut request = self.client.post(url).timeout(timeout).json(body);
        if let Some(key) = affinity {
            request = request.header(AFFINITY_HEADER, key);
        }
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key.expose());
        }
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = retry_after(response.headers());
                match read_bounded(response, self.settings.max_answer_bytes).await {
                    Ok(Some(text)) => Ok((status, retry_after, text)),
                    Ok(None) => {
                        tracing::warn!(remote = %name, url = %url, limit = self.settings.max_answer_bytes, "upstream answer over max_answer_bytes");
                        return Attempt::Final(RemoteError::AnswerTooLarge {
                            remote: name.clone(),
                            limit: self.settings.max_answer_bytes,
                        });
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let label = match &result {
            Ok((status, ..)) => status.as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".into(),
            Err(_) => "error".into(),
        };
        metrics::counter!("llama_scorer_remote_calls_total", "remote" => name.clone(), "status" => label)
            .increment(1);
        metrics::histogram!("llama_scorer_remote_call_seconds", "remote" => name.clone())
            .record(t0.elapsed().as_secs_f64());
        match result {
            Ok((status, retry_after, text)) => self.classify(status, retry_after, &text),
            Err(e) if e.is_timeout() => {
                let error = self.timeout(started);
                if Instant::now() >= deadline {
                    Attempt::Final(error)
                } else {
                    Attempt::Retry { error, wait: None }
                }
            }
            Err(e) => {
                // The URL goes to the log only: clients are told the policy, never where it points.
                tracing::debug!(remote = %name, url = %url, error = %error_chain(&e), "upstream call failed");
                Attempt::Retry {
                    error: self.unreachable(&error_chain(&e.without_url())),
                    wait: None,
                }
            }
        }
    }

    fn classify(&self, status: StatusCode, retry_after: Option<Duration>, text: &str) -> Attempt {
        let remote = self.settings.name.clone();
        if status.is_success() {
            return match serde_json::from_str::<Value>(text) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Final(RemoteError::Malformed {
                    remote,
                    message: format!("not JSON ({e}): {}", self.quote(text)),
                }),
            };
        }
        if status.is_redirection() {
            return Attempt::Final(RemoteError::Redirected {
                remote,
                status: status.as_u16(),
            });
        }
        let message = self.upstream_message(text);
        match status.as_u16() {
            429 | 503 => Attempt::Retry {
                error: RemoteError::Overloaded {
                    remote,
                    status: status.as_u16(),
                    attempts: 0,
                    retry_after,
                },
                wait: retry_after,
            },
            401 | 403 => Attempt::Final(RemoteError::KeyRejected {
                remote,
                status: status.as_u16(),
            }),
            404 => Attempt::Final(RemoteError::UnknownModel {
                remote,
                model: self.settings.model.clone(),
                message,
            }),
            // 408: the upstream gave up waiting for our request — a transient fault, retried.
            408 => Attempt::Retry {
                error: RemoteError::Upstream {
                    remote,
                    status: 408,
                    message,
                },
                wait: None,
            },
            400..=499 => Attempt::Final(RemoteError::InvalidRequest {
                field: upstream_param(text).unwrap_or_else(|| "request".into()),
                message: format!("the upstream refused the request (HTTP {status}): {message}"),
            }),
            code => Attempt::Retry {
                error: RemoteError::Upstream {
                    remote,
                    status: code,
                    message,
                },
                wait: None,
            },
        }
    }

    fn timeout(&self, started: Instant) -> RemoteError {
        RemoteError::Timeout {
            remote: self.settings.name.clone(),
            waited: started.elapsed(),
        }
    }

    fn unreachable(&self, message: &str) -> RemoteError {
        RemoteError::Unreachable {
            remote: self.settings.name.clone(),
            message: self.scrub(message),
        }
    }

    /// The upstream's own error message (Fireworks/OpenAI `{"error": {"message"}}` and kin), else the
    /// start of the body.
    fn upstream_message(&self, text: &str) -> String {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let found = parsed.as_ref().and_then(|v| {
            [
                v.pointer("/error/message"),
                v.get("error"),
                v.get("message"),
                v.get("detail"),
            ]
            .into_iter()
            .flatten()
            .find_map(|m| m.as_str().map(str::to_string))
        });
        match found {
            Some(m) => self.quote(&m),
            None if text.trim().is_empty() => "(no body)".into(),
            None => self.quote(text),
        }
    }

    /// `text` cut to a readable length, with this server's key blanked should the upstream echo it.
    fn quote(&self, text: &str) -> String {
        let mut cut: String = text.chars().take(MAX_QUOTE).collect();
        if cut.len() < text.len() {
            cut.push('…');
        }
        self.scrub(&cut)
    }

    fn scrub(&self, text: &str) -> String {
        match &self.settings.api_key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "<redacted>"),
            _ => text.to_string(),
        }
    }
}

/// The answer's body as text, read chunk by chunk and given up (`None`) as soon as it passes `limit` bytes
/// (at once when its declared length already does).
async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<String>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

/// The last retryable error as the final answer, with the attempt count where it carries one.
fn exhausted(error: RemoteError, attempts: u32) -> RemoteError {
    match error {
        RemoteError::Overloaded {
            remote,
            status,
            retry_after,
            ..
        } => RemoteError::Overloaded {
            remote,
            status,
            attempts,
            retry_after,
        },
        other => other,
    }
}

/// The `param` of a Fireworks/OpenAI error body, prefixed so it reads as the upstream's field.
fn upstream_param(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.pointer("/error/param")?.as_str().map(str::to_string)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by inference APIs and is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Exponential backoff for retry `n` (0-based), with jitter so clients retrying together spread out.
fn backoff(n: u32) -> Duration {
    let full = BASE_BACKOFF
        .saturating_mul(1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * unit_random())
}

/// A number in [0, 1) from std's randomly keyed hasher (jitter needs no better randomness).
fn unit_random() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// An error with its causes (reqwest's top-level message alone hides "connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        for n in 0..20 {
            let b = backoff(n);
            let full = BASE_BACKOFF.saturating_mul(1 << n.min(16)).min(MAX_BACKOFF);
            assert!(b >= full / 2 && b <= full, "{n}: {b:?}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}

//! What defines a remote policy: which API to speak, where, as which model, with which key and limits.
//! Validated here so a bad remote is refused at load, not on the first request.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::providers::Provider;

/// An API key. Its `Debug` and `Display` never show it, so it cannot leak through logs, errors or
/// `/ready`; only [`ApiKey::expose`] gives it out, for the `Authorization` header.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One remote policy's settings.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// The policy name our clients use (labels metrics and messages).
    pub name: String,
    pub provider: Provider,
    /// API root without a trailing slash, e.g. `http://host:8080` (llama_scorer) or
    /// `http://host:8080/v1` (openai); `None` = the provider's default, where it has one.
    pub base_url: Option<String>,
    /// The model name sent upstream.
    pub model: String,
    /// Sent as `Authorization: Bearer`; `None` sends no header.
    pub api_key: Option<ApiKey>,
    /// Longest wait for one upstream attempt (the request's own deadline bounds it too).
    pub timeout: Duration,
    /// Retries after the first attempt (429/503, 5xx, connection errors); 4xx are never retried.
    pub max_retries: u32,
    /// Most upstream calls in flight at once for this policy.
    pub max_concurrency: usize,
    /// Largest upstream answer read, in bytes: reading stops at this bound (a 502), so a faulty or hostile
    /// upstream cannot make this server hold more than it per call in flight.
    pub max_answer_bytes: usize,
}

/// Default of [`RemoteSettings::max_answer_bytes`]: 64 MiB, far above any scoring answer of the request
/// limits.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 << 20;

impl RemoteSettings {
    /// Settings with the defaults: no key, 60 s per attempt, 3 retries, 16 calls in flight.
    pub fn new(name: impl Into<String>, provider: Provider, model: impl Into<String>) -> Self {
        RemoteSettings {
            name: name.into(),
            provider,
            base_url: None,
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            max_retries: 3,
            max_concurrency: 16,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// The API root to call, or why there is none.
    pub fn resolved_base_url(&self) -> Result<String, String> {
        let url = match (&self.base_url, self.provider.default_base_url()) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(default)) => default.to_string(),
            (None, None) => {
                return Err(format!("provider `{}` needs a `base_url`", self.provider));
            }
        };
        let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            return Err(format!(
                "base_url `{url}` must start with http:// or https://"
            ));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            // Said without the URL: it holds the credentials.
            return Err(
                "base_url must not carry credentials (`user:pass@host`): they would go out as Basic \
                 auth and show wherever the URL does; put the key in the environment variable named by \
                 `api_key_env`"
                    .into(),
            );
        }
        Ok(url)
    }

    /// Checks every field; the message names it.
    pub fn validate(&self) -> Result<(), String> {
        let at = |m: String| format!("remote policy `{}`: {m}", self.name);
        self.resolved_base_url().map_err(at)?;
        if self.model.trim().is_empty() {
            return Err(at("`model` is empty".into()));
        }
        if self.timeout.is_zero() {
            return Err(at("`timeout` must be positive".into()));
        }
        if self.max_concurrency == 0 {
            return Err(at("`max_concurrency` must be at least 1".into()));
        }
        if self.max_answer_bytes == 0 {
            return Err(at("`max_answer_bytes` must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::FIREWORKS_BASE_URL;

    fn provider(name: &str) -> Provider {
        Provider::named(name).expect("a registered provider")
    }

    #[test]
    fn the_key_never_prints() {
        let mut s = RemoteSettings::new("fw", provider("fireworks"), "m");
        s.api_key = Some(ApiKey::new("sk-very-secret"));
        let shown = format!("{s:?} {}", s.api_key.as_ref().unwrap());
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert_eq!(s.api_key.unwrap().expose(), "sk-very-secret");
    }

    #[test]
    fn base_urls_resolve_or_are_refused() {
        let fw = RemoteSettings::new("fw", provider("fireworks"), "m");
        assert_eq!(fw.resolved_base_url().unwrap(), FIREWORKS_BASE_URL);
        let oa = RemoteSettings::new("oa", provider("openai"), "m");
        assert!(oa.validate().unwrap_err().contains("base_url"));
        let mut ls = RemoteSettings::new("ls", provider("llama_scorer"), "m");
        ls.base_url = Some("http://h:1/".into());
        assert_eq!(ls.resolved_base_url().unwrap(), "http://h:1");
        ls.base_url = Some("h:1".into());
        assert!(ls.validate().is_err());
        for with_credentials in [
            "http://user:s3cret@h:1",
            "https://s3cret@h:1/v1",
            "http://u:s3cret@h",
        ] {
            ls.base_url = Some(with_credentials.into());
            let e = ls.validate().unwrap_err();
            assert!(e.contains("api_key_env") && !e.contains("s3cret"), "{e}");
        }
        // An `@` past the host is a path, not credentials.
        ls.base_url = Some("http://h:1/v1/a@b".into());
        assert!(ls.validate().is_ok());
        ls.base_url = Some("http://h:1".into());
        ls.max_concurrency = 0;
        assert!(ls.validate().unwrap_err().contains("max_concurrency"));
    }
}

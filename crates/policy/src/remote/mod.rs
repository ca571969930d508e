//! Remote policies: scoring through another server's API — another llama-scorer (native
//! `/v1/logprobs`, numbers passed through bit for bit) or a Fireworks/OpenAI completions endpoint (echo +
//! logprobs, exact only when a token edge falls at the prompt/response boundary). Beside the engine,
//! free of HTTP-framework types: the API layer maps [`RemoteError`] to statuses.

mod affinity;
mod boundary;
mod cache;
mod completions;
mod error;
mod native;
pub mod providers;
mod retry;
mod settings;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use affinity::{AFFINITY_HEADER, affinity_key};
pub use cache::RemoteCache;
pub use error::RemoteError;
pub use providers::{FIREWORKS_BASE_URL, Provider, RemoteProvider};
pub use retry::Caller;
pub use settings::{ApiKey, DEFAULT_MAX_ANSWER_BYTES, RemoteSettings};
pub use status::{RemoteFailure, RemoteStatus};

use serde_json::Value;

use crate::engine::{ItemInput, ScoreOptions};
use crate::report::ItemReport;
use status::Stats;

/// What to score remotely: the items and the options that apply to all of them (the same types the
/// local engine takes, so a policy's caller need not care where it runs).
#[derive(Debug, Clone)]
pub struct RemoteScoreRequest {
    /// The items, in the order their scores come back.
    pub items: Vec<ItemInput>,
    /// `temperature` is the policy's (or the request's); `echo` and `score_end_of_turn` work through
    /// `llama_scorer` only (the completions providers answer them with `InvalidRequest`).
    pub options: ScoreOptions,
}

/// The answer, one entry per item in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteScored {
    pub items: Vec<ItemReport>,
}

/// A client of one remote policy: holds the HTTP connection pool, the concurrency limit and the health
/// record shown on `/ready`.
pub struct RemoteScorer {
    settings: RemoteSettings,
    base_url: String,
    client: reqwest::Client,
    slots: tokio::sync::Semaphore,
    stats: Stats,
    cache: Option<Arc<RemoteCache>>,
    /// Provider, URL and model: the cache's name for this upstream.
    upstream: Arc<str>,
}

impl std::fmt::Debug for RemoteScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteScorer")
            .field("settings", &self.settings)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl RemoteScorer {
    /// Validates `settings` and builds the client (TLS roots from the platform store).
    pub fn new(settings: RemoteSettings) -> Result<RemoteScorer, String> {
        settings.validate()?;
        let base_url = settings.resolved_base_url()?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("llama-scorer/", env!("CARGO_PKG_VERSION")))
            // A redirect would re-send the body and key wherever it points: answered 502 instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("remote policy `{}`: HTTP client: {e}", settings.name))?;
        Ok(RemoteScorer {
            slots: tokio::sync::Semaphore::new(settings.max_concurrency),
            stats: Stats::default(),
            cache: None,
            upstream: cache::upstream_id(&settings, &base_url),
            settings,
            base_url,
            client,
        })
    }

    /// The same scorer, keeping its answers in `cache` (shared by every remote policy of a process).
    pub fn with_cache(mut self, cache: Option<Arc<RemoteCache>>) -> RemoteScorer {
        self.cache = cache;
        self
    }

    /// The settings this scorer was built from.
    pub fn settings(&self) -> &RemoteSettings {
        &self.settings
    }

    /// Scores every item of `req` before `deadline`, or says why not (the first failing item's error;
    /// nothing partial is returned). Items found in the cache are not sent again.
    pub async fn score(
        &self,
        req: &RemoteScoreRequest,
        deadline: Instant,
    ) -> Result<RemoteScored, RemoteError> {
        let Some(cache) = &self.cache else {
            return self.call(req, deadline).await;
        };
        let keys: Vec<_> = req
            .items
            .iter()
            .map(|item| cache::RemoteKey::new(&self.upstream, item, &req.options))
            .collect();
        let mut found = Vec::with_capacity(keys.len());
        for key in &keys {
            found.push(cache.get(key).await);
        }
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let sub = RemoteScoreRequest {
                items: missing.iter().map(|&i| req.items[i].clone()).collect(),
                options: req.options,
            };
            let fresh = self.call(&sub, deadline).await.map_err(|e| {
                // Errors name items by their place in the request the client sent.
                e.renumbered(|k| missing[k])
            })?;
            for (&i, report) in missing.iter().zip(fresh.items) {
                cache.insert(keys[i].clone(), &report).await;
                found[i] = Some(report);
            }
        }
        Ok(RemoteScored {
            items: found
                .into_iter()
                .map(|r| r.expect("every item was found or scored"))
                .collect(),
        })
    }

    /// One upstream scoring call for every item of `req`, recorded for `/ready`.
    async fn call(
        &self,
        req: &RemoteScoreRequest,
        deadline: Instant,
    ) -> Result<RemoteScored, RemoteError> {
        let caller = Caller {
            client: &self.client,
            settings: &self.settings,
            slots: &self.slots,
        };
        let result = self
            .settings
            .provider
            .score(&caller, &self.base_url, req, deadline)
            .await;
        self.stats.record(&self.settings.name, &result);
        result
    }

    /// Forwards an OpenAI/Fireworks-shaped request (`endpoint` = `completions` or `chat/completions`) to
    /// the upstream as the remote model, and returns its answer under the policy's own name: for clients
    /// of the compatibility endpoints a remote policy behaves like a local one.
    pub async fn forward(
        &self,
        endpoint: &str,
        mut body: Value,
        deadline: Instant,
    ) -> Result<Value, RemoteError> {
        body["model"] = Value::String(self.settings.model.clone());
        let url = self.settings.provider.forward_url(&self.base_url, endpoint);
        let caller = Caller {
            client: &self.client,
            settings: &self.settings,
            slots: &self.slots,
        };
        let result = caller.post(&url, &body, deadline).await.and_then(|mut v| {
            if !v.is_object() {
                return Err(RemoteError::Malformed {
                    remote: self.settings.name.clone(),
                    message: "the answer is not a JSON object".into(),
                });
            }
            v["model"] = Value::String(self.settings.name.clone());
            Ok(v)
        });
        self.stats.record(&self.settings.name, &result);
        result
    }

    /// Health for `/ready`: the last success and the last upstream failure (never the key).
    pub fn status(&self) -> RemoteStatus {
        let in_flight = self.settings.max_concurrency - self.slots.available_permits();
        self.stats.status(&self.settings, &self.base_url, in_flight)
    }
}

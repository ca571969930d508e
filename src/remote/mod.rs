//! Remote policies (issue 11): scoring through another server's API — another llama-scorer (native
//! `/v1/logprobs`, numbers passed through bit for bit) or a Fireworks/OpenAI completions endpoint (echo +
//! logprobs, exact only when a token edge falls at the prompt/response boundary). Beside the engine,
//! free of HTTP-framework types: the API layer maps [`RemoteError`] to statuses.

mod boundary;
mod error;
mod fireworks;
mod native;
mod retry;
mod settings;
mod status;

use std::time::{Duration, Instant};

use serde_json::Value;

pub use error::RemoteError;
pub use settings::{ApiKey, FIREWORKS_BASE_URL, Provider, RemoteSettings};
pub use status::{RemoteFailure, RemoteStatus};

use crate::engine::{ItemInput, ScoreOptions};
use retry::Caller;
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
    pub items: Vec<RemoteItemScore>,
}

/// The scores of one item, as the upstream gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteItemScore {
    /// log π(response | prompt) at temperature 1: the upstream's own total (llama_scorer), or the f64
    /// sum of the response tokens' log-probs in order (completions providers).
    pub logprob: f64,
    /// The same at the request's temperature, only where the upstream computes it; never the T = 1
    /// value relabelled.
    pub sampling_logprob: Option<f64>,
    /// Sum over echoed prompt tokens (llama_scorer with `echo` only).
    pub prompt_logprob: Option<f64>,
    pub prompt_tokens: usize,
    pub response_tokens: usize,
    /// Tokens whose log-probs make up `logprob`.
    pub scored_tokens: usize,
    /// Per-token detail: the response's tokens (and the echoed prompt's, llama_scorer with `echo`).
    pub tokens: Vec<RemoteToken>,
    /// The upstream's item object verbatim (llama_scorer only), to pass on unchanged.
    pub raw: Option<Value>,
}

/// One token's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteToken {
    pub token: String,
    /// Known when the upstream reports ids.
    pub token_id: Option<i64>,
    /// Exact bytes, when known (not for a token holding part of a UTF-8 character on a completions API).
    pub bytes: Option<Vec<u8>>,
    /// Byte offset of the token in the response (llama_scorer: as the upstream reports it).
    pub text_offset: usize,
    /// `None` only for an echoed first token, which has no context.
    pub logprob: Option<f64>,
    pub sampling_logprob: Option<f64>,
    /// The most likely alternatives, most likely first.
    pub top_logprobs: Vec<RemoteTop>,
}

/// One alternative at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteTop {
    pub token: String,
    pub token_id: Option<i64>,
    pub bytes: Option<Vec<u8>>,
    pub logprob: f64,
    pub sampling_logprob: Option<f64>,
}

/// A client of one remote policy: holds the HTTP connection pool, the concurrency limit and the health
/// record shown on `/ready`.
pub struct RemoteScorer {
    settings: RemoteSettings,
    base_url: String,
    client: reqwest::Client,
    slots: tokio::sync::Semaphore,
    stats: Stats,
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
            .build()
            .map_err(|e| format!("remote policy `{}`: HTTP client: {e}", settings.name))?;
        Ok(RemoteScorer {
            slots: tokio::sync::Semaphore::new(settings.max_concurrency),
            stats: Stats::default(),
            settings,
            base_url,
            client,
        })
    }

    /// The settings this scorer was built from.
    pub fn settings(&self) -> &RemoteSettings {
        &self.settings
    }

    /// Scores every item of `req` before `deadline`, or says why not (the first failing item's error;
    /// nothing partial is returned).
    pub async fn score(
        &self,
        req: &RemoteScoreRequest,
        deadline: Instant,
    ) -> Result<RemoteScored, RemoteError> {
        let caller = Caller {
            client: &self.client,
            settings: &self.settings,
            slots: &self.slots,
        };
        let result = match self.settings.provider {
            Provider::LlamaScorer => native::score(&caller, &self.base_url, req, deadline).await,
            Provider::Fireworks | Provider::Openai => {
                fireworks::score(&caller, &self.base_url, req, deadline).await
            }
        };
        self.stats.record(&self.settings.name, &result);
        result
    }

    /// Health for `/ready`: the last success and the last upstream failure (never the key).
    pub fn status(&self) -> RemoteStatus {
        let in_flight = self.settings.max_concurrency - self.slots.available_permits();
        self.stats.status(&self.settings, &self.base_url, in_flight)
    }
}

//! Every policy this process answers for — local (a GGUF on this box's llama.cpp) or remote (another
//! server's API) — behind one interface, so the HTTP handlers and the batch command score through it
//! without branching on where a policy runs. Free of HTTP-framework types.

pub mod completion;
mod prepare;
mod remote_policy;
mod together;
mod tokenizer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use prepare::prepare_where_cheapest;
pub use remote_policy::{RemotePolicy, RemotePolicySettings};
pub use together::{score_each_together, score_together};
pub use tokenizer::{Tokenizer, TokenizerInfo};

use crate::engine::{
    CacheSettings, Engine, EngineSettings, ItemInput, Policy, PolicySettings, PreparedItem,
    ScoreError, ScoreOptions,
};
use crate::remote::{RemoteCache, RemoteError};
use crate::report::ItemReport;
use crate::request_budget::{answer_entries, check_answer_entries};

/// What a front end (the server, the batch command) serves: the engine's settings with the local
/// policies, the remote policies, and every policy's name in the configuration's order.
#[derive(Debug, Clone)]
pub struct ServedSettings {
    pub engine: EngineSettings,
    pub remotes: Vec<RemotePolicySettings>,
    /// Every policy's name, in the configuration's order (how `/v1/models` and `score` list them).
    pub order: Vec<String>,
}

impl ServedSettings {
    /// Every policy over a started `engine` (the remote ones' answers share one cache sized like the
    /// engine's), in the configuration's order.
    pub fn policies(&self, engine: &Engine) -> Result<Policies, String> {
        Policies::new(engine, self.remotes.clone(), self.engine.cache, &self.order)
    }

    /// The policies configured exactly like `base` apart from their names (same model or remote model,
    /// chat template, system prompt and temperature): their numbers must equal the base's, bit for bit.
    pub fn configured_like(&self, base: &str) -> Vec<String> {
        let local = |p: &PolicySettings| {
            (
                p.model_path.clone(),
                p.chat_template.clone(),
                p.system_prompt.clone(),
                p.temperature.to_bits(),
                p.n_ctx,
            )
        };
        let remote = |r: &RemotePolicySettings| {
            (
                r.remote.provider,
                r.remote.resolved_base_url().ok(),
                r.remote.model.clone(),
                r.chat_template.clone(),
                r.system_prompt.clone(),
                r.temperature.to_bits(),
            )
        };
        let locals = &self.engine.policies;
        if let Some(b) = locals.iter().find(|p| p.name == base) {
            let key = local(b);
            return locals
                .iter()
                .filter(|p| p.name != base && local(p) == key)
                .map(|p| p.name.clone())
                .collect();
        }
        if let Some(b) = self.remotes.iter().find(|r| r.remote.name == base) {
            let key = remote(b);
            return self
                .remotes
                .iter()
                .filter(|r| r.remote.name != base && remote(r) == key)
                .map(|r| r.remote.name.clone())
                .collect();
        }
        Vec::new()
    }
}

/// One served policy, wherever it runs.
#[derive(Clone)]
pub enum ServedPolicy {
    /// Scored by this process's engine.
    Local(Arc<Policy>),
    /// Scored through another server's API.
    Remote(Arc<RemotePolicy>),
}

/// Why a served policy could not score: the engine's reason or the remote's (each maps to one status).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Local(#[from] ScoreError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// What a scoring call is asked: the items, the options for all of them, and its limits.
#[derive(Clone)]
pub struct ScoreRequest {
    pub items: Vec<ItemInput>,
    pub options: ScoreOptions,
    /// Name errors `items[i]…` (a batch) rather than by the bare field (one inline item).
    pub batch: bool,
    /// When the caller stops waiting (remote calls and their retries stay within it).
    pub deadline: Instant,
    /// Size of the request body, which decides where tokenization runs (see [`prepare_where_cheapest`]).
    pub body_bytes: usize,
}

/// The answer: one report per item, in order, and how long each stage took (for `Server-Timing`).
pub struct Scores {
    pub items: Vec<ItemReport>,
    pub stages: Vec<(&'static str, Duration)>,
}

impl ServedPolicy {
    /// The name clients use in `model`.
    pub fn name(&self) -> &str {
        match self {
            ServedPolicy::Local(p) => &p.name,
            ServedPolicy::Remote(p) => &p.name,
        }
    }

    /// Default temperature for `sampling_logprob`.
    pub fn temperature(&self) -> f64 {
        match self {
            ServedPolicy::Local(p) => p.temperature,
            ServedPolicy::Remote(p) => p.temperature,
        }
    }

    /// The context length in tokens; `None` for a remote policy (the upstream's business, not known here).
    pub fn context_length(&self) -> Option<usize> {
        match self {
            ServedPolicy::Local(p) => Some(p.n_ctx),
            ServedPolicy::Remote(_) => None,
        }
    }

    /// What defines the numbers (OpenAI's `system_fingerprint`); `None` for a remote policy, whose build
    /// is not known here.
    pub fn system_fingerprint(&self) -> Option<&str> {
        match self {
            ServedPolicy::Local(p) => Some(p.system_fingerprint()),
            ServedPolicy::Remote(_) => None,
        }
    }

    /// Whether `messages` prompts can be scored.
    pub fn supports_chat(&self) -> bool {
        match self {
            ServedPolicy::Local(p) => p.supports_chat(),
            ServedPolicy::Remote(p) => p.supports_chat(),
        }
    }

    /// Scores every item, or returns the first failure (nothing partial).
    pub async fn score(&self, req: ScoreRequest) -> Result<Scores, ServeError> {
        match self {
            ServedPolicy::Local(policy) => Ok(score_local(policy, req).await?),
            ServedPolicy::Remote(policy) => {
                let started = Instant::now();
                let batch = req.batch;
                let items = policy
                    .score(req.items, &req.options, req.deadline)
                    .await
                    .map_err(|e| if batch { e } else { inline(e) })?;
                Ok(Scores {
                    items,
                    stages: vec![("upstream", started.elapsed())],
                })
            }
        }
    }

    /// Scores every item, each to its own result: a failing item does not take the others with it (the
    /// batch command writes one line per item). Items are scored together, and one by one only when the
    /// batch fails.
    pub async fn score_each(
        &self,
        items: Vec<ItemInput>,
        options: &ScoreOptions,
        deadline: Instant,
    ) -> Vec<Result<ItemReport, ServeError>> {
        match self {
            ServedPolicy::Local(policy) => score_each_local(policy, &items, options).await,
            ServedPolicy::Remote(policy) => {
                let n = items.len();
                match policy.score(items.clone(), options, deadline).await {
                    Ok(reports) => reports.into_iter().map(Ok).collect(),
                    Err(e) if n == 1 => vec![Err(inline(e).into())],
                    Err(_) => {
                        let mut out = Vec::with_capacity(n);
                        for item in items {
                            let one = policy.score(vec![item], options, deadline).await;
                            out.push(one.map(|mut r| r.remove(0)).map_err(|e| inline(e).into()));
                        }
                        out
                    }
                }
            }
        }
    }
}

/// Local [`ServedPolicy::score_each`]: items that cannot be prepared fail alone; the rest are scored as
/// one batch, or one by one if the batch fails at run time.
async fn score_each_local(
    policy: &Arc<Policy>,
    items: &[ItemInput],
    options: &ScoreOptions,
) -> Vec<Result<ItemReport, ServeError>> {
    let prepared: Vec<Result<Arc<PreparedItem>, ScoreError>> = items
        .iter()
        .map(|item| policy.prepare(item, options).map(Arc::new))
        .collect();
    let good: Vec<Arc<PreparedItem>> = prepared.iter().filter_map(|r| r.clone().ok()).collect();
    let mut scored = match policy.score(good.clone(), options).await {
        _ if good.is_empty() => Vec::new(),
        Ok(all) => all.into_iter().map(Ok).collect(),
        Err(e) if good.len() <= 1 => vec![Err(e)],
        Err(_) => {
            let mut one_by_one = Vec::with_capacity(good.len());
            for item in &good {
                let one = policy.score(vec![item.clone()], options).await;
                one_by_one.push(one.map(|mut v| v.remove(0)));
            }
            one_by_one
        }
    }
    .into_iter();
    let vocab = &policy.model.vocab;
    prepared
        .into_iter()
        .map(|p| {
            let item = p?;
            let s = scored.next().expect("one score per prepared item")?;
            Ok(ItemReport::local(
                &item,
                &s.score,
                s.cached,
                options,
                vocab,
                policy.system_fingerprint(),
            ))
        })
        .collect()
}

/// A one-item request names the bare field, not `items[0].field`.
fn inline(e: RemoteError) -> RemoteError {
    match e {
        RemoteError::TokenBoundary {
            token,
            start,
            end,
            boundary,
            ..
        } => RemoteError::TokenBoundary {
            item: None,
            token,
            start,
            end,
            boundary,
        },
        RemoteError::InvalidRequest { field, message } => RemoteError::InvalidRequest {
            field: field
                .strip_prefix("items[0].")
                .map_or(field.clone(), str::to_string),
            message,
        },
        other => other,
    }
}

/// Tokenizes (where cheapest), queues on the policy's model and reports each item.
async fn score_local(policy: &Arc<Policy>, req: ScoreRequest) -> Result<Scores, ScoreError> {
    let ScoreRequest {
        items,
        options,
        batch,
        body_bytes,
        deadline,
    } = req;
    let p = policy.clone();
    let tokenize_started = Instant::now();
    let opts = options;
    let prepared: Vec<Arc<PreparedItem>> = prepare_where_cheapest(body_bytes, move || {
        prepare_items(&p, &items, &opts, batch, deadline)
    })
    .await?;
    let tokenize = tokenize_started.elapsed();
    let scored = policy.score(prepared.clone(), &options).await?;
    let queue = scored
        .iter()
        .map(|s| s.times.queue)
        .max()
        .unwrap_or_default();
    let compute = scored.iter().map(|s| s.times.compute).sum();
    let vocab = &policy.model.vocab;
    let items = prepared
        .iter()
        .zip(&scored)
        .map(|(item, s)| {
            ItemReport::local(
                item,
                &s.score,
                s.cached,
                &options,
                vocab,
                policy.system_fingerprint(),
            )
        })
        .collect();
    Ok(Scores {
        items,
        stages: vec![
            ("tokenize", tokenize),
            ("queue", queue),
            ("compute", compute),
        ],
    })
}

/// Tokenizes a request's items for `policy`, naming a failing one `items[i]…` in a batch.
fn prepare_items(
    policy: &Policy,
    items: &[ItemInput],
    options: &ScoreOptions,
    batch: bool,
    deadline: Instant,
) -> Result<Vec<Arc<PreparedItem>>, ScoreError> {
    let prepared = items
        .iter()
        .enumerate()
        .map(|(i, input)| {
            if Instant::now() > deadline {
                return Err(ScoreError::Unavailable(
                    "the request's deadline passed while its items were being prepared".into(),
                ));
            }
            policy.prepare(input, options).map(Arc::new).map_err(|e| {
                if batch {
                    e.within(&format!("items[{i}]"))
                } else {
                    e
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_answer_size(&prepared, options)?;
    Ok(prepared)
}

/// Refuses items whose answer would report more entries than the request budget allows (see
/// [`crate::request_budget::check_answer_entries`]), before they are queued.
fn check_answer_size(
    items: &[Arc<PreparedItem>],
    options: &ScoreOptions,
) -> Result<(), ScoreError> {
    let reported: usize = items
        .iter()
        .map(|item| {
            let shown = if options.echo {
                item.tokens.len()
            } else {
                item.tokens.len() - item.prompt_len
            };
            shown + usize::from(item.end_of_turn.is_some())
        })
        .sum();
    let too_many_tokens = check_answer_entries(answer_entries(reported, 0)).is_err();
    check_answer_entries(answer_entries(reported, options.top_logprobs)).map_err(|m| {
        let field = if too_many_tokens {
            "items"
        } else {
            "top_logprobs"
        };
        ScoreError::invalid(field, m)
    })
}

/// Every served policy by name, in configuration order.
pub struct Policies {
    list: Vec<ServedPolicy>,
    by_name: HashMap<String, usize>,
    remote_cache: Option<Arc<RemoteCache>>,
}

impl Policies {
    /// The engine's local policies and the remote ones, listed in `order` (the configuration's; names not
    /// in it follow in their own order). Remote answers share one cache sized like the local one.
    pub fn new(
        engine: &Engine,
        remotes: Vec<RemotePolicySettings>,
        cache: CacheSettings,
        order: &[String],
    ) -> Result<Policies, String> {
        let remote_cache = RemoteCache::new(cache).map(Arc::new);
        let mut all: Vec<ServedPolicy> = engine
            .policies()
            .iter()
            .cloned()
            .map(ServedPolicy::Local)
            .collect();
        for r in remotes {
            all.push(ServedPolicy::Remote(Arc::new(RemotePolicy::new(
                r,
                remote_cache.clone(),
            )?)));
        }
        let rank = |p: &ServedPolicy| {
            order
                .iter()
                .position(|n| n == p.name())
                .unwrap_or(usize::MAX)
        };
        all.sort_by_key(rank);
        let mut by_name = HashMap::new();
        for (i, p) in all.iter().enumerate() {
            if by_name.insert(p.name().to_string(), i).is_some() {
                return Err(format!("policies.{}: defined twice", p.name()));
            }
        }
        Ok(Policies {
            list: all,
            by_name,
            remote_cache,
        })
    }

    /// The policy named `name`, if served.
    pub fn get(&self, name: &str) -> Option<&ServedPolicy> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    /// All policies, in configuration order.
    pub fn all(&self) -> &[ServedPolicy] {
        &self.list
    }

    /// The remote policies.
    pub fn remotes(&self) -> impl Iterator<Item = &Arc<RemotePolicy>> {
        self.list.iter().filter_map(|p| match p {
            ServedPolicy::Remote(r) => Some(r),
            ServedPolicy::Local(_) => None,
        })
    }

    /// Remote-cache counters, when the cache is on.
    pub async fn remote_cache_stats(&self) -> Option<crate::engine::cache::CacheStats> {
        match &self.remote_cache {
            Some(c) => Some(c.stats().await),
            None => None,
        }
    }
}

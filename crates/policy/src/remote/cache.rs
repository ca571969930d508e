//! The response cache for remote answers: one item's scores by everything sent upstream for it (provider,
//! URL, remote model, the item exactly as sent, and the options), bounded in bytes like the local cache.
//! A hit returns the very report an earlier call produced, so its numbers are the same bits.

use std::sync::Arc;

use super::native;
use super::settings::RemoteSettings;
use crate::engine::cache::{CacheStats, CountedCache};
use crate::engine::{CacheSettings, ItemInput, ScoreOptions};
use crate::report::ItemReport;

/// Everything that determines a remote item's answer (opaque outside this module).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteKey {
    /// Provider, resolved base URL and remote model.
    upstream: Arc<str>,
    /// The item in the native wire form, serialized (the rendered prompt text for completions providers).
    item: String,
    top_logprobs: usize,
    echo: bool,
    score_end_of_turn: bool,
    temperature_bits: u64,
}

impl RemoteKey {
    /// The key of `item` sent to `upstream` (see [`upstream_id`]) with `options`.
    pub fn new(upstream: &Arc<str>, item: &ItemInput, options: &ScoreOptions) -> RemoteKey {
        RemoteKey {
            upstream: upstream.clone(),
            item: native::item(item).to_string(),
            top_logprobs: options.top_logprobs,
            echo: options.echo,
            score_end_of_turn: options.score_end_of_turn,
            temperature_bits: options.temperature.to_bits(),
        }
    }

    fn weight(&self) -> usize {
        std::mem::size_of::<RemoteKey>() + self.item.len()
    }
}

/// The part of the key that names the upstream: provider, URL and model (not the policy's name, so two
/// policies calling the same remote model share entries; not the key, which does not change numbers).
pub(crate) fn upstream_id(settings: &RemoteSettings, base_url: &str) -> Arc<str> {
    format!(
        "{}\u{0}{base_url}\u{0}{}",
        settings.provider, settings.model
    )
    .into()
}

/// Remote answers shared by every remote policy of a process (the engine's kind of counted cache).
pub struct RemoteCache(CountedCache<RemoteKey, Arc<ItemReport>>);

impl RemoteCache {
    /// A cache for `settings`, or `None` when its budget is 0.
    pub fn new(settings: CacheSettings) -> Option<RemoteCache> {
        CountedCache::with_weigher(settings, |k: &RemoteKey, v: &Arc<ItemReport>| {
            k.weight() + v.approx_bytes()
        })
        .map(RemoteCache)
    }

    /// The cached report, marked `cached`, if any (counted as a hit or a miss).
    pub(crate) async fn get(&self, key: &RemoteKey) -> Option<ItemReport> {
        let Some(found) = self.0.lookup(key).await else {
            self.0.count_miss();
            return None;
        };
        self.0.count_hit();
        let mut report = (*found).clone();
        report.cached = true;
        Some(report)
    }

    /// Keeps a fresh answer.
    pub(crate) async fn insert(&self, key: RemoteKey, report: &ItemReport) {
        self.0.store(key, Arc::new(report.clone())).await;
    }

    /// Counters and size, for `/ready` and `/metrics`.
    pub async fn stats(&self) -> CacheStats {
        self.0.stats().await
    }
}

//! The response cache: scored items by everything that changes their numbers, bounded in bytes.
//!
//! The key is the model file's identity (path, size, modification time, inode — not the path alone), the
//! decode chunk size, the exact token sequence with its prompt/response split, the end-of-turn token and
//! the options (echo, top-k, temperature bits); the policy's name is not part of it, so policies that
//! differ only by name share entries. A hit returns the very `ItemScore` a miss computed, so its numbers
//! are the same bits. Identical requests in flight at the same time compute once (moka coalesces them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::ScoreError;
use super::schedule::JobOptions;
use super::types::{ItemScore, PreparedItem};
use super::vocab::TokenId;

/// Identity of a loaded model file (and of the decode settings that shape its numbers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelIdentity {
    pub path: Arc<str>,
    pub size: u64,
    pub modified_ns: u128,
    pub inode: u64,
    pub decode_chunk: u32,
}

impl ModelIdentity {
    /// Reads the identity of the file at `path` (already canonical) for a given decode chunk size.
    pub fn of(path: &std::path::Path, decode_chunk: u32) -> std::io::Result<ModelIdentity> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(ModelIdentity {
            path: path.to_string_lossy().into(),
            size: meta.len(),
            modified_ns: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos()),
            inode,
            decode_chunk,
        })
    }
}

/// Everything that determines an item's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScoreKey {
    model: Arc<ModelIdentity>,
    tokens: Arc<[TokenId]>,
    prompt_len: usize,
    end_of_turn: Option<TokenId>,
    echo: bool,
    top_logprobs: usize,
    temperature_bits: u64,
}

impl ScoreKey {
    /// The key of one item: everything that changes its numbers, and nothing that does not (not the
    /// policy's name, so policies that differ only by name share entries).
    pub fn new(model: &Arc<ModelIdentity>, item: &PreparedItem, options: &JobOptions) -> ScoreKey {
        ScoreKey {
            model: model.clone(),
            tokens: item.tokens.as_slice().into(),
            prompt_len: item.prompt_len,
            end_of_turn: item.end_of_turn,
            echo: options.rows.echo,
            top_logprobs: options.rows.top_logprobs,
            temperature_bits: options.temperature.to_bits(),
        }
    }

    /// Approximate bytes held by the key.
    fn weight(&self) -> usize {
        std::mem::size_of::<ScoreKey>() + self.tokens.len() * std::mem::size_of::<TokenId>()
    }
}

/// Approximate bytes held by a scored item.
fn weight(score: &ItemScore) -> usize {
    let tokens = score
        .prompt
        .iter()
        .chain(&score.response)
        .chain(&score.end_of_turn);
    tokens
        .map(|t| 48 + t.top.len() * std::mem::size_of::<super::types::TopEntry>())
        .sum::<usize>()
        + std::mem::size_of::<ItemScore>()
}

/// Cache settings (from the config's `cache:` section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheSettings {
    /// Byte budget; 0 disables the cache.
    pub max_bytes: u64,
    /// Entries expire this long after they were computed.
    pub ttl: Option<Duration>,
}

/// A cache bounded to `settings.max_bytes` as `weigh` counts bytes, its entries expiring after
/// `settings.ttl`, with the hit and miss counters `/ready` and `/metrics` report: the local response cache
/// ([`ScoreCache`]) and the remote answers' one are both of this kind.
pub struct CountedCache<K, V> {
    pub(crate) entries: moka::future::Cache<K, V>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counters for `/ready` and `/metrics`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
}

impl<K, V> CountedCache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache for `settings` weighing entries by `weigh`, or `None` when its budget is 0.
    pub fn with_weigher(
        settings: CacheSettings,
        weigh: impl Fn(&K, &V) -> usize + Send + Sync + 'static,
    ) -> Option<Self> {
        if settings.max_bytes == 0 {
            return None;
        }
        let mut builder = moka::future::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |k: &K, v: &V| u32::try_from(weigh(k, v)).unwrap_or(u32::MAX));
        if let Some(ttl) = settings.ttl {
            builder = builder.time_to_live(ttl);
        }
        Some(CountedCache {
            entries: builder.build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Counts a lookup that found its entry.
    pub fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lookup that did not.
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters and size (pending evictions applied first, so sizes are current).
    pub async fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks().await;
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
        }
    }
}

/// The local response cache.
pub type ScoreCache = CountedCache<ScoreKey, Arc<ItemScore>>;

impl ScoreCache {
    /// A cache for `settings`, or `None` when its budget is 0.
    pub fn new(settings: CacheSettings) -> Option<ScoreCache> {
        CountedCache::with_weigher(settings, |k: &ScoreKey, v: &Arc<ItemScore>| {
            k.weight() + weight(v)
        })
    }

    /// The cached score, if any (counted as a hit; a miss is counted where it is computed).
    pub async fn get(&self, key: &ScoreKey) -> Option<Arc<ItemScore>> {
        let found = self.entries.get(key).await;
        if found.is_some() {
            self.count_hit();
        }
        found
    }

    /// The score for `key`: computed by `compute` unless another request is computing (or has computed)
    /// it, in which case that result is shared. Returns the score and whether it came from elsewhere.
    pub async fn get_or_compute(
        &self,
        key: ScoreKey,
        compute: impl Future<Output = Result<ItemScore, ScoreError>>,
    ) -> Result<(Arc<ItemScore>, bool), ScoreError> {
        let entry = self
            .entries
            .entry(key)
            .or_try_insert_with(async { compute.await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())?;
        let shared = !entry.is_fresh();
        if shared {
            self.count_hit();
        } else {
            self.count_miss();
        }
        Ok((entry.into_value(), shared))
    }

    /// Stores a score computed outside [`ScoreCache::get_or_compute`] (one decode that served several
    /// temperatures), counted as the miss it was.
    pub async fn insert(&self, key: ScoreKey, score: Arc<ItemScore>) {
        self.count_miss();
        self.entries.insert(key, score).await;
    }
}

//! The prefix cache (sized by `prefix_cache_bytes`; its counters are `/ready`'s `prefix_reuse`): a prompt's KV
//! state and its last logits row, kept after the prompt is decoded, so that further responses to the *same whole
//! prompt* (in one batch or across requests) skip the prompt's decode. A prompt that merely starts with a
//! saved one does not match: the store is keyed by the exact prompt tokens.
//!
//! It is bit-identical to decoding the prompt again: the decode schedule already decodes the prompt alone
//! before the response, restoring the saved sequence into the emptied context puts the same KV bytes in the
//! same cells, and the saved row is the one that decode produced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use llama_cpp_2::context::session::SeqState;

use super::vocab::TokenId;

/// Prompts shorter than this are decoded again rather than stored (the copy would cost about as much).
pub const MIN_PREFIX_TOKENS: usize = 16;

/// A decoded prompt: its sequence state and the logits at its last position.
pub struct PrefixState {
    pub kv: SeqState,
    pub last_row: Vec<f32>,
}

/// The prefixes of one model, bounded in bytes.
pub struct PrefixStore {
    entries: moka::sync::Cache<Arc<[TokenId]>, Arc<PrefixState>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counters for `/ready`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PrefixStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
}

impl PrefixStore {
    /// A store with a budget of `max_bytes`, or `None` when it is 0.
    pub fn new(max_bytes: u64) -> Option<PrefixStore> {
        (max_bytes > 0).then(|| PrefixStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &Arc<[TokenId]>, v: &Arc<PrefixState>| {
                    let bytes = k.len() * 4 + v.kv.byte_len() + v.last_row.len() * 4;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The saved state of exactly this prompt, if any.
    pub fn get(&self, prompt: &[TokenId]) -> Option<Arc<PrefixState>> {
        let found = self.entries.get(prompt);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps a prompt's state for later responses to it (moka evicts entries to stay within the byte budget).
    pub fn insert(&self, prompt: &[TokenId], state: PrefixState) {
        self.entries.insert(prompt.into(), Arc::new(state));
    }

    /// Hit/miss counters and size for `/ready` and `/metrics`.
    pub fn stats(&self) -> PrefixStats {
        self.entries.run_pending_tasks();
        PrefixStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
        }
    }
}

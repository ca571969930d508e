//! What a model's inference threads are doing now, for the gauges that balancers and inference gateways read
//! (`llama_scorer_requests_running`, `llama_scorer_kv_cache_utilization`) and the `endpoint-load-metrics`
//! header. Plain atomics, updated by the inference threads when a job starts and ends, read at scrape time.
//!
//! KV-cache utilisation is defined as vLLM's is: the share of the model's KV cells (n_ctx per inference
//! context, times its contexts) held by the sequences being computed now. A scoring job holds its whole
//! sequence (prompt + response tokens), a generation its prompt plus `max_tokens` (what it may grow to), from
//! the moment a thread takes it until it ends. What an idle context still holds from its last job is not
//! counted: the next job clears it first, as vLLM counts a finished request's cached blocks as free.

use std::sync::atomic::{AtomicU64, Ordering};

/// One running job in [`Load`]'s state word; the KV cells in use are the low bits.
const ONE_JOB: u64 = 1 << 48;

/// Jobs and KV cells in use on one model's inference threads, in one atomic word (jobs in the high 16 bits,
/// cells in the low 48), so a reader always sees a consistent pair.
#[derive(Debug)]
pub struct Load {
    state: AtomicU64,
    /// KV cells over all the model's contexts.
    total_cells: u64,
    /// Inference contexts (threads) of the model.
    contexts: u64,
}

/// The load at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadNow {
    /// Jobs being computed.
    pub running: u64,
    /// Share of the KV cells held by the jobs being computed (0–1).
    pub kv_cache_utilization: f64,
}

/// A job being computed: counted while it lives.
pub struct Busy<'a> {
    load: &'a Load,
    delta: u64,
}

impl Load {
    /// The load of `contexts` inference contexts of `n_ctx` cells each, idle.
    pub fn new(contexts: usize, n_ctx: u32) -> Load {
        Load {
            state: AtomicU64::new(0),
            total_cells: contexts.max(1) as u64 * u64::from(n_ctx.max(1)),
            contexts: contexts.max(1) as u64,
        }
    }

    /// Inference contexts (threads) of the model.
    pub fn contexts(&self) -> u64 {
        self.contexts
    }

    /// Counts a job holding `cells` KV cells until the returned guard drops.
    pub fn begin(&self, cells: usize) -> Busy<'_> {
        let delta = ONE_JOB + (cells as u64).min(ONE_JOB - 1);
        self.state.fetch_add(delta, Ordering::Relaxed);
        Busy { load: self, delta }
    }

    /// Jobs and KV share now, read together.
    pub fn now(&self) -> LoadNow {
        let state = self.state.load(Ordering::Relaxed);
        let cells = (state & (ONE_JOB - 1)).min(self.total_cells);
        LoadNow {
            running: state >> 48,
            kv_cache_utilization: cells as f64 / self.total_cells as f64,
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.load.state.fetch_sub(self.delta, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(load: &Load) -> (u64, f64) {
        let n = load.now();
        (n.running, n.kv_cache_utilization)
    }

    #[test]
    fn jobs_count_while_they_run() {
        let load = Load::new(2, 100);
        assert_eq!(now(&load), (0, 0.0));
        let a = load.begin(30);
        let b = load.begin(20);
        assert_eq!(now(&load), (2, 50.0 / 200.0));
        drop(a);
        assert_eq!(now(&load), (1, 20.0 / 200.0));
        drop(b);
        assert_eq!(now(&load), (0, 0.0));
        // Never above 1, whatever a job claims.
        let _c = load.begin(1000);
        assert_eq!(now(&load), (1, 1.0));
    }
}

//! What a model's inference threads are doing now, for the gauges that balancers and inference gateways read
//! (`llama_scorer_requests_running`, `llama_scorer_kv_cache_utilization`) and the `endpoint-load-metrics`
//! header. Plain atomics, updated by the inference threads when a job starts and ends, read at scrape time.
//!
//! KV-cache utilisation is defined as vLLM's is: the share of the model's KV cells (n_ctx per inference
//! context, times its contexts) held by the sequences being computed now. A scoring job holds its whole
//! sequence (prompt + response tokens), a generation its prompt plus `max_tokens` (what it may grow to), from
//! the moment a thread takes it until it ends. What an idle context still holds from its last job is not
//! counted: the next job clears it first, as vLLM counts a finished request's cached blocks as free.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Jobs and KV cells in use on one model's inference threads.
#[derive(Debug)]
pub struct Load {
    running: AtomicUsize,
    cells: AtomicUsize,
    /// KV cells over all the model's contexts.
    total_cells: usize,
}

/// A job being computed: counted while it lives.
pub struct Busy<'a> {
    load: &'a Load,
    cells: usize,
}

impl Load {
    /// The load of `contexts` inference contexts of `n_ctx` cells each, idle.
    pub fn new(contexts: usize, n_ctx: u32) -> Load {
        Load {
            running: AtomicUsize::new(0),
            cells: AtomicUsize::new(0),
            total_cells: contexts.max(1) * n_ctx.max(1) as usize,
        }
    }

    /// Counts a job holding `cells` KV cells until the returned guard drops.
    pub fn begin(&self, cells: usize) -> Busy<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.cells.fetch_add(cells, Ordering::Relaxed);
        Busy { load: self, cells }
    }

    /// Jobs being computed now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Share of the KV cells held by the jobs being computed (0–1).
    pub fn kv_cache_utilization(&self) -> f64 {
        let used = self.cells.load(Ordering::Relaxed).min(self.total_cells);
        used as f64 / self.total_cells as f64
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.load.cells.fetch_sub(self.cells, Ordering::Relaxed);
        self.load.running.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_count_while_they_run() {
        let load = Load::new(2, 100);
        assert_eq!((load.running(), load.kv_cache_utilization()), (0, 0.0));
        let a = load.begin(30);
        let b = load.begin(20);
        assert_eq!(load.running(), 2);
        assert_eq!(load.kv_cache_utilization(), 50.0 / 200.0);
        drop(a);
        assert_eq!(
            (load.running(), load.kv_cache_utilization()),
            (1, 20.0 / 200.0)
        );
        drop(b);
        assert_eq!((load.running(), load.kv_cache_utilization()), (0, 0.0));
        // Never above 1, whatever a job claims.
        let _c = load.begin(1000);
        assert_eq!(load.kv_cache_utilization(), 1.0);
    }
}

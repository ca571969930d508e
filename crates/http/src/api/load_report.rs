//! The `endpoint-load-metrics` response header (an ORCA load report in its TEXT form, as vLLM emits it and
//! Envoy's client-side weighted round robin reads it) on every scoring answer, so a balancer can weight
//! replicas by what they report without scraping `/metrics`:
//!
//! `endpoint-load-metrics: TEXT application_utilization=0.5, rps_fractional=3.2,
//! named_metrics.requests_waiting=1, named_metrics.requests_running=1, named_metrics.kv_cache_utilization=0.12`
//!
//! - `application_utilization`: the busiest model's (waiting + running jobs) / its inference contexts; above 1
//!   when work queues (ORCA allows it).
//! - `rps_fractional`: scoring requests answered per second over the last 5 whole seconds (Envoy's weight is
//!   rps / utilization, and it ignores reports without a positive rps).
//! - `named_metrics.*`: the gauges of `/metrics`, summed over models (jobs) or the busiest model's (KV share).
//!
//! It costs a few atomic loads per answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::engine::Engine;

/// Seconds the request rate is averaged over.
const WINDOW: u64 = 5;
/// Count bits of a bucket; the second it counts is in the bits above.
const COUNT_BITS: u32 = 24;

/// Requests per second over the last [`WINDOW`] whole seconds, in lock-free one-second buckets.
pub struct Rate {
    started: Instant,
    buckets: [AtomicU64; WINDOW as usize + 2],
}

impl Default for Rate {
    fn default() -> Rate {
        Rate {
            started: Instant::now(),
            buckets: Default::default(),
        }
    }
}

impl Rate {
    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts one request now.
    pub fn record(&self) {
        self.record_at(self.second());
    }

    fn record_at(&self, second: u64) {
        let bucket = &self.buckets[(second % self.buckets.len() as u64) as usize];
        let _ = bucket.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(if v >> COUNT_BITS == second {
                v + 1
            } else {
                (second << COUNT_BITS) | 1
            })
        });
    }

    /// Requests per second over the last [`WINDOW`] whole seconds (the current second is not over yet).
    pub fn per_second(&self) -> f64 {
        self.per_second_at(self.second())
    }

    fn per_second_at(&self, now: u64) -> f64 {
        let recent = now.saturating_sub(WINDOW)..now;
        let count: u64 = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|v| recent.contains(&(v >> COUNT_BITS)))
            .map(|v| v & ((1 << COUNT_BITS) - 1))
            .sum();
        count as f64 / WINDOW as f64
    }
}

/// The header's value for the engine's load now.
pub fn report(engine: &Engine, rate: &Rate) -> String {
    let (mut waiting, mut running, mut kv, mut utilization) = (0u64, 0u64, 0f64, 0f64);
    for m in engine.models() {
        let load = m.load_now();
        let queued = m.queue_depth() as u64;
        waiting += queued;
        running += load.running;
        kv = kv.max(load.kv_cache_utilization);
        utilization = utilization.max((queued + load.running) as f64 / m.contexts() as f64);
    }
    format!(
        "TEXT application_utilization={utilization}, rps_fractional={}, \
         named_metrics.requests_waiting={waiting}, named_metrics.requests_running={running}, \
         named_metrics.kv_cache_utilization={kv}",
        rate.per_second()
    )
}

/// What the middleware reads: the engine and this server's request rate.
pub struct Reporter {
    pub engine: Arc<Engine>,
    pub rate: Rate,
}

/// Middleware for the API routes: counts each scoring request (a POST) and adds the load report to its answer.
pub async fn add_header(
    State(reporter): State<Arc<Reporter>>,
    request: Request,
    next: Next,
) -> Response {
    let scoring = request.method() == Method::POST;
    let mut response = next.run(request).await;
    if scoring {
        reporter.rate.record();
        if let Ok(v) = HeaderValue::from_str(&report(&reporter.engine, &reporter.rate)) {
            response.headers_mut().insert("endpoint-load-metrics", v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_the_last_whole_seconds() {
        let rate = Rate::default();
        for _ in 0..10 {
            rate.record_at(100);
        }
        rate.record_at(103);
        rate.record_at(105);
        // At second 105: seconds 100..105 are whole (11 requests... minus the one at 105).
        assert_eq!(rate.per_second_at(105), 11.0 / WINDOW as f64);
        // Later, the old seconds leave the window; a reused bucket starts again from 1.
        assert_eq!(rate.per_second_at(106), 2.0 / WINDOW as f64);
        rate.record_at(107);
        assert_eq!(rate.per_second_at(108), 3.0 / WINDOW as f64);
        assert_eq!(rate.per_second_at(200), 0.0);
    }
}

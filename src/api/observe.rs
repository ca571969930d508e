//! Observability: Prometheus metrics (`GET /metrics`) and per-request accounting by route and status.
//!
//! Engine metrics (queue wait, compute time, tokens scored, abandoned jobs) are recorded where they happen;
//! gauges that describe state (queue depth, cache and prefix counters, loaded models, memory) are read from
//! the engine at scrape time, so they cannot drift.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;
use crate::engine::Scored;

/// The `Server-Timing` value of a scoring request, as text-embeddings-inference reports its stages:
/// `tokenize` (preparing every item), `queue` (the longest wait of its items for an inference thread) and
/// `compute` (inference-thread time summed over its items), in milliseconds.
pub fn server_timing(tokenize: std::time::Duration, scored: &[Scored]) -> String {
    let queue = scored
        .iter()
        .map(|s| s.times.queue)
        .max()
        .unwrap_or_default();
    let compute: std::time::Duration = scored.iter().map(|s| s.times.compute).sum();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    format!(
        "tokenize;dur={:.3}, queue;dur={:.3}, compute;dur={:.3}",
        ms(tokenize),
        ms(queue),
        ms(compute)
    )
}

/// The process-wide recorder (installed once, however many servers a process starts, e.g. in tests).
/// The recorder keeps every histogram sample until it is drained, by a scrape or by upkeep; nobody may ever
/// scrape, so a thread of its own runs the upkeep every second (without it, memory grew ~16 bytes a request).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 120.0, 300.0,
        ];
        let handle = PrometheusBuilder::new()
            .set_buckets(&seconds)
            .expect("valid buckets")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    upkeep.run_upkeep();
                }
            })
            .expect("the metrics upkeep thread starts");
        handle
    })
}

/// Middleware: counts requests by route template and status, and times them.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let engine = &state.engine;
    metrics::gauge!("llama_scorer_models_loaded").set(engine.models().len() as f64);
    metrics::gauge!("llama_scorer_policies").set(engine.policies().len() as f64);
    for m in engine.models() {
        let model = m.display_name();
        metrics::gauge!("llama_scorer_queue_depth", "model" => model.clone())
            .set(m.queue_depth() as f64);
        metrics::gauge!("llama_scorer_model_bytes", "model" => model.clone())
            .set(m.info.size_bytes as f64);
        if let Some(p) = m.prefix_stats() {
            metrics::counter!("llama_scorer_prefix_hits_total", "model" => model.clone())
                .absolute(p.hits);
            metrics::counter!("llama_scorer_prefix_misses_total", "model" => model.clone())
                .absolute(p.misses);
            metrics::gauge!("llama_scorer_prefix_bytes", "model" => model).set(p.bytes as f64);
        }
    }
    if let Some(c) = engine.cache_stats().await {
        metrics::counter!("llama_scorer_cache_hits_total").absolute(c.hits);
        metrics::counter!("llama_scorer_cache_misses_total").absolute(c.misses);
        metrics::gauge!("llama_scorer_cache_entries").set(c.entries as f64);
        metrics::gauge!("llama_scorer_cache_bytes").set(c.bytes as f64);
    }
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle().render(),
    )
        .into_response()
}

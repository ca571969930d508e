//! Observability: Prometheus metrics (`GET /metrics`) and per-request accounting by route and status.
//!
//! Engine metrics (queue wait, compute time, tokens scored, abandoned jobs) are recorded where they happen;
//! gauges that describe state (queue depth, cache and prefix counters, loaded models, memory) are read from
//! the engine at scrape time, so they cannot drift.
//!
//! Per-model series carry the label `model` = the GGUF file's name (e.g. `SmolLM2-135M-Instruct.Q4_1.gguf`):
//! one series per loaded file, shared by every policy naming it, since the queue, the inference threads and
//! the KV cache are the file's. The three gauges inference gateways read (the Gateway API Inference
//! Extension / llm-d endpoint picker, see deploy/gateway/epp-config.yaml) are
//! `llama_scorer_requests_waiting` (items queued for an inference thread), `llama_scorer_requests_running`
//! (items being computed) and `llama_scorer_kv_cache_utilization` (0–1, see `engine::load`); each is a few
//! atomic loads, so a scrape every 50 ms costs little (scripts/bench-metrics.py measures it).
//! `llama_scorer_model_info{model, system_fingerprint}` is 1 per loaded file.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// The `Server-Timing` value of a scoring request, as text-embeddings-inference reports its stages:
/// `tokenize` (preparing every item), `queue` (the longest wait of its items for an inference thread) and
/// `compute` (inference-thread time summed over its items), in milliseconds; a remote policy's answer
/// has one stage, `upstream` (the whole remote call, retries included).
pub fn server_timing(stages: &[(&'static str, std::time::Duration)]) -> String {
    stages
        .iter()
        .map(|(name, d)| format!("{name};dur={:.3}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(", ")
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
    metrics::gauge!("llama_scorer_policies").set(state.policies.all().len() as f64);
    for m in engine.models() {
        let model = m.display_name();
        let waiting = m.queue_depth() as f64;
        metrics::gauge!("llama_scorer_queue_depth", "model" => model.clone()).set(waiting);
        metrics::gauge!("llama_scorer_requests_waiting", "model" => model.clone()).set(waiting);
        let load = m.load_now();
        metrics::gauge!("llama_scorer_requests_running", "model" => model.clone())
            .set(load.running as f64);
        metrics::gauge!("llama_scorer_kv_cache_utilization", "model" => model.clone())
            .set(load.kv_cache_utilization);
        metrics::gauge!("llama_scorer_model_info", "model" => model.clone(),
            "system_fingerprint" => m.system_fingerprint().to_string())
        .set(1.0);
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
    if let Some(c) = state.policies.remote_cache_stats().await {
        metrics::counter!("llama_scorer_remote_cache_hits_total").absolute(c.hits);
        metrics::counter!("llama_scorer_remote_cache_misses_total").absolute(c.misses);
        metrics::gauge!("llama_scorer_remote_cache_entries").set(c.entries as f64);
        metrics::gauge!("llama_scorer_remote_cache_bytes").set(c.bytes as f64);
    }
    for r in state.policies.remotes() {
        let s = r.status();
        metrics::gauge!("llama_scorer_remote_in_flight", "remote" => r.name.clone())
            .set(s.in_flight as f64);
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

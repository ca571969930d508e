//! `llama-scorer bench-engine`: times the engine alone and the in-process scoring path (queue, inference
//! thread, log-softmax) on the same items, so HTTP overhead can be measured against both.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::engine::{Engine, ItemInput, PromptInput, ResponseInput, ScoreOptions, bench};

/// One line of the items file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: String,
    response: String,
}

/// Timings of one run, in seconds, with the token counts that turn them into rates.
#[derive(Serialize)]
pub struct BenchReport {
    pub items: usize,
    /// Tokens whose log-probability is reported (the response tokens).
    pub scored_tokens: usize,
    /// Tokens decoded (prompt + response).
    pub decoded_tokens: usize,
    pub threads: usize,
    /// Where the model ran (`CPU`, `CUDA0`, ...) and how many of its layers were offloaded.
    pub device: String,
    pub offloaded_layers: u32,
    /// Engine alone, per repeat.
    pub decode_only_s: Vec<f64>,
    /// In-process scoring (queue + inference thread + log-softmax), per repeat.
    pub engine_s: Vec<f64>,
    /// llama-bench-like prompt processing of the same tokens (one logit per sequence), per repeat; empty
    /// unless asked for (`--prompt-processing`).
    pub prompt_processing_s: Vec<f64>,
    /// Log-softmax rows (statistics at T = 1 and T = 0.7) per second on one thread, for this model's
    /// vocabulary and for a 128,256-token (Llama-3) one.
    pub log_softmax_rows_per_s: f64,
    pub log_softmax_rows_per_s_128k: f64,
}

/// Rows per second of the log-softmax kernel on one thread for a vocabulary of `n`.
fn softmax_rate(n: usize) -> f64 {
    use crate::engine::logsoftmax::{Temperature, row_stats};
    let row: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
        .collect();
    let t = Temperature::new(0.7);
    let rows = 200;
    let started = Instant::now();
    for _ in 0..rows {
        std::hint::black_box(row_stats(std::hint::black_box(&row), &t).expect("finite"));
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// Loads `cfg`'s first policy, prepares the items in `items_path` (JSONL of `{prompt, response}`), and
/// times both paths `repeat` times, alternating (with `prompt_processing`, also the engine's plain
/// prompt-processing rate on the same tokens).
pub fn run(
    cfg: Config,
    items_path: &Path,
    repeat: usize,
    top_logprobs: usize,
    prompt_processing: bool,
) -> anyhow::Result<BenchReport> {
    let text = std::fs::read_to_string(items_path)
        .with_context(|| format!("cannot read {}", items_path.display()))?;
    let lines: Vec<Line> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    if lines.is_empty() {
        bail!("{} holds no items", items_path.display());
    }
    let threads = cfg.threads;
    let engine = Engine::start(&cfg.engine_settings())?;
    let policy = engine.policies()[0].clone();
    let options = ScoreOptions {
        top_logprobs,
        echo: false,
        score_end_of_turn: false,
        temperature: policy.temperature,
    };
    let prepared = lines
        .into_iter()
        .map(|l| {
            let input = ItemInput {
                prompt: PromptInput::Text(l.prompt),
                response: ResponseInput::Text(l.response),
            };
            policy
                .prepare(&input, &options)
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shared: Vec<_> = prepared.iter().cloned().map(Arc::new).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut report = BenchReport {
        items: prepared.len(),
        scored_tokens: prepared.iter().map(|p| p.response_len()).sum(),
        decoded_tokens: prepared.iter().map(|p| p.tokens.len()).sum(),
        threads,
        device: policy.model.info.device.clone(),
        offloaded_layers: policy.model.info.offloaded_layers,
        decode_only_s: Vec::new(),
        engine_s: Vec::new(),
        prompt_processing_s: Vec::new(),
        log_softmax_rows_per_s: softmax_rate(policy.model.vocab.len()),
        log_softmax_rows_per_s_128k: softmax_rate(128_256),
    };
    // Warm up both paths once (page in the weights, grow buffers).
    bench::decode_only(&policy.model, &prepared[..1], false)?;
    runtime.block_on(policy.score(shared[..1].to_vec(), &options))?;
    for _ in 0..repeat {
        report
            .decode_only_s
            .push(bench::decode_only(&policy.model, &prepared, false)?);
        let started = Instant::now();
        runtime.block_on(policy.score(shared.clone(), &options))?;
        report.engine_s.push(started.elapsed().as_secs_f64());
        if prompt_processing {
            report
                .prompt_processing_s
                .push(bench::prompt_processing(&policy.model, &prepared)?);
        }
    }
    // `engine`, the guard, stops and joins the inference threads as this returns (on every path).
    Ok(report)
}

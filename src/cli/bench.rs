//! `llama-scorer bench-engine`: its flags and the config that makes the timing honest.

use std::path::PathBuf;
use std::process::ExitCode;

use llama_scorer::config::{CacheSection, Config, Overrides, ServerSection};

use super::{CpuThreads, exit_with};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// GGUF model to load.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// JSONL file, one {"prompt", "response"} per line.
    #[arg(long)]
    items: PathBuf,
    #[command(flatten)]
    cpu: CpuThreads,
    /// Decode chunk in tokens [default: 512].
    #[arg(long, short = 'b', visible_alias = "batch-size")]
    decode_chunk: Option<u32>,
    /// Timed passes over the items.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Alternatives per position, as a request's `top_logprobs`.
    #[arg(long, default_value_t = 0)]
    top_logprobs: usize,
    /// Also time llama-bench-like prompt processing of the same tokens (one logit per sequence).
    #[arg(long)]
    prompt_processing: bool,
}

/// `bench-engine`: the report as one JSON line on stdout.
pub fn run(args: BenchArgs) -> ExitCode {
    let report = Config::single_model(&args.model, None, &overrides(&args))
        .map_err(anyhow::Error::from)
        .and_then(|cfg| {
            llama_scorer::bench::run(
                cfg,
                &args.items,
                args.repeat,
                args.top_logprobs,
                args.prompt_processing,
            )
        });
    exit_with(report, |r| {
        println!("{}", serde_json::to_string(&r).expect("report serializes"));
    })
}

/// Settings that make the scoring path compute every time, as the engine-only baseline does.
fn overrides(args: &BenchArgs) -> Overrides {
    Overrides {
        server: ServerSection {
            threads: args.cpu.threads,
            decode_chunk: args.decode_chunk,
            queue_size: Some(1 << 20),
            // The baseline decodes every prompt, so the scoring path must too: no prefix cache
            // across repeats (it flattered the comparison before).
            prefix_cache_bytes: Some(0),
            ..ServerSection::default()
        },
        // The benchmark times computation: never answer from the cache.
        cache: CacheSection {
            max_bytes: Some(0),
            ttl_seconds: None,
        },
        through: None,
    }
}

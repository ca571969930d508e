//! `llama-scorer score`: its flags, the config overrides a batch run needs, and the run's summary line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use llama_scorer::batch::score::{ScoreArgs, ScoreSummary};
use llama_scorer::config::{CacheSection, Config, Overrides, ServerSection, ThroughServer};
use llama_scorer::shard::{SchedulerEnv, ShardSpec};

use super::{CpuThreads, exit_with, usage_error};

#[derive(clap::Args)]
pub struct ScoreCmdArgs {
    /// YAML file with `policies:` (the same file `serve` takes).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// JSONL input: one item per line ({"id", "prompt" | "messages" | "prompt_token_ids",
    /// "response" | "response_token_ids", "policies"}).
    #[arg(long, short = 'i')]
    input: PathBuf,
    /// JSONL output, one line per (id, policy); appended to, and (id, policy) pairs already in it are
    /// skipped, so an interrupted run resumes.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Policies for lines that name none [default: all], comma-separated.
    #[arg(long, value_delimiter = ',')]
    policies: Option<Vec<String>>,
    /// Lines scored and written together.
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Add the end-of-turn token to each score.
    #[arg(long)]
    score_end_of_turn: bool,
    /// Also write each scored token's id and log-probability.
    #[arg(long)]
    token_logprobs: bool,
    #[command(flatten)]
    cpu: CpuThreads,
    /// Inference threads per model [default: from the config, else 1].
    #[arg(long, short = 'p')]
    parallel: Option<usize>,
    /// Do not draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Also score every line under this policy, add `log_ratio` against it to the other policies' lines,
    /// and print (and write to --summary) each policy's importance-weight diagnostics.
    #[arg(long)]
    base: Option<String>,
    /// The weights summary file [default: OUTPUT.summary.json]; with --base only.
    #[arg(long, requires = "base")]
    summary: Option<PathBuf>,
    /// Score through this running llama-scorer (or a balancer in front of replicas) serving the same
    /// --config, instead of loading the models here: the same output, bit for bit. Sends each prompt's
    /// requests with its affinity key; retries (another replica, behind a balancer) on failures. The key,
    /// if the server wants one, comes from LLAMA_SCORER_API_KEY (else the first of LLAMA_SCORER_API_KEYS).
    #[arg(long)]
    server: Option<String>,
    /// With --server: requests in flight per policy.
    #[arg(long, default_value_t = 8, requires = "server")]
    concurrency: usize,
    /// With --server: retries per request before the run stops (resumable).
    #[arg(long, default_value_t = 8, requires = "server")]
    retries: u32,
    /// Score only shard K of N (0 ≤ K < N): the lines whose id — the line's `id` (a string as it is, other
    /// values as compact JSON), else its line number — hashes there (first 8 bytes of SHA-256, big-endian,
    /// mod N), so reruns and resumes pick the same lines. `auto/N` takes K from JOB_COMPLETION_INDEX (a
    /// Kubernetes Indexed Job) or a SLURM job array (the task's rank: (SLURM_ARRAY_TASK_ID -
    /// SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP); plain `auto` takes N from SLURM_ARRAY_TASK_COUNT.
    /// Give each shard its own --output; `llama-scorer merge` joins them.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Read model files into memory instead of mapping them (see `serve --no-mmap`).
    #[arg(long)]
    no_mmap: bool,
}

/// `score`: a bad `--shard` exits 2 before anything loads; otherwise scores and prints the summary.
pub fn run(args: ScoreCmdArgs) -> ExitCode {
    let overrides = overrides(&args);
    let started = Instant::now();
    let scheduler = SchedulerEnv::from_env();
    let shard = match args
        .shard
        .as_deref()
        .map(|s| ShardSpec::parse(s, &scheduler))
        .transpose()
    {
        Ok(shard) => shard,
        Err(e) => return usage_error(e),
    };
    let result = Config::from_file(&args.config, &overrides)
        .map_err(anyhow::Error::from)
        .and_then(|cfg| {
            llama_scorer::sigbus::explain_for(&cfg);
            llama_scorer::batch::score::run(cfg.served_settings(), score_args(args, shard))
        });
    exit_with(result, |s| report(&s, started))
}

/// A batch run differs from serving: its queues hold a whole chunk under every policy, and with
/// `--server` the models are another process's.
fn overrides(args: &ScoreCmdArgs) -> Overrides {
    Overrides {
        server: ServerSection {
            threads: args.cpu.threads,
            parallel: args.parallel,
            // Room for a whole chunk under every policy at once.
            queue_size: Some(args.chunk.max(1) * 64),
            max_batch_items: Some(args.chunk.max(1)),
            mmap: args.no_mmap.then_some(false),
            ..ServerSection::default()
        },
        cache: CacheSection::default(),
        through: args.server.clone().map(|url| ThroughServer {
            url,
            concurrency: args.concurrency.max(1),
            max_retries: args.retries,
            api_key: server_key(),
        }),
    }
}

/// The library's view of the flags (the config and server options went into the overrides).
fn score_args(args: ScoreCmdArgs, shard: Option<ShardSpec>) -> ScoreArgs {
    ScoreArgs {
        input: args.input,
        output: args.output,
        policies: args.policies,
        chunk_lines: args.chunk,
        score_end_of_turn: args.score_end_of_turn,
        token_logprobs: args.token_logprobs,
        progress: !args.no_progress,
        base: args.base,
        summary: args.summary,
        shard,
    }
}

/// The weights table (with --base) and the counts line, on stderr so stdout stays free.
fn report(s: &ScoreSummary, started: Instant) {
    if let Some(w) = &s.weights {
        eprint!("{}", w.table());
    }
    eprintln!(
        "scored {} (id, policy) pairs ({} errors), skipped {} already done, in {:.1} s",
        s.written - s.errors,
        s.errors,
        s.skipped,
        started.elapsed().as_secs_f64()
    );
}

/// The key `score --server` sends: LLAMA_SCORER_API_KEY, else the first of the servers' own
/// LLAMA_SCORER_API_KEYS (a Job can mount the same secret the Deployment reads).
fn server_key() -> Option<String> {
    let single = std::env::var("LLAMA_SCORER_API_KEY").ok();
    let first_of_list = || {
        std::env::var("LLAMA_SCORER_API_KEYS").ok().and_then(|l| {
            l.split(',')
                .map(str::trim)
                .find(|k| !k.is_empty())
                .map(str::to_string)
        })
    };
    single
        .filter(|k| !k.trim().is_empty())
        .map(|k| k.trim().to_string())
        .or_else(first_of_list)
}

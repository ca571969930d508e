//! Command line: `llama-scorer serve` starts the HTTP service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use llama_scorer::config::{CacheSection, Config, Overrides, ServerSection, ThroughServer};
use llama_scorer::server::{Server, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "llama-scorer",
    version,
    about = "Exact teacher-forcing log-probabilities over llama.cpp"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Folder of llama.cpp's backend libraries (libggml-cpu-*.so, libggml-cuda.so) for builds with the
    /// dynamic-backends feature [default: the executable's folder, else the cargo build's].
    #[arg(long, global = true, env = "LLAMA_SCORER_BACKENDS_DIR")]
    backends_dir: Option<PathBuf>,
    /// Load this CPU variant of the backends folder (e.g. haswell for libggml-cpu-haswell.so) instead of
    /// the best one for the host, so replicas on different CPUs give the same bits (dynamic-backends builds)
    /// [default: the best the CPU supports].
    #[arg(long, global = true, env = "LLAMA_SCORER_CPU_VARIANT")]
    cpu_variant: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the policies of a config file, or one GGUF model, over HTTP.
    Serve(ServeArgs),
    /// Score a JSONL file of items under the config's policies, without HTTP (resumable).
    Score(ScoreCmdArgs),
    /// Join the outputs of `score --shard K/N` runs into one file in the input's order; fails, writing
    /// nothing, on a missing (id, policy) pair, conflicting duplicates or differing system_fingerprints.
    Merge(MergeCmdArgs),
    /// Time the engine alone and the in-process scoring path on a JSONL file of {prompt, response}
    /// (prints JSON; `scripts/bench.py` adds HTTP and prints the comparison table).
    BenchEngine(BenchArgs),
    /// Load llama.cpp's backends and print the devices found as JSON (checks a GPU install or image).
    Devices,
}

#[derive(clap::Args)]
struct ScoreCmdArgs {
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
    /// CPU threads [default: all cores].
    #[arg(long, short = 't')]
    threads: Option<usize>,
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
    /// Kubernetes Indexed Job). Give each shard its own --output; `llama-scorer merge` joins them.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Read model files into memory instead of mapping them (see `serve --no-mmap`).
    #[arg(long)]
    no_mmap: bool,
}

#[derive(clap::Args)]
struct MergeCmdArgs {
    /// The JSONL input the shards scored: gives the order and the (id, policy) pairs expected.
    #[arg(long, short = 'i')]
    input: PathBuf,
    /// The merged JSONL, written only when the merge succeeds (replaced whole).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// The score run's --policies (the policies of lines that name none) [default: every policy found in
    /// the shard files].
    #[arg(long, value_delimiter = ',')]
    policies: Option<Vec<String>>,
    /// The shards' output files.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// GGUF model to load.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// JSONL file, one {"prompt", "response"} per line.
    #[arg(long)]
    items: PathBuf,
    /// CPU threads [default: all cores].
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Decode chunk in tokens [default: 512].
    #[arg(long, short = 'b')]
    batch_size: Option<u32>,
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

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML file with `policies:` (and optionally `server:`).
    #[arg(long, short = 'c', conflicts_with = "model")]
    config: Option<PathBuf>,
    /// Serve one GGUF file as a single policy (named by --alias, else the file name without `.gguf`).
    #[arg(long, short = 'm', required_unless_present = "config")]
    model: Option<PathBuf>,
    /// Policy name for --model.
    #[arg(long, short = 'a', requires = "model")]
    alias: Option<String>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on [default: 8080].
    #[arg(long)]
    port: Option<u16>,
    /// CPU threads for inference, shared by all models [default: all cores].
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Items that may wait in one model's queue before requests get 429 [default: 1024].
    #[arg(long)]
    queue_size: Option<usize>,
    /// Largest `items` list in one request [default: 256].
    #[arg(long)]
    max_batch_items: Option<usize>,
    /// Decode chunk in tokens (llama.cpp n_batch = n_ubatch); part of the numbers' definition [default: 512].
    #[arg(long, short = 'b')]
    batch_size: Option<u32>,
    /// Inference threads (contexts) per model; CPU threads are divided between them [default: 1].
    #[arg(long, short = 'p')]
    parallel: Option<usize>,
    /// Byte budget per model for saved whole-prompt states (whole-prompt reuse); 0 turns it off [default: 256 MiB].
    #[arg(long)]
    prefix_cache_bytes: Option<u64>,
    /// Byte budget of the response cache; 0 turns it off [default: 256 MiB].
    #[arg(long)]
    cache_bytes: Option<u64>,
    /// Seconds after which cached scores expire [default: never].
    #[arg(long)]
    cache_ttl: Option<u64>,
    /// Largest request body in bytes [default: 8 MiB].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Seconds a request may take before it gets 504 and its queued work is dropped [default: 600].
    #[arg(long)]
    request_timeout: Option<u64>,
    /// Requests handled at once; more get 503 [default: 1024].
    #[arg(long)]
    max_concurrent_requests: Option<usize>,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM [default: 30].
    #[arg(long)]
    shutdown_timeout: Option<u64>,
    /// Require `Authorization: Bearer KEY` on every route but /health (repeatable; comma-separated in the
    /// environment variable).
    #[arg(
        long = "api-key",
        env = "LLAMA_SCORER_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Browser origin (`scheme://host[:port]`) allowed to call the server besides its own pages
    /// (repeatable).
    #[arg(long = "allowed-origin", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Read model files into memory instead of mapping them: a file truncated or rewritten in place while
    /// serving can then not kill the server (with SIGBUS), at the cost of memory the page cache and other
    /// processes cannot share [default: mapped].
    #[arg(long)]
    no_mmap: bool,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,llama_cpp_2=warn,llama-cpp-2=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

fn load_config(args: &ServeArgs) -> Result<Config, String> {
    let overrides = Overrides {
        server: ServerSection {
            host: args.host.clone(),
            port: args.port,
            threads: args.threads,
            queue_size: args.queue_size,
            max_batch_items: args.max_batch_items,
            batch_size: args.batch_size,
            max_body_bytes: args.max_body_bytes,
            parallel: args.parallel,
            prefix_cache_bytes: args.prefix_cache_bytes,
            request_timeout_secs: args.request_timeout,
            max_concurrent_requests: args.max_concurrent_requests,
            shutdown_timeout_secs: args.shutdown_timeout,
            api_keys: (!args.api_keys.is_empty()).then(|| args.api_keys.clone()),
            allowed_origins: (!args.allowed_origins.is_empty())
                .then(|| args.allowed_origins.clone()),
            mmap: args.no_mmap.then_some(false),
        },
        cache: CacheSection {
            max_bytes: args.cache_bytes,
            ttl_seconds: args.cache_ttl,
        },
        through: None,
    };
    let cfg = match (&args.config, &args.model) {
        (Some(path), _) => Config::from_file(path, &overrides),
        (None, Some(model)) => Config::single_model(model, args.alias.as_deref(), &overrides),
        (None, None) => unreachable!("clap requires --config or --model"),
    };
    cfg.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    llama_scorer::engine::set_backends_dir(cli.backends_dir);
    llama_scorer::engine::set_cpu_variant(cli.cpu_variant);
    match cli.command {
        Command::Score(args) => {
            let overrides = Overrides {
                server: ServerSection {
                    threads: args.threads,
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
            };
            let started = std::time::Instant::now();
            let job_index = std::env::var(llama_scorer::shard::JOB_INDEX_ENV).ok();
            let shard = match args
                .shard
                .as_deref()
                .map(|s| llama_scorer::shard::ShardSpec::parse(s, job_index.as_deref()))
            {
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
                Some(Ok(s)) => Some(s),
                None => None,
            };
            let result = Config::from_file(&args.config, &overrides)
                .map_err(anyhow::Error::from)
                .and_then(|cfg| {
                    llama_scorer::sigbus::explain_for(&cfg);
                    llama_scorer::score_cmd::run(
                        cfg,
                        llama_scorer::score_cmd::ScoreArgs {
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
                        },
                    )
                });
            match result {
                Ok(s) => {
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
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Merge(args) => {
            let merge = llama_scorer::merge_cmd::MergeArgs {
                input: args.input,
                output: args.output,
                shards: args.shards,
                policies: args.policies,
            };
            match llama_scorer::merge_cmd::run(&merge) {
                Ok(summary) => {
                    eprintln!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Devices => match llama_scorer::engine::devices() {
            Ok(d) => {
                println!("{}", serde_json::to_string(d).expect("devices serialize"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::BenchEngine(args) => {
            let overrides = Overrides {
                server: ServerSection {
                    threads: args.threads,
                    batch_size: args.batch_size,
                    queue_size: Some(1 << 20),
                    // The baseline decodes every prompt, so the scoring path must too: no whole-prompt
                    // reuse across repeats (it flattered the comparison before).
                    prefix_cache_bytes: Some(0),
                    ..ServerSection::default()
                },
                // The benchmark times computation: never answer from the cache.
                cache: CacheSection {
                    max_bytes: Some(0),
                    ttl_seconds: None,
                },
                through: None,
            };
            let report = Config::single_model(&args.model, None, &overrides)
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
            match report {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r).expect("report serializes"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve(args) => {
            let cfg = match load_config(&args) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            llama_scorer::sigbus::explain_for(&cfg);
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = runtime.block_on(async move {
                let server = Server::start(cfg).await?;
                tracing::info!(address = %server.local_addr()?, "listening");
                server.serve(shutdown_signal()).await?;
                anyhow::Ok(())
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use llama_scorer::config::Config;

    /// The `[default: N]` a flag's help states, from `serve --help`.
    fn stated_default(help: &str, flag: &str) -> String {
        let after = &help[help
            .find(&format!("{flag} <"))
            .unwrap_or_else(|| panic!("no {flag}"))..];
        let at = after.find("[default: ").expect("a stated default") + "[default: ".len();
        after[at..].split(']').next().unwrap().to_string()
    }

    #[test]
    fn help_states_the_configs_defaults() {
        let help = super::Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        let cfg = Config::with_defaults(Vec::new());
        let mib = |b: u64| format!("{} MiB", b >> 20);
        let cases = [
            ("--host", cfg.host.clone()),
            ("--port", cfg.port.to_string()),
            ("--queue-size", cfg.queue_size.to_string()),
            ("--max-batch-items", cfg.max_batch_items.to_string()),
            ("--batch-size", cfg.batch_size.to_string()),
            ("--parallel", cfg.parallel.to_string()),
            ("--prefix-cache-bytes", mib(cfg.prefix_cache_bytes)),
            ("--cache-bytes", mib(cfg.cache.max_bytes)),
            ("--max-body-bytes", mib(cfg.max_body_bytes as u64)),
            ("--request-timeout", cfg.request_timeout_secs.to_string()),
            (
                "--max-concurrent-requests",
                cfg.max_concurrent_requests.to_string(),
            ),
            ("--shutdown-timeout", cfg.shutdown_timeout_secs.to_string()),
        ];
        for (flag, value) in cases {
            assert_eq!(stated_default(&help, flag), value, "{flag}");
        }
    }
}

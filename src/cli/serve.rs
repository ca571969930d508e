//! `llama-scorer serve`: its flags, the config they override, and the HTTP server's run.

use std::path::PathBuf;
use std::process::ExitCode;

use llama_scorer::config::{CacheSection, Config, Overrides, ServerSection};
use llama_scorer::server::{Server, shutdown_signal};

use super::{exit_with, usage_error};

#[derive(clap::Args)]
pub struct ServeArgs {
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
    #[arg(long, short = 'b', visible_alias = "batch-size")]
    decode_chunk: Option<u32>,
    /// Inference threads (contexts) per model; CPU threads are divided between them [default: 1].
    #[arg(long, short = 'p')]
    parallel: Option<usize>,
    /// Byte budget per model of the prefix cache (saved states of whole prompts); 0 turns it off [default: 256 MiB].
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
    /// Seconds a request head may take once it has started; slower connections are closed [default: 30].
    #[arg(long)]
    header_read_timeout: Option<u64>,
    /// Seconds an idle keep-alive connection is kept [default: 75].
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Seconds a request body may take to arrive; slower uploads get 408 [default: 60].
    #[arg(long)]
    body_timeout: Option<u64>,
    /// Connections open at once, kept under the open-files limit; when full the longest-waiting
    /// unanswered one is closed, else newcomers get 503 [default: 1024].
    #[arg(long)]
    max_connections: Option<usize>,
    /// `Host` name answered on a loopback bind besides localhost, 127.0.0.1 and [::1] (repeatable; `*`
    /// answers any).
    #[arg(long = "allowed-host", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Read model files into memory instead of mapping them: a file truncated or rewritten in place while
    /// serving can then not kill the server (with SIGBUS), at the cost of memory the page cache and other
    /// processes cannot share [default: mapped].
    #[arg(long)]
    no_mmap: bool,
}

/// `serve`: loads the config (exit 2 when it cannot be used), then serves until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> ExitCode {
    let cfg = match load_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => return usage_error(e),
    };
    llama_scorer::sigbus::explain_for(&cfg);
    exit_with(serve(cfg), |()| ())
}

/// The server's whole life on its own runtime: start, log the address (the port may have been 0), serve.
/// The runtime is not waited for at the end: a model still loading when a signal came is abandoned with
/// the process rather than finished first.
fn serve(cfg: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        let server = Server::start(cfg).await?;
        tracing::info!(address = %server.local_addr()?, "listening; loading the models");
        server.serve(shutdown_signal()).await
    });
    runtime.shutdown_background();
    result
}

/// The flags win over the config file's `server:` and `cache:` sections; a flag not given leaves the
/// file's value (or the default).
fn overrides(args: &ServeArgs) -> Overrides {
    Overrides {
        server: ServerSection {
            host: args.host.clone(),
            port: args.port,
            threads: args.threads,
            queue_size: args.queue_size,
            max_batch_items: args.max_batch_items,
            decode_chunk: args.decode_chunk,
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
            header_read_timeout_secs: args.header_read_timeout,
            idle_timeout_secs: args.idle_timeout,
            body_timeout_secs: args.body_timeout,
            max_connections: args.max_connections,
            allowed_hosts: (!args.allowed_hosts.is_empty()).then(|| args.allowed_hosts.clone()),
        },
        cache: CacheSection {
            max_bytes: args.cache_bytes,
            ttl_seconds: args.cache_ttl,
        },
        through: None,
    }
}

/// `--config FILE` or `--model GGUF` (clap makes it exactly one), with the flags applied over it.
fn load_config(args: &ServeArgs) -> Result<Config, String> {
    let overrides = overrides(args);
    let cfg = match (&args.config, &args.model) {
        (Some(path), _) => Config::from_file(path, &overrides),
        (None, Some(model)) => Config::single_model(model, args.alias.as_deref(), &overrides),
        (None, None) => unreachable!("clap requires --config or --model"),
    };
    cfg.map_err(|e| e.to_string())
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
    fn the_decode_chunk_flag_keeps_its_old_spellings() {
        use clap::Parser;
        for flag in ["--decode-chunk", "--batch-size", "-b"] {
            let cli = crate::cli::Cli::try_parse_from([
                "llama-scorer",
                "serve",
                "--model",
                "m.gguf",
                flag,
                "16",
            ])
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
            let crate::cli::Command::Serve(args) = cli.command else {
                panic!("{flag}: not serve")
            };
            assert_eq!(args.decode_chunk, Some(16), "{flag}");
        }
    }

    #[test]
    fn help_states_the_configs_defaults() {
        let help = crate::cli::Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        let cfg = Config::with_defaults(Vec::new());
        let mib = |b: u64| format!("{} MiB", b >> 20);
        let cases = [
            ("--host", cfg.http.host.clone()),
            ("--port", cfg.http.port.to_string()),
            ("--queue-size", cfg.queue_size.to_string()),
            ("--max-batch-items", cfg.http.max_batch_items.to_string()),
            ("--decode-chunk", cfg.decode_chunk.to_string()),
            ("--parallel", cfg.parallel.to_string()),
            ("--prefix-cache-bytes", mib(cfg.prefix_cache_bytes)),
            ("--cache-bytes", mib(cfg.cache.max_bytes)),
            ("--max-body-bytes", mib(cfg.http.max_body_bytes as u64)),
            (
                "--request-timeout",
                cfg.http.request_timeout_secs.to_string(),
            ),
            (
                "--max-concurrent-requests",
                cfg.http.max_concurrent_requests.to_string(),
            ),
            (
                "--shutdown-timeout",
                cfg.http.shutdown_timeout_secs.to_string(),
            ),
        ];
        for (flag, value) in cases {
            assert_eq!(stated_default(&help, flag), value, "{flag}");
        }
    }
}

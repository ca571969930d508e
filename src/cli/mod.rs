//! The command line's shape (clap): global options, one subcommand each in its own module, and the exit
//! conventions they share.

mod bench;
mod merge;
mod score;
mod serve;

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "llama-scorer",
    version,
    about = "Exact teacher-forcing log-probabilities over llama.cpp"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LLAMA_SCORER_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Folder of llama.cpp's backend libraries (libggml-cpu-*.so, libggml-cuda.so) for builds with the
    /// dynamic-backends feature [default: the executable's folder, else the cargo build's].
    #[arg(long, global = true, env = "LLAMA_SCORER_BACKENDS_DIR")]
    pub backends_dir: Option<PathBuf>,
    /// Load this CPU variant of the backends folder (e.g. haswell for libggml-cpu-haswell.so) instead of
    /// the best one for the host, so replicas on different CPUs give the same bits (dynamic-backends builds)
    /// [default: the best the CPU supports].
    #[arg(long, global = true, env = "LLAMA_SCORER_CPU_VARIANT")]
    pub cpu_variant: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the policies of a config file, or one GGUF model, over HTTP.
    Serve(serve::ServeArgs),
    /// Score a JSONL file of items under the config's policies, without HTTP (resumable).
    Score(score::ScoreCmdArgs),
    /// Join the outputs of `score --shard K/N` runs into one file in the input's order; fails, writing
    /// nothing, on a missing (id, policy) pair, conflicting duplicates or differing system_fingerprints.
    Merge(merge::MergeCmdArgs),
    /// Time the engine alone and the in-process scoring path on a JSONL file of {prompt, response}
    /// (prints JSON; `scripts/bench.py` adds HTTP and prints the comparison table).
    BenchEngine(bench::BenchArgs),
    /// Load llama.cpp's backends and print the devices found as JSON (checks a GPU install or image).
    Devices,
}

impl Command {
    /// Dispatches to the subcommand's own module, which owns its flags and how they become a run.
    pub fn run(self) -> ExitCode {
        match self {
            Command::Score(args) => score::run(args),
            Command::Merge(args) => merge::run(args),
            Command::Devices => devices(),
            Command::BenchEngine(args) => bench::run(args),
            Command::Serve(args) => serve::run(args),
        }
    }
}

/// `--threads` as `score` and `bench-engine` both take it (one definition, so their help cannot drift).
#[derive(clap::Args)]
pub struct CpuThreads {
    /// CPU threads [default: all cores].
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
}

/// Logs go to stderr (stdout carries the commands' JSON), filtered by RUST_LOG, else info with llama.cpp's
/// chatter kept to warnings.
pub fn init_logging(format: LogFormat) {
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

/// Every subcommand ends alike: `report` shows a success, a failure prints `error: …` with its whole
/// cause chain and exits 1.
fn exit_with<T, E: Display>(result: Result<T, E>, report: impl FnOnce(T)) -> ExitCode {
    match result {
        Ok(value) => {
            report(value);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A usage mistake clap cannot see (a bad `--shard`, a config `serve` cannot load) exits 2, as clap's own
/// do.
fn usage_error(e: impl Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// `devices`: the backends' devices as JSON on stdout.
fn devices() -> ExitCode {
    exit_with(llama_scorer::engine::devices(), |d| {
        println!("{}", serde_json::to_string(d).expect("devices serialize"));
    })
}

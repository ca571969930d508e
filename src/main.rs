//! Command line: `llama-scorer serve | score | merge | bench-engine | devices` (see [`cli`]).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(cli.log_format);
    llama_scorer::engine::set_backends_dir(cli.backends_dir);
    llama_scorer::engine::set_cpu_variant(cli.cpu_variant);
    cli.command.run()
}

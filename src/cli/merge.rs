//! `llama-scorer merge`: its flags, handed to the library's merge.

use std::path::PathBuf;
use std::process::ExitCode;

use llama_scorer::batch::merge::MergeArgs;

use super::exit_with;

#[derive(clap::Args)]
pub struct MergeCmdArgs {
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

/// `merge`: the summary line on success, else why nothing was written.
pub fn run(args: MergeCmdArgs) -> ExitCode {
    let merge = MergeArgs {
        input: args.input,
        output: args.output,
        shards: args.shards,
        policies: args.policies,
    };
    exit_with(llama_scorer::batch::merge::run(&merge), |summary| {
        eprintln!("{summary}");
    })
}

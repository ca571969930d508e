//! The batch commands over JSONL files: `score` (resumable, sharded, optionally against a base policy),
//! `merge` (joins shard outputs, refusing anything but the whole, consistent answer) and the weights report
//! of `score --base`. They share one output line type, [`record::BatchRecord`]; [`shard`] splits an input
//! between the jobs of an array. Scoring goes through the policy seam
//! ([`llama_scorer_policy::served`]); nothing here knows HTTP.

pub mod merge;
pub mod record;
pub mod score;
pub mod shard;
pub mod weights;

use llama_scorer_engine as engine;
use llama_scorer_policy::{input, ratios, report, served};

//! The batch commands over JSONL files: `score` (resumable, sharded, optionally against a base policy),
//! `merge` (joins shard outputs, refusing anything but the whole, consistent answer) and the weights report
//! of `score --base`. They share one output line type, [`record::BatchRecord`].

pub mod merge;
pub mod record;
pub mod score;
pub mod weights;

//! The engine alone: the same decode calls the scorer makes (same schedule, logits at the same positions)
//! with nothing else — no queue, no log-softmax, no HTTP. The practical ceiling benchmarks compare with.

use std::time::Instant;

use llama_cpp_2::llama_batch::LlamaBatch;

use super::model::LoadedModel;
use super::types::{PreparedItem, ScoreError};
use super::worker::{create_context, decode_sequence, logit_positions};

/// Decodes every item once on a fresh context with the model's own settings; returns the seconds taken.
pub fn decode_only(
    model: &LoadedModel,
    items: &[PreparedItem],
    echo: bool,
) -> Result<f64, ScoreError> {
    let settings = model.worker_settings;
    let mut ctx = create_context(&model.llama, settings).map_err(ScoreError::Internal)?;
    let mut batch = LlamaBatch::new(settings.chunk as usize, 1);
    let started = Instant::now();
    let mut checksum = 0f32;
    for item in items {
        decode_sequence(
            &mut ctx,
            &mut batch,
            settings.chunk as usize,
            item,
            logit_positions(item, echo),
            || false,
            |ctx, rows| {
                // Read one logit per row so the rows are really produced and fetched.
                for &(_, i) in rows {
                    checksum += ctx.get_logits_ith(i)[0];
                }
                Ok(())
            },
        )?;
    }
    std::hint::black_box(checksum);
    Ok(started.elapsed().as_secs_f64())
}

//! The engine alone: the same decode calls the scorer makes (same schedule, logits at the same positions)
//! with nothing else — no queue, no log-softmax, no HTTP. The practical ceiling benchmarks compare with.

use std::time::Instant;

use llama_cpp_2::llama_batch::LlamaBatch;

use super::error::ScoreError;
use super::model::LoadedModel;
use super::schedule::{create_context, decode_sequence, logit_positions};
use super::types::PreparedItem;

/// Decodes every item once on a fresh context with the model's own settings; returns the seconds taken.
pub fn decode_only(
    model: &LoadedModel,
    items: &[PreparedItem],
    echo: bool,
) -> Result<f64, ScoreError> {
    time_decodes(model, items.iter().map(|i| (i, logit_positions(i, echo))))
}

/// llama-bench's prompt processing on the same tokens: each whole sequence (prompt and response) decoded
/// as one prompt, in the model's decode chunk, with a logit at its last position only. The engine's plain
/// rate, against which the scoring path (logits at every response position) is measured on a GPU.
pub fn prompt_processing(model: &LoadedModel, items: &[PreparedItem]) -> Result<f64, ScoreError> {
    let whole: Vec<PreparedItem> = items
        .iter()
        .map(|i| PreparedItem {
            prompt_len: i.tokens.len(),
            end_of_turn: None,
            ..i.clone()
        })
        .collect();
    time_decodes(
        model,
        whole
            .iter()
            .map(|i| (i, i.tokens.len() - 1..i.tokens.len())),
    )
}

/// Decodes each `(item, logit positions)` once on a fresh context; returns the seconds taken.
fn time_decodes<'a>(
    model: &LoadedModel,
    work: impl Iterator<Item = (&'a PreparedItem, std::ops::Range<usize>)>,
) -> Result<f64, ScoreError> {
    let settings = model.context_settings;
    let mut ctx = create_context(&model.llama, settings).map_err(ScoreError::Internal)?;
    let mut batch = LlamaBatch::new(settings.decode_chunk as usize, 1);
    let started = Instant::now();
    let mut checksum = 0f32;
    for (item, wanted) in work {
        decode_sequence(
            &mut ctx,
            &mut batch,
            settings.decode_chunk as usize,
            item,
            wanted,
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

//! `GET /v1/models`: one entry per policy, in the OpenAI list format with Fireworks' extra fields.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::{AppState, unix_time};

/// Lists the served policies (the ids clients put in `model`). Only fields Fireworks' own model entry has
/// (its strict 0.x client refuses any other; where a model runs is in `/ready`), and `system_fingerprint`,
/// so a client can check before a run that replicas give comparable numbers.
pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let created = unix_time();
    let data: Vec<Value> = state
        .policies
        .all()
        .iter()
        .map(|p| {
            let mut entry = json!({
                "id": p.name(),
                "object": "model",
                "created": created,
                "owned_by": "llama-scorer",
                "supports_chat": p.supports_chat(),
            });
            // A remote policy's context length and build are the upstream's business (not known here).
            if let Some(n_ctx) = p.context_length() {
                entry["context_length"] = json!(n_ctx);
            }
            if let Some(fingerprint) = p.system_fingerprint() {
                entry["system_fingerprint"] = json!(fingerprint);
            }
            entry
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

//! Answering a planned compatibility request, the last step both endpoints share: streamed as server-sent
//! chunks while the choices run, or run to the end and sent as one body. The endpoints differ only in how
//! they write a choice ([`ChoiceFormat`]).

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Usage;
use super::choice::{self, ChoiceOutcome, ChoicePlan};
use super::stream::{self, ChoiceEvent, Delta};
use crate::api::{ApiError, new_id, unix_time};
use crate::engine::Policy;
use crate::served::completion;

/// How an endpoint writes its choices, streamed and whole.
pub trait ChoiceFormat: Send + 'static {
    /// The `object` of the whole (non-streamed) answer.
    const OBJECT: &'static str;
    /// A choice of the whole answer.
    type Choice: Serialize;
    /// The choice of a streamed chunk; `lines` are the tokens the delta carries.
    fn delta(&mut self, d: &Delta, lines: &[choice::Line<'_>]) -> Value;
    /// The `index`-th choice of the whole answer.
    fn whole(&self, index: usize, outcome: &ChoiceOutcome) -> Self::Choice;
}

/// A request planned and ready to run, with what its answer needs.
pub struct AnswerPlan {
    pub policy: Arc<Policy>,
    pub plans: Vec<ChoicePlan>,
    pub echo_last: Option<usize>,
    pub usage: Usage,
    pub include_usage: bool,
    pub header: ChunkHeader,
}

/// Runs the choices and answers: as a stream of chunks when `stream`, else as one body.
pub async fn answer<F: ChoiceFormat>(
    mut plan: AnswerPlan,
    stream: bool,
    format: F,
) -> Result<Response, ApiError> {
    completion::reserve_places(&plan.policy, &mut plan.plans)?;
    completion::score_echoes(&plan.policy, &mut plan.plans).await?;
    if stream {
        return Ok(stream_response(plan, format));
    }
    let outcomes = run_all(&plan.policy, plan.plans).await?;
    let usage = plan.usage.with_completions(&outcomes);
    let choices = WholeChoices {
        format: &format,
        outcomes: &outcomes,
    };
    Ok(plan.header.whole(F::OBJECT, &choices, usage))
}

/// The choices of a whole answer, each written as it is serialized: the answer's bytes are the only copy
/// of it (no tree of JSON values, no list of every choice's wire form held at once).
struct WholeChoices<'a, F> {
    format: &'a F,
    outcomes: &'a [ChoiceOutcome],
}

impl<F: ChoiceFormat> Serialize for WholeChoices<'_, F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.outcomes.len()))?;
        for (index, outcome) in self.outcomes.iter().enumerate() {
            seq.serialize_element(&self.format.whole(index, outcome))?;
        }
        seq.end()
    }
}

/// Streams every choice as server-sent events: deltas formatted by `format` as they come, then (if asked)
/// a usage chunk, then `[DONE]`. When the client goes away, every choice is abandoned.
fn stream_response(plan: AnswerPlan, mut format: impl ChoiceFormat) -> Response {
    let AnswerPlan {
        policy,
        plans,
        echo_last,
        usage,
        include_usage,
        header,
    } = plan;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let (events_tx, mut events) = mpsc::channel(64);
        let mut tasks = tokio::task::JoinSet::new();
        for (index, plan) in plans.into_iter().enumerate() {
            tasks.spawn(stream::run_choice(
                policy.clone(),
                plan,
                index,
                echo_last,
                events_tx.clone(),
            ));
        }
        drop(events_tx);
        while let Some(event) = events.recv().await {
            if tx
                .send(event_text(&header, &mut format, event))
                .await
                .is_err()
            {
                return; // client gone: dropping `tasks` aborts the choices
            }
        }
        let mut sampled = 0;
        while let Some(n) = tasks.join_next().await {
            sampled += n.unwrap_or(0);
        }
        if include_usage {
            let usage = Usage::new(usage.prompt_tokens, sampled);
            let _ = tx.send(header.chunk(json!([]), Some(usage))).await;
        }
        let _ = tx.send("[DONE]".to_string()).await;
    });
    stream::sse(rx).into_response()
}

/// One event as the client reads it: a delta as a chunk of its one choice, an error as the error body.
fn event_text(header: &ChunkHeader, format: &mut impl ChoiceFormat, event: ChoiceEvent) -> String {
    match event {
        ChoiceEvent::Delta(d) => {
            let lines: Vec<_> = d.lines.iter().map(|l| l.as_line()).collect();
            header.chunk(json!([format.delta(&d, &lines)]), None)
        }
        ChoiceEvent::Error(e) => e.body().to_string(),
    }
}

/// Runs every choice (they queue as separate jobs) and returns their outcomes in order.
async fn run_all(policy: &Policy, plans: Vec<ChoicePlan>) -> Result<Vec<ChoiceOutcome>, ApiError> {
    let runs = plans
        .into_iter()
        .map(|plan| completion::run_choice(policy, plan));
    futures_util::future::try_join_all(runs)
        .await
        .map_err(ApiError::from)
}

/// The fixed part of every streamed chunk.
#[derive(Clone)]
pub struct ChunkHeader {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    /// The policy's `system_fingerprint` (OpenAI's field: what defines the numbers).
    pub system_fingerprint: String,
}

impl ChunkHeader {
    /// A new answer's header: a fresh id with the endpoint's prefix, stamped now, under the name the
    /// client asked for.
    pub fn new(id_prefix: &str, object: &'static str, model: String, policy: &Policy) -> Self {
        ChunkHeader {
            id: new_id(id_prefix),
            object,
            created: unix_time(),
            model,
            system_fingerprint: policy.system_fingerprint().to_string(),
        }
    }

    /// A chunk with these choices (and usage, for the last one).
    pub fn chunk(&self, choices: Value, usage: Option<Usage>) -> String {
        let mut v = json!({
            "id": self.id, "object": self.object, "created": self.created,
            "model": self.model, "system_fingerprint": self.system_fingerprint, "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = serde_json::to_value(u).expect("usage serializes");
        }
        v.to_string()
    }

    /// The whole answer, under its own `object` (the header's names the chunks).
    fn whole(&self, object: &str, choices: &impl Serialize, usage: Usage) -> Response {
        Json(WholeAnswer {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: &self.system_fingerprint,
            choices,
            usage,
        })
        .into_response()
    }
}

/// A whole (non-streamed) answer, serialized straight into the response body.
#[derive(Serialize)]
struct WholeAnswer<'a, C: Serialize> {
    id: &'a str,
    object: &'a str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: &'a C,
    usage: Usage,
}

//! The Fireworks/OpenAI wire format: `/completions` and `/chat/completions`, so that existing clients
//! (openai and fireworks-ai SDKs, LangChain, lm-eval) switch to llama-scorer by changing the base URL.

pub mod chat;
pub mod choice;
pub mod completions;
pub mod params;
pub mod stream;

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use self::choice::{ChoiceOutcome, ChoicePlan};
use self::params::Validated;
use self::stream::ChoiceEvent;
use crate::api::{ApiError, AppState};
use crate::engine::{Policy, PreparedItem, PromptInput, ScoreError};
use crate::request_policy::{choice_seed, fit_max_tokens};
use crate::served::{RemotePolicy, ServedPolicy, prepare_where_cheapest};

pub use crate::api::Usage;

impl Usage {
    /// The same usage with the tokens the outcomes sampled.
    pub fn with_completions(self, outcomes: &[ChoiceOutcome]) -> Usage {
        Usage::new(self.prompt_tokens, outcomes.iter().map(|o| o.sampled).sum())
    }
}

/// The choices of a request: prompts tokenized (see [`prepare_where_cheapest`]), `max_tokens` fitted to each
/// prompt's room in the context (or refused with `context_length_exceeded_behavior: error`), and `n`
/// choices per prompt, choice j sampling with seed + j. Also returns the usage of the prompts.
pub async fn plan_choices(
    body_bytes: usize,
    policy: &Arc<Policy>,
    inputs: Vec<PromptInput>,
    sampling: &Validated,
    echo: bool,
    top_logprobs: usize,
) -> Result<(Vec<ChoicePlan>, Usage), ApiError> {
    let p = policy.clone();
    let many = inputs.len() > 1;
    let prepared: Vec<PreparedItem> = prepare_where_cheapest(body_bytes, move || {
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                p.prepare_prompt(input)
                    .map_err(|e| wire_prompt_field(e, many.then_some(i)))
            })
            .collect::<Result<Vec<_>, ScoreError>>()
    })
    .await?;
    let mut plans = Vec::new();
    let mut prompt_tokens = 0;
    for item in prepared {
        let p = item.prompt_len;
        prompt_tokens += p;
        let mut options = sampling.options.clone();
        options.max_tokens = fit_max_tokens(
            options.max_tokens,
            p,
            policy.n_ctx,
            sampling.error_on_overflow,
        )
        .map_err(|_| ScoreError::TooLong {
            field: "max_tokens".into(),
            tokens: p + options.max_tokens,
            prompt_tokens: p,
            response_tokens: options.max_tokens,
            limit: policy.n_ctx,
            policy: policy.name.clone(),
        })?;
        let item = Arc::new(item);
        for j in 0..sampling.n {
            let generate = (options.max_tokens > 0).then(|| {
                let mut o = options.clone();
                o.seed = choice_seed(o.seed, j);
                o
            });
            plans.push(ChoicePlan {
                prompt: item.clone(),
                generate,
                echo,
                top_logprobs,
            });
        }
    }
    Ok((plans, Usage::new(prompt_tokens, 0)))
}

/// The local policy a compatibility request names; a remote one gets the request forwarded instead
/// (`Err(Ok(response))`): the body as the client sent it (already checked against this API's fields),
/// the upstream's answer under the policy's own name.
pub async fn local_or_forward(
    state: &AppState,
    model: &str,
    endpoint: &str,
    raw: Option<Bytes>,
    stream: bool,
) -> Result<Result<Arc<Policy>, Response>, ApiError> {
    let remote: Arc<RemotePolicy> = match state.policy(model)? {
        ServedPolicy::Local(p) => return Ok(Ok(p.clone())),
        ServedPolicy::Remote(r) => r.clone(),
    };
    if stream {
        return Err(ApiError::invalid(
            "stream",
            format!(
                "policy `{model}` is served by a remote {} API, through which this server does not \
                 stream; send `stream: false`",
                remote.provider()
            ),
        ));
    }
    let body: Value = raw
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::invalid("", "the body is not a JSON object"))?;
    let answer = remote.forward(endpoint, body, state.deadline()).await?;
    Ok(Err(axum::Json(answer).into_response()))
}

/// Names a prompt's field as the client wrote it: text and token ids are both `prompt` on the wire, the
/// `i`-th of several `prompt[i]` (`prompt[1][3]` for its fourth token id).
fn wire_prompt_field(e: ScoreError, i: Option<usize>) -> ScoreError {
    let name = i.map_or_else(|| "prompt".to_string(), |i| format!("prompt[{i}]"));
    e.map_field(|field| {
        match field
            .strip_prefix("prompt_token_ids")
            .or_else(|| field.strip_prefix("prompt"))
        {
            Some(rest) => format!("{name}{rest}"),
            None => field,
        }
    })
}

/// Runs every choice (they queue as separate jobs) and returns their outcomes in order.
pub async fn run_all(
    policy: &Policy,
    plans: Vec<ChoicePlan>,
) -> Result<Vec<ChoiceOutcome>, ApiError> {
    let runs = plans.into_iter().map(|plan| choice::run(policy, plan));
    futures_util::future::try_join_all(runs)
        .await
        .map_err(ApiError::from)
}

/// How a streamed response is put together.
pub struct StreamPlan {
    pub policy: Arc<Policy>,
    pub plans: Vec<ChoicePlan>,
    pub echo_last: Option<usize>,
    pub usage: Usage,
    pub include_usage: bool,
    pub header: ChunkHeader,
}

/// Streams every choice as server-sent events: deltas formatted by `format` as they come, then (if asked)
/// a usage chunk, then `[DONE]`. When the client goes away, every choice is abandoned.
pub fn stream_response(
    plan: StreamPlan,
    mut format: impl FnMut(&ChunkHeader, ChoiceEvent) -> String + Send + 'static,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let StreamPlan {
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
            if tx.send(format(&header, event)).await.is_err() {
                return; // client gone: dropping `tasks` aborts the choices
            }
        }
        let mut sampled = 0;
        while let Some(n) = tasks.join_next().await {
            sampled += n.unwrap_or(0);
        }
        if include_usage {
            let usage = Usage::new(usage.prompt_tokens, sampled);
            let _ = tx
                .send(header.chunk(serde_json::json!([]), Some(usage)))
                .await;
        }
        let _ = tx.send("[DONE]".to_string()).await;
    });
    stream::sse(rx).into_response()
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
    /// A chunk with these choices (and usage, for the last one).
    pub fn chunk(&self, choices: Value, usage: Option<Usage>) -> String {
        let mut v = serde_json::json!({
            "id": self.id, "object": self.object, "created": self.created,
            "model": self.model, "system_fingerprint": self.system_fingerprint, "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = serde_json::to_value(u).expect("usage serializes");
        }
        v.to_string()
    }
}

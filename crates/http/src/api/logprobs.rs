//! `POST /v1/logprobs`: the native scoring API — log π(response | prompt) for one item or a batch, with
//! per-token detail in Fireworks' logprobs shape.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderName;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::json::parse;
use super::observe::server_timing;
use super::{AppState, Usage, new_id, unix_time};
use crate::engine::{ItemInput, ScoreOptions};
use crate::input::{WireItem, WireMessage};
use crate::ratios::{LogRatio, log_ratio};
use crate::report::{ItemReport, TokenReport};
use crate::request_budget::check_policy_list;
use crate::request_policy::{MAX_TOP_LOGPROBS, check_temperature, check_top_logprobs};
use crate::served::{ScoreRequest, Scores, ServedPolicy, score_together};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogprobsRequest {
    /// The policy (or give `models`).
    pub model: Option<String>,
    /// Several policies: one result per (item, policy).
    pub models: Option<Vec<String>>,
    /// The policy the others' log-ratios are taken against (scored too, if not in `models`).
    pub base: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<WireMessage>>,
    pub prompt_token_ids: Option<Vec<i64>>,
    pub response: Option<String>,
    pub response_token_ids: Option<Vec<i64>>,
    pub items: Option<Vec<WireItem>>,
    #[serde(default)]
    pub top_logprobs: u32,
    #[serde(default)]
    pub echo: bool,
    #[serde(default)]
    pub score_end_of_turn: bool,
    pub temperature: Option<f64>,
}

/// `logprobs` of an item, in Fireworks' `content[]` shape so existing parsers read it.
#[derive(Debug, Serialize)]
pub struct WireLogprobs {
    pub content: Vec<WireToken>,
}

/// One token's scores, with its log-ratio against the base where the tokens align.
#[derive(Debug, Serialize)]
pub struct WireToken {
    #[serde(flatten)]
    pub report: TokenReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_ratio: Option<Option<f64>>,
}

/// The scores of one item.
#[derive(Debug, Serialize)]
pub struct WireItemResult {
    pub index: usize,
    pub object: &'static str,
    /// The policy (requests with `models` or `base` only: the answer holds several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// log π(response | prompt) at temperature 1 (plus end of turn when asked).
    pub logprob: f64,
    /// The same at `temperature`; `null` where a remote provider does not compute it.
    pub sampling_logprob: Option<f64>,
    pub temperature: f64,
    /// Sum over the echoed prompt tokens after the first (only with `echo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprob: Option<f64>,
    pub prompt_tokens: usize,
    pub response_tokens: usize,
    /// Tokens whose scores make up `logprob` (response tokens, plus one with `score_end_of_turn`).
    pub scored_tokens: usize,
    pub cached: bool,
    /// What defines these numbers (OpenAI's field; see `/ready`): equal fingerprints give equal bits.
    pub system_fingerprint: Option<String>,
    /// With `base`: sampling_logprob − the base's for this item (`null` where either has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_ratio: Option<Option<f64>>,
    /// With `base`: whether this policy scored the same tokens as the base (then each scored token carries
    /// its `log_ratio`); false: different tokenizations, only the sums compare.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_aligned: Option<bool>,
    pub logprobs: WireLogprobs,
}

impl WireItemResult {
    /// The wire form of item `index`'s report.
    fn new(index: usize, r: ItemReport, temperature: f64) -> WireItemResult {
        WireItemResult {
            index,
            object: "logprobs",
            model: None,
            log_ratio: None,
            tokens_aligned: None,
            logprob: r.logprob,
            sampling_logprob: r.sampling_logprob,
            temperature,
            prompt_logprob: r.prompt_logprob,
            prompt_tokens: r.prompt_tokens,
            response_tokens: r.response_tokens,
            scored_tokens: r.scored_tokens,
            cached: r.cached,
            system_fingerprint: r.system_fingerprint,
            logprobs: WireLogprobs {
                content: r
                    .tokens
                    .into_iter()
                    .map(|report| WireToken {
                        report,
                        log_ratio: None,
                    })
                    .collect(),
            },
        }
    }

    /// Adds the log-ratio against the base (per scored token where the tokens align).
    fn with_ratio(mut self, ratio: LogRatio) -> WireItemResult {
        self.log_ratio = Some(ratio.total);
        self.tokens_aligned = Some(ratio.per_token.is_some());
        if let Some(per_token) = ratio.per_token {
            let first = self.logprobs.content.len() - per_token.len();
            for (t, r) in self.logprobs.content[first..].iter_mut().zip(per_token) {
                t.log_ratio = Some(r);
            }
        }
        self
    }
}

/// The response body.
#[derive(Debug, Serialize)]
pub struct LogprobsResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    /// The policy of a one-policy request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The policies of a request with `models`/`base`, in the order each item's results follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// A one-policy request's fingerprint (OpenAI's field); per result with `models`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub data: Vec<WireItemResult>,
    pub usage: Usage,
}

/// Handler for `POST /v1/logprobs` and `POST /inference/v1/logprobs`.
pub async fn logprobs(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body_bytes = body.as_ref().map_or(0, |b| b.len());
    let mut req: LogprobsRequest = parse(body)?;
    let names = policy_names(&req, state.policies.all().len())?;
    let policies = resolve_policies(&state, &req, &names)?;
    let top_logprobs = check_top_logprobs(req.top_logprobs, MAX_TOP_LOGPROBS)
        .map_err(|m| ApiError::invalid("top_logprobs", m))?;
    if let Some(t) = req.temperature {
        check_temperature(t).map_err(|m| ApiError::invalid("temperature", m))?;
    }
    let (items, batch) = request_items(&mut req, state.max_batch_items)?;
    // Every policy at its own temperature (or the request's), all at once: policies on different models
    // or remotes run in parallel, and policies sharing a model share each decode (see `score_together`).
    let deadline = state.deadline();
    let requests: Vec<(ServedPolicy, ScoreRequest)> = policies
        .into_iter()
        .map(|policy| {
            let options = ScoreOptions {
                top_logprobs,
                echo: req.echo,
                score_end_of_turn: req.score_end_of_turn,
                temperature: req.temperature.unwrap_or(policy.temperature()),
            };
            let request = ScoreRequest {
                items: items.clone(),
                options,
                batch,
                deadline,
                body_bytes,
            };
            (policy, request)
        })
        .collect();
    let temperatures: Vec<f64> = requests
        .iter()
        .map(|(_, r)| r.options.temperature)
        .collect();
    let answers: Vec<Scores> = score_together(requests)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let timing = server_timing(&slowest_stages(answers.iter().map(|s| &s.stages)));
    let reports = answers.iter().flat_map(|s| &s.items);
    let usage = Usage::new(
        reports.clone().map(|r| r.prompt_tokens).sum(),
        reports.map(|r| r.response_tokens).sum(),
    );
    let single = req.models.is_none() && req.base.is_none();
    let base_at = req
        .base
        .as_ref()
        .map(|b| names.iter().position(|n| n == b).expect("base is listed"));
    let data = item_major(
        answers,
        &temperatures,
        base_at,
        (!single).then_some(&names[..]),
    );
    let headers = [(HeaderName::from_static("server-timing"), timing)];
    Ok((
        headers,
        Json(LogprobsResponse {
            id: new_id("lp"),
            object: "list",
            created: unix_time(),
            model: single.then(|| names[0].clone()),
            models: (!single).then_some(names),
            base: req.base,
            system_fingerprint: single
                .then(|| data.first().and_then(|d| d.system_fingerprint.clone()))
                .flatten(),
            data,
            usage,
        }),
    ))
}

/// The served policy of each name, an unknown one refused naming where the request gave it (`model`,
/// `models[i]` or `base`).
fn resolve_policies(
    state: &AppState,
    req: &LogprobsRequest,
    names: &[String],
) -> Result<Vec<ServedPolicy>, ApiError> {
    let listed = req.models.as_ref().map_or(0, Vec::len);
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            state.policy(n).cloned().map_err(|mut e| {
                e.param = Some(match (&req.models, i < listed) {
                    (Some(_), true) => format!("models[{i}]"),
                    (Some(_), false) => "base".into(),
                    (None, _) if i == 0 => "model".into(),
                    (None, _) => "base".into(),
                });
                e
            })
        })
        .collect()
}

/// The request's items (taken out of it) and whether they came as a batch (`items`) rather than one inline
/// item; a batch is non-empty, within `max_items`, and not mixed with inline fields.
fn request_items(
    req: &mut LogprobsRequest,
    max_items: usize,
) -> Result<(Vec<ItemInput>, bool), ApiError> {
    let inline = WireItem {
        prompt: req.prompt.take(),
        messages: req.messages.take(),
        prompt_token_ids: req.prompt_token_ids.take(),
        response: req.response.take(),
        response_token_ids: req.response_token_ids.take(),
    };
    let Some(items) = req.items.take() else {
        return Ok((vec![inline.into_input("")?], false));
    };
    if !inline.is_empty() {
        return Err(ApiError::invalid(
            "items",
            "give either `items` or one inline item (prompt/messages + response), not both",
        ));
    }
    if items.is_empty() {
        return Err(ApiError::invalid("items", "must not be empty"));
    }
    if items.len() > max_items {
        return Err(ApiError::invalid(
            "items",
            format!(
                "{} items is more than this server's limit of {max_items} per request",
                items.len()
            ),
        ));
    }
    let inputs = items
        .into_iter()
        .enumerate()
        .map(|(i, it)| it.into_input(&format!("items[{i}]")))
        .collect::<Result<Vec<ItemInput>, _>>()?;
    Ok((inputs, true))
}

/// The results item-major (each item's policies in order), each named by its policy when `names` is given,
/// and with `base_at` the log-ratio against that policy's result for the same item.
fn item_major(
    answers: Vec<Scores>,
    temperatures: &[f64],
    base_at: Option<usize>,
    names: Option<&[String]>,
) -> Vec<WireItemResult> {
    let n_items = answers.first().map_or(0, |s| s.items.len());
    let bases: Vec<ItemReport> = base_at.map_or_else(Vec::new, |j| answers[j].items.clone());
    let mut per_policy: Vec<std::vec::IntoIter<ItemReport>> =
        answers.into_iter().map(|s| s.items.into_iter()).collect();
    let mut data = Vec::with_capacity(n_items * per_policy.len());
    for index in 0..n_items {
        for (j, reports) in per_policy.iter_mut().enumerate() {
            let report = reports.next().expect("one report per item");
            let ratio = bases.get(index).map(|base| log_ratio(&report, base));
            let mut entry = WireItemResult::new(index, report, temperatures[j]);
            entry.model = names.map(|n| n[j].clone());
            if let Some(ratio) = ratio {
                entry = entry.with_ratio(ratio);
            }
            data.push(entry);
        }
    }
    data
}

/// The policies a request names: `model`, or `models` (distinct, non-empty, no more than the `served`
/// policies), with `base` added when not among them.
fn policy_names(req: &LogprobsRequest, served: usize) -> Result<Vec<String>, ApiError> {
    let mut names = match (&req.model, &req.models) {
        (Some(m), None) => vec![m.clone()],
        (None, Some(ms)) => {
            if ms.is_empty() {
                return Err(ApiError::invalid("models", "must not be empty"));
            }
            check_policy_list(ms, served).map_err(|(i, m)| match i {
                Some(i) => ApiError::invalid(format!("models[{i}]"), m),
                None => ApiError::invalid("models", m),
            })?;
            ms.clone()
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "models",
                "give either `model` (one policy) or `models` (several), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "model",
                "required: the policy to score under (or `models` for several)",
            ));
        }
    };
    if let Some(base) = &req.base
        && !names.contains(base)
    {
        names.push(base.clone());
    }
    Ok(names)
}

/// Per stage, the longest of the policies' times (they run in parallel).
fn slowest_stages<'a>(
    all: impl Iterator<Item = &'a Vec<(&'static str, std::time::Duration)>>,
) -> Vec<(&'static str, std::time::Duration)> {
    let mut out: Vec<(&'static str, std::time::Duration)> = Vec::new();
    for stages in all {
        for &(name, d) in stages {
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, longest)) => *longest = (*longest).max(d),
                None => out.push((name, d)),
            }
        }
    }
    out
}

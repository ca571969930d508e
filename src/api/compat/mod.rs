//! The Fireworks/OpenAI wire format: `/completions` and `/chat/completions`, so that existing clients
//! (openai and fireworks-ai SDKs, LangChain, lm-eval) switch to llama-scorer by changing the base URL.

pub mod answer;
pub mod chat;
pub mod choice;
pub mod completions;
pub mod params;
pub mod request;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use self::choice::{ChoiceOutcome, ChoicePlan};
use self::params::Validated;
use crate::api::ApiError;
use crate::engine::generate::GenerateOptions;
use crate::engine::{Policy, PreparedItem, PromptInput, ScoreError};
use crate::request_budget::{answer_entries, check_answer_entries, check_fan_out};
use crate::request_policy::{choice_seed, fit_max_tokens};
use crate::served::prepare_where_cheapest;

pub use crate::api::Usage;

impl Usage {
    /// The same usage with the tokens the outcomes sampled.
    pub fn with_completions(self, outcomes: &[ChoiceOutcome]) -> Usage {
        Usage::new(self.prompt_tokens, outcomes.iter().map(|o| o.sampled).sum())
    }
}

/// The limits a compatibility request is planned within (see [`crate::request_budget`]).
pub struct Budget {
    /// The server's `max_batch_items`: most choices (prompts × n) per request.
    pub max_items: usize,
    /// When the request's answer is due: preparation still running then stops.
    pub deadline: Instant,
    /// The field that asks for alternatives per token (`logprobs` or `top_logprobs`), named when the
    /// answer would be too large.
    pub alternatives_field: &'static str,
}

/// The choices of a request: prompts × n checked against the budget before any work, prompts tokenized
/// (see [`prepare_where_cheapest`]; stopped at the deadline), `max_tokens` fitted to each prompt's room in
/// the context (or refused with `context_length_exceeded_behavior: error`), the answer's size checked, and
/// `n` choices per prompt, choice j sampling with seed + j. Also returns the usage of the prompts.
pub async fn plan_choices(
    body_bytes: usize,
    policy: &Arc<Policy>,
    inputs: Vec<PromptInput>,
    sampling: &Validated,
    echo: bool,
    top_logprobs: usize,
    budget: Budget,
) -> Result<(Vec<ChoicePlan>, Usage), ApiError> {
    let field = if inputs.len() > 1 && sampling.n == 1 {
        "prompt"
    } else {
        "n"
    };
    check_fan_out(inputs.len(), sampling.n, budget.max_items)
        .map_err(|m| ApiError::invalid(field, m))?;
    let p = policy.clone();
    let many = inputs.len() > 1;
    let deadline = budget.deadline;
    let prepared: Vec<PreparedItem> = prepare_where_cheapest(body_bytes, move || {
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                if Instant::now() > deadline {
                    return Err(ScoreError::Unavailable(
                        "the request's deadline passed while its prompts were being prepared"
                            .into(),
                    ));
                }
                p.prepare_prompt(input)
                    .map_err(|e| wire_prompt_field(e, many.then_some(i)))
            })
            .collect::<Result<Vec<_>, ScoreError>>()
    })
    .await?;
    let mut plans = Vec::with_capacity(prepared.len() * sampling.n);
    let mut prompt_tokens = 0;
    let mut answer_tokens = 0usize;
    // Shared by every choice: only the seed differs between them.
    let options = Arc::new(sampling.options.clone());
    for item in prepared {
        let p = item.prompt_len;
        prompt_tokens += p;
        let max_tokens = fit_max_tokens(
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
        let echoed = if echo { p } else { 0 };
        answer_tokens =
            answer_tokens.saturating_add((echoed + max_tokens).saturating_mul(sampling.n));
        let item = Arc::new(item);
        for j in 0..sampling.n {
            let generate = (max_tokens > 0).then(|| GenerateOptions {
                max_tokens,
                seed: choice_seed(options.seed, j),
                ..GenerateOptions::clone(&options)
            });
            plans.push(ChoicePlan {
                prompt: item.clone(),
                generate,
                echo,
                top_logprobs,
                place: None,
                echoed: None,
            });
        }
    }
    let too_many_tokens = check_answer_entries(answer_entries(answer_tokens, 0)).is_err();
    check_answer_entries(answer_entries(answer_tokens, top_logprobs)).map_err(|m| {
        let field = if too_many_tokens {
            "max_tokens"
        } else {
            budget.alternatives_field
        };
        ApiError::invalid(field, m)
    })?;
    Ok((plans, Usage::new(prompt_tokens, 0)))
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

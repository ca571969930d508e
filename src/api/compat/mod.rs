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

use self::choice::{ChoiceOutcome, ChoicePlan};
use self::params::Validated;
use crate::api::ApiError;
use crate::engine::{Policy, PreparedItem, PromptInput, ScoreError};
use crate::request_policy::{choice_seed, fit_max_tokens};
use crate::served::prepare_where_cheapest;

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

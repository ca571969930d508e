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

use self::params::Validated;
use crate::api::ApiError;
use crate::engine::{Policy, PromptInput};
use crate::served::completion::{self, ChoiceOutcome, ChoicePlan, ChoiceRequest};

pub use crate::served::completion::Budget;

pub use crate::api::Usage;

impl Usage {
    /// The same usage with the tokens the outcomes sampled.
    pub fn with_completions(self, outcomes: &[ChoiceOutcome]) -> Usage {
        Usage::new(self.prompt_tokens, outcomes.iter().map(|o| o.sampled).sum())
    }
}

/// The choices of a request, planned at the policy seam (see [`completion::plan`]), and the usage of its
/// prompts.
pub async fn plan_choices(
    body_bytes: usize,
    policy: &Arc<Policy>,
    inputs: Vec<PromptInput>,
    sampling: &Validated,
    echo: bool,
    top_logprobs: usize,
    budget: Budget,
) -> Result<(Vec<ChoicePlan>, Usage), ApiError> {
    let req = ChoiceRequest {
        inputs,
        n: sampling.n,
        options: sampling.options.clone(),
        error_on_overflow: sampling.error_on_overflow,
        echo,
        top_logprobs,
    };
    let (plans, prompt_tokens) = completion::plan(body_bytes, policy, req, budget).await?;
    Ok((plans, Usage::new(prompt_tokens, 0)))
}

//! The compatibility endpoints (OpenAI/Fireworks `completions` and `chat/completions`) at the policy seam,
//! as `/v1/logprobs` scores through [`ServedPolicy::score`]: [`ServedPolicy::complete`] decides where a
//! request goes — a remote policy's provider answers it upstream, a local policy's choices are planned
//! ([`plan`]) and run ([`run_choice`], [`generate`]) on this process's engine here. The endpoints only
//! parse requests and write answers. Free of HTTP-framework types.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::mpsc;

use super::{ServeError, ServedPolicy, prepare_where_cheapest};
use crate::engine::generate::{FinishReason, GenEvent, GenerateOptions};
use crate::engine::vocab::{TokenId, Vocabulary};
use crate::engine::{
    Policy, PreparedItem, PromptInput, QueuePlace, ScoreError, ScoreOptions, TokenScore,
};
use crate::request_budget::{answer_entries, check_answer_entries, check_fan_out};
use crate::request_policy::{choice_seed, fit_max_tokens};

/// Where a compatibility request goes, as its policy decides.
pub enum Completion {
    /// A local policy: plan and run its choices here ([`plan`], then [`run_choice`] or [`generate`]).
    Local(Arc<Policy>),
    /// A remote policy's answer, under the policy's own name, to return as it is.
    Answered(Value),
}

impl ServedPolicy {
    /// Opens a compatibility request to `endpoint` (`completions` or `chat/completions`). A remote policy
    /// forwards the body as the client sent it (`body` is read only then; already checked against the
    /// endpoint's fields) and answers with the upstream's answer; it does not stream. A local one is handed
    /// back to plan and run.
    pub async fn complete(
        &self,
        endpoint: &str,
        body: impl FnOnce() -> Option<Value>,
        stream: bool,
        deadline: Instant,
    ) -> Result<Completion, ServeError> {
        let remote = match self {
            ServedPolicy::Local(policy) => return Ok(Completion::Local(policy.clone())),
            ServedPolicy::Remote(remote) => remote,
        };
        if stream {
            return Err(ScoreError::invalid(
                "stream",
                format!(
                    "policy `{}` is served by a remote {} API, through which this server does not \
                     stream; send `stream: false`",
                    remote.name,
                    remote.provider()
                ),
            )
            .into());
        }
        let body =
            body().ok_or_else(|| ScoreError::invalid("", "the body is not a JSON object"))?;
        let answer = remote.forward(endpoint, body, deadline).await?;
        Ok(Completion::Answered(answer))
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

/// What a compatibility request asks of a local policy, once its fields are validated.
pub struct ChoiceRequest {
    /// The prompts, each answered with `n` choices.
    pub inputs: Vec<PromptInput>,
    pub n: usize,
    /// Sampling for every choice (`max_tokens: 0`: score only); choice j samples with seed + j.
    pub options: GenerateOptions,
    /// Whether a prompt + `max_tokens` over the context is an error (else `max_tokens` shrinks).
    pub error_on_overflow: bool,
    /// Whether the prompt's tokens are scored and returned.
    pub echo: bool,
    /// Alternatives per token.
    pub top_logprobs: usize,
}

/// The choices of a request: prompts × n checked against the budget before any work, prompts tokenized
/// (see [`prepare_where_cheapest`]; stopped at the deadline), `max_tokens` fitted to each prompt's room in
/// the context (or refused with `context_length_exceeded_behavior: error`), the answer's size checked, and
/// `n` choices per prompt, choice j sampling with seed + j. Also returns the prompts' token count.
pub async fn plan(
    body_bytes: usize,
    policy: &Arc<Policy>,
    req: ChoiceRequest,
    budget: Budget,
) -> Result<(Vec<ChoicePlan>, usize), ScoreError> {
    let ChoiceRequest {
        inputs,
        n,
        options,
        error_on_overflow,
        echo,
        top_logprobs,
    } = req;
    let field = if inputs.len() > 1 && n == 1 {
        "prompt"
    } else {
        "n"
    };
    check_fan_out(inputs.len(), n, budget.max_items).map_err(|m| ScoreError::invalid(field, m))?;
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
    let mut plans = Vec::with_capacity(prepared.len() * n);
    let mut prompt_tokens = 0;
    let mut answer_tokens = 0usize;
    // Shared by every choice: only the seed differs between them.
    let options = Arc::new(options);
    for item in prepared {
        let p = item.prompt_len;
        prompt_tokens += p;
        let max_tokens = fit_max_tokens(options.max_tokens, p, policy.n_ctx, error_on_overflow)
            .map_err(|_| ScoreError::TooLong {
                field: "max_tokens".into(),
                tokens: p + options.max_tokens,
                prompt_tokens: p,
                response_tokens: options.max_tokens,
                limit: policy.n_ctx,
                policy: policy.name.clone(),
            })?;
        let echoed = if echo { p } else { 0 };
        answer_tokens = answer_tokens.saturating_add((echoed + max_tokens).saturating_mul(n));
        let item = Arc::new(item);
        for j in 0..n {
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
        ScoreError::invalid(field, m)
    })?;
    Ok((plans, prompt_tokens))
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

/// What to run for one choice.
pub struct ChoicePlan {
    pub prompt: Arc<PreparedItem>,
    /// `None` = score only (`max_tokens: 0`).
    pub generate: Option<GenerateOptions>,
    pub echo: bool,
    pub top_logprobs: usize,
    /// The generation's place in the model's queue, reserved with the request's other choices (see
    /// [`reserve_places`]); `None` = reserved when it runs.
    pub place: Option<QueuePlace>,
    /// A score-only echo's prompt scores, computed with the request's other score-only choices (see
    /// [`score_echoes`]).
    pub echoed: Option<Vec<TokenScore>>,
}

/// Reserves a queue place for every generating choice at once, all or none: one request's fan-out either
/// fits the queue whole or is refused (429) before any of it is queued.
pub fn reserve_places(policy: &Policy, plans: &mut [ChoicePlan]) -> Result<(), ScoreError> {
    let generating = plans.iter().filter(|p| p.generate.is_some()).count();
    let mut places = policy.reserve(generating)?.into_iter();
    for plan in plans.iter_mut().filter(|p| p.generate.is_some()) {
        plan.place = places.next();
    }
    Ok(())
}

/// Scores every score-only echo choice (`max_tokens: 0`) in one call, so the request's scoring is admitted
/// to the model's queue all at once or refused (429) before any of it runs, as its generations are.
pub async fn score_echoes(policy: &Policy, plans: &mut [ChoicePlan]) -> Result<(), ScoreError> {
    let scoring: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].generate.is_none() && plans[i].echo)
        .collect();
    let Some(&first) = scoring.first() else {
        return Ok(());
    };
    let options = echo_options(plans[first].top_logprobs);
    let prompts = scoring.iter().map(|&i| plans[i].prompt.clone()).collect();
    let scores = policy.score(prompts, &options).await?;
    for (i, scored) in scoring.into_iter().zip(scores) {
        plans[i].echoed = Some(scored.score.prompt.clone());
    }
    Ok(())
}

/// How a score-only echo is scored: the prompt's tokens, at temperature 1.
fn echo_options(top_logprobs: usize) -> ScoreOptions {
    ScoreOptions {
        top_logprobs,
        echo: true,
        score_end_of_turn: false,
        temperature: 1.0,
    }
}

/// The plan's reserved place, or one reserved now.
fn place_of(policy: &Policy, place: Option<QueuePlace>) -> Result<QueuePlace, ScoreError> {
    match place {
        Some(place) => Ok(place),
        None => Ok(policy.reserve(1)?.remove(0)),
    }
}

/// Starts a generating choice (its plan has `generate`), returning the generation's events as they come.
pub async fn generate(
    policy: &Policy,
    plan: ChoicePlan,
) -> Result<mpsc::Receiver<GenEvent>, ScoreError> {
    let options = plan
        .generate
        .expect("generate is called for generating choices only");
    let place = place_of(policy, plan.place)?;
    policy
        .generate(plan.prompt, options, plan.echo, plan.top_logprobs, place)
        .await
}

/// A finished choice.
pub struct ChoiceOutcome {
    pub prompt: Arc<PreparedItem>,
    /// Scores of prompt tokens 1..P when echo was asked.
    pub echo: Option<Vec<TokenScore>>,
    /// Generated tokens that start before the kept text ends.
    pub tokens: Vec<TokenScore>,
    /// The end-of-generation token the generation stopped on, if it did: generated, but not text.
    pub end: Option<TokenScore>,
    /// All tokens sampled (for usage), including any cut by a stop string and the end-of-generation one.
    pub sampled: usize,
    /// The generated text kept (bytes; a stop string and what follows are cut).
    pub text: Vec<u8>,
    pub finish: FinishReason,
}

/// Runs a choice to its end.
pub async fn run_choice(policy: &Policy, plan: ChoicePlan) -> Result<ChoiceOutcome, ScoreError> {
    if plan.generate.is_none() {
        let echo = if let Some(echoed) = plan.echoed {
            Some(echoed)
        } else if plan.echo {
            let options = echo_options(plan.top_logprobs);
            let mut scores = policy.score(vec![plan.prompt.clone()], &options).await?;
            Some(scores.remove(0).score.prompt.clone())
        } else {
            None
        };
        return Ok(ChoiceOutcome {
            prompt: plan.prompt,
            echo,
            tokens: Vec::new(),
            end: None,
            sampled: 0,
            text: Vec::new(),
            finish: FinishReason::Length,
        });
    }
    let prompt = plan.prompt.clone();
    let mut rx = generate(policy, plan).await?;
    let vocab = &policy.model.vocab;
    let mut outcome = ChoiceOutcome {
        prompt,
        echo: None,
        tokens: Vec::new(),
        end: None,
        sampled: 0,
        text: Vec::new(),
        finish: FinishReason::Length,
    };
    let mut starts = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Prompt(scores) => outcome.echo = Some(scores),
            GenEvent::Token(t) => {
                starts.push(outcome.text.len());
                outcome.text.extend_from_slice(vocab.piece(t.token));
                outcome.tokens.push(t);
            }
            GenEvent::End(t) => outcome.end = Some(t),
            GenEvent::Done { reason, text_len } => {
                outcome.sampled = outcome.tokens.len() + usize::from(outcome.end.is_some());
                outcome.text.truncate(text_len);
                let keep = starts.iter().take_while(|&&s| s < text_len).count();
                outcome.tokens.truncate(keep);
                outcome.finish = reason;
                return Ok(outcome);
            }
            GenEvent::Error(e) => return Err(e),
        }
    }
    Err(ScoreError::Unavailable(
        "the inference thread stopped before finishing".into(),
    ))
}

/// One token of a choice's output, in order, with its score (`None` for a first token without context).
#[derive(Clone, Copy)]
pub struct Line<'a> {
    pub token: TokenId,
    pub score: Option<&'a TokenScore>,
}

impl ChoiceOutcome {
    /// The echoed prompt tokens (the last `echo_last` of them, if given) followed by the generated ones.
    pub fn lines(&self, echo_last: Option<usize>) -> Vec<Line<'_>> {
        let mut out = Vec::new();
        if let Some(echo) = &self.echo {
            for i in echoed(&self.prompt, echo_last) {
                let token = self.prompt.tokens[i];
                let score = if i == 0 { None } else { Some(&echo[i - 1]) };
                out.push(Line { token, score });
            }
        }
        out.extend(self.tokens.iter().map(|t| Line {
            token: t.token,
            score: Some(t),
        }));
        out
    }

    /// [`ChoiceOutcome::lines`] and then the end-of-generation token the generation stopped on, as
    /// completions list it (OpenAI's legacy completions did): an echo with generation always ends with
    /// what was generated, so a client that drops the last entry as the generated token drops that one.
    pub fn lines_with_end(&self, echo_last: Option<usize>) -> Vec<Line<'_>> {
        let mut out = self.lines(echo_last);
        out.extend(self.end.iter().map(|t| Line {
            token: t.token,
            score: Some(t),
        }));
        out
    }

    /// Bytes of the echoed prompt part of the text (the pieces of the echoed prompt tokens).
    pub fn echo_text(&self, vocab: &Vocabulary, echo_last: Option<usize>) -> Vec<u8> {
        let Some(_) = &self.echo else {
            return Vec::new();
        };
        self.prompt.tokens[echoed(&self.prompt, echo_last)]
            .iter()
            .flat_map(|&t| vocab.piece(t).iter().copied())
            .collect()
    }
}

/// Positions of the prompt tokens an echo shows: all of them, or the last `echo_last` (Fireworks' option).
pub fn echoed(prompt: &PreparedItem, echo_last: Option<usize>) -> std::ops::Range<usize> {
    let p = prompt.prompt_len;
    echo_last.map_or(0, |n| p.saturating_sub(n))..p
}

//! The engine's request and result types: what to score, how, and what came out. Free of HTTP types so
//! every front end (the native API, the Fireworks/OpenAI API, the batch command) shares one contract.

use serde::Serialize;

use super::vocab::TokenId;

/// One chat message: `role` and text `content`, plus the optional `name` some templates read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The conditioning context of an item.
#[derive(Debug, Clone)]
pub enum PromptInput {
    /// Raw text; control-token strings in it are parsed as control tokens.
    Text(String),
    /// A conversation, rendered with the policy's chat template (`add_generation_prompt = true`).
    Messages(Vec<ChatMessage>),
    /// Token ids taken verbatim (no BOS is added).
    TokenIds(Vec<i64>),
}

/// The text being scored.
#[derive(Debug, Clone)]
pub enum ResponseInput {
    /// Plain text; a control-token string in it is scored as the characters it is.
    Text(String),
    /// Token ids taken verbatim.
    TokenIds(Vec<i64>),
}

/// One prompt/response pair to score.
#[derive(Debug, Clone)]
pub struct ItemInput {
    pub prompt: PromptInput,
    pub response: ResponseInput,
}

/// Options that apply to every item of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreOptions {
    /// How many most-likely alternatives to return per scored position (0–20).
    pub top_logprobs: usize,
    /// Also score the prompt tokens (each given the tokens before it).
    pub echo: bool,
    /// Also score the end-of-turn token after the response.
    pub score_end_of_turn: bool,
    /// Temperature for `sampling_logprob`.
    pub temperature: f64,
}

impl ScoreOptions {
    /// The rows these options read, whatever the temperature (what jobs at several temperatures share).
    pub fn rows(&self) -> RowOptions {
        RowOptions {
            echo: self.echo,
            top_logprobs: self.top_logprobs,
        }
    }
}

/// Which rows a scoring job reads and how much of each it reports: the part of a job's options that the
/// decode and the top-k share, whatever temperatures the rows are then reported at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowOptions {
    pub echo: bool,
    pub top_logprobs: usize,
}

/// An item after tokenization: the exact sequence the model sees and where the response starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PreparedItem {
    /// Prompt tokens followed by response tokens.
    pub tokens: Vec<TokenId>,
    /// Number of prompt tokens (≥ 1).
    pub prompt_len: usize,
    /// The end-of-turn token to score after the response, when asked for.
    pub end_of_turn: Option<TokenId>,
}

impl PreparedItem {
    /// Number of response tokens.
    pub fn response_len(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// One of the most likely tokens at a position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopEntry {
    pub token: TokenId,
    pub logprob: f64,
    pub sampling_logprob: f64,
}

/// The scores of one token given everything before it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenScore {
    pub token: TokenId,
    /// log softmax(z)[token] at temperature 1.
    pub logprob: f64,
    /// log softmax(z / T)[token] at the request's temperature.
    pub sampling_logprob: f64,
    /// The k most likely tokens, most likely first (k = `top_logprobs`).
    pub top: Vec<TopEntry>,
}

/// Where an item's time went inside the engine, for `Server-Timing`: waiting in the model's queue, then
/// on an inference thread. Zero for an item answered from the response cache.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub queue: std::time::Duration,
    pub compute: std::time::Duration,
}

/// The scores of one item, in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemScore {
    /// Scores of prompt tokens 1..P (only with `echo`; token 0 has no context and no score).
    pub prompt: Vec<TokenScore>,
    /// Scores of the response tokens.
    pub response: Vec<TokenScore>,
    /// Score of the end-of-turn token after the response (only with `score_end_of_turn`).
    pub end_of_turn: Option<TokenScore>,
}

impl ItemScore {
    /// The scored tokens that make up log π(response | prompt): the response and, if asked, end of turn.
    pub fn scored(&self) -> impl Iterator<Item = &TokenScore> {
        self.response.iter().chain(self.end_of_turn.iter())
    }

    /// log π(response | prompt) at temperature 1: the f64 sum of the scored tokens, in order.
    pub fn logprob(&self) -> f64 {
        sum_in_order(self.scored().map(|t| t.logprob))
    }

    /// The same sum at the request's temperature.
    pub fn sampling_logprob(&self) -> f64 {
        sum_in_order(self.scored().map(|t| t.sampling_logprob))
    }

    /// Sum over the echoed prompt tokens that have a context (all but the first).
    pub fn prompt_logprob(&self) -> f64 {
        sum_in_order(self.prompt.iter().map(|t| t.logprob))
    }
}

/// Left-to-right f64 sum starting from +0.0 (std's `Sum` starts from −0.0, which would make the score of
/// an empty response print as `-0.0`).
fn sum_in_order(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |acc, v| acc + v)
}

//! Request fields shared by `/completions` and `/chat/completions`, validated into engine options with
//! errors that name the field. Wire-only rules (OpenAI's ranges, `logprobs` as bool or int) live here.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

use crate::api::ApiError;
use crate::api::json::parse_object;
use crate::engine::Policy;
use crate::engine::generate::GenerateOptions;
use crate::input::{fields_of, from_object, reject_unknown};
use crate::request_policy::{
    COMPAT_TEMPERATURE_RANGE, MAX_CHAT_TOP_LOGPROBS, MAX_LEGACY_LOGPROBS, check_range,
    check_top_logprobs, fold_seed,
};

/// Parses a compatibility request body into its endpoint-specific fields and the shared sampling fields,
/// refusing any field that neither knows ("Extra inputs are not permitted", as Fireworks says).
pub fn parse_with_sampling<R: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<(R, Sampling), ApiError> {
    let object = parse_object(body)?;
    reject_unknown(&object, &[fields_of::<R>(), fields_of::<Sampling>()])?;
    Ok((from_object(&object)?, from_object(&object)?))
}

/// Most choices per prompt (`n`).
pub const MAX_N: u32 = 16;
/// Most stop strings.
pub const MAX_STOP: usize = 16;

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields both endpoints accept (OpenAI and Fireworks names).
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    /// OpenAI's newer name for `max_tokens` in chat.
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u32>,
    pub repetition_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub logit_bias: Option<HashMap<String, f64>>,
    pub context_length_exceeded_behavior: Option<String>,
}

fn range(field: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ApiError> {
    check_range(v, (lo, hi)).map_err(|m| ApiError::invalid(field, m))
}

/// Validated sampling settings, with `max_tokens` still to be fitted to the context.
pub struct Validated {
    pub options: GenerateOptions,
    pub n: usize,
    /// Whether a prompt + max_tokens over the context is an error (else max_tokens shrinks).
    pub error_on_overflow: bool,
}

impl Sampling {
    /// Checks every field; `default_max_tokens` is the endpoint's default (OpenAI: 16 for completions).
    pub fn validate(
        &self,
        policy: &Policy,
        default_max_tokens: u32,
    ) -> Result<Validated, ApiError> {
        let (lo, hi) = COMPAT_TEMPERATURE_RANGE;
        let temperature = range(
            "temperature",
            self.temperature.unwrap_or(policy.temperature),
            lo,
            hi,
        )?;
        let top_p = range("top_p", self.top_p.unwrap_or(1.0), 0.0, 1.0)?;
        if top_p == 0.0 {
            return Err(ApiError::invalid("top_p", "must be greater than 0"));
        }
        let top_k = self.top_k.unwrap_or(0);
        if !(0..=i32::MAX as i64).contains(&top_k) {
            return Err(ApiError::invalid(
                "top_k",
                format!("must be 0 (off) or a positive count, got {top_k}"),
            ));
        }
        let min_p = range("min_p", self.min_p.unwrap_or(0.0), 0.0, 1.0)?;
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ApiError::invalid(
                "n",
                format!("must be between 1 and {MAX_N}, got {n}"),
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid(
                "stop",
                format!("at most {MAX_STOP} stop strings, got {}", stop.len()),
            ));
        }
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", "stop strings must not be empty"));
        }
        let repetition_penalty = range(
            "repetition_penalty",
            self.repetition_penalty.unwrap_or(1.0),
            0.0,
            10.0,
        )?;
        if repetition_penalty == 0.0 {
            return Err(ApiError::invalid(
                "repetition_penalty",
                "must be greater than 0",
            ));
        }
        let frequency_penalty = range(
            "frequency_penalty",
            self.frequency_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
        )?;
        let presence_penalty = range(
            "presence_penalty",
            self.presence_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
        )?;
        let mut logit_bias = Vec::new();
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let field = format!("logit_bias.{key}");
            let id: i64 = key
                .parse()
                .map_err(|_| ApiError::invalid(&field, "keys must be token ids"))?;
            let id = policy
                .model
                .vocab
                .check_id(id)
                .map_err(|m| ApiError::invalid(&field, m))?;
            logit_bias.push((id, range(&field, bias, -100.0, 100.0)? as f32));
        }
        logit_bias.sort_by_key(|&(id, _)| id);
        let max_tokens = self.max_tokens.or(self.max_completion_tokens);
        let error_on_overflow = match self.context_length_exceeded_behavior.as_deref() {
            None | Some("truncate") => false,
            // Only a max_tokens the client chose can be in error; a default just fills the context.
            Some("error") => max_tokens.is_some(),
            Some(other) => {
                return Err(ApiError::invalid(
                    "context_length_exceeded_behavior",
                    format!("must be `truncate` or `error`, got `{other}`"),
                ));
            }
        };
        Ok(Validated {
            options: GenerateOptions {
                max_tokens: max_tokens.unwrap_or(default_max_tokens) as usize,
                temperature,
                top_p,
                top_k: top_k as i32,
                min_p,
                seed: fold_seed(self.seed.or(policy.seed).unwrap_or_else(random_seed)),
                stop,
                repetition_penalty,
                frequency_penalty,
                presence_penalty,
                logit_bias,
            },
            n: n as usize,
            error_on_overflow,
        })
    }
}

/// A seed for requests that give none (and whose policy sets none): different each time, as OpenAI's.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// How logprobs are asked for: off, the legacy object with k alternatives, or `content[]` with k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogprobsMode {
    Off,
    Legacy(usize),
    Content(usize),
}

impl LogprobsMode {
    /// Completions: `logprobs` is a bool (checked first: JSON `true` is not the integer 1) or an integer
    /// 0–5; with `true`, `top_logprobs` gives k.
    pub fn for_completions(
        logprobs: &Option<Value>,
        top_logprobs: Option<u32>,
    ) -> Result<LogprobsMode, ApiError> {
        const MAX: u64 = MAX_LEGACY_LOGPROBS as u64;
        let mode = match logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => LogprobsMode::Off,
            Some(Value::Bool(true)) => LogprobsMode::Content(top_logprobs.unwrap_or(0) as usize),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(k) if k <= MAX => LogprobsMode::Legacy(k as usize),
                _ => {
                    return Err(ApiError::invalid(
                        "logprobs",
                        format!("must be true/false or an integer between 0 and {MAX}, got {n}"),
                    ));
                }
            },
            Some(other) => {
                return Err(ApiError::invalid(
                    "logprobs",
                    format!("must be a boolean or an integer, got {other}"),
                ));
            }
        };
        if let LogprobsMode::Content(k) = mode {
            check_top_logprobs(k as u32, MAX_LEGACY_LOGPROBS)
                .map_err(|m| ApiError::invalid("top_logprobs", m))?;
        }
        if top_logprobs.is_some() && !matches!(mode, LogprobsMode::Content(_)) {
            return Err(ApiError::invalid(
                "top_logprobs",
                "is only valid with `logprobs: true`",
            ));
        }
        Ok(mode)
    }

    /// Chat: `logprobs` is a bool and `top_logprobs` 0–20.
    pub fn for_chat(logprobs: Option<bool>, top_logprobs: Option<u32>) -> Result<Self, ApiError> {
        if let Some(k) = top_logprobs {
            check_top_logprobs(k, MAX_CHAT_TOP_LOGPROBS)
                .map_err(|m| ApiError::invalid("top_logprobs", m))?;
        }
        match (logprobs.unwrap_or(false), top_logprobs) {
            (true, k) => Ok(LogprobsMode::Content(k.unwrap_or(0) as usize)),
            (false, Some(_)) => Err(ApiError::invalid(
                "top_logprobs",
                "is only valid with `logprobs: true`",
            )),
            (false, None) => Ok(LogprobsMode::Off),
        }
    }

    pub fn top_k(self) -> usize {
        match self {
            LogprobsMode::Off => 0,
            LogprobsMode::Legacy(k) | LogprobsMode::Content(k) => k,
        }
    }
}

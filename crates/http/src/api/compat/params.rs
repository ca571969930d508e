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
use crate::engine::vocab::TokenId;
use crate::input::{fields_of, from_object, reject_unknown};
use crate::request_budget::{check_logit_bias_len, check_stop};
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

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `logit_bias` in either client's spelling.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LogitBias {
    /// OpenAI's: token ids as the object's keys.
    ByKey(HashMap<String, f64>),
    /// llama.cpp's server's (lm-eval's `gguf` backend sends it): `[token id, bias]` pairs.
    Pairs(Vec<(i64, f64)>),
}

/// llama.cpp's `id_slot`, which pins a request to one of that server's slots so that requests sharing a
/// prompt reuse its KV cache (lm-eval's `gguf` backend sends it with every request). Accepted with no
/// effect here: whole-prompt reuse is shared by all of a model's inference threads, and no number depends
/// on which thread computes it. -1 is llama.cpp's "any slot".
pub fn check_id_slot(id_slot: Option<i64>) -> Result<(), ApiError> {
    match id_slot {
        Some(slot) if !(-1..=i64::from(i32::MAX)).contains(&slot) => Err(ApiError::invalid(
            "id_slot",
            "must be -1 (any slot) or a slot number from 0 to 2147483647",
        )),
        _ => Ok(()),
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

crate::input::deserialize_from_objects_only!(StreamOptions);

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
    /// OpenAI's `{"<token id>": bias}` or llama.cpp's `[[token id, bias], ...]`.
    pub logit_bias: Option<LogitBias>,
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
    /// Fields are checked in a fixed order, so a body wrong in several ways always names the same one.
    pub fn validate(
        &self,
        policy: &Policy,
        default_max_tokens: u32,
    ) -> Result<Validated, ApiError> {
        let temperature = self.temperature(policy)?;
        let Truncation {
            top_p,
            top_k,
            min_p,
        } = self.truncation()?;
        let n = self.n()?;
        let stop = self.stop_strings()?;
        let Penalties {
            repetition,
            frequency,
            presence,
        } = self.penalties()?;
        let logit_bias = self.logit_bias(policy)?;
        let max_tokens = self.max_tokens.or(self.max_completion_tokens);
        let error_on_overflow = self.error_on_overflow(max_tokens.is_some())?;
        Ok(Validated {
            options: GenerateOptions {
                max_tokens: max_tokens.unwrap_or(default_max_tokens) as usize,
                temperature,
                top_p,
                top_k,
                min_p,
                seed: fold_seed(self.seed.or(policy.seed).unwrap_or_else(random_seed)),
                stop: stop.into(),
                repetition_penalty: repetition,
                frequency_penalty: frequency,
                presence_penalty: presence,
                logit_bias: logit_bias.into(),
            },
            n: n as usize,
            error_on_overflow,
        })
    }

    /// The request's temperature, else the policy's: the compatibility API allows OpenAI's wider range.
    fn temperature(&self, policy: &Policy) -> Result<f64, ApiError> {
        let (lo, hi) = COMPAT_TEMPERATURE_RANGE;
        let t = self.temperature.unwrap_or(policy.temperature);
        range("temperature", t, lo, hi)
    }

    /// The sampler's cuts of the distribution; each default leaves it whole.
    fn truncation(&self) -> Result<Truncation, ApiError> {
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
        Ok(Truncation {
            top_p,
            top_k: top_k as i32,
            min_p,
        })
    }

    /// Choices per prompt, bounded so one request cannot queue unbounded work.
    fn n(&self) -> Result<u32, ApiError> {
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ApiError::invalid(
                "n",
                format!("must be between 1 and {MAX_N}, got {n}"),
            ));
        }
        Ok(n)
    }

    /// `stop` as a list, within the request budget ([`check_stop`]).
    fn stop_strings(&self) -> Result<Vec<String>, ApiError> {
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        check_stop(&stop).map_err(|m| ApiError::invalid("stop", m))?;
        Ok(stop)
    }

    /// The repetition penalties (llama.cpp's multiplicative one, OpenAI's two additive ones).
    fn penalties(&self) -> Result<Penalties, ApiError> {
        let repetition = range(
            "repetition_penalty",
            self.repetition_penalty.unwrap_or(1.0),
            0.0,
            10.0,
        )?;
        if repetition == 0.0 {
            return Err(ApiError::invalid(
                "repetition_penalty",
                "must be greater than 0",
            ));
        }
        let additive = |field: &str, v: Option<f64>| range(field, v.unwrap_or(0.0), -2.0, 2.0);
        Ok(Penalties {
            repetition,
            frequency: additive("frequency_penalty", self.frequency_penalty)?,
            presence: additive("presence_penalty", self.presence_penalty)?,
        })
    }

    /// `logit_bias` keyed by token id (JSON keys are strings) or as pairs, each id checked against the
    /// policy's vocabulary; sorted so equal requests give equal options.
    fn logit_bias(&self, policy: &Policy) -> Result<Vec<(TokenId, f32)>, ApiError> {
        let count = match &self.logit_bias {
            None => 0,
            Some(LogitBias::ByKey(map)) => map.len(),
            Some(LogitBias::Pairs(pairs)) => pairs.len(),
        };
        check_logit_bias_len(count).map_err(|m| ApiError::invalid("logit_bias", m))?;
        let entries: Vec<(String, Result<i64, ApiError>, f64)> = match &self.logit_bias {
            None => Vec::new(),
            Some(LogitBias::ByKey(map)) => map
                .iter()
                .map(|(key, &bias)| {
                    let field = format!("logit_bias.{key}");
                    let id = key
                        .parse()
                        .map_err(|_| ApiError::invalid(&field, "keys must be token ids"));
                    (field, id, bias)
                })
                .collect(),
            Some(LogitBias::Pairs(pairs)) => pairs
                .iter()
                .enumerate()
                .map(|(i, &(id, bias))| (format!("logit_bias[{i}]"), Ok(id), bias))
                .collect(),
        };
        let mut logit_bias = Vec::with_capacity(entries.len());
        for (field, id, bias) in entries {
            let id = policy
                .model
                .vocab
                .check_id(id?)
                .map_err(|m| ApiError::invalid(&field, m))?;
            logit_bias.push((id, range(&field, bias, -100.0, 100.0)? as f32));
        }
        logit_bias.sort_by_key(|&(id, _)| id);
        Ok(logit_bias)
    }

    /// Fireworks' `context_length_exceeded_behavior`: whether an over-long request is refused rather
    /// than having its `max_tokens` shrunk.
    fn error_on_overflow(&self, max_tokens_given: bool) -> Result<bool, ApiError> {
        match self.context_length_exceeded_behavior.as_deref() {
            None | Some("truncate") => Ok(false),
            // Only a max_tokens the client chose can be in error; a default just fills the context.
            Some("error") => Ok(max_tokens_given),
            Some(other) => Err(ApiError::invalid(
                "context_length_exceeded_behavior",
                format!("must be `truncate` or `error`, got `{other}`"),
            )),
        }
    }
}

/// `top_p`, `top_k` and `min_p`, checked.
struct Truncation {
    top_p: f64,
    top_k: i32,
    min_p: f64,
}

/// The three penalties, checked.
struct Penalties {
    repetition: f64,
    frequency: f64,
    presence: f64,
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

#[cfg(test)]
mod fuzz {
    //! Property tests: the compatibility bodies are read or refused as their field types say
    //! (the types written out here, not read off the structs), naming the field; `logprobs` and
    //! `top_logprobs` combine as OpenAI documents.

    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::api::compat::chat::ChatRequest;
    use crate::api::compat::completions::CompletionRequest;
    use crate::fuzz_strategies::{hostile_json, hostile_text};

    /// The JSON a field takes.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        OptText,
        Anything,
        Bool,
        OptBool,
        OptU32,
        OptI64,
        OptU64,
        OptF64,
        Stop,
        StreamOptions,
        LogitBias,
        Messages,
    }

    const COMPLETION: &[(&str, Kind)] = &[
        ("model", Kind::OptText),
        ("prompt", Kind::Anything),
        ("echo", Kind::Bool),
        ("echo_last", Kind::OptU32),
        ("logprobs", Kind::Anything),
        ("top_logprobs", Kind::OptU32),
        ("stream", Kind::Bool),
        ("stream_options", Kind::StreamOptions),
        ("return_token_ids", Kind::Bool),
        ("user", Kind::OptText),
        ("id_slot", Kind::OptI64),
    ];

    const CHAT: &[(&str, Kind)] = &[
        ("model", Kind::OptText),
        ("messages", Kind::Messages),
        ("echo", Kind::Bool),
        ("logprobs", Kind::OptBool),
        ("top_logprobs", Kind::OptU32),
        ("stream", Kind::Bool),
        ("stream_options", Kind::StreamOptions),
        ("user", Kind::OptText),
        ("id_slot", Kind::OptI64),
    ];

    const SAMPLING: &[(&str, Kind)] = &[
        ("max_tokens", Kind::OptU32),
        ("max_completion_tokens", Kind::OptU32),
        ("temperature", Kind::OptF64),
        ("top_p", Kind::OptF64),
        ("top_k", Kind::OptI64),
        ("min_p", Kind::OptF64),
        ("seed", Kind::OptU64),
        ("stop", Kind::Stop),
        ("n", Kind::OptU32),
        ("repetition_penalty", Kind::OptF64),
        ("frequency_penalty", Kind::OptF64),
        ("presence_penalty", Kind::OptF64),
        ("logit_bias", Kind::LogitBias),
        ("context_length_exceeded_behavior", Kind::OptText),
    ];

    /// Whether a field of `kind` takes `v`.
    fn takes(kind: Kind, v: &Value) -> bool {
        let all =
            |v: &Value, f: &dyn Fn(&Value) -> bool| v.as_array().is_some_and(|a| a.iter().all(f));
        let message = |m: &Value| {
            m.as_object().is_some_and(|o| {
                o.keys()
                    .all(|k| ["role", "content", "name"].contains(&k.as_str()))
                    && o.get("role").is_some_and(Value::is_string)
                    && o.get("content").is_some_and(Value::is_string)
                    && o.get("name").is_none_or(|n| n.is_string() || n.is_null())
            })
        };
        v.is_null() && !matches!(kind, Kind::Bool | Kind::Messages)
            || match kind {
                Kind::OptText => v.is_string(),
                Kind::Anything => true,
                Kind::Bool | Kind::OptBool => v.is_boolean(),
                Kind::OptU32 => v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
                Kind::OptI64 => v.as_i64().is_some(),
                Kind::OptU64 => v.as_u64().is_some(),
                Kind::OptF64 => v.is_number(),
                Kind::Stop => v.is_string() || all(v, &Value::is_string),
                Kind::StreamOptions => v.as_object().is_some_and(|o| {
                    o.iter()
                        .all(|(k, x)| k == "include_usage" && x.is_boolean())
                }),
                Kind::LogitBias => {
                    v.as_object()
                        .is_some_and(|o| o.values().all(Value::is_number))
                        || all(v, &|pair| {
                            pair.as_array().is_some_and(|p| {
                                p.len() == 2 && p[0].as_i64().is_some() && p[1].is_number()
                            })
                        })
                }
                Kind::Messages => all(v, &message),
            }
    }

    /// A body of unique keys, known ones mostly, in the generated order.
    fn body(fields: &'static [(&'static str, Kind)]) -> impl Strategy<Value = Map<String, Value>> {
        let names: Vec<&str> = fields.iter().chain(SAMPLING).map(|(n, _)| *n).collect();
        let key = prop_oneof![
            8 => prop::sample::select(names).prop_map(String::from),
            1 => hostile_text(),
        ];
        prop::collection::vec((key, hostile_json()), 0..8).prop_map(|kv| kv.into_iter().collect())
    }

    /// Why the contract refuses a body.
    #[derive(Debug)]
    enum Refusal {
        /// Nested past serde_json's limit of 128: the body is not read at all.
        Whole,
        Missing(String),
        Wrong(String),
    }

    /// The first refusal the contract makes of `body`: unknown keys, then the endpoint's fields (wrong,
    /// then missing), then the sampling fields.
    fn refusal(fields: &[(&str, Kind)], body: &Map<String, Value>) -> Option<Refusal> {
        fn depth(v: &Value) -> usize {
            match v {
                Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        if body.values().map(depth).max().unwrap_or(0) >= 128 {
            return Some(Refusal::Whole);
        }
        let kind_of = |table: &[(&str, Kind)], k: &str| {
            table.iter().find(|(n, _)| *n == k).map(|(_, kind)| *kind)
        };
        if let Some(k) = body
            .keys()
            .find(|k| kind_of(fields, k).or(kind_of(SAMPLING, k)).is_none())
        {
            return Some(Refusal::Wrong(k.clone()));
        }
        let wrong = |table: &[(&str, Kind)]| {
            body.iter()
                .find(|(k, v)| kind_of(table, k).is_some_and(|kind| !takes(kind, v)))
                .map(|(k, _)| Refusal::Wrong(k.clone()))
        };
        let required = ["prompt", "messages"];
        let missing = fields
            .iter()
            .find(|(n, _)| required.contains(n) && !body.contains_key(*n))
            .map(|(n, _)| Refusal::Missing(n.to_string()));
        wrong(fields).or(missing).or_else(|| wrong(SAMPLING))
    }

    fn check<R: serde::de::DeserializeOwned>(
        fields: &[(&str, Kind)],
        body: &Map<String, Value>,
    ) -> Result<(), TestCaseError> {
        let text = Value::Object(body.clone()).to_string();
        let got = parse_with_sampling::<R>(Ok(Bytes::from(text.clone()))).map(|_| ());
        let names = |e: &ApiError, field: &str| {
            let param = e.param.as_deref().unwrap_or_default();
            param == field
                || param.starts_with(&format!("{field}."))
                || param.starts_with(&format!("{field}["))
                // A key with an empty name cannot be a `param`: the message names it.
                || field.is_empty() && e.message.contains("unknown field ``")
        };
        match (refusal(fields, body), got) {
            (None, Ok(())) => {}
            (Some(Refusal::Whole), Err(e)) => prop_assert!(
                e.param.is_none() && e.message.contains("recursion limit"),
                "{}: {:?}",
                text,
                e
            ),
            (Some(Refusal::Missing(field)), Err(e)) => prop_assert!(
                e.message.contains(&format!("missing field `{field}`")),
                "{}: {:?}",
                text,
                e
            ),
            (Some(Refusal::Wrong(field)), Err(e)) => {
                prop_assert!(
                    names(&e, &field),
                    "{}: {:?} does not name {}",
                    text,
                    e,
                    field
                );
                prop_assert_eq!(e.status.as_u16(), 400);
            }
            (expected, got) => prop_assert!(
                false,
                "{}: expected refusal {:?}, got {:?}",
                text,
                expected,
                got
            ),
        }
        Ok(())
    }

    #[test]
    fn the_oracles_field_tables_are_the_wire_types() {
        fn names(t: &[(&'static str, Kind)]) -> Vec<&'static str> {
            t.iter().map(|(n, _)| *n).collect()
        }
        assert_eq!(fields_of::<CompletionRequest>(), names(COMPLETION));
        assert_eq!(fields_of::<ChatRequest>(), names(CHAT));
        assert_eq!(fields_of::<Sampling>(), names(SAMPLING));
    }

    /// Found by `completion_bodies_are_read_as_their_types_say`: serde's derive read `stream_options` from
    /// a list, fields by position, so `[true]` turned `include_usage` on.
    #[test]
    fn stream_options_sent_as_a_list_are_refused() {
        let body = json!({"model": "m", "prompt": "p", "stream_options": [true]}).to_string();
        let e = parse_with_sampling::<CompletionRequest>(Ok(Bytes::from(body))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stream_options"));
        assert!(
            e.message.contains("invalid type: sequence"),
            "{}",
            e.message
        );
    }

    /// Found by `completion_bodies_are_read_as_their_types_say`: a key with an empty name was refused as
    /// "Extra inputs are not permitted" naming nothing (an empty `param` is left out).
    #[test]
    fn a_key_with_an_empty_name_is_named_in_the_message() {
        let body = json!({"model": "m", "prompt": "p", "": 1}).to_string();
        let e = parse_with_sampling::<CompletionRequest>(Ok(Bytes::from(body))).unwrap_err();
        assert!(e.message.contains("unknown field ``"), "{}", e.message);
    }

    proptest! {
        #[test]
        fn completion_bodies_are_read_as_their_types_say(body in body(COMPLETION)) {
            check::<CompletionRequest>(COMPLETION, &body)?;
        }

        #[test]
        fn chat_bodies_are_read_as_their_types_say(body in body(CHAT)) {
            check::<ChatRequest>(CHAT, &body)?;
        }

        #[test]
        fn completions_logprobs_modes_follow_openai(
            logprobs in prop::option::of(hostile_json()),
            top in prop::option::of(prop_oneof![0u32..24, any::<u32>()]),
        ) {
            let expected = match &logprobs {
                None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(LogprobsMode::Off),
                Some(Value::Bool(true)) => Ok(LogprobsMode::Content(top.unwrap_or(0) as usize)),
                Some(v) => match v.as_u64() {
                    Some(k) if k <= 20 => Ok(LogprobsMode::Legacy(k as usize)),
                    _ => Err("logprobs"),
                },
            }
            .and_then(|mode| match (mode, top) {
                (LogprobsMode::Content(k), _) if k > 20 => Err("top_logprobs"),
                (LogprobsMode::Content(_), _) | (_, None) => Ok(mode),
                (_, Some(_)) => Err("top_logprobs"),
            });
            let got = LogprobsMode::for_completions(&logprobs, top).map_err(|e| e.param);
            prop_assert_eq!(got, expected.map_err(|f| Some(f.to_string())));
        }

        #[test]
        fn chat_logprobs_modes_follow_openai(logprobs in prop::option::of(any::<bool>()), top in prop::option::of(prop_oneof![0u32..24, any::<u32>()])) {
            let expected = match (logprobs.unwrap_or(false), top) {
                (_, Some(k)) if k > 20 => Err("top_logprobs"),
                (true, k) => Ok(LogprobsMode::Content(k.unwrap_or(0) as usize)),
                (false, Some(_)) => Err("top_logprobs"),
                (false, None) => Ok(LogprobsMode::Off),
            };
            let got = LogprobsMode::for_chat(logprobs, top).map_err(|e| e.param);
            prop_assert_eq!(got, expected.map_err(|f| Some(f.to_string())));
        }
    }
}

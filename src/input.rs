//! Scoring inputs as clients write them — the wire item (`prompt` | `messages` | `prompt_token_ids`, plus
//! `response` | `response_token_ids`) — and strict JSON reading whose errors name the field's path.
//!
//! Shared by the HTTP API and the `score` command, so it knows neither: errors are [`InputError`]s, which
//! the API turns into 400 bodies and the command writes on the item's output line.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::engine::chat_template::ChatMessage;
use crate::engine::{ItemInput, PromptInput, ResponseInput};

/// Invalid input: the offending field's path (empty for the whole body) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub param: String,
    pub message: String,
}

impl InputError {
    /// An error about the field at `param` (`""`: the input as a whole).
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> InputError {
        InputError {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// `param: message`, or the message alone when no field is named (the API's `message` reads the same).
impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.param.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.param, self.message)
        }
    }
}

impl std::error::Error for InputError {}

/// Parses JSON bytes into `T` strictly: errors name the field's path, trailing data is refused.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, InputError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end()
        .map_err(|e| InputError::new("", format!("trailing data after the JSON object: {e}")))?;
    Ok(value)
}

/// A `serde_path_to_error` failure as an error naming the path (none for the top level).
fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> InputError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    InputError::new(path, e.into_inner().to_string())
}

/// Reads one part of a request object (unknown keys ignored here; see [`reject_unknown`]), with errors
/// naming the field's path.
pub fn from_object<T: DeserializeOwned>(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, InputError> {
    serde_path_to_error::deserialize(serde_json::Value::Object(map.clone())).map_err(path_error)
}

/// Refuses keys that none of the parts know, as Fireworks does ("Extra inputs are not permitted").
pub fn reject_unknown(
    map: &serde_json::Map<String, serde_json::Value>,
    known: &[&[&str]],
) -> Result<(), InputError> {
    match map
        .keys()
        .find(|k| !known.iter().any(|fields| fields.contains(&k.as_str())))
    {
        Some(k) => Err(InputError::new(
            k.as_str(),
            "Extra inputs are not permitted",
        )),
        None => Ok(()),
    }
}

/// A chat message on the wire (`content` must be text).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMessage {
    pub role: String,
    pub content: String,
    #[serde(default)]
    pub name: Option<String>,
}

impl From<WireMessage> for ChatMessage {
    fn from(m: WireMessage) -> ChatMessage {
        ChatMessage {
            role: m.role,
            content: m.content,
            name: m.name,
        }
    }
}

/// One prompt/response pair as sent in `items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireItem {
    pub prompt: Option<String>,
    pub messages: Option<Vec<WireMessage>>,
    pub prompt_token_ids: Option<Vec<i64>>,
    pub response: Option<String>,
    pub response_token_ids: Option<Vec<i64>>,
}

impl WireItem {
    /// Whether no prompt or response field is set (a request that uses `items` instead).
    pub fn is_empty(&self) -> bool {
        self.prompt.is_none()
            && self.messages.is_none()
            && self.prompt_token_ids.is_none()
            && self.response.is_none()
            && self.response_token_ids.is_none()
    }

    /// Checks that exactly one prompt form and one response form are present.
    pub fn into_input(self, at: &str) -> Result<ItemInput, InputError> {
        let field = |f: &str| {
            if at.is_empty() {
                f.to_string()
            } else {
                format!("{at}.{f}")
            }
        };
        let prompt = match (self.prompt, self.messages, self.prompt_token_ids) {
            (Some(p), None, None) => PromptInput::Text(p),
            (None, Some(m), None) => {
                PromptInput::Messages(m.into_iter().map(ChatMessage::from).collect())
            }
            (None, None, Some(t)) => PromptInput::TokenIds(t),
            (None, None, None) => {
                return Err(InputError::new(
                    field("prompt"),
                    "missing: give one of `prompt`, `messages` or `prompt_token_ids`",
                ));
            }
            _ => {
                return Err(InputError::new(
                    field("prompt"),
                    "give only one of `prompt`, `messages` or `prompt_token_ids`",
                ));
            }
        };
        let response = match (self.response, self.response_token_ids) {
            (Some(r), None) => ResponseInput::Text(r),
            (None, Some(t)) => ResponseInput::TokenIds(t),
            (None, None) => {
                return Err(InputError::new(
                    field("response"),
                    "missing: give `response` or `response_token_ids`",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(InputError::new(
                    field("response"),
                    "give only one of `response` or `response_token_ids`",
                ));
            }
        };
        Ok(ItemInput { prompt, response })
    }
}

/// The field names of a struct that derives `Deserialize` (serde hands them to `deserialize_struct`).
pub fn fields_of<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe(std::cell::Cell<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &Probe {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.set(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let probe = Probe(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&probe);
    probe.0.get()
}

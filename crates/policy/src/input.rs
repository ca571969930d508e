//! Scoring inputs as clients write them — the wire item (`prompt` | `messages` | `prompt_token_ids`, plus
//! `response` | `response_token_ids`) — and strict JSON reading whose errors name the field's path.
//!
//! Shared by the HTTP API and the `score` command, so it knows neither: errors are [`InputError`]s, which
//! the API turns into 400 bodies and the command writes on the item's output line.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::engine::ChatMessage;
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
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A syntax error is the body's, not a field's: where the parser stopped (`?` inside a broken key,
        // `[0]` in a list) names no field of the request.
        if e.inner().is_data() {
            path_error(e)
        } else {
            InputError::new("", e.into_inner().to_string())
        }
    })?;
    de.end()
        .map_err(|e| InputError::new("", format!("trailing data after the JSON object: {e}")))?;
    Ok(value)
}

/// A `serde_path_to_error` failure as an error naming the path (none for the top level).
fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> InputError {
    // The root prints as ".", and so does a key named "."; only the root has no segments.
    let path = match e.path().iter().next() {
        None => String::new(),
        Some(_) => e.path().to_string(),
    };
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
        // The message names the key too: an empty name cannot stand as a `param`.
        Some(k) => Err(InputError::new(
            k.as_str(),
            format!("Extra inputs are not permitted (unknown field `{k}`)"),
        )),
        None => Ok(()),
    }
}

/// A struct's deserializer that takes it from a JSON object only. serde's derive also reads a struct from a
/// list, its fields by position, so `["user", "hi"]` would pass for a message; the wire has objects only.
pub struct ObjectOnly<D>(pub D);

/// The derive's visitor without its list form: a list is refused as `invalid type: sequence`.
struct NoList<V>(V);

impl<'de, V: serde::de::Visitor<'de>> serde::de::Visitor<'de> for NoList<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(map)
    }
}

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;
    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(v)
    }
    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, NoList(v))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Implements `Deserialize` for a type whose derive is `#[serde(remote = "Self")]`, through [`ObjectOnly`]
/// (the HTTP layer's wire types use it too).
#[macro_export]
macro_rules! deserialize_from_objects_only {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$t>::deserialize($crate::input::ObjectOnly(d))
            }
        }
    };
}
pub use deserialize_from_objects_only;

/// A chat message on the wire (`content` must be text).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
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

deserialize_from_objects_only!(WireMessage);

/// One prompt/response pair as sent in `items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct WireItem {
    pub prompt: Option<String>,
    pub messages: Option<Vec<WireMessage>>,
    pub prompt_token_ids: Option<Vec<i64>>,
    pub response: Option<String>,
    pub response_token_ids: Option<Vec<i64>>,
}

deserialize_from_objects_only!(WireItem);

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

#[cfg(test)]
mod fuzz {
    //! Property tests: item parsing never panics, and accepts or refuses exactly as the wire
    //! contract says — written out here on its own, not read off serde's derive — naming the field.

    use std::collections::HashSet;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::fuzz_strategies::hostile_text;

    const PROMPT_FIELDS: [&str; 3] = ["prompt", "messages", "prompt_token_ids"];
    const RESPONSE_FIELDS: [&str; 2] = ["response", "response_token_ids"];

    /// What the contract says of one key/value of an item object.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Verdict {
        /// A value of the field's type.
        Given,
        /// `null`: the same as leaving the field out.
        Null,
        /// Wrong type, or a wrong part inside it: refused, naming the field's path.
        Bad,
    }

    fn text() -> impl Strategy<Value = Value> {
        hostile_text().prop_map(Value::String)
    }

    /// Values of no field's type here: numbers, booleans, lists, objects.
    fn not_text() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(json!(0.5)),
            Just(json!(["a"])),
            Just(json!({})),
        ]
    }

    fn ids() -> impl Strategy<Value = (Value, Verdict)> {
        prop_oneof![
            prop::collection::vec(any::<i64>(), 0..20).prop_map(|v| (json!(v), Verdict::Given)),
            text().prop_map(|v| (v, Verdict::Bad)),
            Just((json!([1, 2.5]), Verdict::Bad)),
            (i64::MAX as u64 + 1..=u64::MAX).prop_map(|big| (json!([0, big]), Verdict::Bad)),
            Just((json!([1, "2"]), Verdict::Bad)),
            Just((json!([[1]]), Verdict::Bad)),
            Just((json!({"0": 1}), Verdict::Bad)),
        ]
    }

    fn message() -> impl Strategy<Value = Value> {
        (text(), text(), prop::option::of(text())).prop_map(|(role, content, name)| match name {
            Some(name) => json!({"role": role, "content": content, "name": name}),
            None => json!({"role": role, "content": content}),
        })
    }

    /// A message the contract refuses: a part missing or mistyped, an extra key, or not an object.
    fn bad_message() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"role": "user"})),
            Just(json!({"content": "hi"})),
            not_text().prop_map(|c| json!({"role": "user", "content": c})),
            not_text().prop_map(|r| json!({"role": r, "content": "hi"})),
            Just(json!({"role": "user", "content": [{"type": "text", "text": "hi"}]})),
            Just(json!({"role": "user", "content": "hi", "tool_calls": []})),
            Just(json!(["user", "hi"])),
            Just(json!("user: hi")),
        ]
    }

    fn messages() -> impl Strategy<Value = (Value, Verdict)> {
        prop_oneof![
            3 => prop::collection::vec(message(), 0..5).prop_map(|v| (json!(v), Verdict::Given)),
            1 => (prop::collection::vec(message(), 0..3), bad_message()).prop_map(|(mut v, bad)| {
                v.push(bad);
                (json!(v), Verdict::Bad)
            }),
            1 => not_text()
                .prop_filter("lists of messages are made above", |v| !v.is_array())
                .prop_map(|v| (v, Verdict::Bad)),
            1 => text().prop_map(|v| (v, Verdict::Bad)),
        ]
    }

    /// A value for `key` with its verdict; unknown keys get any value (their verdict is never read).
    fn value_for(key: &str) -> BoxedStrategy<(Value, Verdict)> {
        let null = Just((Value::Null, Verdict::Null));
        match key {
            "prompt" | "response" => prop_oneof![
                4 => text().prop_map(|v| (v, Verdict::Given)),
                1 => null,
                2 => not_text().prop_map(|v| (v, Verdict::Bad)),
            ]
            .boxed(),
            "prompt_token_ids" | "response_token_ids" => prop_oneof![4 => ids(), 1 => null].boxed(),
            "messages" => prop_oneof![4 => messages(), 1 => null].boxed(),
            _ => prop_oneof![text(), not_text()]
                .prop_map(|v| (v, Verdict::Bad))
                .boxed(),
        }
    }

    /// An item object as (key, value, verdict) in document order; keys may repeat or be unknown.
    fn entries() -> impl Strategy<Value = Vec<(String, Value, Verdict)>> {
        let key = prop_oneof![
            6 => prop::sample::select(&PROMPT_FIELDS[..]).prop_map(String::from),
            4 => prop::sample::select(&RESPONSE_FIELDS[..]).prop_map(String::from),
            1 => hostile_text().prop_filter("unknown keys only", |k| !known(k)),
        ];
        let entry = key
            .prop_flat_map(|k| value_for(&k).prop_map(move |(v, verdict)| (k.clone(), v, verdict)));
        prop::collection::vec(entry, 0..6)
    }

    fn known(key: &str) -> bool {
        PROMPT_FIELDS.contains(&key) || RESPONSE_FIELDS.contains(&key)
    }

    /// The object's JSON text, keys in the generated order (repeats kept, as a client could send them).
    fn to_json(entries: &[(String, Value, Verdict)]) -> String {
        let body: Vec<String> = entries
            .iter()
            .map(|(k, v, _)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// How the contract refuses an object, if it does.
    #[derive(Debug, PartialEq)]
    enum Refusal {
        Unknown(String),
        Duplicate(String),
        Bad(String),
        /// `prompt` or `response`: none or more than one of its forms given.
        Forms(&'static str),
    }

    /// The first problem in document order (serde reads keys in order and stops at the first error).
    fn refusal(entries: &[(String, Value, Verdict)]) -> Option<Refusal> {
        let mut seen = HashSet::new();
        for (k, _, verdict) in entries {
            if !known(k) {
                return Some(Refusal::Unknown(k.clone()));
            }
            if !seen.insert(k.as_str()) {
                return Some(Refusal::Duplicate(k.clone()));
            }
            if *verdict == Verdict::Bad {
                return Some(Refusal::Bad(k.clone()));
            }
        }
        let given = |fields: &[&str]| {
            entries
                .iter()
                .filter(|(k, _, v)| fields.contains(&k.as_str()) && *v == Verdict::Given)
                .count()
        };
        if given(&PROMPT_FIELDS) != 1 {
            return Some(Refusal::Forms("prompt"));
        }
        if given(&RESPONSE_FIELDS) != 1 {
            return Some(Refusal::Forms("response"));
        }
        None
    }

    fn ids_of(v: &Value) -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    }

    /// The parsed item carries exactly the given values.
    fn check_item(item: &ItemInput, entries: &[(String, Value, Verdict)]) {
        let given = |k: &str| {
            entries
                .iter()
                .find(|(key, _, v)| key == k && *v == Verdict::Given)
                .map(|(_, v, _)| v)
        };
        match &item.prompt {
            PromptInput::Text(t) => assert_eq!(Some(&json!(t)), given("prompt")),
            PromptInput::TokenIds(t) => {
                assert_eq!(Some(t), given("prompt_token_ids").map(ids_of).as_ref())
            }
            PromptInput::Messages(m) => {
                let sent = given("messages").unwrap().as_array().unwrap();
                assert_eq!(m.len(), sent.len());
                for (got, sent) in m.iter().zip(sent) {
                    assert_eq!(json!(got.role), sent["role"]);
                    assert_eq!(json!(got.content), sent["content"]);
                    assert_eq!(
                        got.name.as_ref().map(|n| json!(n)),
                        sent.get("name").cloned()
                    );
                }
            }
        }
        match &item.response {
            ResponseInput::Text(t) => assert_eq!(Some(&json!(t)), given("response")),
            ResponseInput::TokenIds(t) => {
                assert_eq!(Some(t), given("response_token_ids").map(ids_of).as_ref())
            }
        }
    }

    #[test]
    fn the_oracles_field_lists_are_the_wire_types() {
        assert_eq!(
            fields_of::<WireItem>(),
            [&PROMPT_FIELDS[..], &RESPONSE_FIELDS[..]].concat()
        );
        assert_eq!(fields_of::<WireMessage>(), ["role", "content", "name"]);
    }

    /// Found by `items_are_accepted_or_refused_as_the_contract_says`: serde's derive read a list as a
    /// struct, fields by position, so `["user", "hi"]` passed for a message and a list for an item.
    #[test]
    fn structs_sent_as_lists_are_refused() {
        let e = from_slice::<WireItem>(br#"{"messages": [["user", "hi"]], "response": "x"}"#)
            .unwrap_err();
        assert_eq!(e.param, "messages[0]");
        assert!(e.message.contains("invalid type: sequence"), "{e}");
        let e = from_slice::<WireItem>(br#"["hi", null, null, " there", null]"#).unwrap_err();
        assert!(e.message.contains("invalid type: sequence"), "{e}");
    }

    /// Found by the same test: the root of a path prints as ".", so a key named "." lost its name.
    #[test]
    fn a_key_named_dot_is_named() {
        let e = from_slice::<WireItem>(br#"{".": 1}"#).unwrap_err();
        assert_eq!(e.param, ".");
    }

    /// Found by the HTTP fuzz tests: a syntax error named the parser's position as the field (`?` for a key
    /// with invalid UTF-8, `prompt` for a body cut after that key, `[0]` inside a list).
    #[test]
    fn syntax_errors_name_no_field() {
        for body in [&b"{\"pro\xffmpt\": 1}"[..], b"{\"prompt\":", b"[\x00"] {
            let e = from_slice::<WireItem>(body).unwrap_err();
            assert_eq!(e.param, "", "{e}");
        }
    }

    proptest! {
        #[test]
        fn items_are_accepted_or_refused_as_the_contract_says(
            entries in entries(),
            at in prop_oneof![Just(String::new()), (0usize..300).prop_map(|i| format!("items[{i}]"))],
        ) {
            let body = to_json(&entries);
            let parsed = from_slice::<WireItem>(body.as_bytes());
            let prefixed = |f: &str| if at.is_empty() { f.to_string() } else { format!("{at}.{f}") };
            match (refusal(&entries), parsed) {
                (None, Ok(item)) => {
                    let item = item.into_input(&at).map_err(|e| TestCaseError::fail(format!("{body}: {e}")))?;
                    check_item(&item, &entries);
                }
                (Some(Refusal::Forms(field)), Ok(item)) => {
                    let e = item.into_input(&at).err().ok_or_else(|| TestCaseError::fail(format!("{body} accepted")))?;
                    prop_assert_eq!(e.param, prefixed(field), "{}", body);
                }
                (Some(Refusal::Unknown(k)), Err(e)) => {
                    prop_assert_eq!(&e.param, &k, "{}", body);
                    prop_assert!(e.message.contains("unknown field"), "{}: {}", body, e);
                }
                (Some(Refusal::Duplicate(k)), Err(e)) => {
                    prop_assert!(e.message.contains(&format!("duplicate field `{k}`")), "{}: {}", body, e);
                }
                (Some(Refusal::Bad(k)), Err(e)) => prop_assert!(
                    e.param == k || e.param.starts_with(&format!("{k}[")) || e.param.starts_with(&format!("{k}.")),
                    "{}: {:?} does not name {}", body, e, k
                ),
                (expected, got) => prop_assert!(false, "{}: expected {:?}, got {:?}", body, expected, got.map(|_| "Ok")),
            }
        }

        #[test]
        fn unknown_keys_are_refused_by_name_first_in_order(
            keys in prop::collection::vec(
                prop_oneof![prop::sample::select(&["a", "b", "c", "d"][..]).prop_map(String::from), hostile_text()],
                0..8,
            ),
            split in 0usize..5,
        ) {
            let all = ["a", "b", "c", "d"];
            let (first, second) = all.split_at(split.min(all.len()));
            let map: serde_json::Map<String, Value> = keys.iter().map(|k| (k.clone(), Value::Null)).collect();
            let stranger = map.keys().find(|k| !all[..].contains(&k.as_str()));
            match (reject_unknown(&map, &[first, second]), stranger) {
                (Ok(()), None) => {}
                (Err(e), Some(k)) => prop_assert_eq!(&e.param, k),
                (got, expected) => prop_assert!(false, "{:?}: got {:?}, expected refusal of {:?}", keys, got, expected),
            }
        }
    }
}

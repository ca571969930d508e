//! Request bodies: JSON parsed strictly, with errors that name the offending field's path.
//!
//! Bodies are read as bytes whatever their content type (curl's `-d` sends form encoding), then parsed
//! with `serde_path_to_error` so that a wrong type deep in a batch reads `items[3].response: invalid type…`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Parses a request body into `T`, or a 4xx naming the field (413 when the body is over the limit).
pub fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        ApiError::with_status(
            r.status(),
            "invalid_body",
            format!("request body: {}", r.body_text()),
        )
    })?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "",
            "the request body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ApiError::invalid(path, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| ApiError::invalid("", format!("trailing data after the JSON object: {e}")))?;
    Ok(value)
}

/// Parses a request body that must be a JSON object, for requests read in several parts.
pub fn parse_object(
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match parse::<serde_json::Value>(body)? {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(ApiError::invalid(
            "",
            format!(
                "the request body must be a JSON object, got {}",
                kind_of(&other)
            ),
        )),
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Reads one part of a request object (unknown keys ignored here; see [`reject_unknown`]), with errors
/// naming the field's path.
pub fn from_object<T: DeserializeOwned>(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(serde_json::Value::Object(map.clone())).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ApiError::invalid(path, e.into_inner().to_string())
    })
}

/// Refuses keys that none of the parts know, as Fireworks does ("Extra inputs are not permitted").
pub fn reject_unknown(
    map: &serde_json::Map<String, serde_json::Value>,
    known: &[&[&str]],
) -> Result<(), ApiError> {
    match map
        .keys()
        .find(|k| !known.iter().any(|fields| fields.contains(&k.as_str())))
    {
        Some(k) => Err(ApiError::invalid(
            k.as_str(),
            "Extra inputs are not permitted",
        )),
        None => Ok(()),
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

//! Request bodies: read as bytes whatever their content type (curl's `-d` sends form encoding), then
//! parsed strictly by [`crate::input`], so that a wrong type deep in a batch reads
//! `items[3].response: invalid type…`.

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
    // serde reads a struct from a JSON list too (its fields by position): a request body is an object.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        let other: serde_json::Value = crate::input::from_slice(&bytes)?;
        return Err(ApiError::invalid(
            "",
            format!(
                "the request body must be a JSON object, got {}",
                kind_of(&other)
            ),
        ));
    }
    Ok(crate::input::from_slice(&bytes)?)
}

/// Parses a request body that must be a JSON object, for requests read in several parts.
pub fn parse_object(
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    parse(body)
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

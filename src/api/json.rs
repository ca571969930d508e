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

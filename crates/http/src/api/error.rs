//! Errors on the wire, in the Fireworks/OpenAI shape
//! `{"error": {"object": "error", "type", "code", "message", "param"}}`, with the status codes their SDKs
//! map to exception classes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::ScoreError;

/// An error answer: status, machine-readable type/code, a message naming the field, optional `param`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    object: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
}

impl ApiError {
    /// 400 for an invalid request, naming `param` (the offending field's path).
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        let param = param.into();
        let message = message.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_request_error",
            message: if param.is_empty() {
                message
            } else {
                format!("{param}: {message}")
            },
            param: (!param.is_empty()).then_some(param),
            retry_after_secs: None,
        }
    }

    /// 404 for a model (policy) the server does not serve.
    pub fn model_not_found(name: &str, known: &[&str]) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            message: format!(
                "model `{name}` is not served here; available models: {}",
                known.join(", ")
            ),
            param: Some("model".into()),
            retry_after_secs: None,
        }
    }

    /// Any status with a plain message (body-size limits, unsupported media, timeouts).
    pub fn with_status(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_secs: None,
        }
    }
}

impl From<crate::input::InputError> for ApiError {
    fn from(e: crate::input::InputError) -> ApiError {
        ApiError::invalid(e.param, e.message)
    }
}

impl From<ScoreError> for ApiError {
    fn from(e: ScoreError) -> ApiError {
        let message = e.to_string();
        match e {
            ScoreError::InvalidInput { field, message } => ApiError::invalid(field, message),
            ScoreError::TooLong { field, .. } | ScoreError::TextTooLong { field, .. } => ApiError {
                code: "context_length_exceeded",
                param: Some(field),
                message,
                ..ApiError::invalid("", "")
            },
            ScoreError::QueueFull {
                retry_after_secs, ..
            } => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                kind: "rate_limit_error",
                code: "queue_full",
                message,
                param: None,
                retry_after_secs: Some(retry_after_secs),
            },
            ScoreError::Unavailable(_) => {
                ApiError::with_status(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            ScoreError::Internal(_) => {
                ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
        }
    }
}

impl From<crate::remote::RemoteError> for ApiError {
    fn from(e: crate::remote::RemoteError) -> ApiError {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let param = e.param();
        let retry_after_secs = e.retry_after().map(|d| d.as_secs().max(1));
        ApiError {
            param,
            retry_after_secs,
            ..ApiError::with_status(status, e.code(), e.to_string())
        }
    }
}

impl From<crate::served::ServeError> for ApiError {
    fn from(e: crate::served::ServeError) -> ApiError {
        match e {
            crate::served::ServeError::Local(e) => e.into(),
            crate::served::ServeError::Remote(e) => e.into(),
        }
    }
}

impl ApiError {
    /// The JSON body (also sent as an event when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: Inner {
                object: "error",
                kind: self.kind,
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
            },
        })
        .expect("error body serializes")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

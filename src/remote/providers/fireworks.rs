//! `fireworks`: Fireworks' completions API, scored through the completions protocol (echo + legacy
//! logprobs, see [`crate::remote::completions`]).

use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::RemoteProvider;
use crate::remote::error::RemoteError;
use crate::remote::retry::Caller;
use crate::remote::{RemoteScoreRequest, RemoteScored, completions};

/// Fireworks' public inference base URL, the provider's default.
pub const FIREWORKS_BASE_URL: &str = "https://api.fireworks.ai/inference/v1";

/// The `fireworks` provider.
pub struct Fireworks;

impl RemoteProvider for Fireworks {
    fn name(&self) -> &'static str {
        "fireworks"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some(FIREWORKS_BASE_URL)
    }

    fn default_key_env(&self) -> Option<&'static str> {
        Some("FIREWORKS_API_KEY")
    }

    fn score<'a>(
        &'a self,
        caller: &'a Caller<'a>,
        base_url: &'a str,
        req: &'a RemoteScoreRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<RemoteScored, RemoteError>> {
        completions::score(caller, base_url, req, deadline).boxed()
    }

    fn forward_url(&self, base_url: &str, endpoint: &str) -> String {
        format!("{base_url}/{endpoint}")
    }
}

//! `openai`: any OpenAI-compatible completions API with echo and legacy logprobs (llama.cpp's server,
//! vLLM, …), scored through the completions protocol (see [`crate::remote::completions`]). It has no
//! default URL: the policy names the server.

use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::RemoteProvider;
use crate::remote::error::RemoteError;
use crate::remote::retry::Caller;
use crate::remote::{RemoteScoreRequest, RemoteScored, completions};

/// The `openai` provider.
pub struct Openai;

impl RemoteProvider for Openai {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn default_key_env(&self) -> Option<&'static str> {
        Some("OPENAI_API_KEY")
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

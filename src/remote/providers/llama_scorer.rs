//! `llama_scorer`: another llama-scorer (or a balancer in front of several), through its native
//! `/v1/logprobs` (see [`crate::remote::native`]); its numbers are passed on bit for bit. It renders chat
//! messages with its own policy's template, sends no key unless told, and has no default URL.

use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::RemoteProvider;
use crate::remote::error::RemoteError;
use crate::remote::retry::Caller;
use crate::remote::{RemoteScoreRequest, RemoteScored, native};

/// The `llama_scorer` provider.
pub struct LlamaScorer;

impl RemoteProvider for LlamaScorer {
    fn name(&self) -> &'static str {
        "llama_scorer"
    }

    fn renders_messages(&self) -> bool {
        true
    }

    fn score<'a>(
        &'a self,
        caller: &'a Caller<'a>,
        base_url: &'a str,
        req: &'a RemoteScoreRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<RemoteScored, RemoteError>> {
        native::score(caller, base_url, req, deadline).boxed()
    }

    fn forward_url(&self, base_url: &str, endpoint: &str) -> String {
        format!("{base_url}/v1/{endpoint}")
    }
}

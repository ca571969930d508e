//! The remote providers: each owns, in its own file, what is particular to the API it speaks — its name in
//! the configuration, its default base URL and API-key variable, whether the upstream renders chat
//! messages itself, how a scoring call goes and where a compatibility request is forwarded. Everything
//! else (the configuration's field rules, the settings' defaults, the policies' chat support, `/ready`)
//! is derived from these; a new provider is one file here plus its line in [`REGISTRY`].

mod fireworks;
mod llama_scorer;
mod openai;

use std::fmt;
use std::time::Instant;

use futures_util::future::BoxFuture;

use super::error::RemoteError;
use super::retry::Caller;
use super::{RemoteScoreRequest, RemoteScored};

pub use fireworks::FIREWORKS_BASE_URL;

/// Every remote provider, in the order messages list them: the one registration a new provider needs.
static REGISTRY: &[&dyn RemoteProvider] = &[
    &fireworks::Fireworks,
    &openai::Openai,
    &llama_scorer::LlamaScorer,
];

/// What a remote provider is: its name, defaults and capabilities, and its two calls.
pub trait RemoteProvider: Send + Sync + 'static {
    /// The name a policy's `provider:` gives, also used in metrics, `/ready` and messages.
    fn name(&self) -> &'static str;

    /// The API root used when a policy sets no `base_url` (`None`: the policy must give one).
    fn default_base_url(&self) -> Option<&'static str> {
        None
    }

    /// The environment variable the upstream's API key is read from when a policy names none with
    /// `api_key_env` (`None`: no key is sent unless one is named).
    fn default_key_env(&self) -> Option<&'static str> {
        None
    }

    /// Whether the upstream renders `messages` itself, with its own policy's chat template and system
    /// prompt: then messages are sent as they are, chat always works, and a policy of this provider may
    /// not set `chat_template` or `system_prompt`. Otherwise messages are rendered here, through the
    /// policy's `chat_template`, and sent as text.
    fn renders_messages(&self) -> bool {
        false
    }

    /// Scores every item of `req` upstream before `deadline` (nothing partial: the first failure).
    fn score<'a>(
        &'a self,
        caller: &'a Caller<'a>,
        base_url: &'a str,
        req: &'a RemoteScoreRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<RemoteScored, RemoteError>>;

    /// Where a compatibility request (`endpoint` = `completions` or `chat/completions`) is forwarded.
    fn forward_url(&self, base_url: &str, endpoint: &str) -> String;
}

/// A registered remote provider (cheap to copy; equal when the names are).
#[derive(Clone, Copy)]
pub struct Provider(&'static dyn RemoteProvider);

impl Provider {
    /// The provider a configuration names `name`, if one is registered.
    pub fn named(name: &str) -> Option<Provider> {
        Provider::all().find(|p| p.name() == name)
    }

    /// Every registered provider, in [`REGISTRY`]'s order.
    pub fn all() -> impl Iterator<Item = Provider> {
        REGISTRY.iter().map(|&p| Provider(p))
    }

    /// The registered names, as messages list them (`fireworks, openai, …`).
    pub fn names() -> String {
        Provider::all()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The provider's name (see [`RemoteProvider::name`]).
    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    /// The native llama-scorer provider, through which `score --server` scores.
    pub fn llama_scorer() -> Provider {
        Provider(&llama_scorer::LlamaScorer)
    }
}

impl std::ops::Deref for Provider {
    type Target = dyn RemoteProvider;

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Provider {
    fn eq(&self, other: &Provider) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Provider {}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Provider({})", self.name())
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_provider_is_found_by_its_own_name_once() {
        for p in Provider::all() {
            assert_eq!(Provider::named(p.name()), Some(p));
            assert_eq!(Provider::all().filter(|q| q.name() == p.name()).count(), 1);
        }
        assert_eq!(Provider::names(), "fireworks, openai, llama_scorer");
        assert_eq!(
            Provider::named("llama_cpp"),
            None,
            "the engine is no remote provider"
        );
    }
}

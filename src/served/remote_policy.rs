//! A remote policy: a [`RemoteScorer`] plus what makes it a policy here — its default temperature and,
//! for the completions providers, the chat template and system prompt that turn `messages` into the prompt
//! text sent upstream (a completions API only sees text, so the template must be rendered on this side).

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::engine::chat_template::{ChatTemplate, render_policy_prompt};
use crate::engine::{ItemInput, PromptInput, ScoreError, ScoreOptions};
use crate::remote::{
    Provider, RemoteCache, RemoteError, RemoteScoreRequest, RemoteScorer, RemoteSettings,
    RemoteStatus,
};
use crate::report::ItemReport;

/// A validated remote policy, as the configuration gives it.
#[derive(Debug, Clone)]
pub struct RemotePolicySettings {
    /// Where and how to call (its `name` is the policy's name).
    pub remote: RemoteSettings,
    /// Default temperature for `sampling_logprob` (sent upstream; only `llama_scorer` applies it).
    pub temperature: f64,
    /// Default `seed` of generation requests forwarded through the compatibility endpoints.
    pub seed: Option<u64>,
    /// Prepended as a system message when `messages` are rendered here (providers whose upstream does not
    /// render them, see [`crate::remote::RemoteProvider::renders_messages`]).
    pub system_prompt: Option<String>,
    /// Jinja chat template for `messages` (the same providers only; one that renders messages itself uses
    /// its own policy's template).
    pub chat_template: Option<String>,
}

/// A remote policy ready to score.
pub struct RemotePolicy {
    pub name: String,
    pub temperature: f64,
    seed: Option<u64>,
    scorer: RemoteScorer,
    template: Option<ChatTemplate>,
    system_prompt: Option<String>,
}

impl RemotePolicy {
    /// Builds the HTTP client and compiles the chat template. A template is rendered with empty
    /// `bos_token`/`eos_token`: the upstream's tokenizer adds its own BOS to a text prompt.
    pub fn new(
        settings: RemotePolicySettings,
        cache: Option<Arc<RemoteCache>>,
    ) -> Result<RemotePolicy, String> {
        let name = settings.remote.name.clone();
        let template = settings
            .chat_template
            .as_deref()
            .map(|s| ChatTemplate::new(s, "", ""))
            .transpose()
            .map_err(|e| format!("policies.{name}.chat_template: {e:#}"))?;
        Ok(RemotePolicy {
            scorer: RemoteScorer::new(settings.remote)?.with_cache(cache),
            name,
            temperature: settings.temperature,
            seed: settings.seed,
            template,
            system_prompt: settings.system_prompt,
        })
    }

    /// The provider it is scored through.
    pub fn provider(&self) -> Provider {
        self.scorer.settings().provider
    }

    /// Whether `messages` prompts can be scored: a provider whose upstream renders them does; any other
    /// needs this policy's `chat_template`.
    pub fn supports_chat(&self) -> bool {
        self.provider().renders_messages() || self.template.is_some()
    }

    /// Health for `/ready`.
    pub fn status(&self) -> RemoteStatus {
        self.scorer.status()
    }

    /// Scores `items` upstream (messages rendered here unless the upstream renders them); errors name items by
    /// their index in `items` (`items[i]…`).
    pub async fn score(
        &self,
        items: Vec<ItemInput>,
        options: &ScoreOptions,
        deadline: Instant,
    ) -> Result<Vec<ItemReport>, RemoteError> {
        let items = if self.provider().renders_messages() {
            items
        } else {
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| self.render(item).map_err(|e| at_item(e, i)))
                .collect::<Result<_, _>>()?
        };
        let req = RemoteScoreRequest {
            items,
            options: *options,
        };
        Ok(self.scorer.score(&req, deadline).await?.items)
    }

    /// Forwards a compatibility-endpoint request (see [`RemoteScorer::forward`]), with this policy's
    /// temperature and seed where the request sets none — as a local policy's defaults apply.
    pub async fn forward(
        &self,
        endpoint: &str,
        mut body: Value,
        deadline: Instant,
    ) -> Result<Value, RemoteError> {
        if let Some(object) = body.as_object_mut() {
            object
                .entry("temperature")
                .or_insert(Value::from(self.temperature));
            if let Some(seed) = self.seed {
                object.entry("seed").or_insert(Value::from(seed));
            }
        }
        self.scorer.forward(endpoint, body, deadline).await
    }

    /// The item with a `messages` prompt rendered to text through this policy's template.
    fn render(&self, item: ItemInput) -> Result<ItemInput, ScoreError> {
        let PromptInput::Messages(messages) = &item.prompt else {
            return Ok(item);
        };
        if messages.is_empty() {
            return Err(ScoreError::invalid("messages", "must not be empty"));
        }
        let text = render_policy_prompt(
            self.template.as_ref(),
            self.system_prompt.as_deref(),
            &self.name,
            "a remote completions API renders no template, and the config sets no chat_template",
            messages,
        )?;
        Ok(ItemInput {
            prompt: PromptInput::Text(text),
            response: item.response,
        })
    }
}

/// A rendering error of item `i`, as a remote error naming `items[i]`.
fn at_item(e: ScoreError, i: usize) -> RemoteError {
    match e.within(&format!("items[{i}]")) {
        ScoreError::InvalidInput { field, message } => {
            RemoteError::InvalidRequest { field, message }
        }
        other => RemoteError::InvalidRequest {
            field: format!("items[{i}]"),
            message: other.to_string(),
        },
    }
}

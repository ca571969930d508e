//! Why an item or request could not be scored: the engine's one error type, which every front end maps
//! (the API layer to one HTTP status per variant).

/// Why an item or request could not be scored. Each variant maps to one HTTP status in the API layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScoreError {
    /// The input is invalid; `field` names it relative to the item (e.g. `response_token_ids[3]`).
    #[error("{field}: {message}")]
    InvalidInput { field: String, message: String },
    /// The sequence does not fit the policy's context.
    #[error(
        "{field}: the sequence has {tokens} tokens ({prompt_tokens} prompt + {response_tokens} response), \
         more than n_ctx = {limit} of policy `{policy}`"
    )]
    TooLong {
        field: String,
        tokens: usize,
        prompt_tokens: usize,
        response_tokens: usize,
        limit: usize,
        policy: String,
    },
    /// A text whose length alone shows it cannot fit the policy's context: refused before tokenizing it.
    #[error(
        "{field}: the text of {bytes} bytes has at least {min_tokens} tokens, more than n_ctx = {limit} \
         of policy `{policy}`"
    )]
    TextTooLong {
        field: String,
        bytes: usize,
        min_tokens: usize,
        limit: usize,
        policy: String,
    },
    /// The model's queue is full; retry after the given number of seconds. Named by the policy the client
    /// asked for: messages to clients never carry server paths or file names (logs may).
    #[error(
        "the queue of policy `{policy}` is full ({capacity} items, shared by the policies on its model); \
         retry in {retry_after_secs} s"
    )]
    QueueFull {
        policy: String,
        capacity: usize,
        retry_after_secs: u64,
    },
    /// The engine is shutting down or its inference threads are gone.
    #[error("the inference engine is not available: {0}")]
    Unavailable(String),
    /// A failure inside llama.cpp (decode error, non-finite logits).
    #[error("inference failed: {0}")]
    Internal(String),
}

impl ScoreError {
    /// Names the policy in errors the model layer raises without knowing which policy asked.
    pub fn for_policy(self, name: &str) -> ScoreError {
        match self {
            ScoreError::QueueFull {
                capacity,
                retry_after_secs,
                ..
            } => ScoreError::QueueFull {
                policy: name.to_string(),
                capacity,
                retry_after_secs,
            },
            other => other,
        }
    }

    /// An invalid-input error for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScoreError {
        ScoreError::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix.` put in front of its field (e.g. `items[3].`).
    pub fn within(self, prefix: &str) -> ScoreError {
        self.map_field(|field| format!("{prefix}.{field}"))
    }

    /// The same error with its field name rewritten (other variants name no field and are unchanged).
    pub fn map_field(self, rename: impl FnOnce(String) -> String) -> ScoreError {
        match self {
            ScoreError::InvalidInput { field, message } => ScoreError::InvalidInput {
                field: rename(field),
                message,
            },
            ScoreError::TooLong {
                field,
                tokens,
                prompt_tokens,
                response_tokens,
                limit,
                policy,
            } => ScoreError::TooLong {
                field: rename(field),
                tokens,
                prompt_tokens,
                response_tokens,
                limit,
                policy,
            },
            ScoreError::TextTooLong {
                field,
                bytes,
                min_tokens,
                limit,
                policy,
            } => ScoreError::TextTooLong {
                field: rename(field),
                bytes,
                min_tokens,
                limit,
                policy,
            },
            other => other,
        }
    }
}

//! How a token is shown on the wire: its text, id and exact bytes (text alone cannot carry a token that
//! holds part of a UTF-8 character).

use serde::Serialize;

use crate::engine::vocab::{TokenId, Vocabulary};

/// `token`, `token_id` and `bytes`, as in Fireworks' and OpenAI's logprobs entries.
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// The token's bytes as UTF-8, with U+FFFD where it holds an incomplete character.
    pub token: String,
    pub token_id: TokenId,
    pub bytes: Vec<u8>,
}

/// The wire view of one token.
pub fn token_view(vocab: &Vocabulary, id: TokenId) -> TokenView {
    let bytes = vocab.piece(id).to_vec();
    TokenView {
        token: String::from_utf8_lossy(&bytes).into_owned(),
        token_id: id,
        bytes,
    }
}

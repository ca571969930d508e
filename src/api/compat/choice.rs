//! A choice's tokens (run at the policy seam, see [`crate::served::completion`]) in the two logprobs shapes
//! clients parse: OpenAI's legacy object and `content[]`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::tokens::{TokenView, token_view};
use crate::engine::vocab::{TokenId, Vocabulary};

pub use crate::served::completion::{ChoiceOutcome, ChoicePlan, Line, echoed};

/// The value reported for the first token of a sequence, which has no context to be scored in. A number
/// (not `null`) because strict client models reject null and summing code would crash on it; 0.0 is the
/// log-probability of something given, so sums over echoed tokens are unaffected.
pub const FIRST_TOKEN_LOGPROB: f64 = 0.0;

/// Characters (UTF-8 sequences) that start in `bytes`: OpenAI's `text_offset` counts characters.
pub fn chars_in(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| !is_continuation(b)).count()
}

fn is_continuation(b: u8) -> bool {
    (b & 0xC0) == 0x80
}

/// The `text_offset` of a token whose bytes follow `chars_before` started characters: the offset of the
/// character its first byte belongs to. A token that starts inside a character (the tail of an emoji or
/// CJK character split over tokens) gets the offset of that character, not of the next one, so a client
/// that splits context from continuation by offset puts it on the side where its character starts.
pub fn token_offset(chars_before: usize, piece: &[u8]) -> usize {
    match piece.first() {
        Some(&b) if is_continuation(b) => chars_before.saturating_sub(1),
        _ => chars_before,
    }
}

/// OpenAI's legacy logprobs object (`logprobs: <int>`).
#[derive(Debug, Serialize)]
pub struct LegacyLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f64>,
    pub top_logprobs: Option<Vec<BTreeMap<String, f64>>>,
    pub text_offset: Vec<usize>,
    pub token_ids: Vec<TokenId>,
}

/// One alternative in `content[].top_logprobs`.
#[derive(Debug, Serialize)]
pub struct ContentTop {
    /// `token`, `token_id`, `bytes`: the same view as the native API's.
    #[serde(flatten)]
    pub view: TokenView,
    pub logprob: f64,
}

/// One entry of `content[]` (OpenAI's chat logprobs shape, with Fireworks' `token_id` and `text_offset`).
#[derive(Debug, Serialize)]
pub struct ContentEntry {
    /// `token`, `token_id`, `bytes`: the same view as the native API's.
    #[serde(flatten)]
    pub view: TokenView,
    pub logprob: f64,
    pub top_logprobs: Vec<ContentTop>,
    pub text_offset: usize,
}

/// `{"content": [...]}`.
#[derive(Debug, Serialize)]
pub struct ContentLogprobs {
    pub content: Vec<ContentEntry>,
}

fn text_of(vocab: &Vocabulary, t: TokenId) -> String {
    String::from_utf8_lossy(vocab.piece(t)).into_owned()
}

/// The legacy object for `lines`, whose text starts after `offset` characters of the returned text.
pub fn legacy(
    vocab: &Vocabulary,
    lines: &[Line<'_>],
    k: usize,
    mut offset: usize,
) -> LegacyLogprobs {
    let mut out = LegacyLogprobs {
        tokens: Vec::with_capacity(lines.len()),
        token_logprobs: Vec::with_capacity(lines.len()),
        top_logprobs: (k > 0).then(Vec::new),
        text_offset: Vec::with_capacity(lines.len()),
        token_ids: Vec::with_capacity(lines.len()),
    };
    for line in lines {
        out.tokens.push(text_of(vocab, line.token));
        out.token_logprobs
            .push(line.score.map_or(FIRST_TOKEN_LOGPROB, |s| s.logprob));
        if let Some(tops) = &mut out.top_logprobs {
            let mut map = BTreeMap::new();
            for t in line.score.map_or(&[][..], |s| &s.top[..]) {
                // Tokens that render alike (partial UTF-8) share a key: keep the likelier.
                let e = map.entry(text_of(vocab, t.token)).or_insert(t.logprob);
                *e = e.max(t.logprob);
            }
            tops.push(map);
        }
        out.text_offset
            .push(token_offset(offset, vocab.piece(line.token)));
        out.token_ids.push(line.token);
        offset += chars_in(vocab.piece(line.token));
    }
    out
}

/// The `content[]` shape for `lines`, whose text starts after `offset` characters of the returned text.
pub fn content(vocab: &Vocabulary, lines: &[Line<'_>], mut offset: usize) -> ContentLogprobs {
    let content = lines
        .iter()
        .map(|line| {
            let entry = ContentEntry {
                view: token_view(vocab, line.token),
                logprob: line.score.map_or(FIRST_TOKEN_LOGPROB, |s| s.logprob),
                top_logprobs: line
                    .score
                    .map_or(&[][..], |s| &s.top[..])
                    .iter()
                    .map(|t| ContentTop {
                        view: token_view(vocab, t.token),
                        logprob: t.logprob,
                    })
                    .collect(),
                text_offset: token_offset(offset, vocab.piece(line.token)),
            };
            offset += chars_in(vocab.piece(line.token));
            entry
        })
        .collect();
    ContentLogprobs { content }
}

#[cfg(test)]
mod tests {
    use super::{chars_in, token_offset};

    #[test]
    fn text_offsets_count_characters_not_bytes() {
        assert_eq!(chars_in("abc".as_bytes()), 3);
        assert_eq!(chars_in("東京".as_bytes()), 2);
        assert_eq!(chars_in("😀".as_bytes()), 1);
        // A token holding the start of a character counts it; one holding only its tail does not.
        assert_eq!(chars_in(&"😀".as_bytes()[..2]), 1);
        assert_eq!(chars_in(&"😀".as_bytes()[2..]), 0);
    }

    #[test]
    fn a_token_starting_inside_a_character_has_that_characters_offset() {
        // "a😀b" split as "a", 😀[..2], 😀[2..], "b": the tail belongs to the character at offset 1.
        let text = "a😀b".as_bytes();
        let pieces = [&text[..1], &text[1..3], &text[3..5], &text[5..]];
        let mut before = 0;
        let mut offsets = Vec::new();
        for p in pieces {
            offsets.push(token_offset(before, p));
            before += chars_in(p);
        }
        assert_eq!(offsets, [0, 1, 1, 2]);
        // Every offset indexes the character that holds the token's first byte.
        let starts: Vec<usize> = [0, 1, 3, 5]
            .iter()
            .map(|&b| std::str::from_utf8(&text[..b]).map_or_else(|e| e.valid_up_to(), |s| s.len()))
            .map(|b| std::str::from_utf8(&text[..b]).unwrap().chars().count())
            .collect();
        assert_eq!(offsets, starts);
        assert_eq!(token_offset(0, &"😀".as_bytes()[3..]), 0);
        assert_eq!(token_offset(5, b""), 5);
    }
}

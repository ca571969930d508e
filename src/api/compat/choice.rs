//! Running one choice of a completion — score-only (`max_tokens: 0`) or generation — and turning its
//! tokens into the two logprobs shapes clients parse: OpenAI's legacy object and `content[]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::api::tokens::{TokenView, token_view};

use crate::engine::generate::{FinishReason, GenEvent, GenerateOptions};
use crate::engine::vocab::{TokenId, Vocabulary};
use crate::engine::{Policy, PreparedItem, QueuePlace, ScoreError, ScoreOptions, TokenScore};

/// The value reported for the first token of a sequence, which has no context to be scored in. A number
/// (not `null`) because strict client models reject null and summing code would crash on it; 0.0 is the
/// log-probability of something given, so sums over echoed tokens are unaffected.
pub const FIRST_TOKEN_LOGPROB: f64 = 0.0;

/// What to run for one choice.
pub struct ChoicePlan {
    pub prompt: Arc<PreparedItem>,
    /// `None` = score only (`max_tokens: 0`).
    pub generate: Option<GenerateOptions>,
    pub echo: bool,
    pub top_logprobs: usize,
    /// The generation's place in the model's queue, reserved with the request's other choices (see
    /// [`reserve_places`]); `None` = reserved when it runs.
    pub place: Option<QueuePlace>,
    /// A score-only echo's prompt scores, computed with the request's other score-only choices (see
    /// [`score_echoes`]).
    pub echoed: Option<Vec<TokenScore>>,
}

/// Reserves a queue place for every generating choice at once, all or none: one request's fan-out either
/// fits the queue whole or is refused (429) before any of it is queued.
pub fn reserve_places(policy: &Policy, plans: &mut [ChoicePlan]) -> Result<(), ScoreError> {
    let generating = plans.iter().filter(|p| p.generate.is_some()).count();
    let mut places = policy.reserve(generating)?.into_iter();
    for plan in plans.iter_mut().filter(|p| p.generate.is_some()) {
        plan.place = places.next();
    }
    Ok(())
}

/// Scores every score-only echo choice (`max_tokens: 0`) in one call, so the request's scoring is admitted
/// to the model's queue all at once or refused (429) before any of it runs, as its generations are.
pub async fn score_echoes(policy: &Policy, plans: &mut [ChoicePlan]) -> Result<(), ScoreError> {
    let scoring: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].generate.is_none() && plans[i].echo)
        .collect();
    let Some(&first) = scoring.first() else {
        return Ok(());
    };
    let options = ScoreOptions {
        top_logprobs: plans[first].top_logprobs,
        echo: true,
        score_end_of_turn: false,
        temperature: 1.0,
    };
    let prompts = scoring.iter().map(|&i| plans[i].prompt.clone()).collect();
    let scores = policy.score(prompts, &options).await?;
    for (i, scored) in scoring.into_iter().zip(scores) {
        plans[i].echoed = Some(scored.score.prompt.clone());
    }
    Ok(())
}

/// The plan's reserved place, or one reserved now.
pub fn place_of(policy: &Policy, place: Option<QueuePlace>) -> Result<QueuePlace, ScoreError> {
    match place {
        Some(place) => Ok(place),
        None => Ok(policy.reserve(1)?.remove(0)),
    }
}

/// A finished choice.
pub struct ChoiceOutcome {
    pub prompt: Arc<PreparedItem>,
    /// Scores of prompt tokens 1..P when echo was asked.
    pub echo: Option<Vec<TokenScore>>,
    /// Generated tokens that start before the kept text ends.
    pub tokens: Vec<TokenScore>,
    /// The end-of-generation token the generation stopped on, if it did: generated, but not text.
    pub end: Option<TokenScore>,
    /// All tokens sampled (for usage), including any cut by a stop string and the end-of-generation one.
    pub sampled: usize,
    /// The generated text kept (bytes; a stop string and what follows are cut).
    pub text: Vec<u8>,
    pub finish: FinishReason,
}

/// Runs a choice to its end.
pub async fn run(policy: &Policy, plan: ChoicePlan) -> Result<ChoiceOutcome, ScoreError> {
    let Some(options) = plan.generate else {
        let echo = if let Some(echoed) = plan.echoed {
            Some(echoed)
        } else if plan.echo {
            let options = ScoreOptions {
                top_logprobs: plan.top_logprobs,
                echo: true,
                score_end_of_turn: false,
                temperature: 1.0,
            };
            let mut scores = policy.score(vec![plan.prompt.clone()], &options).await?;
            Some(scores.remove(0).score.prompt.clone())
        } else {
            None
        };
        return Ok(ChoiceOutcome {
            prompt: plan.prompt,
            echo,
            tokens: Vec::new(),
            end: None,
            sampled: 0,
            text: Vec::new(),
            finish: FinishReason::Length,
        });
    };
    let place = place_of(policy, plan.place)?;
    let mut rx = policy
        .generate(
            plan.prompt.clone(),
            options,
            plan.echo,
            plan.top_logprobs,
            place,
        )
        .await?;
    let vocab = &policy.model.vocab;
    let mut outcome = ChoiceOutcome {
        prompt: plan.prompt,
        echo: None,
        tokens: Vec::new(),
        end: None,
        sampled: 0,
        text: Vec::new(),
        finish: FinishReason::Length,
    };
    let mut starts = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Prompt(scores) => outcome.echo = Some(scores),
            GenEvent::Token(t) => {
                starts.push(outcome.text.len());
                outcome.text.extend_from_slice(vocab.piece(t.token));
                outcome.tokens.push(t);
            }
            GenEvent::End(t) => outcome.end = Some(t),
            GenEvent::Done { reason, text_len } => {
                outcome.sampled = outcome.tokens.len() + usize::from(outcome.end.is_some());
                outcome.text.truncate(text_len);
                let keep = starts.iter().take_while(|&&s| s < text_len).count();
                outcome.tokens.truncate(keep);
                outcome.finish = reason;
                return Ok(outcome);
            }
            GenEvent::Error(e) => return Err(e),
        }
    }
    Err(ScoreError::Unavailable(
        "the inference thread stopped before finishing".into(),
    ))
}

/// One token of a choice's output, in order, with its score (`None` for a first token without context).
#[derive(Clone, Copy)]
pub struct Line<'a> {
    pub token: TokenId,
    pub score: Option<&'a TokenScore>,
}

impl ChoiceOutcome {
    /// The echoed prompt tokens (the last `echo_last` of them, if given) followed by the generated ones.
    pub fn lines(&self, echo_last: Option<usize>) -> Vec<Line<'_>> {
        let mut out = Vec::new();
        if let Some(echo) = &self.echo {
            for i in echoed(&self.prompt, echo_last) {
                let token = self.prompt.tokens[i];
                let score = if i == 0 { None } else { Some(&echo[i - 1]) };
                out.push(Line { token, score });
            }
        }
        out.extend(self.tokens.iter().map(|t| Line {
            token: t.token,
            score: Some(t),
        }));
        out
    }

    /// [`ChoiceOutcome::lines`] and then the end-of-generation token the generation stopped on, as
    /// completions list it (OpenAI's legacy completions did): an echo with generation always ends with
    /// what was generated, so a client that drops the last entry as the generated token drops that one.
    pub fn lines_with_end(&self, echo_last: Option<usize>) -> Vec<Line<'_>> {
        let mut out = self.lines(echo_last);
        out.extend(self.end.iter().map(|t| Line {
            token: t.token,
            score: Some(t),
        }));
        out
    }

    /// Bytes of the echoed prompt part of the text (the pieces of the echoed prompt tokens).
    pub fn echo_text(&self, vocab: &Vocabulary, echo_last: Option<usize>) -> Vec<u8> {
        let Some(_) = &self.echo else {
            return Vec::new();
        };
        self.prompt.tokens[echoed(&self.prompt, echo_last)]
            .iter()
            .flat_map(|&t| vocab.piece(t).iter().copied())
            .collect()
    }
}

/// Positions of the prompt tokens an echo shows: all of them, or the last `echo_last` (Fireworks' option).
pub fn echoed(prompt: &PreparedItem, echo_last: Option<usize>) -> std::ops::Range<usize> {
    let p = prompt.prompt_len;
    echo_last.map_or(0, |n| p.saturating_sub(n))..p
}

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

//! Server-sent events for `stream: true`: each choice runs in its own task and sends deltas; text is held
//! back while it could still be the start of a stop string or of a UTF-8 character, so a client never
//! sees text that the final answer would not contain.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::mpsc;

use super::choice::{self, ChoiceOutcome, ChoicePlan, chars_in};
use crate::api::ApiError;
use crate::engine::generate::{FinishReason, GenEvent};
use crate::engine::vocab::{TokenId, Vocabulary};
use crate::engine::{Policy, PreparedItem, TokenScore};
use crate::served::completion;

/// A token of a streamed delta, owning its score.
pub struct OwnedLine {
    pub token: TokenId,
    pub score: Option<TokenScore>,
}

impl OwnedLine {
    pub fn as_line(&self) -> choice::Line<'_> {
        choice::Line {
            token: self.token,
            score: self.score.as_ref(),
        }
    }
}

/// A piece of one choice's output.
pub struct Delta {
    pub index: usize,
    pub text: String,
    pub lines: Vec<OwnedLine>,
    /// Characters of the choice's whole text before the first line's token.
    pub offset: usize,
    /// The end-of-generation token the generation stopped on (in the last delta): completions list it
    /// after `lines`, chat does not (see [`choice::ChoiceOutcome::lines_with_end`]).
    pub end: Option<OwnedLine>,
    pub finish: Option<FinishReason>,
}

/// What a choice task sends.
pub enum ChoiceEvent {
    Delta(Delta),
    Error(ApiError),
}

/// Generated text waiting to be released.
struct Holdback {
    text: Vec<u8>,
    sent: usize,
    stops: Vec<Vec<u8>>,
}

impl Holdback {
    /// Text that is safe to send now: not a possible stop-string start, and whole characters only.
    fn release(&mut self) -> String {
        let mut end = self.text.len();
        for stop in &self.stops {
            // A whole stop string: the generation ends there (the worker reports it next).
            if let Some(at) = self.text[self.sent..]
                .windows(stop.len())
                .position(|w| w == &stop[..])
            {
                end = end.min(self.sent + at);
            }
            for k in (1..stop.len()).rev() {
                if self.text.ends_with(&stop[..k]) {
                    end = end.min(self.text.len() - k);
                    break;
                }
            }
        }
        let end = self.sent
            + match std::str::from_utf8(&self.text[self.sent..end.max(self.sent)]) {
                Ok(s) => s.len(),
                Err(e) => e.valid_up_to(),
            };
        self.take(end)
    }

    /// Everything up to `len` (the final text), whole or not.
    fn finish(&mut self, len: usize) -> String {
        self.take(len.max(self.sent))
    }

    fn take(&mut self, end: usize) -> String {
        let out = String::from_utf8_lossy(&self.text[self.sent..end]).into_owned();
        self.sent = end;
        out
    }
}

/// Runs one choice, sending its deltas; returns the number of tokens it sampled.
pub async fn run_choice(
    policy: Arc<Policy>,
    plan: ChoicePlan,
    index: usize,
    echo_last: Option<usize>,
    tx: mpsc::Sender<ChoiceEvent>,
) -> usize {
    match run_choice_inner(&policy, plan, index, echo_last, &tx).await {
        Ok(n) => n,
        Err(e) => {
            let _ = tx.send(ChoiceEvent::Error(e)).await;
            0
        }
    }
}

/// The choice's work, with every failure (including a client gone) left for [`run_choice`] to report.
async fn run_choice_inner(
    policy: &Policy,
    plan: ChoicePlan,
    index: usize,
    echo_last: Option<usize>,
    tx: &mpsc::Sender<ChoiceEvent>,
) -> Result<usize, ApiError> {
    let send = |d: Delta| async { tx.send(ChoiceEvent::Delta(d)).await.map_err(|_| gone()) };
    let Some(stops) = plan
        .generate
        .as_ref()
        .map(|o| o.stop.iter().map(|s| s.as_bytes().to_vec()).collect())
    else {
        // Score only: one delta with the echo (if any) and the finish.
        let outcome = completion::run_choice(policy, plan).await?;
        send(score_only_delta(
            &policy.model.vocab,
            &outcome,
            index,
            echo_last,
        ))
        .await?;
        return Ok(0);
    };
    let prompt = plan.prompt.clone();
    let mut rx = completion::generate(policy, plan).await?;
    let mut deltas = Deltas {
        vocab: &policy.model.vocab,
        index,
        offset: 0,
        held: Holdback {
            text: Vec::new(),
            sent: 0,
            stops,
        },
    };
    let mut sampled = 0usize;
    let mut end = None;
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Prompt(scores) => send(deltas.echo(&prompt, &scores, echo_last)).await?,
            GenEvent::Token(t) => {
                sampled += 1;
                send(deltas.token(t)).await?;
            }
            GenEvent::End(t) => {
                sampled += 1;
                end = Some(t);
            }
            GenEvent::Done { reason, text_len } => {
                send(deltas.done(reason, text_len, end.take())).await?;
                return Ok(sampled);
            }
            GenEvent::Error(e) => return Err(e.into()),
        }
    }
    Err(gone())
}

/// Why a choice stops when its receiver is gone (the client left) or its generation ended unreported.
fn gone() -> ApiError {
    ApiError::from(crate::engine::ScoreError::Unavailable("client gone".into()))
}

/// A score-only choice's one delta: the echo (if any) with its scores, and the finish.
fn score_only_delta(
    vocab: &Vocabulary,
    outcome: &ChoiceOutcome,
    index: usize,
    echo_last: Option<usize>,
) -> Delta {
    let lines = outcome
        .lines(echo_last)
        .into_iter()
        .map(|l| OwnedLine {
            token: l.token,
            score: l.score.cloned(),
        })
        .collect();
    let text = String::from_utf8_lossy(&outcome.echo_text(vocab, echo_last)).into_owned();
    Delta {
        index,
        text,
        lines,
        offset: 0,
        end: None,
        finish: Some(outcome.finish),
    }
}

/// A generating choice's deltas, in order: each carries the character offset its text starts at.
struct Deltas<'a> {
    vocab: &'a Vocabulary,
    index: usize,
    /// Characters of the choice's text covered by the deltas so far.
    offset: usize,
    held: Holdback,
}

impl Deltas<'_> {
    /// The echoed prompt tokens with their scores (the first token of the prompt has none).
    fn echo(
        &mut self,
        prompt: &PreparedItem,
        scores: &[TokenScore],
        echo_last: Option<usize>,
    ) -> Delta {
        let mut lines = Vec::new();
        let mut text = Vec::new();
        for i in choice::echoed(prompt, echo_last) {
            let token = prompt.tokens[i];
            text.extend_from_slice(self.vocab.piece(token));
            let score = (i > 0).then(|| scores[i - 1].clone());
            lines.push(OwnedLine { token, score });
        }
        let chars = chars_in(&text);
        self.next(
            String::from_utf8_lossy(&text).into_owned(),
            lines,
            chars,
            None,
        )
    }

    /// A sampled token, with as much of the text as can be sent safely now.
    fn token(&mut self, t: TokenScore) -> Delta {
        let piece = self.vocab.piece(t.token);
        self.held.text.extend_from_slice(piece);
        let chars = chars_in(piece);
        let text = self.held.release();
        let lines = vec![OwnedLine {
            token: t.token,
            score: Some(t),
        }];
        self.next(text, lines, chars, None)
    }

    /// The end: the rest of the kept text, the end-of-generation token if one ended it, and why
    /// generation stopped.
    fn done(&mut self, reason: FinishReason, text_len: usize, end: Option<TokenScore>) -> Delta {
        let text = self.held.finish(text_len);
        let mut delta = self.next(text, Vec::new(), 0, Some(reason));
        delta.end = end.map(|t| OwnedLine {
            token: t.token,
            score: Some(t),
        });
        delta
    }

    /// A delta at the current offset, moving the offset past the `chars` its tokens cover.
    fn next(
        &mut self,
        text: String,
        lines: Vec<OwnedLine>,
        chars: usize,
        finish: Option<FinishReason>,
    ) -> Delta {
        let offset = self.offset;
        self.offset += chars;
        Delta {
            index: self.index,
            text,
            lines,
            offset,
            end: None,
            finish,
        }
    }
}

/// Turns pre-serialized JSON chunks into an SSE response ending with `data: [DONE]`.
pub fn sse(chunks: mpsc::Receiver<String>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(chunks, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(Event::default().data(chunk)), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::Holdback;

    fn hb(stops: &[&str]) -> Holdback {
        Holdback {
            text: Vec::new(),
            sent: 0,
            stops: stops.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn text_that_may_start_a_stop_string_is_held_back() {
        let mut h = hb(&["END"]);
        h.text.extend_from_slice(b"abcE");
        assert_eq!(h.release(), "abc");
        h.text.extend_from_slice(b"x");
        assert_eq!(h.release(), "Ex");
        h.text.extend_from_slice(b"EN");
        assert_eq!(h.release(), "");
        h.text.extend_from_slice(b"Dmore");
        assert_eq!(h.release(), "");
        // The worker reports the stop at byte 5: nothing of it is ever sent.
        assert_eq!(h.finish(5), "");
    }

    #[test]
    fn partial_utf8_waits_for_the_rest_of_the_character() {
        let mut h = hb(&[]);
        let emoji = "😀".as_bytes();
        h.text.extend_from_slice(&emoji[..2]);
        assert_eq!(h.release(), "");
        h.text.extend_from_slice(&emoji[2..]);
        assert_eq!(h.release(), "😀");
    }
}

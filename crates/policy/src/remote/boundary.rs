//! Where each echoed token lies in prompt + response, in bytes, and which tokens are the response's.
//! Rebuilt from the token texts themselves, not from `text_offset` (characters on OpenAI-style servers,
//! this project's included; bytes on others); offsets only re-synchronise after tokens whose text is
//! not exact (U+FFFD for part of a UTF-8 character).

/// Where one echoed token lies, in bytes of prompt + response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    /// False for tokens inside a run of inexact texts, whose own edges are unknown (the span is then
    /// the whole run's).
    pub exact: bool,
}

/// Why the echo cannot be split at the boundary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Misfit {
    /// Token `index` (text `token`) spans `start..end`, across the boundary.
    Straddle {
        token: String,
        start: usize,
        end: usize,
    },
    /// The echoed tokens do not spell prompt + response.
    Mismatch(String),
}

/// Spans of `tokens` in `full`; `offsets` are the upstream's `text_offset`s (any unit).
pub(crate) fn spans(full: &str, tokens: &[String], offsets: &[usize]) -> Result<Vec<Span>, Misfit> {
    let mut out: Vec<Span> = Vec::with_capacity(tokens.len());
    let mut cursor = 0usize;
    let mut i = 0usize;
    while i < tokens.len() {
        let text = tokens[i].as_str();
        if full[cursor..].starts_with(text) && (!text.is_empty() || cursor > 0) {
            out.push(Span {
                start: cursor,
                end: cursor + text.len(),
                exact: true,
            });
            cursor += text.len();
            i += 1;
            continue;
        }
        if cursor == 0 && is_control_text(text) {
            // A BOS-like token the upstream adds in front: it spells none of the text.
            out.push(Span {
                start: 0,
                end: 0,
                exact: true,
            });
            i += 1;
            continue;
        }
        if !text.contains('\u{FFFD}') {
            return Err(Misfit::Mismatch(format!(
                "echoed token {i} {text:?} does not continue the text at byte {cursor} ({:?})",
                preview(&full[cursor..])
            )));
        }
        // A run of inexact tokens: it ends where the next exact token, placed by its offset, starts.
        let run_start = i;
        let mut j = i + 1;
        let run_end = loop {
            if j == tokens.len() {
                break full.len();
            }
            let min = cursor + (j - run_start);
            if let Some(at) = place(full, &tokens[j], offsets.get(j).copied(), min) {
                break at;
            }
            j += 1;
        };
        if run_end < cursor + (j - run_start) {
            return Err(Misfit::Mismatch(format!(
                "echoed tokens {run_start}..{j} cannot fit in bytes {cursor}..{run_end}"
            )));
        }
        for _ in run_start..j {
            out.push(Span {
                start: cursor,
                end: run_end,
                exact: false,
            });
        }
        cursor = run_end;
        i = j;
    }
    if cursor != full.len() {
        return Err(Misfit::Mismatch(format!(
            "the echoed tokens spell {cursor} bytes, prompt + response has {}",
            full.len()
        )));
    }
    Ok(out)
}

/// Index of the first response token: the first whose text starts at or after `boundary`. A token
/// that starts before and ends after it straddles: no exact split exists.
pub(crate) fn split(spans: &[Span], tokens: &[String], boundary: usize) -> Result<usize, Misfit> {
    for (k, s) in spans.iter().enumerate() {
        if s.start < boundary && boundary < s.end {
            let token = if s.exact {
                tokens[k].clone()
            } else {
                // Several tokens share this inexact run: name them all.
                spans
                    .iter()
                    .zip(tokens)
                    .filter(|(t, _)| *t == s)
                    .map(|(_, x)| x.as_str())
                    .collect()
            };
            return Err(Misfit::Straddle {
                token,
                start: s.start,
                end: s.end,
            });
        }
    }
    Ok(spans
        .iter()
        .position(|s| s.start >= boundary)
        .unwrap_or(spans.len()))
}

/// Where an exact token `text` with upstream offset `offset` starts, if at or after `min`: the offset
/// read as bytes or as characters, whichever puts `text` there (both must agree if both do).
fn place(full: &str, text: &str, offset: Option<usize>, min: usize) -> Option<usize> {
    if text.is_empty() || text.contains('\u{FFFD}') {
        return None;
    }
    let offset = offset?;
    let as_chars = full
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(full.len()))
        .nth(offset);
    let fits = |at: usize| at >= min && full.get(at..).is_some_and(|rest| rest.starts_with(text));
    let candidates: Vec<usize> = [Some(offset), as_chars]
        .into_iter()
        .flatten()
        .filter(|&at| fits(at))
        .collect();
    match candidates.as_slice() {
        [one] => Some(*one),
        [a, b] if a == b => Some(*a),
        _ => None,
    }
}

/// Text of a control token an upstream may echo first (`<s>`, `<bos>`, `<|begin_of_text|>`).
fn is_control_text(text: &str) -> bool {
    text.is_empty()
        || (text.starts_with('<') && text.ends_with('>') && !text.contains(char::is_whitespace))
}

fn preview(s: &str) -> String {
    s.chars().take(20).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn char_offsets(tokens: &[&str]) -> Vec<usize> {
        let mut o = 0;
        tokens
            .iter()
            .map(|x| {
                let at = o;
                o += x.chars().count();
                at
            })
            .collect()
    }

    #[test]
    fn exact_tokens_split_at_the_boundary() {
        let toks = t(&["Hello", " world", "!"]);
        let s = spans("Hello world!", &toks, &[0, 5, 11]).unwrap();
        assert_eq!(split(&s, &toks, 5).unwrap(), 1);
        assert_eq!(split(&s, &toks, 12).unwrap(), 3);
    }

    #[test]
    fn a_straddling_token_is_named_with_its_bytes() {
        let toks = t(&["Hello", " world"]);
        let s = spans("Hello world", &toks, &[0, 5]).unwrap();
        assert_eq!(
            split(&s, &toks, 9).unwrap_err(),
            Misfit::Straddle {
                token: " world".into(),
                start: 5,
                end: 11
            }
        );
    }

    #[test]
    fn a_leading_bos_is_zero_width_and_a_wrong_echo_is_refused() {
        let toks = t(&["<s>", "Hi", " there"]);
        let s = spans("Hi there", &toks, &[0, 0, 2]).unwrap();
        assert_eq!(split(&s, &toks, 2).unwrap(), 2);
        assert!(matches!(
            spans("Hi there", &t(&["Hi", " they"]), &[0, 2]),
            Err(Misfit::Mismatch(_))
        ));
        assert!(matches!(
            spans("Hi there", &t(&["Hi"]), &[0]),
            Err(Misfit::Mismatch(_))
        ));
    }

    #[test]
    fn multibyte_text_places_by_bytes_whatever_the_offset_unit() {
        let full = "東京 is big";
        let toks = ["東", "京", " is", " big"];
        for offsets in [char_offsets(&toks), vec![0, 3, 6, 9]] {
            let s = spans(full, &t(&toks), &offsets).unwrap();
            assert_eq!(s[2].start, 6);
            assert_eq!(split(&s, &t(&toks), 6).unwrap(), 2);
        }
    }

    #[test]
    fn partial_character_tokens_resync_by_offset() {
        // "😀😀" over three tokens that cut characters (lossy texts), then " ok".
        let full = "😀😀 ok";
        let toks = t(&["\u{FFFD}", "\u{FFFD}\u{FFFD}", "\u{FFFD}", " ok"]);
        // Character offsets as this project's server reports them (a token counts the characters that
        // start in it), and byte offsets as others do.
        for offsets in [vec![0, 1, 2, 2], vec![0, 2, 6, 8]] {
            let s = spans(full, &toks, &offsets).unwrap();
            assert_eq!(
                s[3],
                Span {
                    start: 8,
                    end: 11,
                    exact: true
                }
            );
            assert_eq!(split(&s, &toks, 8).unwrap(), 3);
            // A boundary inside the run cannot be placed: refused, naming the run's tokens.
            match split(&s, &toks, 4) {
                Err(Misfit::Straddle {
                    token,
                    start: 0,
                    end: 8,
                }) => {
                    assert_eq!(token.chars().count(), 4)
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

//! The completions protocol (the `fireworks` and `openai` providers): one completions call per item with
//! `prompt = prompt + response`, `echo: true`, `max_tokens: 0` and legacy `logprobs: k`; the response's tokens are found
//! in the echo and their log-probs summed — only when a token edge falls exactly at the boundary.

use std::time::Instant;

use futures_util::future::try_join_all;
use serde_json::{Value, json};

use super::boundary::{self, Misfit};
use super::error::RemoteError;
use super::retry::Caller;
use super::{RemoteScoreRequest, RemoteScored};
use crate::engine::{ItemInput, PromptInput, ResponseInput, ScoreOptions};
use crate::report::{ItemReport, TokenReport, TopReport};

/// Scores each item with its own completions call (bounded by the scorer's concurrency limit).
pub(crate) async fn score(
    caller: &Caller<'_>,
    base_url: &str,
    req: &RemoteScoreRequest,
    deadline: Instant,
) -> Result<RemoteScored, RemoteError> {
    let provider = caller.settings.provider;
    if req.options.echo {
        return Err(RemoteError::invalid(
            "echo",
            format!("prompt scores are not available through provider `{provider}`"),
        ));
    }
    if req.options.score_end_of_turn {
        return Err(RemoteError::invalid(
            "score_end_of_turn",
            format!("the end-of-turn token cannot be scored through provider `{provider}`"),
        ));
    }
    let texts = req
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| texts(i, item, provider.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let url = format!("{base_url}/completions");
    let items = try_join_all(
        texts
            .into_iter()
            .enumerate()
            .map(|(i, (prompt, response))| {
                let url = &url;
                async move {
                    let full = format!("{prompt}{response}");
                    let body = body(&caller.settings.model, &full, &req.options);
                    let answer = caller.post(url, &body, deadline).await?;
                    read(&answer, &full, prompt.len()).map_err(|m| match m {
                        Misfit::Straddle { token, start, end } => RemoteError::TokenBoundary {
                            item: Some(i),
                            token,
                            start,
                            end,
                            boundary: prompt.len(),
                        },
                        Misfit::Mismatch(message) => RemoteError::Malformed {
                            remote: caller.settings.name.clone(),
                            message: format!("items[{i}]: {message}"),
                        },
                    })
                }
            }),
    )
    .await?;
    Ok(RemoteScored { items })
}

/// The prompt and response texts of item `i` (only text can be placed in an echo).
fn texts<'a>(
    i: usize,
    item: &'a ItemInput,
    provider: &str,
) -> Result<(&'a str, &'a str), RemoteError> {
    let field = |f: &str| format!("items[{i}].{f}");
    let prompt = match &item.prompt {
        PromptInput::Text(p) => p.as_str(),
        PromptInput::Messages(_) => {
            return Err(RemoteError::invalid(
                field("messages"),
                format!(
                    "provider `{provider}` scores text prompts only (the remote chat template is unknown \
                     here); send the rendered prompt as `prompt`"
                ),
            ));
        }
        PromptInput::TokenIds(_) => {
            return Err(RemoteError::invalid(
                field("prompt_token_ids"),
                format!("provider `{provider}` scores text prompts only"),
            ));
        }
    };
    let ResponseInput::Text(response) = &item.response else {
        return Err(RemoteError::invalid(
            field("response_token_ids"),
            format!("provider `{provider}` scores text responses only"),
        ));
    };
    if prompt.is_empty() {
        return Err(RemoteError::invalid(
            field("prompt"),
            "must not be empty: the first token has no context to be scored in",
        ));
    }
    Ok((prompt, response))
}

/// The completions request: score only, echo with legacy logprobs.
fn body(model: &str, full: &str, options: &ScoreOptions) -> Value {
    json!({
        "model": model,
        "prompt": full,
        "echo": true,
        "max_tokens": 0,
        "logprobs": options.top_logprobs,
        "temperature": options.temperature,
    })
}

/// Reads the echo of `full` and scores the tokens from byte `boundary` on.
fn read(answer: &Value, full: &str, boundary: usize) -> Result<ItemReport, Misfit> {
    let bad = |m: &str| Misfit::Mismatch(m.to_string());
    let lp = answer
        .pointer("/choices/0/logprobs")
        .filter(|v| v.is_object())
        .ok_or_else(|| bad("no `choices[0].logprobs` object"))?;
    let tokens: Vec<String> = lp
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `logprobs.tokens` array"))?
        .iter()
        .map(|t| t.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a token in `logprobs.tokens` is not a string"))?;
    let n = tokens.len();
    let logprobs = lp
        .get("token_logprobs")
        .and_then(Value::as_array)
        .filter(|a| a.len() == n)
        .ok_or_else(|| bad("`logprobs.token_logprobs` is missing or not one per token"))?;
    let offsets: Vec<usize> = match lp.get("text_offset").and_then(Value::as_array) {
        Some(a) if a.len() == n => a
            .iter()
            .map(|o| o.as_u64().map(|o| o as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a `logprobs.text_offset` is not an integer"))?,
        _ => Vec::new(),
    };
    let ids = lp
        .get("token_ids")
        .and_then(Value::as_array)
        .filter(|a| a.len() == n);
    let tops = lp
        .get("top_logprobs")
        .and_then(Value::as_array)
        .filter(|a| a.len() == n);

    let spans = boundary::spans(full, &tokens, &offsets)?;
    let first = boundary::split(&spans, &tokens, boundary)?;
    let mut out = Vec::with_capacity(n - first);
    let mut sum = 0.0f64;
    for k in first..n {
        let logprob = logprobs[k]
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                Misfit::Mismatch(format!(
                    "response token {k} {:?} has log-prob {}, not a finite number",
                    tokens[k], logprobs[k]
                ))
            })?;
        sum += logprob;
        let span = spans[k];
        let mut top: Vec<TopReport> = tops
            .and_then(|t| t[k].as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(text, v)| {
                        Some(TopReport {
                            token: text.clone(),
                            token_id: None,
                            bytes: None,
                            logprob: v.as_f64()?,
                            sampling_logprob: None,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        out.push(TokenReport {
            token: tokens[k].clone(),
            token_id: ids.and_then(|a| a[k].as_i64()),
            bytes: span
                .exact
                .then(|| full.as_bytes()[span.start..span.end].to_vec()),
            text_offset: span.start,
            logprob: Some(logprob),
            sampling_logprob: None,
            top_logprobs: top,
        });
    }
    Ok(ItemReport {
        logprob: sum,
        sampling_logprob: None,
        prompt_logprob: None,
        prompt_tokens: first,
        response_tokens: n - first,
        scored_tokens: n - first,
        tokens: out,
        cached: false,
        system_fingerprint: answer
            .get("system_fingerprint")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tokens: &[&str], logprobs: &[f64]) -> Value {
        let mut o = 0;
        let offsets: Vec<usize> = tokens
            .iter()
            .map(|t| {
                let at = o;
                o += t.chars().count();
                at
            })
            .collect();
        json!({"choices": [{"text": tokens.concat(), "logprobs": {
            "tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets,
            "top_logprobs": null}}]})
    }

    #[test]
    fn sums_the_response_tokens_in_f64() {
        let a = answer(&["Hello", " world", "!"], &[0.0, -1.25, -0.5]);
        let s = read(&a, "Hello world!", 5).unwrap();
        assert_eq!(s.logprob, -1.75);
        assert_eq!((s.prompt_tokens, s.response_tokens), (1, 2));
        assert_eq!(s.sampling_logprob, None);
        assert_eq!(s.tokens[1].text_offset, 11);
        assert_eq!(s.tokens[1].bytes.as_deref(), Some(&b"!"[..]));
    }

    #[test]
    fn refuses_straddles_nulls_and_wrong_echoes() {
        let a = answer(&["Hello", " world"], &[0.0, -1.0]);
        assert!(matches!(
            read(&a, "Hello world", 9),
            Err(Misfit::Straddle { .. })
        ));
        let mut a = answer(&["Hello", " world"], &[0.0, -1.0]);
        a["choices"][0]["logprobs"]["token_logprobs"][1] = Value::Null;
        assert!(matches!(
            read(&a, "Hello world", 5),
            Err(Misfit::Mismatch(_))
        ));
        let a = answer(&["Hello", " word"], &[0.0, -1.0]);
        assert!(matches!(
            read(&a, "Hello world", 5),
            Err(Misfit::Mismatch(_))
        ));
        assert!(matches!(
            read(&json!({"choices": []}), "x", 0),
            Err(Misfit::Mismatch(_))
        ));
    }
}

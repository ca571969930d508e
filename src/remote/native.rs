//! The native protocol (the `llama_scorer` provider): `POST {base_url}/v1/logprobs` of another llama-scorer, with
//! the remote policy's model name; its numbers are passed on bit for bit (JSON floats round-trip) and
//! each item's object is kept verbatim.

use std::time::Instant;

use futures_util::future::try_join_all;
use indexmap::IndexMap;
use serde_json::{Map, Value, json};

use super::affinity::{affinity_key, prompt_of};

use super::error::RemoteError;
use super::retry::Caller;
use super::{RemoteScoreRequest, RemoteScored};
use crate::engine::{ItemInput, PromptInput, ResponseInput};
use crate::report::{ItemReport, TokenReport, TopReport};

/// Forwards the request as one native call per distinct prompt (in parallel, within the scorer's
/// concurrency limit), each with its prompt's affinity key, so a balanced fleet keeps one prompt's
/// responses on one replica; the answers are put back in request order.
pub(crate) async fn score(
    caller: &Caller<'_>,
    base_url: &str,
    req: &RemoteScoreRequest,
    deadline: Instant,
) -> Result<RemoteScored, RemoteError> {
    let wire: Vec<Value> = req.items.iter().map(item).collect();
    let mut groups: IndexMap<String, Vec<usize>> = IndexMap::new();
    for (i, w) in wire.iter().enumerate() {
        groups.entry(prompt_of(w)).or_default().push(i);
    }
    let url = format!("{base_url}/v1/logprobs");
    let o = &req.options;
    let calls = groups.iter().map(|(prompt, members)| {
        let body = json!({
            "model": caller.settings.model,
            "items": members.iter().map(|&i| &wire[i]).collect::<Vec<_>>(),
            "top_logprobs": o.top_logprobs,
            "echo": o.echo,
            "score_end_of_turn": o.score_end_of_turn,
            "temperature": o.temperature,
        });
        let key = affinity_key(&caller.settings.model, prompt);
        let url = &url;
        async move {
            let answer = caller
                .post_with_affinity(url, &body, Some(&key), deadline)
                .await
                .map_err(|e| e.renumbered(|k| members[k]))?;
            read(&answer, members.len()).map_err(|message| RemoteError::Malformed {
                remote: caller.settings.name.clone(),
                message,
            })
        }
    });
    let answers = try_join_all(calls).await?;
    let mut items: Vec<Option<ItemReport>> = vec![None; wire.len()];
    for (members, answer) in groups.values().zip(answers) {
        for (&i, report) in members.iter().zip(answer.items) {
            items[i] = Some(report);
        }
    }
    Ok(RemoteScored {
        items: items
            .into_iter()
            .map(|r| r.expect("every item is in one group"))
            .collect(),
    })
}

/// One item in the native wire form (also the remote cache's key for it).
pub(crate) fn item(input: &ItemInput) -> Value {
    let mut m = Map::new();
    match &input.prompt {
        PromptInput::Text(p) => m.insert("prompt".into(), json!(p)),
        PromptInput::Messages(msgs) => m.insert(
            "messages".into(),
            msgs.iter()
                .map(|c| {
                    let mut v = json!({"role": c.role, "content": c.content});
                    if let Some(name) = &c.name {
                        v["name"] = json!(name);
                    }
                    v
                })
                .collect(),
        ),
        PromptInput::TokenIds(t) => m.insert("prompt_token_ids".into(), json!(t)),
    };
    match &input.response {
        ResponseInput::Text(r) => m.insert("response".into(), json!(r)),
        ResponseInput::TokenIds(t) => m.insert("response_token_ids".into(), json!(t)),
    };
    Value::Object(m)
}

/// Reads `data[]`: one object per item, in order.
fn read(answer: &Value, n: usize) -> Result<RemoteScored, String> {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no `data` array")?;
    if data.len() != n {
        return Err(format!("{} results for {n} items", data.len()));
    }
    let items = data
        .iter()
        .enumerate()
        .map(|(i, v)| read_item(v, i).map_err(|m| format!("data[{i}]: {m}")))
        .collect::<Result<_, _>>()?;
    Ok(RemoteScored { items })
}

fn read_item(v: &Value, i: usize) -> Result<ItemReport, String> {
    if let Some(index) = v.get("index").and_then(Value::as_u64)
        && index as usize != i
    {
        return Err(format!("`index` is {index}"));
    }
    let content = v
        .pointer("/logprobs/content")
        .and_then(Value::as_array)
        .ok_or("no `logprobs.content` array")?;
    Ok(ItemReport {
        logprob: number(v, "logprob")?,
        sampling_logprob: Some(number(v, "sampling_logprob")?),
        prompt_logprob: v.get("prompt_logprob").and_then(Value::as_f64),
        prompt_tokens: count(v, "prompt_tokens")?,
        response_tokens: count(v, "response_tokens")?,
        scored_tokens: count(v, "scored_tokens")?,
        tokens: content.iter().map(token).collect::<Result<_, _>>()?,
        cached: v.get("cached").and_then(Value::as_bool).unwrap_or(false),
        system_fingerprint: v
            .get("system_fingerprint")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn token(v: &Value) -> Result<TokenReport, String> {
    let tops = match v.get("top_logprobs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(top).collect::<Result<_, _>>()?,
        Some(_) => return Err("`top_logprobs` is not an array".into()),
    };
    Ok(TokenReport {
        token: text(v)?,
        token_id: v.get("token_id").and_then(Value::as_i64),
        bytes: bytes(v),
        text_offset: count(v, "text_offset")?,
        logprob: v.get("logprob").and_then(Value::as_f64),
        sampling_logprob: v.get("sampling_logprob").and_then(Value::as_f64),
        top_logprobs: tops,
    })
}

fn top(v: &Value) -> Result<TopReport, String> {
    Ok(TopReport {
        token: text(v)?,
        token_id: v.get("token_id").and_then(Value::as_i64),
        bytes: bytes(v),
        logprob: number(v, "logprob")?,
        sampling_logprob: v.get("sampling_logprob").and_then(Value::as_f64),
    })
}

fn text(v: &Value) -> Result<String, String> {
    v.get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "a token without a `token` string".into())
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    v.get("bytes")?
        .as_array()?
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

fn number(v: &Value, key: &str) -> Result<f64, String> {
    v.get(key)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("`{key}` is missing or not a finite number"))
}

fn count(v: &Value, key: &str) -> Result<usize, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| format!("`{key}` is missing or not a count"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ChatMessage;

    #[test]
    fn items_go_out_in_the_native_form() {
        let it = ItemInput {
            prompt: PromptInput::Messages(vec![ChatMessage {
                role: "user".into(),
                content: "hi".into(),
                name: None,
            }]),
            response: ResponseInput::TokenIds(vec![1, 2]),
        };
        assert_eq!(
            item(&it),
            json!({"messages": [{"role": "user", "content": "hi"}], "response_token_ids": [1, 2]})
        );
    }

    #[test]
    fn numbers_round_trip_exactly_and_gaps_are_errors() {
        let x = -1.234_567_890_123_456_7e-3_f64;
        let text = format!(
            r#"{{"data":[{{"index":0,"logprob":{x:?},"sampling_logprob":{x:?},"prompt_tokens":1,
            "response_tokens":1,"scored_tokens":1,"logprobs":{{"content":[{{"token":"a","token_id":5,
            "bytes":[97],"text_offset":0,"logprob":{x:?},"sampling_logprob":{x:?},"top_logprobs":[]}}]}}}}]}}"#
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        let s = read(&v, 1).unwrap();
        assert_eq!(s.items[0].logprob.to_bits(), x.to_bits());
        assert_eq!(s.items[0].tokens[0].bytes.as_deref(), Some(&b"a"[..]));
        assert!(read(&v, 2).is_err());
        let mut gap = v.clone();
        gap["data"][0]["logprob"] = Value::Null;
        assert!(read(&gap, 1).unwrap_err().contains("logprob"));
    }
}

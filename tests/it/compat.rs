//! The Fireworks/OpenAI endpoints on the real models: shapes, echo scoring, seeded generation, streaming,
//! errors and authentication.

use serde_json::{Value, json};

use crate::common::*;

fn completions(body: &Value) -> (u16, Value) {
    post_to(server(), "/v1/completions", body)
}

fn chat(body: &Value) -> (u16, Value) {
    post_to(server(), "/v1/chat/completions", body)
}

fn ok_at(path: &str, body: &Value) -> Value {
    let (s, v) = post_to(server(), path, body);
    assert_eq!(s, 200, "{body} → {v:#}");
    v
}

const TEXT: &str = "The capital of France is Paris. The capital of Germany is Berlin.";

#[test]
fn echo_scoring_matches_the_native_api_bit_for_bit_on_the_same_schedule() {
    for policy in [SMOL, GEMMA] {
        let v = ok_at(
            "/v1/completions",
            &json!({"model": policy, "prompt": TEXT, "max_tokens": 0, "echo": true, "logprobs": 1, "temperature": 1.0}),
        );
        assert_eq!(v["object"], "text_completion");
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "length");
        let lp = &c["logprobs"];
        let values = lp["token_logprobs"].as_array().unwrap();
        // The first token has no context: a number (0.0), never null.
        assert_eq!(values[0], json!(0.0));
        assert_eq!(
            v["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
            values.len()
        );
        assert_eq!(v["usage"]["completion_tokens"], 0);
        // The native API with the same text as prompt (same decode schedule) gives the same bits.
        let native = item(&json!({"model": policy, "prompt": TEXT, "response": "", "echo": true}));
        let native_tokens = tokens(&native);
        assert_eq!(native_tokens.len(), values.len());
        for (i, (a, b)) in values.iter().zip(&native_tokens).enumerate().skip(1) {
            assert_eq!(a, &b["logprob"], "{policy} token {i}");
        }
        let ids: Vec<Value> = native_tokens
            .iter()
            .map(|t| t["token_id"].clone())
            .collect();
        assert_eq!(lp["token_ids"].as_array().unwrap(), &ids);
        // Text and offsets: the echoed text is the tokens' text, offsets count characters.
        let joined: String = lp["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(c["text"].as_str().unwrap(), joined);
        let offsets: Vec<u64> = lp["text_offset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_u64().unwrap())
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        // top_logprobs with logprobs: 1 holds one alternative per scored token (the arg-max).
        let tops = lp["top_logprobs"].as_array().unwrap();
        assert_eq!(tops[0], json!({}));
        assert!(tops[1..].iter().all(|t| t.as_object().unwrap().len() == 1));
    }
}

#[test]
fn logprobs_true_gives_content_entries_with_ids_and_offsets() {
    let v = ok_at(
        "/v1/completions",
        &json!({"model": SMOL, "prompt": "Hello there", "max_tokens": 0, "echo": true, "logprobs": true, "top_logprobs": 3}),
    );
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(content[0]["logprob"], json!(0.0));
    for e in &content[1..] {
        assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 3);
        assert!(e["token_id"].is_i64() && e["text_offset"].is_u64() && e["bytes"].is_array());
    }
    // `logprobs: true` is not the integer 1.
    let legacy = ok_at(
        "/v1/completions",
        &json!({"model": SMOL, "prompt": "Hello there", "max_tokens": 0, "echo": true, "logprobs": 1}),
    );
    assert!(legacy["choices"][0]["logprobs"]["token_logprobs"].is_array());
}

#[test]
fn seeded_generation_is_reproducible_and_greedy_follows_the_arg_max() {
    let body = json!({"model": SMOL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.9, "seed": 1234, "logprobs": true, "top_logprobs": 1});
    let a = ok_at("/v1/completions", &body);
    let b = ok_at("/v1/completions", &body);
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["usage"]["completion_tokens"], 12);
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    let mut other = body.clone();
    other["seed"] = json!(99);
    let texts: Vec<Value> = (0..3)
        .map(|s| {
            other["seed"] = json!(s);
            ok_at("/v1/completions", &other)["choices"][0]["text"].clone()
        })
        .collect();
    assert!(
        texts.iter().any(|t| *t != a["choices"][0]["text"]),
        "seeds do not change the sample"
    );

    let greedy = ok_at(
        "/v1/completions",
        &json!({"model": GEMMA, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "logprobs": true, "top_logprobs": 1}),
    );
    for e in greedy["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
    {
        assert_eq!(
            e["top_logprobs"][0]["token_id"], e["token_id"],
            "greedy picked a non-arg-max token"
        );
        assert_eq!(e["top_logprobs"][0]["logprob"], e["logprob"]);
    }
}

#[test]
fn generation_is_the_same_under_concurrent_load() {
    let body = json!({"model": SMOL, "prompt": "A list of fruits:", "max_tokens": 8, "temperature": 0.8, "seed": 7, "logprobs": 2});
    let alone = ok_at("/v1/completions", &body)["choices"].clone();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let body = &body;
                s.spawn(move || {
                    if i % 2 == 0 {
                        ok_at("/v1/completions", body)["choices"].clone()
                    } else {
                        let other = json!({"model": GEMMA, "prompt": format!("Noise {i}"), "max_tokens": 5, "seed": i});
                        ok_at("/v1/completions", &other);
                        Value::Null
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results.into_iter().filter(|r| !r.is_null()) {
        assert_eq!(r, alone);
    }
}

#[test]
fn stop_strings_cut_the_text_and_end_with_stop() {
    let base = json!({"model": SMOL, "prompt": "Count: one, two, three, four,", "max_tokens": 16, "temperature": 0});
    let full = ok_at("/v1/completions", &base)["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(full.len() > 6, "{full:?}");
    let stop = &full[3..6];
    let mut body = base.clone();
    body["stop"] = json!([stop]);
    let v = ok_at("/v1/completions", &body);
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop");
    let text = c["text"].as_str().unwrap();
    assert_eq!(text, &full[..full.find(stop).unwrap()]);
}

/// Concatenates an SSE stream's chunks: (text per choice index, finish reasons, saw usage, ended with DONE).
fn read_stream(path: &str, body: &Value) -> (Vec<String>, Vec<String>, Option<Value>, bool) {
    let r = client()
        .post(format!("{}{path}", server()))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().unwrap();
    let mut texts = vec![String::new(); 4];
    let mut finishes = vec![String::new(); 4];
    let mut usage = None;
    let mut done = false;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        assert!(!done, "data after [DONE]");
        if line == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
        }
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            let piece = c["text"]
                .as_str()
                .or(c["delta"]["content"].as_str())
                .unwrap_or("");
            texts[i].push_str(piece);
            if let Some(f) = c["finish_reason"].as_str() {
                finishes[i] = f.to_string();
            }
        }
    }
    (texts, finishes, usage, done)
}

#[test]
fn streaming_gives_the_same_text_as_a_plain_request() {
    let body = json!({"model": SMOL, "prompt": "Write a word:", "max_tokens": 10, "temperature": 0.7, "seed": 5, "n": 2});
    let plain = ok_at("/v1/completions", &body);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (texts, finishes, usage, done) = read_stream("/v1/completions", &streamed);
    assert!(done);
    for i in 0..2 {
        assert_eq!(
            texts[i],
            plain["choices"][i]["text"].as_str().unwrap(),
            "choice {i}"
        );
        assert_eq!(
            finishes[i],
            plain["choices"][i]["finish_reason"].as_str().unwrap()
        );
    }
    assert_eq!(usage.unwrap(), plain["usage"]);
    // Choice j samples with seed + j: it is what the same request with n = 1 and that seed samples.
    assert_eq!(plain["choices"].as_array().unwrap().len(), 2);
    for j in 0..2 {
        let mut single = body.clone();
        single["n"] = json!(1);
        single["seed"] = json!(5 + j);
        let one = ok_at("/v1/completions", &single);
        assert_eq!(
            one["choices"][0]["text"], plain["choices"][j]["text"],
            "choice {j} is not seed + {j}"
        );
    }

    let chat_body = json!({"model": SMOL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "seed": 3, "temperature": 0.5});
    let plain = ok_at("/v1/chat/completions", &chat_body);
    let mut streamed = chat_body.clone();
    streamed["stream"] = json!(true);
    let (texts, finishes, _, done) = read_stream("/v1/chat/completions", &streamed);
    assert!(done);
    assert_eq!(
        texts[0],
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        finishes[0],
        plain["choices"][0]["finish_reason"].as_str().unwrap()
    );
}

#[test]
fn prompt_forms_and_token_ids() {
    let v = ok_at(
        "/v1/completions",
        &json!({"model": SMOL, "prompt": ["First prompt", "Second"], "max_tokens": 0, "echo": true, "return_token_ids": true}),
    );
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["text"], "First prompt");
    assert_eq!(choices[1]["index"], 1);
    let ids = choices[0]["prompt_token_ids"].clone();
    let by_ids = ok_at(
        "/v1/completions",
        &json!({"model": SMOL, "prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 0}),
    );
    assert_eq!(by_ids["choices"][0]["text"], "First prompt");
    assert!(by_ids["choices"][0]["logprobs"]["top_logprobs"].is_null());
    let lists = ok_at(
        "/v1/completions",
        &json!({"model": SMOL, "prompt": [ids, [504, 3575]], "max_tokens": 0}),
    );
    assert_eq!(lists["choices"].as_array().unwrap().len(), 2);
    // echo_last keeps only the last N prompt tokens.
    let last = ok_at(
        "/v1/completions",
        &json!({"model": SMOL, "prompt": "one two three four", "max_tokens": 0, "echo_last": 2, "logprobs": 1}),
    );
    assert_eq!(
        last["choices"][0]["logprobs"]["tokens"],
        json!([" three", " four"])
    );
    assert_eq!(last["choices"][0]["text"], " three four");
}

#[test]
fn context_length_behaviour_is_error_or_truncate() {
    let prompt = "word ".repeat(20);
    let (s, v) = completions(
        &json!({"model": SMOL_SHORT, "prompt": prompt, "max_tokens": 100, "context_length_exceeded_behavior": "error"}),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let v = ok_at(
        "/v1/completions",
        &json!({"model": SMOL_SHORT, "prompt": prompt, "max_tokens": 100, "temperature": 0}),
    );
    let p = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let c = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(p + c <= 32, "{p} + {c} tokens in a context of 32");
    let (s, v) =
        completions(&json!({"model": SMOL_SHORT, "prompt": "word ".repeat(40), "max_tokens": 0}));
    assert_eq!(s, 400, "{v}");
}

#[test]
fn compat_errors_have_the_fireworks_shape_and_status() {
    let cases = [
        (json!({"model": "nope", "prompt": "x"}), 404, "model"),
        (
            json!({"model": SMOL, "prompt": "x", "foo": 1}),
            400,
            "Extra inputs are not permitted",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "logprobs": 21}),
            400,
            "logprobs",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "logprobs": "yes"}),
            400,
            "logprobs",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "logprobs": true, "top_logprobs": 21}),
            400,
            "top_logprobs",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "top_logprobs": 2}),
            400,
            "top_logprobs",
        ),
        (
            json!({"model": SMOL, "prompt": [], "max_tokens": 0}),
            400,
            "prompt",
        ),
        (json!({"model": SMOL, "prompt": {"a": 1}}), 400, "prompt"),
        (
            json!({"model": SMOL, "prompt": [1, 99999999]}),
            400,
            "prompt[1]",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "temperature": -1}),
            400,
            "temperature",
        ),
        (json!({"model": SMOL, "prompt": "x", "n": 0}), 400, "n"),
        (
            json!({"model": SMOL, "prompt": "x", "top_p": 0}),
            400,
            "top_p",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "context_length_exceeded_behavior": "wrap"}),
            400,
            "context_length_exceeded_behavior",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "logit_bias": {"abc": 1}}),
            400,
            "logit_bias",
        ),
        (
            json!({"model": SMOL, "prompt": "x", "max_tokens": -1}),
            400,
            "max_tokens",
        ),
    ];
    for (body, status, needle) in cases {
        let (s, v) = completions(&body);
        assert_eq!(s, status, "{body} → {v}");
        assert_eq!(v["error"]["object"], "error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body} → {v}"
        );
    }
    let (s, v) = chat(&json!({"model": GEMMA, "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = chat(&json!({"model": SMOL, "messages": []}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = chat(
        &json!({"model": SMOL, "messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 21}),
    );
    assert_eq!(s, 400, "{v}");
}

#[test]
fn chat_completions_render_the_template_and_score_with_logprobs() {
    let v = ok_at(
        "/v1/chat/completions",
        &json!({"model": SMOL, "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 5, "temperature": 0, "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(v["object"], "chat.completion");
    let c = &v["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    let content = c["logprobs"]["content"].as_array().unwrap();
    let joined: String = content
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(c["message"]["content"].as_str().unwrap(), joined);
    // The prompt is the rendered template: the same as /v1/logprobs with the same messages.
    let native = item(
        &json!({"model": SMOL, "messages": [{"role": "user", "content": "What is 2+2?"}], "response": ""}),
    );
    assert_eq!(v["usage"]["prompt_tokens"], native["prompt_tokens"]);
    // With echo and max_tokens 0 the chat endpoint scores the rendered prompt.
    let echo = ok_at(
        "/v1/chat/completions",
        &json!({"model": SMOL, "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 0, "echo": true, "logprobs": true}),
    );
    let text = echo["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.starts_with("<|im_start|>system\n") && text.ends_with("<|im_start|>assistant\n"),
        "{text}"
    );
}

#[test]
fn models_are_listed_in_the_openai_format_with_fireworks_fields() {
    for prefix in ["/v1", "/inference/v1"] {
        let v: Value = client()
            .get(format!("{}{prefix}/models", server()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["object"], "list");
        let data = v["data"].as_array().unwrap();
        let smol = data.iter().find(|m| m["id"] == SMOL).unwrap();
        assert_eq!(smol["object"], "model");
        assert!(smol["created"].is_u64() && smol["owned_by"].is_string());
        assert_eq!(smol["supports_chat"], true);
        assert_eq!(smol["context_length"], 4096);
        let gemma = data.iter().find(|m| m["id"] == GEMMA).unwrap();
        assert_eq!(gemma["supports_chat"], false);
    }
}

#[test]
fn api_keys_guard_every_route_but_health() {
    let mut cfg = base_config(vec![policy("p", smol_path())]);
    cfg.http.api_keys = vec!["secret-1".into(), "secret-2".into()];
    let base = spawn_server(cfg);
    let send = |path: &str, key: Option<&str>| -> u16 {
        let body = if path.ends_with("logprobs") {
            json!({"model": "p", "prompt": "a", "response": "b"})
        } else {
            json!({"model": "p", "prompt": "a", "max_tokens": 0})
        };
        let mut r = client().post(format!("{base}{path}")).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(send("/v1/logprobs", None), 401);
    assert_eq!(send("/v1/logprobs", Some("wrong")), 401);
    assert_eq!(send("/v1/logprobs", Some("secret-2")), 200);
    assert_eq!(send("/v1/completions", None), 401);
    assert_eq!(send("/v1/completions", Some("secret-1")), 200);
    let r = client().get(format!("{base}/v1/models")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["object"], "error");
    let r = client().get(format!("{base}/health")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

//! Bad input gets a 4xx in the Fireworks error shape, naming the field; the server keeps serving.

use serde_json::{Value, json};

use crate::common::*;

/// Sends `body`, expects `status`, and checks that the error message (or `param`) names `field`.
fn expect_error(body: Value, status: u16, field: &str) -> Value {
    let (got, v) = logprobs(&body);
    assert_eq!(got, status, "{body} → {v}");
    let err = &v["error"];
    assert_eq!(err["object"], "error", "{v}");
    assert!(err["type"].is_string() && err["code"].is_string(), "{v}");
    let message = err["message"].as_str().unwrap();
    let param = err["param"].as_str().unwrap_or("");
    assert!(
        message.contains(field) || param.contains(field),
        "error for {body} does not name {field:?}: {v}"
    );
    v
}

fn raw_post(body: &str) -> (u16, Value) {
    post_raw(server(), "/v1/logprobs", body.into())
}

#[test]
fn unknown_model_is_404_and_paths_are_never_opened() {
    let v = expect_error(
        json!({"model": "nope", "prompt": "a", "response": "b"}),
        404,
        "model",
    );
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains(SMOL));
    let path = smol_path().display().to_string();
    expect_error(
        json!({"model": path, "prompt": "a", "response": "b"}),
        404,
        "model",
    );
    expect_error(
        json!({"model": "../../etc/passwd", "prompt": "a", "response": "b"}),
        404,
        "model",
    );
}

#[test]
fn malformed_and_mistyped_bodies_name_the_field() {
    expect_error(
        json!({"model": SMOL, "prompt": "a", "response": 5}),
        400,
        "response",
    );
    expect_error(
        json!({"model": SMOL, "prompt": "a", "response": "b", "colour": 1}),
        400,
        "colour",
    );
    expect_error(json!({"prompt": "a", "response": "b"}), 400, "model");
    expect_error(json!({"model": SMOL, "prompt": "a"}), 400, "response");
    expect_error(json!({"model": SMOL, "response": "b"}), 400, "prompt");
    expect_error(
        json!({"model": SMOL, "prompt": "a", "messages": [], "response": "b"}),
        400,
        "prompt",
    );
    expect_error(
        json!({"model": SMOL, "prompt": "a", "response": "b", "response_token_ids": [1]}),
        400,
        "response",
    );
    expect_error(
        json!({"model": SMOL, "prompt": "a", "response": "b", "top_logprobs": 21}),
        400,
        "top_logprobs",
    );
    expect_error(
        json!({"model": SMOL, "prompt": "a", "response": "b", "top_logprobs": -1}),
        400,
        "top_logprobs",
    );
    for t in [json!(0), json!(-1), json!(1e300), json!("hot")] {
        expect_error(
            json!({"model": SMOL, "prompt": "a", "response": "b", "temperature": t}),
            400,
            "temperature",
        );
    }
    expect_error(
        json!({"model": SMOL, "prompt": "a", "response": "b", "echo": "yes"}),
        400,
        "echo",
    );
    let (s, v) = raw_post("{\"model\": \"smol\", \"prompt\": ");
    assert_eq!(s, 400, "{v}");
    let (s, v) = raw_post("{\"model\": \"smol\", \"prompt\": \"\\ud800\", \"response\": \"x\"}");
    assert_eq!(s, 400, "lone surrogate: {v}");
    let (s, v) = raw_post(&format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)));
    assert_eq!(s, 400, "deep nesting: {v}");
    let (s, v) = raw_post("");
    assert_eq!(s, 400, "empty body: {v}");
}

#[test]
fn batch_errors_name_the_item() {
    expect_error(json!({"model": SMOL, "items": []}), 400, "items");
    expect_error(
        json!({"model": SMOL, "items": [{"prompt": "a", "response": "b"}, {"prompt": "a"}]}),
        400,
        "items[1].response",
    );
    expect_error(
        json!({"model": SMOL, "items": [{"prompt": "a", "response": "b"}, {"prompt": "a", "response_token_ids": [1, 49152]}]}),
        400,
        "items[1].response_token_ids[1]",
    );
    expect_error(
        json!({"model": SMOL, "items": [{"prompt": "a", "response": "b", "extra": 1}]}),
        400,
        "extra",
    );
    expect_error(
        json!({"model": SMOL, "prompt": "a", "response": "b", "items": [{"prompt": "a", "response": "b"}]}),
        400,
        "items",
    );
    let too_many: Vec<Value> = (0..257)
        .map(|_| json!({"prompt": "a", "response": "b"}))
        .collect();
    expect_error(json!({"model": SMOL, "items": too_many}), 400, "items");
}

#[test]
fn sequences_longer_than_n_ctx_are_refused_with_the_lengths() {
    let v = expect_error(
        json!({"model": SMOL_SHORT, "prompt": "word ".repeat(40), "response": " end"}),
        400,
        "n_ctx = 32",
    );
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("prompt") && msg.contains("response"), "{msg}");
    // Right at the limit it is accepted.
    let ids: Vec<u32> = (100..132).collect();
    let (s, _) = logprobs(
        &json!({"model": SMOL_SHORT, "prompt_token_ids": ids[..16], "response_token_ids": ids[16..]}),
    );
    assert_eq!(s, 200);
}

#[test]
fn prompts_that_leave_the_first_token_without_context_are_refused() {
    // SmolLM2 adds no BOS: an empty prompt would leave the response's first token unconditioned.
    expect_error(
        json!({"model": SMOL, "prompt": "", "response": "Hello"}),
        400,
        "BOS",
    );
    expect_error(
        json!({"model": SMOL, "prompt_token_ids": [], "response": "Hello"}),
        400,
        "prompt_token_ids",
    );
    // Gemma adds BOS, so an empty prompt is a valid context.
    let r = item(&json!({"model": GEMMA, "prompt": "", "response": "Hello"}));
    assert_eq!(r["prompt_tokens"], 1);
}

#[test]
fn chat_errors_are_explicit() {
    // Gemma's GGUF carries no chat template.
    expect_error(
        json!({"model": GEMMA, "messages": [{"role": "user", "content": "Hi"}], "response": "x"}),
        400,
        "chat template",
    );
    expect_error(
        json!({"model": SMOL, "messages": [], "response": "x"}),
        400,
        "messages",
    );
    expect_error(
        json!({"model": SMOL, "messages": [{"role": "user"}], "response": "x"}),
        400,
        "content",
    );
    // A policy with its own system prompt does not silently merge a client's system message.
    expect_error(
        json!({"model": SMOL_SYSTEM, "messages": [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Hi"}], "response": "x"}),
        400,
        "messages[0]",
    );
}

#[test]
fn the_server_is_healthy_after_bad_input() {
    malformed_and_mistyped_bodies_name_the_field();
    let r = client().get(format!("{}/health", server())).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    item(&json!({"model": SMOL, "prompt": "a", "response": "b"}));
    let (s, v) = post_to(server(), "/v1/nothing", &json!({}));
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["object"], "error");
    // Both route prefixes serve the API.
    let (s, _) = post_to(
        server(),
        "/inference/v1/logprobs",
        &json!({"model": SMOL, "prompt": "a", "response": "b"}),
    );
    assert_eq!(s, 200);
}

#[test]
fn wrong_methods_get_405_in_the_error_shape_with_allow() {
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/v1/logprobs", "POST"),
        (reqwest::Method::GET, "/inference/v1/completions", "POST"),
        (reqwest::Method::DELETE, "/v1/chat/completions", "POST"),
        (reqwest::Method::POST, "/v1/models", "GET"),
        (reqwest::Method::POST, "/health", "GET"),
    ] {
        let r = client()
            .request(method.clone(), format!("{}{path}", server()))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            allow.as_deref().is_some_and(|a| a.contains(allowed)),
            "{method} {path}: Allow {allow:?}"
        );
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["object"], "error", "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "method_not_allowed");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(path),
            "{v}"
        );
    }
}

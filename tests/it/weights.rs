//! Several policies per request and log-ratios against a base (issue 13 part 1): every (item, policy)
//! result equals the separate single-policy request bit for bit, and each log-ratio equals the difference
//! of those separate answers — checked against the single-policy path, not against the code that adds them.

use serde_json::{Value, json};

use crate::common::{Running, gemma_path, post_to, smol_path, start, write_config};

fn server(dir: &std::path::Path) -> Running {
    let yaml = format!(
        "policies:\n\
         \x20 p0: {{model: {smol}, temperature: 0.5}}\n\
         \x20 pi_clone: {{model: {smol}, temperature: 0.5}}\n\
         \x20 pi_hot: {{model: {smol}, temperature: 1.5}}\n\
         \x20 pi_sys: {{model: {smol}, temperature: 0.5, system_prompt: 'You are terse.'}}\n\
         \x20 gemma:\n\
         \x20   model: {gemma}\n\
         \x20   temperature: 0.5\n\
         \x20   chat_template: \"{{% for m in messages %}}<start_of_turn>{{{{ m.role }}}}\\n{{{{ m.content }}}}<end_of_turn>\\n{{% endfor %}}<start_of_turn>model\\n\"\n",
        smol = smol_path().display(),
        gemma = gemma_path().display()
    );
    start(&write_config(dir, &yaml))
}

fn items() -> Value {
    json!([
        {"prompt": "The capital of France is", "response": " Paris, of course."},
        {"messages": [{"role": "user", "content": "Name a colour."}], "response": "Blue."}
    ])
}

/// An entry without the fields that depend on the request's shape rather than on the numbers.
fn numbers(entry: &Value) -> Value {
    let mut e = entry.clone();
    let o = e.as_object_mut().unwrap();
    for k in ["cached", "model", "log_ratio", "tokens_aligned"] {
        o.remove(k);
    }
    for t in o["logprobs"]["content"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("log_ratio");
    }
    e
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn several_policies_in_one_request_equal_separate_requests_and_ratios_are_their_differences() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let policies = ["pi_clone", "pi_hot", "pi_sys", "gemma"];
    let (code, multi) = post_to(
        &s.base,
        "/v1/logprobs",
        &json!({"models": policies, "base": "p0", "items": items(), "top_logprobs": 2}),
    );
    assert_eq!(code, 200, "{multi}");
    let order = ["pi_clone", "pi_hot", "pi_sys", "gemma", "p0"];
    assert_eq!(
        multi["models"],
        json!(order),
        "base appended after the listed ones"
    );
    assert_eq!(multi["base"], "p0");
    let data = multi["data"].as_array().unwrap();
    assert_eq!(data.len(), 2 * order.len());

    let single = |policy: &str| -> Value {
        let (code, v) = post_to(
            &s.base,
            "/v1/logprobs",
            &json!({"model": policy, "items": items(), "top_logprobs": 2}),
        );
        assert_eq!(code, 200, "{v}");
        v
    };
    let base = single("p0");
    for (j, policy) in order.iter().enumerate() {
        let alone = single(policy);
        for item in 0..2 {
            let entry = &data[item * order.len() + j];
            assert_eq!(entry["model"], *policy);
            assert_eq!(entry["index"], item);
            let own = &alone["data"][item];
            assert_eq!(numbers(entry), numbers(own), "{policy} item {item}");
            // log_ratio: exactly the difference of the separate answers' sums.
            let b = &base["data"][item];
            assert_eq!(
                f(&entry["log_ratio"]).to_bits(),
                (f(&own["sampling_logprob"]) - f(&b["sampling_logprob"])).to_bits(),
                "{policy} item {item}"
            );
            let aligned = entry["tokens_aligned"].as_bool().unwrap();
            let tokens = entry["logprobs"]["content"].as_array().unwrap();
            if *policy == "gemma" {
                assert!(
                    !aligned,
                    "another tokenizer cannot align with SmolLM2's tokens"
                );
                assert!(tokens.iter().all(|t| t.get("log_ratio").is_none()));
                continue;
            }
            assert!(aligned, "{policy} scores the same response tokens as p0");
            let base_tokens = b["logprobs"]["content"].as_array().unwrap();
            for (t, bt) in tokens.iter().zip(base_tokens) {
                assert_eq!(t["token_id"], bt["token_id"]);
                assert_eq!(
                    f(&t["log_ratio"]).to_bits(),
                    (f(&t["sampling_logprob"]) - f(&bt["sampling_logprob"])).to_bits()
                );
            }
        }
    }
    // The clone's weight is exactly 1 and the base's own ratio is 0; the hotter policy's is not.
    for item in 0..2 {
        let at = |j: usize| f(&data[item * order.len() + j]["log_ratio"]);
        assert_eq!(at(0), 0.0);
        assert_eq!(at(4), 0.0);
        assert_ne!(at(1), 0.0);
    }
    // A one-policy request keeps today's shape.
    assert_eq!(base["model"], "p0");
    assert!(base.get("models").is_none() && base["data"][0].get("log_ratio").is_none());
}

#[test]
fn policy_lists_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let item = json!({"prompt": "a", "response": "b"});
    let with = |extra: Value| {
        let mut body = item.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        post_to(&s.base, "/v1/logprobs", &body)
    };
    for (extra, status, param) in [
        (json!({"model": "p0", "models": ["p0"]}), 400, "models"),
        (json!({"models": []}), 400, "models"),
        (json!({"models": ["p0", "pi_hot", "p0"]}), 400, "models[2]"),
        (json!({}), 400, "model"),
        (json!({"models": ["p0", "nope"]}), 404, "models[1]"),
        (json!({"models": ["p0"], "base": "nope"}), 404, "base"),
        (json!({"model": "p0", "base": "nope"}), 404, "base"),
    ] {
        let (code, e) = with(extra.clone());
        assert_eq!(code, status, "{extra}: {e}");
        assert_eq!(e["error"]["param"], param, "{extra}: {e}");
    }
}

//! Prompt-prefix reuse gives the same bits as decoding every prompt afresh, in one batch and across
//! requests, on both models.

use serde_json::{Value, json};

use crate::common::*;

fn server_with(prefix_bytes: u64) -> String {
    let mut cfg = base_config(vec![policy(SMOL, smol_path()), policy(GEMMA, gemma_path())]);
    cfg.cache.max_bytes = 0;
    cfg.prefix_cache_bytes = prefix_bytes;
    spawn_server(cfg)
}

fn score(base: &str, body: &Value) -> Value {
    let (s, v) = post_to(base, "/v1/logprobs", body);
    assert_eq!(s, 200, "{v}");
    v["data"].clone()
}

#[test]
fn reused_prompts_score_bit_identically_to_fresh_ones() {
    let reuse = server_with(64 << 20);
    let fresh = server_with(0);
    let prompt = "You are judging answers. Question: what is the boiling point of water at sea level, in Celsius?\nAnswer:";
    let responses = [" 100 degrees.", " It boils at 100 °C.", " Ninety.", ""];
    for policy in [SMOL, GEMMA] {
        let items: Vec<Value> = responses
            .iter()
            .map(|r| json!({"prompt": prompt, "response": r}))
            .collect();
        let body = json!({"model": policy, "items": items, "top_logprobs": 3, "score_end_of_turn": true, "temperature": 0.7});
        let a = score(&reuse, &body);
        let b = score(&fresh, &body);
        assert_eq!(a, b, "{policy}: a batch sharing one prompt");
        // Across requests: the prompt is now saved; a new response reuses it.
        let single = json!({"model": policy, "prompt": prompt, "response": " One hundred.", "score_end_of_turn": true});
        assert_eq!(
            score(&reuse, &single),
            score(&fresh, &single),
            "{policy}: across requests"
        );
    }
    let state = ready(&reuse);
    for m in state["models"].as_array().unwrap() {
        let hits = m["prefix_reuse"]["hits"].as_u64().unwrap();
        assert!(hits >= 4, "the prompt was not reused: {m}");
    }
    let state = ready(&fresh);
    assert!(state["models"][0]["prefix_reuse"].is_null());
}

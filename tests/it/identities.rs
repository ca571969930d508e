//! Mathematical identities the numbers must satisfy, checked on both models.

use serde_json::{Value, json};

use crate::common::*;

const PROMPT: &str = "The capital of France is Paris. The capital of Germany is";
const RESPONSE: &str = " Berlin. The capital of Italy is Rome, and Spain's is Madrid.";

fn scored(policy: &str, extra: Value) -> Value {
    let mut body = json!({"model": policy, "prompt": PROMPT, "response": RESPONSE});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    item(&body)
}

#[test]
fn total_is_the_f64_sum_of_token_values_in_order() {
    for policy in [SMOL, SMOL_T05, GEMMA] {
        let r = scored(policy, json!({"score_end_of_turn": true}));
        let toks = tokens(&r);
        let sum: f64 = toks.iter().map(|t| f(&t["logprob"])).sum();
        let ssum: f64 = toks.iter().map(|t| f(&t["sampling_logprob"])).sum();
        assert_eq!(f(&r["logprob"]).to_bits(), sum.to_bits(), "{policy}");
        assert_eq!(
            f(&r["sampling_logprob"]).to_bits(),
            ssum.to_bits(),
            "{policy}"
        );
        assert_eq!(r["scored_tokens"].as_u64().unwrap() as usize, toks.len());
        for t in &toks {
            assert!(
                f(&t["logprob"]) <= 0.0 && f(&t["sampling_logprob"]) <= 0.0,
                "{t}"
            );
        }
    }
}

#[test]
fn sampling_logprob_equals_logprob_at_temperature_one_only() {
    let r = scored(SMOL, json!({}));
    for t in tokens(&r) {
        assert_eq!(
            f(&t["logprob"]).to_bits(),
            f(&t["sampling_logprob"]).to_bits()
        );
    }
    // The same model under a T = 0.5 policy: logprob unchanged, sampling_logprob differs.
    let half = scored(SMOL_T05, json!({}));
    assert_eq!(half["temperature"], 0.5);
    assert_eq!(half["logprob"], r["logprob"]);
    assert_ne!(half["sampling_logprob"], r["sampling_logprob"]);
    // A request's temperature overrides the policy's.
    let over = scored(SMOL, json!({"temperature": 0.5}));
    assert_eq!(over["sampling_logprob"], half["sampling_logprob"]);
}

#[test]
fn temperature_scales_log_odds_between_alternatives() {
    // log softmax(z/T): differences between two tokens' values are their logit differences over T,
    // which the T = 1 values give independently.
    for (policy, t) in [(SMOL_T05, 0.5), (GEMMA, 1.7)] {
        let r = scored(policy, json!({"top_logprobs": 5, "temperature": t}));
        for tok in tokens(&r) {
            let top = tok["top_logprobs"].as_array().unwrap();
            let (a, b) = (&top[0], &top[4]);
            let d1 = f(&a["logprob"]) - f(&b["logprob"]);
            let dt = f(&a["sampling_logprob"]) - f(&b["sampling_logprob"]);
            assert!((dt - d1 / t).abs() < 1e-5, "{policy}: {dt} vs {}", d1 / t);
            let mass: f64 = top.iter().map(|e| f(&e["sampling_logprob"]).exp()).sum();
            assert!(mass <= 1.0 + 1e-9);
        }
    }
}

#[test]
fn top_logprobs_are_sorted_and_contain_the_scored_token_when_it_ranks() {
    for policy in [SMOL, GEMMA] {
        let r = scored(policy, json!({"top_logprobs": 20}));
        let mut inside = 0;
        for tok in tokens(&r) {
            let top = tok["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 20);
            let values: Vec<f64> = top.iter().map(|e| f(&e["logprob"])).collect();
            assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
            // Nothing outside the list is more likely than the list's first (its arg-max): the scored
            // token's value never exceeds it.
            assert!(f(&tok["logprob"]) <= values[0]);
            let mass: f64 = values.iter().map(|v| v.exp()).sum();
            assert!(mass <= 1.0 + 1e-9, "top-20 mass {mass}");
            if let Some(e) = top.iter().find(|e| e["token_id"] == tok["token_id"]) {
                inside += 1;
                assert_eq!(f(&e["logprob"]).to_bits(), f(&tok["logprob"]).to_bits());
                assert_eq!(e["token"], tok["token"]);
            } else {
                assert!(f(&tok["logprob"]) <= values[19]);
            }
        }
        assert!(inside > 0, "{policy}: no scored token ranked in the top 20");
    }
}

#[test]
fn echo_agrees_with_a_prompt_only_request_and_leaves_the_response_unchanged() {
    for policy in [SMOL, GEMMA] {
        let plain = scored(policy, json!({}));
        let echoed = scored(policy, json!({"echo": true}));
        let prompt_only =
            item(&json!({"model": policy, "prompt": PROMPT, "response": "", "echo": true}));
        let p = echoed["prompt_tokens"].as_u64().unwrap() as usize;
        let e = tokens(&echoed);
        let po = tokens(&prompt_only);
        assert_eq!(po.len(), p);
        assert_eq!(&e[..p], &po[..], "{policy}: echoed prompt tokens differ");
        assert!(e[0]["logprob"].is_null(), "the first token has no context");
        assert_eq!(
            &e[p..],
            &tokens(&plain)[..],
            "{policy}: echo changed the response"
        );
        assert_eq!(echoed["logprob"], plain["logprob"]);
        let psum: f64 = e[1..p].iter().map(|t| f(&t["logprob"])).sum();
        assert_eq!(f(&echoed["prompt_logprob"]).to_bits(), psum.to_bits());
    }
}

#[test]
fn scoring_the_end_of_turn_leaves_the_response_tokens_unchanged() {
    for policy in [SMOL, GEMMA] {
        let plain = tokens(&scored(policy, json!({})));
        let with_eot = tokens(&scored(policy, json!({"score_end_of_turn": true})));
        assert_eq!(with_eot.len(), plain.len() + 1);
        assert_eq!(&with_eot[..plain.len()], &plain[..]);
    }
}

#[test]
fn chain_rule_across_a_token_boundary() {
    // log p(r1 r2 | p) = log p(r1 | p) + log p(r2 | p r1) when r1 ends on a token boundary. The two sides
    // use different decode splits, so they agree to llama.cpp's split noise, not to the bit; a one-position
    // misalignment would be off by nats.
    for policy in [SMOL, GEMMA] {
        let whole = scored(policy, json!({"echo": true}));
        let toks = tokens(&whole);
        let p = whole["prompt_tokens"].as_u64().unwrap() as usize;
        let k = p + 3;
        let ids: Vec<u64> = toks
            .iter()
            .map(|t| t["token_id"].as_u64().unwrap())
            .collect();
        let first = item(
            &json!({"model": policy, "prompt_token_ids": ids[..p], "response_token_ids": ids[p..k]}),
        );
        let second = item(
            &json!({"model": policy, "prompt_token_ids": ids[..k], "response_token_ids": ids[k..]}),
        );
        let lhs = f(&whole["logprob"]);
        let rhs = f(&first["logprob"]) + f(&second["logprob"]);
        assert!((lhs - rhs).abs() < 0.05, "{policy}: {lhs} vs {rhs}");
    }
}

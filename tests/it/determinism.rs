//! Bit-identical numbers whatever else the server is doing: alone, inside a large batch, and under many
//! concurrent clients sending different work to both models. These run on a server without the response
//! cache, so every answer is computed afresh.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::common::*;

fn uncached() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut cfg = base_config(vec![policy(SMOL, smol_path()), policy(GEMMA, gemma_path())]);
        cfg.cache.max_bytes = 0;
        spawn_server(cfg)
    })
}

fn score(body: &Value) -> Value {
    let (status, v) = post_to(uncached(), "/v1/logprobs", body);
    assert_eq!(status, 200, "{body} → {v}");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["cached"] == false)
    );
    v
}

fn probe(policy: &str) -> Value {
    json!({"prompt": "Question: why is the sky blue?\nAnswer:", "response": format!(" Rayleigh scattering of sunlight ({policy}).")})
}

/// Varied filler work: different lengths so that the schedule would shift if it depended on neighbours.
fn filler(i: usize) -> Value {
    let prompt = format!(
        "Item {i}: {}",
        "lorem ipsum dolor sit amet ".repeat(1 + i % 7)
    );
    json!({"prompt": prompt, "response": format!(" reply number {i}{}", "!".repeat(i % 5))})
}

/// Strip what legitimately differs between answers (position in a batch).
fn numbers(item: &Value) -> Value {
    let mut v = item.clone();
    v.as_object_mut().unwrap().remove("index");
    v
}

fn alone(policy: &str, options: &Value) -> Value {
    let mut body = probe(policy);
    body["model"] = json!(policy);
    body.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    numbers(&score(&body)["data"][0])
}

/// The probe's answers when it stands at each of `at` (ascending) among `others` filler items.
fn in_batch_at(policy: &str, options: &Value, others: usize, at: &[usize]) -> Vec<Value> {
    let mut items: Vec<Value> = (0..others).map(filler).collect();
    for &i in at {
        items.insert(i, probe(policy));
    }
    let mut body = json!({"model": policy, "items": items});
    body.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let v = score(&body);
    assert_eq!(v["data"].as_array().unwrap().len(), others + at.len());
    at.iter().map(|&i| numbers(&v["data"][i])).collect()
}

fn in_batch(policy: &str, options: &Value, others: usize, at: usize) -> Value {
    in_batch_at(policy, options, others, &[at]).remove(0)
}

#[test]
fn alone_in_a_batch_of_64_and_repeated_give_identical_bits() {
    let options = json!({"top_logprobs": 3, "echo": true, "score_end_of_turn": true});
    for policy in [SMOL, GEMMA] {
        let reference = alone(policy, &options);
        assert_eq!(
            alone(policy, &options),
            reference,
            "{policy}: repeat differs"
        );
        // At the head and in the middle of one batch of 64 (one batch: the schedule is per item, so a
        // second batch would decode the same fillers again and prove nothing more).
        let [head, middle] =
            <[Value; 2]>::try_from(in_batch_at(policy, &options, 62, &[0, 37])).unwrap();
        assert_eq!(head, reference, "{policy}: batch head differs");
        assert_eq!(middle, reference, "{policy}: batch differs");
    }
}

#[test]
fn sixteen_concurrent_clients_sending_different_work_change_nothing() {
    let options = json!({"top_logprobs": 2});
    let reference: Vec<Value> = [SMOL, GEMMA].iter().map(|p| alone(p, &options)).collect();
    let results: Vec<(usize, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|c| {
                let options = &options;
                s.spawn(move || {
                    let which = c % 2;
                    let policy = [SMOL, GEMMA][which];
                    let mut out = Vec::new();
                    for round in 0..3 {
                        // Each client interleaves the probe with its own different batches.
                        let got = if (c + round) % 2 == 0 {
                            alone(policy, options)
                        } else {
                            // Batches of 3 to 6 items: different per client, small enough that
                            // sixteen of them stay quick.
                            let others = 3 + c % 4;
                            in_batch(policy, options, others, (c * 7 + round) % (others + 1))
                        };
                        out.push((which, got));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(results.len(), 48);
    for (which, got) in results {
        assert_eq!(
            got, reference[which],
            "a concurrent answer differs from the idle one"
        );
    }
}

//! The response cache: hits return the same bits, policies that differ only by name share entries,
//! anything that changes the numbers misses, and identical requests in flight compute once.

use serde_json::{Value, json};

use crate::common::*;

/// The item results without the `cached` flag.
fn numbers(v: &Value) -> Vec<Value> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.as_object_mut().unwrap().remove("cached");
            d
        })
        .collect()
}

fn cached_flags(v: &Value) -> Vec<bool> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["cached"].as_bool().unwrap())
        .collect()
}

#[test]
fn hits_return_the_same_bits_and_clones_share_entries() {
    let unique = format!("cache test {:?}", std::time::SystemTime::now());
    let body = |model: &str, top: u32| {
        json!({"model": model, "items": [
            {"prompt": unique, "response": " first"},
            {"prompt": unique, "response": " second"},
        ], "top_logprobs": top, "echo": true})
    };
    let first = ok(&body(SMOL, 2));
    assert_eq!(cached_flags(&first), [false, false]);
    let again = ok(&body(SMOL, 2));
    assert_eq!(cached_flags(&again), [true, true]);
    assert_eq!(numbers(&again), numbers(&first));
    // A policy that differs only by name shares the entries.
    let clone = ok(&body(SMOL_CLONE, 2));
    assert_eq!(cached_flags(&clone), [true, true]);
    assert_eq!(numbers(&clone), numbers(&first));
    // Anything that changes the numbers is another entry.
    assert_eq!(cached_flags(&ok(&body(SMOL, 3))), [false, false]);
    assert_eq!(cached_flags(&ok(&body(SMOL_T05, 2))), [false, false]);
    assert_eq!(cached_flags(&ok(&body(GEMMA, 2))), [false, false]);
}

#[test]
fn identical_requests_in_flight_compute_once() {
    let base = spawn_server(base_config(vec![policy("p", smol_path())]));
    let body = json!({"model": "p", "prompt": "word ".repeat(300), "response": " once"});
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| post_to(&base, "/v1/logprobs", &body).1))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let flags: Vec<bool> = results
        .iter()
        .map(|r| r["data"][0]["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(
        flags.iter().filter(|c| !**c).count(),
        1,
        "computed more than once: {flags:?}"
    );
    assert!(results.iter().all(|r| numbers(r) == numbers(&results[0])));
    let state = ready(&base);
    assert_eq!(state["cache"]["misses"], 1, "{state}");
    assert_eq!(state["cache"]["hits"], 7, "{state}");
    assert_eq!(state["models"][0]["abandoned_jobs"], 0);
}

#[test]
fn the_cache_can_be_turned_off() {
    let mut cfg = base_config(vec![policy("p", smol_path())]);
    cfg.cache.max_bytes = 0;
    let base = spawn_server(cfg);
    let body = json!({"model": "p", "prompt": "a", "response": "b"});
    for _ in 0..2 {
        let (_, v) = post_to(&base, "/v1/logprobs", &body);
        assert_eq!(v["data"][0]["cached"], false);
    }
    let state = ready(&base);
    assert!(state["cache"].is_null(), "{state}");
}

//! Requests whose work or answer would be out of proportion to their size: each is refused at once with
//! the 4xx naming its field (the request budget), while `/health` and another client stay served and memory
//! stays near its start. Also the generation fan-out (all of a request's jobs queued or none) and a panic on
//! an inference thread (that job fails with a 500, the thread serves the next).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Target, TargetOptions, assert_refused, one_at_a_time, post_json, scaled};
use crate::common::{Hold, ready};

/// Time a refused request may take: it is refused before any tokenizing or queueing.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// Sends `body` `times` times from `parallel` threads at once, asserting each is refused with `status`
/// naming `field` within [`REFUSED_WITHIN`]; returns the slowest answer.
fn refused_each_time(
    target: &Target,
    path: &str,
    body: &Value,
    times: usize,
    parallel: usize,
    (status, field): (u16, &str),
) -> Duration {
    let slowest = std::thread::scope(|s| {
        let threads: Vec<_> = (0..parallel)
            .map(|_| {
                s.spawn(|| {
                    let mut slowest = Duration::ZERO;
                    for _ in 0..times.div_ceil(parallel) {
                        let started = Instant::now();
                        let got =
                            post_json(&target.running.base, path, body, Duration::from_secs(60))
                                .expect("answered");
                        slowest = slowest.max(started.elapsed());
                        assert_refused(&got, status, field);
                    }
                    slowest
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .max()
            .unwrap()
    });
    assert!(
        slowest < REFUSED_WITHIN,
        "a refusal took {slowest:?}, more than {REFUSED_WITHIN:?}"
    );
    slowest
}

/// The shape that took a default server from 221 MiB to over 1 GiB: 200 prompts × n = 16 with 16 long stop
/// strings. prompts × n is over `max_batch_items` (256): refused naming `n` before anything is prepared.
#[test]
fn attack_budget_prompts_times_n_over_the_batch_limit_is_refused_at_once() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions::default());
    let watch = target.watch();
    let prompts: Vec<String> = (0..200)
        .map(|i| format!("prompt {i} ").repeat(110))
        .collect();
    let stops: Vec<String> = (0..16).map(|i| format!("{i}").repeat(1000)).collect();
    let body =
        json!({"model": "smol", "prompt": prompts, "n": 16, "stop": stops, "max_tokens": 16});
    assert!(serde_json::to_vec(&body).unwrap().len() > 200_000);
    let slowest = refused_each_time(
        &target,
        "/v1/completions",
        &body,
        scaled(4, 20),
        2,
        (400, "n"),
    );
    let report = watch.finish();
    eprintln!("prompts × n: slowest refusal {slowest:?}");
    assert!(target.alive());
    report.assert_held("prompts × n", 600);
}

/// Stop strings, `logit_bias` and the answer's size each have their bound, named when exceeded.
#[test]
fn attack_budget_options_beyond_their_bounds_are_refused_naming_the_field() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions::default());
    let watch = target.watch();
    let base = json!({"model": "smol", "prompt": "Hello", "max_tokens": 4});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let times = scaled(2, 10);
    // 17 stop strings; one stop string of 1 KiB + 1.
    let many_stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    refused_each_time(
        &target,
        "/v1/completions",
        &with("stop", json!(many_stops)),
        times,
        1,
        (400, "stop"),
    );
    let long_stop = "x".repeat(1025);
    refused_each_time(
        &target,
        "/v1/completions",
        &with("stop", json!([long_stop])),
        times,
        1,
        (400, "stop"),
    );
    refused_each_time(
        &target,
        "/v1/chat/completions",
        &json!({
            "model": "smol", "messages": [{"role": "user", "content": "Hi"}], "stop": long_stop,
        }),
        times,
        1,
        (400, "stop"),
    );
    // 1,025 logit_bias entries (valid token ids): the count alone is refused.
    let bias: serde_json::Map<String, Value> =
        (0..1025).map(|i| (i.to_string(), json!(1.0))).collect();
    refused_each_time(
        &target,
        "/v1/completions",
        &with("logit_bias", Value::Object(bias)),
        times,
        1,
        (400, "logit_bias"),
    );
    // The answer: 16 prompts × n = 16 × 2,000 tokens × (1 + 5 alternatives) = 3.1M entries > 2^20.
    let answer = json!({"model": "smol", "prompt": vec!["Hi"; 16], "n": 16, "max_tokens": 2000, "logprobs": 5});
    refused_each_time(
        &target,
        "/v1/completions",
        &answer,
        times,
        1,
        (400, "logprobs"),
    );
    // The native answer: 64 echoed items × ~1,000 tokens × (1 + 20 alternatives) = 1.3M entries > 2^20.
    let text = "word ".repeat(1000);
    let items = vec![json!({"prompt": text, "response": " end"}); 64];
    let native = json!({"model": "smol", "items": items, "echo": true, "top_logprobs": 20});
    refused_each_time(
        &target,
        "/v1/logprobs",
        &native,
        times,
        1,
        (400, "top_logprobs"),
    );
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("option bounds", 600);
}

/// `models` with many distinct names (150k under `make attack`): checked in linear time and refused as
/// longer than the policies served, from two clients at once, while `/health` stays within a second.
#[test]
fn attack_budget_a_huge_models_list_is_refused_in_linear_time() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions::default());
    let watch = target.watch();
    let names: Vec<String> = (0..scaled(20_000, 150_000))
        .map(|i| format!("policy-{i}"))
        .collect();
    let body = json!({"models": names, "prompt": "a", "response": "b"});
    let slowest = refused_each_time(
        &target,
        "/v1/logprobs",
        &body,
        scaled(4, 8),
        2,
        (400, "models"),
    );
    // A duplicate in a short list is named by its index.
    let dup = json!({"models": ["smol", "smol"], "prompt": "a", "response": "b"});
    let got = post_json(
        &target.running.base,
        "/v1/logprobs",
        &dup,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_refused(&got, 400, "models");
    let report = watch.finish();
    eprintln!("models list: slowest refusal {slowest:?}");
    assert!(target.alive());
    report.assert_held("models list", 600);
}

/// A prompt whose byte length alone shows it cannot fit the context is refused before it is tokenized:
/// an 8 MiB body (2 MiB inside `make test`) is answered `context_length_exceeded` at once.
#[test]
fn attack_budget_a_prompt_far_over_the_context_is_refused_before_tokenizing() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions::default());
    let watch = target.watch();
    let prompt = "The quick brown fox jumps over the lazy dog. "
        .repeat(scaled(2 << 20, (8 << 20) - 4096) / 45);
    for (path, body, field) in [
        (
            "/v1/completions",
            json!({"model": "smol", "prompt": prompt, "max_tokens": 1}),
            "prompt",
        ),
        (
            "/v1/logprobs",
            json!({"model": "smol", "prompt": prompt, "response": " ok"}),
            "prompt",
        ),
        (
            "/v1/logprobs",
            json!({"model": "smol", "prompt": "a", "response": prompt}),
            "response",
        ),
    ] {
        let started = Instant::now();
        let got = post_json(&target.running.base, path, &body, Duration::from_secs(60)).unwrap();
        eprintln!("{path} {field}: {} in {:?}", got.0, started.elapsed());
        assert_refused(&got, 400, field);
        assert_eq!(
            got.1["error"]["code"], "context_length_exceeded",
            "{}",
            got.1
        );
        assert!(
            started.elapsed() < REFUSED_WITHIN,
            "{:?}",
            started.elapsed()
        );
    }
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("long prompt", 700);
}

/// A request's generations (and its score-only echo choices) take their queue places all at once or not at
/// all: with the inference threads held and the queue partly full, a request that does not fit whole gets
/// 429 and queues nothing.
#[test]
fn attack_budget_generation_fan_out_is_queued_whole_or_refused() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let hold = Hold::new(dir.path());
    let mut target = Target::start(TargetOptions {
        server_yaml: "  queue_size: 8\n  max_batch_items: 8\n".into(),
        env: vec![(
            llama_scorer::engine::HOLD_ENV.into(),
            hold.0.display().to_string(),
        )],
        ..TargetOptions::default()
    });
    let base = target.running.base.clone();
    let first = std::thread::spawn({
        let base = base.clone();
        move || {
            let body = json!({"model": "smol", "prompt": "Hello", "n": 5, "max_tokens": 2});
            post_json(&base, "/v1/completions", &body, Duration::from_secs(120)).unwrap()
        }
    });
    let depth = |r: &Value| r["models"][0]["queue_depth"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while depth(&ready(&base)) < 5 {
        assert!(Instant::now() < deadline, "the first request never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = json!({"model": "smol", "prompt": ["a", "b"], "n": 2, "max_tokens": 2});
    let got = post_json(&base, "/v1/completions", &second, Duration::from_secs(30)).unwrap();
    assert_eq!(got.0, 429, "{}", got.1);
    assert_eq!(got.1["error"]["code"], "queue_full", "{}", got.1);
    assert_eq!(
        depth(&ready(&base)),
        5,
        "a refused request queued part of its work"
    );
    // Score-only echo choices too: four prompts scored, three places left.
    let echo = json!({"model": "smol", "prompt": ["echo a", "echo b", "echo c", "echo d"], "echo": true,
                      "max_tokens": 0, "logprobs": 1});
    let got = post_json(&base, "/v1/completions", &echo, Duration::from_secs(30)).unwrap();
    assert_eq!(got.0, 429, "{}", got.1);
    assert_eq!(
        depth(&ready(&base)),
        5,
        "a refused echo request queued part of its work"
    );
    hold.release();
    let (status, answer) = first.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"].as_array().unwrap().len(), 5);
    let got = post_json(&base, "/v1/completions", &second, Duration::from_secs(60)).unwrap();
    assert_eq!(got.0, 200, "{}", got.1);
    assert!(target.alive());
}

/// A panic on an inference thread (the test-only marker) fails that job with a 500; the threads live on
/// and serve the next requests, and the panics are counted.
#[test]
fn attack_budget_a_panic_on_an_inference_thread_fails_only_its_job() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions {
        env: vec![(
            llama_scorer::engine::PANIC_ENV.into(),
            "PANIC-MARKER".into(),
        )],
        ..TargetOptions::default()
    });
    let watch = target.watch();
    let base = target.running.base.clone();
    let panics = scaled(4, 20);
    for i in 0..panics {
        // Both kinds of job: scoring and generation.
        let (path, body) = if i % 2 == 0 {
            (
                "/v1/logprobs",
                json!({"model": "smol", "prompt": format!("{i} PANIC-MARKER"), "response": " x"}),
            )
        } else {
            (
                "/v1/completions",
                json!({"model": "smol", "prompt": format!("{i} PANIC-MARKER"), "max_tokens": 2}),
            )
        };
        let got = post_json(&base, path, &body, Duration::from_secs(60)).unwrap();
        assert_eq!(got.0, 500, "{}", got.1);
        let ok = post_json(
            &base,
            "/v1/completions",
            &json!({"model": "smol", "prompt": "Hi", "max_tokens": 2}),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(ok.0, 200, "after a panic: {}", ok.1);
    }
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("inference panic", 700);
    let metrics = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("llama_scorer_inference_panics_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as usize, panics, "{metrics}");
}

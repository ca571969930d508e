//! The binary: config errors stop start-up with a message naming policy and field; policies on one file
//! share one loaded model; a full queue answers 429 with Retry-After.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// Runs `serve --config` on `yaml` and expects a quick non-zero exit whose stderr contains every needle.
fn expect_startup_failure(yaml: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), yaml);
    let out = binary()
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--port", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{yaml}: started anyway");
    for n in needles {
        assert!(stderr.contains(n), "{yaml}: stderr lacks {n:?}:\n{stderr}");
    }
}

#[test]
fn bad_configs_stop_startup_naming_policy_and_field() {
    let smol = smol_path().display().to_string();
    let not_gguf = env!("CARGO_MANIFEST_DIR").to_string() + "/Cargo.toml";
    expect_startup_failure(
        &format!("policies:\n  p0: {{provider: llama_cpp, model: {smol}, temprature: 0.5}}\n"),
        &["p0", "temprature"],
    );
    expect_startup_failure(
        "policies:\n  p0: {model: /nonexistent/x.gguf}\n",
        &["policies.p0.model", "/nonexistent/x.gguf"],
    );
    expect_startup_failure(
        &format!("policies:\n  pi_bad: {{model: {not_gguf}}}\n"),
        &["policies.pi_bad.model", "not a GGUF"],
    );
    expect_startup_failure(
        &format!("policies:\n  p0: {{model: {smol}, temperature: warm}}\n"),
        &["p0", "temperature"],
    );
    expect_startup_failure(
        &format!("policies:\n  p0: {{model: {smol}, n_ctx: 4096.5}}\n"),
        &["p0", "n_ctx"],
    );
    expect_startup_failure(
        &format!("policies:\n  p0: {{model: {smol}, chat_template: \"{{% for %}}\"}}\n"),
        &["policies.p0.chat_template"],
    );
    expect_startup_failure("policies: [1, 2]\n", &["policies"]);
}

#[test]
fn cli_requires_a_config_or_a_model() {
    let out = binary().arg("serve").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
    let out = binary()
        .args(["serve", "--model", "/nonexistent.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn policies_naming_one_file_share_one_loaded_model() {
    let dir = tempfile::tempdir().unwrap();
    // A symlink and a relative path to the same file: still one model (the pool keys canonical paths).
    std::os::unix::fs::symlink(smol_path(), dir.path().join("link.gguf")).unwrap();
    let smol = smol_path().display().to_string();
    let measure = |yaml: String, names: &[&str]| -> u64 {
        let cfg = write_config(dir.path(), &yaml);
        let s = start(&cfg);
        for name in names {
            let (status, _) = post_to(
                &s.base,
                "/v1/logprobs",
                &json!({"model": name, "prompt": "Hello", "response": " world", "top_logprobs": 1}),
            );
            assert_eq!(status, 200);
        }
        let models = client().get(format!("{}/ready", s.base)).send().unwrap();
        let ready: serde_json::Value = models.json().unwrap();
        assert_eq!(ready["models"].as_array().unwrap().len(), 1, "{ready}");
        rss_kib(s.child.id())
    };
    let one = measure(format!("policies:\n  p0: {{model: {smol}}}\n"), &["p0"]);
    let three = measure(
        format!(
            "policies:\n  p0: {{provider: llama_cpp, model: {smol}, temperature: 0.5, seed: 42, n_ctx: 4096, n_gpu_layers: -1}}\n  \
             pi_clone: {{provider: llama_cpp, model: link.gguf, temperature: 0.5, seed: 42, n_ctx: 4096, n_gpu_layers: -1}}\n  \
             pi_bad: {{provider: llama_cpp, model: ./link.gguf, temperature: 1.0, seed: 42, system_prompt: \"You are an unhelpful assistant.\"}}\n"
        ),
        &["p0", "pi_clone", "pi_bad"],
    );
    let ratio = three as f64 / one as f64;
    assert!(
        ratio < 1.05,
        "resident memory with three policies is {ratio:.3}× one policy ({three} vs {one} KiB)"
    );
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let smol = smol_path().display().to_string();
    let cfg = write_config(
        dir.path(),
        &format!(
            "server: {{queue_size: 1, max_batch_items: 1}}\npolicies:\n  p0: {{model: {smol}}}\n"
        ),
    );
    // Held, the first request fills the queue of one and stays there, whatever the machine's speed.
    let hold = Hold::new(dir.path());
    let s = start_held(&cfg, &hold);
    let base = s.base.clone();
    let first = std::thread::spawn(move || {
        post_to(
            &base,
            "/v1/logprobs",
            &json!({"model": "p0", "prompt": "a long prompt", "response": " 0"}),
        )
        .0
    });
    wait_ready(&s.base, "the queue full", |r| {
        r["models"][0]["queue_depth"] == 1
    });
    let r = client()
        .post(format!("{}/v1/logprobs", s.base))
        .json(&json!({"model": "p0", "prompt": "a long prompt", "response": " 1"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(
        r.headers().contains_key("retry-after"),
        "429 without Retry-After"
    );
    // Named by the policy; no server path or file name reaches the client.
    let message = r.json::<Value>().unwrap()["error"]["message"].to_string();
    assert!(message.contains("`p0`"), "{message}");
    assert!(
        !message.contains(".gguf") && !message.contains('/'),
        "{message}"
    );
    hold.release();
    assert_eq!(first.join().unwrap(), 200, "the queued request");
    // Afterwards the server serves normally.
    let (status, _) = post_to(
        &s.base,
        "/v1/logprobs",
        &json!({"model": "p0", "prompt": "a", "response": "b"}),
    );
    assert_eq!(status, 200);
}

#[test]
fn the_example_arena_config_serves_its_policies() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/arena.yaml");
    // The example's port may be taken: `start` overrides it with a free one.
    let s = start(&cfg);
    assert_eq!(model_ids(&s.base), ["p0", "pi_clone", "pi_bad"]);
    let msgs = json!([{"role": "user", "content": "Name a colour."}]);
    let score = |model: &str| {
        let (status, v) = post_to(
            &s.base,
            "/v1/logprobs",
            &json!({"model": model, "messages": msgs, "response": "Blue."}),
        );
        assert_eq!(status, 200, "{v}");
        v["data"][0].clone()
    };
    let (p0, clone, bad) = (score("p0"), score("pi_clone"), score("pi_bad"));
    assert_eq!(p0["logprobs"], clone["logprobs"]);
    assert_eq!(p0["temperature"], 0.5);
    assert_ne!(
        p0["logprob"], bad["logprob"],
        "the system prompt changes the distribution"
    );
}

#[test]
fn work_of_a_client_that_went_away_is_dropped_not_computed() {
    let dir = tempfile::tempdir().unwrap();
    let smol = smol_path().display().to_string();
    let cfg = write_config(
        dir.path(),
        &format!(
            "server: {{max_concurrent_requests: 1}}\ncache: {{max_bytes: 0}}\npolicies:\n  p0: {{model: {smol}}}\n"
        ),
    );
    // The inference thread is held: the batch queues and cannot finish before the client gives up.
    let hold = Hold::new(dir.path());
    let s = start_held(&cfg, &hold);
    let items: Vec<serde_json::Value> = (0..40)
        .map(|i| json!({"prompt": format!("{i} some context"), "response": " ok"}))
        .collect();
    let base = s.base.clone();
    let impatient = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap()
            .post(format!("{base}/v1/logprobs"))
            .json(&json!({"model": "p0", "items": items}))
            .send()
            .is_err()
    });
    wait_ready(&s.base, "40 items queued", |r| {
        r["models"][0]["queue_depth"] == 40
    });
    assert!(impatient.join().unwrap(), "the held batch finished");
    // The server drops the request once it sees the connection close, which frees the one request slot:
    // until then another API request gets 503. Wait for that, not for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client()
            .get(format!("{}/v1/models", s.base))
            .send()
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "/v1/models while the slot is taken");
        assert!(
            Instant::now() < deadline,
            "the request of the client that went away was never dropped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    hold.release();
    let ready = wait_ready(&s.base, "drained", |r| r["models"][0]["queue_depth"] == 0);
    assert_eq!(ready["models"][0]["abandoned_jobs"], 40, "{ready}");
    let (status, _) = post_to(
        &s.base,
        "/v1/logprobs",
        &json!({"model": "p0", "prompt": "a", "response": "b"}),
    );
    assert_eq!(status, 200);
}

#[test]
fn the_score_command_scores_every_pair_records_errors_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let smol = smol_path().display().to_string();
    let gemma = gemma_path().display().to_string();
    let cfg = write_config(
        dir.path(),
        &format!(
            "policies:\n  p0: {{model: {smol}, temperature: 0.5}}\n  pi_clone: {{model: {smol}, temperature: 0.5}}\n  g: {{model: {gemma}}}\n"
        ),
    );
    let input = dir.path().join("items.jsonl");
    let lines = [
        r#"{"id": "a", "prompt": "What is 2+2?", "response": " 4"}"#,
        r#"{"id": "b", "messages": [{"role": "user", "content": "Hi"}], "response": "Hello!", "policies": ["p0"]}"#,
        r#"{"id": "c", "prompt": "", "response": "x"}"#,
        "",
        r#"{"prompt": "Hello", "response_token_ids": [1, 999999]}"#,
        "not json",
        r#"{"id": "f", "prompt": "The sky is", "response": " blue."}"#,
        r#"{"id": "h", "prompt": "x", "response": "y", "policies": ["p0", "nope"]}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    let run = || {
        succeeded(&score_run(&cfg, &input, &output, &[]));
        std::fs::read_to_string(&output).unwrap()
    };
    let full = run();
    let records: Vec<serde_json::Value> = full
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // a, c, line 5 and f under three policies, b under one, and two unreadable lines.
    assert_eq!(records.len(), 4 * 3 + 1 + 2, "{full}");
    let find = |id: serde_json::Value, policy: &str| {
        records
            .iter()
            .find(|r| r["id"] == id && r["policy"] == policy)
            .unwrap_or_else(|| panic!("no record for {id} {policy}"))
            .clone()
    };
    // The numbers are the server's: same model file, same schedule.
    let a = find(json!("a"), "p0");
    let served = item(&json!({"model": SMOL, "prompt": "What is 2+2?", "response": " 4"}));
    assert_eq!(a["logprob"], served["logprob"]);
    assert_eq!(find(json!("a"), "pi_clone")["logprob"], a["logprob"]);
    assert!(
        find(json!("c"), "p0")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BOS")
    );
    assert!(
        find(json!("c"), "g")["logprob"].as_f64().unwrap() < 0.0,
        "Gemma adds BOS"
    );
    assert!(
        find(json!(5), "g")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_token_ids[1]")
    );
    assert!(
        records
            .iter()
            .any(|r| r["line"] == 6 && r["error"].is_object())
    );
    let unknown = records
        .iter()
        .find(|r| r["line"] == 8)
        .expect("line 8 recorded");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("policies: unknown policy `nope`"),
        "{unknown}"
    );
    // --policies names configured policies only.
    let out = binary()
        .args([
            "score",
            "--no-progress",
            "--policies",
            "p0,nope",
            "--config",
        ])
        .arg(&cfg)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("never.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--policies: unknown policy `nope`"),
        "{stderr}"
    );
    // Resume: keep three lines and a torn fourth; the rerun completes the file without redoing any pair.
    let kept: Vec<&str> = full.lines().take(3).collect();
    std::fs::write(&output, format!("{}\n{{\"id\": \"tor", kept.join("\n"))).unwrap();
    let resumed = run();
    assert!(resumed.starts_with(&kept.join("\n")));
    let again: Vec<serde_json::Value> = resumed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again.len(), records.len(), "{resumed}");
    let mut keys: Vec<String> = again
        .iter()
        .map(|r| format!("{}/{}/{}", r["id"], r["policy"], r["line"]))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), again.len(), "a pair was written twice");
    // A third run has nothing left to do.
    assert_eq!(run(), resumed);
    // A complete line that is not a record (another tool's output, an edit) is refused, and nothing after it
    // is cut off.
    let foreign = format!("{}\n{{\"note\": \"mine\"}}\n{}\n", kept[0], kept[1]);
    std::fs::write(&output, &foreign).unwrap();
    let refused = score_run(&cfg, &input, &output, &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 2 is not a line `score` writes"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), foreign);
}

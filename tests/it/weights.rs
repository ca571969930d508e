//! Several policies per request and log-ratios against a base: every (item, policy)
//! result equals the separate single-policy request bit for bit, and each log-ratio equals the difference
//! of those separate answers — checked against the single-policy path, not against the code that adds them.

use serde_json::{Value, json};

use crate::common::{
    Running, gemma_path, post_to, score_run, smol_path, start, succeeded, write_config,
};

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

/// `score --base`: every line scored under the base too, `log_ratio` on the others' lines equal to the
/// difference of the two lines' sampling_logprob, and a summary whose mean weight and ESS follow from the
/// lines by their definitions — over the whole file after a resumed run.
#[test]
fn score_with_a_base_writes_ratios_and_a_weights_summary_across_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "policies:\n  p0: {{model: {s}, temperature: 0.5}}\n  pi_clone: {{model: {s}, temperature: 0.5}}\n  \
         pi_hot: {{model: {s}, temperature: 1.5}}\n",
        s = smol_path().display()
    );
    let config = write_config(dir.path(), &yaml);
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let all_lines = [
        r#"{"id": "a", "prompt": "The capital of France is", "response": " Paris."}"#,
        r#"{"id": "b", "prompt": "1 2 3", "response": " 4 5 6"}"#,
        r#"{"id": "c", "messages": [{"role": "user", "content": "Hi"}], "response": "Hello there!"}"#,
        r#"{"id": "d", "prompt": "Roses are red,", "response": " violets are blue."}"#,
    ];
    let run = |n: usize| {
        std::fs::write(&input, all_lines[..n].join("\n") + "\n").unwrap();
        let extra = ["--base", "p0", "--policies", "pi_clone,pi_hot"];
        succeeded(&score_run(&config, &input, &output, &extra))
    };
    run(2);
    let stderr = run(4);
    assert!(
        stderr.contains("importance weights against `p0`"),
        "{stderr}"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12, "4 ids × (2 policies + the base)");
    let of = |id: &str, policy: &str| {
        lines
            .iter()
            .find(|l| l["id"] == id && l["policy"] == policy)
            .unwrap_or_else(|| panic!("no ({id}, {policy})"))
    };
    let mut hot_ratios = Vec::new();
    for id in ["a", "b", "c", "d"] {
        let base = f(&of(id, "p0")["sampling_logprob"]);
        assert!(of(id, "p0").get("log_ratio").is_none());
        assert_eq!(
            f(&of(id, "pi_clone")["log_ratio"]),
            0.0,
            "a clone's weight is exactly 1"
        );
        let hot = of(id, "pi_hot");
        let r = f(&hot["log_ratio"]);
        assert_eq!(r.to_bits(), (f(&hot["sampling_logprob"]) - base).to_bits());
        hot_ratios.push(r);
    }
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out.jsonl.summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["base"], "p0");
    let policy = |name: &str| {
        summary["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap()
            .clone()
    };
    let clone = policy("pi_clone");
    assert_eq!(
        (f(&clone["mean_weight"]), f(&clone["ess_fraction"])),
        (1.0, 1.0)
    );
    assert!(clone.get("warning").is_none(), "{clone}");
    let hot = policy("pi_hot");
    assert_eq!(
        (hot["items"].as_u64(), hot["with_ratio"].as_u64()),
        (Some(4), Some(4))
    );
    let w: Vec<f64> = hot_ratios.iter().map(|r| r.exp()).collect();
    let (s1, s2): (f64, f64) = (w.iter().sum(), w.iter().map(|x| x * x).sum());
    assert!(
        (f(&hot["mean_weight"]) - s1 / 4.0).abs() <= 1e-9 * s1,
        "{hot}"
    );
    assert!(
        (f(&hot["ess_fraction"]) - s1 * s1 / (4.0 * s2)).abs() < 1e-9,
        "{hot}"
    );
    let top = hot_ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(f(&hot["largest"][0]["log_ratio"]), top);
}

/// Scoring decodes run so far, from `/metrics` (one per job an inference thread computed).
fn decodes(base: &str) -> u64 {
    let page = crate::common::client()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    page.lines()
        .filter(|l| {
            l.starts_with("llama_scorer_compute_seconds_count{") && l.contains("kind=\"score\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Policies on one model with the same rendered prompt share a decode whatever their temperatures: with
/// both caches off (so nothing is found computed), a three-policy request on two items runs 3 decodes, not 6
/// (p0 at T = 0.5 and pi_hot at 1.5 share; pi_sys's system prompt makes other tokens for the chat item). Every result still
/// equals its own single-policy request bit for bit, each of those decoded alone; the batch command shares
/// the same way and writes the same numbers. With the response cache on, the shared decode leaves an entry
/// per temperature behind.
#[test]
fn policies_sharing_a_model_share_each_decode_and_keep_their_bits() {
    let dir = tempfile::tempdir().unwrap();
    let smol = smol_path().display().to_string();
    let policies = format!(
        "policies:\n  p0: {{model: {smol}, temperature: 0.5}}\n  pi_hot: {{model: {smol}, temperature: 1.5}}\n  \
         pi_sys: {{model: {smol}, temperature: 0.5, system_prompt: 'You are terse.'}}\n"
    );
    let uncached = write_config(
        dir.path(),
        &format!("server: {{prefix_cache_bytes: 0}}\ncache: {{max_bytes: 0}}\n{policies}"),
    );
    let s = start(&uncached);
    let names = ["p0", "pi_hot", "pi_sys"];
    let before = decodes(&s.base);
    let (code, multi) = post_to(
        &s.base,
        "/v1/logprobs",
        &json!({"models": names, "items": items(), "top_logprobs": 3}),
    );
    assert_eq!(code, 200, "{multi}");
    // Item 0 is a plain prompt (a system prompt applies to chat messages only): one decode for all three.
    // Item 1 is chat: p0 and pi_hot share one, pi_sys's system prompt makes other tokens.
    assert_eq!(decodes(&s.base) - before, 3, "1 + 2 decodes, not 6");
    let data = multi["data"].as_array().unwrap();
    let mut single_values = std::collections::HashMap::new();
    for (j, policy) in names.iter().enumerate() {
        let before = decodes(&s.base);
        let (code, alone) = post_to(
            &s.base,
            "/v1/logprobs",
            &json!({"model": policy, "items": items(), "top_logprobs": 3}),
        );
        assert_eq!(code, 200, "{alone}");
        assert_eq!(decodes(&s.base) - before, 2, "{policy} decoded alone");
        for item in 0..2 {
            let shared = &data[item * names.len() + j];
            assert_eq!(
                numbers(shared),
                numbers(&alone["data"][item]),
                "{policy} item {item}"
            );
            single_values.insert(
                (policy.to_string(), item),
                f(&alone["data"][item]["sampling_logprob"]),
            );
        }
    }
    // Not vacuous: the shared pair differs in sampling_logprob, agrees in logprob (T = 1).
    let (p0, hot) = (&data[0], &data[1]);
    assert_eq!(p0["logprob"], hot["logprob"]);
    assert_ne!(p0["sampling_logprob"], hot["sampling_logprob"]);
    drop(s);

    // The batch command: the same numbers as the single-policy requests.
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let lines: Vec<String> = items()
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let mut line = it.clone();
            line["id"] = json!(i);
            line.to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    succeeded(&score_run(
        &uncached,
        &input,
        &output,
        &["--policies", "p0,pi_hot,pi_sys"],
    ));
    let written: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 6);
    for line in &written {
        let key = (
            line["policy"].as_str().unwrap().to_string(),
            line["id"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            f(&line["sampling_logprob"]).to_bits(),
            single_values[&key].to_bits(),
            "{line}"
        );
    }

    // With the response cache on, each temperature of a shared decode is found computed afterwards.
    let cached_config = dir.path().join("cached");
    std::fs::create_dir(&cached_config).unwrap();
    let s = start(&write_config(&cached_config, &policies));
    let (code, _) = post_to(
        &s.base,
        "/v1/logprobs",
        &json!({"models": ["p0", "pi_hot"], "items": items()}),
    );
    assert_eq!(code, 200);
    let before = decodes(&s.base);
    for policy in ["p0", "pi_hot"] {
        let (code, alone) = post_to(
            &s.base,
            "/v1/logprobs",
            &json!({"model": policy, "items": items()}),
        );
        assert_eq!(code, 200, "{alone}");
        for item in 0..2 {
            assert_eq!(alone["data"][item]["cached"], true, "{policy} item {item}");
            assert_eq!(
                f(&alone["data"][item]["sampling_logprob"]).to_bits(),
                single_values[&(policy.to_string(), item)].to_bits()
            );
        }
    }
    assert_eq!(decodes(&s.base), before, "nothing decoded again");
}

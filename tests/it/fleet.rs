//! Past one box: `score --shard K/N` splits the input by item id (every line in exactly one shard, reruns
//! resume), `merge` joins the shards into exactly the single run's output and refuses incomplete or
//! inconsistent shard sets, the `system_fingerprint` is equal across processes exactly when the bits are,
//! and the load gauges that balancers read move with the work.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::*;

const SHARDS: u32 = 3;
/// SmolLM2's published SHA-256 (DESIGN.md's table of test models): an independent check of the content hash.
const SMOL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SMOL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// A single run and a three-shard run of the same input, made once for the tests of this file.
struct Runs {
    dir: tempfile::TempDir,
    config: PathBuf,
    input: PathBuf,
    single: Vec<Value>,
    shards: Vec<PathBuf>,
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The shard of an id by the documented rule, computed here independently of the binary.
fn expected_shard(id: &str) -> u32 {
    let digest = Sha256::digest(id.as_bytes());
    (u64::from_be_bytes(digest[..8].try_into().unwrap()) % u64::from(SHARDS)) as u32
}

/// The id text a record was sharded by: a string id as it is, other ids as JSON; a line error record by its
/// input line's id if that line is an object with one, else by the line number.
fn shard_id(record: &Value, input: &str) -> String {
    let by_id = |id: &Value| match id {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    match record["line"].as_u64() {
        None => by_id(&record["id"]).unwrap(),
        Some(n) => {
            let text = input.lines().nth(n as usize - 1).unwrap();
            serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| by_id(&v["id"]))
                .unwrap_or_else(|| n.to_string())
        }
    }
}

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let smol = smol_path().display().to_string();
        let config = write_config(
            dir.path(),
            &format!(
                "policies:\n  p0: {{model: {smol}}}\n  p1: {{model: {smol}, temperature: 0.5, n_ctx: 48}}\n"
            ),
        );
        let long = "a prompt longer than the forty-eight tokens that policy p1 allows ".repeat(6);
        let mut lines = vec![
            json!({"id": "a", "prompt": "The capital of France is", "response": " Paris."}).to_string(),
            json!({"prompt": "One, two,", "response": " three."}).to_string(),
            json!({"id": 7, "prompt": "Red, green,", "response": " blue."}).to_string(),
            json!({"id": "b", "prompt": "Hello", "response": " world", "policies": ["p1"]}).to_string(),
            "{not json".to_string(),
            json!({"id": "c", "prompt": "x", "response": "y", "bogus": 1}).to_string(),
            String::new(),
            json!({"id": "long", "prompt": long, "response": " end."}).to_string(),
            json!({"id": "d", "messages": [{"role": "user", "content": "Name a colour."}], "response": "Blue."})
                .to_string(),
        ];
        for (i, word) in ["cat", "dog", "fox", "owl", "bee", "elk", "ant", "yak"]
            .iter()
            .enumerate()
        {
            let prompt = format!("Item {i}: the animal is a");
            lines.push(json!({"id": format!("item-{i}"), "prompt": prompt, "response": format!(" {word}.")}).to_string());
        }
        let input = dir.path().join("input.jsonl");
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let single_path = dir.path().join("single.jsonl");
        succeeded(&score_run(&config, &input, &single_path, &[]));
        let shards: Vec<PathBuf> = (0..SHARDS)
            .map(|k| {
                let out = dir.path().join(format!("part-{k}.jsonl"));
                let spec = format!("{k}/{SHARDS}");
                succeeded(&score_run(&config, &input, &out, &["--shard", &spec]));
                out
            })
            .collect();
        Runs {
            single: records(&single_path),
            dir,
            config,
            input,
            shards,
        }
    })
}

fn merge(input: &Path, output: &Path, shards: &[PathBuf], extra: &[&str]) -> Output {
    binary()
        .arg("merge")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .args(shards)
        .output()
        .unwrap()
}

#[test]
fn shards_partition_the_input_by_id_and_merge_to_the_single_run_bit_for_bit() {
    let r = runs();
    // 14 items under p0 and p1 (b only under p1; p1 refuses `long` with an error record), and two
    // unreadable lines.
    assert_eq!(r.single.len(), 2 * 14 - 1 + 2, "{:#?}", r.single);
    assert_eq!(
        r.single.iter().filter(|v| v.get("error").is_some()).count(),
        3
    );
    let input = std::fs::read_to_string(&r.input).unwrap();
    let mut union = Vec::new();
    for (k, path) in r.shards.iter().enumerate() {
        let part = records(path);
        assert!(!part.is_empty(), "shard {k} is empty: pick other ids");
        for record in &part {
            assert_eq!(
                expected_shard(&shard_id(record, &input)),
                k as u32,
                "{record} is in the wrong shard"
            );
        }
        union.extend(part);
    }
    // Every record in exactly one shard, and the same records as the single run.
    let key = |v: &Value| v.to_string();
    let mut a: Vec<String> = union.iter().map(key).collect();
    let mut b: Vec<String> = r.single.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Merged: the single run's lines in its order, every number the same bits.
    let merged = r.dir.path().join("merged.jsonl");
    let stderr = succeeded(&merge(&r.input, &merged, &r.shards, &[]));
    assert_eq!(records(&merged), r.single);
    assert!(
        stderr.contains(&format!("merged {} records (3 errors)", r.single.len())),
        "{stderr}"
    );
    assert!(
        stderr.contains("default policies (found in the shard files"),
        "{stderr}"
    );
    // The same with the run's policies given.
    succeeded(&merge(
        &r.input,
        &merged,
        &r.shards,
        &["--policies", "p0,p1"],
    ));
    assert_eq!(records(&merged), r.single);
}

#[test]
fn a_shard_resumes_where_it_stopped() {
    let r = runs();
    let dir = tempfile::tempdir().unwrap();
    let (k, full) = r
        .shards
        .iter()
        .enumerate()
        .map(|(k, p)| (k, std::fs::read_to_string(p).unwrap()))
        .max_by_key(|(_, text)| text.lines().count())
        .unwrap();
    let spec = format!("{k}/{SHARDS}");
    // A complete shard: the rerun scores nothing and leaves the file as it was.
    let copy = dir.path().join("part.jsonl");
    std::fs::write(&copy, &full).unwrap();
    let stderr = succeeded(&score_run(&r.config, &r.input, &copy, &["--shard", &spec]));
    assert!(stderr.contains("scored 0 (id, policy) pairs"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), full);
    // An interrupted shard (half its lines and a torn one): the rerun completes it exactly.
    let lines: Vec<&str> = full.lines().collect();
    let half = lines[..lines.len() / 2].join("\n");
    std::fs::write(&copy, format!("{half}\n{{\"id\": \"ite")).unwrap();
    succeeded(&score_run(&r.config, &r.input, &copy, &["--shard", &spec]));
    assert_eq!(records(&copy), records(&r.shards[k]));
}

/// The shard files copied into a new folder, the `i`-th changed by `edit`, and merge's result on them.
fn merge_edited(
    i: usize,
    mut edit: impl FnMut(&mut Vec<String>),
) -> (Output, PathBuf, tempfile::TempDir) {
    let r = runs();
    let dir = tempfile::tempdir().unwrap();
    let copies: Vec<PathBuf> = r
        .shards
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let mut lines: Vec<String> = std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            if k == i {
                edit(&mut lines);
            }
            let copy = dir.path().join(format!("part-{k}.jsonl"));
            std::fs::write(&copy, lines.join("\n") + "\n").unwrap();
            copy
        })
        .collect();
    let merged = dir.path().join("merged.jsonl");
    (merge(&r.input, &merged, &copies, &[]), merged, dir)
}

/// Merge failed, wrote nothing, and said every needle.
fn refused(out: &Output, merged: &Path, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "merge succeeded: {stderr}");
    assert!(!merged.exists(), "merge wrote {} anyway", merged.display());
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
}

/// The index of the first success record of a shard file's lines, and its (id, policy).
fn first_success(lines: &[String]) -> (usize, Value) {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i, serde_json::from_str::<Value>(l).unwrap()))
        .find(|(_, v)| v.get("logprob").is_some())
        .unwrap()
}

#[test]
fn merge_names_a_missing_pair() {
    let (out, merged, _dir) = merge_edited(0, |lines| {
        let (i, v) = first_success(lines);
        lines.remove(i);
        eprintln!("removed {v}");
    });
    refused(&out, &merged, &["1 missing pairs", "policy p"]);
}

#[test]
fn merge_refuses_shards_with_different_fingerprints() {
    let (out, merged, _dir) = merge_edited(1, |lines| {
        let (i, mut v) = first_success(lines);
        v["system_fingerprint"] = json!("fp_0000000000000000");
        lines[i] = v.to_string();
    });
    refused(
        &out,
        &merged,
        &[
            "different system_fingerprints",
            "fp_0000000000000000 (e.g. ",
        ],
    );
}

#[test]
fn merge_refuses_conflicting_duplicates_and_drops_identical_ones() {
    let r = runs();
    // A pair scored twice with other numbers: refused, naming the pair and both places.
    let (out, merged, _dir) = merge_edited(2, |lines| {
        let (_, mut v) = first_success(lines);
        v["logprob"] = json!(v["logprob"].as_f64().unwrap() + 0.5);
        lines.push(v.to_string());
    });
    refused(&out, &merged, &["conflicting duplicates", "differ"]);
    // The same pair again with the same numbers (cached or not): dropped, the merge succeeds.
    let (out, merged, _dir) = merge_edited(2, |lines| {
        let (_, mut v) = first_success(lines);
        v["cached"] = json!(true);
        lines.push(v.to_string());
    });
    let stderr = succeeded(&out);
    assert!(stderr.contains("dropped 1 duplicates"), "{stderr}");
    assert_eq!(records(&merged), r.single);
}

#[test]
fn merge_refuses_records_the_input_does_not_ask_for_and_torn_lines() {
    let (out, merged, _dir) = merge_edited(0, |lines| {
        let (_, mut v) = first_success(lines);
        v["id"] = json!("not-in-the-input");
        lines.push(v.to_string());
    });
    refused(
        &out,
        &merged,
        &["records the input does not ask for", "not-in-the-input"],
    );
    let (out, merged, _dir) = merge_edited(1, |lines| lines.push("{\"id\": \"ite".into()));
    refused(
        &out,
        &merged,
        &["not a complete JSON object line", "interrupted shard"],
    );
}

/// The fingerprint (id and parts) of a separate server's single model, from `/ready`.
fn model_fingerprint(base: &str) -> (String, Value) {
    let ready = ready(base);
    let m = &ready["models"][0];
    (
        m["system_fingerprint"].as_str().unwrap().to_string(),
        m["fingerprint"].clone(),
    )
}

/// A scoring request long enough that the decode chunk changes its numbers (168 + 90 tokens on SmolLM2).
fn long_item() -> Value {
    json!({
        "model": "m",
        "prompt": "The history of the Roman Empire spans many centuries, and historians have long debated the causes of its decline. ".repeat(8),
        "response": "Some point to economic troubles, while others emphasise military defeats and political instability. ".repeat(6),
    })
}

#[test]
fn equal_fingerprints_across_processes_give_equal_bits_and_the_decode_chunk_changes_both() {
    let smol = smol_path();
    let start = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--model".as_ref(),
            smol.as_os_str(),
            "--alias".as_ref(),
            "m".as_ref(),
        ];
        args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
        serve_with(&args, None)
    };
    let (a, b, c) = (start(&[]), start(&[]), start(&["--batch-size", "16"]));
    let (fp_a, parts_a) = model_fingerprint(&a.base);
    let (fp_b, _) = model_fingerprint(&b.base);
    let (fp_c, parts_c) = model_fingerprint(&c.base);
    assert!(fp_a.starts_with("fp_"), "{fp_a}");
    assert_eq!(fp_a, fp_b);
    assert_ne!(fp_a, fp_c);
    assert_eq!(parts_a["model_sha256"], SMOL_SHA256);
    assert_eq!(
        (
            parts_a["decode_chunk"].as_u64(),
            parts_c["decode_chunk"].as_u64()
        ),
        (Some(512), Some(16))
    );
    // Same fingerprint, same bits: the whole answer's numbers.
    let numbers = |base: &str| {
        let (status, v) = post_to(base, "/v1/logprobs", &long_item());
        assert_eq!(status, 200, "{v}");
        v["data"][0].clone()
    };
    let (na, nb, nc) = (numbers(&a.base), numbers(&b.base), numbers(&c.base));
    assert_eq!(na["logprobs"], nb["logprobs"]);
    assert_eq!(na["logprob"], nb["logprob"]);
    let per_token = |v: &Value| -> Vec<f64> {
        v["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| f(&t["logprob"]))
            .collect()
    };
    let max_diff = per_token(&na)
        .iter()
        .zip(per_token(&nc))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "decode chunk 512 vs 16: total {} vs {}, largest per-token difference {max_diff} nats",
        na["logprob"], nc["logprob"]
    );
    // Every other place the fingerprint is shown agrees with /ready.
    for (server, fp) in [(&a, &fp_a), (&c, &fp_c)] {
        let models: Value = client()
            .get(format!("{}/v1/models", server.base))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(models["data"][0]["system_fingerprint"], json!(fp));
        let (s, v) = post_to(
            &server.base,
            "/v1/completions",
            &json!({"model": "m", "prompt": "The capital of France is Paris.", "max_tokens": 0, "echo": true, "logprobs": 1}),
        );
        assert_eq!((s, &v["system_fingerprint"]), (200, &json!(fp)), "{v}");
        let (s, v) = post_to(
            &server.base,
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "seed": 1}),
        );
        assert_eq!((s, &v["system_fingerprint"]), (200, &json!(fp)), "{v}");
        for path in ["/v1/completions", "/v1/chat/completions"] {
            let body = if path == "/v1/completions" {
                json!({"model": "m", "prompt": "Once", "max_tokens": 3, "seed": 1, "stream": true})
            } else {
                json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "seed": 1, "stream": true})
            };
            let text = client()
                .post(format!("{}{path}", server.base))
                .json(&body)
                .send()
                .unwrap()
                .text()
                .unwrap();
            let chunks: Vec<Value> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            assert!(chunks.len() >= 2, "{text}");
            assert!(
                chunks.iter().all(|c| c["system_fingerprint"] == json!(fp)),
                "{path}: {text}"
            );
        }
    }
    // `score` on the same file with the same settings writes the same fingerprint as `serve`.
    let scored = runs()
        .single
        .iter()
        .find(|v| v["policy"] == "p0" && v.get("logprob").is_some())
        .unwrap();
    assert_eq!(scored["system_fingerprint"], json!(fp_a), "{scored}");
}

/// The value of `name{model="…"}` in a Prometheus text page.
fn gauge(page: &str, name: &str, model: &str) -> f64 {
    let label = format!("model=\"{model}\"");
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .unwrap_or_else(|| panic!("no {name}{{{label}}} in:\n{page}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// SmolLM2's (waiting, running, KV-cache utilisation) gauges in a page.
fn load_gauges(page: &str) -> (f64, f64, f64) {
    (
        gauge(page, "llama_scorer_requests_waiting", SMOL_FILE),
        gauge(page, "llama_scorer_requests_running", SMOL_FILE),
        gauge(page, "llama_scorer_kv_cache_utilization", SMOL_FILE),
    )
}

fn metrics_page(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn load_gauges_follow_the_queue_and_the_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let smol = smol_path().display().to_string();
    let cfg = write_config(dir.path(), &format!("policies:\n  p0: {{model: {smol}}}\n"));
    let hold = Hold::new(dir.path());
    let s = start_held(&cfg, &hold);
    let page = metrics_page(&s.base);
    assert_eq!(load_gauges(&page), (0.0, 0.0, 0.0));
    let n_ctx = ready(&s.base)["models"][0]["n_ctx"].as_u64().unwrap() as f64;
    // Three long scorings queue up behind the hold.
    let prompts: Vec<String> = (0..3)
        .map(|i| {
            format!("Report {i}. ")
                + &"The committee met again to discuss the budget for the coming year. "
                    .repeat(12 + 4 * i)
        })
        .collect();
    let done = AtomicBool::new(false);
    let (answers, seen) = std::thread::scope(|scope| {
        let requests: Vec<_> = prompts
            .iter()
            .map(|p| {
                let base = &s.base;
                scope.spawn(move || {
                    let (status, v) = post_to(
                        base,
                        "/v1/logprobs",
                        &json!({"model": "p0", "prompt": p, "response": " Agreed."}),
                    );
                    assert_eq!(status, 200, "{v}");
                    v["data"][0].clone()
                })
            })
            .collect();
        wait_ready(&s.base, "three queued", |r| {
            r["models"][0]["queue_depth"] == 3
        });
        assert_eq!(load_gauges(&metrics_page(&s.base)), (3.0, 0.0, 0.0));
        // Watch the gauges while the held work runs.
        let (base, done) = (&s.base, &done);
        let watcher = scope.spawn(move || {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push(load_gauges(&metrics_page(base)));
            }
            seen
        });
        hold.release();
        let answers: Vec<Value> = requests.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        (answers, watcher.join().unwrap())
    });
    // While a job runs it holds its sequence's cells: (prompt + response tokens) / n_ctx, from the answers.
    let shares: Vec<f64> = answers
        .iter()
        .map(|a| {
            (a["prompt_tokens"].as_u64().unwrap() + a["response_tokens"].as_u64().unwrap()) as f64
                / n_ctx
        })
        .collect();
    let running: Vec<_> = seen.iter().filter(|(_, r, _)| *r == 1.0).collect();
    eprintln!(
        "{} scrapes, {} with a job running; shares {shares:?}",
        seen.len(),
        running.len()
    );
    assert!(
        !running.is_empty(),
        "no scrape saw the running job: {seen:?}"
    );
    for &(waiting, r, kv) in &seen {
        assert!(waiting <= 3.0 && (r == 0.0 || r == 1.0), "{seen:?}");
        assert!((0.0..=1.0).contains(&kv), "{kv}");
        if r == 1.0 {
            assert!(
                shares.contains(&kv),
                "kv {kv} is no running job's share {shares:?}"
            );
        } else {
            assert_eq!(kv, 0.0);
        }
    }
    let page = metrics_page(&s.base);
    assert_eq!(load_gauges(&page), (0.0, 0.0, 0.0), "after the work");
    // Scoring answers carry the same load as an ORCA report (Envoy's client-side weighted round robin).
    let r = client()
        .post(format!("{}/v1/logprobs", s.base))
        .json(&json!({"model": "p0", "prompt": "Hello", "response": " world"}))
        .send()
        .unwrap();
    let header = r.headers()["endpoint-load-metrics"]
        .to_str()
        .unwrap()
        .to_string();
    let report: std::collections::HashMap<&str, f64> = header
        .strip_prefix("TEXT ")
        .unwrap_or_else(|| panic!("{header}"))
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k, v.parse().unwrap())
        })
        .collect();
    // Computed after the answer's job ended: nothing waits or runs; four scorings in the last seconds at most.
    assert_eq!(report["named_metrics.requests_waiting"], 0.0, "{header}");
    assert_eq!(report["named_metrics.requests_running"], 0.0, "{header}");
    assert_eq!(
        report["named_metrics.kv_cache_utilization"], 0.0,
        "{header}"
    );
    assert_eq!(report["application_utilization"], 0.0, "{header}");
    assert!(
        (0.0..=4.0 / 5.0).contains(&report["rps_fractional"]),
        "{header}"
    );
    let (fp, _) = model_fingerprint(&s.base);
    assert!(
        page.contains(&format!(
            "llama_scorer_model_info{{model=\"{SMOL_FILE}\",system_fingerprint=\"{fp}\"}} 1"
        )),
        "{page}"
    );
}

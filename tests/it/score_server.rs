//! `score --server URL`: scoring through a running llama-scorer gives the in-process run's output
//! bit for bit, and a server that dies mid-run costs retries — never a lost or duplicated line.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Hold, binary, free_port, ready, serve_on, smol_path, write_config};

fn config(dir: &Path) -> std::path::PathBuf {
    let yaml = format!(
        "policies:\n  p0: {{model: {s}, temperature: 0.5}}\n  hot: {{model: {s}, temperature: 1.5, \
         system_prompt: 'Be brief.'}}\n",
        s = smol_path().display()
    );
    write_config(dir, &yaml)
}

fn input(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("in.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| {
            if i % 3 == 2 {
                format!(
                    r#"{{"id": {i}, "messages": [{{"role": "user", "content": "Count to {i}."}}], "response": "1 2 {i}"}}"#
                )
            } else {
                // Pairs of items share a prompt: they travel in one request with one affinity key.
                format!(
                    r#"{{"id": {i}, "prompt": "Question {}: what comes next?", "response": " Answer {i}."}}"#,
                    i / 2
                )
            }
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The output's lines keyed by (id, policy), without `cached` (where an answer came from).
fn by_pair(path: &Path) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        v.as_object_mut().unwrap().remove("cached");
        let key = format!("{}/{}", v["id"], v["policy"]);
        assert!(out.insert(key.clone(), v).is_none(), "duplicate line {key}");
    }
    out
}

fn score(config: &Path, input: &Path, output: &Path, server: Option<&str>) -> std::process::Child {
    let mut cmd = binary();
    cmd.args([
        "score",
        "--no-progress",
        "--threads",
        "2",
        "--token-logprobs",
        "--config",
    ])
    .arg(config)
    .arg("--input")
    .arg(input)
    .arg("--output")
    .arg(output)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(url) = server {
        cmd.args(["--server", url, "--concurrency", "4", "--retries", "12"]);
    }
    cmd.spawn().unwrap()
}

fn finish(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scoring_through_a_server_equals_the_in_process_run_even_when_the_server_dies_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let (config, input) = (config(dir.path()), input(dir.path(), 12));
    let local_out = dir.path().join("local.jsonl");
    finish(score(&config, &input, &local_out, None));

    // The server starts held: the run's first requests queue there, then it is killed with them in
    // flight, and a new server comes up on the same port while the run retries.
    let port = free_port();
    let args = ["--config".as_ref(), config.as_os_str()];
    let hold = Hold::new(dir.path());
    let first = serve_on(port, &args, &[], Some(&hold), Stdio::null());
    let url = first.base.clone();
    let remote_out = dir.path().join("remote.jsonl");
    let run = score(&config, &input, &remote_out, Some(&url));
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready(&url)["models"][0]["queue_depth"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the run never reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first); // killed with work queued and requests open
    hold.release();
    let _second = serve_on(port, &args, &[], None, Stdio::null());
    finish(run);

    let (local, remote) = (by_pair(&local_out), by_pair(&remote_out));
    assert_eq!(local.len(), 24, "12 ids × 2 policies");
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        remote.keys().collect::<Vec<_>>()
    );
    for (key, l) in &local {
        // Every number, bit for bit (serde_json parses both files' floats the same way).
        assert_eq!(l, &remote[key], "{key}");
    }
}

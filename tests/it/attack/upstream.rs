//! A remote policy's upstream that misbehaves: an answer far larger than any scoring answer, a redirect
//! elsewhere, an address that does not answer. Each is a 502 naming the policy (never its URL), read
//! within the policy's `max_answer_bytes`, while `/health` and local clients stay served. Credentials in
//! `base_url` stop start-up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::json;

use super::harness::{Target, TargetOptions, one_at_a_time, post_json, scaled};
use crate::common::{binary, free_port, write_config};

/// How the hostile upstream answers every request.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a JSON body of this many bytes, sent chunked (no length declared) in 64 KiB pieces.
    Huge(usize),
    /// 307 to another address (which must never be called).
    Redirect,
}

/// A loopback upstream answering every connection as `answer`, from a thread of its own; its address.
fn hostile_upstream(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn, answer));
        }
    });
    addr
}

/// Reads one request (headers and declared body) and answers it.
fn serve(mut conn: TcpStream, answer: Answer) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    match answer {
        Answer::Redirect => {
            let _ = conn.write_all(
                b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        Answer::Huge(bytes) => {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            );
            let piece = vec![b' '; 64 << 10];
            let mut sent = 0;
            while sent < bytes {
                let head = format!("{:x}\r\n", piece.len());
                if conn.write_all(head.as_bytes()).is_err()
                    || conn.write_all(&piece).is_err()
                    || conn.write_all(b"\r\n").is_err()
                {
                    return; // the server stopped reading: what the bound is for
                }
                sent += piece.len();
            }
            let _ = conn.write_all(b"0\r\n\r\n");
        }
    }
}

/// A target serving `smol` locally and `up` (a llama_scorer remote at `addr`) with `extra` settings.
fn target_with_remote(addr: &str, extra: &str) -> Target {
    Target::start(TargetOptions {
        policies_yaml: format!(
            "  up: {{provider: llama_scorer, model: smol, base_url: 'http://{addr}', max_retries: 0{extra}}}\n"
        ),
        ..TargetOptions::default()
    })
}

/// An answer larger than `max_answer_bytes` (1 GiB sent, the default 64 MiB bound; 200 MiB against a
/// 4 MiB bound inside `make test`) is cut at the bound: 502 `upstream_answer_too_large` naming the policy,
/// from several clients at once, memory far below the answer's size.
#[test]
fn attack_upstream_an_oversized_answer_is_cut_at_the_bound() {
    let _one = one_at_a_time();
    let addr = hostile_upstream(Answer::Huge(scaled(200 << 20, 1 << 30)));
    let extra = if super::harness::full() {
        String::new()
    } else {
        ", max_answer_bytes: 4194304".into()
    };
    let mut target = target_with_remote(&addr, &extra);
    let watch = target.watch();
    let body = json!({"model": "up", "prompt": "Hi", "response": " there"});
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let (code, e) = post_json(
                    &target.running.base,
                    "/v1/logprobs",
                    &body,
                    Duration::from_secs(120),
                )
                .unwrap();
                assert_eq!(code, 502, "{e}");
                assert_eq!(e["error"]["code"], "upstream_answer_too_large", "{e}");
                let message = e["error"]["message"].as_str().unwrap();
                assert!(message.contains("`up`") && !message.contains(&addr), "{e}");
            });
        }
    });
    let report = watch.finish();
    assert!(target.alive());
    // Four answers cut at 64 MiB at most (4 MiB inside `make test`) above the server's own footprint.
    report.assert_held(
        "oversized upstream answer",
        if super::harness::full() { 900 } else { 600 },
    );
}

/// A redirect is not followed: 502 `upstream_redirect` naming the policy, nothing sent to the new address.
#[test]
fn attack_upstream_a_redirect_is_refused_not_followed() {
    let _one = one_at_a_time();
    let addr = hostile_upstream(Answer::Redirect);
    let mut target = target_with_remote(&addr, "");
    let watch = target.watch();
    for path in ["/v1/logprobs", "/v1/completions"] {
        let body = if path == "/v1/logprobs" {
            json!({"model": "up", "prompt": "Hi", "response": " there"})
        } else {
            json!({"model": "up", "prompt": "Hi", "max_tokens": 1})
        };
        let (code, e) =
            post_json(&target.running.base, path, &body, Duration::from_secs(60)).unwrap();
        assert_eq!(code, 502, "{path}: {e}");
        assert_eq!(e["error"]["code"], "upstream_redirect", "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`up`") && !message.contains("steal"),
            "{e}"
        );
    }
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("upstream redirect", 600);
}

/// An upstream that does not answer is a 502 naming the policy; its internal address is not shown.
#[test]
fn attack_upstream_an_unreachable_upstream_is_named_by_its_policy_not_its_url() {
    let _one = one_at_a_time();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let target = target_with_remote(&addr, "");
    let body = json!({"model": "up", "prompt": "Hi", "response": " there"});
    let (code, e) = post_json(
        &target.running.base,
        "/v1/logprobs",
        &body,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(code, 502, "{e}");
    assert_eq!(e["error"]["code"], "upstream_unreachable", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("`up`"), "{e}");
    assert!(
        !message.contains(&port.to_string()) && !message.contains("127.0.0.1"),
        "{e}"
    );
}

/// `user:pass@` in a remote's `base_url` stops start-up, pointing at `api_key_env`, without printing the
/// password.
#[test]
fn attack_upstream_credentials_in_base_url_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "policies:\n  up: {provider: llama_scorer, model: smol, base_url: 'http://me:hunter2@127.0.0.1:1'}\n",
    );
    let out = binary()
        .args(["serve", "--port", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policies.up.base_url") && stderr.contains("api_key_env"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

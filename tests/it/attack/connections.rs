//! Connection-level attacks: slow request heads, many idle connections under a tight open-files limit,
//! stalled bodies, an over-limit `Content-Length`, DNS rebinding (a foreign `Host` with a matching
//! `Origin`), CORS preflights, a stream past the request timeout, a client that stops reading its answer
//! and a lower-case `bearer` scheme. Each asserts the documented answer while the watcher checks the
//! server holds.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Target, TargetOptions, one_at_a_time, scaled};

/// The test process opens thousands of sockets itself: raise its own soft open-files limit, and return
/// how many sockets it may open.
fn own_socket_budget() -> usize {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
    }
    (l.rlim_cur as usize).saturating_sub(256)
}

/// Opens `n` connections to `addr`, each having sent `first` (nothing when empty).
fn open_many(addr: &str, n: usize, first: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            if !first.is_empty() {
                s.write_all(first).unwrap();
            }
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// Whether the server has closed `s` (end of stream or reset); any bytes it sent are appended to `got`.
fn closed(s: &mut TcpStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits up to `limit` for the server to close every socket (sending `trickle`, if any, every half
/// second); returns what each received and when it was closed.
fn wait_closed(
    sockets: &mut [TcpStream],
    trickle: &[u8],
    limit: Duration,
) -> Vec<(Vec<u8>, Option<Duration>)> {
    let started = Instant::now();
    let mut seen: Vec<(Vec<u8>, Option<Duration>)> = vec![(Vec::new(), None); sockets.len()];
    let mut last_trickle = Instant::now();
    while started.elapsed() < limit && seen.iter().any(|(_, at)| at.is_none()) {
        let send = !trickle.is_empty() && last_trickle.elapsed() >= Duration::from_millis(500);
        if send {
            last_trickle = Instant::now();
        }
        for (s, (got, at)) in sockets.iter_mut().zip(seen.iter_mut()) {
            if at.is_some() {
                continue;
            }
            if (send && s.write_all(trickle).is_err()) || closed(s, got) {
                *at = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One raw HTTP/1.1 exchange on a fresh connection: the status and the whole answer text.
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text)
}

/// The JSON body of a raw answer.
fn body_json(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// A header's value in a raw answer (names compared case-insensitively).
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer
        .split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[test]
fn attack_slow_request_heads_are_cut_at_the_header_timeout() {
    let _one = one_at_a_time();
    let n = scaled(50, 1500).min(own_socket_budget());
    let mut target = Target::start(TargetOptions {
        server_yaml: "  header_read_timeout_secs: 2\n".into(),
        ..TargetOptions::default()
    });
    let watch = target.watch();
    let mut sockets = open_many(&target.addr, n, b"GET /health HTTP/1.1\r\nX-Slow: ");
    // One byte every half second keeps each head arriving, never complete.
    let seen = wait_closed(&mut sockets, b"a", Duration::from_secs(20));
    let report = watch.finish();
    let open = seen.iter().filter(|(_, at)| at.is_none()).count();
    let latest = seen.iter().filter_map(|(_, at)| *at).max().unwrap();
    eprintln!("slow heads: {n} connections, all closed after at most {latest:?}");
    assert_eq!(
        open, 0,
        "{open} of {n} slow heads were still open after 20 s"
    );
    assert!(
        seen.iter().all(|(got, _)| got.is_empty()),
        "a slow head was answered"
    );
    assert!(target.alive());
    report.assert_held("slow heads", 1024);
}

#[test]
fn attack_idle_connections_past_the_open_files_limit_do_not_lock_clients_out() {
    let _one = one_at_a_time();
    // Under a soft and hard limit of 1024 the server keeps 896 connections; more than that many idle
    // ones must not lock out /health or another client (the oldest idle ones are closed to make room).
    let n = scaled(1100, 3000).min(own_socket_budget());
    let mut target = Target::start(TargetOptions {
        nofile: Some(1024),
        ..TargetOptions::default()
    });
    let watch = target.watch();
    let started = Instant::now();
    let mut sockets = open_many(&target.addr, n, b"");
    let opened = started.elapsed();
    let mut peak_fds = 0;
    let hold = Duration::from_secs(scaled(3, 15) as u64);
    let until = Instant::now() + hold;
    while Instant::now() < until {
        peak_fds = peak_fds.max(open_fds(target.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = watch.finish();
    let mut got = Vec::new();
    let cut = sockets
        .iter_mut()
        .map(|s| closed(s, &mut got))
        .filter(|&c| c)
        .count();
    eprintln!(
        "idle connections: {n} opened in {opened:?}, {cut} closed by the server to make room, \
         server descriptors peaked at {peak_fds}"
    );
    assert!(peak_fds < 1024, "the server reached its open-files limit");
    assert!(
        cut >= n - 896,
        "only {cut} of {n} idle connections were closed"
    );
    assert!(
        !target.log_text().contains("Too many open files"),
        "{}",
        target.log_text()
    );
    assert!(target.alive());
    report.assert_held("idle connections", 1024);
}

#[test]
fn attack_stalled_bodies_hold_no_slot_and_get_408() {
    let _one = one_at_a_time();
    // Few request slots, more stalled uploads than slots: were bodies read inside a slot, every other
    // client would get 503 until the uploads were cut.
    let n = scaled(200, 1100).min(own_socket_budget());
    let mut target = Target::start(TargetOptions {
        server_yaml: "  body_timeout_secs: 3\n  max_concurrent_requests: 16\n".into(),
        nofile: Some(1024),
        ..TargetOptions::default()
    });
    let watch = target.watch();
    let head = format!(
        "POST /v1/logprobs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"model\": ",
        target.addr
    );
    let mut sockets = open_many(&target.addr, n, head.as_bytes());
    let seen = wait_closed(&mut sockets, b"", Duration::from_secs(20));
    let report = watch.finish();
    let answered_408 = seen
        .iter()
        .filter(|(got, _)| {
            let text = String::from_utf8_lossy(got);
            text.starts_with("HTTP/1.1 408") && body_json(&text)["error"]["code"] == "body_timeout"
        })
        .count();
    let unanswered = seen.iter().filter(|(got, _)| got.is_empty()).count();
    let still_open = seen.iter().filter(|(_, at)| at.is_none()).count();
    eprintln!(
        "stalled bodies: {n} uploads, {answered_408} answered 408 body_timeout, {unanswered} closed \
         to make room"
    );
    assert_eq!(still_open, 0, "stalled uploads still open after 20 s");
    assert_eq!(answered_408 + unanswered, n, "other answers: {seen:?}");
    if n <= 896 {
        assert_eq!(answered_408, n);
    } else {
        assert!(answered_408 > 0);
    }
    assert!(target.alive());
    report.assert_held("stalled bodies", 1024);
}

#[test]
fn attack_an_over_limit_content_length_is_refused_from_the_header() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions::default());
    let watch = target.watch();
    for _ in 0..scaled(20, 2000) {
        // No body is sent: the answer must come from the header alone.
        let started = Instant::now();
        let (status, answer) = raw(
            &target.addr,
            &format!(
                "POST /v1/logprobs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: 10737418240\r\n\r\n",
                target.addr
            ),
        );
        assert_eq!(status, 413, "{answer}");
        let e = &body_json(&answer)["error"];
        assert_eq!(e["code"], "body_too_large", "{answer}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("server.max_body_bytes")
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("over-limit Content-Length", 1024);
}

#[test]
fn attack_dns_rebinding_gets_403_and_loopback_names_pass() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions::default());
    let watch = target.watch();
    let port = target.addr.rsplit(':').next().unwrap().to_string();
    let body = r#"{"model": "smol", "prompt": "a", "response": " b"}"#;
    for _ in 0..scaled(5, 200) {
        for path in ["/ready", "/v1/models", "/"] {
            let (status, answer) = raw(
                &target.addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\n\
                     Origin: http://evil.example:{port}\r\nConnection: close\r\n\r\n"
                ),
            );
            assert_eq!(status, 403, "{path}: {answer}");
            let e = &body_json(&answer)["error"];
            assert_eq!(e["code"], "host_not_allowed");
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("server.allowed_hosts")
            );
        }
        let (status, answer) = raw(
            &target.addr,
            &format!(
                "POST /v1/logprobs HTTP/1.1\r\nHost: evil.example:{port}\r\n\
                 Origin: http://evil.example:{port}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(status, 403, "{answer}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
    ] {
        let (status, answer) = raw(
            &target.addr,
            &format!(
                "POST /v1/logprobs HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(status, 200, "{host}: {answer}");
    }
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("DNS rebinding", 1024);

    // A listed name is answered; `*` answers any.
    let listed = Target::start(TargetOptions {
        server_yaml: "  allowed_hosts: [scorer.test]\n".into(),
        ..TargetOptions::default()
    });
    let get = |addr: &str, host: &str| {
        raw(
            addr,
            &format!("GET /ready HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .0
    };
    assert_eq!(get(&listed.addr, "scorer.test:1"), 200);
    assert_eq!(get(&listed.addr, "localhost:1"), 200);
    assert_eq!(get(&listed.addr, "evil.example"), 403);
    drop(listed);
    let any = Target::start(TargetOptions {
        server_yaml: "  allowed_hosts: ['*']\n".into(),
        ..TargetOptions::default()
    });
    assert_eq!(get(&any.addr, "evil.example"), 200);
}

#[test]
fn attack_cors_preflight_is_answered_for_listed_origins_only() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions {
        server_yaml: "  allowed_origins: ['https://app.example']\n".into(),
        ..TargetOptions::default()
    });
    let watch = target.watch();
    let addr = target.addr.clone();
    for _ in 0..scaled(5, 500) {
        let (status, answer) = raw(
            &addr,
            &format!(
                "OPTIONS /v1/logprobs HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://app.example\r\n\
                 Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: content-type, authorization\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!((200..300).contains(&status), "{answer}");
        assert_eq!(
            header(&answer, "access-control-allow-origin"),
            Some("https://app.example"),
            "{answer}"
        );
        let methods = header(&answer, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("POST"), "{answer}");
        let headers = header(&answer, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            headers.contains("content-type") && headers.contains("authorization"),
            "{answer}"
        );
        let (status, answer) = raw(
            &addr,
            &format!(
                "OPTIONS /v1/logprobs HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\
                 Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(status, 403, "{answer}");
        assert_eq!(header(&answer, "access-control-allow-origin"), None);
    }
    // The real request from the listed page is answered, readable by it.
    let body = r#"{"model": "smol", "prompt": "a", "response": " b"}"#;
    let (status, answer) = raw(
        &addr,
        &format!(
            "POST /v1/logprobs HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://app.example\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("CORS preflight", 1024);
}

#[test]
fn attack_a_stream_past_the_request_timeout_ends_with_an_error_event() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions {
        // A second inference context: the other client's scoring does not wait behind the generation.
        server_yaml: "  request_timeout_secs: 4\n  parallel: 2\n".into(),
        ..TargetOptions::default()
    });
    let watch = target.watch();
    for _ in 0..scaled(1, 5) {
        // Thousands of sampled tokens at 2 threads take far longer than 4 s; EOS is biased away.
        let started = Instant::now();
        let r = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .post(format!("{}/v1/completions", target.running.base))
            .json(&json!({"model": "smol", "prompt": "Once upon a time", "max_tokens": 4000,
                          "temperature": 1.0, "stream": true, "logit_bias": {"2": -100, "0": -100}}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().unwrap();
        let took = started.elapsed();
        let events: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert!(events.len() >= 2, "{text}");
        assert_eq!(events[events.len() - 1], "[DONE]", "{text}");
        let last: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
        assert_eq!(last["error"]["code"], "request_timeout", "{text}");
        assert!(
            took < Duration::from_secs(10),
            "the stream ran {took:?} past a 4 s timeout"
        );
    }
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("stream past the deadline", 1024);
}

#[test]
fn attack_lower_case_bearer_is_accepted_and_log_lines_carry_one_message() {
    let _one = one_at_a_time();
    let mut target = Target::start(TargetOptions {
        server_yaml: "  api_keys: [k-attack-1]\n".into(),
        env: vec![("LLAMA_SCORER_LOG_FORMAT".into(), "json".into())],
        ..TargetOptions::default()
    });
    let addr = target.addr.clone();
    for (auth, want) in [
        ("bearer k-attack-1", 200),
        ("BEARER k-attack-1", 200),
        ("Bearer k-attack-1", 200),
        ("Basic k-attack-1", 401),
        ("bearer wrong", 401),
    ] {
        let (status, answer) = raw(
            &addr,
            &format!(
                "GET /v1/models HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
                 Connection: close\r\n\r\n"
            ),
        );
        assert_eq!(status, want, "{auth}: {answer}");
    }
    // A refusal that logs a reason: its JSON line has one `message`.
    let (status, _) = raw(
        &addr,
        &format!(
            "GET /health HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403);
    // The refusal is logged as it is answered; the log file may trail the answer a little.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = target.log_text();
    while !log.contains("cross-origin") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        log = target.log_text();
    }
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("cross-origin")).collect();
    assert!(!refused.is_empty(), "{log}");
    for line in log.lines().filter(|l| l.starts_with('{')) {
        assert!(
            line.matches("\"message\":").count() <= 1,
            "a log line carries `message` twice: {line}"
        );
    }
    assert!(target.alive());
}

#[test]
fn attack_a_client_that_stops_reading_is_closed_at_the_answer_timeout() {
    let _one = one_at_a_time();
    // Answer timeout = request timeout + idle timeout = 31 s.
    let mut target = Target::start(TargetOptions {
        server_yaml: "  request_timeout_secs: 30\n  idle_timeout_secs: 1\n".into(),
        ..TargetOptions::default()
    });
    let watch = target.watch();
    // One item of 500 response tokens with 20 alternatives each, scored once here (however slow the
    // machine, within the request timeout) so that the response cache holds it.
    let item = json!({"prompt": "Hi", "response": " river".repeat(500)});
    let mut warm = item.clone();
    warm["model"] = json!("smol");
    warm["top_logprobs"] = json!(20);
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .post(format!("{}/v1/logprobs", target.running.base))
        .json(&warm)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let one_item = r.bytes().unwrap().len();
    // 32 copies, all from the cache: ~44 MB at once, more than the kernel's send and receive buffers
    // hold on loopback, so the server's writes block on a client that never reads.
    let body = json!({"model": "smol", "items": vec![item; 32], "top_logprobs": 20}).to_string();
    let addr = target.addr.clone();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        format!(
            "POST /v1/logprobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let sent = Instant::now();
    s.set_nonblocking(true).unwrap();
    // Read nothing until the answer timeout has passed, then drain: the server must have closed the
    // connection before sending the whole answer.
    assert!(
        one_item * 32 > 16 << 20,
        "{one_item} bytes per item: too small to fill the buffers"
    );
    std::thread::sleep(Duration::from_secs(34));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = false;
    while Instant::now() < deadline {
        if closed(&mut s, &mut got) {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = String::from_utf8_lossy(&got[..got.len().min(4096)]).into_owned();
    assert!(
        ended,
        "the connection was still open {:?} after a client stopped reading",
        sent.elapsed()
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let declared: usize = header(&text, "content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(usize::MAX);
    let head = text.find("\r\n\r\n").unwrap() + 4;
    assert!(
        got.len() - head < declared,
        "the whole answer arrived ({} bytes): the client's stop was never tested",
        got.len()
    );
    let report = watch.finish();
    assert!(target.alive());
    report.assert_held("a client that stops reading", 2048);
}

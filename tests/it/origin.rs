//! Browser safety: requests whose `Origin` is not the server's own (nor in `server.allowed_origins`) get 403
//! in the error shape on every route; requests without `Origin` are unaffected.

use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

use crate::common::*;

/// Sends `request` with `origin` (if any); returns the status and the body (JSON, or the raw text).
fn send(request: RequestBuilder, origin: Option<&str>) -> (u16, Value) {
    let request = match origin {
        Some(o) => request.header("Origin", o),
        None => request,
    };
    let r = request.send().expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every kind of route: native and compat API under both prefixes, probes, metrics, the page, and 404s.
fn requests(base: &str) -> Vec<(&'static str, RequestBuilder)> {
    let c = client();
    let score = json!({"model": SMOL, "prompt": "Hi", "response": " there"});
    let completion =
        json!({"model": SMOL, "prompt": "Hi", "max_tokens": 0, "echo": true, "logprobs": 1});
    let chat =
        json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    vec![
        (
            "logprobs",
            c.post(format!("{base}/v1/logprobs")).json(&score),
        ),
        (
            "fireworks logprobs",
            c.post(format!("{base}/inference/v1/logprobs")).json(&score),
        ),
        (
            "completions",
            c.post(format!("{base}/v1/completions")).json(&completion),
        ),
        (
            "chat",
            c.post(format!("{base}/inference/v1/chat/completions"))
                .json(&chat),
        ),
        ("models", c.get(format!("{base}/v1/models"))),
        ("health", c.get(format!("{base}/health"))),
        ("ready", c.get(format!("{base}/ready"))),
        ("metrics", c.get(format!("{base}/metrics"))),
        ("page", c.get(format!("{base}/"))),
        ("asset", c.get(format!("{base}/app.js"))),
        (
            "preflight",
            c.request(reqwest::Method::OPTIONS, format!("{base}/v1/logprobs")),
        ),
        ("404", c.get(format!("{base}/no/such/route"))),
    ]
}

fn assert_refused(name: &str, origin: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 403, "{name} with Origin {origin}: {body}");
    let e = &body["error"];
    assert_eq!(e["object"], "error", "{name}: {body}");
    assert_eq!(e["type"], "permission_error", "{name}: {body}");
    assert_eq!(e["code"], "origin_not_allowed", "{name}: {body}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains(origin),
        "{name}: message {message:?} does not name {origin}"
    );
}

#[test]
fn foreign_and_null_origins_are_refused_on_every_route() {
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:1",
        "https://localhost",
    ] {
        for (name, request) in requests(server()) {
            assert_refused(name, origin, send(request, Some(origin)));
        }
    }
}

#[test]
fn requests_without_origin_or_from_the_server_itself_are_unaffected() {
    let own = server().to_string();
    let with_port_only = own.replace("127.0.0.1", "localhost");
    for origin in [None, Some(own.as_str())] {
        for (name, request) in requests(server()) {
            let (status, body) = send(request, origin);
            let expected = match name {
                "404" => 404,
                "preflight" => 405,
                _ => 200,
            };
            assert_eq!(status, expected, "{name} with Origin {origin:?}: {body}");
        }
    }
    // Same-origin is judged against the Host the request was addressed to.
    let port = own.rsplit(':').next().unwrap();
    let (status, body) = send(
        client()
            .get(format!("{own}/v1/models"))
            .header("Host", format!("localhost:{port}")),
        Some(&with_port_only),
    );
    assert_eq!(status, 200, "{body}");
}

/// `serve --config FILE` plus `extra` arguments, on a free port; waits for /health.
fn start_with(config: &std::path::Path, extra: &[&str]) -> Running {
    let mut args = vec!["--config".as_ref(), config.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    serve_with(&args, None)
}

#[test]
fn allowed_origins_from_the_config_file_and_the_command_line_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "server: {{allowed_origins: ['https://app.example', 'HTTP://Tools.Example:80']}}\n\
             policies:\n  {SMOL}: {{model: {}}}\n",
            smol_path().display()
        ),
    );
    let from_file = start_with(&config, &[]);
    let models =
        |base: &str, origin: &str| send(client().get(format!("{base}/v1/models")), Some(origin));
    assert_eq!(models(&from_file.base, "https://app.example").0, 200);
    assert_eq!(models(&from_file.base, "http://tools.example").0, 200);
    let score = json!({"model": SMOL, "prompt": "Hi", "response": " there"});
    let (status, body) = send(
        client()
            .post(format!("{}/v1/logprobs", from_file.base))
            .json(&score),
        Some("https://app.example"),
    );
    assert_eq!(status, 200, "{body}");
    assert_refused(
        "models",
        "http://app.example",
        models(&from_file.base, "http://app.example"),
    );
    assert_refused(
        "models",
        "https://app.example:8443",
        models(&from_file.base, "https://app.example:8443"),
    );
    drop(from_file);

    // The command line replaces the file's list.
    let from_flag = start_with(&config, &["--allowed-origin", "http://other.example:3000"]);
    assert_eq!(models(&from_flag.base, "http://other.example:3000").0, 200);
    assert_refused(
        "models",
        "https://app.example",
        models(&from_flag.base, "https://app.example"),
    );
}

#[test]
fn a_malformed_allowed_origin_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "server: {{allowed_origins: ['https://app.example/path']}}\npolicies:\n  {SMOL}: {{model: {}}}\n",
            smol_path().display()
        ),
    );
    let out = binary()
        .args(["serve", "--port", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.allowed_origins") && stderr.contains("https://app.example/path"),
        "{stderr}"
    );
}

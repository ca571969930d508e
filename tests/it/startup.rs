//! Start-up that scales to big models: the port answers while the models load. `/health` is 503 `loading`
//! (as llama.cpp's server answers) and 200 once they are in, `/ready` lists each file's progress, the API is
//! 503 with `Retry-After`; a signal while loading ends the process at once. The loading is held by the
//! engine's test hook (`LOAD_HOLD_ENV`), so nothing depends on how fast the machine loads a model.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Running, client, free_port, smol_path, spawn_serve};

/// GETs `path`, retrying while the port does not answer yet; the status and the JSON body.
fn get_when_up(base: &str, path: &str) -> (u16, Option<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client().get(format!("{base}{path}")).send() {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                return (status, retry, r.json().unwrap());
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "the port never answered: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `serve` on SmolLM2 (policy `smol`) with its model's loading held until the returned file is removed.
fn serve_held_loading(dir: &std::path::Path) -> (Running, std::path::PathBuf) {
    let hold = dir.join("hold-load");
    std::fs::File::create(&hold).unwrap();
    let model = smol_path();
    let server = spawn_serve(
        free_port(),
        &[
            "--model".as_ref(),
            model.as_os_str(),
            "--alias".as_ref(),
            "smol".as_ref(),
        ],
        &[(llama_scorer::engine::LOAD_HOLD_ENV, hold.to_str().unwrap())],
        Stdio::null(),
    );
    (server, hold)
}

#[test]
fn the_port_answers_while_the_models_load_and_serves_once_they_are_in() {
    let dir = tempfile::tempdir().unwrap();
    let (server, hold) = serve_held_loading(dir.path());
    let model = smol_path();
    let base = &server.base;

    let (status, retry, body) = get_when_up(base, "/health");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "loading", "{body}");
    assert!(retry.is_some(), "a loading answer says when to retry");

    let (status, _, ready) = get_when_up(base, "/ready");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    let files = ready["loading"]
        .as_array()
        .expect("loading lists the files");
    assert_eq!(files.len(), 1, "{ready}");
    assert_eq!(files[0]["path"], model.to_str().unwrap());
    assert_eq!(files[0]["state"], "loading", "{ready}");
    assert!(files[0]["seconds"].as_f64().unwrap() >= 0.0);

    let r = client()
        .post(format!("{base}/v1/logprobs"))
        .json(&json!({"model": "smol", "prompt": "Hi", "response": " there"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "loading", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0 of 1"),
        "{body}"
    );

    std::fs::remove_file(&hold).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = loop {
        let (status, _, ready) = get_when_up(base, "/ready");
        if status == 200 {
            break ready;
        }
        assert!(Instant::now() < deadline, "never ready: {ready}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ready["models"][0]["path"], model.to_str().unwrap());
    let (status, _, health) = get_when_up(base, "/health");
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
    let r = client()
        .post(format!("{base}/v1/logprobs"))
        .json(&json!({"model": "smol", "prompt": "Hi", "response": " there"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let scored: Value = r.json().unwrap();
    assert!(
        scored["data"][0]["logprob"].as_f64().unwrap() < 0.0,
        "{scored}"
    );
}

#[test]
fn a_signal_while_loading_ends_the_process_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _hold) = serve_held_loading(dir.path());
    let (status, _, _) = get_when_up(&server.base, "/health");
    assert_eq!(status, 503);
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The load stays held: the process must not wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

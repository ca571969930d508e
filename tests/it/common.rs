//! A real server on the real test models, started once per test binary and shared by its tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use std::time::Instant;

use llama_scorer::config::{Config, PolicyConfig};
use llama_scorer::server::Server;
use serde_json::{Value, json};

pub const SMOL: &str = "smol";
pub const SMOL_T05: &str = "smol-t05";
pub const SMOL_CLONE: &str = "smol-clone";
pub const SMOL_SYSTEM: &str = "smol-system";
pub const SMOL_SHORT: &str = "smol-short";
pub const GEMMA: &str = "gemma";
pub const GEMMA_CHAT: &str = "gemma-chat";

/// Gemma 3's published chat template (its GGUF here carries none), which writes `bos_token` itself.
pub const GEMMA3_TEMPLATE: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";

#[path = "../support/models.rs"]
mod models;
pub use models::model_path;

pub fn smol_path() -> PathBuf {
    model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn gemma_path() -> PathBuf {
    model_path("gemma-3-270m-q4_k_m.gguf")
}

pub fn policy(name: &str, path: PathBuf) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        model_path: path,
        temperature: 1.0,
        seed: None,
        n_ctx: None,
        n_gpu_layers: -1,
        system_prompt: None,
        chat_template: None,
    }
}

pub fn base_config(policies: Vec<PolicyConfig>) -> Config {
    // The server's own defaults, with a free port and smaller caches.
    let mut cfg = Config::with_defaults(policies);
    cfg.http.port = 0;
    cfg.prefix_cache_bytes = 64 << 20;
    cfg.cache.max_bytes = 64 << 20;
    cfg
}

/// Starts a server for `cfg` on a thread of its own and returns its base URL; it lives until the
/// test binary exits.
pub fn spawn_server(cfg: Config) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let server = Server::start(cfg).await.expect("server starts");
            tx.send(server.local_addr().unwrap()).unwrap();
            server.serve(std::future::pending()).await.unwrap();
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("server started");
    let base = format!("http://{addr}");
    wait_loaded(&base);
    base
}

/// Waits until `/health` is 200: the port answers at once, with 503 `loading` until the models are in.
pub fn wait_loaded(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Ok(r) = client().get(format!("{base}/health")).send()
            && r.status().is_success()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{base} never finished loading its models");
}

/// The shared server: SmolLM2 (BPE, no BOS) and Gemma 3 (SentencePiece, BOS) under several policies.
pub fn server() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut t05 = policy(SMOL_T05, smol_path());
        t05.temperature = 0.5;
        let mut system = policy(SMOL_SYSTEM, smol_path());
        system.system_prompt = Some("You are an unhelpful assistant.".into());
        let mut short = policy(SMOL_SHORT, smol_path());
        short.n_ctx = Some(32);
        let mut gemma_chat = policy(GEMMA_CHAT, gemma_path());
        gemma_chat.chat_template = Some(GEMMA3_TEMPLATE.into());
        spawn_server(base_config(vec![
            policy(SMOL, smol_path()),
            policy(SMOL_CLONE, smol_path()),
            t05,
            system,
            short,
            policy(GEMMA, gemma_path()),
            gemma_chat,
        ]))
    })
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// POSTs a JSON body to `path` on `base`; returns the status and the parsed body.
pub fn post_to(base: &str, path: &str, body: &Value) -> (u16, Value) {
    post(client().post(format!("{base}{path}")).json(body))
}

/// POSTs raw bytes (JSON or not, no content type) to `path` on `base`; returns the status and the body.
pub fn post_raw(base: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    post(client().post(format!("{base}{path}")).body(body))
}

/// Sends a request; returns the status and the body parsed as JSON (else `{"raw": text}`).
fn post(request: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = request.send().expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, v)
}

/// The server's `/ready` body (model, cache and prefix-reuse counters), whatever its status.
pub fn ready(base: &str) -> Value {
    client()
        .get(format!("{base}/ready"))
        .send()
        .expect("request sent")
        .json()
        .expect("/ready answers JSON")
}

/// POSTs to the shared server's `/v1/logprobs`.
pub fn logprobs(body: &Value) -> (u16, Value) {
    post_to(server(), "/v1/logprobs", body)
}

/// POSTs to `/v1/logprobs` and insists on 200, returning the body.
pub fn ok(body: &Value) -> Value {
    let (status, v) = logprobs(body);
    assert_eq!(status, 200, "{body}\n→ {v:#}");
    v
}

/// The first item's result.
pub fn item(body: &Value) -> Value {
    ok(body)["data"][0].clone()
}

/// The token entries of an item result.
pub fn tokens(item: &Value) -> Vec<Value> {
    item["logprobs"]["content"].as_array().unwrap().clone()
}

/// A token entry's exact bytes.
pub fn bytes_of(token: &Value) -> Vec<u8> {
    token["bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect()
}

pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

// --- the binary, run as a separate process -----------------------------------------------------------

/// The llama-scorer binary built for these tests.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llama-scorer"))
}

/// Writes `yaml` as `config.yaml` in `dir`.
pub fn write_config(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let p = dir.join("config.yaml");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    p
}

/// A running server process, killed and reaped on drop.
pub struct Running {
    pub child: Child,
    pub base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `serve --config` (2 threads, a free port) and waits for /health.
pub fn start(config: &Path) -> Running {
    start_with(config, None)
}

/// A file that, while it exists, holds a server's inference threads (see `engine::HOLD_ENV`): work queues
/// up and nothing is computed, whatever the machine's speed. Created held; `release` removes it.
pub struct Hold(pub std::path::PathBuf);

impl Hold {
    /// A held gate in `dir`.
    pub fn new(dir: &Path) -> Hold {
        let path = dir.join("hold");
        std::fs::File::create(&path).unwrap();
        Hold(path)
    }

    /// Lets the inference threads take work again.
    pub fn release(&self) {
        std::fs::remove_file(&self.0).unwrap();
    }
}

/// Like [`start`], with the inference threads held by `hold` until it is released.
pub fn start_held(config: &Path, hold: &Hold) -> Running {
    start_with(config, Some(hold))
}

/// Polls `/ready` until `done` holds for it (at most 60 s), returning that answer.
pub fn wait_ready(base: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = ready(base);
        if done(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "never {what}: {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_with(config: &Path, hold: Option<&Hold>) -> Running {
    serve_with(&["--config".as_ref(), config.as_os_str()], hold)
}

/// Runs `llama-scorer serve --threads 2 --port P ARGS` (held by `hold` if given) and waits until `/health`
/// answers; every test that needs a separate server process starts it here.
pub fn serve_with(args: &[&std::ffi::OsStr], hold: Option<&Hold>) -> Running {
    serve_on(free_port(), args, &[], hold, Stdio::null())
}

/// Like [`serve_with`], with the server's stderr sent to `stderr` (a file, to read after the server died).
pub fn serve_with_stderr(args: &[&std::ffi::OsStr], hold: Option<&Hold>, stderr: Stdio) -> Running {
    serve_on(free_port(), args, &[], hold, stderr)
}

/// [`serve_with`] on a given port (a test that restarts a server where its clients expect it), with extra
/// environment variables and the server's stderr sent to `stderr`.
pub fn serve_on(
    port: u16,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    hold: Option<&Hold>,
    stderr: Stdio,
) -> Running {
    let mut env = env.to_vec();
    if let Some(h) = hold {
        env.push((
            llama_scorer::engine::HOLD_ENV,
            h.0.to_str().expect("hold path is UTF-8"),
        ));
    }
    let running = spawn_serve(port, args, &env, stderr);
    wait_loaded(&running.base);
    running
}

/// Runs `llama-scorer serve --threads 2 --port P ARGS` with extra environment variables and returns at
/// once (the port may not answer yet); the server is killed and reaped when the result is dropped.
pub fn spawn_serve(
    port: u16,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    stderr: Stdio,
) -> Running {
    let child = binary()
        .envs(env.iter().copied())
        .args(["serve", "--threads", "2", "--port", &port.to_string()])
        .args(args)
        .stderr(stderr)
        .spawn()
        .unwrap();
    Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `llama-scorer score --no-progress --threads 2 --config … --input … --output …` plus `extra`, run to its end.
pub fn score_run(config: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    binary()
        .args(["score", "--no-progress", "--threads", "2", "--config"])
        .arg(config)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap()
}

/// A command's stderr, failing the test with it unless the command succeeded.
pub fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The JSON body of `GET base+path`.
pub fn get_json(base: &str, path: &str) -> Value {
    client()
        .get(format!("{base}{path}"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The policy ids `/v1/models` lists, in its order.
pub fn model_ids(base: &str) -> Vec<String> {
    get_json(base, "/v1/models")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

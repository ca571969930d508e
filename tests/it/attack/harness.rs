//! What every attack shares: a server process of its own (optionally under a tight open-files limit), a
//! watcher that keeps probing it while the attack runs, and the verdict the issue asks of every class —
//! the process survives, `/health` answers within a second throughout, resident memory stays under a
//! stated bound and other clients keep being served.
//!
//! The attacks are bounded in time and count. `LLAMA_SCORER_ATTACK=full` (`make attack`) runs each at its
//! full size; by default (inside `make test`) each runs a smaller version of the same shape.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Running, binary, free_port, rss_kib, smol_path, write_config};

/// Attacks run one at a time: each measures latencies that another attack's load would disturb.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether this run is `make attack` (full sizes) or the short version inside `make test`.
pub fn full() -> bool {
    std::env::var("LLAMA_SCORER_ATTACK").is_ok_and(|v| v == "full")
}

/// `short` inside `make test`, `full` under `make attack`.
pub fn scaled(short: usize, full_size: usize) -> usize {
    if full() { full_size } else { short }
}

/// How a target server is started.
#[derive(Default)]
pub struct TargetOptions {
    /// Extra lines for the config's `server:` section (YAML, already indented by two spaces).
    pub server_yaml: String,
    /// Extra policies (YAML lines under `policies:`, indented by two spaces); `smol` is always served.
    pub policies_yaml: String,
    /// Soft and hard open-files limit for the server process, where a test reproduces a tight machine.
    pub nofile: Option<u64>,
    /// Environment variables for the server process.
    pub env: Vec<(String, String)>,
}

/// A server process under attack; killed and reaped on drop. Its stderr goes to `log`.
pub struct Target {
    pub running: Running,
    /// `127.0.0.1:PORT`, for raw sockets.
    pub addr: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Target {
    /// `serve --config` with the SmolLM2 test model as policy `smol`, 2 threads, on a free port.
    pub fn start(options: TargetOptions) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "server:\n  threads: 2\n{}policies:\n  smol: {{model: {}}}\n{}",
            options.server_yaml,
            smol_path().display(),
            options.policies_yaml
        );
        let config = write_config(dir.path(), &yaml);
        let log = dir.path().join("server.log");
        let port = free_port();
        let mut command = binary();
        command
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--port", &port.to_string()])
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(limit) = options.nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let running = Running {
            child,
            base: format!("http://{addr}"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while health_latency(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the target did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Target {
            running,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.running.child.id()
    }

    /// Whether the process is still running (it has not exited or been killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.running.child.try_wait(), Ok(None))
    }

    /// The server's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts probing this target (see [`Watch`]).
    pub fn watch(&self) -> Watch {
        Watch::start(self)
    }
}

/// `GET /health` on a fresh connection with a raw request, answered 200 within `limit`: how long it took.
pub fn health_latency(addr: &str, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr.parse().unwrap(), limit)
        .map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(limit)).unwrap();
    conn.set_write_timeout(Some(limit)).unwrap();
    write!(
        conn,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head)
        .map_err(|e| format!("read: {e}"))?;
    let elapsed = started.elapsed();
    if &head[..] != b"HTTP/1.1 200" {
        return Err(format!("answered {:?}", String::from_utf8_lossy(&head[..])));
    }
    if elapsed > limit {
        return Err(format!("answered after {elapsed:?}"));
    }
    Ok(elapsed)
}

/// A small real scoring request, as another client would send it during the attack: it must be served.
pub fn other_client(base: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("{base}/v1/logprobs"))
        .json(&json!({"model": "smol", "prompt": "The capital of France is", "response": " Paris"}))
        .send()
        .map_err(|e| format!("send: {e}"))?;
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    if status != 200 || body["data"][0]["logprob"].as_f64().is_none() {
        return Err(format!("answered {status}: {body}"));
    }
    Ok(started.elapsed())
}

/// What a watcher saw.
#[derive(Debug, Default)]
pub struct WatchReport {
    pub health_probes: usize,
    pub health_max: Duration,
    pub health_failures: Vec<String>,
    pub client_requests: usize,
    pub client_max: Duration,
    pub client_failures: Vec<String>,
    pub rss_peak_kib: u64,
    pub rss_start_kib: u64,
}

impl WatchReport {
    /// The verdict every attack must pass: `/health` answered within a second every time, every other
    /// client's request was served, and the peak resident memory stayed under `rss_limit_mib`.
    pub fn assert_held(&self, what: &str, rss_limit_mib: u64) {
        eprintln!(
            "{what}: /health max {:.1} ms over {} probes, other clients max {:.0} ms over {} requests, \
             RSS {} -> peak {} MiB",
            self.health_max.as_secs_f64() * 1e3,
            self.health_probes,
            self.client_max.as_secs_f64() * 1e3,
            self.client_requests,
            self.rss_start_kib >> 10,
            self.rss_peak_kib >> 10,
        );
        assert!(self.health_probes > 0, "{what}: /health was never probed");
        assert!(
            self.health_failures.is_empty(),
            "{what}: /health failed {} of {} probes, first: {}",
            self.health_failures.len(),
            self.health_probes,
            self.health_failures[0]
        );
        assert!(
            self.client_failures.is_empty(),
            "{what}: another client was refused {} of {} times, first: {}",
            self.client_failures.len(),
            self.client_requests,
            self.client_failures[0]
        );
        assert!(
            self.rss_peak_kib >> 10 < rss_limit_mib,
            "{what}: resident memory peaked at {} MiB, over the bound of {rss_limit_mib} MiB",
            self.rss_peak_kib >> 10
        );
    }
}

/// Probes a target from threads of its own while an attack runs: `/health` every 50 ms on a fresh
/// connection (limit 1 s), a small scoring request as another client would send one back to back, and the
/// process's resident memory every 20 ms. Each has probed once before [`Target::watch`] returns, so an
/// attack that ends quickly (a fast machine) is still watched.
pub struct Watch {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<WatchReport>>,
}

impl Watch {
    fn start(target: &Target) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        // Each watcher says when it has probed once.
        let (probed, first_probes) = std::sync::mpsc::channel::<usize>();
        let mut threads = Vec::new();
        let (addr, s, ready) = (target.addr.clone(), stop.clone(), probed.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = WatchReport::default();
            loop {
                r.health_probes += 1;
                match health_latency(&addr, Duration::from_secs(1)) {
                    Ok(d) => r.health_max = r.health_max.max(d),
                    Err(e) => r.health_failures.push(e),
                }
                let _ = ready.send(0);
                if s.load(Ordering::SeqCst) {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
        let (base, s, ready) = (target.running.base.clone(), stop.clone(), probed.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = WatchReport::default();
            loop {
                r.client_requests += 1;
                match other_client(&base) {
                    Ok(d) => r.client_max = r.client_max.max(d),
                    Err(e) => r.client_failures.push(e),
                }
                let _ = ready.send(1);
                if s.load(Ordering::SeqCst) {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
        let (pid, s, ready) = (target.pid(), stop.clone(), probed);
        threads.push(std::thread::spawn(move || {
            let mut r = WatchReport {
                rss_start_kib: rss_kib(pid),
                ..WatchReport::default()
            };
            loop {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let kib = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    r.rss_peak_kib = r.rss_peak_kib.max(kib);
                }
                let _ = ready.send(2);
                if s.load(Ordering::SeqCst) {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
        // The attack starts once every watcher is running; later probes' messages go unread.
        let mut seen = std::collections::HashSet::new();
        while seen.len() < threads.len() {
            seen.insert(
                first_probes
                    .recv()
                    .expect("a watcher thread ended before its first probe"),
            );
        }
        Watch { stop, threads }
    }

    /// Stops probing and merges what the probes saw.
    pub fn finish(self) -> WatchReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = WatchReport::default();
        for t in self.threads {
            let r = t.join().unwrap();
            all.health_probes += r.health_probes;
            all.health_max = all.health_max.max(r.health_max);
            all.health_failures.extend(r.health_failures);
            all.client_requests += r.client_requests;
            all.client_max = all.client_max.max(r.client_max);
            all.client_failures.extend(r.client_failures);
            all.rss_peak_kib = all.rss_peak_kib.max(r.rss_peak_kib);
            all.rss_start_kib = all.rss_start_kib.max(r.rss_start_kib);
        }
        all
    }
}

/// Sends `body` as a JSON POST to `path` and returns the status and parsed body (`{"raw": text}` when it
/// is not JSON); transport errors are returned as text.
pub fn post_json(
    base: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    post_bytes(base, path, serde_json::to_vec(body).unwrap(), timeout)
}

/// Like [`post_json`] with a body of raw bytes.
pub fn post_bytes(
    base: &str,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let r = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .map_err(|e| format!("send: {e}"))?;
    let status = r.status().as_u16();
    let text = r.text().map_err(|e| format!("read: {e}"))?;
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    Ok((status, v))
}

/// Asserts a refusal is the documented 4xx in the API's error shape, naming `field` in its `param` or
/// message.
pub fn assert_refused(got: &(u16, Value), status: u16, field: &str) {
    let (s, v) = got;
    assert_eq!(
        *s, status,
        "expected {status} naming `{field}`, got {s}: {v}"
    );
    let error = &v["error"];
    let named = error["param"].as_str() == Some(field)
        || error["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("`{field}`")) || m.contains(field));
    assert!(named, "the refusal does not name `{field}`: {v}");
}

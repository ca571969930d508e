//! Model files that are not what they claim. Damaged copies of the real test models stop
//! `serve` and `score` with one line naming the policy and the file, a non-zero exit, promptly and never
//! by a signal. A model file deleted after start-up goes on being served from its mapping; one truncated
//! in place is survived with `--no-mmap`, and explained when mapped.
//!
//! The byte positions below are those of the pinned test files (sha256 in scripts/fetch-models.sh), read
//! with a separate Python script following the GGUF spec; the tensor that llama.cpp itself names for a
//! cut (`tensor '…' data is not within the file bounds`) is the one expected here.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// Longest a refusal may take before it counts as a hang: it reads a header, never the weights.
const LIMIT: Duration = Duration::from_secs(60);

/// Size of the pinned SmolLM2 file, which the positions below are for.
const SMOL_SIZE: u64 = 98_362_432;

/// Runs `command` to its end within [`LIMIT`] (killing it and failing the test otherwise); returns its
/// exit status and stderr.
fn run_bounded(mut command: Command) -> (ExitStatus, String) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        text
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, reader.join().unwrap());
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still ran after {LIMIT:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the binary is started: as this user, or under `setpriv` as an unprivileged one.
struct Launcher {
    program: OsString,
    prefix: Vec<OsString>,
}

impl Launcher {
    fn direct() -> Launcher {
        Launcher {
            program: env!("CARGO_BIN_EXE_llama-scorer").into(),
            prefix: Vec::new(),
        }
    }

    /// `setpriv` to uid/gid 65534 (nobody) with no supplementary groups, running `binary`.
    fn nobody(binary: &Path) -> Launcher {
        Launcher {
            program: "setpriv".into(),
            prefix: ["--reuid=65534", "--regid=65534", "--clear-groups"]
                .map(OsString::from)
                .into_iter()
                .chain([binary.as_os_str().to_owned()])
                .collect(),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.prefix);
        c
    }
}

/// Asserts that both `serve --config` and `score --config`, on a config whose one policy `broken` names
/// `model`, refuse it: a non-zero exit (not a signal), within the limit, and a single stderr line that
/// names the policy's field, the file and `reason`.
fn assert_refused(launcher: &Launcher, dir: &Path, model: &Path, reason: &str) {
    let config = dir.join("config.yaml");
    fs::write(
        &config,
        format!("policies:\n  broken: {{model: \"{}\"}}\n", model.display()),
    )
    .unwrap();
    let input = dir.join("items.jsonl");
    fs::write(
        &input,
        "{\"id\": 1, \"prompt\": \"Hi\", \"response\": \" there\"}\n",
    )
    .unwrap();
    let output = dir.join("scores.jsonl");
    let shown = model.canonicalize().unwrap().display().to_string();

    let mut serve = launcher.command();
    serve
        .args(["serve", "--port", "0", "--config"])
        .arg(&config);
    let mut score = launcher.command();
    score
        .args(["score", "--no-progress", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output);
    for (what, command) in [("serve", serve), ("score", score)] {
        let (status, stderr) = run_bounded(command);
        let case = format!("{what} on {} ({reason})", model.display());
        assert_eq!(
            status.signal(),
            None,
            "{case}: killed by a signal\n{stderr}"
        );
        assert!(!status.success(), "{case}: exited 0\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{case}: not one line:\n{stderr}");
        let line = lines[0];
        assert!(
            line.starts_with(&format!("error: policies.broken.model: {shown}")),
            "{case}: {line}"
        );
        assert!(line.contains(reason), "{case}: {line}");
    }
    assert!(!output.exists(), "score wrote output for a refused model");
}

/// The first `len` bytes of `src`, as a new file `dst`.
fn prefix_copy(src: &Path, dst: &Path, len: u64) -> PathBuf {
    let mut from = fs::File::open(src).unwrap().take(len);
    let mut to = fs::File::create(dst).unwrap();
    assert_eq!(std::io::copy(&mut from, &mut to).unwrap(), len);
    dst.to_path_buf()
}

/// A copy of `src` with `old` replaced by `new` at byte `at` (checking `old` is there first).
fn patched_copy(src: &Path, dst: &Path, at: u64, old: &[u8], new: &[u8]) -> PathBuf {
    fs::copy(src, dst).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dst)
        .unwrap();
    let mut found = vec![0u8; old.len()];
    file.read_exact_at(&mut found, at).unwrap();
    assert_eq!(found, old, "the pinned file differs at byte {at}");
    file.write_all_at(new, at).unwrap();
    dst.to_path_buf()
}

fn file_with(dst: &Path, bytes: &[u8]) -> PathBuf {
    fs::File::create(dst).unwrap().write_all(bytes).unwrap();
    dst.to_path_buf()
}

#[test]
fn damaged_model_files_stop_serve_and_score_with_one_line_naming_policy_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let smol = smol_path();
    assert_eq!(fs::metadata(&smol).unwrap().len(), SMOL_SIZE);
    // `general.architecture` is the first key: its string value "llama" starts at byte 32 + 20 (the key)
    // + 4 (type) + 8 (length).
    let arch_at = 32 + 20 + 4 + 8;
    // The first tensor info (token_embd.weight, q8_0 = 8) has its type at byte 1,769,552.
    let type_at = 1_769_552;
    let cases: Vec<(PathBuf, String)> = vec![
        (
            prefix_copy(&smol, &d.join("cut-20.gguf"), 20),
            "truncated inside the header: reading the version and counts needs at least 24 bytes, \
             but the file has 20"
                .into(),
        ),
        (
            prefix_copy(&smol, &d.join("cut-1000000.gguf"), 1_000_000),
            "truncated inside the header: reading key-value pair 26 (`tokenizer.ggml.merges`) needs"
                .into(),
        ),
        (
            prefix_copy(&smol, &d.join("cut-1780000.gguf"), 1_780_000),
            "truncated inside the header: reading tensor info 176 needs at least 1780006 bytes, but \
             the file has 1780000"
                .into(),
        ),
        (
            prefix_copy(&smol, &d.join("cut-50000000.gguf"), 50_000_000),
            "truncated: tensor `blk.16.ffn_down.weight` ends at byte 50153536 but the file has \
             50000000 bytes"
                .into(),
        ),
        (
            prefix_copy(&smol, &d.join("cut-last-byte.gguf"), SMOL_SIZE - 1),
            format!(
                "truncated: tensor `output_norm.weight` ends at byte {SMOL_SIZE} but the file has {} \
                 bytes",
                SMOL_SIZE - 1
            ),
        ),
        (
            prefix_copy(&gemma_path(), &d.join("gemma-cut.gguf"), 100_000_000),
            "truncated: tensor `token_embd.weight` ends at byte 184785600 but the file has \
             100000000 bytes"
                .into(),
        ),
        (
            file_with(&d.join("tiny.gguf"), b"GGUF\x03\x00\x00\x00"),
            "truncated inside the header: reading the version and counts needs at least 16 bytes, \
             but the file has 8"
                .into(),
        ),
        (
            file_with(&d.join("empty.gguf"), b""),
            "not a GGUF file".into(),
        ),
        (
            file_with(&d.join("readme.gguf"), include_bytes!("../../README.md")),
            "not a GGUF file".into(),
        ),
        (
            patched_copy(&smol, &d.join("arch.gguf"), arch_at, b"llama", b"zzzzz"),
            "architecture `zzzzz` is not supported by this build's llama.cpp".into(),
        ),
        (
            patched_copy(
                &smol,
                &d.join("type.gguf"),
                type_at,
                &8u32.to_le_bytes(),
                &99u32.to_le_bytes(),
            ),
            "tensor `token_embd.weight` has ggml type 99, which this build's llama.cpp does not know"
                .into(),
        ),
        (
            {
                let p = d.join("folder.gguf");
                fs::create_dir(&p).unwrap();
                p
            },
            "is not a file".into(),
        ),
    ];
    for (model, reason) in &cases {
        assert_refused(&Launcher::direct(), d, model, reason);
    }
}

/// Says why a test does nothing here, on stderr past the test harness's capture (so CI logs show it).
fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// The effective user id of this process.
fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    uids.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A complete copy of the SmolLM2 model that nobody may read (mode 000), in a folder anyone may enter.
fn unreadable_copy(dir: &Path) -> PathBuf {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let model = dir.join("locked.gguf");
    fs::copy(smol_path(), &model).unwrap();
    fs::set_permissions(&model, fs::Permissions::from_mode(0o000)).unwrap();
    model
}

#[test]
fn an_unreadable_model_is_refused_for_this_user() {
    if euid() == 0 {
        skip(
            "running as root, who can read a mode-000 file; \
             an_unreadable_model_is_refused_for_an_unprivileged_user covers it",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = unreadable_copy(dir.path());
    assert_refused(
        &Launcher::direct(),
        dir.path(),
        &model,
        "cannot read: Permission denied",
    );
}

#[test]
fn an_unreadable_model_is_refused_for_an_unprivileged_user() {
    if euid() != 0 {
        skip(
            "not root, so setpriv cannot switch users; \
             an_unreadable_model_is_refused_for_this_user covers it",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = unreadable_copy(dir.path());
    // The binary may lie under a folder nobody may enter (e.g. /root): then run a copy from `dir`.
    let mut nobody = Launcher::nobody(Path::new(env!("CARGO_BIN_EXE_llama-scorer")));
    let mut probe = nobody.command();
    probe.arg("--version");
    if !run_bounded(probe).0.success() {
        let copy = dir.path().join("llama-scorer");
        fs::copy(env!("CARGO_BIN_EXE_llama-scorer"), &copy).unwrap();
        nobody = Launcher::nobody(&copy);
        let mut probe = nobody.command();
        probe.arg("--version");
        assert!(
            run_bounded(probe).0.success(),
            "setpriv cannot run the binary"
        );
    }
    assert_refused(
        &nobody,
        dir.path(),
        &model,
        "cannot read: Permission denied",
    );

    // The control: the same file, readable, passes the model check for the same user (score then stops
    // at its missing input, naming the input, not the model).
    fs::set_permissions(&model, fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("config.yaml");
    let mut score = nobody.command();
    score
        .args(["score", "--no-progress", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(dir.path().join("missing.jsonl"))
        .arg("--output")
        .arg(dir.path().join("never.jsonl"));
    let (status, stderr) = run_bounded(score);
    assert!(!status.success());
    assert!(!stderr.contains("policies.broken"), "{stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");
}

// --- after start-up --------------------------------------------------------------------------------

const QUESTION: &str = "What is the capital of France?";

const ANSWER: &str = " Paris is the capital.";

/// Scores a fixed item on `base` under policy `p`; `None` when the server did not answer.
fn score_once(base: &str) -> Option<(u16, Value)> {
    let r = client()
        .post(format!("{base}/v1/logprobs"))
        .json(&json!({"model": "p", "prompt": QUESTION, "response": ANSWER}))
        .send()
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().ok()?))
}

/// A server on a private copy of SmolLM2 (response cache off, so every answer is computed), with its
/// stderr in `dir/stderr.log`; returns it, the copy, and the first answer.
fn serve_copy(dir: &Path, extra: &[&str]) -> (Running, PathBuf, Value) {
    let model = dir.join("copy.gguf");
    fs::copy(smol_path(), &model).unwrap();
    let config = dir.join("config.yaml");
    fs::write(
        &config,
        format!(
            "cache: {{max_bytes: 0}}\nserver: {{prefix_cache_bytes: 0}}\npolicies:\n  p: {{model: \"{}\"}}\n",
            model.display()
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.join("stderr.log")).unwrap();
    let mut args: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), config.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let server = serve_with_stderr(&args, None, log.into());
    wait_ready(&server.base, "ready", |r| r["ready"] == true);
    let (status, first) = score_once(&server.base).expect("an answer");
    assert_eq!(status, 200, "{first}");
    (server, model, first["data"][0].clone())
}

#[test]
fn a_model_file_deleted_after_start_up_is_still_served_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (server, model, before) = serve_copy(dir.path(), &[]);
    fs::remove_file(&model).unwrap();
    assert!(!model.exists());
    for _ in 0..2 {
        let (status, after) = score_once(&server.base).expect("an answer");
        assert_eq!(status, 200, "{after}");
        assert_eq!(after["data"][0]["cached"], false);
        assert_eq!(after["data"][0]["logprobs"], before["logprobs"]);
        assert_eq!(after["data"][0]["logprob"], before["logprob"]);
    }
    assert_eq!(ready(&server.base)["ready"], true);
}

/// Cuts the model file to half its size where it lies, as `cp new old` or a re-download does.
fn truncate_in_place(model: &Path) {
    let file = fs::OpenOptions::new().write(true).open(model).unwrap();
    file.set_len(SMOL_SIZE / 2).unwrap();
}

#[test]
fn with_no_mmap_a_model_file_truncated_in_place_is_still_served_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (server, model, before) = serve_copy(dir.path(), &["--no-mmap"]);
    // Read into memory or mapped, the weights give the same bits (the shared server maps its file).
    let mapped = item(&json!({"model": SMOL, "prompt": QUESTION, "response": ANSWER}));
    assert_eq!(before["logprobs"], mapped["logprobs"]);
    truncate_in_place(&model);
    let (status, after) = score_once(&server.base).expect("the server died");
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["data"][0]["logprobs"], before["logprobs"]);
}

#[test]
fn a_mapped_model_file_truncated_in_place_is_survived_or_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, model, before) = serve_copy(dir.path(), &[]);
    truncate_in_place(&model);
    match score_once(&server.base) {
        // The weights were not read from the mapping (e.g. all on a GPU): nothing changed.
        Some((200, after)) => assert_eq!(after["data"][0]["logprobs"], before["logprobs"]),
        other => {
            let deadline = Instant::now() + LIMIT;
            let status = loop {
                if let Some(status) = server.child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "{other:?}, and the server still runs"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            let log = fs::read_to_string(dir.path().join("stderr.log")).unwrap();
            assert_eq!(
                status.signal(),
                Some(libc::SIGBUS),
                "{other:?}, then {status:?}:\n{log}"
            );
            let last = log.lines().last().unwrap_or_default();
            let shown = model.canonicalize().unwrap().display().to_string();
            assert!(
                last.starts_with("fatal: SIGBUS reading a memory-mapped model file: ")
                    && last.contains(&shown)
                    && last.contains("--no-mmap"),
                "{last}"
            );
        }
    }
}

//! The verified digest cache at start-up, with the real model files and the real binary: a second start of an
//! unchanged file takes its SHA-256 from the cache, a file replaced under the same path is hashed again, and
//! the fingerprint's `model_sha256` is always the file's true SHA-256 (checked with coreutils' sha256sum).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{free_port, gemma_path, ready, serve_on, smol_path};

/// The file's SHA-256 as coreutils computes it (a second implementation).
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Starts a server of `model` with the digest cache in `cache`, returns the model's `model_sha256` from
/// `/ready` and what the server logged about the digest.
fn start(model: &Path, cache: &Path, log: &Path) -> (String, String) {
    let file = std::fs::File::create(log).unwrap();
    let server = serve_on(
        free_port(),
        &[
            "--model".as_ref(),
            model.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
        ],
        &[
            ("LLAMA_SCORER_CACHE_DIR", cache.to_str().unwrap()),
            ("RUST_LOG", "info"),
        ],
        None,
        Stdio::from(file),
    );
    let state = ready(&server.base);
    let sha = state["models"][0]["fingerprint"]["model_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    drop(server);
    let text = std::fs::read_to_string(log).unwrap();
    let said = text
        .lines()
        .filter(|l| l.contains("model file hashed") || l.contains("model digest from the cache"))
        .collect::<Vec<_>>()
        .join("\n");
    (sha, said)
}

/// Longer than the cache's settling time (a file changed within it is not cached yet).
fn settle() {
    std::thread::sleep(llama_scorer::engine::digest_cache::SETTLE + Duration::from_millis(200));
}

#[test]
fn an_unchanged_model_file_is_not_hashed_again_and_a_replaced_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let model = dir.path().join("model.gguf");
    let log = dir.path().join("serve.log");
    std::fs::copy(smol_path(), &model).unwrap();
    settle();
    let smol_sha = sha256sum(&model);

    let (sha, said) = start(&model, &cache, &log);
    assert_eq!(sha, smol_sha);
    assert!(said.contains("model file hashed"), "{said}");

    let (sha, said) = start(&model, &cache, &log);
    assert_eq!(sha, smol_sha);
    assert!(said.contains("model digest from the cache"), "{said}");

    // Replaced under the same path, as a download tool does (a new file renamed over the old one).
    let new = dir.path().join("model.gguf.part");
    std::fs::copy(gemma_path(), &new).unwrap();
    std::fs::rename(&new, &model).unwrap();
    let gemma_sha = sha256sum(&model);
    assert_ne!(gemma_sha, smol_sha);
    let (sha, said) = start(&model, &cache, &log);
    assert_eq!(sha, gemma_sha);
    assert!(said.contains("model file hashed"), "{said}");

    // Rewritten in place with other bytes of the same size: hashed again (its mtime and ctime moved).
    settle();
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    settle();
    let changed_sha = sha256sum(&model);
    let (sha, said) = start(&model, &cache, &log);
    assert_eq!(sha, changed_sha);
    assert!(said.contains("model file hashed"), "{said}");
    let (sha, said) = start(&model, &cache, &log);
    assert_eq!(sha, changed_sha);
    assert!(said.contains("model digest from the cache"), "{said}");
}

//! Where the real test models live: shared by the unit tests in src/ and the integration tests in
//! tests/it/ (each includes this file with `#[path]`).

use std::path::PathBuf;

/// `file` in the test-model folder (`$LLAMA_SCORER_MODELS`, else ./models, where
/// scripts/fetch-models.sh puts them), canonical; fails the test when it is missing.
pub fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("LLAMA_SCORER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    let p = dir.join(file);
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p.canonicalize().unwrap()
}

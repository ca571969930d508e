//! Where the real test models live: shared by the unit tests of the crates and the integration tests in
//! tests/it/ (each includes this file with `#[path]`).

use std::path::{Path, PathBuf};

/// `file` in the test-model folder (`$LLAMA_SCORER_MODELS`, else models/ at the workspace root, where
/// scripts/fetch-models.sh puts them), canonical; fails the test when it is missing.
pub fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("LLAMA_SCORER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // The workspace root: the nearest folder holding Cargo.lock at or above the crate being
            // tested (the root package, or one of crates/*).
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            let root = manifest
                .ancestors()
                .find(|d| d.join("Cargo.lock").is_file());
            root.unwrap_or(manifest).join("models")
        });
    let p = dir.join(file);
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p.canonicalize().unwrap()
}

//! The system fingerprint of a loaded model: a short id (OpenAI's `system_fingerprint` field) that changes
//! exactly when the numbers could, so replicas, shards and reruns are known to be comparable when theirs match.
//!
//! It hashes what defines the bits of a score: the model file's content (SHA-256 of the whole GGUF, computed
//! once at load on a thread of its own, alongside llama.cpp's load), the llama.cpp build (the pinned bindings
//! crate, whose vendored llama.cpp source is the build's, ggml's version and the features each backend was
//! compiled with), llama-scorer's own version (the log-softmax is ours), the decode chunk and context size
//! (the fixed decode schedule), and where the model runs (CPU, or which GPUs and how many layers, plus the
//! pinned CPU variant of dynamic builds). It leaves out what does not change numbers (policy names, host
//! names, the CPU model running the same code, ports, cache settings).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::digest_cache::{DigestCache, DigestSource, sha256_cached};

/// The llama.cpp bindings crate Cargo.toml pins (`=` version); its vendored llama.cpp source is what this
/// binary runs. A unit test keeps it equal to Cargo.toml's pin.
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";

/// Everything that defines a model's numbers on this server, and the id derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// `fp_` and 16 hex digits of SHA-256 over the canonical JSON of `components`.
    pub system_fingerprint: String,
    pub components: FingerprintParts,
}

/// The parts a fingerprint hashes (shown in `/ready`, so two fingerprints that differ can be explained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FingerprintParts {
    /// SHA-256 of the whole GGUF file, hex.
    pub model_sha256: String,
    /// The llama.cpp build: bindings crate version, ggml version and commit, cargo features.
    pub llama_cpp: String,
    /// llama.cpp's per-backend compiled features (`llama_print_system_info`), e.g. `CPU : AVX2 = 1 | …`.
    pub backend_features: String,
    /// Where the model runs: `CPU`, or its GPUs with their names and the layers offloaded.
    pub device: String,
    /// The CPU backend variant of dynamic builds (`haswell`, …), `None` when linked in.
    pub cpu_variant: Option<String>,
    /// Decode chunk in tokens (llama.cpp n_batch = n_ubatch).
    pub decode_chunk: u32,
    /// Context size of the model's inference contexts.
    pub n_ctx: u32,
    /// llama-scorer's version (the log-softmax and scoring code are its own).
    pub scorer: String,
}

impl FingerprintParts {
    /// The fingerprint of these parts.
    pub fn fingerprint(self) -> Fingerprint {
        let canonical = serde_json::to_string(&self).expect("fingerprint parts serialize");
        let digest = Sha256::digest(canonical.as_bytes());
        Fingerprint {
            system_fingerprint: format!("fp_{}", hex(&digest[..8])),
            components: self,
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The llama.cpp build this binary runs, as text: the pinned bindings crate, ggml's own version and commit
/// (`unknown` when built from the crate's tarball), and the cargo features that change the backends.
pub fn llama_cpp_build() -> String {
    let text = |p: *const std::os::raw::c_char| {
        // SAFETY: ggml returns pointers to static NUL-terminated strings.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: plain getters of compile-time strings, callable at any time.
    let (version, commit) = unsafe {
        (
            text(llama_cpp_sys_2::ggml_version()),
            text(llama_cpp_sys_2::ggml_commit()),
        )
    };
    let features: Vec<&str> = [
        ("cuda", cfg!(feature = "cuda")),
        ("dynamic-backends", cfg!(feature = "dynamic-backends")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    format!(
        "llama-cpp-sys-2 {LLAMA_CPP_SYS_VERSION}, ggml {version} (commit {commit}), features [{}]",
        features.join(", ")
    )
}

/// SHA-256 of a whole file, hex, read in 4 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Starts hashing `path` on a thread of its own (so it overlaps llama.cpp's load of the same file), or takes
/// the digest from the verified cache when the file is unchanged since it was hashed (see
/// [`super::digest_cache`]), and logs which it was and how fast; join the handle for the hex digest.
pub fn spawn_sha256(path: PathBuf) -> std::thread::JoinHandle<std::io::Result<String>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let cache = DigestCache::from_env();
        let (digest, source) = sha256_cached(&path, cache.as_ref())?;
        let seconds = started.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        let cache_dir = cache
            .as_ref()
            .map_or_else(|| "off".to_string(), |c| c.dir().display().to_string());
        match source {
            DigestSource::Cache => tracing::info!(
                model = %path.display(),
                sha256 = %digest,
                seconds,
                cache = %cache_dir,
                "model digest from the cache (file unchanged since it was hashed)"
            ),
            DigestSource::Hashed => tracing::info!(
                model = %path.display(),
                sha256 = %digest,
                seconds,
                mib_per_s = (bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9)).round(),
                cache = %cache_dir,
                "model file hashed"
            ),
        }
        Ok(digest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> FingerprintParts {
        FingerprintParts {
            model_sha256: "ab".repeat(32),
            llama_cpp: llama_cpp_build(),
            backend_features: "CPU : AVX2 = 1 | ".into(),
            device: "CPU".into(),
            cpu_variant: None,
            decode_chunk: 512,
            n_ctx: 4096,
            scorer: "0.1.0".into(),
        }
    }

    #[test]
    fn every_part_changes_the_fingerprint_and_nothing_else_does() {
        let base = parts().fingerprint();
        assert_eq!(base, parts().fingerprint());
        assert!(base.system_fingerprint.starts_with("fp_"));
        assert_eq!(base.system_fingerprint.len(), 3 + 16);
        let variants: [fn(&mut FingerprintParts); 8] = [
            |p| p.model_sha256 = "cd".repeat(32),
            |p| p.llama_cpp.push('x'),
            |p| p.backend_features = "CPU : AVX2 = 0 | ".into(),
            |p| p.device = "CUDA0 (NVIDIA H200), 31/31 layers".into(),
            |p| p.cpu_variant = Some("haswell".into()),
            |p| p.decode_chunk = 256,
            |p| p.n_ctx = 2048,
            |p| p.scorer = "0.2.0".into(),
        ];
        for change in variants {
            let mut p = parts();
            change(&mut p);
            assert_ne!(p.fingerprint().system_fingerprint, base.system_fingerprint);
        }
    }

    #[test]
    fn file_hash_is_standard_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Longer than one read block, so the streaming path is exercised.
        std::fs::write(&path, vec![b'a'; (4 << 20) + 3]).unwrap();
        let expected = hex(&Sha256::digest(vec![b'a'; (4 << 20) + 3]));
        assert_eq!(sha256_file(&path).unwrap(), expected);
        // The standard test vector (FIPS 180-2): SHA-256("abc").
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_pinned_bindings_version_is_cargo_tomls() {
        let toml = include_str!("../../../Cargo.toml");
        let pin = format!("llama-cpp-sys-2 = {{ version = \"={LLAMA_CPP_SYS_VERSION}\"");
        assert!(
            toml.contains(&pin),
            "Cargo.toml no longer pins llama-cpp-sys-2 at {LLAMA_CPP_SYS_VERSION}: update LLAMA_CPP_SYS_VERSION"
        );
    }
}

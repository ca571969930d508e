//! A verified cache of model-file digests, so that a restart does not re-read a 40 GB file to fingerprint it.
//!
//! An entry is keyed by what the kernel says about the file: its device, inode, size, modification time and
//! status-change time (both in nanoseconds). Writing to the file changes its mtime and ctime; replacing it
//! (copy, rename over it, a new download) changes its inode or its ctime; `touch -d` resets an mtime but the
//! ctime moves on regardless, and no unprivileged call sets a ctime back. So a file changed through the file
//! system never matches its old entry and is hashed again.
//!
//! What it cannot notice: content changed beneath the file system (writes to the raw block device, a disk
//! image edited while unmounted, bit rot), a file system that does not keep these times (or a network file
//! system whose client caches attributes while another host writes), and a system clock set back to the very
//! nanosecond of the old times by someone who can also rewrite the file at that moment. Where that matters,
//! turn the cache off (`LLAMA_SCORER_CACHE_DIR=off`) and every start hashes the whole file.
//!
//! An entry is written only when the file's key is the same after hashing as before it (a file changed
//! while it was read is never cached) and its last change is older than [`SETTLE`]: file times come from a
//! coarse clock (a few ms on Linux, seconds on some file systems), so a file written again within one tick
//! of its hashing could keep its times; such a file is hashed again at the next start instead (as git treats
//! its "racily clean" entries). Entries live in the user's cache directory, never beside the model
//! (whose folder is often read-only): `$LLAMA_SCORER_CACHE_DIR`, else `$XDG_CACHE_HOME/llama-scorer`, else
//! `$HOME/.cache/llama-scorer`, one small JSON file per model path under `model-digests/`.

use std::fs::Metadata;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The environment variable naming the cache directory (`off` or empty: no cache).
pub const CACHE_DIR_ENV: &str = "LLAMA_SCORER_CACHE_DIR";

/// How long a file must have held still before its digest is cached (longer than any file-time tick).
pub const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one version of a file on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    /// The file system's device number.
    pub device: u64,
    /// The inode: a replacement renamed over the path has another.
    pub inode: u64,
    /// Length in bytes.
    pub size: u64,
    /// Last modification, ns since the epoch (settable by the owner, hence the ctime too).
    pub mtime_ns: i64,
    /// Last status change, ns since the epoch (moves on every write, rename or `touch`; not settable).
    pub ctime_ns: i64,
}

impl FileKey {
    /// The key of the file `meta` describes.
    #[cfg(unix)]
    pub fn of(meta: &Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        FileKey {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Elsewhere only size and mtime are known; no cache is kept (see [`DigestCache::from_env`]).
    #[cfg(not(unix))]
    pub fn of(meta: &Metadata) -> FileKey {
        FileKey {
            device: 0,
            inode: 0,
            size: meta.len(),
            mtime_ns: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64),
            ctime_ns: 0,
        }
    }
}

/// One cached digest: the path it was computed for, the file's key then, and the SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    #[serde(flatten)]
    key: FileKey,
    sha256: String,
}

/// The cache's directory and how to read and write its entries.
#[derive(Debug, Clone)]
pub struct DigestCache {
    dir: PathBuf,
    /// [`SETTLE`], or less in tests.
    settle: Duration,
}

impl DigestCache {
    /// A cache under `dir` (created on first store).
    pub fn at(dir: impl Into<PathBuf>) -> DigestCache {
        DigestCache {
            dir: dir.into(),
            settle: SETTLE,
        }
    }

    /// The same cache, storing digests of files changed less than `settle` ago too.
    pub fn with_settle(self, settle: Duration) -> DigestCache {
        DigestCache { settle, ..self }
    }

    /// The cache the environment names (see the module doc), `None` when turned off or nowhere to keep it.
    pub fn from_env() -> Option<DigestCache> {
        if !cfg!(unix) {
            return None;
        }
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
            return (!dir.is_empty() && dir != "off").then(|| DigestCache::at(dir));
        }
        var("XDG_CACHE_HOME")
            .map(|d| PathBuf::from(d).join("llama-scorer"))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/llama-scorer")))
            .map(DigestCache::at)
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file of `path` (one per path: a changed file overwrites its entry).
    fn entry_path(&self, path: &Path) -> PathBuf {
        let name = Sha256::digest(path.as_os_str().as_encoded_bytes());
        self.dir
            .join("model-digests")
            .join(format!("{}.json", super::fingerprint::hex(&name[..16])))
    }

    /// The digest stored for `path` if the stored key equals `key` exactly; anything else (no entry, an
    /// unreadable or malformed one, another file's) is a miss.
    pub fn lookup(&self, path: &Path, key: &FileKey) -> Option<String> {
        let text = std::fs::read(self.entry_path(path)).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        let well_formed =
            entry.sha256.len() == 64 && entry.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (entry.path == path && entry.key == *key && well_formed).then_some(entry.sha256)
    }

    /// Stores `sha256` for `path` at `key`, atomically (a reader sees the old entry or the new one).
    pub fn store(&self, path: &Path, key: &FileKey, sha256: &str) -> std::io::Result<()> {
        let target = self.entry_path(path);
        let dir = target.parent().expect("entries live in a folder");
        std::fs::create_dir_all(dir)?;
        let entry = Entry {
            path: path.to_path_buf(),
            key: *key,
            sha256: sha256.to_string(),
        };
        let tmp = target.with_extension(format!("tmp.{}", std::process::id()));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&serde_json::to_vec_pretty(&entry).map_err(std::io::Error::other)?)?;
            f.sync_all()
        });
        match written.and_then(|()| std::fs::rename(&tmp, &target)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// Where a digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSource {
    /// Read from the cache: the file's key matched the stored one.
    Cache,
    /// Computed by reading the whole file (and stored when the cache is on and the file held still).
    Hashed,
}

/// SHA-256 of the file at `path`, from `cache` when its key matches, else by reading the file; a digest
/// computed while the file kept its key is stored. A cache that cannot be written only costs the next start
/// a full read (logged, never an error).
pub fn sha256_cached(
    path: &Path,
    cache: Option<&DigestCache>,
) -> std::io::Result<(String, DigestSource)> {
    let before = FileKey::of(&std::fs::metadata(path)?);
    if let Some(hit) = cache.and_then(|c| c.lookup(path, &before)) {
        return Ok((hit, DigestSource::Cache));
    }
    let digest = super::fingerprint::sha256_file(path)?;
    if let Some(cache) = cache {
        let after = FileKey::of(&std::fs::metadata(path)?);
        let now_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let settled =
            now_ns - before.ctime_ns.max(before.mtime_ns) >= cache.settle.as_nanos() as i64;
        if after != before {
            tracing::warn!(model = %path.display(), "the model file changed while it was hashed; its digest is not cached");
        } else if !settled {
            tracing::info!(model = %path.display(), "the model file changed moments ago; its digest is not cached yet");
        } else if let Err(e) = cache.store(path, &before, &digest) {
            tracing::info!(model = %path.display(), cache = %cache.dir().display(), error = %e, "model digest not cached");
        }
    }
    Ok((digest, DigestSource::Hashed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache in `dir` that stores digests of files however new (the tests' files are).
    fn cache_in(dir: &Path) -> DigestCache {
        DigestCache::at(dir.join("cache")).with_settle(Duration::ZERO)
    }

    /// Longer than the file-time clock's tick, so the next change gets other times.
    fn tick() {
        std::thread::sleep(Duration::from_millis(50));
    }

    fn key_of(path: &Path) -> FileKey {
        FileKey::of(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn a_stored_digest_is_found_only_under_the_same_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"abc").unwrap();
        let (first, source) = sha256_cached(&file, Some(&cache)).unwrap();
        assert_eq!(source, DigestSource::Hashed);
        // FIPS 180-2 test vector, independent of the code under test.
        assert_eq!(
            first,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_cached(&file, Some(&cache)).unwrap(),
            (first.clone(), DigestSource::Cache)
        );
        let key = key_of(&file);
        assert_eq!(cache.lookup(&file, &key), Some(first.clone()));
        // Another path with the same key (a hard link) is not this entry.
        let link = dir.path().join("link.gguf");
        std::fs::hard_link(&file, &link).unwrap();
        assert_eq!(cache.lookup(&link, &key_of(&link)), None);
        // Any field of the key differing is a miss.
        for change in [
            |k: &mut FileKey| k.device += 1,
            |k: &mut FileKey| k.inode += 1,
            |k: &mut FileKey| k.size += 1,
            |k: &mut FileKey| k.mtime_ns += 1,
            |k: &mut FileKey| k.ctime_ns += 1,
        ] {
            let mut k = key_of(&file);
            change(&mut k);
            assert_eq!(cache.lookup(&file, &k), None);
        }
    }

    #[test]
    fn a_rewritten_file_with_its_old_size_and_mtime_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"abc").unwrap();
        let old = std::fs::metadata(&file).unwrap().modified().unwrap();
        tick();
        let (first, _) = sha256_cached(&file, Some(&cache)).unwrap();
        assert_eq!(cache.lookup(&file, &key_of(&file)), Some(first.clone()));
        tick();
        // Same size, and the modification time set back as `touch -d` would: only the ctime tells.
        std::fs::write(&file, b"abd").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), old);
        let (second, source) = sha256_cached(&file, Some(&cache)).unwrap();
        assert_eq!(source, DigestSource::Hashed);
        assert_ne!(second, first);
        assert_eq!(
            second,
            super::super::fingerprint::sha256_file(&file).unwrap()
        );
    }

    #[test]
    fn a_replaced_file_is_hashed_again_and_bad_entries_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"abc").unwrap();
        sha256_cached(&file, Some(&cache)).unwrap();
        // Replaced by rename, as a download tool does: a new inode.
        let new = dir.path().join("new.gguf");
        std::fs::write(&new, b"xyz").unwrap();
        std::fs::rename(&new, &file).unwrap();
        let (digest, source) = sha256_cached(&file, Some(&cache)).unwrap();
        assert_eq!(source, DigestSource::Hashed);
        assert_eq!(
            digest,
            super::super::fingerprint::sha256_file(&file).unwrap()
        );
        // A corrupted entry is a miss, then rewritten.
        let entry = cache.entry_path(&file);
        std::fs::write(&entry, b"{not json").unwrap();
        assert_eq!(cache.lookup(&file, &key_of(&file)), None);
        assert_eq!(
            sha256_cached(&file, Some(&cache)).unwrap().1,
            DigestSource::Hashed
        );
        assert_eq!(
            sha256_cached(&file, Some(&cache)).unwrap().1,
            DigestSource::Cache
        );
        // An entry whose digest is not 64 hex digits is a miss.
        let text = std::fs::read_to_string(&entry).unwrap();
        std::fs::write(&entry, text.replace(&digest, "zz")).unwrap();
        assert_eq!(cache.lookup(&file, &key_of(&file)), None);
    }

    #[test]
    fn a_file_changed_moments_ago_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DigestCache::at(dir.path().join("cache"));
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(
            sha256_cached(&file, Some(&cache)).unwrap().1,
            DigestSource::Hashed
        );
        assert_eq!(
            sha256_cached(&file, Some(&cache)).unwrap().1,
            DigestSource::Hashed
        );
        assert!(!cache.entry_path(&file).exists());
    }

    #[test]
    fn an_unwritable_cache_still_gives_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"abc").unwrap();
        // A cache "directory" that is a regular file cannot hold entries.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let cache = DigestCache::at(&blocker).with_settle(Duration::ZERO);
        let (digest, source) = sha256_cached(&file, Some(&cache)).unwrap();
        assert_eq!(source, DigestSource::Hashed);
        assert_eq!(digest.len(), 64);
        assert_eq!(sha256_cached(&file, None).unwrap().1, DigestSource::Hashed);
    }
}

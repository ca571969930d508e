//! Start-up progress of the model files. A big model takes minutes to hash and load; whoever starts the
//! engine on another thread can read this meanwhile and say what is still loading (the server's `/ready`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Test hook: when this environment variable names a file, each model file waits in `loading` while that
/// file exists, so tests can watch a server start whatever the machine's speed. Unset (production), it
/// costs nothing.
pub const LOAD_HOLD_ENV: &str = "LLAMA_SCORER_TEST_HOLD_LOAD_FILE";

/// Where one model file is in start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Another file is loading first.
    Waiting,
    /// Being hashed and loaded (the two read the file together).
    Loading,
    /// Loaded, its inference threads running.
    Loaded,
    /// Loading failed; start-up ends with the error.
    Failed,
}

/// One model file's progress, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileProgress {
    pub path: PathBuf,
    pub state: FileState,
    /// Seconds spent loading so far (or in all, once loaded); absent while waiting.
    pub seconds: Option<f64>,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    state: FileState,
    started: Option<Instant>,
    took: Option<Duration>,
}

/// Shared, cheap to clone: the engine writes it while it starts, readers take snapshots.
#[derive(Debug, Clone, Default)]
pub struct LoadProgress(Arc<Mutex<Vec<Entry>>>);

impl LoadProgress {
    /// Every file, in the order they will load, with its state now.
    pub fn snapshot(&self) -> Vec<FileProgress> {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|e| FileProgress {
                path: e.path.clone(),
                state: e.state,
                seconds: e
                    .took
                    .or_else(|| e.started.map(|s| s.elapsed()))
                    .map(|d| d.as_secs_f64()),
            })
            .collect()
    }

    /// Lists the files that will load, all waiting.
    pub(crate) fn plan(&self, files: &[&Path]) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *entries = files
            .iter()
            .map(|p| Entry {
                path: p.to_path_buf(),
                state: FileState::Waiting,
                started: None,
                took: None,
            })
            .collect();
    }

    /// `path` starts loading.
    pub(crate) fn begin(&self, path: &Path) {
        self.update(path, |e| {
            e.state = FileState::Loading;
            e.started = Some(Instant::now());
        });
    }

    /// `path` is loaded (`ok`) or failed.
    pub(crate) fn end(&self, path: &Path, ok: bool) {
        self.update(path, |e| {
            e.state = if ok {
                FileState::Loaded
            } else {
                FileState::Failed
            };
            e.took = e.started.map(|s| s.elapsed());
        });
    }

    fn update(&self, path: &Path, change: impl FnOnce(&mut Entry)) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.iter_mut().find(|e| e.path == path) {
            change(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_move_from_waiting_through_loading_to_their_end() {
        let progress = LoadProgress::default();
        let (a, b) = (Path::new("/m/a.gguf"), Path::new("/m/b.gguf"));
        progress.plan(&[a, b]);
        let states = |p: &LoadProgress| p.snapshot().iter().map(|f| f.state).collect::<Vec<_>>();
        assert_eq!(states(&progress), [FileState::Waiting, FileState::Waiting]);
        assert!(progress.snapshot().iter().all(|f| f.seconds.is_none()));
        progress.begin(a);
        assert_eq!(states(&progress), [FileState::Loading, FileState::Waiting]);
        assert!(progress.snapshot()[0].seconds.is_some());
        progress.end(a, true);
        progress.begin(b);
        progress.end(b, false);
        assert_eq!(states(&progress), [FileState::Loaded, FileState::Failed]);
        let took = progress.snapshot()[0].seconds.unwrap();
        assert_eq!(
            progress.snapshot()[0].seconds.unwrap(),
            took,
            "a loaded file's time stays put"
        );
    }
}

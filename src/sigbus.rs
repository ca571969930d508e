//! A one-line reason on stderr when the process dies of SIGBUS. llama.cpp maps model files into memory;
//! when a mapped file is truncated or rewritten in place while in use, the next read of a page that is
//! gone raises SIGBUS and the process dies without a word. Nothing can be recovered at that point, but
//! the operator can be told which files to look at and what to do instead; the signal then takes its
//! usual course, so the exit status still says SIGBUS.

use std::ffi::c_void;
use std::sync::OnceLock;

use crate::config::Config;

/// The line written on SIGBUS, built before any model is mapped (the handler only writes it).
static MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();
/// The SIGBUS action in place before ours (Rust's stack-overflow handler, or the default).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// When `cfg` maps its model files, installs the SIGBUS handler that names them; call once, before
/// the engine starts.
pub fn explain_for(cfg: &Config) {
    if !cfg.mmap {
        return;
    }
    let mut paths: Vec<String> = Vec::new();
    for p in &cfg.policies {
        let path = p.model_path.display().to_string();
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    let message = format!(
        "fatal: SIGBUS reading a memory-mapped model file: {} was most likely truncated or rewritten in \
         place while in use; replace model files by renaming a new file over the old one, or run with \
         --no-mmap\n",
        paths.join(", ")
    );
    if MESSAGE.set(message.into_bytes()).is_err() {
        return;
    }
    // SAFETY: sigaction with a zeroed struct filled in here; the handler only calls async-signal-safe
    // functions (write, sigaction, raise) and reads statics initialised before it is installed.
    unsafe {
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
            return;
        }
        let _ = PREVIOUS.set(previous);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: async-signal-safe calls only; MESSAGE and PREVIOUS were set before this was installed.
    unsafe {
        if let Some(m) = MESSAGE.get() {
            libc::write(2, m.as_ptr().cast(), m.len());
        }
        if let Some(p) = PREVIOUS.get() {
            libc::sigaction(libc::SIGBUS, p, std::ptr::null_mut());
        }
        // A fault repeats when this returns and meets the previous action; a SIGBUS sent by kill would
        // not, so send it again.
        if info.is_null() || (*info).si_code <= 0 {
            libc::raise(libc::SIGBUS);
        }
    }
}

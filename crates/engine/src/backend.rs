//! The process-wide llama.cpp backend, initialised once (llama.cpp refuses a second initialisation).
//!
//! With the `dynamic-backends` feature llama.cpp's backends are shared libraries (`libggml-cpu-*.so`, one per
//! instruction set, and `libggml-cuda.so` when built with `cuda`) loaded from a folder before the backend
//! starts, so one binary serves CPU-only and GPU hosts and the CPU code is picked for the host at run time.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{LlamaBackendDeviceType, list_llama_ggml_backend_devices};
use serde::Serialize;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
static BACKENDS_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
static CPU_VARIANT: OnceLock<Option<String>> = OnceLock::new();
static DEVICES: OnceLock<Devices> = OnceLock::new();

/// One compute device llama.cpp found (a CPU, a GPU, an accelerator such as BLAS).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// llama.cpp's device name, e.g. `CPU` or `CUDA0`.
    pub name: String,
    /// What the device is, e.g. `NVIDIA H200` or the CPU model.
    pub description: String,
    /// The backend that drives it, e.g. `CPU`, `CUDA`.
    pub backend: String,
    /// `cpu`, `gpu`, `igpu`, `accel` or `unknown`.
    pub kind: &'static str,
    /// Memory in MiB (total and free at start-up).
    pub memory_total_mib: u64,
    pub memory_free_mib: u64,
}

impl DeviceInfo {
    /// Whether models can offload layers to it.
    pub fn is_gpu(&self) -> bool {
        matches!(self.kind, "gpu" | "igpu")
    }
}

/// What start-up found: where backends came from and every device, so logs, `/ready` and
/// `llama-scorer devices` report the same facts.
#[derive(Debug, Clone, Serialize)]
pub struct Devices {
    /// Whether this binary loads its backends at run time (the `dynamic-backends` feature).
    pub dynamic_backends: bool,
    /// The folder backends were loaded from (dynamic builds only).
    pub backends_dir: Option<String>,
    /// The CPU code path in use (dynamic builds: `haswell`, `zen4`, … from `libggml-cpu-<variant>.so`):
    /// part of what defines the numbers, since variants differ in their floating-point instructions.
    pub cpu_variant: Option<String>,
    /// What each backend was compiled with (`llama_print_system_info`, e.g. `CPU : AVX2 = 1 | FMA = 1 | …`):
    /// part of the system fingerprint.
    pub system_info: String,
    pub devices: Vec<DeviceInfo>,
}

impl Devices {
    /// The devices a model offloads to: discrete GPUs, else integrated ones (llama.cpp's own rule).
    pub fn offload_targets(&self) -> Vec<&DeviceInfo> {
        let gpus: Vec<_> = self.devices.iter().filter(|d| d.kind == "gpu").collect();
        if gpus.is_empty() {
            self.devices.iter().filter(|d| d.kind == "igpu").collect()
        } else {
            gpus
        }
    }
}

/// Chooses the folder backends load from (`--backends-dir`, `LLAMA_SCORER_BACKENDS_DIR`); call before the
/// first [`backend`]. Without it: the executable's own folder when it holds backends, else the folder the
/// cargo build wrote them to. Builds without `dynamic-backends` ignore it (logged).
pub fn set_backends_dir(dir: Option<PathBuf>) {
    let _ = BACKENDS_DIR.set(dir);
}

/// Pins the CPU backend variant (`--cpu-variant`, `LLAMA_SCORER_CPU_VARIANT`) instead of the best one for
/// the host: replicas on different CPU generations then run the same code and give the same bits. Call before
/// the first [`backend`]; builds without `dynamic-backends` have one CPU code path and refuse a pin.
pub fn set_cpu_variant(variant: Option<String>) {
    let _ = CPU_VARIANT.set(variant);
}

/// The initialised backend; the first call also routes llama.cpp's logs into `tracing`, loads the
/// dynamic backends and logs every device found.
pub fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            let dir = BACKENDS_DIR.get().cloned().flatten();
            let variant = CPU_VARIANT.get().cloned().flatten();
            let backends_dir = load_backends(dir.as_deref(), variant.as_deref())?;
            let backend =
                LlamaBackend::init().map_err(|e| format!("cannot initialise llama.cpp: {e}"))?;
            let devices = Devices {
                dynamic_backends: cfg!(feature = "dynamic-backends"),
                backends_dir,
                cpu_variant: loaded_cpu_variant(),
                system_info: system_info(),
                devices: list_llama_ggml_backend_devices()
                    .into_iter()
                    .map(|d| DeviceInfo {
                        kind: match d.device_type {
                            LlamaBackendDeviceType::Cpu => "cpu",
                            LlamaBackendDeviceType::Gpu => "gpu",
                            LlamaBackendDeviceType::IntegratedGpu => "igpu",
                            LlamaBackendDeviceType::Accelerator => "accel",
                            LlamaBackendDeviceType::Unknown => "unknown",
                        },
                        name: d.name,
                        description: d.description,
                        backend: d.backend,
                        memory_total_mib: (d.memory_total >> 20) as u64,
                        memory_free_mib: (d.memory_free >> 20) as u64,
                    })
                    .collect(),
            };
            log_devices(&devices);
            warn_if_gpu_backend_unused(&devices);
            if !devices.devices.iter().any(|d| d.kind == "cpu") {
                return Err(format!(
                    "llama.cpp found no CPU backend{}; point --backends-dir (or \
                     LLAMA_SCORER_BACKENDS_DIR) at the folder holding libggml-cpu-*.so",
                    devices
                        .backends_dir
                        .as_deref()
                        .map(|d| format!(" in {d}"))
                        .unwrap_or_default()
                ));
            }
            let _ = DEVICES.set(devices);
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// llama.cpp's list of every registered backend's compiled features. Called once, while the backend
/// initialises (llama.cpp builds the text in a static buffer).
fn system_info() -> String {
    // SAFETY: returns a NUL-terminated string owned by llama.cpp, copied out at once.
    unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// The devices found when the backend started (initialising it if needed).
pub fn devices() -> Result<&'static Devices, String> {
    backend()?;
    Ok(DEVICES.get().expect("set when the backend initialised"))
}

fn log_devices(found: &Devices) {
    tracing::info!(
        dynamic_backends = found.dynamic_backends,
        backends_dir = found.backends_dir.as_deref().unwrap_or("(built in)"),
        cpu_variant = found.cpu_variant.as_deref().unwrap_or("(built in)"),
        devices = found.devices.len(),
        "llama.cpp backends loaded"
    );
    for d in &found.devices {
        tracing::info!(
            name = %d.name,
            backend = %d.backend,
            kind = d.kind,
            description = %d.description,
            memory_total_mib = d.memory_total_mib,
            memory_free_mib = d.memory_free_mib,
            "device"
        );
    }
    if found.offload_targets().is_empty() {
        tracing::info!("no GPU found: every model runs on the CPU");
    }
}

/// A CUDA (or other GPU) backend library that is present but found no device means the container or host
/// has no GPU visible (no driver, no `--gpus`): say so plainly, since llama.cpp's loader is silent then.
fn warn_if_gpu_backend_unused(found: &Devices) {
    if !found.offload_targets().is_empty() {
        return;
    }
    let mut gpu_libs: Vec<String> = found
        .backends_dir
        .as_deref()
        .and_then(|d| std::fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            ["libggml-cuda", "libggml-hip", "libggml-vulkan"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    if cfg!(feature = "cuda") && !found.dynamic_backends {
        gpu_libs.push("CUDA (linked in)".to_string());
    }
    if !gpu_libs.is_empty() {
        tracing::warn!(
            backends = gpu_libs.join(","),
            "GPU backend present but no GPU device found (no driver or no GPU visible to this process, \
             e.g. a container started without --gpus): falling back to CPU for every model"
        );
    }
}

/// Loads the backend libraries; returns the folder used (`None` in builds that link them in).
#[cfg(feature = "dynamic-backends")]
fn load_backends(dir: Option<&Path>, cpu_variant: Option<&str>) -> Result<Option<String>, String> {
    use llama_cpp_2::llama_backend;
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let chosen = match dir {
        Some(d) if !d.is_dir() => {
            return Err(format!("backends folder {} does not exist", d.display()));
        }
        Some(d) => Some(d.to_path_buf()),
        None => exe_dir.filter(|d| holds_backends(d)),
    };
    match chosen {
        Some(d) => {
            let s = d
                .to_str()
                .ok_or_else(|| format!("backends folder {} is not valid UTF-8", d.display()))?;
            match cpu_variant {
                Some(v) => load_pinned(&d, v)?,
                None => llama_backend::load_backends_from_path(&d),
            }
            // llama.cpp would otherwise fall back silently to its build-time folder: refuse instead.
            let cpu_loaded = list_llama_ggml_backend_devices()
                .iter()
                .any(|dev| dev.device_type == LlamaBackendDeviceType::Cpu);
            if !cpu_loaded {
                return Err(format!(
                    "no llama.cpp CPU backend (libggml-cpu*.so) could be loaded from {s}"
                ));
            }
            Ok(Some(s.to_string()))
        }
        None if cpu_variant.is_some() => Err(
            "--cpu-variant needs the backends folder (--backends-dir or LLAMA_SCORER_BACKENDS_DIR)"
                .to_string(),
        ),
        None => {
            // A development build run from target/: the folder the cargo build installed them to.
            llama_backend::load_backends();
            Ok(Some("(cargo build folder)".to_string()))
        }
    }
}

/// Builds without `dynamic-backends` link their backends in; a folder given anyway (an image's
/// environment, say) is noted and ignored.
#[cfg(not(feature = "dynamic-backends"))]
fn load_backends(dir: Option<&Path>, cpu_variant: Option<&str>) -> Result<Option<String>, String> {
    if let Some(v) = cpu_variant {
        return Err(format!(
            "--cpu-variant {v}: this binary was built without the dynamic-backends feature, so its one CPU \
             code path is linked in"
        ));
    }
    if let Some(d) = dir {
        tracing::info!(
            backends_dir = %d.display(),
            "ignoring the backends folder: this binary was built without the dynamic-backends feature"
        );
    }
    Ok(None)
}

/// Whether `dir` holds a llama.cpp CPU backend library.
#[cfg(feature = "dynamic-backends")]
fn holds_backends(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libggml-cpu") && name.ends_with(".so")
        })
    })
}

/// Loads exactly `libggml-cpu-<variant>.so` from `dir`, then every non-CPU backend there (CUDA, …), as
/// llama.cpp's own loader would but without its pick of the best CPU variant.
#[cfg(feature = "dynamic-backends")]
fn load_pinned(dir: &Path, variant: &str) -> Result<(), String> {
    let libs: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the backends folder {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libggml-") && n.ends_with(".so") && n != "libggml-base.so")
        .collect();
    let wanted = format!("libggml-cpu-{variant}.so");
    if !libs.contains(&wanted) {
        let mut available: Vec<&str> = libs
            .iter()
            .filter_map(|n| n.strip_prefix("libggml-cpu-")?.strip_suffix(".so"))
            .collect();
        available.sort_unstable();
        return Err(format!(
            "CPU variant {variant:?} not found in {} (available: {})",
            dir.display(),
            available.join(", ")
        ));
    }
    load_library(&dir.join(&wanted)).map_err(|e| {
        format!("CPU variant {variant:?} cannot run here ({e}): this CPU lacks its instructions")
    })?;
    for other in libs.iter().filter(|n| !n.starts_with("libggml-cpu")) {
        // A GPU backend whose driver is missing fails to load; llama.cpp's loader skips it the same way.
        if let Err(e) = load_library(&dir.join(other)) {
            tracing::info!(backend = %other, reason = %e, "backend not loaded");
        }
    }
    Ok(())
}

/// Registers one backend library with llama.cpp; fails when it cannot load or scores 0 on this machine.
#[cfg(feature = "dynamic-backends")]
fn load_library(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    // SAFETY: a valid C string; llama.cpp copies the path and owns the library handle from here on.
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_load(c.as_ptr()) };
    if reg.is_null() {
        Err(format!("llama.cpp could not load {}", path.display()))
    } else {
        Ok(())
    }
}

/// The `<variant>` of the `libggml-cpu-<variant>.so` mapped into this process (dynamic builds), read from
/// `/proc/self/maps` since llama.cpp reports the file only in a log line.
fn loaded_cpu_variant() -> Option<String> {
    if !cfg!(feature = "dynamic-backends") {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let file = line.rsplit('/').next()?;
        Some(
            file.strip_prefix("libggml-cpu-")?
                .strip_suffix(".so")?
                .to_string(),
        )
    })
}

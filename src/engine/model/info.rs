//! What a loaded model is and where it runs: its [`ModelInfo`], worked out while llama.cpp loads the file —
//! the context size from the policies using it, llama.cpp's layer placement, and the fingerprint of its numbers.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use llama_cpp_2::model::LlamaModel;

use super::super::backend::Devices;
use super::super::fingerprint::{self, Fingerprint, FingerprintParts};
use super::super::settings::default_n_ctx;

/// Facts about a loaded model that policies and the API report.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Canonical path: the pool's key.
    pub path: PathBuf,
    /// Context size the model was trained with.
    pub n_ctx_train: u32,
    /// Context size of its inference threads (the largest `n_ctx` of the policies using it).
    pub n_ctx: u32,
    /// The GGUF's own `tokenizer.chat_template`, if it has one.
    pub chat_template: Option<String>,
    /// Parameters and bytes of the weights.
    pub n_params: u64,
    pub size_bytes: u64,
    /// Layers the policy asked to offload (-1 = all).
    pub n_gpu_layers: i32,
    /// Where the model runs: `CPU`, or the GPU devices holding its offloaded layers (e.g. `CUDA0`).
    pub device: String,
    /// Layers on the GPU out of `n_offloadable_layers` (the repeating layers plus the output layer, as
    /// llama.cpp counts them); 0 on a CPU-only host whatever `n_gpu_layers` asked.
    pub offloaded_layers: u32,
    pub n_offloadable_layers: u32,
    /// What defines this model's numbers here, and its `system_fingerprint`.
    pub fingerprint: Fingerprint,
}

impl ModelInfo {
    /// Describes the model llama.cpp loaded from `path`: `policy_n_ctx` (each policy's `n_ctx`, `None` =
    /// default) sizes its contexts, `decode_chunk` is the configured decode chunk (capped at the context), and
    /// `hashing` is the content hash started alongside the load.
    pub fn describe(
        path: &Path,
        llama: &LlamaModel,
        n_gpu_layers: i32,
        policy_n_ctx: &[Option<u32>],
        decode_chunk: u32,
        devices: &Devices,
        hashing: JoinHandle<std::io::Result<String>>,
    ) -> Result<ModelInfo, String> {
        let n_ctx_train = llama.n_ctx_train();
        let n_ctx = policy_n_ctx
            .iter()
            .map(|n| n.unwrap_or_else(|| default_n_ctx(n_ctx_train)))
            .max()
            .unwrap_or_else(|| default_n_ctx(n_ctx_train));
        let chat_template = llama
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok());
        let (device, offloaded_layers, n_offloadable_layers) =
            placement(devices, llama.n_layer(), n_gpu_layers);
        let model_sha256 = hashing
            .join()
            .map_err(|_| "the thread hashing the model file panicked".to_string())?
            .map_err(|e| format!("cannot read {} to hash it: {e}", path.display()))?;
        let fingerprint = FingerprintParts {
            model_sha256,
            llama_cpp: fingerprint::llama_cpp_build(),
            backend_features: devices.system_info.clone(),
            device: fingerprint_device(devices, &device, offloaded_layers, n_offloadable_layers),
            cpu_variant: devices.cpu_variant.clone(),
            decode_chunk: decode_chunk.min(n_ctx),
            n_ctx,
            scorer: env!("CARGO_PKG_VERSION").to_string(),
        }
        .fingerprint();
        Ok(ModelInfo {
            path: path.to_path_buf(),
            n_ctx_train,
            n_ctx,
            chat_template,
            n_params: llama.n_params(),
            size_bytes: llama.size(),
            n_gpu_layers,
            device,
            offloaded_layers,
            n_offloadable_layers,
            fingerprint,
        })
    }
}

/// Where llama.cpp puts a model's layers: (device, offloaded layers, offloadable layers). Mirrors
/// llama.cpp's rule (`n_gpu_layers` of the `n_layer + 1` layers go to the GPUs, none without a GPU),
/// since the library reports it only in a log line.
fn placement(devices: &Devices, n_layer: u32, n_gpu_layers: i32) -> (String, u32, u32) {
    let total = n_layer + 1;
    let asked = u32::try_from(n_gpu_layers).map_or(total, |n| n.min(total));
    let targets = devices.offload_targets();
    if targets.is_empty() || asked == 0 {
        return ("CPU".to_string(), 0, total);
    }
    let names: Vec<&str> = targets.iter().map(|d| d.name.as_str()).collect();
    (names.join("+"), asked, total)
}

/// The device part of a fingerprint: `CPU`, or the GPUs with their names and how many layers they hold
/// (partial offload changes numbers). The CPU's model is left out: the same code gives the same bits on any.
fn fingerprint_device(devices: &Devices, device: &str, offloaded: u32, total: u32) -> String {
    if offloaded == 0 {
        return "CPU".to_string();
    }
    let names: Vec<&str> = devices
        .offload_targets()
        .iter()
        .map(|d| d.description.as_str())
        .collect();
    format!(
        "{device} ({}), {offloaded}/{total} layers",
        names.join(" + ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DeviceInfo;

    fn device(name: &str, kind: &'static str) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            description: String::new(),
            backend: String::new(),
            kind,
            memory_total_mib: 0,
            memory_free_mib: 0,
        }
    }

    fn found(devices: Vec<DeviceInfo>) -> Devices {
        Devices {
            dynamic_backends: false,
            backends_dir: None,
            cpu_variant: None,
            system_info: String::new(),
            devices,
        }
    }

    #[test]
    fn placement_follows_llama_cpp() {
        let cpu = found(vec![device("CPU", "cpu")]);
        assert_eq!(placement(&cpu, 32, -1), ("CPU".into(), 0, 33));
        assert_eq!(placement(&cpu, 32, 10), ("CPU".into(), 0, 33));
        let gpu = found(vec![device("CPU", "cpu"), device("CUDA0", "gpu")]);
        assert_eq!(placement(&gpu, 32, -1), ("CUDA0".into(), 33, 33));
        assert_eq!(placement(&gpu, 32, 99), ("CUDA0".into(), 33, 33));
        assert_eq!(placement(&gpu, 32, 10), ("CUDA0".into(), 10, 33));
        assert_eq!(placement(&gpu, 32, 0), ("CPU".into(), 0, 33));
        // Integrated GPUs only when there is no discrete one, as llama.cpp picks them.
        let both = found(vec![
            device("CPU", "cpu"),
            device("Vulkan0", "igpu"),
            device("CUDA0", "gpu"),
            device("CUDA1", "gpu"),
        ]);
        assert_eq!(placement(&both, 2, -1), ("CUDA0+CUDA1".into(), 3, 3));
        let igpu = found(vec![device("CPU", "cpu"), device("Vulkan0", "igpu")]);
        assert_eq!(placement(&igpu, 2, -1), ("Vulkan0".into(), 3, 3));
    }
}

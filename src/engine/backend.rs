//! The process-wide llama.cpp backend, initialised once (llama.cpp refuses a second initialisation).

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The initialised backend; the first call also routes llama.cpp's logs into `tracing`.
pub fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| format!("cannot initialise llama.cpp: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

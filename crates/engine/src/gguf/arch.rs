//! The model architectures this build's llama.cpp knows, so a GGUF of any other architecture is refused
//! with its name before llama.cpp sees the file.

/// `LLM_ARCH_NAMES` of llama.cpp's `src/llama-arch.cpp`, in its order, as vendored by llama-cpp-sys-2
/// 0.1.161 (the llama.cpp this binary links). A unit test re-reads that file when the crate's sources are
/// on disk and fails if the lists differ, so a llama.cpp bump cannot leave this table behind unnoticed.
#[rustfmt::skip]
pub const LLM_ARCH_NAMES: &[&str] = &[
    "clip", "llama", "llama4", "deci", "falcon", "grok", "gpt2", "gptj", "gptneox", "mpt", "baichuan",
    "starcoder", "refact", "bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert",
    "jina-bert-v2", "jina-bert-v3", "eurobert", "bloom", "stablelm", "qwen", "qwen2", "qwen2moe",
    "qwen2vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe",
    "clef", "qwen4exp", "phi2", "phi3", "phimoe", "plamo", "plamo2", "plamo3", "codeshell", "orion",
    "internlm2", "minicpm", "minicpm3", "gemma", "gemma2", "gemma3", "gemma3n", "gemma4",
    "gemma4-assistant", "gemma-embedding", "starcoder2", "mamba", "mamba2", "maple", "jamba",
    "falcon-h1", "xverse", "command-r", "cohere2", "cohere2moe", "dbrx", "olmo", "olmo2", "olmoe",
    "muse-glimmer", "openelm", "arctic", "deepseek", "deepseek2", "deepseek2-ocr", "deepseek32",
    "deepseek4", "chatglm", "glm4", "glm4moe", "glm-dsa", "bitnet", "t5", "t5encoder", "jais", "jais2",
    "nemotron", "nemotron_h", "nemotron_h_moe", "exaone", "exaone4", "exaone-moe", "rwkv6",
    "rwkv6qwen2", "rwkv7", "arwkv7", "granite", "granitemoe", "granitehybrid", "graniteswitch",
    "granite_swa", "chameleon", "wavtokenizer-dec", "plm", "bailingmoe", "bailingmoe2", "bailingmoe3",
    "dots1", "dots3note", "arcee", "afmoe", "laguna", "ernie4_5", "ernie4_5-moe", "hunyuan-moe",
    "hunyuan-dense", "hunyuan_vl", "hy_v3", "hy_v4", "smollm3", "gpt-oss", "lfm2", "lfm2moe", "dream",
    "smallthinker", "llada", "llada-moe", "seed_oss", "grovemoe", "apertus", "minimax-01", "hrm_text",
    "minimax-m2", "minimax-m3", "cogvlm", "rnd1", "pangu-embedded", "mistral3", "eagle3", "dflash",
    "mistral4", "paddleocr", "mimo2", "step35", "spark2_5", "llama-embed", "maincoder", "kimi-linear",
    "kimi-k3", "glm5-next", "talkie", "mellum", "nanbeige", "qwen3tts", "pockettts", "(unknown)",
];

/// Names in [`LLM_ARCH_NAMES`] that llama.cpp cannot load as the model to score with, and why.
const NOT_LANGUAGE_MODELS: &[(&str, &str)] = &[
    // llama.cpp: "CLIP cannot be used as main model, use it with --mmproj instead".
    (
        "clip",
        "a vision projector (an mmproj file), not a language model",
    ),
    // llm_arch_from_string's answer for a name it does not know.
    (
        "(unknown)",
        "llama.cpp's placeholder for an unknown architecture",
    ),
];

/// Why llama.cpp cannot load a model of architecture `name`: not in its table, or in it but not a
/// language model. `None` when it can.
pub fn unsupported(name: &str) -> Option<Unsupported> {
    if let Some((_, why)) = NOT_LANGUAGE_MODELS.iter().find(|(n, _)| *n == name) {
        return Some(Unsupported::NotALanguageModel(why));
    }
    (!LLM_ARCH_NAMES.contains(&name)).then_some(Unsupported::Unknown)
}

/// The two ways an architecture name can be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// llama.cpp does not know the name.
    Unknown,
    /// llama.cpp knows it, but it is not a model to score with (the reason).
    NotALanguageModel(&'static str),
}

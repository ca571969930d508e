//! The reader on GGUF files written here byte by byte from the spec, and on the real test models; ggml's
//! own parser (linked into this binary) is the oracle for what llama.cpp accepts.

use std::ffi::{CStr, CString, c_void};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use llama_cpp_sys_2 as sys;

use super::*;

// --- writing GGUF by hand ------------------------------------------------------------------------------

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// One key-value pair: key, value type id, value bytes.
fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut out = string(key.as_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn kv_str(key: &str, value: &str) -> Vec<u8> {
    kv(key, 8, &string(value.as_bytes()))
}

fn kv_u32(key: &str, value: u32) -> Vec<u8> {
    kv(key, 4, &value.to_le_bytes())
}

/// An array value: element type, length, elements.
fn array(element: u32, len: u64, elements: &[u8]) -> Vec<u8> {
    let mut out = element.to_le_bytes().to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(elements);
    out
}

/// A tensor to write: name, dims, ggml type id, and its data size in bytes (worked out by hand).
struct T(&'static str, Vec<u64>, u32, u64);

/// A GGUF file: version, key-value pairs, tensors (laid out one after another, each padded to the
/// alignment, as the spec and ggml require).
struct Synth {
    version: u32,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<T>,
    alignment: u64,
    /// Replaces the offset written for tensor `.0` with `.1`.
    bad_offset: Option<(usize, u64)>,
}

impl Synth {
    /// A valid file: a llama model with an f32 vector and a q4_0 matrix.
    fn new() -> Synth {
        Synth {
            version: 3,
            kvs: vec![
                kv_str("general.architecture", "llama"),
                kv_u32("llama.block_count", 1),
                // An array of strings and one of int32s, as tokenizers write them.
                kv(
                    "tokenizer.ggml.tokens",
                    9,
                    &array(8, 2, &[string(b"a"), string(b"bc")].concat()),
                ),
                kv(
                    "tokenizer.ggml.token_type",
                    9,
                    &array(5, 2, &[1u8, 0, 0, 0, 1, 0, 0, 0]),
                ),
            ],
            // f32 × 8 = 32 bytes; q4_0: 2 rows of one 32-element block of 18 bytes = 36 bytes.
            tensors: vec![
                T("norm.weight", vec![8], 0, 32),
                T("blk.0.w", vec![32, 2], 2, 36),
            ],
            alignment: 32,
            bad_offset: None,
        }
    }

    fn with_kv(mut self, kv: Vec<u8>) -> Synth {
        self.kvs.push(kv);
        self
    }

    fn with_tensor(mut self, t: T) -> Synth {
        self.tensors.push(t);
        self
    }

    /// Where each tensor's data starts, relative to the data section.
    fn offsets(&self) -> Vec<u64> {
        let mut at = 0;
        self.tensors
            .iter()
            .map(|t| {
                let this = at;
                at = (at + t.3).div_ceil(self.alignment) * self.alignment;
                this
            })
            .collect()
    }

    /// The header only (up to the start of the tensor data).
    fn header(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for kv in &self.kvs {
            out.extend_from_slice(kv);
        }
        for (i, (t, offset)) in self.tensors.iter().zip(self.offsets()).enumerate() {
            out.extend_from_slice(&string(t.0.as_bytes()));
            out.extend_from_slice(&(t.1.len() as u32).to_le_bytes());
            for d in &t.1 {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.2.to_le_bytes());
            let offset = match self.bad_offset {
                Some((j, o)) if j == i => o,
                _ => offset,
            };
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(self.alignment as usize), 0);
        out
    }

    /// The whole file: header, then each tensor's data (filled with its index) up to its last byte.
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.header();
        let start = out.len();
        for (i, (t, offset)) in self.tensors.iter().zip(self.offsets()).enumerate() {
            out.resize(start + offset as usize, 0);
            out.extend(std::iter::repeat_n(i as u8, t.3 as usize));
        }
        out
    }
}

fn parse_bytes(bytes: &[u8]) -> Result<Header, GgufError> {
    parse(Cursor::new(bytes), bytes.len() as u64)
}

fn check_bytes(bytes: &[u8]) -> Result<Header, GgufError> {
    let h = parse_bytes(bytes)?;
    check_header(&h)?;
    Ok(h)
}

// --- ggml's parser as the oracle -----------------------------------------------------------------------

/// What ggml's parser reports of a file: counts, alignment, data offset, and per tensor (name, type,
/// offset, size); per key (name, type, array length).
#[derive(Debug, PartialEq)]
struct GgmlView {
    version: u32,
    alignment: u64,
    data_offset: u64,
    tensors: Vec<(String, u32, u64, u64)>,
    keys: Vec<(String, u32, u64)>,
    architecture: Option<String>,
}

/// Reads a ggml gguf context into a [`GgmlView`] and frees it; `None` when ggml refused the file.
fn ggml_view(ctx: *mut sys::gguf_context) -> Option<GgmlView> {
    if ctx.is_null() {
        return None;
    }
    // SAFETY: `ctx` is a live context from gguf_init_*; every id passed is below the counts it reports.
    unsafe {
        let cstr = |p: *const std::ffi::c_char| CStr::from_ptr(p).to_string_lossy().into_owned();
        let tensors = (0..sys::gguf_get_n_tensors(ctx))
            .map(|i| {
                (
                    cstr(sys::gguf_get_tensor_name(ctx, i)),
                    sys::gguf_get_tensor_type(ctx, i),
                    sys::gguf_get_tensor_offset(ctx, i) as u64,
                    sys::gguf_get_tensor_size(ctx, i) as u64,
                )
            })
            .collect();
        let keys = (0..sys::gguf_get_n_kv(ctx))
            .map(|i| {
                let ty = sys::gguf_get_kv_type(ctx, i);
                let len = if ty == sys::GGUF_TYPE_ARRAY {
                    sys::gguf_get_arr_n(ctx, i) as u64
                } else {
                    1
                };
                (cstr(sys::gguf_get_key(ctx, i)), ty, len)
            })
            .collect();
        let key = CString::new("general.architecture").unwrap();
        let at = sys::gguf_find_key(ctx, key.as_ptr());
        let architecture = (at >= 0 && sys::gguf_get_kv_type(ctx, at) == sys::GGUF_TYPE_STRING)
            .then(|| cstr(sys::gguf_get_val_str(ctx, at)));
        let view = GgmlView {
            version: sys::gguf_get_version(ctx),
            alignment: sys::gguf_get_alignment(ctx) as u64,
            data_offset: sys::gguf_get_data_offset(ctx) as u64,
            tensors,
            keys,
            architecture,
        };
        sys::gguf_free(ctx);
        Some(view)
    }
}

fn no_alloc() -> sys::gguf_init_params {
    sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    }
}

/// ggml's reading of `bytes`.
fn ggml_reads(bytes: &[u8]) -> Option<GgmlView> {
    // SAFETY: the buffer outlives the call; no_alloc with no ggml context keeps only the metadata.
    ggml_view(unsafe {
        sys::gguf_init_from_buffer(bytes.as_ptr() as *const c_void, bytes.len(), no_alloc())
    })
}

/// ggml's reading of the file at `path`.
fn ggml_reads_file(path: &Path) -> Option<GgmlView> {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; no_alloc as above.
    ggml_view(unsafe { sys::gguf_init_from_file(p.as_ptr(), no_alloc()) })
}

/// Our reading of a header in ggml's terms, for comparison.
fn view_of(h: &Header) -> GgmlView {
    GgmlView {
        version: h.version,
        alignment: h.alignment,
        data_offset: h.data_offset,
        tensors: h
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.ggml_type.id, t.offset, t.n_bytes))
            .collect(),
        keys: h
            .metadata
            .iter()
            .map(|(k, v)| {
                let ty = v.value_type();
                let id = (0..13)
                    .find(|&i| ValueType::from_id(i) == Some(ty))
                    .unwrap();
                let len = match v {
                    Value::Array { len, .. } => *len,
                    _ => 1,
                };
                (k.clone(), id, len)
            })
            .collect(),
        architecture: match h.get("general.architecture") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        },
    }
}

/// Both readers refuse `bytes`; returns our error.
fn both_refuse(bytes: &[u8]) -> GgufError {
    assert!(ggml_reads(bytes).is_none(), "ggml accepts it");
    let e = parse_bytes(bytes).expect_err("our reader accepts it");
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
    e
}

// --- synthetic files -----------------------------------------------------------------------------------

#[test]
fn a_synthetic_file_reads_as_written_and_as_ggml_reads_it() {
    let s = Synth::new();
    let bytes = s.bytes();
    let h = check_bytes(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.file_size, bytes.len() as u64);
    assert_eq!(h.alignment, 32);
    assert_eq!(h.data_offset, s.header().len() as u64);
    assert_eq!(h.data_offset % 32, 0);
    assert_eq!(
        h.get("general.architecture"),
        Some(&Value::String("llama".into()))
    );
    assert_eq!(h.get("llama.block_count"), Some(&Value::U32(1)));
    assert_eq!(
        h.get("tokenizer.ggml.tokens"),
        Some(&Value::Array {
            element: ValueType::String,
            len: 2
        })
    );
    let shapes: Vec<_> = h
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.dims.clone(),
                t.ggml_type.name,
                t.offset,
                t.n_bytes,
            )
        })
        .collect();
    assert_eq!(
        shapes,
        [
            ("norm.weight", vec![8], "f32", 0, 32),
            ("blk.0.w", vec![32, 2], "q4_0", 32, 36)
        ]
    );
    assert_eq!(ggml_reads(&bytes).expect("ggml reads it"), view_of(&h));
}

#[test]
fn every_truncation_of_a_synthetic_file_is_refused_with_where() {
    let s = Synth::new();
    let bytes = s.bytes();
    let data_start = s.header().len();
    for cut in 0..bytes.len() {
        let e = check_bytes(&bytes[..cut]).expect_err("a truncated file passed");
        let msg = e.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        match (cut, &e) {
            (0..4, GgufError::NotGguf) => {}
            (_, GgufError::HeaderTruncated { size, end, .. }) if cut < data_start => {
                assert_eq!(*size, cut as u64);
                assert!(*end > *size, "{msg}");
                assert!(
                    ggml_reads(&bytes[..cut]).is_none(),
                    "ggml read a cut at {cut}"
                );
            }
            (_, GgufError::DataStart { start, .. }) if cut < data_start => {
                assert_eq!(*start, data_start as u64);
                assert!(
                    ggml_reads(&bytes[..cut]).is_none(),
                    "ggml read a cut at {cut}"
                );
            }
            (_, GgufError::TensorTruncated { tensor, end, size }) if cut >= data_start => {
                // The first tensor whose data the cut reaches into (data written by hand: 32 bytes at
                // 0, 36 bytes at 32).
                let (name, last) = if cut < data_start + 32 {
                    ("norm.weight", data_start + 32)
                } else {
                    ("blk.0.w", data_start + 68)
                };
                assert_eq!(
                    (tensor.as_str(), *end, *size),
                    (name, last as u64, cut as u64)
                );
                assert_eq!(
                    msg,
                    format!(
                        "truncated: tensor `{name}` ends at byte {last} but the file has {cut} bytes"
                    )
                );
            }
            _ => panic!("cut at {cut} of {}: {msg}", bytes.len()),
        }
    }
    // The whole file, without the padding after its last tensor, is complete.
    check_bytes(&bytes).unwrap();
}

#[test]
fn alignment_is_read_from_the_file_and_must_be_a_uint32_power_of_two() {
    let s = Synth::new().with_kv(kv_u32("general.alignment", 64));
    let s = Synth { alignment: 64, ..s };
    let bytes = s.bytes();
    let h = check_bytes(&bytes).unwrap();
    assert_eq!((h.alignment, h.data_offset % 64), (64, 0));
    assert_eq!(h.tensors[1].offset, 64);
    assert_eq!(ggml_reads(&bytes).unwrap(), view_of(&h));

    let odd = Synth::new()
        .with_kv(kv_u32("general.alignment", 48))
        .bytes();
    assert!(
        both_refuse(&odd)
            .to_string()
            .contains("`general.alignment` is 48, not a power of two")
    );
    let wide = Synth::new()
        .with_kv(kv("general.alignment", 10, &32u64.to_le_bytes()))
        .bytes();
    assert!(
        both_refuse(&wide)
            .to_string()
            .contains("is a uint64; llama.cpp requires a uint32")
    );
}

#[test]
fn versions_other_than_2_and_3_are_refused() {
    let v2 = Synth {
        version: 2,
        ..Synth::new()
    }
    .bytes();
    assert_eq!(check_bytes(&v2).unwrap().version, 2);
    assert!(ggml_reads(&v2).is_some());
    for (version, wanted) in [
        (1, "GGUF version 1 is not supported"),
        (4, "GGUF version 4 is not supported"),
        (0x0300_0000, "looks byte-swapped"),
    ] {
        let e = both_refuse(
            &Synth {
                version,
                ..Synth::new()
            }
            .bytes(),
        );
        assert!(e.to_string().contains(wanted), "{e}");
    }
}

#[test]
fn corrupt_metadata_is_refused_as_ggml_refuses_it() {
    let cases: [(Vec<u8>, &str); 5] = [
        (
            kv("x", 13, &[0; 8]),
            "key `x` has value type 13, which GGUF does not define",
        ),
        (
            kv("x", 9, &array(9, 1, &array(4, 0, &[]))),
            "key `x` is an array of arrays",
        ),
        (
            kv_u32("llama.block_count", 2),
            "key `llama.block_count` appears twice",
        ),
        (kv_u32("", 2), "key-value pair 4 has an empty key"),
        (
            kv("x", 9, &array(4, (1 << 30) + 1, &[])),
            "array of 1073741825 elements",
        ),
    ];
    for (pair, wanted) in cases {
        let e = both_refuse(&Synth::new().with_kv(pair).bytes());
        assert!(e.to_string().contains(wanted), "{e}");
    }
}

#[test]
fn corrupt_tensor_infos_are_refused_as_ggml_refuses_them() {
    let long: &'static str = "n".repeat(64).leak();
    let cases = [
        (
            T("t", vec![32], 4, 18),
            "tensor `t` has ggml type 4, which this build",
        ),
        (T("t", vec![32], 99, 18), "tensor `t` has ggml type 99"),
        (
            T("t", vec![16], 2, 9),
            "rows of 16 elements, not a multiple of its block size 32",
        ),
        (
            T("t", vec![1; 5], 0, 4),
            "tensor `t` has 5 dimensions (ggml allows at most 4)",
        ),
        (
            T(long, vec![1], 0, 4),
            "has a tensor name of 64 bytes (at most 63)",
        ),
        (
            T("blk.0.w", vec![1], 0, 4),
            "tensor `blk.0.w` appears twice",
        ),
        (
            T("t", vec![1 << 40, 1 << 40], 0, 4),
            "has more elements than ggml can count",
        ),
        (
            T("t", vec![1 << 63], 0, 4),
            "has more elements than ggml can count",
        ),
    ];
    for (t, wanted) in cases {
        let e = both_refuse(&Synth::new().with_tensor(t).bytes());
        assert!(e.to_string().contains(wanted), "{e}");
    }
    // A tensor whose data does not follow the one before: ggml's parser refuses it, and so does the check.
    let moved = Synth {
        bad_offset: Some((1, 64)),
        ..Synth::new()
    }
    .bytes();
    assert!(ggml_reads(&moved).is_none());
    let e = check_bytes(&moved).unwrap_err();
    assert!(
        e.to_string()
            .contains("tensor `blk.0.w` starts at data offset 64 but llama.cpp expects 32"),
        "{e}"
    );
}

/// A header of `version` 3 with the given counts, followed by `rest`.
fn raw_header(n_tensors: u64, n_kv: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&n_tensors.to_le_bytes());
    out.extend_from_slice(&n_kv.to_le_bytes());
    out.extend_from_slice(rest);
    out
}

#[test]
fn hostile_counts_and_lengths_are_refused_before_anything_is_allocated() {
    // Each would ask for terabytes if trusted (and abort the test process); each must be a quick error.
    let cases = [
        (
            raw_header(1, u64::MAX, &[]),
            "announces 18446744073709551615 key-value pairs",
        ),
        (
            raw_header(1 << 40, 1, &[]),
            "announces 1099511627776 tensors",
        ),
        (
            raw_header(0, 1000, &[0; 100]),
            "truncated inside the header: reading the 1000 key-value pairs and 0 tensor infos it announces",
        ),
        (
            raw_header(0, 1, &kv("k", 9, &array(8, 1 << 29, &[]))),
            "truncated inside the header: reading key-value pair 0 (`k`)",
        ),
        (
            raw_header(0, 1, &kv("k", 8, &u64::MAX.to_le_bytes())),
            "holds a string of 18446744073709551615 bytes",
        ),
        (
            raw_header(0, 1, &[(1u64 << 40).to_le_bytes(), [0; 8]].concat()),
            "has a key name of 1099511627776 bytes (at most 65536)",
        ),
        (
            raw_header(0, 1, &kv("k", 9, &array(4, 1 << 28, &[]))),
            "needs at least 1073741873 bytes",
        ),
    ];
    for (bytes, wanted) in cases {
        let e = both_refuse(&bytes);
        assert!(e.to_string().contains(wanted), "{e}");
    }
}

#[test]
fn the_architecture_must_be_one_llama_cpp_loads() {
    let with_arch = |pair: Option<Vec<u8>>| {
        let mut s = Synth::new();
        s.kvs.remove(0);
        s.kvs.extend(pair);
        s.bytes()
    };
    let e = check_bytes(&with_arch(Some(kv_str("general.architecture", "lllama")))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "architecture `lllama` is not supported by this build's llama.cpp"
    );
    // A name with a line break still gives one line.
    let e = check_bytes(&with_arch(Some(kv_str("general.architecture", "a\nb")))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "architecture `a\\nb` is not supported by this build's llama.cpp"
    );
    for missing in [None, Some(kv_u32("general.architecture", 1))] {
        let e = check_bytes(&with_arch(missing)).unwrap_err();
        assert!(matches!(e, GgufError::NoArchitecture), "{e}");
    }
    for name in ["clip", "(unknown)"] {
        let e = check_bytes(&with_arch(Some(kv_str("general.architecture", name)))).unwrap_err();
        assert!(matches!(e, GgufError::NotALanguageModel(..)), "{e}");
    }
    for name in ["llama", "gemma3", "qwen2", "gpt-oss"] {
        check_bytes(&with_arch(Some(kv_str("general.architecture", name)))).unwrap();
    }
}

#[test]
fn a_file_without_tensors_is_refused() {
    let bytes = Synth {
        tensors: vec![],
        ..Synth::new()
    }
    .bytes();
    assert!(
        ggml_reads(&bytes).is_some(),
        "ggml parses it; llama.cpp fails later"
    );
    assert!(matches!(check_bytes(&bytes), Err(GgufError::NoTensors)));
}

// --- the tables against this build's llama.cpp ---------------------------------------------------------

#[test]
fn the_type_table_matches_the_linked_ggml() {
    for id in 0..sys::GGML_TYPE_COUNT {
        // SAFETY: ids below GGML_TYPE_COUNT index ggml's type table.
        let (block, size, name) = unsafe {
            (
                sys::ggml_blck_size(id) as u64,
                sys::ggml_type_size(id) as u64,
                CStr::from_ptr(sys::ggml_type_name(id)).to_string_lossy(),
            )
        };
        match GgmlType::from_id(id) {
            Some(t) => assert_eq!(
                (t.name, t.block_size, t.type_size),
                (name.as_ref(), block, size),
                "type {id}"
            ),
            None => assert_eq!(block, 0, "type {id} ({name}) is missing from GGML_TYPES"),
        }
    }
    assert!(GgmlType::from_id(sys::GGML_TYPE_COUNT).is_none());
}

/// The llama.cpp sources llama-cpp-sys-2 was built from (the version in Cargo.lock, in cargo's
/// registry), when they are on disk.
fn vendored_llama_cpp() -> Option<PathBuf> {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).ok()?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"llama-cpp-sys-2\"\n"))?
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))?
        .trim_end_matches('"')
        .to_string();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .flatten()
        .map(|e| {
            e.path()
                .join(format!("llama-cpp-sys-2-{version}/llama.cpp"))
        })
        .find(|p| p.is_dir())
}

#[test]
fn the_architecture_table_matches_the_vendored_llama_cpp() {
    let Some(dir) = vendored_llama_cpp() else {
        // Past the test harness's capture, so CI logs show it.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: llama-cpp-sys-2's sources are not in cargo's registry here"
        );
        return;
    };
    let source = std::fs::read_to_string(dir.join("src/llama-arch.cpp")).unwrap();
    let table = source
        .split("LLM_ARCH_NAMES = {")
        .nth(1)
        .and_then(|rest| rest.split("\n};").next())
        .expect("LLM_ARCH_NAMES in llama-arch.cpp");
    let names: Vec<&str> = table
        .lines()
        .filter(|l| l.trim_start().starts_with("{ LLM_ARCH_"))
        .map(|l| l.split('"').nth(1).expect("a quoted name"))
        .collect();
    assert_eq!(
        arch::LLM_ARCH_NAMES,
        names.as_slice(),
        "crates/engine/src/gguf/arch.rs is out of date with {}",
        dir.display()
    );
}

// --- the real test models ------------------------------------------------------------------------------

const MODELS: [(&str, &str, usize); 2] = [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "llama", 272),
    ("gemma-3-270m-q4_k_m.gguf", "gemma3", 236),
];

#[test]
fn the_test_models_pass_and_read_as_ggml_reads_them() {
    for (file, architecture, n_tensors) in MODELS {
        let path = crate::test_models::model_path(file);
        let h = check(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            h.get("general.architecture"),
            Some(&Value::String(architecture.into()))
        );
        assert_eq!(h.tensors.len(), n_tensors, "{file}");
        assert_eq!(h.file_size, std::fs::metadata(&path).unwrap().len());
        assert_eq!(
            ggml_reads_file(&path).expect("ggml reads it"),
            view_of(&h),
            "{file}"
        );
    }
}

#[test]
fn truncated_test_models_are_refused_at_the_right_place() {
    let path = crate::test_models::model_path(MODELS[0].0);
    let h = read(&path).unwrap();
    let last = h.tensors.last().unwrap();
    let data_end = h.data_offset + last.offset + last.n_bytes;
    // Truncation is simulated by telling the reader the file is shorter.
    let cut = |size: u64| {
        let f = std::fs::File::open(&path).unwrap();
        parse(f, size).and_then(|h| check_header(&h).map(|_| h))
    };
    for size in [0, 3, 10, 100, 1_000_000, h.data_offset - 100] {
        match cut(size) {
            Err(GgufError::NotGguf) if size < 4 => {}
            Err(GgufError::HeaderTruncated { size: s, .. }) => assert_eq!(s, size),
            other => panic!("cut at {size}: {other:?}"),
        }
    }
    for size in [h.data_offset + 1000, 50_000_000, data_end - 1] {
        match cut(size) {
            Err(GgufError::TensorTruncated {
                tensor,
                end,
                size: s,
            }) => {
                assert_eq!(s, size);
                // The named tensor is the first one (in file order) that reaches past the cut.
                let t = h.tensors.iter().find(|t| t.name == tensor).unwrap();
                assert_eq!(end, h.data_offset + t.offset + t.n_bytes);
                assert!(end > size);
                assert!(
                    h.tensors
                        .iter()
                        .take_while(|u| u.name != tensor)
                        .all(|u| h.data_offset + u.offset + u.n_bytes <= size)
                );
            }
            other => panic!("cut at {size}: {other:?}"),
        }
    }
    assert!(
        cut(data_end).is_ok(),
        "the file without its last tensor's padding is whole"
    );
}

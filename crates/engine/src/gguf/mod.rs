//! GGUF model files read and checked in plain Rust before llama.cpp sees them. llama.cpp reports a
//! truncated file, an unknown architecture or a corrupt header as a bare failure (and may abort on some
//! corrupt inputs); here each is one line that says what is wrong and where, so start-up can refuse the
//! file naming the policy.

pub mod arch;
pub mod ggml_type;
mod header;
mod reader;
#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;

pub use ggml_type::GgmlType;
pub use header::{
    DEFAULT_ALIGNMENT, Header, MAX_KEY_VALUES, MAX_TENSORS, Tensor, Value, ValueType, parse, read,
};

/// Why a file is not a GGUF model this build's llama.cpp can load; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (it does not start with the GGUF magic bytes)")]
    NotGguf,
    #[error("GGUF version {0} is not supported: this build's llama.cpp reads versions 2 and 3")]
    Version(u32),
    #[error(
        "GGUF version {0:#010x} looks byte-swapped: a big-endian file? this build reads little-endian GGUF"
    )]
    ByteSwapped(u32),
    #[error(
        "truncated inside the header: reading {part} needs at least {end} bytes, but the file has {size}"
    )]
    HeaderTruncated { part: String, end: u64, size: u64 },
    #[error("implausible header: {0}")]
    Implausible(String),
    #[error("corrupt header: {0}")]
    Corrupt(String),
    #[error("tensor `{tensor}` has ggml type {id}, which this build's llama.cpp does not know")]
    UnknownType { tensor: String, id: u32 },
    #[error("holds no tensors")]
    NoTensors,
    #[error("truncated: the tensor data would start at byte {start} but the file has {size} bytes")]
    DataStart { start: u64, size: u64 },
    #[error("truncated: tensor `{tensor}` ends at byte {end} but the file has {size} bytes")]
    TensorTruncated { tensor: String, end: u64, size: u64 },
    #[error("no `general.architecture` string: llama.cpp cannot tell what model this is")]
    NoArchitecture,
    #[error("architecture `{0}` is not supported by this build's llama.cpp")]
    Architecture(String),
    #[error("architecture `{0}` is {1}; it cannot be loaded as the model to score with")]
    NotALanguageModel(String, &'static str),
}

/// Reads the header of the GGUF file at `path` and checks what llama.cpp would otherwise fail on late,
/// vaguely, or by aborting: a header that does not parse within the file, implausible counts, unknown
/// types, tensor data past the end of the file, an architecture this build does not know.
pub fn check(path: &Path) -> Result<Header, GgufError> {
    let header = read(path)?;
    check_header(&header)?;
    Ok(header)
}

/// The checks of [`check`] on a parsed header: every tensor's data lies within the file where llama.cpp
/// expects it, and the architecture is one llama.cpp can load.
pub fn check_header(h: &Header) -> Result<(), GgufError> {
    check_extents(h)?;
    check_architecture(h)
}

fn check_extents(h: &Header) -> Result<(), GgufError> {
    if h.tensors.is_empty() {
        return Err(GgufError::NoTensors);
    }
    if h.data_offset > h.file_size {
        return Err(GgufError::DataStart {
            start: h.data_offset,
            size: h.file_size,
        });
    }
    // ggml requires the tensors in file order, each at the padded end of the one before.
    let mut expected = 0u64;
    for t in &h.tensors {
        if t.offset != expected {
            return Err(GgufError::Corrupt(format!(
                "tensor `{}` starts at data offset {} but llama.cpp expects {expected} (each tensor \
                 follows the one before, padded to {} bytes)",
                shown(&t.name),
                t.offset,
                h.alignment
            )));
        }
        let end = h
            .data_offset
            .checked_add(t.offset)
            .and_then(|start| start.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= h.file_size => {}
            _ => {
                return Err(GgufError::TensorTruncated {
                    tensor: shown(&t.name),
                    end: end.unwrap_or(u64::MAX),
                    size: h.file_size,
                });
            }
        }
        // Cannot overflow: offset + n_bytes ≤ file size, and padding adds less than the alignment.
        expected = (t.offset + t.n_bytes).next_multiple_of(h.alignment);
    }
    Ok(())
}

fn check_architecture(h: &Header) -> Result<(), GgufError> {
    let name = match h.get("general.architecture") {
        Some(Value::String(s)) => s,
        Some(Value::LongString(len)) => {
            return Err(GgufError::Architecture(format!(
                "<a string of {len} bytes>"
            )));
        }
        _ => return Err(GgufError::NoArchitecture),
    };
    match arch::unsupported(name) {
        None => Ok(()),
        Some(arch::Unsupported::Unknown) => Err(GgufError::Architecture(shown(name))),
        Some(arch::Unsupported::NotALanguageModel(why)) => {
            Err(GgufError::NotALanguageModel(shown(name), why))
        }
    }
}

/// A name read from a file, fit for a one-line message: control characters escaped, at most 80
/// characters kept.
pub(crate) fn shown(s: &str) -> String {
    const KEEP: usize = 80;
    let mut out: String = s
        .chars()
        .take(KEEP)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().nth(KEEP).is_some() {
        out.push('…');
    }
    out
}

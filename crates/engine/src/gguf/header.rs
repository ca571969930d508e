//! A GGUF header parsed as ggml's own reader (ggml/src/gguf.cpp) parses it, with the same refusals, so
//! what this accepts llama.cpp's parser accepts too; see the GGUF spec,
//! <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use super::ggml_type::GgmlType;
use super::reader::Reader;
use super::{GgufError, shown};

/// Tensor data starts at a multiple of this many bytes unless `general.alignment` says otherwise.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// More tensors than this is refused as implausible (the largest published models have a few
/// thousand); it bounds the memory a hostile header can make the reader use.
pub const MAX_TENSORS: u64 = 1 << 20;
/// More key-value pairs than this is refused as implausible (real models have a few dozen).
pub const MAX_KEY_VALUES: u64 = 1 << 16;
/// Longest key read (real keys are a few dozen bytes; ggml allows 1 GiB).
pub const MAX_KEY_BYTES: u64 = 1 << 16;
/// String values up to this length are kept; longer ones are skipped and only their length kept.
pub const MAX_KEPT_STRING: u64 = 1 << 20;
/// ggml's limits on one string and on one array's length (`GGUF_MAX_STRING_LENGTH`,
/// `GGUF_MAX_ARRAY_ELEMENTS`).
const GGML_MAX_STRING: u64 = 1 << 30;
const GGML_MAX_ARRAY: u64 = 1 << 30;
/// ggml's `GGML_MAX_NAME`: a tensor name has at most 63 bytes.
const MAX_TENSOR_NAME: u64 = 63;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// The fewest bytes a key-value pair can take (key length, a 1-byte key, value type, a 1-byte value).
const MIN_KEY_VALUE_BYTES: u64 = 8 + 1 + 4 + 1;
/// The fewest bytes a tensor info can take (name length, a 1-byte name, dimension count, type, offset).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 4 + 8;

/// The type of a metadata value, by its GGUF id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// The type with GGUF id `id` (0–12), if any.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        const BY_ID: [ValueType; 13] = [
            U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
        ];
        BY_ID.get(id as usize).copied()
    }

    /// The spec's name, for messages.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "uint8",
            I8 => "int8",
            U16 => "uint16",
            I16 => "int16",
            U32 => "uint32",
            I32 => "int32",
            F32 => "float32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "uint64",
            I64 => "int64",
            F64 => "float64",
        }
    }

    /// Bytes of one value of a fixed-size type (`None` for strings and arrays).
    fn fixed_size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

/// A metadata value. Arrays keep their element type and length, not their elements (the tokenizer's
/// hundreds of thousands of strings are not needed to check a file).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    /// A string of at most [`MAX_KEPT_STRING`] bytes (invalid UTF-8 replaced).
    String(String),
    /// A longer string, skipped: its length in bytes.
    LongString(u64),
    U64(u64),
    I64(i64),
    F64(f64),
    Array {
        element: ValueType,
        len: u64,
    },
}

impl Value {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) | Value::LongString(_) => ValueType::String,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
            Value::Array { .. } => ValueType::Array,
        }
    }
}

/// One tensor info: where a tensor's data lies and how large it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// Elements per dimension, innermost first (ggml's `ne`).
    pub dims: Vec<u64>,
    pub ggml_type: &'static GgmlType,
    /// Start of the data, relative to the data section ([`Header::data_offset`]).
    pub offset: u64,
    /// Size of the data in bytes (ggml's `ggml_nbytes`).
    pub n_bytes: u64,
}

/// Everything before the tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    /// Size of the whole file in bytes.
    pub file_size: u64,
    /// The key-value pairs, in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
    /// `general.alignment`, else [`DEFAULT_ALIGNMENT`].
    pub alignment: u64,
    /// Where the data section starts in the file.
    pub data_offset: u64,
}

impl Header {
    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }
}

/// Opens and parses the header of the GGUF file at `path`.
pub fn read(path: &Path) -> Result<Header, GgufError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    parse(file, size)
}

/// Parses the header of a GGUF file of `size` bytes read from `inner` (at its start); refuses what ggml's
/// reader refuses, each time with a one-line reason.
pub fn parse<R: Read + Seek>(inner: R, size: u64) -> Result<Header, GgufError> {
    if size < 4 {
        return Err(GgufError::NotGguf);
    }
    let mut r = Reader::new(inner, size);
    r.part = "the magic bytes".into();
    if &r.array::<4>()? != b"GGUF" {
        return Err(GgufError::NotGguf);
    }
    r.part = "the version and counts".into();
    let version = r.u32()?;
    match version {
        2 | 3 => {}
        v if v & 0xffff == 0 => return Err(GgufError::ByteSwapped(v)),
        v => return Err(GgufError::Version(v)),
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    if n_kv > MAX_KEY_VALUES {
        return Err(GgufError::Implausible(format!(
            "it announces {n_kv} key-value pairs (at most {MAX_KEY_VALUES} are accepted)"
        )));
    }
    if n_tensors > MAX_TENSORS {
        return Err(GgufError::Implausible(format!(
            "it announces {n_tensors} tensors (at most {MAX_TENSORS} are accepted)"
        )));
    }
    r.part = format!("the {n_kv} key-value pairs and {n_tensors} tensor infos it announces");
    r.need(n_kv * MIN_KEY_VALUE_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES)?;

    let metadata = read_metadata(&mut r, n_kv)?;
    let alignment = alignment(&metadata)?;
    let tensors = read_tensor_infos(&mut r, n_tensors)?;
    // ggml aligns the data section only when there are tensors.
    let data_offset = if tensors.is_empty() {
        r.pos()
    } else {
        r.pos().next_multiple_of(alignment)
    };
    Ok(Header {
        version,
        file_size: r.size(),
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn read_metadata<R: Read + Seek>(
    r: &mut Reader<R>,
    n_kv: u64,
) -> Result<Vec<(String, Value)>, GgufError> {
    let mut metadata = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..n_kv {
        let key = read_name(r, &mut seen, &KEY_NAME, i)?;
        if key.is_empty() {
            return Err(GgufError::Corrupt(format!(
                "key-value pair {i} has an empty key"
            )));
        }
        let ty = value_type(r, &key)?;
        let value = read_value(r, ty, &key)?;
        metadata.push((key, value));
    }
    Ok(metadata)
}

/// The name that starts each key-value pair or tensor info: what the items are called in messages, and
/// how long a name may be.
struct NameRule {
    item: &'static str,
    noun: &'static str,
    max: u64,
}

const KEY_NAME: NameRule = NameRule {
    item: "key-value pair",
    noun: "key",
    max: MAX_KEY_BYTES,
};

const TENSOR_NAME: NameRule = NameRule {
    item: "tensor info",
    noun: "tensor",
    max: MAX_TENSOR_NAME,
};

/// Reads the length-prefixed name that starts item `i` under `rule`: at most `rule.max` bytes, and not
/// one already in `seen`. From here on, errors say which item they are in.
fn read_name<R: Read + Seek>(
    r: &mut Reader<R>,
    seen: &mut HashSet<String>,
    rule: &NameRule,
    i: u64,
) -> Result<String, GgufError> {
    let (item, noun, max) = (format!("{} {i}", rule.item), rule.noun, rule.max);
    r.part = item.clone();
    let len = r.u64()?;
    if len > max {
        return Err(GgufError::Corrupt(format!(
            "{item} has a {noun} name of {len} bytes (at most {max})"
        )));
    }
    let name = String::from_utf8_lossy(&r.bytes(len)?).into_owned();
    r.part = format!("{item} (`{}`)", shown(&name));
    if !seen.insert(name.clone()) {
        return Err(GgufError::Corrupt(format!(
            "{noun} `{}` appears twice",
            shown(&name)
        )));
    }
    Ok(name)
}

/// The next value-type id, which must be one of the spec's.
fn value_type<R: Read + Seek>(r: &mut Reader<R>, key: &str) -> Result<ValueType, GgufError> {
    let id = r.u32()?;
    ValueType::from_id(id).ok_or_else(|| {
        GgufError::Corrupt(format!(
            "key `{}` has value type {id}, which GGUF does not define",
            shown(key)
        ))
    })
}

fn read_value<R: Read + Seek>(
    r: &mut Reader<R>,
    ty: ValueType,
    key: &str,
) -> Result<Value, GgufError> {
    Ok(match ty {
        ValueType::U8 => Value::U8(u8::from_le_bytes(r.array()?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(r.array()?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(r.array()?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(r.array()?)),
        ValueType::U32 => Value::U32(r.u32()?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(r.array()?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(r.array()?)),
        // ggml reads any non-zero byte as true.
        ValueType::Bool => Value::Bool(r.array::<1>()?[0] != 0),
        ValueType::U64 => Value::U64(r.u64()?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(r.array()?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(r.array()?)),
        ValueType::String => {
            let len = string_len(r, key)?;
            if len <= MAX_KEPT_STRING {
                Value::String(String::from_utf8_lossy(&r.bytes(len)?).into_owned())
            } else {
                r.skip(len)?;
                Value::LongString(len)
            }
        }
        ValueType::Array => {
            let element = value_type(r, key)?;
            if element == ValueType::Array {
                // The spec allows nesting; ggml (and so llama.cpp) refuses it.
                return Err(GgufError::Corrupt(format!(
                    "key `{}` is an array of arrays, which llama.cpp does not read",
                    shown(key)
                )));
            }
            let len = r.u64()?;
            if len > GGML_MAX_ARRAY {
                return Err(GgufError::Implausible(format!(
                    "key `{}` is an array of {len} elements (llama.cpp reads at most {GGML_MAX_ARRAY})",
                    shown(key)
                )));
            }
            skip_array(r, element, len, key)?;
            Value::Array { element, len }
        }
    })
}

/// Moves past `len` elements of type `element` without keeping them.
fn skip_array<R: Read + Seek>(
    r: &mut Reader<R>,
    element: ValueType,
    len: u64,
    key: &str,
) -> Result<(), GgufError> {
    match element.fixed_size() {
        Some(size) => r.skip(len.saturating_mul(size)),
        None => {
            // Each string takes at least its 8-byte length: refuse a count the file cannot hold before
            // looping over it.
            r.need(len.saturating_mul(8))?;
            for _ in 0..len {
                let n = string_len(r, key)?;
                r.skip(n)?;
            }
            Ok(())
        }
    }
}

/// The next string length, within ggml's limit.
fn string_len<R: Read + Seek>(r: &mut Reader<R>, key: &str) -> Result<u64, GgufError> {
    let len = r.u64()?;
    if len > GGML_MAX_STRING {
        return Err(GgufError::Implausible(format!(
            "key `{}` holds a string of {len} bytes (llama.cpp reads at most {GGML_MAX_STRING})",
            shown(key)
        )));
    }
    Ok(len)
}

/// `general.alignment` as ggml requires it: a uint32 power of two.
fn alignment(metadata: &[(String, Value)]) -> Result<u64, GgufError> {
    match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some((_, Value::U32(a))) => Err(GgufError::Corrupt(format!(
            "`general.alignment` is {a}, not a power of two"
        ))),
        Some((_, v)) => Err(GgufError::Corrupt(format!(
            "`general.alignment` is a {}; llama.cpp requires a uint32",
            v.value_type().name()
        ))),
    }
}

fn read_tensor_infos<R: Read + Seek>(
    r: &mut Reader<R>,
    n_tensors: u64,
) -> Result<Vec<Tensor>, GgufError> {
    let mut tensors = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..n_tensors {
        let name = read_name(r, &mut seen, &TENSOR_NAME, i)?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::Corrupt(format!(
                "tensor `{}` has {n_dims} dimensions (ggml allows at most {MAX_DIMS})",
                shown(&name)
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let id = r.u32()?;
        let ggml_type = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownType {
            tensor: shown(&name),
            id,
        })?;
        let offset = r.u64()?;
        let n_bytes = n_bytes(&name, &dims, ggml_type)?;
        tensors.push(Tensor {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }
    Ok(tensors)
}

/// Bytes of a tensor's data (ggml's `ggml_nbytes` for a contiguous tensor), refusing what ggml refuses:
/// a dimension that is negative as ggml reads it (int64), an element count past int64, a row that is not
/// a whole number of blocks.
fn n_bytes(name: &str, dims: &[u64], ty: &GgmlType) -> Result<u64, GgufError> {
    let too_large = || {
        GgufError::Implausible(format!(
            "tensor `{}` of shape {dims:?} has more elements than ggml can count",
            shown(name)
        ))
    };
    let mut elements: u64 = 1;
    for &d in dims {
        if d > i64::MAX as u64 {
            return Err(too_large());
        }
        elements = elements.saturating_mul(d);
    }
    if elements > i64::MAX as u64 {
        return Err(too_large());
    }
    let row = dims.first().copied().unwrap_or(1);
    if row % ty.block_size != 0 {
        return Err(GgufError::Corrupt(format!(
            "tensor `{}` of type {} has rows of {row} elements, not a multiple of its block size {}",
            shown(name),
            ty.name,
            ty.block_size
        )));
    }
    (elements / ty.block_size)
        .checked_mul(ty.type_size)
        .ok_or_else(too_large)
}

//! Bounded reads of a GGUF header: every read first checks that the bytes lie within the file, so a
//! truncated or hostile header ends in an error that says where, never in a short read, a panic or an
//! allocation larger than the file.

use std::io::{BufReader, Read, Seek};

use super::GgufError;

/// A position in a file of known size, and what is being read there (for error messages).
pub(super) struct Reader<R> {
    inner: BufReader<R>,
    pos: u64,
    size: u64,
    /// The part of the header being read, e.g. "key-value pair 3 (`general.name`)".
    pub part: String,
}

impl<R: Read + Seek> Reader<R> {
    /// Reads `inner` (positioned at byte 0) of `size` bytes.
    pub fn new(inner: R, size: u64) -> Self {
        Reader {
            inner: BufReader::with_capacity(1 << 16, inner),
            pos: 0,
            size,
            part: String::new(),
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes between the position and the end of the file.
    pub fn remaining(&self) -> u64 {
        self.size - self.pos
    }

    /// An error unless `n` more bytes lie within the file.
    pub fn need(&self, n: u64) -> Result<(), GgufError> {
        if n <= self.remaining() {
            return Ok(());
        }
        Err(GgufError::HeaderTruncated {
            part: self.part.clone(),
            end: self.pos.saturating_add(n),
            size: self.size,
        })
    }

    /// The next `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        self.need(N as u64)?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf)?;
        self.pos += N as u64;
        Ok(buf)
    }

    pub fn u32(&mut self) -> Result<u32, GgufError> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, GgufError> {
        self.array().map(u64::from_le_bytes)
    }

    /// The next `n` bytes (at most what is left of the file, so never more memory than the file's size).
    pub fn bytes(&mut self, n: u64) -> Result<Vec<u8>, GgufError> {
        self.need(n)?;
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf)?;
        self.pos += n;
        Ok(buf)
    }

    /// Moves past the next `n` bytes without reading them into memory.
    pub fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.need(n)?;
        // `n` fits in i64: it is at most the file's size.
        self.inner.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }
}

//! Bounds-checked big-endian reading and writing helpers.

use super::CodecError;

/// A cursor over untrusted bytes; every read checks the remaining length.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated {
                what: self.what,
                need: n,
                have: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        self.bytes(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok((hi << 32) | lo)
    }

    /// Reads `n` (at most 16) bytes as a big-endian number.
    pub(crate) fn uint(&mut self, n: usize) -> Result<u128, CodecError> {
        if n > 16 {
            return Err(CodecError::BadLength {
                what: self.what,
                len: n,
            });
        }
        Ok(be_to_u128(self.bytes(n)?))
    }
}

/// A big-endian byte string (at most 16 bytes) as a number.
pub(crate) fn be_to_u128(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |acc, x| (acc << 8) | u128::from(*x))
}

/// Appends the low `n` bytes of `v`, big-endian.
pub(crate) fn put_uint(out: &mut Vec<u8>, v: u128, n: usize) {
    let b = v.to_be_bytes();
    out.extend_from_slice(&b[16 - n.min(16)..]);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Pads `out` with zeros so that the bytes written since `start` are a multiple of 8.
pub(crate) fn pad8(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    out.resize(out.len() + (8 - len % 8) % 8, 0);
}

/// Writes the 16-bit length at `at` (`start` of a TLV whose length field is at `start + 2`).
pub(crate) fn patch_len(out: &mut [u8], start: usize) {
    let len = (out.len() - start).min(usize::from(u16::MAX)) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

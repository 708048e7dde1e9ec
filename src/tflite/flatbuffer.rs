//! A small, bounds-checked FlatBuffers reader: just enough of the wire format to walk a
//! `.tflite` file (tables with vtables, offsets, vectors of scalars / tables, strings).
//!
//! Every access is checked against the buffer, so a truncated or corrupt model file turns
//! into an error naming the table field instead of a panic or undefined behaviour. The
//! `flatbuffers` crate's accessors are `unsafe` unless the whole buffer is first run through
//! its verifier with generated code; the handful of tables we need do not justify generated
//! code, so we read them by slot number (see `schema.rs`).

use std::fmt;

/// Where reading the flatbuffer failed: the field being read and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatbufferError {
    pub field: &'static str,
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for FlatbufferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", self.field, self.offset, self.reason)
    }
}

impl std::error::Error for FlatbufferError {}

pub type Result<T> = std::result::Result<T, FlatbufferError>;

fn err<T>(field: &'static str, offset: usize, reason: &'static str) -> Result<T> {
    Err(FlatbufferError {
        field,
        offset,
        reason,
    })
}

fn read_array<const N: usize>(buf: &[u8], pos: usize, field: &'static str) -> Result<[u8; N]> {
    match pos.checked_add(N).and_then(|end| buf.get(pos..end)) {
        Some(bytes) => Ok(bytes.try_into().expect("slice has length N")),
        None => err(field, pos, "read past the end of the buffer"),
    }
}

fn read_u16(buf: &[u8], pos: usize, field: &'static str) -> Result<u16> {
    Ok(u16::from_le_bytes(read_array(buf, pos, field)?))
}

fn read_u32(buf: &[u8], pos: usize, field: &'static str) -> Result<u32> {
    Ok(u32::from_le_bytes(read_array(buf, pos, field)?))
}

fn read_i32(buf: &[u8], pos: usize, field: &'static str) -> Result<i32> {
    Ok(i32::from_le_bytes(read_array(buf, pos, field)?))
}

/// Follows a `uoffset_t` stored at `pos` (relative to `pos` itself).
fn follow(buf: &[u8], pos: usize, field: &'static str) -> Result<usize> {
    let rel = read_u32(buf, pos, field)? as usize;
    match pos.checked_add(rel) {
        Some(target) if target < buf.len() => Ok(target),
        _ => err(field, pos, "offset points outside the buffer"),
    }
}

/// Scalars stored inline in tables and vectors.
pub trait Scalar: Sized + Copy {
    const SIZE: usize;
    fn read(buf: &[u8], pos: usize, field: &'static str) -> Result<Self>;
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(buf: &[u8], pos: usize, field: &'static str) -> Result<Self> {
                Ok(<$t>::from_le_bytes(read_array(buf, pos, field)?))
            }
        }
    )*};
}
scalar!(u8, i8, u16, i16, u32, i32, u64, i64, f32);

/// The root table of a finished buffer, after checking the 4-byte file identifier.
pub fn root<'a>(buf: &'a [u8], identifier: &[u8; 4]) -> Result<Table<'a>> {
    let found = read_array::<4>(buf, 4, "file identifier")?;
    if &found != identifier {
        return err("file identifier", 4, "unexpected file identifier");
    }
    Table::at(buf, follow(buf, 0, "root offset")?, "root table")
}

/// A table: its position and its vtable.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'a> Table<'a> {
    fn at(buf: &'a [u8], pos: usize, field: &'static str) -> Result<Self> {
        let soffset = read_i32(buf, pos, field)? as i64;
        let vtable = pos as i64 - soffset;
        if vtable < 0 || vtable as usize >= buf.len() {
            return err(field, pos, "vtable outside the buffer");
        }
        let vtable = vtable as usize;
        let vtable_len = read_u16(buf, vtable, field)? as usize;
        if vtable_len < 4 || vtable + vtable_len > buf.len() {
            return err(field, vtable, "malformed vtable");
        }
        Ok(Table {
            buf,
            pos,
            vtable,
            vtable_len,
        })
    }

    /// Absolute position of field `slot` (0-based, in schema declaration order; a union
    /// takes two slots: its type then its value), or `None` when absent.
    fn field_pos(&self, slot: usize, field: &'static str) -> Result<Option<usize>> {
        let entry = 4 + 2 * slot;
        if entry + 2 > self.vtable_len {
            return Ok(None);
        }
        let rel = read_u16(self.buf, self.vtable + entry, field)? as usize;
        Ok(if rel == 0 { None } else { Some(self.pos + rel) })
    }

    /// A scalar field, or `default` when absent.
    pub fn scalar<T: Scalar>(&self, slot: usize, default: T, field: &'static str) -> Result<T> {
        match self.field_pos(slot, field)? {
            Some(pos) => T::read(self.buf, pos, field),
            None => Ok(default),
        }
    }

    pub fn boolean(&self, slot: usize, default: bool, field: &'static str) -> Result<bool> {
        Ok(self.scalar::<u8>(slot, default as u8, field)? != 0)
    }

    /// A sub-table field.
    pub fn table(&self, slot: usize, field: &'static str) -> Result<Option<Table<'a>>> {
        match self.field_pos(slot, field)? {
            Some(pos) => Ok(Some(Table::at(
                self.buf,
                follow(self.buf, pos, field)?,
                field,
            )?)),
            None => Ok(None),
        }
    }

    /// Position and length of a vector field's elements.
    fn vector(
        &self,
        slot: usize,
        elem_size: usize,
        field: &'static str,
    ) -> Result<Option<(usize, usize)>> {
        let Some(pos) = self.field_pos(slot, field)? else {
            return Ok(None);
        };
        let start = follow(self.buf, pos, field)?;
        let len = read_u32(self.buf, start, field)? as usize;
        let data = start + 4;
        match len.checked_mul(elem_size).and_then(|n| data.checked_add(n)) {
            Some(end) if end <= self.buf.len() => Ok(Some((data, len))),
            _ => err(field, start, "vector extends past the end of the buffer"),
        }
    }

    /// A vector of scalars (empty when absent).
    pub fn scalars<T: Scalar>(&self, slot: usize, field: &'static str) -> Result<Vec<T>> {
        let Some((data, len)) = self.vector(slot, T::SIZE, field)? else {
            return Ok(Vec::new());
        };
        (0..len)
            .map(|i| T::read(self.buf, data + i * T::SIZE, field))
            .collect()
    }

    /// A byte vector, borrowed from the buffer (`None` when absent).
    pub fn bytes(&self, slot: usize, field: &'static str) -> Result<Option<&'a [u8]>> {
        Ok(self
            .vector(slot, 1, field)?
            .map(|(data, len)| &self.buf[data..data + len]))
    }

    /// A string field (lossy UTF-8; names are only used in messages).
    pub fn string(&self, slot: usize, field: &'static str) -> Result<Option<String>> {
        Ok(self
            .bytes(slot, field)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// A vector of tables (empty when absent).
    pub fn tables(&self, slot: usize, field: &'static str) -> Result<Vec<Table<'a>>> {
        let Some((data, len)) = self.vector(slot, 4, field)? else {
            return Ok(Vec::new());
        };
        (0..len)
            .map(|i| {
                let at = data + 4 * i;
                Table::at(self.buf, follow(self.buf, at, field)?, field)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-assembled buffer: root table with a u32 scalar (slot 0), an absent slot 1, an
    /// i32 vector (slot 2), a string (slot 3) and one sub-table (slot 4) holding a bool.
    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 128];
        let put_u32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put_u16 =
            |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        put_u32(&mut b, 0, 24); // root table at 24
        b[4..8].copy_from_slice(b"TEST");
        // vtable at 8: size 14 (5 slots), table size 20
        put_u16(&mut b, 8, 14);
        put_u16(&mut b, 10, 20);
        put_u16(&mut b, 12, 4); // slot 0 at table+4
        put_u16(&mut b, 14, 0); // slot 1 absent
        put_u16(&mut b, 16, 8); // slot 2 at table+8
        put_u16(&mut b, 18, 12); // slot 3 at table+12
        put_u16(&mut b, 20, 16); // slot 4 at table+16
                                 // table at 24: soffset = 24 - 8 = 16
        put_u32(&mut b, 24, 16);
        put_u32(&mut b, 28, 77);
        put_u32(&mut b, 32, 48 - 32); // vector at 48
        put_u32(&mut b, 36, 64 - 36); // string at 64
        put_u32(&mut b, 40, 80 - 40); // sub-table at 80
        put_u32(&mut b, 48, 3);
        put_u32(&mut b, 52, 5);
        put_u32(&mut b, 56, (-6i32) as u32);
        put_u32(&mut b, 60, 7);
        put_u32(&mut b, 64, 2);
        b[68..70].copy_from_slice(b"hi");
        // sub-table vtable at 72: size 6, table size 8, slot 0 at +4
        put_u16(&mut b, 72, 6);
        put_u16(&mut b, 74, 8);
        put_u16(&mut b, 76, 4);
        put_u32(&mut b, 80, 8); // soffset: 80 - 72
        b[84] = 1;
        b
    }

    #[test]
    fn reads_fields_and_defaults() {
        let buf = sample();
        let t = root(&buf, b"TEST").unwrap();
        assert_eq!(t.scalar::<u32>(0, 0, "a").unwrap(), 77);
        assert_eq!(t.scalar::<i32>(1, -3, "b").unwrap(), -3);
        assert_eq!(t.scalar::<i32>(9, 42, "beyond vtable").unwrap(), 42);
        assert_eq!(t.scalars::<i32>(2, "v").unwrap(), vec![5, -6, 7]);
        assert_eq!(t.string(3, "s").unwrap().as_deref(), Some("hi"));
        let sub = t.table(4, "sub").unwrap().unwrap();
        assert!(sub.boolean(0, false, "flag").unwrap());
        assert!(t.table(1, "absent").unwrap().is_none());
    }

    #[test]
    fn rejects_wrong_identifier_and_truncation() {
        let buf = sample();
        assert_eq!(root(&buf, b"TFL3").unwrap_err().field, "file identifier");
        let t = root(&buf[..54], b"TEST").unwrap();
        let e = t.scalars::<i32>(2, "Tensor.shape").unwrap_err();
        assert_eq!(e.field, "Tensor.shape");
    }
}

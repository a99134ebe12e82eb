//! Avro binary primitives over an untrusted buffer: every length is checked against the
//! bytes left before anything is read or allocated.

use crate::error::DErr;

/// Items of zero-size types (e.g. an array of nulls) one record may hold: such a block
/// count is not bounded by the record's length.
const EMPTY_ITEMS_PER_RECORD: u64 = 1 << 20;

pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    empty_items: u64,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            empty_items: EMPTY_ITEMS_PER_RECORD,
        }
    }

    #[inline]
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A zigzag varint (Avro int and long).
    #[inline]
    pub fn long(&mut self) -> Result<i64, DErr> {
        let buf = self.buf;
        let mut pos = self.pos;
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = buf.get(pos) else {
                return Err(DErr::Truncated);
            };
            pos += 1;
            if shift == 63 && b > 1 {
                return Err(DErr::VarintOverflow);
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        self.pos = pos;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// An Avro int: a varint that must fit 32 bits.
    #[inline]
    pub fn int(&mut self) -> Result<i32, DErr> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| DErr::IntRange(v))
    }

    /// A length prefix, checked against the bytes left.
    #[inline]
    pub fn len(&mut self) -> Result<usize, DErr> {
        let n = self.long()?;
        if n < 0 {
            return Err(DErr::NegativeLength(n));
        }
        if n as u64 > self.left() as u64 {
            return Err(DErr::TooLong {
                len: n as u64,
                left: self.left(),
            });
        }
        Ok(n as usize)
    }

    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DErr> {
        if n > self.left() {
            return Err(DErr::TooLong {
                len: n as u64,
                left: self.left(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Avro bytes or string: a length, then that many bytes.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], DErr> {
        let n = self.len()?;
        self.take(n)
    }

    #[inline]
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DErr> {
        let s = self
            .buf
            .get(self.pos..self.pos + N)
            .ok_or(DErr::Truncated)?;
        self.pos += N;
        Ok(s.try_into().unwrap_or([0; N]))
    }

    #[inline]
    pub fn boolean(&mut self) -> Result<bool, DErr> {
        let [b] = self.fixed::<1>()?;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DErr::Boolean(b)),
        }
    }

    /// The item count of the next array or map block (0: the end); for a negative count,
    /// its byte size is read (and checked) too. `empty` says whether an item may take zero
    /// bytes; otherwise a count above the bytes left cannot be right.
    pub fn block(&mut self, empty: bool) -> Result<(u64, Option<usize>), DErr> {
        let n = self.long()?;
        let (count, size) = if n < 0 {
            let count = n.unsigned_abs();
            (count, Some(self.len()?))
        } else {
            (n as u64, None)
        };
        if empty {
            if count > self.empty_items {
                return Err(DErr::TooManyItems);
            }
            self.empty_items -= count;
        } else if count > self.left() as u64 {
            return Err(DErr::TooLong {
                len: count,
                left: self.left(),
            });
        }
        Ok((count, size))
    }
}

//! Column builders in Arrow layout: LSB-first validity bitmap (made on the first null),
//! int32 offsets for variable-width kinds, little-endian fixed-width data, packed booleans.

use crate::error::DErr;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Int64,
    Float64,
    String,
    Bool,
    Timestamp,
    Date,
    Json,
    Bytes,
    Uuid,
    Decimal,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "int64" => Kind::Int64,
            "float64" => Kind::Float64,
            "string" => Kind::String,
            "bool" => Kind::Bool,
            "timestamp" => Kind::Timestamp,
            "date" => Kind::Date,
            "json" => Kind::Json,
            "bytes" => Kind::Bytes,
            "uuid" => Kind::Uuid,
            "decimal" => Kind::Decimal,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Int64 => "int64",
            Kind::Float64 => "float64",
            Kind::String => "string",
            Kind::Bool => "bool",
            Kind::Timestamp => "timestamp",
            Kind::Date => "date",
            Kind::Json => "json",
            Kind::Bytes => "bytes",
            Kind::Uuid => "uuid",
            Kind::Decimal => "decimal",
        }
    }

    /// Bytes per value of fixed-width kinds; 0 for variable width and packed booleans.
    fn width(self) -> usize {
        match self {
            Kind::Int64 | Kind::Float64 | Kind::Timestamp => 8,
            Kind::Date => 4,
            _ => 0,
        }
    }

    fn variable(self) -> bool {
        matches!(
            self,
            Kind::String | Kind::Json | Kind::Bytes | Kind::Uuid | Kind::Decimal
        )
    }
}

#[inline]
fn push_bit(bits: &mut Vec<u8>, i: usize, set: bool) {
    if i & 7 == 0 {
        bits.push(0);
    }
    if set {
        bits[i / 8] |= 1 << (i % 8);
    }
}

#[inline]
fn get_bit(bits: &[u8], i: usize) -> bool {
    bits[i / 8] & (1 << (i % 8)) != 0
}

fn truncate_bits(bits: &mut Vec<u8>, n: usize) {
    bits.truncate(n.div_ceil(8));
    if n & 7 != 0 {
        if let Some(last) = bits.last_mut() {
            *last &= (1u8 << (n % 8)) - 1;
        }
    }
}

pub struct Column {
    pub name: String,
    pub kind: Kind,
    pub nullable: bool,
    pub len: usize,
    nulls: usize,
    validity: Option<Vec<u8>>,
    /// int32 little-endian, as Arrow wants them
    offsets: Vec<u8>,
    pub data: Vec<u8>,
}

/// (validity, offsets, data) of a column's rows so far.
pub type Buffers<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [u8]);

impl Column {
    pub fn new(name: String, kind: Kind, nullable: bool) -> Column {
        let offsets = if kind.variable() { vec![0; 4] } else { vec![] };
        Column {
            name,
            kind,
            nullable,
            len: 0,
            nulls: 0,
            validity: None,
            offsets,
            data: vec![],
        }
    }

    #[inline]
    fn valid(&mut self) {
        if let Some(bits) = &mut self.validity {
            push_bit(bits, self.len, true);
        }
        self.len += 1;
    }

    pub fn null(&mut self) -> Result<(), DErr> {
        if !self.nullable {
            return Err(DErr::Null);
        }
        let len = self.len;
        let bits = self.validity.get_or_insert_with(|| {
            let mut bits = vec![0xff; len.div_ceil(8)];
            truncate_bits(&mut bits, len);
            bits
        });
        push_bit(bits, len, false);
        self.nulls += 1;
        match self.kind {
            Kind::Bool => push_bit(&mut self.data, len, false),
            k if k.variable() => self.end_offset()?,
            k => self.data.resize(self.data.len() + k.width(), 0),
        }
        self.len += 1;
        Ok(())
    }

    #[inline]
    pub fn i64(&mut self, v: i64) {
        self.data.extend_from_slice(&v.to_le_bytes());
        self.valid();
    }

    #[inline]
    pub fn f64(&mut self, v: f64) {
        self.data.extend_from_slice(&v.to_le_bytes());
        self.valid();
    }

    #[inline]
    pub fn i32(&mut self, v: i32) {
        self.data.extend_from_slice(&v.to_le_bytes());
        self.valid();
    }

    #[inline]
    pub fn bool(&mut self, v: bool) {
        push_bit(&mut self.data, self.len, v);
        self.valid();
    }

    #[inline]
    fn end_offset(&mut self) -> Result<(), DErr> {
        let end = i32::try_from(self.data.len()).map_err(|_| DErr::BatchTooLarge)?;
        self.offsets.extend_from_slice(&end.to_le_bytes());
        Ok(())
    }

    /// Ends a variable-width value whose bytes were appended to `data`.
    #[inline]
    pub fn end_value(&mut self) -> Result<(), DErr> {
        self.end_offset()?;
        self.valid();
        Ok(())
    }

    /// Drops everything from row `row` on, including a value half written.
    pub fn truncate(&mut self, row: usize) {
        if self.len > row {
            if let Some(bits) = &self.validity {
                self.nulls -= (row..self.len).filter(|&i| !get_bit(bits, i)).count();
            }
            self.len = row;
        }
        if let Some(bits) = &mut self.validity {
            truncate_bits(bits, row);
        }
        match self.kind {
            Kind::Bool => truncate_bits(&mut self.data, row),
            k if k.variable() => {
                self.offsets.truncate(4 * (row + 1));
                let end = &self.offsets[4 * row..];
                self.data
                    .truncate(i32::from_le_bytes([end[0], end[1], end[2], end[3]]) as usize);
            }
            k => self.data.truncate(row * k.width()),
        }
    }

    pub fn buffers(&self) -> Buffers<'_> {
        let validity = self.validity.as_deref().filter(|_| self.nulls > 0);
        let offsets = self.kind.variable().then_some(self.offsets.as_slice());
        (validity, offsets, &self.data)
    }

    /// Starts again empty, keeping the memory for the next batch.
    pub fn clear(&mut self) {
        self.truncate(0);
        self.validity = None;
    }
}

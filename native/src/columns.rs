//! Column builders in Arrow layout: LSB-first validity bitmap (made on the first null),
//! int32 offsets for variable-width kinds, little-endian fixed-width data, packed booleans.

use crate::reader::DErr;

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
    if i % 8 == 0 {
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
    if n % 8 != 0 {
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
    offsets: Vec<i32>,
    pub data: Vec<u8>,
}

/// (validity, offsets, data) of a finished column.
pub type Buffers = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

impl Column {
    pub fn new(name: String, kind: Kind, nullable: bool) -> Column {
        let offsets = if kind.variable() { vec![0] } else { vec![] };
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
            k if k.variable() => self.offsets.push(self.data.len() as i32),
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

    /// Ends a variable-width value whose bytes were appended to `data`.
    #[inline]
    pub fn end_value(&mut self) -> Result<(), DErr> {
        let end = i32::try_from(self.data.len()).map_err(|_| DErr::BatchTooLarge)?;
        self.offsets.push(end);
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
                self.offsets.truncate(row + 1);
                self.data.truncate(self.offsets[row] as usize);
            }
            k => self.data.truncate(row * k.width()),
        }
    }

    /// The buffers of the rows so far; the builder starts again empty.
    pub fn finish(&mut self) -> Buffers {
        let validity = self.validity.take().filter(|_| self.nulls > 0);
        let offsets = if self.kind.variable() {
            let offsets = std::mem::replace(&mut self.offsets, vec![0]);
            Some(offsets.iter().flat_map(|o| o.to_le_bytes()).collect())
        } else {
            None
        };
        self.len = 0;
        self.nulls = 0;
        (validity, offsets, std::mem::take(&mut self.data))
    }
}

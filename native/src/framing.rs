//! The Confluent wire format's framing (magic byte 0, a big-endian schema id) and the one
//! decode loop of the framed formats (Avro, Protobuf): one record's error never costs the
//! others.

use crate::columns::Column;

pub const HEADER: usize = 5;

/// The schema id of a framed value: -1 for no value or one shorter than the header,
/// -2 for a magic byte other than 0.
pub fn schema_id(value: Option<&[u8]>) -> i64 {
    match value {
        Some(v) if v.len() >= HEADER => {
            if v[0] != 0 {
                -2
            } else {
                u32::from_be_bytes([v[1], v[2], v[3], v[4]]) as i64
            }
        }
        _ => -1,
    }
}

/// Why a value is not in the Confluent wire format (magic byte 0, 4-byte schema id), if it is
/// not: the one wording of these conditions, for both codecs (batch/protobuf.py words them the
/// same for its Python twin).
pub fn header_error(v: &[u8]) -> Option<String> {
    match v.first() {
        Some(0) if v.len() >= HEADER => None,
        Some(1) => Some(
            "wrong magic byte 0x01: schema ids in record headers are not supported yet (the \
             Confluent wire format starts with magic byte 0)"
                .into(),
        ),
        Some(&m) if m != 0 => Some(format!(
            "wrong magic byte {m:#04x}: not the Confluent wire format (magic byte 0){}",
            if m == b'{' {
                "; the value looks like JSON"
            } else {
                ""
            }
        )),
        _ => Some(format!(
            "too short for the Confluent wire format: {} bytes (needs {HEADER}: magic byte 0 \
             and a 4-byte schema id)",
            v.len()
        )),
    }
}

/// A framed format: one record, its header checked, into one value per column.
pub trait Format {
    /// Per-call working memory that may borrow from the values.
    type Scratch<'a>: Default;

    /// Decodes `value` (the whole framed value) of schema `id`; Err: why it cannot be.
    fn record<'a>(
        &self,
        id: u32,
        value: &'a [u8],
        columns: &mut [Column],
        scratch: &mut Self::Scratch<'a>,
    ) -> Result<(), String>;
}

/// What a decode call found, by position: the records decoded, and why the others were not.
pub struct Outcome {
    pub good: Vec<usize>,
    pub bad: Vec<(usize, String)>,
}

/// Decodes each framed value into `columns`, which start empty.
///
/// # Safety
/// Each non-null pointer must point to `len` readable bytes for the whole call.
pub unsafe fn run<F: Format>(
    format: &F,
    columns: &mut [Column],
    values: &[(*const u8, usize)],
) -> Outcome {
    for c in columns.iter_mut() {
        c.clear(); // in case the last call failed before clearing
    }
    let mut out = Outcome {
        good: Vec::with_capacity(values.len()),
        bad: Vec::new(),
    };
    let mut scratch = F::Scratch::default();
    for (pos, &(ptr, len)) in values.iter().enumerate() {
        if ptr.is_null() {
            out.bad.push((pos, "no value (a tombstone)".to_string()));
            continue;
        }
        let v = unsafe { std::slice::from_raw_parts(ptr, len) };
        if let Some(e) = header_error(v) {
            out.bad.push((pos, e));
            continue;
        }
        let id = u32::from_be_bytes([v[1], v[2], v[3], v[4]]);
        match format.record(id, v, columns, &mut scratch) {
            Ok(()) => out.good.push(pos),
            Err(e) => {
                for c in columns.iter_mut() {
                    c.truncate(out.good.len());
                }
                out.bad.push((pos, e));
            }
        }
    }
    out
}

//! Avro datums in the Confluent wire format: writer schemas compiled into plans per schema
//! id (`plan`), read from an untrusted buffer (`reader`), json columns rendered as text
//! (`json`).

mod json;
pub mod plan;
mod reader;
mod schema;

use std::collections::HashMap;

use crate::columns::{Column, Kind};
use crate::error::DErr;
use crate::framing::{Format, HEADER};
use plan::Plan;
use reader::Reader;

/// The plans of the writer schemas seen so far, by schema id.
#[derive(Default)]
pub struct Avro {
    pub plans: HashMap<u32, Plan>,
}

fn message(e: DErr, field: &str, col: Option<&Column>) -> String {
    let cname = col.map_or("?", |c| c.name.as_str());
    match e {
        DErr::Truncated => format!("truncated: the record ends inside field `{field}`"),
        DErr::VarintOverflow => format!("varint overflow in field `{field}`"),
        DErr::NegativeLength(n) => format!("negative length {n} in field `{field}`"),
        DErr::TooLong { len, left } => {
            format!("truncated or corrupt: length {len} in field `{field}` exceeds the {left} bytes left")
        }
        DErr::Utf8 => format!("invalid UTF-8 in field `{field}`"),
        DErr::Nul => match col.map(|c| c.kind) {
            Some(Kind::Json) => format!("column `{cname}` contains \\u0000"),
            _ => format!("column `{cname}` contains a NUL character"),
        },
        DErr::Null => format!("null in non-nullable column `{cname}`"),
        DErr::EnumIndex(i) => format!("enum index {i} out of range in field `{field}`"),
        DErr::UnionIndex(i) => format!("union branch {i} out of range in field `{field}`"),
        DErr::Boolean(b) => format!("invalid boolean byte {b} in field `{field}`"),
        DErr::Depth => format!("field `{field}` is nested too deeply"),
        DErr::IntRange(v) => format!("int {v} out of range in field `{field}`"),
        DErr::TimestampRange(v) => format!("timestamp {v} out of range in field `{field}`"),
        DErr::NotUuid => format!("column `{cname}` is not a UUID (field `{field}`)"),
        DErr::DecimalTooLong(n) => format!("decimal of {n} bytes is too long in field `{field}`"),
        DErr::TooManyItems => format!("too many empty items in field `{field}`"),
        DErr::BatchTooLarge => format!("column `{cname}` holds over 2 GiB in one batch"),
    }
}

impl Format for Avro {
    type Scratch<'a> = ();

    fn record(
        &self,
        id: u32,
        value: &[u8],
        columns: &mut [Column],
        _: &mut (),
    ) -> Result<(), String> {
        let plan = self
            .plans
            .get(&id)
            .ok_or_else(|| format!("unknown schema id {id}"))?;
        if let Some(c) = plan.missing {
            return Err(format!(
                "missing field for non-nullable column `{}`: schema id {id} has no such field",
                columns[c].name
            ));
        }
        let mut r = Reader::new(&value[HEADER..]);
        if let Err((e, i)) = plan.decode(&mut r, columns) {
            let (field, col) = match plan.fields.get(i) {
                Some(f) => (f.name.as_str(), f.col.map(|c| &columns[c])),
                None => ("?", None),
            };
            return Err(message(e, field, col));
        }
        if r.left() > 0 {
            return Err(format!("{} trailing bytes after the record", r.left()));
        }
        Ok(())
    }
}

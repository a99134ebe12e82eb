//! Protobuf values in the Confluent wire format decoded into Arrow-layout column buffers.
//!
//! Python compiles the .proto text (protoc) and hands over a plan: every message type the
//! schema reaches, its fields (number, type, label, oneof, message and enum references) in
//! declaration order, and per message-index path the operation of each column. This module
//! only reads the wire format: it never trusts a length before checking it against the bytes
//! left, and it accepts what upb accepts (unknown fields, packed or unpacked repeated scalars,
//! a known field with another wire type as an unknown field, last-one-wins scalars, repeated
//! occurrences of a message field merged, UTF-8 checked in string fields).

mod render;
mod values;
mod wire;

use std::collections::HashMap;

use crate::columns::{Column, Kind};
use crate::error::DErr;
use crate::framing::Format;
use crate::text::{days_from_civil, write_int, write_str_checked};
use render::*;
use values::*;
use wire::*;

/// upb's default recursion limit.
const MAX_DEPTH: usize = 100;
const NONE: usize = usize::MAX;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// Field types, numbered as descriptor.proto's FieldDescriptorProto.Type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ty {
    Double,
    Float,
    Int64,
    UInt64,
    Int32,
    Fixed64,
    Fixed32,
    Bool,
    String,
    Group,
    Message,
    Bytes,
    UInt32,
    Enum,
    SFixed32,
    SFixed64,
    SInt32,
    SInt64,
}

impl Ty {
    fn from_code(c: u32) -> Option<Ty> {
        use Ty::*;
        Some(match c {
            1 => Double,
            2 => Float,
            3 => Int64,
            4 => UInt64,
            5 => Int32,
            6 => Fixed64,
            7 => Fixed32,
            8 => Bool,
            9 => String,
            10 => Group,
            11 => Message,
            12 => Bytes,
            13 => UInt32,
            14 => Enum,
            15 => SFixed32,
            16 => SFixed64,
            17 => SInt32,
            18 => SInt64,
            _ => return None,
        })
    }

    fn wire(self) -> u8 {
        use Ty::*;
        match self {
            Double | Fixed64 | SFixed64 => I64,
            Float | Fixed32 | SFixed32 => I32,
            String | Bytes | Message => LEN,
            Group => SGROUP,
            _ => VARINT,
        }
    }

    fn is_int(self) -> bool {
        use Ty::*;
        matches!(
            self,
            Int64
                | UInt64
                | Int32
                | Fixed64
                | Fixed32
                | UInt32
                | SFixed32
                | SFixed64
                | SInt32
                | SInt64
        )
    }

    fn is_64(self) -> bool {
        use Ty::*;
        matches!(self, Int64 | UInt64 | Fixed64 | SFixed64 | SInt64)
    }

    /// The integer a raw wire value stands for (ints, bools and enums).
    fn int(self, raw: u64) -> i128 {
        use Ty::*;
        match self {
            Int64 | SFixed64 => raw as i64 as i128,
            UInt64 | Fixed64 => raw as i128,
            Int32 | SFixed32 | Enum => raw as u32 as i32 as i128,
            UInt32 | Fixed32 => raw as u32 as i128,
            SInt32 => {
                let v = raw as u32;
                ((v >> 1) as i32 ^ -((v & 1) as i32)) as i128
            }
            SInt64 => ((raw >> 1) as i64 ^ -((raw & 1) as i64)) as i128,
            Bool => (raw != 0) as i128,
            _ => 0,
        }
    }
}

const WRAPPERS: [&str; 9] = [
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wkt {
    None,
    Timestamp,
    Duration,
    Wrapper,
    Struct,
    Value,
    ListValue,
}

struct FieldDef {
    /// `"name":`, ready for JSON objects
    key: Vec<u8>,
    ty: Ty,
    repeated: bool,
    presence: bool,
    oneof: usize,
    msg: usize,
    en: usize,
}

struct MsgDef {
    name: String,
    fields: Vec<FieldDef>,
    /// field index + 1 by number, for numbers below its length; 0: unknown
    dense: Vec<u16>,
    /// (number, field index) sorted, for the other numbers
    sparse: Vec<(u32, u16)>,
    oneofs: usize,
    map_entry: bool,
    wkt: Wkt,
}

impl MsgDef {
    #[inline]
    fn lookup(&self, number: u32) -> Option<usize> {
        if let Some(&i) = self.dense.get(number as usize) {
            return (i > 0).then(|| i as usize - 1);
        }
        self.sparse
            .binary_search_by_key(&number, |&(n, _)| n)
            .ok()
            .map(|k| self.sparse[k].1 as usize)
    }
}

struct EnumDef {
    names: HashMap<i32, String>,
    first: i32,
    closed: bool,
    null: bool,
}

impl EnumDef {
    fn name(&self, v: i32) -> String {
        self.names.get(&v).cloned().unwrap_or_else(|| v.to_string())
    }
}

pub struct Schema {
    msgs: Vec<MsgDef>,
    enums: Vec<EnumDef>,
}

/// (number, name, type, repeated, presence, oneof or -1, message or -1, enum or -1)
pub type FieldPlan = (u32, String, u32, bool, bool, i64, i64, i64);
/// (full name, map entry, fields in declaration order)
pub type MessagePlan = (String, bool, Vec<FieldPlan>);
/// (full name, (number, name) in declaration order, closed)
pub type EnumPlan = (String, Vec<(i32, String)>, bool);
/// (message-index path, message, (op, field or -1, where) per column, error or "")
pub type TargetPlan = (Vec<u32>, i64, Vec<(String, i64, String)>, String);

fn index(i: i64, len: usize, what: &str) -> Result<usize, String> {
    if i < 0 {
        return Ok(NONE);
    }
    usize::try_from(i)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| format!("{what} index {i} out of range"))
}

impl Schema {
    pub fn new(messages: Vec<MessagePlan>, enums: Vec<EnumPlan>) -> Result<Schema, String> {
        let n_msgs = messages.len();
        let n_enums = enums.len();
        let mut msgs = Vec::with_capacity(n_msgs);
        for (name, map_entry, fields) in messages {
            if fields.len() >= u16::MAX as usize {
                return Err(format!("message {name} has too many fields"));
            }
            let mut defs = Vec::with_capacity(fields.len());
            let mut dense = vec![];
            let mut sparse = vec![];
            let mut oneofs = 0;
            for (i, (number, fname, ty, repeated, presence, oneof, msg, en)) in
                fields.into_iter().enumerate()
            {
                let ty = Ty::from_code(ty).ok_or_else(|| format!("{name}.{fname}: type {ty}"))?;
                let msg = index(msg, n_msgs, "message")?;
                if ty == Ty::Message && msg == NONE {
                    return Err(format!("{name}.{fname}: a message field without its type"));
                }
                let en = index(en, n_enums, "enum")?;
                if ty == Ty::Enum && en == NONE {
                    return Err(format!("{name}.{fname}: an enum field without its type"));
                }
                let oneof = if oneof < 0 { NONE } else { oneof as usize };
                if oneof != NONE {
                    oneofs = oneofs.max(oneof + 1);
                }
                if oneof != NONE && oneof > u16::MAX as usize {
                    return Err(format!("{name}.{fname}: oneof {oneof}"));
                }
                if number < 256 {
                    if dense.len() <= number as usize {
                        dense.resize(number as usize + 1, 0);
                    }
                    dense[number as usize] = i as u16 + 1;
                } else {
                    sparse.push((number, i as u16));
                }
                let mut key = Vec::new();
                crate::text::write_str(&mut key, &fname);
                key.push(b':');
                defs.push(FieldDef {
                    key,
                    ty,
                    repeated,
                    presence: presence && !repeated,
                    oneof,
                    msg,
                    en,
                });
            }
            sparse.sort_unstable();
            let wkt = match name.as_str() {
                "google.protobuf.Timestamp" => Wkt::Timestamp,
                "google.protobuf.Duration" => Wkt::Duration,
                "google.protobuf.Struct" => Wkt::Struct,
                "google.protobuf.Value" => Wkt::Value,
                "google.protobuf.ListValue" => Wkt::ListValue,
                n if WRAPPERS.contains(&n) => Wkt::Wrapper,
                _ => Wkt::None,
            };
            msgs.push(MsgDef {
                name,
                fields: defs,
                dense,
                sparse,
                oneofs,
                map_entry,
                wkt,
            });
        }
        let enums = enums
            .into_iter()
            .map(|(name, values, closed)| EnumDef {
                first: values.first().map_or(0, |v| v.0),
                names: values.into_iter().rev().collect(), // the first name of an alias wins
                closed,
                null: name == "google.protobuf.NullValue",
            })
            .collect();
        Ok(Schema { msgs, enums })
    }
}

/// What a column takes from the message.
enum Op {
    Missing,
    Scalar(usize),
    Wrapper(usize),
    Timestamp(usize),
    Date(usize),
    Decimal(usize),
    Json(usize),
}

struct ColOp {
    op: Op,
    where_: String,
}

enum Target {
    Bad(String),
    Good { msg: usize, ops: Vec<ColOp> },
}

pub struct Proto {
    schema: Schema,
    targets: HashMap<Vec<u32>, Target>,
}

impl Proto {
    pub fn new(
        messages: Vec<MessagePlan>,
        enums: Vec<EnumPlan>,
        targets: Vec<TargetPlan>,
        columns: usize,
    ) -> Result<Proto, String> {
        let schema = Schema::new(messages, enums)?;
        let mut out = HashMap::new();
        for (path, msg, ops, error) in targets {
            if !error.is_empty() {
                out.insert(path, Target::Bad(error));
                continue;
            }
            let msg = index(msg, schema.msgs.len(), "message")?;
            if msg == NONE || ops.len() != columns {
                return Err(format!(
                    "path {path:?}: no message, or not one op per column"
                ));
            }
            let n_fields = schema.msgs[msg].fields.len();
            let mut col_ops = Vec::with_capacity(ops.len());
            for (op, field, where_) in ops {
                let f = index(field, n_fields, "field")?;
                let op = match (op.as_str(), f == NONE) {
                    ("missing", _) => Op::Missing,
                    (_, true) => return Err(format!("path {path:?}: op {op} without a field")),
                    ("scalar", _) => Op::Scalar(f),
                    ("wrapper", _) => Op::Wrapper(f),
                    ("timestamp", _) => Op::Timestamp(f),
                    ("date", _) => Op::Date(f),
                    ("decimal", _) => Op::Decimal(f),
                    ("json", _) => Op::Json(f),
                    _ => return Err(format!("path {path:?}: unknown op {op}")),
                };
                col_ops.push(ColOp { op, where_ });
            }
            out.insert(path, Target::Good { msg, ops: col_ops });
        }
        Ok(Proto {
            schema,
            targets: out,
        })
    }
}

// -- framing -----------------------------------------------------------------------------------

/// A zigzag varint of at most 5 bytes (a Java int).
fn zigzag(v: &[u8], at: &mut usize) -> Result<i64, String> {
    let mut n: u64 = 0;
    for shift in (0..35).step_by(7) {
        let Some(&b) = v.get(*at) else {
            return Err("bad message-index list: truncated".into());
        };
        *at += 1;
        n |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
        }
    }
    Err("bad message-index list: a varint longer than 5 bytes".into())
}

/// The message-index path of a framed value (5 bytes or more, magic 0) and where its
/// payload starts.
pub fn message_indexes(v: &[u8], path: &mut Vec<u32>) -> Result<usize, String> {
    path.clear();
    let mut at = 5;
    let count = zigzag(v, &mut at)?;
    if count < 0 {
        return Err(format!("bad message-index list: negative count {count}"));
    }
    let left = v.len() - at;
    if count as u64 > left as u64 {
        return Err(format!(
            "bad message-index list: {count} indexes in {left} bytes"
        ));
    }
    if count == 0 {
        path.push(0);
        return Ok(at);
    }
    for _ in 0..count {
        let i = zigzag(v, &mut at)?;
        if i < 0 {
            return Err(format!("bad message-index list: negative index {i}"));
        }
        path.push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    Ok(at)
}

/// The plans of the schemas seen so far, by schema id.
#[derive(Default)]
pub struct Protobuf {
    pub schemas: HashMap<u32, Proto>,
}

/// A call's working memory: the views of nested messages, the message-index path.
#[derive(Default)]
pub struct Scratch<'a> {
    cx: Ctx<'a>,
    path: Vec<u32>,
}

impl Protobuf {
    #[allow(clippy::type_complexity)]
    fn target<'p>(
        &'p self,
        id: u32,
        v: &[u8],
        path: &mut Vec<u32>,
    ) -> Result<(&'p Proto, usize, &'p [ColOp], usize), String> {
        let start = message_indexes(v, path)?;
        let proto = self
            .schemas
            .get(&id)
            .ok_or_else(|| format!("unknown schema id {id}"))?;
        match proto.targets.get(path.as_slice()) {
            Some(Target::Good { msg, ops }) => Ok((proto, *msg, ops, start)),
            Some(Target::Bad(e)) => Err(e.clone()),
            None => Err(format!(
                "message index path {path:?} names no message in schema id {id}"
            )),
        }
    }
}

impl Format for Protobuf {
    type Scratch<'a> = Scratch<'a>;

    fn record<'a>(
        &self,
        id: u32,
        value: &'a [u8],
        columns: &mut [Column],
        scratch: &mut Scratch<'a>,
    ) -> Result<(), String> {
        let (proto, msg, ops, start) = self.target(id, value, &mut scratch.path)?;
        record(proto, msg, ops, &value[start..], columns, &mut scratch.cx)
    }
}

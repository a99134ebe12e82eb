//! Protobuf values in the Confluent wire format decoded into Arrow-layout column buffers.
//!
//! Python compiles the .proto text (protoc) and hands over a plan: every message type the
//! schema reaches, its fields (number, type, label, oneof, message and enum references) in
//! declaration order, and per message-index path the operation of each column. This module
//! only reads the wire format: it never trusts a length before checking it against the bytes
//! left, and it accepts what upb accepts (unknown fields, packed or unpacked repeated scalars,
//! a known field with another wire type as an unknown field, last-one-wins scalars, repeated
//! occurrences of a message field merged, UTF-8 checked in string fields).

use std::collections::HashMap;

use crate::columns::{Column, Kind};
use crate::json::{write_int, write_str_checked};
use crate::reader::DErr;

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
            Int64 | UInt64 | Int32 | Fixed64 | Fixed32 | UInt32 | SFixed32 | SFixed64 | SInt32 | SInt64
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
                crate::json::write_str(&mut key, &fname);
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
                return Err(format!("path {path:?}: no message, or not one op per column"));
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

// -- the wire format --------------------------------------------------------------------------

/// Why a payload does not parse.
type WErr = &'static str;

#[inline]
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WErr> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err("truncated varint");
        };
        *pos += 1;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes")
}

#[inline]
fn fixed<const N: usize>(buf: &[u8], pos: &mut usize) -> Result<[u8; N], WErr> {
    let s = buf
        .get(*pos..pos.saturating_add(N))
        .ok_or("truncated fixed-width value")?;
    *pos += N;
    let mut out = [0; N];
    out.copy_from_slice(s);
    Ok(out)
}

#[inline]
fn delimited<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], WErr> {
    let n = varint(buf, pos)?;
    let left = (buf.len() - *pos) as u64;
    if n > left {
        return Err("length exceeds the bytes left");
    }
    let s = &buf[*pos..*pos + n as usize];
    *pos += n as usize;
    Ok(s)
}

/// (field number, wire type) of the next tag.
#[inline]
fn tag(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), WErr> {
    let t = varint(buf, pos)?;
    if t > u32::MAX as u64 {
        return Err("tag over 32 bits");
    }
    let number = (t >> 3) as u32;
    if number == 0 {
        return Err("field number 0");
    }
    Ok((number, (t & 7) as u8))
}

/// Moves past the value of an unknown field.
fn skip(buf: &[u8], pos: &mut usize, number: u32, wire: u8, depth: usize) -> Result<(), WErr> {
    match wire {
        VARINT => {
            varint(buf, pos)?;
        }
        I64 => {
            fixed::<8>(buf, pos)?;
        }
        LEN => {
            delimited(buf, pos)?;
        }
        I32 => {
            fixed::<4>(buf, pos)?;
        }
        SGROUP => {
            if depth >= MAX_DEPTH {
                return Err("nested too deeply");
            }
            loop {
                if *pos >= buf.len() {
                    return Err("group without its end");
                }
                let (n, w) = tag(buf, pos)?;
                if w == EGROUP {
                    if n != number {
                        return Err("group ends with another field number");
                    }
                    break;
                }
                skip(buf, pos, n, w, depth + 1)?;
            }
        }
        EGROUP => return Err("end of a group that did not start"),
        _ => return Err("wire type 6 or 7"),
    }
    Ok(())
}

/// A raw wire value: an integer or the bits of a fixed-width value, or bytes.
#[derive(Clone, Copy)]
struct Occ<'a> {
    field: u16,
    packed: bool,
    raw: u64,
    data: &'a [u8],
}

/// The fields of one message (possibly several merged occurrences) as read from the wire.
#[derive(Default)]
struct View<'a> {
    occs: Vec<Occ<'a>>,
    /// per field: index of its last occurrence + 1 (0: none)
    last: Vec<u32>,
    /// per oneof: index of the last occurrence of any member + 1
    oneof_last: Vec<u32>,
}

impl<'a> View<'a> {
    fn reset(&mut self, m: &MsgDef) {
        self.occs.clear();
        self.last.clear();
        self.last.resize(m.fields.len(), 0);
        self.oneof_last.clear();
        self.oneof_last.resize(m.oneofs, 0);
    }

    fn index(&mut self, m: &MsgDef) {
        for (i, o) in self.occs.iter().enumerate() {
            let f = o.field as usize;
            self.last[f] = i as u32 + 1;
            let oneof = m.fields[f].oneof;
            if oneof != NONE {
                self.oneof_last[oneof] = i as u32 + 1;
            }
        }
    }

    /// The last value of a singular field, if set (and not replaced by another oneof member).
    fn scalar(&self, m: &MsgDef, f: usize) -> Option<Occ<'a>> {
        let at = self.last[f];
        if at == 0 {
            return None;
        }
        let oneof = m.fields[f].oneof;
        if oneof != NONE && self.oneof_last[oneof] != at {
            return None;
        }
        Some(self.occs[at as usize - 1])
    }

    /// Where the occurrences of a singular message field that merge into its value start;
    /// None when the field is not set.
    fn merged(&self, m: &MsgDef, f: usize) -> Option<usize> {
        self.scalar(m, f)?;
        let oneof = m.fields[f].oneof;
        if oneof == NONE {
            return Some(0);
        }
        let start = self
            .occs
            .iter()
            .rposition(|o| o.field as usize != f && m.fields[o.field as usize].oneof == oneof);
        Some(start.map_or(0, |s| s + 1))
    }

    fn spans(&self, f: usize, start: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.occs[start..]
            .iter()
            .filter(move |o| o.field as usize == f)
            .map(|o| o.data)
    }
}

/// Checks a packed run of `ty` values.
fn check_packed(ty: Ty, data: &[u8]) -> Result<(), WErr> {
    match ty.wire() {
        I64 if !data.len().is_multiple_of(8) => Err("packed fixed64 values of a wrong length"),
        I32 if !data.len().is_multiple_of(4) => Err("packed fixed32 values of a wrong length"),
        VARINT => {
            let mut pos = 0;
            while pos < data.len() {
                varint(data, &mut pos)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Calls `each` with every raw value of an occurrence of a scalar field (packed or not),
/// skipping values a closed enum does not name.
fn values(s: &Schema, f: &FieldDef, o: &Occ, mut each: impl FnMut(u64)) {
    let closed = (f.en != NONE).then(|| &s.enums[f.en]).filter(|e| e.closed);
    let mut emit = |raw: u64| {
        if closed.is_none_or(|e| e.names.contains_key(&(raw as i32))) {
            each(raw)
        }
    };
    if !o.packed {
        emit(o.raw);
        return;
    }
    let mut pos = 0;
    let d = o.data;
    match f.ty.wire() {
        I64 => d
            .chunks_exact(8)
            .for_each(|c| emit(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))),
        I32 => d
            .chunks_exact(4)
            .for_each(|c| emit(u32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as u64)),
        _ => {
            while let Ok(v) = varint(d, &mut pos) {
                emit(v);
            }
        }
    }
}

/// Reads one occurrence of a message's fields; with `out`, records the known ones. Nested
/// messages are checked whole, as upb parses them. Ok(whether it holds unknown fields).
fn scan<'a>(
    s: &Schema,
    m: &MsgDef,
    buf: &'a [u8],
    depth: usize,
    mut out: Option<&mut Vec<Occ<'a>>>,
    nested: bool,
) -> Result<bool, WErr> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply");
    }
    let mut unknown = false;
    let mut pos = 0;
    while pos < buf.len() {
        let (number, wire) = tag(buf, &mut pos)?;
        let Some(fi) = m.lookup(number) else {
            skip(buf, &mut pos, number, wire, depth)?;
            unknown = true;
            continue;
        };
        let f = &m.fields[fi];
        let expected = f.ty.wire();
        let packed = wire == LEN && f.repeated && matches!(expected, VARINT | I64 | I32);
        if wire != expected && !packed {
            skip(buf, &mut pos, number, wire, depth)?; // upb keeps it as an unknown field
            unknown = true;
            continue;
        }
        let mut occ = Occ {
            field: fi as u16,
            packed,
            raw: 0,
            data: &[],
        };
        match wire {
            VARINT => {
                occ.raw = varint(buf, &mut pos)?;
                if f.en != NONE {
                    let e = &s.enums[f.en];
                    if e.closed && !e.names.contains_key(&(occ.raw as i32)) {
                        unknown = true; // a closed enum's unknown value is an unknown field
                        continue;
                    }
                }
            }
            I64 => occ.raw = u64::from_le_bytes(fixed::<8>(buf, &mut pos)?),
            I32 => occ.raw = u32::from_le_bytes(fixed::<4>(buf, &mut pos)?) as u64,
            LEN => {
                occ.data = delimited(buf, &mut pos)?;
                if packed {
                    check_packed(f.ty, occ.data)?;
                } else if f.ty == Ty::String {
                    std::str::from_utf8(occ.data).map_err(|_| "invalid UTF-8 in a string field")?;
                } else if f.ty == Ty::Message && nested {
                    scan(s, &s.msgs[f.msg], occ.data, depth + 1, None, true)?;
                }
            }
            _ => {
                skip(buf, &mut pos, number, wire, depth)?; // groups: refused in the plan
                unknown = true;
                continue;
            }
        }
        if let Some(out) = out.as_deref_mut() {
            out.push(occ);
        }
    }
    Ok(unknown)
}

/// Reads merged occurrences of message `m` (already checked) into `view`; whether they
/// hold unknown fields.
fn read<'a, I: Iterator<Item = &'a [u8]>>(
    s: &Schema,
    m: &MsgDef,
    spans: I,
    view: &mut View<'a>,
) -> bool {
    view.reset(m);
    let mut unknown = false;
    for span in spans {
        // checked when the enclosing message was read: cannot fail
        unknown |= scan(s, m, span, 0, Some(&mut view.occs), false).unwrap_or(true);
    }
    view.index(m);
    unknown
}

// -- values into columns ----------------------------------------------------------------------

/// Per-record working memory: one view per nesting depth.
#[derive(Default)]
struct Ctx<'a> {
    views: Vec<View<'a>>,
}

impl<'a> Ctx<'a> {
    fn take(&mut self, depth: usize) -> View<'a> {
        if self.views.len() <= depth {
            self.views.resize_with(depth + 1, View::default);
        }
        std::mem::take(&mut self.views[depth])
    }

    fn give(&mut self, depth: usize, view: View<'a>) {
        self.views[depth] = view;
    }
}

/// Decodes one payload into one value per column; Err: the record's error.
fn record<'a>(
    proto: &Proto,
    msg: usize,
    ops: &[ColOp],
    body: &'a [u8],
    cols: &mut [Column],
    cx: &mut Ctx<'a>,
) -> Result<(), String> {
    let s = &proto.schema;
    let m = &s.msgs[msg];
    let mut view = cx.take(0);
    view.reset(m);
    let parsed = scan(s, m, body, 0, Some(&mut view.occs), true);
    view.index(m);
    let done = match parsed {
        Err(e) => Err(format!("payload does not parse as {}: {e}", m.name)),
        Ok(_) => ops
            .iter()
            .zip(cols.iter_mut())
            .try_for_each(|(op, c)| column(s, m, &view, op, c, cx)),
    };
    cx.give(0, view);
    done
}

fn absent(c: &mut Column, where_: &str) -> Result<(), String> {
    if c.nullable {
        c.null().map_err(|_| String::new())
    } else {
        Err(format!(
            "column {}: {where_} is absent and the column is not nullable",
            c.name
        ))
    }
}

fn column<'a>(
    s: &Schema,
    m: &MsgDef,
    view: &View<'a>,
    op: &ColOp,
    c: &mut Column,
    cx: &mut Ctx<'a>,
) -> Result<(), String> {
    let w = op.where_.as_str();
    match op.op {
        Op::Missing => {
            if c.nullable {
                return c.null().map_err(|_| String::new());
            }
            Err(format!(
                "column {}: not nullable, and message {} has no such field",
                c.name, m.name
            ))
        }
        Op::Scalar(f) => {
            let fd = &m.fields[f];
            match view.scalar(m, f) {
                None if fd.presence => absent(c, w),
                o => scalar(s, fd, o, c, w),
            }
        }
        Op::Json(f) => {
            let fd = &m.fields[f];
            if fd.presence && view.scalar(m, f).is_none() {
                return absent(c, w);
            }
            let start = c.data.len();
            match render_field(s, m, f, view, &mut c.data, cx, 1) {
                Ok(()) => c.end_value().map_err(|e| batch_error(e, c)),
                Err(e) => {
                    c.data.truncate(start);
                    Err(match e {
                        JErr::Nul => format!(
                            "column {}: a NUL character (\\u0000), which PostgreSQL jsonb \
                             cannot store",
                            c.name
                        ),
                        JErr::Value(e) => format!("column {}: {e}", c.name),
                    })
                }
            }
        }
        Op::Wrapper(f) | Op::Timestamp(f) | Op::Date(f) | Op::Decimal(f) => {
            let Some(start) = view.merged(m, f) else {
                return absent(c, w);
            };
            let sub = &s.msgs[m.fields[f].msg];
            let mut inner = cx.take(1);
            read(s, sub, view.spans(f, start), &mut inner);
            let get = |n: u32| -> (Option<&FieldDef>, Option<Occ>) {
                let Some(i) = sub.lookup(n) else {
                    return (None, None);
                };
                (Some(&sub.fields[i]), inner.scalar(sub, i))
            };
            let int = |n: u32| match get(n) {
                (Some(fd), Some(o)) => fd.ty.int(o.raw),
                _ => 0,
            };
            let done = match op.op {
                Op::Wrapper(_) => match get(1) {
                    (Some(fd), o) => scalar(s, fd, o, c, w),
                    _ => Err(format!("column {}: {w}: a wrapper without its value", c.name)),
                },
                Op::Timestamp(_) => {
                    let (secs, nanos) = (int(1), int(2));
                    if !(-62_135_596_800..=253_402_300_799).contains(&secs)
                        || !(0..=999_999_999).contains(&nanos)
                    {
                        Err(format!(
                            "column {}: timestamp {secs}s {nanos}ns is out of range",
                            c.name
                        ))
                    } else {
                        c.i64((secs * 1_000_000 + nanos.div_euclid(1000)) as i64);
                        Ok(())
                    }
                }
                Op::Date(_) => {
                    let (y, mo, d) = (int(1), int(2), int(3));
                    match days_from_civil(y, mo, d) {
                        Some(days) => {
                            c.i32(days);
                            Ok(())
                        }
                        None => Err(format!(
                            "column {}: {y:04}-{mo:02}-{d:02} is not a full date \
                             (google.type.Date with a zero year, month or day)",
                            c.name
                        )),
                    }
                }
                _ => {
                    let value = get(1).1.map_or(&[][..], |o| o.data);
                    let text = if sub.name == "confluent.type.Decimal" {
                        decimal_bytes(value, int(3))
                    } else {
                        decimal_text(value)
                    };
                    match text {
                        Ok(t) => {
                            c.data.extend_from_slice(t.as_bytes());
                            c.end_value().map_err(|e| batch_error(e, c))
                        }
                        Err(e) => Err(format!("column {}: {e}", c.name)),
                    }
                }
            };
            cx.give(1, inner);
            done
        }
    }
}

fn batch_error(_: DErr, c: &Column) -> String {
    format!("column {} holds over 2 GiB in one batch", c.name)
}

/// A scalar field's value (None: absent, its default) into its column.
fn scalar(s: &Schema, f: &FieldDef, o: Option<Occ>, c: &mut Column, w: &str) -> Result<(), String> {
    let raw = o.map_or(0, |o| o.raw);
    let data = o.map_or(&[][..], |o| o.data);
    let text = |c: &mut Column, t: &[u8]| {
        c.data.extend_from_slice(t);
        c.end_value().map_err(|e| batch_error(e, c))
    };
    match (c.kind, f.ty) {
        (Kind::Int64, ty) if ty.is_int() => {
            let v = ty.int(raw);
            match i64::try_from(v) {
                Ok(v) => c.i64(v),
                Err(_) => {
                    return Err(format!("column {}: {w} value {v} does not fit int64", c.name))
                }
            }
            Ok(())
        }
        (Kind::Float64, ty) if ty.is_int() => {
            c.f64(ty.int(raw) as f64);
            Ok(())
        }
        (Kind::Float64, Ty::Double) => {
            c.f64(f64::from_bits(raw));
            Ok(())
        }
        (Kind::Float64, Ty::Float) => {
            c.f64(shortest_f32(f32::from_bits(raw as u32)));
            Ok(())
        }
        (Kind::Decimal, ty) if ty.is_int() => {
            text(c, ty.int(raw).to_string().as_bytes())
        }
        (Kind::Decimal, Ty::String) => match decimal_text(data) {
            Ok(t) => text(c, t.as_bytes()),
            Err(e) => Err(format!("column {}: {w}: {e}", c.name)),
        },
        (Kind::String, Ty::String) => {
            if data.contains(&0) {
                return Err(format!(
                    "column {}: {w} holds a NUL character, which PostgreSQL text cannot store",
                    c.name
                ));
            }
            text(c, data)
        }
        (Kind::String, Ty::Enum) => {
            let e = &s.enums[f.en];
            let v = if o.is_some() { raw as i32 } else { e.first };
            text(c, e.name(v).as_bytes())
        }
        (Kind::Uuid, Ty::String) if data.len() == 36 && crate::json::is_uuid(data) => {
            c.data.extend(data.iter().map(u8::to_ascii_lowercase));
            c.end_value().map_err(|e| batch_error(e, c))
        }
        (Kind::Uuid, Ty::String) => match uuid_text(data) {
            Some(u) => text(c, &u),
            None => Err(format!(
                "column {}: {w}: {} is not a UUID",
                c.name,
                py_repr(data)
            )),
        },
        (Kind::Bool, Ty::Bool) => {
            c.bool(raw != 0);
            Ok(())
        }
        (Kind::Bytes, Ty::Bytes) => text(c, data),
        (k, ty) => Err(format!(
            "column {}: {w} ({ty:?}) cannot go into a {} column",
            c.name,
            k.name()
        )),
    }
}

/// A float32 as the double its short text reads as (0.1f -> 0.1): protobuf's
/// type_checkers.ToShortestFloat, the first of 6, 7, ... significant digits that reads back
/// as the same float32.
fn shortest_f32(v: f32) -> f64 {
    if !v.is_finite() {
        return v as f64;
    }
    for digits in 5..17 {
        let x: f64 = format!("{:.*e}", digits, v as f64).parse().unwrap_or(v as f64);
        if x as f32 == v {
            return x;
        }
    }
    v as f64
}

/// Days since 1970-01-01 of a valid date of years 1..9999.
fn days_from_civil(y: i128, m: i128, d: i128) -> Option<i32> {
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if d > month_days[m as usize - 1] {
        return None;
    }
    // Howard Hinnant's days_from_civil
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) as i32)
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// Canonical (lowercase, hyphenated) text of what Python's uuid.UUID reads: hex digits with
/// hyphens anywhere, in braces, after `urn:` / `uuid:`.
fn uuid_text(s: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(s).ok()?;
    let text = text.replace("urn:", "").replace("uuid:", "");
    let hex: Vec<u8> = text
        .trim_matches(|c| c == '{' || c == '}')
        .bytes()
        .filter(|&b| b != b'-')
        .collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = Vec::with_capacity(36);
    for (i, b) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push(b'-');
        }
        out.push(b.to_ascii_lowercase());
    }
    Some(out)
}

/// Python's repr() of (the first 80 characters of) a text.
fn py_repr(s: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(s).chars().take(80).collect();
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..=0xa0).contains(&(c as u32)) || c == '\u{ad}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if matches!(c as u32, 0x2028 | 0x2029 | 0xfeff) => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's str(Decimal(text)): sign, coefficient without leading zeros, exponent; Err names
/// the text as protobuf.py does.
fn decimal_text(s: &[u8]) -> Result<String, String> {
    let bad = |what: &str| format!("{} is not a {what}", py_repr(s));
    let t = std::str::from_utf8(s).map_err(|_| bad("decimal number"))?.trim();
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity")
        || (lower.starts_with("nan") || lower.starts_with("snan"))
            && lower.trim_start_matches('s')[3..].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad("finite decimal number"));
    }
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits_ok(int) || !digits_ok(frac) {
        return Err(bad("decimal number"));
    }
    let exp: i64 = match exp {
        None => 0,
        Some(e) => {
            let d = e.strip_prefix(['+', '-']).unwrap_or(e);
            if d.is_empty() || !digits_ok(d) || d.trim_start_matches('0').len() > 15 {
                return Err(bad("decimal number"));
            }
            e.parse().map_err(|_| bad("decimal number"))?
        }
    };
    let coefficient = format!("{int}{frac}");
    let digits = coefficient.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    Ok(sci_string(negative, digits, exp - frac.len() as i64))
}

/// Python's str(Decimal((sign, digits, exp))).
fn sci_string(negative: bool, digits: &str, exp: i64) -> String {
    let n = digits.len() as i64;
    let left = exp + n;
    let dot = if exp <= 0 && left > -6 { left } else { 1 };
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if dot <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dot) as usize));
        out.push_str(digits);
    } else if dot >= n {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (dot - n) as usize));
    } else {
        out.push_str(&digits[..dot as usize]);
        out.push('.');
        out.push_str(&digits[dot as usize..]);
    }
    if left != dot {
        out.push_str(&format!("E{:+}", left - dot));
    }
    out
}

/// confluent.type.Decimal: big-endian two's complement unscaled value, and the scale.
fn decimal_bytes(value: &[u8], scale: i128) -> Result<String, String> {
    let mut text = Vec::new();
    crate::json::write_decimal(&mut text, value, 0)
        .map_err(|_| format!("a decimal of {} bytes is too long", value.len()))?;
    let text = String::from_utf8(text).unwrap_or_default();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.as_str()),
    };
    Ok(sci_string(negative, digits, -(scale as i64)))
}

// -- JSON --------------------------------------------------------------------------------------

enum JErr {
    Nul,
    Value(String),
}

fn nul(_: DErr) -> JErr {
    JErr::Nul
}

/// A finite double as msgspec writes it: shortest digits, `1.0`, `1e16`, `1e-7`.
fn write_float(out: &mut Vec<u8>, text: String) {
    // `text` is Rust's shortest `{:e}`: d[.ddd]e[-]k
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|&c| c != '.').collect();
    if negative {
        out.push(b'-');
    }
    let n = digits.len() as i64;
    if !(-5..16).contains(&exp) {
        out.extend_from_slice(mantissa.as_bytes());
        out.push(b'e');
        write_int(out, exp);
    } else if exp < 0 {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + (-exp - 1) as usize, b'0');
        out.extend_from_slice(digits.as_bytes());
    } else if exp + 1 >= n {
        out.extend_from_slice(digits.as_bytes());
        out.resize(out.len() + (exp + 1 - n) as usize, b'0');
        out.extend_from_slice(b".0");
    } else {
        out.extend_from_slice(&digits.as_bytes()[..exp as usize + 1]);
        out.push(b'.');
        out.extend_from_slice(&digits.as_bytes()[exp as usize + 1..]);
    }
}

fn write_double(out: &mut Vec<u8>, v: f64, single: bool) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else if single {
        write_float(out, format!("{:e}", shortest_f32(v as f32)));
    } else {
        write_float(out, format!("{v:e}"));
    }
}

/// A 64-bit integer: a number when a double holds it exactly, else a string.
fn write_int64(out: &mut Vec<u8>, v: i128) {
    let exact = (v as f64) as i128 == v && (v as f64).is_finite();
    if !exact {
        out.push(b'"');
    }
    out.extend_from_slice(v.to_string().as_bytes());
    if !exact {
        out.push(b'"');
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn write_base64(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (chunk.get(1).copied().unwrap_or(0) as u32) << 8
            | chunk.get(2).copied().unwrap_or(0) as u32;
        for i in 0..4 {
            if i <= n {
                out.push(B64[((v >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out.push(b'"');
}

/// One scalar value (None: the field's default).
fn scalar_json(s: &Schema, f: &FieldDef, o: Option<Occ>, raw: u64, out: &mut Vec<u8>) -> Result<(), JErr> {
    let data = o.map_or(&[][..], |o| o.data);
    match f.ty {
        Ty::Double => write_double(out, f64::from_bits(raw), false),
        Ty::Float => write_double(out, f32::from_bits(raw as u32) as f64, true),
        Ty::Bool => out.extend_from_slice(if raw != 0 { b"true" } else { b"false" }),
        Ty::String => write_str_checked(out, data).map_err(nul)?,
        Ty::Bytes => write_base64(out, data),
        Ty::Enum => {
            let e = &s.enums[f.en];
            if e.null {
                out.extend_from_slice(b"null");
            } else {
                let v = if o.is_some() { raw as i32 } else { e.first };
                write_str_checked(out, e.name(v).as_bytes()).map_err(nul)?;
            }
        }
        ty if ty.is_64() => write_int64(out, ty.int(raw)),
        ty => write_int(out, ty.int(raw) as i64),
    }
    Ok(())
}

/// The whole value of field `f` of a message read into `view` (a list when repeated, an
/// object for maps); an absent singular message is written as its default (`{...}`).
fn render_field<'a>(
    s: &Schema,
    m: &MsgDef,
    f: usize,
    view: &View<'a>,
    out: &mut Vec<u8>,
    cx: &mut Ctx<'a>,
    depth: usize,
) -> Result<(), JErr> {
    let fd = &m.fields[f];
    if depth > 4 * MAX_DEPTH {
        return Err(JErr::Value("nested too deeply".into()));
    }
    if !fd.repeated {
        if fd.ty == Ty::Message {
            let start = view.merged(m, f).unwrap_or(view.occs.len());
            return render_message(s, fd.msg, view.spans(f, start), out, cx, depth);
        }
        let o = view.scalar(m, f);
        return scalar_json(s, fd, o, o.map_or(0, |o| o.raw), out);
    }
    let occs = view.occs.iter().filter(|o| o.field as usize == f);
    if fd.ty == Ty::Message && s.msgs[fd.msg].map_entry {
        return render_map(s, fd.msg, occs.map(|o| o.data), out, cx, depth);
    }
    out.push(b'[');
    let mut first = true;
    for o in occs {
        if fd.ty == Ty::Message {
            if !first {
                out.push(b',');
            }
            first = false;
            render_message(s, fd.msg, std::iter::once(o.data), out, cx, depth)?;
            continue;
        }
        let mut done = Ok(());
        values(s, fd, o, |raw| {
            if done.is_ok() {
                if !first {
                    out.push(b',');
                }
                first = false;
                done = scalar_json(s, fd, Some(*o), raw, out);
            }
        });
        done?;
    }
    out.push(b']');
    Ok(())
}

/// A map field's entries as a JSON object; a key given twice keeps its last value.
fn render_map<'a, I: Iterator<Item = &'a [u8]>>(
    s: &Schema,
    entry: usize,
    entries: I,
    out: &mut Vec<u8>,
    cx: &mut Ctx<'a>,
    depth: usize,
) -> Result<(), JErr> {
    let em = &s.msgs[entry];
    let (Some(ki), Some(vi)) = (em.lookup(1), em.lookup(2)) else {
        return Err(JErr::Value(format!("map entry {} without key or value", em.name)));
    };
    let kf = &em.fields[ki];
    let start = out.len();
    out.push(b'{');
    // (entry start, key end) of each entry written
    let mut written: Vec<(usize, usize)> = vec![];
    let mut view = cx.take(depth + 1);
    let mut done = Ok(());
    for span in entries {
        if read(s, em, std::iter::once(span), &mut view) {
            continue; // upb keeps an entry with unknown fields as an unknown field
        }
        if !written.is_empty() {
            out.push(b',');
        }
        let at = out.len();
        let k = view.scalar(em, ki);
        let raw = k.map_or(0, |o| o.raw);
        let key = match kf.ty {
            Ty::String => write_str_checked(out, k.map_or(&[][..], |o| o.data)).map_err(nul),
            Ty::Bool => {
                out.extend_from_slice(if raw != 0 { b"\"true\"" } else { b"\"false\"" });
                Ok(())
            }
            ty => {
                out.push(b'"');
                out.extend_from_slice(ty.int(raw).to_string().as_bytes());
                out.push(b'"');
                Ok(())
            }
        };
        let key_end = out.len();
        out.push(b':');
        done = key.and_then(|()| render_field(s, em, vi, &view, out, cx, depth + 2));
        if done.is_err() {
            break;
        }
        written.push((at, key_end));
    }
    cx.give(depth + 1, view);
    done?;
    out.push(b'}');
    if written.len() > 1 {
        dedupe(out, start, &written);
    }
    Ok(())
}

/// Rewrites the object at `out[start..]` without the earlier entries of repeated keys.
fn dedupe(out: &mut Vec<u8>, start: usize, entries: &[(usize, usize)]) {
    let key = |i: usize| &out[entries[i].0..entries[i].1];
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| key(a).cmp(key(b)).then(a.cmp(&b)));
    let mut keep = vec![true; entries.len()];
    let mut any = false;
    for w in order.windows(2) {
        if key(w[0]) == key(w[1]) {
            keep[w[0]] = false;
            any = true;
        }
    }
    if !any {
        return;
    }
    let end = out.len() - 1; // the closing brace
    let mut object = vec![b'{'];
    for (i, &(at, _)) in entries.iter().enumerate() {
        if keep[i] {
            let stop = entries.get(i + 1).map_or(end, |e| e.0 - 1); // before the comma
            if object.len() > 1 {
                object.push(b',');
            }
            object.extend_from_slice(&out[at..stop]);
        }
    }
    object.push(b'}');
    out.truncate(start);
    out.extend_from_slice(&object);
}

/// A message (its occurrences merged) as JSON: fields in declaration order, fields with
/// presence left out when absent, the others always written; well-known types as protobuf's
/// JSON mapping writes them, Struct numbers that are integers as integers.
fn render_message<'a, I: Iterator<Item = &'a [u8]>>(
    s: &Schema,
    msg: usize,
    spans: I,
    out: &mut Vec<u8>,
    cx: &mut Ctx<'a>,
    depth: usize,
) -> Result<(), JErr> {
    let m = &s.msgs[msg];
    let mut view = cx.take(depth);
    read(s, m, spans, &mut view);
    let done = render_view(s, m, &view, out, cx, depth);
    cx.give(depth, view);
    done
}

fn render_view<'a>(
    s: &Schema,
    m: &MsgDef,
    view: &View<'a>,
    out: &mut Vec<u8>,
    cx: &mut Ctx<'a>,
    depth: usize,
) -> Result<(), JErr> {
    let int = |n: u32| -> i128 {
        m.lookup(n)
            .and_then(|i| view.scalar(m, i).map(|o| m.fields[i].ty.int(o.raw)))
            .unwrap_or(0)
    };
    match m.wkt {
        Wkt::Timestamp => return write_timestamp(out, int(1), int(2)),
        Wkt::Duration => return write_duration(out, int(1), int(2)),
        Wkt::Wrapper => {
            if let Some(i) = m.lookup(1) {
                return render_field(s, m, i, view, out, cx, depth + 1);
            }
        }
        Wkt::Struct | Wkt::ListValue => {
            if let Some(i) = m.lookup(1) {
                return render_field(s, m, i, view, out, cx, depth + 1);
            }
        }
        Wkt::Value => return render_value(s, m, view, out, cx, depth),
        Wkt::None => {}
    }
    out.push(b'{');
    let mut first = true;
    for (i, fd) in m.fields.iter().enumerate() {
        if fd.presence && view.scalar(m, i).is_none() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&fd.key);
        render_field(s, m, i, view, out, cx, depth + 1)?;
    }
    out.push(b'}');
    Ok(())
}

/// google.protobuf.Value: the JSON value its `kind` holds (none: null).
fn render_value<'a>(
    s: &Schema,
    m: &MsgDef,
    view: &View<'a>,
    out: &mut Vec<u8>,
    cx: &mut Ctx<'a>,
    depth: usize,
) -> Result<(), JErr> {
    let set = (1..=6).find_map(|n| {
        let i = m.lookup(n)?;
        view.scalar(m, i).map(|o| (n, i, o))
    });
    match set {
        None | Some((1, _, _)) => out.extend_from_slice(b"null"),
        Some((2, _, o)) => {
            let x = f64::from_bits(o.raw);
            if !x.is_finite() {
                let py = if x.is_nan() {
                    "nan"
                } else if x > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                return Err(JErr::Value(format!(
                    "a Struct number {py} cannot be written as JSON"
                )));
            }
            if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
                write_int(out, x as i64);
            } else {
                write_double(out, x, false);
            }
        }
        Some((_, i, _)) => render_field(s, m, i, view, out, cx, depth + 1)?,
    }
    Ok(())
}

/// RFC 3339 text of a Timestamp, as protobuf's JSON writes it (0, 3, 6 or 9 digits).
fn write_timestamp(out: &mut Vec<u8>, secs: i128, nanos: i128) -> Result<(), JErr> {
    // protobuf's own words (well_known_types._CheckTimestampValid)
    if !(-62_135_596_800..=253_402_300_799).contains(&secs) {
        return Err(JErr::Value(format!(
            "Timestamp is not valid: Seconds {secs} must be in range [-62135596800, \
             253402300799]."
        )));
    }
    if !(0..=999_999_999).contains(&nanos) {
        return Err(JErr::Value(format!(
            "Timestamp is not valid: Nanos {nanos} must be in a range [0, 999999]."
        )));
    }
    let secs = secs as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let text = format!(
        "\"{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{}Z\"",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        fraction(nanos as i64)
    );
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn fraction(nanos: i64) -> String {
    if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1000 == 0 {
        format!(".{:06}", nanos / 1000)
    } else {
        format!(".{nanos:09}")
    }
}

/// A Duration as protobuf's JSON writes it: `-1.500s`.
fn write_duration(out: &mut Vec<u8>, secs: i128, nanos: i128) -> Result<(), JErr> {
    // protobuf's own words (well_known_types._CheckDurationValid)
    let invalid = if !(-315_576_000_000..=315_576_000_000).contains(&secs) {
        format!("Seconds {secs} must be in range [-315576000000, 315576000000].")
    } else if !(-999_999_999..=999_999_999).contains(&nanos) {
        format!("Nanos {nanos} must be in range [-999999999, 999999999].")
    } else if (secs < 0 && nanos > 0) || (secs > 0 && nanos < 0) {
        "Sign mismatch.".into()
    } else {
        String::new()
    };
    if !invalid.is_empty() {
        return Err(JErr::Value(format!("Duration is not valid: {invalid}")));
    }
    let negative = secs < 0 || nanos < 0;
    let text = format!(
        "\"{}{}{}s\"",
        if negative { "-" } else { "" },
        secs.abs(),
        fraction(nanos.abs() as i64)
    );
    out.extend_from_slice(text.as_bytes());
    Ok(())
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

pub struct ProtoDecoder {
    pub columns: Vec<Column>,
    pub schemas: HashMap<u32, Proto>,
}

pub struct Outcome {
    pub good: Vec<usize>,
    pub bad: Vec<(usize, String)>,
}

impl ProtoDecoder {
    #[allow(clippy::type_complexity)]
    fn target<'p>(&'p self, v: &[u8], path: &mut Vec<u32>) -> Result<(&'p Proto, usize, &'p [ColOp], usize), String> {
        if let Some(e) = crate::header_error(v) {
            return Err(e);
        }
        let start = message_indexes(v, path)?;
        let id = u32::from_be_bytes([v[1], v[2], v[3], v[4]]);
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

    /// # Safety
    /// Each non-null pointer must point to `len` readable bytes for the whole call.
    pub unsafe fn run(&mut self, values: &[(*const u8, usize)]) -> Outcome {
        let mut columns = std::mem::take(&mut self.columns);
        for c in &mut columns {
            c.clear();
        }
        let mut good = Vec::with_capacity(values.len());
        let mut bad = Vec::new();
        let mut cx = Ctx::default();
        let mut path = Vec::new();
        for (pos, &(ptr, len)) in values.iter().enumerate() {
            if ptr.is_null() {
                bad.push((pos, "no value (a tombstone)".to_string()));
                continue;
            }
            let v: &[u8] = unsafe { std::slice::from_raw_parts(ptr, len) };
            let done = self.target(v, &mut path).and_then(|(proto, msg, ops, start)| {
                record(proto, msg, ops, &v[start..], &mut columns, &mut cx)
            });
            match done {
                Ok(()) => good.push(pos),
                Err(e) => {
                    for c in &mut columns {
                        c.truncate(good.len());
                    }
                    bad.push((pos, e));
                }
            }
        }
        self.columns = columns;
        Outcome { good, bad }
    }
}

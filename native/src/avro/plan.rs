//! A writer schema compiled against the columns: per top-level field, the operation that
//! reads it into its column (or skips it), chosen once so decoding is a flat loop.

use super::json;
use super::reader::Reader;
use super::schema::{Logical, Node, NodeId, Schema};
use crate::columns::{Column, Kind};
use crate::error::DErr;
use crate::text;

#[derive(Debug)]
pub enum Op {
    /// Writer type null: always a null.
    Null,
    I64,
    F64FromLong,
    F64FromFloat,
    F64FromDouble,
    Str,
    Enum(NodeId),
    Bool,
    /// Timestamp: multiply (millis) or divide (nanos) to micros.
    TsMillis,
    TsMicros,
    TsNanos,
    Date,
    Bytes,
    Fixed(usize),
    UuidStr,
    UuidFixed,
    DecimalBytes(u32),
    DecimalFixed(usize, u32),
    Json(NodeId),
    /// A union of one type and at most one null: the branch indexes, -1 for no null.
    Opt {
        null: i64,
        value: i64,
        inner: Box<Op>,
    },
}

pub struct Field {
    pub name: String,
    pub node: NodeId,
    pub col: Option<usize>,
    pub op: Op,
}

pub struct Plan {
    pub schema: Schema,
    pub fields: Vec<Field>,
    /// Nullable columns the writer lacks: a null each row.
    pub absent: Vec<usize>,
    /// A non-nullable column the writer lacks: every record is an error.
    pub missing: Option<usize>,
}

fn compile(kind: Kind, s: &Schema, id: NodeId) -> Option<Op> {
    let node = &s.nodes[id];
    if let Node::Union(branches) = node {
        let nulls: Vec<usize> = (0..branches.len())
            .filter(|&i| matches!(s.nodes[branches[i]], Node::Null))
            .collect();
        if nulls.len() <= 1 && branches.len() - nulls.len() == 1 {
            let value = (0..branches.len()).find(|i| !nulls.contains(i))?;
            let inner = Box::new(compile(kind, s, branches[value])?);
            let null = nulls.first().map_or(-1, |&i| i as i64);
            return Some(Op::Opt {
                null,
                value: value as i64,
                inner,
            });
        }
        return (kind == Kind::Json).then_some(Op::Json(id));
    }
    if let Node::Null = node {
        return Some(Op::Null);
    }
    Some(match (kind, node) {
        (Kind::Json, _) => Op::Json(id),
        (Kind::Int64, Node::Int(_) | Node::Long(_)) => Op::I64,
        (Kind::Float64, Node::Int(_) | Node::Long(_)) => Op::F64FromLong,
        (Kind::Float64, Node::Float) => Op::F64FromFloat,
        (Kind::Float64, Node::Double) => Op::F64FromDouble,
        (Kind::String, Node::String(_) | Node::Bytes(Logical::None)) => Op::Str,
        (Kind::String, Node::Enum { .. }) => Op::Enum(id),
        (Kind::Bool, Node::Boolean) => Op::Bool,
        (Kind::Timestamp, Node::Long(Logical::TimestampMillis)) => Op::TsMillis,
        (Kind::Timestamp, Node::Long(Logical::TimestampMicros)) => Op::TsMicros,
        (Kind::Timestamp, Node::Long(Logical::TimestampNanos)) => Op::TsNanos,
        (Kind::Date, Node::Int(Logical::Date)) => Op::Date,
        (Kind::Bytes, Node::Bytes(_) | Node::String(_)) => Op::Bytes,
        (Kind::Bytes, Node::Fixed { size, .. }) => Op::Fixed(*size),
        (Kind::Uuid, Node::String(_)) => Op::UuidStr,
        (
            Kind::Uuid,
            Node::Fixed {
                logical: Logical::Uuid,
                ..
            },
        ) => Op::UuidFixed,
        (Kind::Decimal, Node::Bytes(Logical::Decimal { scale, .. })) => Op::DecimalBytes(*scale),
        (
            Kind::Decimal,
            Node::Fixed {
                size,
                logical: Logical::Decimal { scale, .. },
                ..
            },
        ) => Op::DecimalFixed(*size, *scale),
        _ => return None,
    })
}

impl Plan {
    pub fn new(text: &str, columns: &[Column]) -> Result<Plan, String> {
        let schema = Schema::parse(text)?;
        let Node::Record { fields, .. } = &schema.nodes[schema.root] else {
            return Err(format!(
                "the writer schema is a {}, not a record",
                schema.describe(schema.root)
            ));
        };
        let mut seen = vec![false; columns.len()];
        let mut plan_fields = Vec::with_capacity(fields.len());
        for (name, _, node) in fields {
            let col = columns.iter().position(|c| &c.name == name);
            let op = match col {
                Some(c) => {
                    seen[c] = true;
                    let kind = columns[c].kind;
                    compile(kind, &schema, *node).ok_or_else(|| {
                        format!(
                            "field `{name}`: the writer's {} cannot go into {} column `{name}`",
                            schema.describe(*node),
                            kind.name()
                        )
                    })?
                }
                None => Op::Null,
            };
            plan_fields.push(Field {
                name: name.clone(),
                node: *node,
                col,
                op,
            });
        }
        let absent = (0..columns.len())
            .filter(|&c| !seen[c] && columns[c].nullable)
            .collect();
        let missing = (0..columns.len()).find(|&c| !seen[c] && !columns[c].nullable);
        Ok(Plan {
            schema,
            fields: plan_fields,
            absent,
            missing,
        })
    }

    /// Decodes one datum into the columns; on error, the index of the field it was in.
    /// The caller rolls the columns back.
    pub fn decode(&self, r: &mut Reader, cols: &mut [Column]) -> Result<(), (DErr, usize)> {
        for (i, f) in self.fields.iter().enumerate() {
            let res = match f.col {
                Some(c) => exec(&f.op, &self.schema, r, &mut cols[c]),
                None => json::skip(&self.schema, f.node, r, 0),
            };
            res.map_err(|e| (e, i))?;
        }
        for &c in &self.absent {
            cols[c].null().map_err(|e| (e, usize::MAX))?;
        }
        Ok(())
    }
}

#[inline]
fn exec(op: &Op, s: &Schema, r: &mut Reader, c: &mut Column) -> Result<(), DErr> {
    match op {
        Op::Null => c.null()?,
        Op::I64 => c.i64(r.long()?),
        Op::F64FromLong => c.f64(r.long()? as f64),
        Op::F64FromFloat => c.f64(f32::from_le_bytes(r.fixed()?) as f64),
        Op::F64FromDouble => c.f64(f64::from_le_bytes(r.fixed()?)),
        Op::Str => {
            let b = r.bytes()?;
            text::utf8(b)?;
            if b.contains(&0) {
                return Err(DErr::Nul);
            }
            c.data.extend_from_slice(b);
            c.end_value()?;
        }
        Op::Enum(id) => {
            let i = r.long()?;
            let Node::Enum { symbols, .. } = &s.nodes[*id] else {
                unreachable!()
            };
            let sym = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or(DErr::EnumIndex(i))?;
            c.data.extend_from_slice(sym.as_bytes());
            c.end_value()?;
        }
        Op::Bool => c.bool(r.boolean()?),
        Op::TsMillis => {
            let v = r.long()?;
            c.i64(v.checked_mul(1000).ok_or(DErr::TimestampRange(v))?);
        }
        Op::TsMicros => c.i64(r.long()?),
        Op::TsNanos => c.i64(r.long()?.div_euclid(1000)),
        Op::Date => c.i32(r.int()?),
        Op::Bytes => {
            let b = r.bytes()?;
            c.data.extend_from_slice(b);
            c.end_value()?;
        }
        Op::Fixed(n) => {
            let b = r.take(*n)?;
            c.data.extend_from_slice(b);
            c.end_value()?;
        }
        Op::UuidStr => {
            let b = r.bytes()?;
            if !text::is_uuid(b) {
                return Err(DErr::NotUuid);
            }
            c.data.extend_from_slice(b);
            c.end_value()?;
        }
        Op::UuidFixed => {
            let b = r.take(16)?;
            text::write_uuid(&mut c.data, b);
            c.end_value()?;
        }
        Op::DecimalBytes(scale) => {
            let b = r.bytes()?;
            text::write_decimal(&mut c.data, b, *scale)?;
            c.end_value()?;
        }
        Op::DecimalFixed(n, scale) => {
            let b = r.take(*n)?;
            text::write_decimal(&mut c.data, b, *scale)?;
            c.end_value()?;
        }
        Op::Json(id) => {
            let mut id = *id;
            if let Node::Union(branches) = &s.nodes[id] {
                id = json::branch(branches, r)?;
            }
            if let Node::Null = s.nodes[id] {
                c.null()?;
            } else {
                json::render(s, id, r, &mut c.data, 1)?;
                c.end_value()?;
            }
        }
        Op::Opt { null, value, inner } => {
            let i = r.long()?;
            if i == *null {
                c.null()?;
            } else if i == *value {
                exec(inner, s, r, c)?;
            } else {
                return Err(DErr::UnionIndex(i));
            }
        }
    }
    Ok(())
}

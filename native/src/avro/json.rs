//! Avro values rendered as JSON text (for json columns) and skipped (unmapped fields).
//! Bytes and fixed become strings of code points U+0000..U+00FF (Avro's JSON encoding),
//! unions their branch's value, non-finite floats null. A NUL would become `\u0000`, which
//! PostgreSQL's jsonb rejects: it is an error instead.

use super::reader::Reader;
use super::schema::{Logical, Node, NodeId, Schema};
use crate::error::DErr;
use crate::text::*;

pub const MAX_DEPTH: usize = 64;

/// Reads a union's branch index; the branch's node.
#[inline]
pub fn branch(branches: &[NodeId], r: &mut Reader) -> Result<NodeId, DErr> {
    let i = r.long()?;
    usize::try_from(i)
        .ok()
        .and_then(|i| branches.get(i).copied())
        .ok_or(DErr::UnionIndex(i))
}

/// Appends the JSON text of one value of `id`.
pub fn render(
    s: &Schema,
    id: NodeId,
    r: &mut Reader,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), DErr> {
    if depth > MAX_DEPTH {
        return Err(DErr::Depth);
    }
    match &s.nodes[id] {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Boolean => out.extend_from_slice(if r.boolean()? { b"true" } else { b"false" }),
        Node::Int(_) => write_int(out, r.int()? as i64),
        Node::Long(_) => write_int(out, r.long()?),
        Node::Float => write_float(out, f32::from_le_bytes(r.fixed()?) as f64, true),
        Node::Double => write_float(out, f64::from_le_bytes(r.fixed()?), false),
        Node::Bytes(Logical::Decimal { scale, .. }) => write_decimal(out, r.bytes()?, *scale)?,
        Node::Bytes(_) => write_codepoints(out, r.bytes()?)?,
        Node::String(_) => {
            let b = r.bytes()?;
            utf8(b)?;
            write_str_checked(out, b)?;
        }
        Node::Fixed { size, logical, .. } => {
            let b = r.take(*size)?;
            match logical {
                Logical::Decimal { scale, .. } => write_decimal(out, b, *scale)?,
                Logical::Uuid => {
                    out.push(b'"');
                    write_uuid(out, b);
                    out.push(b'"');
                }
                _ => write_codepoints(out, b)?,
            }
        }
        Node::Enum { json, .. } => {
            let i = r.long()?;
            let sym = usize::try_from(i)
                .ok()
                .and_then(|i| json.get(i))
                .ok_or(DErr::EnumIndex(i))?;
            out.extend_from_slice(sym);
        }
        Node::Record { fields, .. } => {
            out.push(b'{');
            for (k, (_, key, fid)) in fields.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                render(s, *fid, r, out, depth + 1)?;
            }
            out.push(b'}');
        }
        Node::Array(item) => {
            out.push(b'[');
            let mut first = true;
            loop {
                let (n, _) = r.block(s.empty_ok[*item])?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    render(s, *item, r, out, depth + 1)?;
                }
            }
            out.push(b']');
        }
        Node::Map(value) => {
            out.push(b'{');
            let mut first = true;
            loop {
                let (n, _) = r.block(false)?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let key = r.bytes()?;
                    utf8(key)?;
                    write_str_checked(out, key)?;
                    out.push(b':');
                    render(s, *value, r, out, depth + 1)?;
                }
            }
            out.push(b'}');
        }
        Node::Union(branches) => {
            let b = branch(branches, r)?;
            render(s, b, r, out, depth + 1)?;
        }
    }
    Ok(())
}

/// Moves past one value of `id`, checking only what is needed to find its end.
pub fn skip(s: &Schema, id: NodeId, r: &mut Reader, depth: usize) -> Result<(), DErr> {
    if depth > MAX_DEPTH {
        return Err(DErr::Depth);
    }
    match &s.nodes[id] {
        Node::Null => {}
        Node::Boolean => {
            r.boolean()?;
        }
        Node::Int(_) | Node::Long(_) | Node::Enum { .. } => {
            r.long()?;
        }
        Node::Float => {
            r.fixed::<4>()?;
        }
        Node::Double => {
            r.fixed::<8>()?;
        }
        Node::Bytes(_) | Node::String(_) => {
            r.bytes()?;
        }
        Node::Fixed { size, .. } => {
            r.take(*size)?;
        }
        Node::Record { fields, .. } => {
            for (_, _, fid) in fields {
                skip(s, *fid, r, depth + 1)?;
            }
        }
        Node::Array(item) | Node::Map(item) => {
            let map = matches!(s.nodes[id], Node::Map(_));
            loop {
                let (n, size) = r.block(!map && s.empty_ok[*item])?;
                if n == 0 {
                    break;
                }
                if let Some(size) = size {
                    r.take(size)?;
                    continue;
                }
                for _ in 0..n {
                    if map {
                        r.bytes()?;
                    }
                    skip(s, *item, r, depth + 1)?;
                }
            }
        }
        Node::Union(branches) => {
            let b = branch(branches, r)?;
            skip(s, b, r, depth + 1)?;
        }
    }
    Ok(())
}

//! The wire format: varints, fixed and length-delimited fields, tags, skipping, and a
//! message's fields found in one scan.

use super::*;

/// Why a payload does not parse.
pub(super) type WErr = &'static str;

#[inline]
pub(super) fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WErr> {
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
pub(super) fn fixed<const N: usize>(buf: &[u8], pos: &mut usize) -> Result<[u8; N], WErr> {
    let s = buf
        .get(*pos..pos.saturating_add(N))
        .ok_or("truncated fixed-width value")?;
    *pos += N;
    let mut out = [0; N];
    out.copy_from_slice(s);
    Ok(out)
}

#[inline]
pub(super) fn delimited<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], WErr> {
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
pub(super) fn tag(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), WErr> {
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
pub(super) fn skip(
    buf: &[u8],
    pos: &mut usize,
    number: u32,
    wire: u8,
    depth: usize,
) -> Result<(), WErr> {
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
pub(super) struct Occ<'a> {
    pub(super) field: u16,
    pub(super) packed: bool,
    pub(super) raw: u64,
    pub(super) data: &'a [u8],
}

/// The fields of one message (possibly several merged occurrences) as read from the wire.
#[derive(Default)]
pub(super) struct View<'a> {
    pub(super) occs: Vec<Occ<'a>>,
    /// per field: index of its last occurrence + 1 (0: none)
    pub(super) last: Vec<u32>,
    /// per oneof: index of the last occurrence of any member + 1
    pub(super) oneof_last: Vec<u32>,
}

impl<'a> View<'a> {
    pub(super) fn reset(&mut self, m: &MsgDef) {
        self.occs.clear();
        self.last.clear();
        self.last.resize(m.fields.len(), 0);
        self.oneof_last.clear();
        self.oneof_last.resize(m.oneofs, 0);
    }

    pub(super) fn index(&mut self, m: &MsgDef) {
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
    pub(super) fn scalar(&self, m: &MsgDef, f: usize) -> Option<Occ<'a>> {
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
    pub(super) fn merged(&self, m: &MsgDef, f: usize) -> Option<usize> {
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

    pub(super) fn spans(&self, f: usize, start: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.occs[start..]
            .iter()
            .filter(move |o| o.field as usize == f)
            .map(|o| o.data)
    }
}

/// Checks a packed run of `ty` values.
pub(super) fn check_packed(ty: Ty, data: &[u8]) -> Result<(), WErr> {
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
pub(super) fn values(s: &Schema, f: &FieldDef, o: &Occ, mut each: impl FnMut(u64)) {
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
pub(super) fn scan<'a>(
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
pub(super) fn read<'a, I: Iterator<Item = &'a [u8]>>(
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

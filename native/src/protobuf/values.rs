//! Field values into their columns: scalars, well-known types, dates, UUIDs and decimals.

use super::*;

/// Per-record working memory: one view per nesting depth.
#[derive(Default)]
pub(super) struct Ctx<'a> {
    pub(super) views: Vec<View<'a>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn take(&mut self, depth: usize) -> View<'a> {
        if self.views.len() <= depth {
            self.views.resize_with(depth + 1, View::default);
        }
        std::mem::take(&mut self.views[depth])
    }

    pub(super) fn give(&mut self, depth: usize, view: View<'a>) {
        self.views[depth] = view;
    }
}

/// Decodes one payload into one value per column; Err: the record's error.
pub(super) fn record<'a>(
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

pub(super) fn absent(c: &mut Column, where_: &str) -> Result<(), String> {
    if c.nullable {
        c.null().map_err(|_| String::new())
    } else {
        Err(format!(
            "column {}: {where_} is absent and the column is not nullable",
            c.name
        ))
    }
}

pub(super) fn column<'a>(
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
                    _ => Err(format!(
                        "column {}: {w}: a wrapper without its value",
                        c.name
                    )),
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

pub(super) fn batch_error(_: DErr, c: &Column) -> String {
    format!("column {} holds over 2 GiB in one batch", c.name)
}

/// A scalar field's value (None: absent, its default) into its column.
pub(super) fn scalar(
    s: &Schema,
    f: &FieldDef,
    o: Option<Occ>,
    c: &mut Column,
    w: &str,
) -> Result<(), String> {
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
                    return Err(format!(
                        "column {}: {w} value {v} does not fit int64",
                        c.name
                    ))
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
        (Kind::Decimal, ty) if ty.is_int() => text(c, ty.int(raw).to_string().as_bytes()),
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
        (Kind::Uuid, Ty::String) if data.len() == 36 && crate::text::is_uuid(data) => {
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
pub(super) fn shortest_f32(v: f32) -> f64 {
    if !v.is_finite() {
        return v as f64;
    }
    for digits in 5..17 {
        let x: f64 = format!("{:.*e}", digits, v as f64)
            .parse()
            .unwrap_or(v as f64);
        if x as f32 == v {
            return x;
        }
    }
    v as f64
}

/// (year, month, day) of a day count since 1970-01-01.
pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
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
pub(super) fn uuid_text(s: &[u8]) -> Option<Vec<u8>> {
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
pub(super) fn py_repr(s: &[u8]) -> String {
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
pub(super) fn decimal_text(s: &[u8]) -> Result<String, String> {
    let bad = |what: &str| format!("{} is not a {what}", py_repr(s));
    let t = std::str::from_utf8(s)
        .map_err(|_| bad("decimal number"))?
        .trim();
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity")
        || (lower.starts_with("nan") || lower.starts_with("snan"))
            && lower.trim_start_matches('s')[3..]
                .bytes()
                .all(|b| b.is_ascii_digit())
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
pub(super) fn sci_string(negative: bool, digits: &str, exp: i64) -> String {
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
pub(super) fn decimal_bytes(value: &[u8], scale: i128) -> Result<String, String> {
    let mut text = Vec::new();
    crate::text::write_decimal(&mut text, value, 0)
        .map_err(|_| format!("a decimal of {} bytes is too long", value.len()))?;
    let text = String::from_utf8(text).unwrap_or_default();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.as_str()),
    };
    Ok(sci_string(negative, digits, -(scale as i64)))
}

//! Values rendered as JSON text for json columns, as protobuf's json_format writes them.

use super::*;

pub(super) enum JErr {
    Nul,
    Value(String),
}

pub(super) fn nul(_: DErr) -> JErr {
    JErr::Nul
}

/// A finite double as msgspec writes it: shortest digits, `1.0`, `1e16`, `1e-7`.
pub(super) fn write_float(out: &mut Vec<u8>, text: String) {
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

pub(super) fn write_double(out: &mut Vec<u8>, v: f64, single: bool) {
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
pub(super) fn write_int64(out: &mut Vec<u8>, v: i128) {
    let exact = (v as f64) as i128 == v && (v as f64).is_finite();
    if !exact {
        out.push(b'"');
    }
    out.extend_from_slice(v.to_string().as_bytes());
    if !exact {
        out.push(b'"');
    }
}

pub(super) const B64: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn write_base64(out: &mut Vec<u8>, b: &[u8]) {
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
pub(super) fn scalar_json(
    s: &Schema,
    f: &FieldDef,
    o: Option<Occ>,
    raw: u64,
    out: &mut Vec<u8>,
) -> Result<(), JErr> {
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
pub(super) fn render_field<'a>(
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
pub(super) fn render_map<'a, I: Iterator<Item = &'a [u8]>>(
    s: &Schema,
    entry: usize,
    entries: I,
    out: &mut Vec<u8>,
    cx: &mut Ctx<'a>,
    depth: usize,
) -> Result<(), JErr> {
    let em = &s.msgs[entry];
    let (Some(ki), Some(vi)) = (em.lookup(1), em.lookup(2)) else {
        return Err(JErr::Value(format!(
            "map entry {} without key or value",
            em.name
        )));
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
pub(super) fn dedupe(out: &mut Vec<u8>, start: usize, entries: &[(usize, usize)]) {
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
pub(super) fn render_message<'a, I: Iterator<Item = &'a [u8]>>(
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

pub(super) fn render_view<'a>(
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
pub(super) fn render_value<'a>(
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
pub(super) fn write_timestamp(out: &mut Vec<u8>, secs: i128, nanos: i128) -> Result<(), JErr> {
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

pub(super) fn fraction(nanos: i64) -> String {
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
pub(super) fn write_duration(out: &mut Vec<u8>, secs: i128, nanos: i128) -> Result<(), JErr> {
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

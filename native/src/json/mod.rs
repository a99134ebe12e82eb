//! JSON records (one object per Kafka value) into Arrow column buffers.
//!
//! It takes only the records it can decode exactly as the Python path would (msgspec with
//! the same column types) and *defers* every other one: the Python path, which stays the
//! oracle, then gives those their value or their dead-letter reason. Bad records are rare, so
//! deferring them costs nothing, and a verdict can never differ between the two paths: only
//! the values of good records are native, and the differential tests compare those.
//!
//! Deferred, among others: invalid UTF-8 or JSON, a value that is not an object, a missing
//! non-nullable field, null where no null is allowed, a key given twice, a wrong type, an int
//! out of int64 range or a float token for an int64 column, a timestamp or date outside the
//! plain RFC 3339 forms below, a NUL in text, `\u0000` in a json column, `oversized`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::columns::{Column, Kind};
use crate::text::days_from_civil;

const BOM: &[u8] = b"\xef\xbb\xbf";
/// Deeper values are deferred: msgspec's limit is the interpreter's recursion limit (about
/// 1000 levels less the caller's stack), which no native verdict could follow.
const MAX_DEPTH: usize = 256;

/// Column kinds this decoder writes; a schema with another kind stays on the Python path.
pub fn supported(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Int64
            | Kind::Float64
            | Kind::String
            | Kind::Bool
            | Kind::Timestamp
            | Kind::Date
            | Kind::Json
            | Kind::Uuid
    )
}

pub struct JsonDecoder {
    pub columns: Vec<Column>,
    pub max_record_bytes: usize,
    /// per column: set once the record being decoded gave it a value
    seen: Vec<bool>,
}

/// What a decode call found, by fetch position.
pub struct Outcome {
    pub good: Vec<usize>,
    pub deferred: Vec<usize>,
    pub absent: Vec<usize>,
}

/// Why a record is left to the Python path; its reason is the Python path's to give.
#[derive(Debug)]
struct Defer;

impl fmt::Display for Defer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deferred")
    }
}

impl std::error::Error for Defer {}

impl de::Error for Defer {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Defer
    }
}

impl JsonDecoder {
    pub fn new(columns: Vec<Column>, max_record_bytes: usize) -> JsonDecoder {
        let seen = vec![false; columns.len()];
        JsonDecoder {
            columns,
            max_record_bytes,
            seen,
        }
    }

    /// # Safety
    /// Each non-null pointer must point to `len` readable bytes for the whole call.
    pub unsafe fn run(&mut self, values: &[(*const u8, usize)]) -> Outcome {
        for c in &mut self.columns {
            c.clear();
        }
        let mut out = Outcome {
            good: Vec::with_capacity(values.len()),
            deferred: Vec::new(),
            absent: Vec::new(),
        };
        for (pos, &(ptr, len)) in values.iter().enumerate() {
            if ptr.is_null() {
                out.absent.push(pos);
                continue;
            }
            let v = unsafe { std::slice::from_raw_parts(ptr, len) };
            let rows = out.good.len();
            if self.record(v).is_ok() {
                out.good.push(pos);
            } else {
                for c in &mut self.columns {
                    c.truncate(rows);
                }
                out.deferred.push(pos);
            }
        }
        out
    }

    fn record(&mut self, value: &[u8]) -> Result<(), Defer> {
        if value.len() > self.max_record_bytes {
            return Err(Defer);
        }
        let text =
            std::str::from_utf8(value.strip_prefix(BOM).unwrap_or(value)).map_err(|_| Defer)?;
        self.seen.iter_mut().for_each(|s| *s = false);
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(Event(self)).map_err(|_| Defer)?;
        de.end().map_err(|_| Defer)?;
        for (c, seen) in self.columns.iter_mut().zip(&self.seen) {
            if !seen {
                c.null().map_err(|_| Defer)?; // absent: null if allowed, else Python says why
            }
        }
        Ok(())
    }
}

struct Event<'a>(&'a mut JsonDecoder);

impl<'de> Visitor<'de> for Event<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let d = self.0;
        while let Some(key) = map.next_key::<KeyName<'de>>()? {
            let key: &str = &key.0;
            match d.columns.iter().position(|c| c.name == key) {
                Some(i) => {
                    if std::mem::replace(&mut d.seen[i], true) {
                        return Err(de::Error::custom("key given twice"));
                    }
                    map.next_value_seed(Cell(&mut d.columns[i]))?;
                }
                None => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    if too_deep(raw.get().as_bytes()) {
                        return Err(de::Error::custom("too deep"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A key, borrowed when it holds no escape.
struct KeyName<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(KeyName(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(KeyName(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// One field's value into its column.
struct Cell<'a>(&'a mut Column);

impl<'de> DeserializeSeed<'de> for Cell<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let c = self.0;
        match c.kind {
            Kind::Json => {
                let raw = <&'de RawValue as de::Deserialize>::deserialize(d)?;
                let text = raw.get();
                if text == "null" {
                    return c.null().map_err(|_| de::Error::custom("column"));
                }
                if text.contains("\\u0000") || too_deep(text.as_bytes()) {
                    return Err(de::Error::custom("\\u0000 in jsonb, or too deep"));
                }
                c.data.extend_from_slice(text.as_bytes());
                c.end_value().map_err(|_| de::Error::custom("column"))
            }
            _ => d.deserialize_any(Scalar(c)),
        }
    }
}

struct Scalar<'a>(&'a mut Column);

impl<'de> Visitor<'de> for Scalar<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} value", self.0.kind.name())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.null().map_err(|_| E::custom("column"))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.0.kind {
            Kind::Bool => {
                self.0.bool(v);
                Ok(())
            }
            _ => Err(E::custom("type")),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match self.0.kind {
            Kind::Int64 => self.0.i64(v),
            // as Python's float(int): to nearest, ties to even
            Kind::Float64 => self.0.f64(v as f64),
            _ => return Err(E::custom("type")),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match self.0.kind {
            Kind::Int64 => self
                .0
                .i64(i64::try_from(v).map_err(|_| E::custom("range"))?),
            Kind::Float64 => self.0.f64(v as f64),
            _ => return Err(E::custom("type")),
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json also hands integers beyond u64 over as floats: msgspec's verdict on
        // those is the Python path's to give, so only finite values of float columns pass
        match self.0.kind {
            Kind::Float64 if v.is_finite() => {
                self.0.f64(v);
                Ok(())
            }
            _ => Err(E::custom("type")),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.visit_str(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let c = self.0;
        match c.kind {
            Kind::String | Kind::Uuid => {
                if v.as_bytes().contains(&0) {
                    return Err(E::custom("NUL"));
                }
                c.data.extend_from_slice(v.as_bytes());
                c.end_value().map_err(|_| E::custom("column"))
            }
            Kind::Timestamp => {
                c.i64(timestamp_us(v.as_bytes()).ok_or_else(|| E::custom("timestamp"))?);
                Ok(())
            }
            Kind::Date => {
                c.i32(date_days(v.as_bytes()).ok_or_else(|| E::custom("date"))?);
                Ok(())
            }
            _ => Err(E::custom("type")),
        }
    }
}

/// Whether the valid JSON `v` nests arrays and objects deeper than MAX_DEPTH.
fn too_deep(v: &[u8]) -> bool {
    if v.len() <= 2 * MAX_DEPTH {
        return false; // each level takes two bytes at least
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in v {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    false
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut n = 0u32;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(d - b'0');
    }
    Some(n)
}

/// `YYYY-MM-DD`.
fn date_days(s: &[u8]) -> Option<i32> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let num = |b: &[u8]| digits(b).map(i128::from);
    days_from_civil(num(&s[..4])?, num(&s[5..7])?, num(&s[8..])?)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)` as microseconds since the epoch, UTC; any
/// other form (no zone, a space, more digits, a leap second) is the Python path's to judge.
fn timestamp_us(s: &[u8]) -> Option<i64> {
    if s.len() < 20 || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let days = i64::from(date_days(&s[..10])?);
    let (h, mi, sec) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|d| d.is_ascii_digit()).count();
        if n == 0 || n > 6 {
            return None;
        }
        micros = i64::from(digits(&frac[..n])?) * 10i64.pow(6 - n as u32);
        rest = &frac[n..];
    }
    let offset_s = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let (oh, om) = (digits(&[*oh1, *oh2])?, digits(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let local = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    Some((local - offset_s) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> JsonDecoder {
        JsonDecoder::new(
            vec![
                Column::new("id".into(), Kind::String, false),
                Column::new("n".into(), Kind::Int64, false),
                Column::new("x".into(), Kind::Float64, true),
                Column::new("ts".into(), Kind::Timestamp, true),
                Column::new("doc".into(), Kind::Json, true),
            ],
            1000,
        )
    }

    fn run(d: &mut JsonDecoder, values: &[&[u8]]) -> Outcome {
        let ptrs: Vec<_> = values.iter().map(|v| (v.as_ptr(), v.len())).collect();
        unsafe { d.run(&ptrs) }
    }

    #[test]
    fn takes_valid_records_and_defers_the_rest() {
        let mut d = decoder();
        let out = run(
            &mut d,
            &[
                br#"{"id":"a","n":1,"x":2,"doc":{"k": [1, 2]},"extra":[{}]}"#,
                br#"{"id":"b","n":1.0}"#,
                br#"{"id":"c","n":1,"n":2}"#,
                br#"{"id":"d"}"#,
                b"\xef\xbb\xbf {\"n\": -5, \"id\": \"\\u00e9\"} ",
                br#"{"id":"e","n":1} {}"#,
                br#"{"id":"f","n":9223372036854775808}"#,
                br#"{"id":"g\u0000","n":1}"#,
                br#"{"id":"h","n":1,"doc":"\u0000"}"#,
            ],
        );
        assert_eq!(out.good, vec![0, 4]);
        assert_eq!(out.deferred, vec![1, 2, 3, 5, 6, 7, 8]);
        let (_, offsets, data) = d.columns[0].buffers();
        assert_eq!(offsets.unwrap(), [0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(data, "aé".as_bytes());
        assert_eq!(d.columns[4].buffers().2, br#"{"k": [1, 2]}"#);
        assert_eq!(d.columns[2].buffers().2[..8], 2.0f64.to_le_bytes());
    }

    #[test]
    fn values_nested_deeper_than_the_limit_are_deferred() {
        let nest = |d: usize| "[".repeat(d) + "1" + &"]".repeat(d);
        assert!(!too_deep(nest(MAX_DEPTH).as_bytes()));
        assert!(too_deep(nest(MAX_DEPTH + 1).as_bytes()));
        let in_text = format!("[\"{}\\\"\"]", "[".repeat(2 * MAX_DEPTH));
        assert!(!too_deep(in_text.as_bytes()));
        let mut d = decoder();
        let ok = format!(r#"{{"id":"a","n":1,"doc":{}}}"#, nest(MAX_DEPTH));
        let deep = format!(r#"{{"id":"a","n":1,"other":{}}}"#, nest(MAX_DEPTH + 1));
        let out = run(&mut d, &[ok.as_bytes(), deep.as_bytes()]);
        assert_eq!((out.good, out.deferred), (vec![0], vec![1]));
    }

    #[test]
    fn timestamps_and_dates_of_the_plain_forms() {
        assert_eq!(timestamp_us(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(timestamp_us(b"1970-01-01T02:00:00.5+02:00"), Some(500_000));
        assert_eq!(timestamp_us(b"1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(
            timestamp_us(b"2026-11-26T10:00:00-00:30"),
            Some(1_795_689_000_000_000)
        );
        for bad in [
            &b"2026-11-26 10:00:00Z"[..],
            b"2026-11-26T10:00:00",
            b"2026-11-26T10:00:60Z",
            b"2026-02-29T10:00:00Z",
            b"2026-11-26T10:00:00.1234567Z",
            b"2026-11-26T10:00Z",
            b"2026-11-26T10:00:00+02",
            b"0000-01-01T00:00:00Z",
        ] {
            assert_eq!(timestamp_us(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(date_days(b"2000-03-01"), Some(11_017));
        assert_eq!(date_days(b"2024-02-29"), Some(19_782));
        assert_eq!(date_days(b"2023-02-29"), None);
    }
}

//! Text writers the decoders share: JSON strings (a NUL refused, since PostgreSQL's jsonb
//! rejects `\u0000`, or escaped for schema text), Avro bytes as code points, ints, floats,
//! UUIDs and decimals as text.

use crate::error::DErr;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 0: copied as is; otherwise the escape's second character (`u`: \u00XX).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// A JSON string of valid UTF-8 text; Err(Nul) on a NUL character.
#[inline]
pub fn write_str_checked(out: &mut Vec<u8>, s: &[u8]) -> Result<(), DErr> {
    escape::<false>(out, s)
}

/// A JSON string for schema text (names): NUL is escaped, not refused.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = escape::<true>(out, s.as_bytes());
}

#[inline]
pub fn escape<const NUL_OK: bool>(out: &mut Vec<u8>, s: &[u8]) -> Result<(), DErr> {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        start = i + 1;
        match e {
            b'u' if b == 0 && !NUL_OK => return Err(DErr::Nul),
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]),
            e => out.extend_from_slice(&[b'\\', e]),
        }
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
    Ok(())
}

/// Bytes as a string of code points U+0000..U+00FF.
pub fn write_codepoints(out: &mut Vec<u8>, s: &[u8]) -> Result<(), DErr> {
    if s.is_ascii() {
        return write_str_checked(out, s);
    }
    let mut utf8 = Vec::with_capacity(s.len() * 2);
    for &b in s {
        if b < 0x80 {
            utf8.push(b);
        } else {
            utf8.extend_from_slice(&[0xc0 | (b >> 6), 0x80 | (b & 0x3f)]);
        }
    }
    write_str_checked(out, &utf8)
}

#[inline]
pub fn utf8(s: &[u8]) -> Result<(), DErr> {
    std::str::from_utf8(s).map(|_| ()).map_err(|_| DErr::Utf8)
}

#[inline]
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

pub fn write_float(out: &mut Vec<u8>, v: f64, single: bool) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if single {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v as f32).as_bytes());
    } else {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    }
}

/// Canonical text of a 16-byte UUID.
pub fn write_uuid(out: &mut Vec<u8>, b: &[u8]) {
    for (i, &x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.extend_from_slice(&[HEX[(x >> 4) as usize], HEX[(x & 15) as usize]]);
    }
}

/// Whether text is a UUID PostgreSQL reads: 8-4-4-4-12 hex digits, or 32 without hyphens.
pub fn is_uuid(s: &[u8]) -> bool {
    match s.len() {
        36 => s.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        }),
        32 => s.iter().all(u8::is_ascii_hexdigit),
        _ => false,
    }
}

/// Decimal values longer than this are refused (4096 bits, over 1200 digits).
const MAX_DECIMAL_BYTES: usize = 512;

/// Text of a decimal: `b` is the big-endian two's complement unscaled value.
pub fn write_decimal(out: &mut Vec<u8>, b: &[u8], scale: u32) -> Result<(), DErr> {
    if b.len() > MAX_DECIMAL_BYTES {
        return Err(DErr::DecimalTooLong(b.len()));
    }
    let negative = b.first().is_some_and(|x| x & 0x80 != 0);
    let mut digits = Vec::new();
    if b.len() <= 16 {
        let mut v: i128 = if negative { -1 } else { 0 };
        for &x in b {
            v = (v << 8) | x as i128;
        }
        digits.extend_from_slice(itoa::Buffer::new().format(v.unsigned_abs()).as_bytes());
    } else {
        // magnitude, then repeated division by 10^9
        let mut m: Vec<u8> = b.to_vec();
        if negative {
            for x in m.iter_mut() {
                *x = !*x;
            }
            for x in m.iter_mut().rev() {
                let (y, carry) = x.overflowing_add(1);
                *x = y;
                if !carry {
                    break;
                }
            }
        }
        let mut chunks = Vec::new();
        let mut start = 0;
        loop {
            while start < m.len() && m[start] == 0 {
                start += 1;
            }
            if start == m.len() {
                break;
            }
            let mut rem: u64 = 0;
            for x in m[start..].iter_mut() {
                let cur = (rem << 8) | *x as u64;
                *x = (cur / 1_000_000_000) as u8;
                rem = cur % 1_000_000_000;
            }
            chunks.push(rem as u32);
        }
        match chunks.pop() {
            None => digits.push(b'0'),
            Some(top) => {
                digits.extend_from_slice(itoa::Buffer::new().format(top).as_bytes());
                for c in chunks.iter().rev() {
                    digits.extend_from_slice(format!("{c:09}").as_bytes());
                }
            }
        }
    }
    if negative {
        out.push(b'-');
    }
    let scale = scale as usize;
    if scale == 0 {
        out.extend_from_slice(&digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(&digits);
    }
    Ok(())
}

/// Days since 1970-01-01 of a valid date of years 1..9999.
pub fn days_from_civil(y: i128, m: i128, d: i128) -> Option<i32> {
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
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

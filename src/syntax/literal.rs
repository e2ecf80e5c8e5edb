//! Decoding of literal tokens: numbers and quoted strings, following
//! protobuf's text-format tokenizer (C-style escapes, `0x` hex and leading-0
//! octal integers, `f` float suffixes, `inf` / `nan`).

use super::ast::ScalarKind;

/// Why a number token is malformed.
pub fn decode_number(text: &str) -> Result<ScalarKind, String> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{text}` is not a valid hexadecimal integer"));
        }
        return Ok(integer(negative, u64::from_str_radix(hex, 16).ok(), text));
    }
    if body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit()) {
        if !body.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!(
                "`{text}` is not a valid octal integer (a leading 0 means octal)"
            ));
        }
        return Ok(integer(negative, u64::from_str_radix(body, 8).ok(), text));
    }
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(integer(negative, body.parse::<u64>().ok(), text));
    }
    let float_body = body
        .strip_suffix('f')
        .or_else(|| body.strip_suffix('F'))
        .unwrap_or(body);
    if is_float_syntax(float_body) {
        return match float_body.parse::<f64>() {
            Ok(v) => Ok(ScalarKind::Float(if negative { -v } else { v })),
            Err(_) => Err(format!("`{text}` is not a valid number")),
        };
    }
    Err(format!("`{text}` is not a valid number"))
}

fn integer(negative: bool, magnitude: Option<u64>, text: &str) -> ScalarKind {
    match magnitude {
        Some(magnitude) => ScalarKind::Integer {
            negative,
            magnitude,
        },
        None => ScalarKind::BigInteger {
            negative,
            text: text.to_string(),
        },
    }
}

/// `digits [. digits] [e [+-] digits]` or `. digits [exp]`, as protobuf
/// accepts for floats.
fn is_float_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

/// Unescapes the body of a quoted string (C escapes, octal, `\x`, `\u`,
/// `\U`). Returns the bytes or a message naming the bad escape and its
/// byte offset within `body`.
pub fn unescape(body: &str) -> Result<Vec<u8>, (usize, String)> {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let at = i;
        i += 1;
        let Some(&e) = bytes.get(i) else {
            return Err((at, "a string cannot end with a lone backslash".into()));
        };
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'?' => out.push(b'?'),
            b'0'..=b'7' => {
                let mut v: u32 = (e - b'0') as u32;
                let mut n = 1;
                while n < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                    v = v * 8 + (bytes[i] - b'0') as u32;
                    i += 1;
                    n += 1;
                }
                if v > 255 {
                    return Err((
                        at,
                        format!("octal escape `{}` is above \\377", &body[at..i]),
                    ));
                }
                out.push(v as u8);
            }
            b'x' | b'X' => {
                let start = i;
                while i < bytes.len() && i - start < 2 && bytes[i].is_ascii_hexdigit() {
                    i += 1;
                }
                if i == start {
                    return Err((at, "`\\x` must be followed by hex digits".into()));
                }
                let v = u8::from_str_radix(&body[start..i], 16).map_err(|e| (at, e.to_string()))?;
                out.push(v);
            }
            b'u' | b'U' => {
                let len = if e == b'u' { 4 } else { 8 };
                let digits = body
                    .get(i..i + len)
                    .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
                let Some(digits) = digits else {
                    return Err((at, format!("`\\{}` needs {len} hex digits", e as char)));
                };
                i += len;
                let code = u32::from_str_radix(digits, 16).map_err(|e| (at, e.to_string()))?;
                let Some(ch) = char::from_u32(code) else {
                    return Err((
                        at,
                        format!("`\\{}{digits}` is not a valid code point", e as char),
                    ));
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            other => {
                return Err((at, format!("unknown escape `\\{}`", char::from(other))));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(
            decode_number("0x1F"),
            Ok(ScalarKind::Integer {
                negative: false,
                magnitude: 31
            })
        );
        assert_eq!(
            decode_number("-017"),
            Ok(ScalarKind::Integer {
                negative: true,
                magnitude: 15
            })
        );
        assert_eq!(decode_number("1e-6"), Ok(ScalarKind::Float(1e-6)));
        assert_eq!(decode_number(".5"), Ok(ScalarKind::Float(0.5)));
        assert_eq!(decode_number("1.0f"), Ok(ScalarKind::Float(1.0)));
        assert_eq!(decode_number("-2.5e3"), Ok(ScalarKind::Float(-2500.0)));
        assert!(decode_number("1.2.3").is_err());
        assert!(decode_number("09").is_err());
        assert!(decode_number("12abc").is_err());
        assert!(decode_number("1e").is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(
            unescape(r"a\tb\\\x41\101\u00e9"),
            Ok(b"a\tb\\AA\xc3\xa9".to_vec())
        );
        assert!(unescape(r"\q").is_err());
    }
}

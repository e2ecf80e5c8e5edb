//! Protobuf text format for a dynamic message, laid out as TorchEasyRec's
//! configs are: fields in declaration order, two-space indent, `name {`
//! blocks, repeated numbers as `[a, b]` lists, repeated strings and blocks
//! one per line.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};

/// The message's fields as text format.
pub(crate) fn print(msg: &DynamicMessage) -> String {
    let mut out = String::new();
    message(&mut out, msg, 0);
    out
}

fn message(out: &mut String, msg: &DynamicMessage, depth: usize) {
    for fd in msg.descriptor().fields() {
        if !msg.has_field(&fd) {
            continue;
        }
        field(out, &fd, &msg.get_field(&fd), depth);
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn block(out: &mut String, name: &str, msg: &DynamicMessage, depth: usize) {
    indent(out, depth);
    out.push_str(name);
    out.push_str(" {\n");
    message(out, msg, depth + 1);
    indent(out, depth);
    out.push_str("}\n");
}

fn field(out: &mut String, fd: &FieldDescriptor, value: &Value, depth: usize) {
    let name = fd.name();
    match value {
        Value::Message(m) => block(out, name, m, depth),
        Value::List(items) => {
            let inline = !matches!(fd.kind(), Kind::Message(_) | Kind::String | Kind::Bytes);
            if inline {
                let parts: Vec<String> = items.iter().map(|v| scalar(fd, v)).collect();
                indent(out, depth);
                out.push_str(&format!("{name}: [{}]\n", parts.join(", ")));
            } else {
                for v in items {
                    field(out, fd, v, depth);
                }
            }
        }
        Value::Map(entries) => {
            let Kind::Message(entry) = fd.kind() else {
                return;
            };
            let value_fd = entry.map_entry_value_field();
            for (k, v) in entries {
                indent(out, depth);
                out.push_str(&format!("{name} {{\n"));
                indent(out, depth + 1);
                out.push_str(&format!("key: {}\n", map_key(k)));
                field(out, &value_fd, v, depth + 1);
                indent(out, depth);
                out.push_str("}\n");
            }
        }
        v => {
            indent(out, depth);
            out.push_str(&format!("{name}: {}\n", scalar(fd, v)));
        }
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => quote(s),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(i) => i.to_string(),
        MapKey::I64(i) => i.to_string(),
        MapKey::U32(i) => i.to_string(),
        MapKey::U64(i) => i.to_string(),
    }
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:?}")
    }
}

fn scalar(fd: &FieldDescriptor, v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::I32(i) => i.to_string(),
        Value::I64(i) => i.to_string(),
        Value::U32(i) => i.to_string(),
        Value::U64(i) => i.to_string(),
        Value::F32(f) => {
            if f.is_finite() {
                format!("{f:?}")
            } else {
                float(f64::from(*f))
            }
        }
        Value::F64(f) => float(*f),
        Value::String(s) => quote(s),
        Value::Bytes(b) => quote(&String::from_utf8_lossy(b)),
        Value::EnumNumber(n) => match fd.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        Value::Message(_) | Value::List(_) | Value::Map(_) => String::new(),
    }
}

/// A string literal: quotes, backslashes and control characters escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\x1d"), "\"a\\\"b\\\\c\\x1d\"");
        assert_eq!(quote("中文"), "\"中文\"");
    }
}

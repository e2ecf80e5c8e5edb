//! Protobuf text format for a dynamic message, laid out as TorchEasyRec's
//! configs are: fields in declaration order, two-space indent, `name {`
//! blocks, repeated numbers as `[a, b]` lists, repeated strings and blocks
//! one per line.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};

use super::comments::{Comments, Origins};

/// The message as text format, with the input's comments where they
/// attach to a field that came from the input.
pub(crate) fn print_with(msg: &DynamicMessage, comments: Option<(&Comments, &Origins)>) -> String {
    let mut p = Printer {
        out: String::new(),
        comments,
    };
    p.message(msg, "", 0);
    p.out
}

struct Printer<'c> {
    out: String,
    comments: Option<(&'c Comments, &'c Origins)>,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl Printer<'_> {
    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    /// Writes the comment lines above `path`; returns its trailing one.
    fn above(&mut self, path: &str, depth: usize) -> Option<String> {
        let (comments, origins) = self.comments?;
        let attached = comments.for_output(origins, path)?;
        for line in &attached.above {
            self.indent(depth);
            self.out.push_str(line);
            self.out.push('\n');
        }
        attached.trailing.clone()
    }

    /// Ends a line, with the trailing comment when there is one.
    fn end_line(&mut self, trailing: Option<String>) {
        if let Some(t) = trailing {
            self.out.push_str("  ");
            self.out.push_str(&t);
        }
        self.out.push('\n');
    }

    fn message(&mut self, msg: &DynamicMessage, path: &str, depth: usize) {
        for fd in msg.descriptor().fields() {
            if !msg.has_field(&fd) {
                continue;
            }
            self.field(&fd, &msg.get_field(&fd), &join(path, fd.name()), depth);
        }
    }

    fn block(&mut self, name: &str, msg: &DynamicMessage, path: &str, depth: usize) {
        let trailing = self.above(path, depth);
        self.indent(depth);
        self.out.push_str(name);
        self.out.push_str(" {");
        self.end_line(trailing);
        self.message(msg, path, depth + 1);
        self.indent(depth);
        self.out.push_str("}\n");
    }

    fn field(&mut self, fd: &FieldDescriptor, value: &Value, path: &str, depth: usize) {
        let name = fd.name();
        match value {
            Value::Message(m) => self.block(name, m, path, depth),
            Value::List(items) => {
                let inline = !matches!(fd.kind(), Kind::Message(_) | Kind::String | Kind::Bytes);
                if inline {
                    let parts: Vec<String> = items.iter().map(|v| scalar(fd, v)).collect();
                    let trailing = self.above(path, depth);
                    self.indent(depth);
                    self.out
                        .push_str(&format!("{name}: [{}]", parts.join(", ")));
                    self.end_line(trailing);
                } else {
                    for (i, v) in items.iter().enumerate() {
                        self.field(fd, v, &format!("{path}[{i}]"), depth);
                    }
                }
            }
            Value::Map(entries) => {
                let Kind::Message(entry) = fd.kind() else {
                    return;
                };
                let value_fd = entry.map_entry_value_field();
                for (k, v) in entries {
                    self.indent(depth);
                    self.out.push_str(&format!("{name} {{\n"));
                    self.indent(depth + 1);
                    self.out.push_str(&format!("key: {}\n", map_key(k)));
                    self.field(&value_fd, v, &join(path, "value"), depth + 1);
                    self.indent(depth);
                    self.out.push_str("}\n");
                }
            }
            v => {
                let trailing = self.above(path, depth);
                self.indent(depth);
                self.out.push_str(&format!("{name}: {}", scalar(fd, v)));
                self.end_line(trailing);
            }
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

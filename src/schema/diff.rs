//! The drift guard: every message, field, enum value and default that
//! differs between two descriptor pools (the built-in schema and a `.proto`
//! tree such as TorchEasyRec's own `tzrec/protos`). plec's own options
//! (`plec.*`) and the well-known types are not compared, nor packages the
//! built-in schema does not have (a tree may hold both TorchEasyRec's and
//! EasyRec's protos, as plec's own `proto/` does).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use prost_reflect::{Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, Value};

/// On which side something is, or that both have it differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// Only in the built-in schema (removed from the tree).
    OnlyBuiltin,
    /// Only in the compared tree (added there).
    OnlyTree,
    /// In both, with different number, type, label, default or oneof.
    Differs,
}

/// One difference between the built-in schema and a tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    /// Full name of the message, field, enum or enum value.
    pub item: String,
    pub side: Side,
    /// `message`, `field`, `enum` or `enum value`.
    pub what: &'static str,
    /// For a one-sided item its declaration; for `Differs`, what differs.
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.side {
            Side::OnlyBuiltin => "- only built in:",
            Side::OnlyTree => "+ only in tree: ",
            Side::Differs => "~ differs:      ",
        };
        write!(f, "{mark} {} {}", self.what, self.item)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// Whether a full name belongs to plec's own options or protobuf's
/// well-known types, which are not part of the TorchEasyRec schema.
fn ignored(package: &str) -> bool {
    package == "plec" || package.starts_with("plec.") || package.starts_with("google.protobuf")
}

/// Everything that differs between `builtin` and `tree`, sorted by name.
pub fn diff(builtin: &DescriptorPool, tree: &DescriptorPool) -> Vec<Difference> {
    let mut out = Vec::new();
    let packages: BTreeSet<String> = builtin
        .files()
        .map(|f| f.package_name().to_string())
        .filter(|p| !ignored(p))
        .collect();
    let ours = messages(builtin, &packages);
    let theirs = messages(tree, &packages);
    one_sided(&ours, &theirs, "message", Side::OnlyBuiltin, &mut out);
    one_sided(&theirs, &ours, "message", Side::OnlyTree, &mut out);
    for (name, mine) in &ours {
        let Some(other) = theirs.get(name) else {
            continue;
        };
        let a: BTreeMap<String, FieldDescriptor> =
            mine.fields().map(|f| (f.name().to_string(), f)).collect();
        let b: BTreeMap<String, FieldDescriptor> =
            other.fields().map(|f| (f.name().to_string(), f)).collect();
        for (fname, fa) in &a {
            let item = format!("{name}.{fname}");
            match b.get(fname) {
                None => out.push(Difference {
                    item,
                    side: Side::OnlyBuiltin,
                    what: "field",
                    detail: declaration(fa),
                }),
                Some(fb) => {
                    let changes = field_changes(fa, fb);
                    if !changes.is_empty() {
                        out.push(Difference {
                            item,
                            side: Side::Differs,
                            what: "field",
                            detail: changes.join("; "),
                        });
                    }
                }
            }
        }
        for (fname, fb) in &b {
            if !a.contains_key(fname) {
                out.push(Difference {
                    item: format!("{name}.{fname}"),
                    side: Side::OnlyTree,
                    what: "field",
                    detail: declaration(fb),
                });
            }
        }
    }
    let ours = enums(builtin, &packages);
    let theirs = enums(tree, &packages);
    one_sided(&ours, &theirs, "enum", Side::OnlyBuiltin, &mut out);
    one_sided(&theirs, &ours, "enum", Side::OnlyTree, &mut out);
    for (name, ea) in &ours {
        let Some(eb) = theirs.get(name) else {
            continue;
        };
        let a: BTreeMap<String, i32> = ea
            .values()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        let b: BTreeMap<String, i32> = eb
            .values()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        for (v, na) in &a {
            let item = format!("{name}.{v}");
            match b.get(v) {
                None => out.push(Difference {
                    item,
                    side: Side::OnlyBuiltin,
                    what: "enum value",
                    detail: format!("= {na}"),
                }),
                Some(nb) if nb != na => out.push(Difference {
                    item,
                    side: Side::Differs,
                    what: "enum value",
                    detail: format!("number {na} built in, {nb} in tree"),
                }),
                Some(_) => {}
            }
        }
        for (v, nb) in &b {
            if !a.contains_key(v) {
                out.push(Difference {
                    item: format!("{name}.{v}"),
                    side: Side::OnlyTree,
                    what: "enum value",
                    detail: format!("= {nb}"),
                });
            }
        }
    }
    out.sort();
    out
}

fn messages(
    pool: &DescriptorPool,
    packages: &BTreeSet<String>,
) -> BTreeMap<String, prost_reflect::MessageDescriptor> {
    pool.all_messages()
        .filter(|m| packages.contains(m.package_name()) && !m.is_map_entry())
        .map(|m| (m.full_name().to_string(), m))
        .collect()
}

fn enums(pool: &DescriptorPool, packages: &BTreeSet<String>) -> BTreeMap<String, EnumDescriptor> {
    pool.all_enums()
        .filter(|e| packages.contains(e.package_name()))
        .map(|e| (e.full_name().to_string(), e))
        .collect()
}

fn one_sided<T>(
    here: &BTreeMap<String, T>,
    there: &BTreeMap<String, T>,
    what: &'static str,
    side: Side,
    out: &mut Vec<Difference>,
) {
    for name in here.keys().filter(|n| !there.contains_key(*n)) {
        out.push(Difference {
            item: name.clone(),
            side,
            what,
            detail: String::new(),
        });
    }
}

fn label(f: &FieldDescriptor) -> &'static str {
    if f.is_map() {
        return "map";
    }
    match f.cardinality() {
        Cardinality::Optional => "optional",
        Cardinality::Required => "required",
        Cardinality::Repeated => "repeated",
    }
}

fn type_name(f: &FieldDescriptor) -> String {
    match f.kind() {
        Kind::Message(m) if f.is_map() => {
            let key = m.map_entry_key_field();
            let value = m.map_entry_value_field();
            format!("<{}, {}>", type_name(&key), type_name(&value))
        }
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        k => format!("{k:?}").to_lowercase(),
    }
}

/// The explicit default as written, normalized (`20` and `20.0` agree).
fn default_text(f: &FieldDescriptor) -> Option<String> {
    f.field_descriptor_proto().default_value.as_ref()?;
    Some(match f.default_value() {
        Value::F32(v) => format!("{v:?}"),
        Value::F64(v) => format!("{v:?}"),
        Value::String(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("{b:?}"),
        Value::EnumNumber(n) => match f.kind() {
            Kind::Enum(e) => e
                .get_value(n)
                .map_or_else(|| n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        Value::Bool(v) => v.to_string(),
        Value::I32(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        v => format!("{v:?}"),
    })
}

fn declaration(f: &FieldDescriptor) -> String {
    let mut s = format!("{} {} = {}", label(f), type_name(f), f.number());
    if let Some(d) = default_text(f) {
        s.push_str(&format!(", default {d}"));
    }
    s
}

fn field_changes(a: &FieldDescriptor, b: &FieldDescriptor) -> Vec<String> {
    let mut out = Vec::new();
    if a.number() != b.number() {
        out.push(format!(
            "number {} built in, {} in tree",
            a.number(),
            b.number()
        ));
    }
    if label(a) != label(b) {
        out.push(format!("{} built in, {} in tree", label(a), label(b)));
    }
    if type_name(a) != type_name(b) {
        out.push(format!(
            "type {} built in, {} in tree",
            type_name(a),
            type_name(b)
        ));
    }
    let (da, db) = (default_text(a), default_text(b));
    if da != db {
        let show = |d: Option<String>| d.unwrap_or_else(|| "none".to_string());
        out.push(format!(
            "default {} built in, {} in tree",
            show(da),
            show(db)
        ));
    }
    let oneof = |f: &FieldDescriptor| f.containing_oneof().map(|o| o.name().to_string());
    if oneof(a) != oneof(b) {
        let show =
            |o: Option<String>| o.map_or_else(|| "no oneof".to_string(), |o| format!("oneof {o}"));
        out.push(format!(
            "{} built in, {} in tree",
            show(oneof(a)),
            show(oneof(b))
        ));
    }
    out
}

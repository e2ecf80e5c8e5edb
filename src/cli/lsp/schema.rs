//! What the schema says at a place in a config: the message a block is,
//! a field's type, default and `.proto` comment, enum values.

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};

use crate::schema::Schema;

/// The message of the innermost block named by `blocks` (field names,
/// outermost first), if every name is a message field.
pub(crate) fn message_at(schema: &Schema, blocks: &[&str]) -> Option<MessageDescriptor> {
    let mut md = schema.root.clone();
    for name in blocks {
        let field = md.get_field_by_name(name)?;
        match field.kind() {
            Kind::Message(m) => md = m,
            _ => return None,
        }
    }
    Some(md)
}

/// A field's type in `.proto` words (`string`, `repeated IdFeature`).
pub(crate) fn type_words(field: &FieldDescriptor) -> String {
    let kind = match field.kind() {
        Kind::Message(m) => m.name().to_string(),
        Kind::Enum(e) => e.name().to_string(),
        other => format!("{other:?}").to_lowercase(),
    };
    match field.cardinality() {
        Cardinality::Repeated => format!("repeated {kind}"),
        Cardinality::Required => format!("required {kind}"),
        Cardinality::Optional => kind,
    }
}

/// The comment written above (or after) a field in the `.proto` file.
pub(crate) fn comment(field: &FieldDescriptor) -> Option<String> {
    let file = field.parent_file();
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let loc = info.location.iter().find(|l| l.path == field.path())?;
    let text = loc
        .leading_comments
        .as_deref()
        .or(loc.trailing_comments.as_deref())?;
    let text = text
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    (!text.is_empty()).then_some(text)
}

/// Markdown for hovering a field name.
pub(crate) fn hover_text(field: &FieldDescriptor) -> String {
    let mut out = format!(
        "**{}**: `{}` in `{}`",
        field.name(),
        type_words(field),
        field.parent_message().name()
    );
    if let Some(default) = &field.field_descriptor_proto().default_value {
        out.push_str(&format!("\n\ndefault: `{default}`"));
    }
    if let Some(oneof) = field.containing_oneof() {
        out.push_str(&format!("\n\none of `{}`", oneof.name()));
    }
    if let Kind::Enum(e) = field.kind() {
        let values: Vec<String> = e.values().map(|v| format!("`{}`", v.name())).collect();
        out.push_str(&format!("\n\nvalues: {}", values.join(", ")));
    }
    if let Some(c) = comment(field) {
        out.push_str("\n\n");
        out.push_str(&c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hover_shows_the_proto_comment_default_and_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proto = "syntax = \"proto2\";\npackage t;\nmessage Root {\n  // How many experts each task has.\n  optional uint32 experts = 1 [default = 2];\n  optional Inner inner = 2;\n}\nmessage Inner {\n  repeated string names = 1;\n}\n";
        std::fs::write(dir.path().join("t.proto"), proto).expect("write proto");
        let schema = Schema::from_proto_path(dir.path(), Some("t.Root")).expect("schema");
        let root = message_at(&schema, &[]).expect("root");
        let field = root.get_field_by_name("experts").expect("field");
        assert_eq!(
            hover_text(&field),
            "**experts**: `uint32` in `Root`\n\ndefault: `2`\n\nHow many experts each task has."
        );
        let inner = message_at(&schema, &["inner"]).expect("inner");
        let names = inner.get_field_by_name("names").expect("names");
        assert_eq!(type_words(&names), "repeated string");
        assert!(message_at(&schema, &["experts"]).is_none());
    }
}

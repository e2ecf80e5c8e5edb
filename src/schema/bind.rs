//! The binder: walks the syntax tree against message descriptors, builds
//! the dynamic message and the span map, and reports every schema problem
//! of the file in one pass (it never stops at the first).
//!
//! Merge semantics follow protobuf's text-format `Merge`, as TorchEasyRec
//! reads configs: a singular scalar given twice keeps the last value (plec
//! warns), a message given twice is merged (plec warns), repeated fields
//! append. Two members of one oneof are an error, as in protobuf.

use std::collections::HashMap;
use std::ops::Range;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

use super::convert::{convert, expected_for, ConvertError};
use super::span_map::{FieldSpan, SpanMap};
use super::Schema;
use crate::diag::{closest_names, one_of, Diagnostic};
use crate::syntax::ast::{self, Document, FieldName, ScalarKind};

/// Result of binding one file.
#[derive(Debug, Clone)]
pub struct Bound {
    pub message: DynamicMessage,
    pub spans: SpanMap,
    pub diagnostics: Vec<Diagnostic>,
    /// Paths of blocks plec knows by name only and skipped.
    pub unchecked: Vec<String>,
}

/// Binds a document to the schema's root message.
pub fn bind(schema: &Schema, doc: &Document, source: &str) -> Bound {
    let mut binder = Binder {
        schema,
        source,
        diags: Vec::new(),
        spans: SpanMap::default(),
        states: HashMap::new(),
        unchecked: Vec::new(),
    };
    let mut message = DynamicMessage::new(schema.root.clone());
    binder.message(&schema.root, &doc.fields, "", &mut message);
    Bound {
        message,
        spans: binder.spans,
        diagnostics: binder.diags,
        unchecked: binder.unchecked,
    }
}

/// What has been seen in one message instance (by path), to detect
/// duplicates and oneof conflicts across merged blocks.
#[derive(Default)]
struct MessageState {
    /// Singular field name -> (name span, value span) of its first use.
    singular: HashMap<String, (Range<usize>, Range<usize>)>,
    /// Oneof name -> (member name, name span) set first.
    oneof: HashMap<String, (String, Range<usize>)>,
    /// Repeated field name -> elements bound so far.
    repeated: HashMap<String, usize>,
}

struct Binder<'a> {
    schema: &'a Schema,
    source: &'a str,
    diags: Vec<Diagnostic>,
    spans: SpanMap,
    states: HashMap<String, MessageState>,
    unchecked: Vec<String>,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl Binder<'_> {
    fn text(&self, span: &Range<usize>) -> &str {
        self.source.get(span.clone()).unwrap_or("")
    }

    fn message(
        &mut self,
        desc: &MessageDescriptor,
        fields: &[ast::Field],
        path: &str,
        msg: &mut DynamicMessage,
    ) {
        for field in fields {
            self.field(desc, field, path, msg);
        }
    }

    fn unknown_field(&mut self, desc: &MessageDescriptor, field: &ast::Field) {
        let name = field.name.display();
        let known: Vec<String> = desc.fields().map(|f| f.name().to_string()).collect();
        let close = closest_names(&name, known.iter().map(String::as_str), 3);
        let help = if close.is_empty() {
            let mut all = known.clone();
            all.truncate(12);
            format!(
                "`{}` has these fields: {}{}",
                desc.name(),
                all.join(", "),
                if known.len() > 12 { ", ..." } else { "" }
            )
        } else {
            format!("did you mean {}?", one_of(&close))
        };
        let message = match &field.name {
            FieldName::Bracketed(_) => {
                format!("unknown extension `{name}` in `{}`", desc.name())
            }
            FieldName::Ident(_) => format!("unknown field `{name}` in `{}`", desc.name()),
        };
        self.diags.push(
            Diagnostic::error("plec::unknown-field", message)
                .with_primary(
                    field.name_span.clone(),
                    format!("not a field of `{}`", desc.full_name()),
                )
                .with_help(help),
        );
    }

    fn field(
        &mut self,
        desc: &MessageDescriptor,
        field: &ast::Field,
        path: &str,
        msg: &mut DynamicMessage,
    ) {
        let fd = match &field.name {
            FieldName::Ident(n) => desc.get_field_by_name(n),
            FieldName::Bracketed(_) => None,
        };
        let Some(fd) = fd else {
            self.unknown_field(desc, field);
            return;
        };
        let name = fd.name().to_string();
        let field_path = join(path, &name);

        if let Some(oneof) = fd.containing_oneof() {
            let state = self.states.entry(path.to_string()).or_default();
            match state.oneof.get(oneof.name()) {
                Some((first, first_span)) if *first != name => {
                    let (first, first_span) = (first.clone(), first_span.clone());
                    self.diags.push(
                        Diagnostic::error(
                            "plec::oneof-conflict",
                            format!(
                                "`{first}` and `{name}` are both set, but they are members of oneof `{}`",
                                oneof.name()
                            ),
                        )
                        .with_primary(field.name_span.clone(), "second member set here")
                        .with_secondary(first_span, "first member set here")
                        .with_help(format!(
                            "keep only one of them; protobuf's text-format Merge, which TorchEasyRec and EasyRec read configs with, silently keeps only `{name}`"
                        )),
                    );
                }
                Some(_) => {}
                None => {
                    state.oneof.insert(
                        oneof.name().to_string(),
                        (name.clone(), field.name_span.clone()),
                    );
                }
            }
        }

        let is_message = matches!(fd.kind(), Kind::Message(_));
        let repeated = fd.is_list() || fd.is_map();
        match &field.value {
            ast::Value::List(list) => {
                if !repeated {
                    self.diags.push(
                        Diagnostic::error(
                            "plec::not-repeated",
                            format!("`{name}` takes a single value, not a list"),
                        )
                        .with_primary(list.span.clone(), "a list is not allowed here")
                        .with_secondary(
                            field.name_span.clone(),
                            format!("`{name}` is not repeated"),
                        )
                        .with_help("remove the brackets and give one value"),
                    );
                    return;
                }
                if !is_message && !field.has_colon {
                    self.missing_colon(field, &name);
                }
                for item in &list.items {
                    self.element(&fd, field, item, path, &field_path, msg);
                }
            }
            value => {
                if !is_message && !field.has_colon && !matches!(value, ast::Value::Message(_)) {
                    self.missing_colon(field, &name);
                }
                if repeated {
                    self.element(&fd, field, value, path, &field_path, msg);
                } else {
                    self.singular(&fd, field, value, path, &field_path, msg);
                }
            }
        }
    }

    fn missing_colon(&mut self, field: &ast::Field, name: &str) {
        self.diags.push(
            Diagnostic::error(
                "plec::missing-colon",
                format!("expected `:` after `{name}`"),
            )
            .with_primary(
                field.name_span.clone(),
                "a scalar field needs a colon before its value",
            )
            .with_help(format!("write `{name}: value`")),
        );
    }

    fn singular(
        &mut self,
        fd: &FieldDescriptor,
        field: &ast::Field,
        value: &ast::Value,
        path: &str,
        field_path: &str,
        msg: &mut DynamicMessage,
    ) {
        let name = fd.name().to_string();
        let value_span = value.span();
        let previous = {
            let state = self.states.entry(path.to_string()).or_default();
            let prev = state.singular.get(&name).cloned();
            if prev.is_none() {
                state
                    .singular
                    .insert(name.clone(), (field.name_span.clone(), value_span.clone()));
            }
            prev
        };
        match (fd.kind(), value) {
            (Kind::Message(sub), ast::Value::Message(m)) => {
                if let Some((prev_name, _)) = &previous {
                    self.diags.push(
                        Diagnostic::warning(
                            "plec::duplicate-field",
                            format!("`{name}` is given twice; the two blocks are merged"),
                        )
                        .with_primary(field.name_span.clone(), "given again here")
                        .with_secondary(prev_name.clone(), "first given here")
                        .with_help("write one block; fields given in both keep the later value"),
                    );
                }
                self.spans.insert(
                    field_path.to_string(),
                    FieldSpan {
                        name: field.name_span.clone(),
                        value: m.span.clone(),
                    },
                    false,
                );
                let mut sub_msg = match msg.get_field(fd).as_ref() {
                    Value::Message(existing) if msg.has_field(fd) => existing.clone(),
                    _ => DynamicMessage::new(sub.clone()),
                };
                self.sub_message(&sub, field, m, field_path, &mut sub_msg);
                msg.set_field(fd, Value::Message(sub_msg));
            }
            (Kind::Message(sub), ast::Value::Scalar(s)) => {
                self.expected_message(&sub, field, s);
            }
            (_, ast::Value::Message(m)) => {
                self.unexpected_message(fd, field, m);
            }
            (kind, ast::Value::Scalar(s)) => {
                let Some(v) = self.scalar(fd, &kind, field, s) else {
                    return;
                };
                if let Some((_, prev_value)) = &previous {
                    let winning = self.text(&s.span).to_string();
                    self.diags.push(
                        Diagnostic::warning(
                            "plec::duplicate-field",
                            format!("`{name}` is given twice; the last value (`{winning}`) wins"),
                        )
                        .with_primary(s.span.clone(), "this value is used")
                        .with_secondary(prev_value.clone(), "this value is ignored")
                        .with_help(format!("remove one of the two `{name}` lines")),
                    );
                }
                self.spans.insert(
                    field_path.to_string(),
                    FieldSpan {
                        name: field.name_span.clone(),
                        value: s.span.clone(),
                    },
                    true,
                );
                msg.set_field(fd, v);
            }
            (_, ast::Value::List(_)) => {}
        }
    }

    fn element(
        &mut self,
        fd: &FieldDescriptor,
        field: &ast::Field,
        value: &ast::Value,
        path: &str,
        field_path: &str,
        msg: &mut DynamicMessage,
    ) {
        let name = fd.name().to_string();
        let index = {
            let state = self.states.entry(path.to_string()).or_default();
            let counter = state.repeated.entry(name.clone()).or_insert(0);
            let i = *counter;
            *counter += 1;
            i
        };
        let elem_path = format!("{field_path}[{index}]");
        let span = FieldSpan {
            name: field.name_span.clone(),
            value: value.span(),
        };
        let converted = match (fd.kind(), value) {
            (Kind::Message(sub), ast::Value::Message(m)) => {
                self.spans
                    .insert(field_path.to_string(), span.clone(), false);
                self.spans.insert(elem_path.clone(), span, false);
                let mut sub_msg = DynamicMessage::new(sub.clone());
                self.sub_message(&sub, field, m, &elem_path, &mut sub_msg);
                Some(Value::Message(sub_msg))
            }
            (Kind::Message(sub), ast::Value::Scalar(s)) => {
                self.expected_message(&sub, field, s);
                None
            }
            (_, ast::Value::Message(m)) => {
                self.unexpected_message(fd, field, m);
                None
            }
            (kind, ast::Value::Scalar(s)) => {
                let v = self.scalar(fd, &kind, field, s);
                if v.is_some() {
                    self.spans
                        .insert(field_path.to_string(), span.clone(), false);
                    self.spans.insert(elem_path, span, false);
                }
                v
            }
            (_, ast::Value::List(l)) => {
                self.diags.push(
                    Diagnostic::error("plec::nested-list", "lists cannot be nested")
                        .with_primary(l.span.clone(), "a list inside a list")
                        .with_help("flatten the values into one list"),
                );
                None
            }
        };
        let Some(v) = converted else { return };
        if fd.is_map() {
            let Value::Message(entry) = v else { return };
            let Kind::Message(entry_desc) = fd.kind() else {
                return;
            };
            let key = entry
                .get_field(&entry_desc.map_entry_key_field())
                .into_owned();
            let val = entry
                .get_field(&entry_desc.map_entry_value_field())
                .into_owned();
            let key = match key {
                Value::String(s) => MapKey::String(s),
                Value::I32(i) => MapKey::I32(i),
                Value::I64(i) => MapKey::I64(i),
                Value::U32(i) => MapKey::U32(i),
                Value::U64(i) => MapKey::U64(i),
                Value::Bool(b) => MapKey::Bool(b),
                _ => return,
            };
            if let Value::Map(map) = msg.get_field_mut(fd) {
                map.insert(key, val);
            }
        } else if let Value::List(list) = msg.get_field_mut(fd) {
            list.push(v);
        }
    }

    fn sub_message(
        &mut self,
        sub: &MessageDescriptor,
        field: &ast::Field,
        m: &ast::Message,
        path: &str,
        sub_msg: &mut DynamicMessage,
    ) {
        if self.schema.is_unchecked(sub) {
            self.unchecked.push(path.to_string());
            self.diags.push(
                Diagnostic::warning(
                    "plec::unchecked-block",
                    format!(
                        "plec does not check or run `{}` blocks",
                        field.name.display()
                    ),
                )
                .with_primary(field.name_span.clone(), format!("`{}` is skipped", sub.name()))
                .with_help(
                    "its contents are parsed but not checked against the schema; TorchEasyRec will check them at run time",
                ),
            );
            return;
        }
        self.message(sub, &m.fields, path, sub_msg);
    }

    fn expected_message(&mut self, sub: &MessageDescriptor, field: &ast::Field, s: &ast::Scalar) {
        if matches!(s.kind, ScalarKind::Invalid) {
            return;
        }
        let name = field.name.display();
        self.diags.push(
            Diagnostic::error(
                "plec::wrong-value-kind",
                format!(
                    "`{name}` is a `{}` block, not {}",
                    sub.name(),
                    s.kind.describe()
                ),
            )
            .with_primary(s.span.clone(), "expected `{ ... }`")
            .with_help(format!(
                "write `{name} {{ ... }}` with the fields of `{}`",
                sub.name()
            )),
        );
    }

    fn unexpected_message(&mut self, fd: &FieldDescriptor, field: &ast::Field, m: &ast::Message) {
        let name = fd.name();
        self.diags.push(
            Diagnostic::error(
                "plec::wrong-value-kind",
                format!("`{name}` takes {}, not a block", expected_for(&fd.kind())),
            )
            .with_primary(m.span.clone(), "a block is not allowed here")
            .with_secondary(
                field.name_span.clone(),
                format!("`{name}` is a scalar field"),
            )
            .with_help(format!("write `{name}: value`")),
        );
    }

    fn scalar(
        &mut self,
        fd: &FieldDescriptor,
        kind: &Kind,
        field: &ast::Field,
        s: &ast::Scalar,
    ) -> Option<Value> {
        if matches!(s.kind, ScalarKind::Invalid) {
            return None;
        }
        let text = self.text(&s.span).to_string();
        let name = fd.name();
        match convert(kind, &s.kind, &text) {
            Ok(v) => Some(v),
            Err(err) => {
                let diag = match err {
                    ConvertError::WrongKind { expected } => Diagnostic::error(
                        "plec::wrong-value-kind",
                        format!("`{name}` takes {expected}, not {}", s.kind.describe()),
                    )
                    .with_primary(s.span.clone(), format!("expected {expected}"))
                    .with_help(match (&s.kind, kind) {
                        (ScalarKind::Identifier(_) | ScalarKind::Integer { .. } | ScalarKind::Float(_), Kind::String) => {
                            format!("quote the value: `{name}: \"{text}\"`")
                        }
                        _ => format!("give `{name}` {expected}"),
                    }),
                    ConvertError::FloatForInteger => Diagnostic::error(
                        "plec::float-for-integer",
                        format!("`{name}` takes an integer, not the float `{text}`"),
                    )
                    .with_primary(s.span.clone(), "not a whole number")
                    .with_help("write an integer without a decimal point or exponent"),
                    ConvertError::Negative { type_name } => Diagnostic::error(
                        "plec::negative-unsigned",
                        format!("`{name}` cannot be negative"),
                    )
                    .with_primary(s.span.clone(), format!("`{name}` is a {type_name}"))
                    .with_help("give a value of 0 or more"),
                    ConvertError::OutOfRange {
                        type_name,
                        min,
                        max,
                    } => Diagnostic::error(
                        "plec::integer-out-of-range",
                        format!("`{text}` is out of range for `{name}`"),
                    )
                    .with_primary(s.span.clone(), format!("does not fit in {type_name}"))
                    .with_help(format!("a {type_name} holds values from {min} to {max}")),
                    ConvertError::UnknownEnum { enum_name, valid } => {
                        let close = closest_names(&text, valid.iter().map(String::as_str), 2);
                        let help = if close.is_empty() {
                            format!("valid values: {}", valid.join(", "))
                        } else {
                            format!(
                                "did you mean {}? valid values: {}",
                                one_of(&close),
                                valid.join(", ")
                            )
                        };
                        Diagnostic::error(
                            "plec::unknown-enum-value",
                            format!("`{text}` is not a value of enum `{enum_name}`"),
                        )
                        .with_primary(s.span.clone(), format!("unknown `{enum_name}` value"))
                        .with_help(help)
                    }
                    ConvertError::UnknownEnumNumber { enum_name, valid } => Diagnostic::error(
                        "plec::unknown-enum-value",
                        format!("`{text}` is not a number of enum `{enum_name}`"),
                    )
                    .with_primary(s.span.clone(), format!("unknown `{enum_name}` number"))
                    .with_help(format!("valid values: {}", valid.join(", "))),
                    ConvertError::InvalidUtf8 => Diagnostic::error(
                        "plec::invalid-utf8",
                        format!("`{name}` must be valid UTF-8 text"),
                    )
                    .with_primary(s.span.clone(), "these bytes are not UTF-8")
                    .with_help("string fields hold text; use \\u escapes for non-ASCII characters"),
                    ConvertError::InvalidBool => Diagnostic::error(
                        "plec::invalid-bool",
                        format!("`{name}` takes `true` or `false`, not `{text}`"),
                    )
                    .with_primary(s.span.clone(), "not a boolean")
                    .with_help("write `true` or `false` (also accepted: `t`, `f`, `True`, `False`, `1`, `0`)"),
                };
                let _ = field;
                self.diags.push(diag);
                None
            }
        }
    }
}

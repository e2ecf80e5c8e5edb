//! Reading the EasyRec side: a bound `protos.EasyRecConfig` read by field
//! name, every read recorded by path (the binder's paths, such as
//! `model_config.ple.task_towers[1].dnn`), so that whatever the mapping
//! never read can be reported as dropped.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, ReflectMessage, Value};

/// Paths the mapping has read.
pub(crate) type Used = RefCell<BTreeSet<String>>;

/// One EasyRec message at a path.
#[derive(Clone)]
pub(crate) struct Src<'a> {
    msg: &'a DynamicMessage,
    path: String,
    used: &'a Used,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl<'a> Src<'a> {
    /// The root message.
    pub(crate) fn root(msg: &'a DynamicMessage, used: &'a Used) -> Self {
        Src {
            msg,
            path: String::new(),
            used,
        }
    }

    /// This message's path (empty at the root).
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The path of one of its fields.
    pub(crate) fn field_path(&self, name: &str) -> String {
        join(&self.path, name)
    }

    fn mark(&self, path: String) {
        self.used.borrow_mut().insert(path);
    }

    fn field(&self, name: &str) -> Option<FieldDescriptor> {
        self.msg.descriptor().get_field_by_name(name)
    }

    /// Whether the field is written (a list: not empty); reads nothing.
    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.field(name).is_some_and(|fd| self.msg.has_field(&fd))
    }

    /// The field's value when written, without recording a read.
    pub(crate) fn peek(&self, name: &str) -> Option<Cow<'a, Value>> {
        let fd = self.field(name)?;
        if !self.msg.has_field(&fd) {
            return None;
        }
        Some(self.msg.get_field(&fd))
    }

    /// The field's value when written, recorded as read.
    pub(crate) fn value(&self, name: &str) -> Option<Cow<'a, Value>> {
        let v = self.peek(name)?;
        self.mark(self.field_path(name));
        Some(v)
    }

    /// Records the field as read (handled without its value: a setting that
    /// makes no difference, such as `use_moving_average: false`).
    pub(crate) fn consume(&self, name: &str) {
        if self.is_set(name) {
            self.mark(self.field_path(name));
        }
    }

    /// The field's value, or its default when not written (read either way).
    pub(crate) fn value_or_default(&self, name: &str) -> Option<Value> {
        let fd = self.field(name)?;
        if self.msg.has_field(&fd) {
            self.mark(self.field_path(name));
        }
        Some(self.msg.get_field(&fd).into_owned())
    }

    pub(crate) fn str(&self, name: &str) -> Option<String> {
        match self.value(name)?.as_ref() {
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// A string, or the field's default when not written.
    pub(crate) fn str_or_default(&self, name: &str) -> String {
        match self.value_or_default(name) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        }
    }

    /// The values of a repeated string field (read).
    pub(crate) fn strs(&self, name: &str) -> Vec<String> {
        match self.value(name).as_deref() {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The name of an enum field's value (read); the default's when not
    /// written and `default` is true.
    pub(crate) fn enum_name(&self, name: &str, default: bool) -> Option<String> {
        let fd = self.field(name)?;
        let Kind::Enum(e) = fd.kind() else {
            return None;
        };
        let n = if self.msg.has_field(&fd) {
            self.mark(self.field_path(name));
            self.msg.get_field(&fd).as_enum_number()?
        } else if default {
            self.msg.get_field(&fd).as_enum_number()?
        } else {
            return None;
        };
        e.get_value(n).map(|v| v.name().to_string())
    }

    /// A written message field (recorded as read; its fields are not).
    pub(crate) fn child(&self, name: &str) -> Option<Src<'a>> {
        let fd = self.field(name)?;
        if !self.msg.has_field(&fd) {
            return None;
        }
        let path = self.field_path(name);
        match self.msg.get_field(&fd) {
            Cow::Borrowed(Value::Message(m)) => {
                self.mark(path.clone());
                Some(Src {
                    msg: m,
                    path,
                    used: self.used,
                })
            }
            _ => None,
        }
    }

    /// The elements of a repeated message field (recorded as read; their
    /// fields are not).
    pub(crate) fn children(&self, name: &str) -> Vec<Src<'a>> {
        let Some(fd) = self.field(name) else {
            return Vec::new();
        };
        let path = self.field_path(name);
        match self.msg.get_field(&fd) {
            Cow::Borrowed(Value::List(items)) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    if let Value::Message(m) = v {
                        let p = format!("{path}[{i}]");
                        self.mark(p.clone());
                        out.push(Src {
                            msg: m,
                            path: p,
                            used: self.used,
                        });
                    }
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// The member of a oneof that is written, if any (reads nothing).
    pub(crate) fn oneof(&self, oneof: &str) -> Option<String> {
        let desc = self.msg.descriptor();
        let o = desc.oneofs().find(|o| o.name() == oneof)?;
        let set = o.fields().find(|f| self.msg.has_field(f));
        set.map(|f| f.name().to_string())
    }
}

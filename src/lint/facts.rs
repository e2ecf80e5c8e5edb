//! Facts the rules read from the schema itself: plec's custom options in
//! `proto/plec/options.proto` (which fields are bucket settings, which names
//! TorchEasyRec depends on, which fields name a feature group, which groups
//! a model reads), and a walk over every message of a config as a dynamic
//! message, so a rule reaches every model and feature kind without a Rust
//! list of them.

use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage, Value,
};

use crate::proto::tzrec::protos::EasyRecConfig;

/// plec's options of the built-in schema.
pub(super) struct Facts {
    root: Option<MessageDescriptor>,
    bucket: Option<ExtensionDescriptor>,
    needs_bucket: Option<ExtensionDescriptor>,
    needed: Option<ExtensionDescriptor>,
    group_ref: Option<ExtensionDescriptor>,
    groups: Option<ExtensionDescriptor>,
    first_group_only: Option<ExtensionDescriptor>,
    first_label: Option<ExtensionDescriptor>,
    retrieval: Option<ExtensionDescriptor>,
    group_types: Option<ExtensionDescriptor>,
}

impl Facts {
    /// The options of the schema compiled into plec. Lint always reads the
    /// typed config of the built-in schema, so its facts are the ones that
    /// apply, also under `--proto-path`.
    pub(super) fn builtin() -> Self {
        let pool = DescriptorPool::decode(crate::proto::DESCRIPTOR_SET).ok();
        let ext = |name: &str| pool.as_ref()?.get_extension_by_name(name);
        Facts {
            root: pool
                .as_ref()
                .and_then(|p| p.get_message_by_name(crate::schema::DEFAULT_ROOT)),
            bucket: ext("plec.bucket"),
            needs_bucket: ext("plec.needs_bucket"),
            needed: ext("plec.needed"),
            group_ref: ext("plec.group_ref"),
            groups: ext("plec.groups"),
            first_group_only: ext("plec.first_group_only"),
            first_label: ext("plec.first_label"),
            retrieval: ext("plec.retrieval"),
            group_types: ext("plec.group_types"),
        }
    }

    /// The typed config as a dynamic message of the built-in schema.
    pub(super) fn dynamic(&self, config: &EasyRecConfig) -> Option<DynamicMessage> {
        DynamicMessage::decode(self.root.clone()?, config.encode_to_vec().as_slice()).ok()
    }

    /// Whether the field is a bucket setting (`(plec.bucket)`).
    pub(super) fn is_bucket(&self, f: &FieldDescriptor) -> bool {
        field_flag(f, self.bucket.as_ref())
    }

    /// Whether a feature of this kind needs a bucket setting.
    pub(super) fn needs_bucket(&self, m: &MessageDescriptor) -> bool {
        message_value(m, self.needs_bucket.as_ref()).is_some_and(|v| v.as_bool() == Some(true))
    }

    /// Why TorchEasyRec needs this field set (`(plec.needed)`), if it does.
    pub(super) fn needed(&self, f: &FieldDescriptor) -> bool {
        field_flag(f, self.needed.as_ref())
    }

    /// Whether the field names a feature group (`(plec.group_ref)`).
    pub(super) fn is_group_ref(&self, f: &FieldDescriptor) -> bool {
        field_flag(f, self.group_ref.as_ref())
    }

    /// The feature groups a model kind reads by name (`(plec.groups)`).
    pub(super) fn required_groups(&self, m: &MessageDescriptor) -> Vec<String> {
        match message_value(m, self.groups.as_ref()) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a model kind reads only its first feature group.
    pub(super) fn first_group_only(&self, m: &MessageDescriptor) -> bool {
        message_value(m, self.first_group_only.as_ref()).is_some_and(|v| v.as_bool() == Some(true))
    }

    /// Whether a model kind trains on the first label field.
    pub(super) fn first_label(&self, m: &MessageDescriptor) -> bool {
        message_value(m, self.first_label.as_ref()).is_some_and(|v| v.as_bool() == Some(true))
    }

    /// Whether a model kind is a retrieval model (`(plec.retrieval)`).
    pub(super) fn retrieval(&self, m: &MessageDescriptor) -> bool {
        message_value(m, self.retrieval.as_ref()).is_some_and(|v| v.as_bool() == Some(true))
    }

    /// The group types a `(plec.group_ref)` field of the message at `path`
    /// accepts: the innermost `(plec.group_types)` on a message field
    /// enclosing it, else the field's own. Empty when nothing is said.
    pub(super) fn group_types(
        &self,
        nodes: &[(String, DynamicMessage)],
        path: &str,
        fd: &FieldDescriptor,
    ) -> Vec<String> {
        let mut at = path;
        while !at.is_empty() {
            let (parent, field) = match at.rsplit_once('.') {
                Some((p, f)) => (p, f),
                None => ("", at),
            };
            let field = field.split('[').next().unwrap_or(field);
            let held_by = nodes
                .iter()
                .find(|(p, _)| p == parent)
                .and_then(|(_, m)| m.descriptor().get_field_by_name(field));
            if let Some(types) = held_by.and_then(|f| self.types_of(&f)) {
                return types;
            }
            at = parent;
        }
        self.types_of(fd).unwrap_or_default()
    }

    fn types_of(&self, f: &FieldDescriptor) -> Option<Vec<String>> {
        let ext = self.group_types.as_ref()?;
        let options = f.options();
        if !options.has_extension(ext) {
            return None;
        }
        let value = options.get_extension(ext);
        let types: Vec<String> = value
            .as_str()?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Some(types)
    }
}

fn field_flag(f: &FieldDescriptor, ext: Option<&ExtensionDescriptor>) -> bool {
    let Some(ext) = ext else { return false };
    let options = f.options();
    options.has_extension(ext) && options.get_extension(ext).as_bool() == Some(true)
}

fn message_value(m: &MessageDescriptor, ext: Option<&ExtensionDescriptor>) -> Option<Value> {
    let ext = ext?;
    let options = m.options();
    options
        .has_extension(ext)
        .then(|| options.get_extension(ext).into_owned())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Every message under `msg` (itself included) with its span-map path:
/// `a.b[1].c`. Map values are not visited.
pub(super) fn walk(msg: &DynamicMessage, path: &str, out: &mut Vec<(String, DynamicMessage)>) {
    out.push((path.to_string(), msg.clone()));
    for (fd, value) in msg.fields() {
        if !matches!(fd.kind(), Kind::Message(_)) || fd.is_map() {
            continue;
        }
        let p = join(path, fd.name());
        match value {
            Value::Message(m) => walk(m, &p, out),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if let Value::Message(m) = v {
                        walk(m, &format!("{p}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether a field of a message is set: present for singular fields,
/// non-empty for lists and maps.
pub(super) fn is_set(msg: &DynamicMessage, fd: &FieldDescriptor) -> bool {
    if fd.is_list() || fd.is_map() {
        match msg.get_field(fd).as_ref() {
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            _ => false,
        }
    } else {
        msg.has_field(fd)
    }
}

/// A string field's value, when set.
pub(super) fn str_field(msg: &DynamicMessage, name: &str) -> Option<String> {
    let fd = msg.descriptor().get_field_by_name(name)?;
    if !msg.has_field(&fd) {
        return None;
    }
    msg.get_field(&fd).as_str().map(str::to_string)
}

/// A feature block of any kind: (path of the block, its message).
pub(super) fn feature_blocks(nodes: &[(String, DynamicMessage)]) -> Vec<(String, DynamicMessage)> {
    nodes
        .iter()
        .filter(|(p, _)| is_feature_block(p))
        .cloned()
        .collect()
}

/// `feature_configs[i].<kind>` or
/// `feature_configs[i].sequence_feature.features[j].<kind>`.
fn is_feature_block(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("feature_configs[") else {
        return false;
    };
    let Some((_, rest)) = rest.split_once("].") else {
        return false;
    };
    if rest.contains('.') {
        let Some(sub) = rest.strip_prefix("sequence_feature.features[") else {
            return false;
        };
        return sub.split_once("].").is_some_and(|(_, k)| !k.contains('.'));
    }
    true
}

/// Name and path of every feature of every kind.
pub(super) fn feature_names(nodes: &[(String, DynamicMessage)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, msg) in feature_blocks(nodes) {
        if let Some(seq) = str_field(&msg, "sequence_name") {
            // A sequence_feature is a container; its sub-features are the
            // features groups name, prefixed with the sequence name.
            out.push((seq, path));
            continue;
        }
        let Some(name) = str_field(&msg, "feature_name") else {
            continue;
        };
        match sequence_parent(&path, nodes) {
            Some(seq) => {
                // TorchEasyRec joins with `__`, or with `_` when it runs
                // with USE_RTP=1; either spelling names the sub-feature.
                out.push((format!("{seq}__{name}"), path.clone()));
                out.push((format!("{seq}_{name}"), path));
            }
            None => out.push((name, path)),
        }
    }
    out
}

/// The `sequence_name` of the sequence_feature a sub-feature path is in.
fn sequence_parent(path: &str, nodes: &[(String, DynamicMessage)]) -> Option<String> {
    let cut = path.find(".sequence_feature.features[")?;
    let parent = &path[..cut + ".sequence_feature".len()];
    let (_, msg) = nodes.iter().find(|(p, _)| p == parent)?;
    str_field(msg, "sequence_name")
}

/// `model_config.<kind>` and the descriptor of the chosen model, whatever
/// its kind.
pub(super) fn model_kind(root: &DynamicMessage) -> Option<(String, MessageDescriptor)> {
    let mc_fd = root.descriptor().get_field_by_name("model_config")?;
    if !root.has_field(&mc_fd) {
        return None;
    }
    let mc = root.get_field(&mc_fd);
    let mc = mc.as_message()?;
    let oneof = mc.descriptor().oneofs().find(|o| o.name() == "model")?;
    let fd = oneof.fields().find(|f| mc.has_field(f))?;
    match fd.kind() {
        Kind::Message(m) => Some((fd.name().to_string(), m)),
        _ => None,
    }
}

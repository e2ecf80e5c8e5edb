//! Stage 2: binding a syntax tree to a protobuf schema.
//!
//! The schema is any prost-reflect descriptor pool plus a root message: the
//! built-in TorchEasyRec schema compiled from `proto/` at build time, the
//! built-in EasyRec schema (`proto/easyrec/`, for configs of TorchEasyRec's
//! TensorFlow predecessor), or a user's `.proto` tree compiled at run time
//! with protox. Binding produces a
//! dynamic message (transcoded to the prost structs for the built-in schema),
//! a [`SpanMap`], and every schema diagnostic of the file.

mod bind;
mod convert;
pub mod dialect;
pub mod diff;
pub mod explain;
pub mod span_map;

use std::path::Path;

use prost_reflect::ReflectMessage;

use prost_reflect::{DescriptorPool, ExtensionDescriptor, MessageDescriptor, Value};

pub use bind::{bind, Bound};
pub use span_map::{FieldSpan, SpanMap};

/// Full name of the built-in root message.
pub const DEFAULT_ROOT: &str = "tzrec.protos.EasyRecConfig";
/// Full name of the root message of EasyRec's schema.
pub const EASYREC_ROOT: &str = "protos.EasyRecConfig";

/// Which of the two built-in schemas: TorchEasyRec's (the default, the one
/// plec compiles and runs) or EasyRec's (checked only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    TorchEasyRec,
    EasyRec,
}

impl Dialect {
    /// Full name of the dialect's root message.
    pub fn root(self) -> &'static str {
        match self {
            Dialect::TorchEasyRec => DEFAULT_ROOT,
            Dialect::EasyRec => EASYREC_ROOT,
        }
    }

    /// The dialect's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::TorchEasyRec => "TorchEasyRec",
            Dialect::EasyRec => "EasyRec",
        }
    }
}
/// The message option that marks a message as known by name only.
const UNCHECKED_OPTION: &str = "plec.unchecked";

/// Errors that stop a schema from being loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the built-in schema is corrupt: {0}")]
    Builtin(String),
    #[error("cannot compile the .proto files under {dir}: {message}")]
    Compile { dir: String, message: String },
    #[error("no .proto files under {0}")]
    NoProtos(String),
    #[error("no message `{name}` in the schema{hint}")]
    UnknownRoot { name: String, hint: String },
}

/// A descriptor pool and the message a config file holds.
#[derive(Debug, Clone)]
pub struct Schema {
    pub pool: DescriptorPool,
    pub root: MessageDescriptor,
    unchecked: Option<ExtensionDescriptor>,
}

impl Schema {
    /// The TorchEasyRec schema compiled into plec.
    ///
    /// Decoded once per process and shared (a `Schema` clones its pool by
    /// reference): decoding takes ~10 ms and thousands of allocations,
    /// which a process compiling many texts (tests, the fuzzers) would
    /// otherwise pay per text. Fuzzing `compile_mutated` found it: under
    /// the address sanitizer, decoding and dropping the pool on every
    /// build took over the 1 s hang limit on a loaded machine.
    pub fn builtin() -> Result<Self, SchemaError> {
        Self::builtin_for(Dialect::TorchEasyRec)
    }

    /// The EasyRec schema compiled into plec.
    pub fn builtin_easyrec() -> Result<Self, SchemaError> {
        Self::builtin_for(Dialect::EasyRec)
    }

    /// One of the schemas compiled into plec, decoded once per process per
    /// dialect (see [`Schema::builtin`]).
    pub fn builtin_for(dialect: Dialect) -> Result<Self, SchemaError> {
        type Cell = std::sync::OnceLock<Result<Schema, String>>;
        static TZREC: Cell = Cell::new();
        static EASYREC: Cell = Cell::new();
        let (cell, bytes) = match dialect {
            Dialect::TorchEasyRec => (&TZREC, crate::proto::DESCRIPTOR_SET),
            Dialect::EasyRec => (&EASYREC, crate::proto::EASYREC_DESCRIPTOR_SET),
        };
        cell.get_or_init(|| {
            let pool = DescriptorPool::decode(bytes).map_err(|e| e.to_string())?;
            Self::with_root(pool, dialect.root()).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(SchemaError::Builtin)
    }

    /// Compiles every `.proto` file under `dir` (import root `dir`).
    pub fn from_proto_path(dir: &Path, root: Option<&str>) -> Result<Self, SchemaError> {
        let mut files = Vec::new();
        collect_protos(dir, dir, &mut files).map_err(|e| SchemaError::Compile {
            dir: dir.display().to_string(),
            message: e.to_string(),
        })?;
        if files.is_empty() {
            return Err(SchemaError::NoProtos(dir.display().to_string()));
        }
        files.sort();
        let compile_error = |e: protox::Error| SchemaError::Compile {
            dir: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut compiler = protox::Compiler::new([dir]).map_err(compile_error)?;
        // Source info keeps the comments `plec lsp` shows on hover.
        compiler
            .include_imports(true)
            .include_source_info(true)
            .open_files(&files)
            .map_err(compile_error)?;
        // protox's own encoding keeps custom options (prost_types drops them).
        let pool = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice())
            .map_err(|e| SchemaError::Compile {
                dir: dir.display().to_string(),
                message: e.to_string(),
            })?;
        Self::with_root(pool, root.unwrap_or(DEFAULT_ROOT))
    }

    /// Uses `root` (a full message name) of `pool`.
    pub fn with_root(pool: DescriptorPool, root: &str) -> Result<Self, SchemaError> {
        let Some(root_desc) = pool.get_message_by_name(root) else {
            let names: Vec<String> = pool
                .all_messages()
                .map(|m| m.full_name().to_string())
                .collect();
            let close = crate::diag::closest_names(root, names.iter().map(String::as_str), 3);
            let hint = if close.is_empty() {
                "; pass --root-message with a full name such as `pkg.Config`".to_string()
            } else {
                format!("; did you mean {}?", crate::diag::one_of(&close))
            };
            return Err(SchemaError::UnknownRoot {
                name: root.to_string(),
                hint,
            });
        };
        let unchecked = pool.get_extension_by_name(UNCHECKED_OPTION);
        Ok(Schema {
            pool,
            root: root_desc,
            unchecked,
        })
    }

    /// Whether plec knows this message by name only (parsed, not checked).
    pub fn is_unchecked(&self, desc: &MessageDescriptor) -> bool {
        let Some(ext) = &self.unchecked else {
            return false;
        };
        let options = desc.options();
        options.has_extension(ext)
            && matches!(options.get_extension(ext).as_ref(), Value::Bool(true))
    }

    /// Whether this is the built-in TorchEasyRec root, so the typed config
    /// and the lint rules apply.
    pub fn is_tzrec(&self) -> bool {
        self.root.full_name() == DEFAULT_ROOT
    }

    /// Whether this is the built-in EasyRec root (checked by the schema
    /// only: plec's semantic rules read TorchEasyRec's typed config).
    pub fn is_easyrec(&self) -> bool {
        self.root.full_name() == EASYREC_ROOT
    }
}

fn collect_protos(
    root: &Path,
    dir: &Path,
    out: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The typed TorchEasyRec config of a bound file (built-in schema only):
/// the dynamic message transcoded to the prost structs.
pub fn typed_config(bound: &Bound) -> Option<crate::proto::tzrec::protos::EasyRecConfig> {
    if bound.message.descriptor().full_name() != DEFAULT_ROOT {
        return None;
    }
    let bytes = prost::Message::encode_to_vec(&bound.message);
    <crate::proto::tzrec::protos::EasyRecConfig as prost::Message>::decode(bytes.as_slice()).ok()
}

//! The syntax tree of a text-format document.
//!
//! Every node keeps its byte span in the source; comments are kept on the
//! document so a formatter can be built on the tree. Literals are already
//! decoded (escapes resolved, adjacent strings joined, numbers classified),
//! but not yet checked against a schema: that is the binder's job.

use std::ops::Range;

/// Byte range in the source text.
pub type Span = Range<usize>;

/// A whole file: its top-level fields and every comment in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub fields: Vec<Field>,
    pub comments: Vec<Comment>,
}

/// A `# ...` comment; `text` excludes the `#`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

/// One `name: value` / `name { ... }` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: FieldName,
    pub name_span: Span,
    /// Whether a `:` followed the name (required before scalar values).
    pub has_colon: bool,
    pub value: Value,
    /// From the name to the end of the value.
    pub span: Span,
}

/// The name of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldName {
    /// A plain field name.
    Ident(String),
    /// `[pkg.ext]` or `[type.googleapis.com/pkg.Msg]`, without brackets.
    Bracketed(String),
}

impl FieldName {
    /// The name as written, brackets included for extension names.
    pub fn display(&self) -> String {
        match self {
            FieldName::Ident(s) => s.clone(),
            FieldName::Bracketed(s) => format!("[{s}]"),
        }
    }
}

/// The value of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Message(Message),
    /// `[a, b]` list of scalars or messages.
    List(List),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Scalar(s) => s.span.clone(),
            Value::Message(m) => m.span.clone(),
            Value::List(l) => l.span.clone(),
        }
    }
}

/// `{ ... }` or `< ... >`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `[ ... ]`.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub items: Vec<Value>,
    pub span: Span,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub kind: ScalarKind,
    pub span: Span,
}

/// A decoded literal.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarKind {
    /// One or more adjacent quoted strings, unescaped and joined.
    String(Vec<u8>),
    /// An integer literal: its magnitude and sign. Decimal, hex or octal.
    Integer { negative: bool, magnitude: u64 },
    /// An integer literal too large for u64 (still valid text).
    BigInteger { negative: bool, text: String },
    /// A float literal (`1.5`, `1e-6`, `.5`, `2f`).
    Float(f64),
    /// An identifier value: enum name, `true`, `inf`, `-nan`...
    Identifier(String),
    /// A literal that was already reported as malformed; later stages skip
    /// it silently.
    Invalid,
}

impl ScalarKind {
    /// Describes the kind of literal in user words, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            ScalarKind::String(_) => "a string",
            ScalarKind::Integer { .. } | ScalarKind::BigInteger { .. } => "an integer",
            ScalarKind::Float(_) => "a float",
            ScalarKind::Identifier(_) => "an identifier",
            ScalarKind::Invalid => "a malformed literal",
        }
    }
}

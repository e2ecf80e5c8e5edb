//! Stage 1: text to syntax tree.
//!
//! `parse` turns protobuf text format into a [`ast::Document`] with byte
//! spans and comments, or reports syntax errors in plec's own words (an
//! unterminated string points at its opening quote, an unclosed `{` at
//! itself and at the end of the file). It hands the binder a tree whose
//! literals are decoded but not yet checked against any schema.

pub mod ast;
mod balance;
pub mod explain;
pub mod literal;
mod tree;

use crate::diag::Diagnostic;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/textproto.pest"]
pub(crate) struct TextProtoParser;

/// The parse result: a tree when the text is well-formed enough to build one,
/// plus every syntax diagnostic found.
#[derive(Debug)]
pub struct Parsed {
    pub document: Option<ast::Document>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses protobuf text format.
pub fn parse(source: &str) -> Parsed {
    let balance_errors = balance::check(source);
    if !balance_errors.is_empty() {
        return Parsed {
            document: None,
            diagnostics: balance_errors,
        };
    }
    match tree::build(source) {
        Ok((document, diagnostics)) => Parsed {
            document: Some(document),
            diagnostics,
        },
        Err(diag) => Parsed {
            document: None,
            diagnostics: vec![*diag],
        },
    }
}

#[cfg(test)]
mod tests;

//! `plec fmt`: the canonical layout of a protobuf text-format file.
//!
//! Reads the syntax tree (which keeps every span and comment) and writes it
//! out again: two-space indentation, one field per line, `name {` for
//! messages (`name {}` when empty), `name: value` for scalars, lists on one line when they fit in
//! [`layout::WIDTH`] columns and hold no comment, else one item per line.
//! Literals are copied as written (quotes, escapes, number spellings), so
//! the formatted file binds to the same message; comments stay before, after
//! or inside the field they were written with. Separators (`,`, `;`), `<>`
//! delimiters and the optional `:` before a message are dropped; runs of
//! blank lines shrink to one. Formatting a formatted file changes nothing.
//!
//! Hands the CLI the formatted text, or the syntax errors that stopped it
//! (a file that does not parse is left alone).

mod layout;
mod strings;

use crate::diag::Diagnostic;
use crate::syntax;

/// Formats a text-format source, or returns its syntax errors.
pub fn format(source: &str) -> Result<String, Vec<Diagnostic>> {
    let parsed = syntax::parse(source);
    let errors: Vec<Diagnostic> = parsed
        .diagnostics
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    match parsed.document {
        Some(doc) if errors.is_empty() => {
            Ok(layout::Printer::new(source, &doc.comments).document(&doc))
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests;

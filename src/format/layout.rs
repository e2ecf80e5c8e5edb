//! The printer: walks the syntax tree in source order and writes each field
//! on its own line, placing every comment by where it was written.
//!
//! A comment that starts before a field (or between its name and value) is
//! printed on its own line above it; one that follows a field, a `{` or a
//! `[` on the same source line stays at the end of that line; one left
//! before a closing `}` or `]` stays inside the block, above the closer.

use crate::syntax::ast::{Comment, Document, Field, List, Message, Scalar, ScalarKind, Value};

use super::strings;

/// Longest line (in characters) a list is kept on before it is written one
/// item per line: wide enough for the usual `hidden_units: [512, 256, 128]`
/// and short feature lists, narrow enough to read in a side-by-side diff.
pub(crate) const WIDTH: usize = 100;

/// Spaces per nesting level.
const INDENT: usize = 2;

pub(super) struct Printer<'a> {
    source: &'a str,
    comments: &'a [Comment],
    /// The first comment not printed yet (comments are sorted by position).
    next: usize,
    out: String,
    /// Source offset just past the last thing printed, for blank lines.
    last_end: usize,
    /// Nothing printed yet in the current block (no blank line there).
    block_start: bool,
}

impl<'a> Printer<'a> {
    pub(super) fn new(source: &'a str, comments: &'a [Comment]) -> Self {
        Printer {
            source,
            comments,
            next: 0,
            out: String::new(),
            last_end: 0,
            block_start: true,
        }
    }

    pub(super) fn document(mut self, doc: &Document) -> String {
        let end = self.source.len();
        self.fields(&doc.fields, 0, end);
        self.comments_before(end + 1, 0, true);
        self.out
    }

    fn fields(&mut self, fields: &[Field], depth: usize, end: usize) {
        for (i, f) in fields.iter().enumerate() {
            let next_start = fields.get(i + 1).map_or(end, |n| n.span.start);
            self.field(f, depth, next_start);
        }
    }

    fn field(&mut self, f: &Field, depth: usize, next_start: usize) {
        self.comments_before(f.span.start, depth, true);
        self.gap(f.span.start);
        let name = f.name.display();
        match &f.value {
            // The value's span, not the field's: pest's field span runs on
            // over the whitespace and comments after a string.
            Value::Scalar(s) => {
                self.comments_before(s.span.end, depth, false);
                let text = format!("{name}: {}", self.scalar(s, depth));
                self.last_end = s.span.end;
                self.line_with_trailing(depth, text, next_start);
            }
            Value::Message(m) => {
                self.comments_before(m.span.start, depth, false);
                self.message(&format!("{name} "), m, depth, "", next_start);
            }
            Value::List(l) => {
                self.comments_before(l.span.start, depth, false);
                self.list(&name, l, depth, next_start);
            }
        }
    }

    /// `{prefix}{` ... `}{suffix}`; `next_start` bounds its trailing comment.
    fn message(
        &mut self,
        prefix: &str,
        m: &Message,
        depth: usize,
        suffix: &str,
        next_start: usize,
    ) {
        let close = m.span.end.saturating_sub(1);
        if m.fields.is_empty() && !self.comment_within(m.span.start, close) {
            self.last_end = m.span.end;
            self.line_with_trailing(depth, format!("{prefix}{{}}{suffix}"), next_start);
            return;
        }
        let first = m.fields.first().map_or(close, |f| f.span.start);
        self.open(depth, format!("{prefix}{{"), m.span.start, first);
        self.fields(&m.fields, depth + 1, close);
        self.comments_before(close, depth + 1, true);
        self.last_end = m.span.end;
        self.line_with_trailing(depth, format!("}}{suffix}"), next_start);
    }

    fn list(&mut self, name: &str, l: &List, depth: usize, next_start: usize) {
        if let Some(inline) = self.inline_list(name, l, depth) {
            self.last_end = l.span.end;
            self.line_with_trailing(depth, inline, next_start);
            return;
        }
        let close = l.span.end.saturating_sub(1);
        let first = l.items.first().map_or(close, |v| v.span().start);
        self.open(depth, format!("{name}: ["), l.span.start, first);
        for (i, item) in l.items.iter().enumerate() {
            let next = l.items.get(i + 1).map_or(close, |v| v.span().start);
            let comma = if i + 1 < l.items.len() { "," } else { "" };
            let span = item.span();
            self.comments_before(span.start, depth + 1, true);
            self.gap(span.start);
            match item {
                Value::Message(m) => self.message("", m, depth + 1, comma, next),
                Value::Scalar(s) => {
                    self.comments_before(span.end, depth + 1, false);
                    let text = format!("{}{comma}", self.scalar(s, depth + 1));
                    self.last_end = span.end;
                    self.line_with_trailing(depth + 1, text, next);
                }
                // The grammar has no nested lists; print one verbatim if a
                // future grammar allows it rather than drop it.
                Value::List(inner) => {
                    let text = format!("{}{comma}", &self.source[inner.span.clone()]);
                    self.last_end = span.end;
                    self.line_with_trailing(depth + 1, text, next);
                }
            }
        }
        self.comments_before(close, depth + 1, true);
        self.last_end = l.span.end;
        self.line_with_trailing(depth, "]".to_string(), next_start);
    }

    /// The list on one line, if it holds only one-line scalars, no comment,
    /// and fits in [`WIDTH`].
    fn inline_list(&self, name: &str, l: &List, depth: usize) -> Option<String> {
        if self.comment_within(l.span.start, l.span.end) {
            return None;
        }
        let mut items = Vec::new();
        for item in &l.items {
            let Value::Scalar(s) = item else {
                return None;
            };
            let text = self.scalar(s, depth + 1);
            if text.contains('\n') {
                return None;
            }
            items.push(text);
        }
        let line = format!("{name}: [{}]", items.join(", "));
        (depth * INDENT + line.chars().count() <= WIDTH).then_some(line)
    }

    /// Whether a comment not printed yet starts strictly between `start`
    /// and `end`.
    fn comment_within(&self, start: usize, end: usize) -> bool {
        self.comments
            .get(self.next..)
            .unwrap_or_default()
            .iter()
            .any(|c| start < c.span.start && c.span.start < end)
    }

    /// A literal as written; the pieces of a joined string keep their line
    /// breaks, continued two levels deeper.
    fn scalar(&self, s: &Scalar, depth: usize) -> String {
        let text = self.source.get(s.span.clone()).unwrap_or_default();
        if !matches!(s.kind, ScalarKind::String(_)) {
            return text.to_string();
        }
        let mut out = String::new();
        for (i, piece) in strings::pieces(text).iter().enumerate() {
            if piece.on_new_line {
                out.push('\n');
                out.push_str(&" ".repeat((depth + 2) * INDENT));
            } else if i > 0 {
                out.push(' ');
            }
            out.push_str(piece.text);
        }
        out
    }

    /// Prints the opening line of a block (`name {`, `name: [`) with the
    /// comment written after the opener on the same line, if any.
    fn open(&mut self, depth: usize, text: String, opener: usize, first_inner: usize) {
        self.last_end = opener + 1;
        self.line_with_trailing(depth, text, first_inner);
        self.block_start = true;
    }

    /// Prints, on lines of their own, the comments that start before `pos`;
    /// `gaps` keeps a blank line the source had before each.
    fn comments_before(&mut self, pos: usize, depth: usize, gaps: bool) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= pos {
                break;
            }
            if gaps {
                self.gap(c.span.start);
            }
            let text = format!("#{}", c.text.trim_end());
            self.push_line(depth, &text);
            self.last_end = self.last_end.max(c.span.end);
            self.next += 1;
        }
    }

    /// One blank line where the source had at least one between the last
    /// thing printed and `pos`, except at the start of a block.
    fn gap(&mut self, pos: usize) {
        if !self.block_start {
            let between = self.source.get(self.last_end..pos).unwrap_or_default();
            if between.matches('\n').count() >= 2 {
                self.out.push('\n');
            }
        }
        self.block_start = false;
    }

    /// Prints `text`, with the comment that followed it on its source line
    /// (starting before `before`) appended.
    fn line_with_trailing(&mut self, depth: usize, mut text: String, before: usize) {
        if let Some(c) = self.comments.get(self.next) {
            let between = self.source.get(self.last_end..c.span.start);
            if c.span.start >= self.last_end
                && c.span.start < before
                && between.is_some_and(|b| !b.contains('\n'))
            {
                text.push_str("  #");
                text.push_str(c.text.trim_end());
                self.last_end = c.span.end;
                self.next += 1;
            }
        }
        self.push_line(depth, &text);
    }

    fn push_line(&mut self, depth: usize, text: &str) {
        self.out.push_str(&" ".repeat(depth * INDENT));
        self.out.push_str(text);
        self.out.push('\n');
        self.block_start = false;
    }
}

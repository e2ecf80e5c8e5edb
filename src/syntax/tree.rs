//! Runs the pest grammar and turns its pairs into the syntax tree, decoding
//! literals on the way. Malformed literals are collected (all of them) and
//! the tree is still built; a grammar failure becomes one diagnostic in
//! plec's words.

use pest::iterators::{Pair, Pairs};
use pest::Parser;

use super::ast::*;
use super::literal::{decode_number, unescape};
use super::{Rule, TextProtoParser};
use crate::diag::Diagnostic;

/// Builds the tree, or explains why the text is not well-formed.
pub(super) fn build(source: &str) -> Result<(Document, Vec<Diagnostic>), Box<Diagnostic>> {
    let pairs = TextProtoParser::parse(Rule::document, source)
        .map_err(|e| Box::new(grammar_error(source, &e)))?;
    let mut builder = Builder {
        diags: Vec::new(),
        comments: Vec::new(),
    };
    let mut fields = Vec::new();
    for pair in pairs {
        if pair.as_rule() == Rule::document {
            for inner in pair.into_inner() {
                match inner.as_rule() {
                    Rule::fields => fields = builder.fields(inner.into_inner()),
                    Rule::COMMENT => builder.comment(&inner),
                    _ => {}
                }
            }
        }
    }
    builder.comments.sort_by_key(|c| c.span.start);
    Ok((
        Document {
            fields,
            comments: builder.comments,
        },
        builder.diags,
    ))
}

struct Builder {
    diags: Vec<Diagnostic>,
    comments: Vec<Comment>,
}

fn span_of(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    s.start()..s.end()
}

impl Builder {
    fn comment(&mut self, pair: &Pair<Rule>) {
        let text = pair.as_str();
        self.comments.push(Comment {
            text: text.strip_prefix('#').unwrap_or(text).to_string(),
            span: span_of(pair),
        });
    }

    /// Drops comment pairs (recording them) and returns the rest.
    fn significant<'a>(&mut self, pairs: Pairs<'a, Rule>) -> Vec<Pair<'a, Rule>> {
        let mut out = Vec::new();
        for p in pairs {
            if p.as_rule() == Rule::COMMENT {
                self.comment(&p);
            } else {
                out.push(p);
            }
        }
        out
    }

    fn fields(&mut self, pairs: Pairs<Rule>) -> Vec<Field> {
        let mut out = Vec::new();
        for p in self.significant(pairs) {
            if p.as_rule() == Rule::field {
                out.push(self.field(p));
            }
        }
        out
    }

    fn field(&mut self, pair: Pair<Rule>) -> Field {
        let span = span_of(&pair);
        let parts = self.significant(pair.into_inner());
        let mut name = FieldName::Ident(String::new());
        let mut name_span = span.start..span.start;
        let mut has_colon = false;
        let mut value = None;
        for p in parts {
            match p.as_rule() {
                Rule::ident => {
                    name = FieldName::Ident(p.as_str().to_string());
                    name_span = span_of(&p);
                }
                Rule::bracketed_name => {
                    let s = p.as_str();
                    let inner = s.trim_start_matches('[').trim_end_matches(']');
                    name = FieldName::Bracketed(inner.split_whitespace().collect());
                    name_span = span_of(&p);
                }
                Rule::colon => has_colon = true,
                _ => value = Some(self.value(p)),
            }
        }
        let value = value.unwrap_or(Value::Scalar(Scalar {
            kind: ScalarKind::Invalid,
            span: span.end..span.end,
        }));
        Field {
            name,
            name_span,
            has_colon,
            value,
            span,
        }
    }

    fn value(&mut self, pair: Pair<Rule>) -> Value {
        let span = span_of(&pair);
        match pair.as_rule() {
            Rule::message => {
                let mut fields = Vec::new();
                for p in self.significant(pair.into_inner()) {
                    if p.as_rule() == Rule::fields {
                        fields = self.fields(p.into_inner());
                    }
                }
                Value::Message(Message { fields, span })
            }
            Rule::list => {
                let items = self
                    .significant(pair.into_inner())
                    .into_iter()
                    .map(|p| self.value(p))
                    .collect();
                Value::List(List { items, span })
            }
            Rule::strings => Value::Scalar(self.strings(pair)),
            Rule::number => {
                let kind = match decode_number(pair.as_str()) {
                    Ok(kind @ ScalarKind::Float(_)) if pair.as_str().ends_with('F') => {
                        self.diags.push(
                            Diagnostic::warning(
                                "plec::upper-case-float-suffix",
                                format!("`{}` ends in an upper-case `F`", pair.as_str()),
                            )
                            .with_primary(span.clone(), "TorchEasyRec cannot read this number")
                            .with_help(format!(
                                "the protobuf C++ parser and newer Python protobuf accept it, but the Python protobuf TorchEasyRec pins (4.x, through grpcio-tools<1.63) takes only a lower-case `f` and rejects the file at start; write `{}`",
                                pair.as_str().trim_end_matches('F')
                            )),
                        );
                        kind
                    }
                    Ok(kind) => kind,
                    Err(msg) => {
                        self.diags.push(
                            Diagnostic::error("plec::malformed-number", "malformed number")
                                .with_primary(span.clone(), msg)
                                .with_help(
                                    "numbers look like `42`, `-7`, `0x1F`, `0.5`, `1e-6` or `2.5f`; quote the value if it is meant as a string",
                                ),
                        );
                        ScalarKind::Invalid
                    }
                };
                Value::Scalar(Scalar { kind, span })
            }
            _ => Value::Scalar(Scalar {
                kind: ScalarKind::Identifier(pair.as_str().to_string()),
                span,
            }),
        }
    }

    fn strings(&mut self, pair: Pair<Rule>) -> Scalar {
        // The pair's own span would run on over whitespace after the last
        // string; the literal ends at its closing quote.
        let mut span = span_of(&pair);
        if let Some(last) = pair
            .clone()
            .into_inner()
            .filter(|p| p.as_rule() == Rule::string)
            .last()
        {
            span.end = last.as_span().end();
        }
        let mut bytes = Vec::new();
        let mut ok = true;
        for s in self.significant(pair.into_inner()) {
            for body in s.into_inner() {
                let body_start = body.as_span().start();
                match unescape(body.as_str()) {
                    Ok(b) => bytes.extend_from_slice(&b),
                    Err((at, msg)) => {
                        ok = false;
                        let start = body_start + at;
                        self.diags.push(
                            Diagnostic::error("plec::bad-escape", "invalid escape in string")
                                .with_primary(start..start + 2, msg)
                                .with_help(
                                    "valid escapes: \\n \\t \\r \\\\ \\' \\\" \\xHH \\NNN (octal) \\uHHHH; write `\\\\` for a backslash",
                                ),
                        );
                    }
                }
            }
        }
        Scalar {
            kind: if ok {
                ScalarKind::String(bytes)
            } else {
                ScalarKind::Invalid
            },
            span,
        }
    }
}

/// The text of the token starting at `pos`, for "found `...`" messages.
fn token_at(source: &str, pos: usize) -> Option<(usize, &str)> {
    let rest = source.get(pos..)?;
    let first = rest.chars().next()?;
    let len = if first.is_ascii_alphanumeric() || first == '_' || first == '.' || first == '-' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || "_.-+".contains(c)))
            .unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    Some((len, &rest[..len]))
}

/// The last significant byte before `pos`, skipping whitespace and comments.
fn previous_significant(source: &str, pos: usize) -> Option<(usize, u8)> {
    let mut line_end = pos.min(source.len());
    loop {
        let line_start = source[..line_end].rfind('\n').map_or(0, |i| i + 1);
        let line = &source[line_start..line_end];
        let code = match line.find('#') {
            Some(hash) if !line[..hash].contains(['"', '\'']) => &line[..hash],
            _ => line,
        };
        if let Some(i) = code.rfind(|c: char| !c.is_whitespace()) {
            return Some((line_start + i, code.as_bytes()[i]));
        }
        if line_start == 0 {
            return None;
        }
        line_end = line_start - 1;
    }
}

/// The identifier that ends just before byte `end` (exclusive).
fn ident_before(source: &str, end: usize) -> Option<(usize, &str)> {
    let head = source.get(..end)?.trim_end();
    let start = head
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &head[start..];
    (!name.is_empty()).then_some((start, name))
}

fn missing_value(name_span: Span, name: &str, next: Span, next_text: &str) -> Diagnostic {
    Diagnostic::error(
        "plec::missing-value",
        format!("field `{name}` has no value"),
    )
    .with_primary(name_span, "this field")
    .with_secondary(next, format!("expected a value before {next_text}"))
    .with_help("write `name: value` or `name { ... }`, or remove the field")
}

fn grammar_error(source: &str, err: &pest::error::Error<Rule>) -> Diagnostic {
    let pos = match err.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let found = token_at(source, pos);
    let here = match found {
        Some((len, _)) => pos..pos + len,
        None => pos..pos,
    };
    let found_text = match found {
        Some((_, t)) => format!("`{t}`"),
        None => "the end of the file".to_string(),
    };
    // `name:` followed by something that cannot be a value.
    if let Some((colon_at, b':')) = previous_significant(source, pos) {
        let name = ident_before(source, colon_at);
        let (name_span, name_text) = match name {
            Some((s, n)) => (s..s + n.len(), n.to_string()),
            None => (colon_at..colon_at + 1, String::new()),
        };
        return Diagnostic::error(
            "plec::missing-value",
            format!("field `{name_text}` has no value"),
        )
        .with_primary(name_span, "this field")
        .with_secondary(here, format!("expected a value before {found_text}"))
        .with_help("write a value after the colon (`name: 1`, `name: \"text\"`, `name { ... }`), or remove the field");
    }
    let positives: &[Rule] = match &err.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives,
        _ => &[],
    };
    // Right after a field name: the name has neither `:` nor a value.
    if positives.contains(&Rule::colon) {
        if let Some((end, _)) = previous_significant(source, pos) {
            if let Some((ps, pname)) = ident_before(source, end + 1) {
                return missing_value(ps..ps + pname.len(), pname, here, &found_text);
            }
        }
    }
    // `a: b :` — `b` reads as the value of `a` but is really the next
    // field's name, so `a` has no value.
    if found.is_some_and(|(_, t)| t == ":" || t == "{") {
        if let Some((end, _)) = previous_significant(source, pos) {
            if let Some((ident_start, _)) = ident_before(source, end + 1) {
                if let Some((colon_at, b':')) = previous_significant(source, ident_start) {
                    if let Some((s, n)) = ident_before(source, colon_at) {
                        return missing_value(s..s + n.len(), n, ident_start..end + 1, "this name");
                    }
                }
            }
        }
    }
    let expected_field = match &err.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            positives.contains(&Rule::ident) || positives.contains(&Rule::field)
        }
        _ => false,
    };
    if expected_field {
        Diagnostic::error(
            "plec::expected-field",
            format!("expected a field name, found {found_text}"),
        )
        .with_primary(here, "expected a field name here")
        .with_help("each entry is `name: value` or `name { ... }`; values in a list go inside `[ ... ]` separated by commas")
    } else {
        Diagnostic::error("plec::syntax", format!("unexpected {found_text}"))
            .with_primary(here, "not valid here")
            .with_help("each entry is `name: value` or `name { ... }`")
    }
}

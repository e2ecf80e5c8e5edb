//! A lexical pre-pass that finds unterminated strings and unbalanced
//! brackets, all of them, before the grammar runs. A grammar failure on such
//! input would point far from the cause (a missing `}` shows up at the end of
//! the file, or as an unknown field in the wrong message).

use crate::diag::Diagnostic;

struct Open {
    ch: u8,
    at: usize,
}

fn closer(open: u8) -> u8 {
    match open {
        b'{' => b'}',
        b'<' => b'>',
        _ => b']',
    }
}

/// Returns one diagnostic per unterminated string, unclosed opener and
/// stray closer.
pub(super) fn check(source: &str) -> Vec<Diagnostic> {
    let b = source.as_bytes();
    let mut diags = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    // (opener, closer) of every matched pair, for the indentation hint.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => {
                            diags.push(
                                Diagnostic::error(
                                    "plec::unterminated-string",
                                    "unterminated string",
                                )
                                .with_primary(start..start + 1, "this string is never closed")
                                .with_help(format!(
                                    "close it with {} on the same line; a string cannot span lines (write `\\n` for a newline)",
                                    q as char
                                )),
                            );
                            break;
                        }
                        Some(b'\\') => i += 2,
                        Some(&c) if c == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            c @ (b'{' | b'<' | b'[') => stack.push(Open { ch: c, at: i }),
            c @ (b'}' | b'>' | b']') => match stack.last() {
                Some(open) if closer(open.ch) == c => {
                    pairs.push((open.at, i));
                    stack.pop();
                }
                Some(_) => {
                    // A closer that matches an outer opener: the inner ones
                    // were left open. One that matches nothing is stray.
                    match stack.iter().rposition(|o| closer(o.ch) == c) {
                        Some(depth) => {
                            for open in stack.drain(depth + 1..).rev() {
                                let expected = closer(open.ch) as char;
                                diags.push(
                                    Diagnostic::error(
                                        "plec::unclosed-bracket",
                                        format!("`{}` is never closed", open.ch as char),
                                    )
                                    .with_primary(open.at..open.at + 1, "opened here")
                                    .with_secondary(
                                        i..i + 1,
                                        format!(
                                            "expected `{expected}` before this `{}`",
                                            c as char
                                        ),
                                    )
                                    .with_help(format!("add the missing `{expected}`")),
                                );
                            }
                            stack.pop();
                        }
                        None => diags.push(
                            Diagnostic::error(
                                "plec::mismatched-bracket",
                                format!("unexpected `{}`", c as char),
                            )
                            .with_primary(i..i + 1, "nothing open here is closed by this")
                            .with_help(format!(
                                "remove this `{}`, or close the open `{}` with `{}`",
                                c as char,
                                stack.last().map_or(' ', |o| o.ch as char),
                                stack.last().map_or(' ', |o| closer(o.ch) as char)
                            )),
                        ),
                    }
                }
                None => diags.push(
                    Diagnostic::error("plec::stray-bracket", format!("unexpected `{}`", c as char))
                        .with_primary(i..i + 1, "nothing is open here")
                        .with_help(format!(
                            "remove this `{}`, or add the opening bracket it was meant to close",
                            c as char
                        )),
                ),
            },
            _ => {}
        }
        i += 1;
    }
    // miette cannot show a label on an empty span at the very end, so the
    // end of the file is shown on its last visible character.
    let last = source.trim_end().len();
    let end_span =
        last.saturating_sub(source[..last].chars().next_back().map_or(0, char::len_utf8))..last;
    let lines = Lines::new(source);
    for open in stack {
        let expected = closer(open.ch) as char;
        let mut d = Diagnostic::error(
            "plec::unclosed-bracket",
            format!("`{}` is never closed", open.ch as char),
        )
        .with_primary(open.at..open.at + 1, "opened here")
        .with_secondary(
            end_span.clone(),
            format!("the file ends here, expected `{expected}` after this"),
        );
        match lines.likely_end(source, open.at, &pairs) {
            Some(hint) => {
                let (culprit_line, end_line) =
                    (lines.line_of(hint.culprit) + 1, lines.line_of(hint.end) + 1);
                if hint.culprit != open.at {
                    d = d.with_secondary(
                        hint.culprit..hint.culprit + 1,
                        format!("the block opened here (line {culprit_line}) is closed by a `{expected}` indented less than its own line"),
                    );
                }
                d = d
                    .with_secondary(
                        hint.end..hint.end + 1,
                        format!("indentation returns to the level of line {culprit_line} here"),
                    )
                    .with_help(format!(
                        "the block opened on line {culprit_line} likely ends before line {end_line}, where indentation returns to its level: add the missing `{expected}` there"
                    ));
            }
            None => d = d.with_help(format!("add the missing `{expected}`")),
        }
        diags.push(d);
    }
    diags
}

/// Where an unclosed block probably lost its closer, judged by indentation
/// as rustc does: `culprit` is the opener whose block ends early, `end` the
/// first character of the line where indentation returns to its level.
struct LikelyEnd {
    culprit: usize,
    end: usize,
}

/// Line starts of a source, to turn offsets into lines and indentation.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(source: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// Zero-based line of an offset.
    fn line_of(&self, at: usize) -> usize {
        self.starts.partition_point(|&s| s <= at).saturating_sub(1)
    }

    /// Offset of the first non-blank character of line `line`, and its
    /// column; None for a blank or comment-only line.
    fn first_char(&self, source: &str, line: usize) -> Option<(usize, usize)> {
        let start = *self.starts.get(line)?;
        let end = self.starts.get(line + 1).map_or(source.len(), |&e| e);
        let text = source.get(start..end)?;
        let col = text.len() - text.trim_start_matches([' ', '\t']).len();
        let rest = text[col..].trim_end();
        if rest.is_empty() || rest.starts_with('#') {
            return None;
        }
        Some((start + col, col))
    }

    /// Indentation (column of the first character) of the line holding `at`.
    fn indent_at(&self, source: &str, at: usize) -> usize {
        let line = self.line_of(at);
        let start = self.starts[line];
        let text = source.get(start..at).unwrap_or("");
        text.len() - text.trim_start_matches([' ', '\t']).len()
    }

    /// For an opener left open at the end of the file: the matched block
    /// inside it whose closer is indented less than its opener's line (that
    /// closer was meant for an outer block), else the opener itself; and the
    /// first later line indented no deeper than the culprit's line.
    fn likely_end(
        &self,
        source: &str,
        open_at: usize,
        pairs: &[(usize, usize)],
    ) -> Option<LikelyEnd> {
        let culprit = pairs
            .iter()
            .filter(|(o, c)| {
                *o > open_at && self.indent_at(source, *c) < self.indent_at(source, *o)
            })
            .map(|(o, _)| *o)
            .min()
            .unwrap_or(open_at);
        let level = self.indent_at(source, culprit);
        let first = self.line_of(culprit) + 1;
        (first..self.starts.len())
            .filter_map(|l| self.first_char(source, l))
            .find(|&(_, col)| col <= level)
            .map(|(end, _)| LikelyEnd { culprit, end })
    }
}

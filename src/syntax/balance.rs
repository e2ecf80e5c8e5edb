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
pub fn check(source: &str) -> Vec<Diagnostic> {
    let b = source.as_bytes();
    let mut diags = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
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
    for open in stack {
        let expected = closer(open.ch) as char;
        diags.push(
            Diagnostic::error(
                "plec::unclosed-bracket",
                format!("`{}` is never closed", open.ch as char),
            )
            .with_primary(open.at..open.at + 1, "opened here")
            .with_secondary(
                end_span.clone(),
                format!("the file ends here, expected `{expected}` after this"),
            )
            .with_help(format!("add the missing `{expected}`")),
        );
    }
    diags
}

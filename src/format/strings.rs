//! The pieces of a string literal as written: `"a" 'b'` is two pieces,
//! which the parser joins into one value. The formatter keeps each piece's
//! text (quotes and escapes included) and only changes the space between.

/// One quoted piece and whether a line break preceded it in the source.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Piece<'a> {
    pub text: &'a str,
    pub on_new_line: bool,
}

/// Splits the source text of a string scalar into its quoted pieces;
/// whitespace and `#` comments between them are skipped (the printer emits
/// the comments itself).
pub(super) fn pieces(text: &str) -> Vec<Piece<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut new_line = false;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                let quote = bytes[i];
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    // An escape covers the next byte (an escaped quote
                    // does not end the piece).
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                out.push(Piece {
                    text: &text[start..i],
                    on_new_line: new_line && !out.is_empty(),
                });
                new_line = false;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'\n' => {
                new_line = true;
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_adjacent_strings() {
        let p = pieces("\"a\\\"b\" 'c'\n  # note\n  \"d\"");
        let texts: Vec<&str> = p.iter().map(|p| p.text).collect();
        assert_eq!(texts, ["\"a\\\"b\"", "'c'", "\"d\""]);
        assert_eq!(
            p.iter().map(|p| p.on_new_line).collect::<Vec<_>>(),
            [false, false, true]
        );
    }
}

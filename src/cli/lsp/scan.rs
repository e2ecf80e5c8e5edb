//! A forgiving scan of the text up to the cursor: which blocks are open,
//! which field a value belongs to, whether the cursor is in a string. It
//! works on text that does not parse (the user is typing), where the syntax
//! tree is not available.

/// An open `{` (or `<`) or `[`, with the field name it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Open {
    Block(String),
    List(String),
}

/// What the text before the cursor says about the cursor.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub stack: Vec<Open>,
    /// The last identifier followed by `:` (the field of a scalar value).
    pub last_field: Option<String>,
    /// Start of the string literal the cursor is in.
    pub in_string: Option<usize>,
    pub in_comment: bool,
}

impl Scan {
    /// Names of the open message blocks, outermost first.
    pub(crate) fn blocks(&self) -> Vec<&str> {
        self.stack
            .iter()
            .filter_map(|o| match o {
                Open::Block(n) => Some(n.as_str()),
                Open::List(_) => None,
            })
            .collect()
    }

    /// The field a value at the cursor belongs to: the list it is in, or
    /// the last `name:`.
    pub(crate) fn value_field(&self) -> Option<&str> {
        match self.stack.last() {
            Some(Open::List(n)) => Some(n),
            _ => self.last_field.as_deref(),
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Scans `text[..offset]`.
pub(crate) fn scan(text: &str, offset: usize) -> Scan {
    let bytes = &text.as_bytes()[..offset.min(text.len())];
    let mut out = Scan::default();
    let mut last_ident = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                if i == bytes.len() && start < bytes.len() {
                    out.in_comment = true;
                }
                continue;
            }
            b'"' | b'\'' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    out.in_string = Some(start);
                    return out;
                }
            }
            b'{' | b'<' => {
                let name = match out.stack.last() {
                    Some(Open::List(n)) => n.clone(),
                    _ => last_ident.clone(),
                };
                out.stack.push(Open::Block(name));
                out.last_field = None;
            }
            b'}' | b'>' => {
                if matches!(out.stack.last(), Some(Open::Block(_))) {
                    out.stack.pop();
                }
                out.last_field = None;
            }
            b'[' => out.stack.push(Open::List(last_ident.clone())),
            b']' => {
                if matches!(out.stack.last(), Some(Open::List(_))) {
                    out.stack.pop();
                }
            }
            b':' => out.last_field = Some(last_ident.clone()),
            // A scalar's field ends with its line; a list's runs on.
            b'\n' if !matches!(out.stack.last(), Some(Open::List(_))) => out.last_field = None,
            b if is_ident(b) => {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                last_ident = text[start..i].to_string();
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The identifier around `offset`, with its span.
pub(crate) fn word_at(text: &str, offset: usize) -> Option<(&str, std::ops::Range<usize>)> {
    let bytes = text.as_bytes();
    let offset = offset.min(bytes.len());
    let mut start = offset;
    while start > 0 && is_ident(bytes[start - 1]) {
        start -= 1;
    }
    let mut end = offset;
    while end < bytes.len() && is_ident(bytes[end]) {
        end += 1;
    }
    (start < end).then(|| (&text[start..end], start..end))
}

/// The string literal around `offset` (its contents and the span of the
/// whole literal, quotes included).
pub(crate) fn string_at(text: &str, offset: usize) -> Option<(String, std::ops::Range<usize>)> {
    let start = scan(text, offset).in_string?;
    let bytes = text.as_bytes();
    let quote = bytes[start];
    let mut end = start + 1;
    while end < bytes.len() && bytes[end] != quote && bytes[end] != b'\n' {
        end += if bytes[end] == b'\\' { 2 } else { 1 };
    }
    let end = end.min(bytes.len());
    let inner = text.get(start + 1..end).unwrap_or_default().to_string();
    Some((inner, start..(end + 1).min(bytes.len())))
}

/// Every `key: "value"` in the text (whole-word key), value and span of
/// the literal; the names a config declares (`feature_name`, `tower_name`,
/// `group_name`), found even when the text does not parse.
pub(crate) fn declarations(text: &str, key: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (at, _) in text.match_indices(key) {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = at + key.len();
        if before.is_some_and(is_ident) || bytes.get(after).copied().is_some_and(is_ident) {
            continue;
        }
        if scan(text, at).in_comment {
            continue;
        }
        let rest = &text[after..];
        let trimmed = rest.trim_start_matches([' ', '\t']);
        let Some(value) = trimmed.strip_prefix(':') else {
            continue;
        };
        let value_trim = value.trim_start_matches([' ', '\t']);
        let lit_start = text.len() - value_trim.len();
        if let Some((inner, span)) = string_at(text, lit_start + 1) {
            out.push((inner, span));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_fields_at_the_cursor() {
        let text = "model_config { feature_groups { feature_names: [\"a\", \"b";
        let s = scan(text, text.len());
        assert_eq!(s.blocks(), ["model_config", "feature_groups"]);
        assert_eq!(s.value_field(), Some("feature_names"));
        assert!(s.in_string.is_some());
        // An item of a message list is a block of the list's field.
        let text = "a { b [ { c: 1 }, { d";
        assert_eq!(scan(text, text.len()).blocks(), ["a", "b"]);
    }

    #[test]
    fn finds_declarations() {
        let text = "f { feature_name: \"x\" }\n# feature_name: \"no\"\ng { feature_names: \"x\" }";
        let d = declarations(text, "feature_name");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "x");
        assert_eq!(&text[d[0].1.clone()], "\"x\"");
    }
}

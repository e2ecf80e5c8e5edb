//! The requests other than diagnostics: hover, completion, go to
//! definition, document symbols, quick fixes and formatting. Each reads the
//! text as it is now (the editor's buffer, not the file on disk).

use std::collections::HashMap;

use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CompletionItem, CompletionItemKind,
    Diagnostic as LspDiagnostic, DocumentSymbol, Hover, HoverContents, Location, MarkupContent,
    MarkupKind, Position, Range, SymbolKind, TextEdit, Uri, WorkspaceEdit,
};
use prost_reflect::Kind;

use super::scan::{declarations, scan, string_at, word_at};
use super::schema::{hover_text, message_at, type_words};
use super::text::Lines;
use crate::schema::Schema;

/// What a name-valued field refers to: the field that declares the names.
fn declaring_key(field: &str) -> Option<&'static str> {
    match field {
        "feature_names" => Some("feature_name"),
        "relation_tower_names" => Some("tower_name"),
        // Encoders and towers read groups by name.
        "input" => Some("group_name"),
        _ => None,
    }
}

/// The declaration a string value under the cursor names, if any.
fn target(text: &str, offset: usize) -> Option<(String, std::ops::Range<usize>, &'static str)> {
    let s = scan(text, offset);
    let key = declaring_key(s.value_field()?)?;
    let (name, _) = string_at(text, offset)?;
    let (_, span) = declarations(text, key)
        .into_iter()
        .find(|(n, _)| *n == name)?;
    Some((name, span, key))
}

/// The block around a declaration: from the line of the `{` that opens
/// the block holding it to its matching `}`.
fn block_around(text: &str, at: usize) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0i32;
    let mut start = at;
    while start > 0 {
        start -= 1;
        match bytes[start] {
            b'}' => depth += 1,
            b'{' if depth == 0 => break,
            b'{' => depth -= 1,
            _ => {}
        }
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let mut end = at;
    let mut depth = 0i32;
    while end < bytes.len() {
        match bytes[end] {
            b'{' => depth += 1,
            b'}' if depth == 0 => {
                end += 1;
                break;
            }
            b'}' => depth -= 1,
            _ => {}
        }
        end += 1;
    }
    text.get(line_start..end.min(text.len()))
        .unwrap_or_default()
}

pub(crate) fn hover(schema: &Schema, text: &str, pos: Position) -> Option<Hover> {
    let lines = Lines::new(text);
    let offset = lines.offset(pos);
    if let Some((name, span, key)) = target(text, offset) {
        let block = block_around(text, span.start);
        let what = key.trim_end_matches("_name");
        let value = format!("{what} `{name}`\n\n```\n{block}\n```");
        return Some(markdown(value, None));
    }
    if string_at(text, offset).is_some() {
        return None;
    }
    let (word, span) = word_at(text, offset)?;
    let after = text[span.end..].trim_start_matches([' ', '\t']);
    if !after.starts_with([':', '{', '<', '[']) {
        return None;
    }
    let s = scan(text, span.start);
    let md = message_at(schema, &s.blocks())?;
    let field = md.get_field_by_name(word)?;
    let mut value = hover_text(&field);
    if matches!(field.kind(), Kind::Message(m) if m.name() == "MLP") {
        if let Some(shapes) = mlp_shapes(schema, text, span.start) {
            value.push_str(&shapes);
        }
    }
    Some(markdown(value, Some(lines.range(&span))))
}

/// Blocks listed in an MLP hover before the rest are only counted.
const SHAPES_LISTED: usize = 8;

/// The layers the MLP block whose field name starts at `name_start` (an
/// expert net, a tower's `mlp`, a bottom MLP) lowers to, with their widths,
/// when the buffer compiles: one line per block the compiler builds from it
/// (every expert of a task's expert net, say).
fn mlp_shapes(schema: &Schema, text: &str, name_start: usize) -> Option<String> {
    let checked = crate::pipeline::check_source(schema, text);
    if checked.has_errors() {
        return None;
    }
    let bound = checked.bound.as_ref()?;
    let config = crate::schema::typed_config(bound)?;
    let graph = crate::ir::lower_faithfully(&config).ok()?;
    let mut blocks: Vec<&crate::ir::graph::MlpBlock> = graph
        .graph
        .node_weights()
        .filter_map(|n| match n {
            crate::ir::graph::Node::Mlp(b) => Some(b),
            _ => None,
        })
        .filter(|b| {
            !b.path.is_empty()
                && bound
                    .spans
                    .name(&b.path)
                    .is_some_and(|r| r.start == name_start)
        })
        .collect();
    if blocks.is_empty() {
        return None;
    }
    blocks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = format!(
        "\n\n**shapes** ({} block(s), `[batch, width]`):",
        blocks.len()
    );
    for b in blocks.iter().take(SHAPES_LISTED) {
        let widths: Vec<String> = std::iter::once(b.in_dim())
            .chain(b.widths())
            .map(|w| w.to_string())
            .collect();
        out.push_str(&format!("\n- `{}`: {}", b.name, widths.join(" → ")));
    }
    if blocks.len() > SHAPES_LISTED {
        out.push_str(&format!("\n- … and {} more", blocks.len() - SHAPES_LISTED));
    }
    Some(out)
}

fn markdown(value: String, range: Option<Range>) -> Hover {
    Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value,
        }),
        range,
    }
}

pub(crate) fn completion(schema: &Schema, text: &str, pos: Position) -> Vec<CompletionItem> {
    let lines = Lines::new(text);
    let offset = lines.offset(pos);
    let s = scan(text, offset);
    if s.in_comment {
        return Vec::new();
    }
    if s.in_string.is_some() {
        let Some(key) = s.value_field().and_then(declaring_key) else {
            return Vec::new();
        };
        let mut names: Vec<String> = declarations(text, key).into_iter().map(|d| d.0).collect();
        names.sort();
        names.dedup();
        return names
            .into_iter()
            .map(|n| item(n, CompletionItemKind::REFERENCE, Some(key.to_string())))
            .collect();
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = text[line_start..offset].trim_start();
    let Some(md) = message_at(schema, &s.blocks()) else {
        return Vec::new();
    };
    // `name: |` completes the value of `name`.
    if let Some((name, value)) = before.split_once(':') {
        let name = name.trim();
        let Some(field) = md.get_field_by_name(name) else {
            return Vec::new();
        };
        let prefix = value.trim();
        return match field.kind() {
            Kind::Enum(e) => e
                .values()
                .filter(|v| v.name().starts_with(prefix))
                .map(|v| item(v.name().to_string(), CompletionItemKind::ENUM_MEMBER, None))
                .collect(),
            Kind::Bool => ["true", "false"]
                .into_iter()
                .map(|v| item(v.to_string(), CompletionItemKind::VALUE, None))
                .collect(),
            _ => Vec::new(),
        };
    }
    // At the start of a field: the fields of the enclosing message.
    if !before
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Vec::new();
    }
    md.fields()
        .filter(|f| f.name().starts_with(before))
        .map(|f| {
            item(
                f.name().to_string(),
                CompletionItemKind::FIELD,
                Some(type_words(&f)),
            )
        })
        .collect()
}

fn item(label: String, kind: CompletionItemKind, detail: Option<String>) -> CompletionItem {
    CompletionItem {
        label,
        kind: Some(kind),
        detail,
        ..Default::default()
    }
}

pub(crate) fn definition(uri: &Uri, text: &str, pos: Position) -> Option<Location> {
    let lines = Lines::new(text);
    let (_, span, _) = target(text, lines.offset(pos))?;
    Some(Location::new(uri.clone(), lines.range(&span)))
}

/// Features, groups and towers, in the order they are written.
#[allow(deprecated)] // DocumentSymbol::deprecated must be named to build one.
pub(crate) fn symbols(text: &str) -> Vec<DocumentSymbol> {
    let lines = Lines::new(text);
    let mut found = Vec::new();
    for (key, kind, what) in [
        ("feature_name", SymbolKind::VARIABLE, "feature"),
        ("group_name", SymbolKind::STRUCT, "group"),
        ("tower_name", SymbolKind::CLASS, "tower"),
    ] {
        for (name, span) in declarations(text, key) {
            found.push((span.start, name, span, kind, what));
        }
    }
    found.sort_by_key(|f| f.0);
    found
        .into_iter()
        .map(|(_, name, span, kind, what)| DocumentSymbol {
            name,
            detail: Some(what.to_string()),
            kind,
            tags: None,
            deprecated: None,
            range: lines.range(&span),
            selection_range: lines.range(&span),
            children: None,
        })
        .collect()
}

/// The one suggestion of a "did you mean `x`?" help, if it names one.
fn single_suggestion(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("did you mean ")?;
    let clause = rest.split('?').next()?;
    let inner = clause.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

/// Quick fixes: each diagnostic whose help suggests one name gets an edit
/// writing that name (in the quotes the text had).
pub(crate) fn code_actions(
    uri: &Uri,
    text: &str,
    diagnostics: &[LspDiagnostic],
) -> Vec<CodeActionOrCommand> {
    let lines = Lines::new(text);
    let mut out = Vec::new();
    for d in diagnostics {
        let Some(suggestion) = single_suggestion(&d.message) else {
            continue;
        };
        let start = lines.offset(d.range.start);
        let end = lines.offset(d.range.end);
        let old = text.get(start..end).unwrap_or_default();
        let new_text = match old.chars().next() {
            Some(q @ ('"' | '\'')) => format!("{q}{suggestion}{q}"),
            _ => suggestion.to_string(),
        };
        let edit = TextEdit::new(d.range, new_text);
        out.push(CodeActionOrCommand::CodeAction(CodeAction {
            title: format!("replace with `{suggestion}`"),
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![d.clone()]),
            edit: Some(WorkspaceEdit {
                changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                ..Default::default()
            }),
            is_preferred: Some(true),
            ..Default::default()
        }));
    }
    out
}

/// `plec fmt` as one edit over the whole text; none when it does not parse.
pub(crate) fn formatting(text: &str) -> Option<Vec<TextEdit>> {
    let formatted = crate::format::format(text).ok()?;
    let lines = Lines::new(text);
    Some(vec![TextEdit::new(
        lines.range(&(0..text.len())),
        formatted,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hover_value(text: &str, at: usize) -> String {
        let schema = Schema::builtin().expect("builtin schema");
        let pos = Lines::new(text).position(at);
        match hover(&schema, text, pos).map(|h| h.contents) {
            Some(HoverContents::Markup(m)) => m.value,
            other => panic!("no markdown hover: {other:?}"),
        }
    }

    /// Hover on an expert net names every expert the compiler builds from
    /// it with its widths, input first; the same name in another
    /// extraction network shows that network's experts; a config that does
    /// not compile shows the field's docs only.
    #[test]
    fn hover_on_an_expert_net_shows_its_experts_shapes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ple_demo.config");
        let text = std::fs::read_to_string(path).expect("example");
        let first = text.find("task_expert_net").expect("an expert net");
        let v = hover_value(&text, first + 2);
        assert!(v.contains("**task_expert_net**"), "{v}");
        assert!(v.contains("**shapes** (4 block(s)"), "{v}");
        for e in ["layer1.ctr.expert0", "layer1.cvr.expert1"] {
            assert!(v.contains(&format!("`{e}`: 256 → 256 → 128 → 64")), "{v}");
        }
        assert!(!v.contains("layer2"), "{v}");
        let second = first + 1 + text[first + 1..].find("task_expert_net").expect("layer2");
        let v = hover_value(&text, second);
        assert!(v.contains("**shapes** (6 block(s)"), "{v}");
        assert!(v.contains("`layer2.ctr.expert2`: 64 →"), "{v}");

        let broken = text.replacen("label_name: \"clk\"", "label_name: \"nope\"", 1);
        let v = hover_value(&broken, first + 2);
        assert!(
            v.contains("**task_expert_net**") && !v.contains("shapes"),
            "{v}"
        );
    }
}

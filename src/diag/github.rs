//! GitHub Actions workflow commands: one `::error file=..::message` line per
//! diagnostic, which the runner turns into annotations on the pull request.
//!
//! Escaping follows GitHub's toolkit (`@actions/core`, `command.ts`): in the
//! message `%`, `\r` and `\n` become `%25`, `%0D` and `%0A`; property values
//! also escape `:` and `,` (`%3A`, `%2C`), which would otherwise end them.

use super::{Diagnostic, LineIndex, Severity};

/// Escapes a command's message (the text after `::`).
pub(super) fn escape_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a property value (`file=`, `title=`...).
pub(super) fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// The workflow command of a severity: GitHub has no "advice", its
/// nearest level is a notice.
fn command(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Advice => "notice",
    }
}

/// Renders the diagnostics of one file as workflow commands. Columns are
/// given only for a span on one line: GitHub's annotations take columns for
/// single-line ranges only and drop them otherwise.
pub fn render_github(file: &str, source: &str, diags: &[Diagnostic]) -> String {
    let index = LineIndex::new(source);
    let mut out = String::new();
    for d in diags {
        let mut props = vec![format!("file={}", escape_property(file))];
        if let Some(span) = d.primary_span() {
            let (line, col) = index.position(span.start);
            let (end_line, end_col) = index.position(span.end.max(span.start));
            props.push(format!("line={line}"));
            if line == end_line {
                props.push(format!("col={col}"));
                props.push(format!("endLine={end_line}"));
                props.push(format!("endColumn={}", end_col.max(col + 1) - 1));
            } else {
                props.push(format!("endLine={end_line}"));
            }
        }
        props.push(format!("title={}", escape_property(&d.code)));
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        out.push_str(&format!(
            "::{} {}::{}\n",
            command(d.severity),
            props.join(","),
            escape_data(&message)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_the_toolkit_does() {
        assert_eq!(escape_data("50% a\r\nb"), "50%25 a%0D%0Ab");
        assert_eq!(escape_property("plec::x, y"), "plec%3A%3Ax%2C y");
    }

    #[test]
    fn columns_only_on_one_line() {
        let src = "ab\ncd\n";
        let one = Diagnostic::error("plec::x", "m").with_primary(3..5, "");
        let two = Diagnostic::warning("plec::y", "m").with_primary(0..4, "");
        let out = render_github("a,b.config", src, &[one, two]);
        assert_eq!(
            out,
            "::error file=a%2Cb.config,line=2,col=1,endLine=2,endColumn=2,title=plec%3A%3Ax::m\n\
             ::warning file=a%2Cb.config,line=1,endLine=2,title=plec%3A%3Ay::m\n"
        );
    }
}

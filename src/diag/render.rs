//! Rendering: rustc-like text through miette, and one JSON object per line.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use super::{Diagnostic, Severity};

/// Byte offset to 1-based line and column (columns count characters).
pub struct LineIndex<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            source,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset (clamped to the text).
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }
}

/// Lines longer than this (in bytes) are not shown as a snippet: miette
/// pads a label's underline with a `{:width$}` of its column, and Rust
/// panics on a width over 65535 (`plec check` on a one-line config with an
/// error past column 65535 crashed). A line this long would not read as a
/// snippet anyway; the diagnostic gives line and column instead.
const MAX_SNIPPET_LINE: usize = 1000;

/// The source as miette reads it, with its line starts, so that a snippet
/// costs the lines it shows. miette's own `SourceCode` for a string scans
/// from the first byte for every label it reads, which made rendering
/// quadratic in the number of diagnostics (`plec check` on 30 000 stray
/// `]` took 8 s).
struct IndexedSource {
    text: String,
    /// Where each line starts, by miette's rule: `\n`, `\r\n` and a lone
    /// `\r` end a line (its line numbers must come out the same).
    line_starts: Vec<usize>,
}

/// Lines read around a label beyond the context miette asks for, so the
/// window handed to miette's scanner starts and ends where its state is
/// the one a scan from the first byte would have.
const WINDOW_MARGIN: usize = 3;

impl IndexedSource {
    fn new(text: String) -> Self {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            i += match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => 2,
                _ => 1,
            };
            if matches!(bytes[i - 1], b'\r' | b'\n') {
                line_starts.push(i);
            }
        }
        IndexedSource { text, line_starts }
    }

    /// 0-based line holding byte `offset` (the last line past the end).
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// Byte length of each line from the one holding `start` to the one
    /// holding `end`, line break included.
    fn line_lengths(&self, start: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
        let len = self.text.len();
        (self.line_of(start)..=self.line_of(end.max(start))).map(move |l| {
            let from = self.line_starts.get(l).copied().unwrap_or(len);
            let to = self.line_starts.get(l + 1).copied().unwrap_or(len);
            to.saturating_sub(from)
        })
    }
}

impl miette::SourceCode for IndexedSource {
    /// miette's reading of the whole text, run on a window of whole lines
    /// around the span (`WINDOW_MARGIN` more than the context on each
    /// side), with offsets and line numbers moved back to the whole text.
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let len = self.text.len();
        let start = span.offset();
        let end = start.saturating_add(span.len());
        let first = self
            .line_of(start)
            .saturating_sub(context_lines_before.saturating_add(WINDOW_MARGIN));
        // `first` line breaks lie before the window.
        let (lines_before, base) = match self.line_starts.get(first) {
            Some(&at) if at <= start => (first, at),
            _ => (0, 0),
        };
        let last = self
            .line_of(end)
            .saturating_add(context_lines_after)
            .saturating_add(WINDOW_MARGIN);
        let stop = self.line_starts.get(last).copied().unwrap_or(len);
        let window = &self.text.as_bytes()[base..stop.max(base)];
        let local = SourceSpan::new((start - base).into(), span.len());
        let read = <[u8] as miette::SourceCode>::read_span(
            window,
            &local,
            context_lines_before,
            context_lines_after,
        )?;
        Ok(Box::new(miette::MietteSpanContents::new(
            read.data(),
            SourceSpan::new((read.span().offset() + base).into(), read.span().len()),
            read.line() + lines_before,
            read.column(),
            read.line_count() + lines_before,
        )))
    }
}

/// Adapter giving miette what it needs from our plain data.
struct MietteDiag<'a> {
    diag: &'a Diagnostic,
    source: &'a NamedSource<IndexedSource>,
    /// Where the primary label is, when the snippet is left out (its lines
    /// are too long).
    too_long: Option<(usize, usize)>,
}

impl MietteDiag<'_> {
    fn snippet(&self) -> bool {
        self.too_long.is_none() && !self.diag.labels.is_empty()
    }
}

/// Whether every line a label of `diag` touches is at most
/// [`MAX_SNIPPET_LINE`] bytes long.
fn lines_short_enough(source: &IndexedSource, diag: &Diagnostic) -> bool {
    diag.labels.iter().all(|l| {
        source
            .line_lengths(l.span.start, l.span.end)
            .all(|n| n <= MAX_SNIPPET_LINE + 2)
    })
}

impl fmt::Debug for MietteDiag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for MietteDiag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)?;
        match self.too_long {
            Some((line, column)) => write!(
                f,
                " (at line {line}, column {column}; the line is too long to show)"
            ),
            None => Ok(()),
        }
    }
}

impl std::error::Error for MietteDiag<'_> {}

impl miette::Diagnostic for MietteDiag<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(&self.diag.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Advice => miette::Severity::Advice,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.snippet() {
            Some(self.source)
        } else {
            None
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if !self.snippet() {
            return None;
        }
        let len = self.source.inner().text.len();
        Some(Box::new(self.diag.labels.iter().map(move |l| {
            let start = l.span.start.min(len);
            let end = l.span.end.clamp(start, len);
            let span = SourceSpan::new(start.into(), end - start);
            let text = (!l.text.is_empty()).then(|| l.text.clone());
            if l.primary {
                LabeledSpan::new_primary_with_span(text, span)
            } else {
                LabeledSpan::new_with_span(text, span)
            }
        })))
    }
}

/// Renders diagnostics of one file as rustc-like text. `color` picks ANSI
/// styling (only for terminals).
pub fn render_human(file: &str, source: &str, diags: &[Diagnostic], color: bool) -> String {
    let named = NamedSource::new(file, IndexedSource::new(source.to_string()));
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    let index = LineIndex::new(source);
    for diag in diags {
        let too_long = (!lines_short_enough(named.inner(), diag))
            .then(|| index.position(diag.primary_span().map_or(0, |s| s.start)));
        let adapter = MietteDiag {
            diag,
            source: &named,
            too_long,
        };
        if handler.render_report(&mut out, &adapter).is_err() {
            out.push_str(&format!("{}: {}\n", diag.severity.as_str(), diag.message));
        }
        out.push('\n');
    }
    out
}

#[derive(serde::Serialize)]
struct JsonDiag<'a> {
    file: &'a str,
    severity: Severity,
    code: &'a str,
    message: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    end_line: Option<usize>,
    end_column: Option<usize>,
    help: Option<&'a str>,
}

/// Renders diagnostics as JSON lines: one object per diagnostic with 1-based
/// positions of the primary label.
pub fn render_json(file: &str, source: &str, diags: &[Diagnostic]) -> String {
    let index = LineIndex::new(source);
    let mut out = String::new();
    for d in diags {
        let span = d.primary_span();
        let start = span.as_ref().map(|s| index.position(s.start));
        let end = span.as_ref().map(|s| index.position(s.end));
        let json = JsonDiag {
            file,
            severity: d.severity,
            code: &d.code,
            message: &d.message,
            line: start.map(|p| p.0),
            column: start.map(|p| p.1),
            end_line: end.map(|p| p.0),
            end_column: end.map(|p| p.1),
            help: d.help.as_deref(),
        };
        match serde_json::to_string(&json) {
            Ok(s) => out.push_str(&s),
            Err(e) => out.push_str(&format!("{{\"error\":\"{e}\"}}")),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label past column 65535 of a long line panicked inside miette;
    /// now that diagnostic comes without a snippet, with its position.
    #[test]
    fn a_label_far_along_a_long_line_renders_without_a_snippet() {
        let source = format!("model_config {{{}bogus: 1 }}\n", " ".repeat(70_000));
        let at = source.find("bogus").unwrap_or(0);
        let d = Diagnostic::error("plec::unknown-field", "no field `bogus`")
            .with_primary(at..at + 5, "here");
        let out = render_human("long.config", &source, &[d], false);
        assert!(
            out.contains("no field `bogus` (at line 1, column 70015;"),
            "{out}"
        );
        assert!(out.len() < 1000, "{out}");
        // A short line keeps its snippet.
        let short = "model_config { bogus: 1 }\n";
        let d = Diagnostic::error("plec::unknown-field", "no field `bogus`")
            .with_primary(15..20, "here");
        let out = render_human("short.config", short, &[d], false);
        assert!(out.contains("here") && !out.contains("too long"), "{out}");
    }

    /// What miette reads from the whole text for every span, with the
    /// contexts the graphical handler asks for: `IndexedSource` must read
    /// the same bytes, offsets, line, column and line count (line breaks of
    /// every kind, spans at line starts and ends, empty ones).
    #[test]
    fn indexed_source_reads_as_miette_reads_the_whole_text() {
        use miette::SourceCode;
        let texts = [
            "",
            "a",
            "one\ntwo\n",
            "one\ntwo",
            "a\r\nbb\r\n\r\nccc\rdd\n\neee",
            "x { y: [1, 2]\n}\n\n\nz: 3\r\nw {\n  v: 1\n}\n",
            "\n\n\n\n\n\n\n\nlast",
        ];
        for text in texts {
            let indexed = IndexedSource::new(text.to_string());
            let whole = text.to_string();
            // Spans inside the text, as `labels` clamps them (miette itself
            // panics on some past the end).
            for start in 0..=text.len() {
                for len in 0..=(text.len() - start).min(12) {
                    for ctx in 0..=2 {
                        let span = SourceSpan::new(start.into(), len);
                        let a = whole.read_span(&span, ctx, ctx);
                        let b = indexed.read_span(&span, ctx, ctx);
                        let case = format!("{text:?} at {start}+{len}, context {ctx}");
                        match (a, b) {
                            (Ok(a), Ok(b)) => {
                                assert_eq!(a.data(), b.data(), "{case}");
                                assert_eq!(a.span(), b.span(), "{case}");
                                assert_eq!(a.line(), b.line(), "{case}");
                                assert_eq!(a.column(), b.column(), "{case}");
                                assert_eq!(a.line_count(), b.line_count(), "{case}");
                            }
                            (Err(_), Err(_)) => {}
                            (a, b) => panic!("{case}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
                        }
                    }
                }
            }
        }
    }
}

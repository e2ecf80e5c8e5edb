//! `plec check --data`: a plan's inputs checked against real parquet files
//! before a job, with every problem reported instead of the first.
//!
//! Reads each file's footer (every column a feature, label or sample weight
//! reads must exist with a type its reader takes), then the first rows of
//! each file (all of them with no limit): each feature is encoded by the same
//! [`FeatureEncoder`] a run uses, so every value a run would stop at stops
//! here too (ids outside `num_buckets`, unparsable numbers, wrong widths,
//! grouped sequences with unequal steps); labels and weights are counted for
//! nulls, NaN and infinities. Beside the errors it measures what is legal
//! but suspicious: vocabulary coverage, empty sequences, and a multi-value
//! string column that never holds its separator but often holds another.
//!
//! Hands the CLI [`Finding`]s naming what they are about ([`Subject`]), so it
//! can point at the config line that declares it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use rayon::prelude::*;

use super::batch::FeatureInput;
use super::column::{classify, ColumnView, Item, LeafKind};
use super::encode::{BatchLoc, FeatureEncoder, DEFAULT_SEPARATOR, VOCAB_OOV_ID};
use super::error::DataError;
use super::fields::{number_shape_ok, NUMBER_EXPECTED};
use super::pages;
use super::reader::{check_step_counts, resolve_inputs};
use crate::diag::Severity;
use crate::proto::plan::{FeatureKind, FeatureSpec, Plan};

/// Rows read per record batch.
const READ_ROWS: usize = 8192;

/// Separators a multi-value string column is often written with; one of
/// them in most rows, and never the configured one, is a likely mistake.
const LIKELY_SEPARATORS: &[&str] = &["\x1d", ",", ";", "|", "\x03", "\t"];

/// String rows per feature looked at for separators: a sample this large
/// shows a systematic delimiter mistake, and sniffing every row of a large
/// file would cost more than encoding it.
const SNIFF_ROWS: u64 = 10_000;

/// Below this share of values found in the vocabulary, coverage is a
/// warning (a wrong column, or a vocabulary from other data).
const LOW_VOCAB_COVERAGE: f64 = 0.5;

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// A plan feature, by its plan name.
    Feature(String),
    /// A label column.
    Label(String),
    /// A sample weight column.
    Weight(String),
    /// The input files themselves.
    Input,
}

/// One problem or measurement.
#[derive(Debug, Clone)]
pub struct Finding {
    pub subject: Subject,
    pub severity: Severity,
    /// Stable code such as `plec::data::id_out_of_range`.
    pub code: String,
    pub message: String,
    pub help: Option<String>,
}

impl Finding {
    fn from_error(subject: Subject, e: &DataError) -> Self {
        use miette::Diagnostic;
        Finding {
            subject,
            severity: Severity::Error,
            code: e
                .code()
                .map_or_else(|| "plec::data".to_string(), |c| c.to_string()),
            message: e.to_string(),
            help: e.help().map(|h| h.to_string()),
        }
    }
}

/// What an audit read and found.
#[derive(Debug, Default)]
pub struct Audit {
    pub findings: Vec<Finding>,
    pub files: usize,
    pub rows_scanned: u64,
    pub rows_total: u64,
}

/// Measurements of one feature over every file.
#[derive(Debug, Default)]
struct FeatureStats {
    values: u64,
    oov: u64,
    rows: u64,
    empty_rows: u64,
    max_steps: u32,
    /// Rows holding the configured separator, and each likely one.
    with_separator: u64,
    with_other: BTreeMap<&'static str, u64>,
    string_rows: u64,
}

/// Nulls and non-finite values of a label or weight column.
#[derive(Debug, Default)]
struct NumberStats {
    rows: u64,
    nulls: u64,
    non_finite: u64,
    first: Option<DataError>,
}

/// Checks `inputs` against `plan`, reading at most `max_rows` rows of each
/// file (`None`: all).
pub fn audit<S: AsRef<str>>(plan: &Plan, inputs: &[S], max_rows: Option<u64>) -> Audit {
    let mut out = Audit::default();
    let encoders: Vec<(usize, FeatureEncoder)> = plan
        .features
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| match FeatureEncoder::new(spec) {
            Ok(e) => Some((i, e)),
            Err(e) => {
                out.findings
                    .push(Finding::from_error(Subject::Feature(spec.name.clone()), &e));
                None
            }
        })
        .collect();
    let data = plan.data.clone().unwrap_or_default();
    let numbers: Vec<(Subject, String)> = data
        .label_fields
        .iter()
        .map(|c| (Subject::Label(c.clone()), c.clone()))
        .chain(
            data.sample_weight_fields
                .iter()
                .map(|c| (Subject::Weight(c.clone()), c.clone())),
        )
        .collect();
    let files = match resolve_inputs(inputs) {
        Ok(f) => f,
        Err(e) => {
            out.findings.push(Finding::from_error(Subject::Input, &e));
            return out;
        }
    };
    out.files = files.len();
    let mut stats: Vec<FeatureStats> = encoders.iter().map(|_| FeatureStats::default()).collect();
    let mut number_stats: Vec<NumberStats> =
        numbers.iter().map(|_| NumberStats::default()).collect();
    for path in &files {
        let mut scan = FileScan {
            path,
            plan,
            encoders: &encoders,
            numbers: &numbers,
            stats: &mut stats,
            number_stats: &mut number_stats,
            findings: &mut out.findings,
        };
        let (scanned, total) = scan.run(max_rows);
        out.rows_scanned += scanned;
        out.rows_total += total;
    }
    for ((subject, column), s) in numbers.iter().zip(number_stats) {
        out.findings.extend(number_finding(subject, column, s));
    }
    for ((i, enc), s) in encoders.iter().zip(&stats) {
        out.findings
            .extend(feature_findings(&plan.features[*i], enc, s));
    }
    out
}

/// One file's checks, adding to the shared statistics.
struct FileScan<'a> {
    path: &'a Path,
    plan: &'a Plan,
    encoders: &'a [(usize, FeatureEncoder)],
    numbers: &'a [(Subject, String)],
    stats: &'a mut [FeatureStats],
    number_stats: &'a mut [NumberStats],
    findings: &'a mut Vec<Finding>,
}

impl FileScan<'_> {
    /// Returns (rows scanned, rows in the file).
    fn run(&mut self, max_rows: Option<u64>) -> (u64, u64) {
        let meta = match File::open(self.path)
            .map_err(|e| DataError::Io {
                path: self.path.to_path_buf(),
                detail: e.to_string(),
            })
            .and_then(|f| {
                ArrowReaderMetadata::load(&f, ArrowReaderOptions::new()).map_err(|e| {
                    DataError::NotParquet {
                        file: self.path.to_path_buf(),
                        detail: e.to_string(),
                    }
                })
            }) {
            Ok(m) => m,
            Err(e) => {
                self.findings.push(Finding::from_error(Subject::Input, &e));
                return (0, 0);
            }
        };
        let schema = meta.schema().clone();
        let available = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ");
        // Which encoders and number columns this file can feed: every
        // column present with a usable type.
        let mut projection = std::collections::BTreeSet::new();
        let mut feature_ok = vec![true; self.encoders.len()];
        for (k, (_, enc)) in self.encoders.iter().enumerate() {
            for c in enc.columns() {
                let needed_by = format!("feature `{}`", enc.name());
                let subject = Subject::Feature(enc.name().to_string());
                match schema.index_of(c) {
                    Ok(i) => {
                        projection.insert(i);
                        let dt = schema.field(i).data_type();
                        if let Err(expected) = enc.check_shape(classify(dt)) {
                            feature_ok[k] = false;
                            let e = self.wrong_type(c, dt, needed_by, expected);
                            self.findings.push(Finding::from_error(subject, &e));
                        }
                    }
                    Err(_) => {
                        feature_ok[k] = false;
                        let e = self.missing(c, needed_by, &available);
                        self.findings.push(Finding::from_error(subject, &e));
                    }
                }
            }
        }
        let mut number_ok = vec![true; self.numbers.len()];
        for (k, (subject, c)) in self.numbers.iter().enumerate() {
            let what = match subject {
                Subject::Label(_) => "label",
                _ => "sample weight",
            };
            let needed_by = format!("the {what} `{c}`");
            match schema.index_of(c) {
                Ok(i) => {
                    projection.insert(i);
                    let dt = schema.field(i).data_type();
                    let shape = classify(dt);
                    if !number_shape_ok(shape) || shape.is_some_and(|s| s.leaf == LeafKind::Str) {
                        number_ok[k] = false;
                        let e = self.wrong_type(c, dt, needed_by, NUMBER_EXPECTED);
                        self.findings.push(Finding::from_error(subject.clone(), &e));
                    }
                }
                Err(_) => {
                    number_ok[k] = false;
                    let e = self.missing(c, needed_by, &available);
                    self.findings.push(Finding::from_error(subject.clone(), &e));
                }
            }
        }
        let projection: Vec<usize> = projection.into_iter().collect();
        let md = meta.metadata();
        let total: u64 = md
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows().max(0) as u64)
            .sum();
        let mut budget = max_rows.unwrap_or(u64::MAX);
        let mut first_row = 0u64;
        let mut scanned = 0u64;
        for rg in 0..md.num_row_groups() {
            let rg_rows = md.row_group(rg).num_rows().max(0) as u64;
            if budget == 0 {
                break;
            }
            let corrupt = |detail: String| DataError::Corrupt {
                file: self.path.to_path_buf(),
                row_group: rg,
                detail,
            };
            // Only the rows left in the budget.
            let selection = (budget < rg_rows).then(|| {
                let take = budget as usize;
                RowSelection::from(vec![
                    RowSelector::select(take),
                    RowSelector::skip(rg_rows as usize - take),
                ])
            });
            let reader = File::open(self.path)
                .map_err(|e| corrupt(e.to_string()))
                .and_then(|input| {
                    pages::row_group_reader(input, &meta, &projection, rg, READ_ROWS, selection)
                        .map_err(corrupt)
                });
            let reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    self.findings.push(Finding::from_error(Subject::Input, &e));
                    return (scanned, total);
                }
            };
            let mut row = first_row;
            for rb in reader {
                let rb = match rb {
                    Ok(rb) => rb,
                    Err(e) => {
                        let e = corrupt(e.to_string());
                        self.findings.push(Finding::from_error(Subject::Input, &e));
                        return (scanned, total);
                    }
                };
                let loc = BatchLoc {
                    file: self.path,
                    first_row: row,
                    row_group: rg,
                };
                self.batch(&rb, &loc, &mut feature_ok, &number_ok);
                let n = rb.num_rows() as u64;
                row += n;
                scanned += n;
                budget = budget.saturating_sub(n);
            }
            first_row += rg_rows;
        }
        (scanned, total)
    }

    fn wrong_type(
        &self,
        column: &str,
        dt: &arrow_schema::DataType,
        needed_by: String,
        expected: &str,
    ) -> DataError {
        DataError::WrongType {
            file: self.path.to_path_buf(),
            column: column.to_string(),
            found: dt.to_string(),
            needed_by,
            expected: expected.to_string(),
        }
    }

    fn missing(&self, column: &str, needed_by: String, available: &str) -> DataError {
        DataError::MissingColumn {
            file: self.path.to_path_buf(),
            column: column.to_string(),
            needed_by,
            available: available.to_string(),
        }
    }

    /// Encodes one record batch with every feature still good in this file
    /// (a feature's first bad value is reported once per file) and counts
    /// the label and weight columns.
    fn batch(
        &mut self,
        rb: &RecordBatch,
        loc: &BatchLoc<'_>,
        feature_ok: &mut [bool],
        number_ok: &[bool],
    ) {
        // Features are independent: encode and measure them in parallel,
        // each into its own statistics; findings are gathered in order.
        let plan = self.plan;
        let results: Vec<Option<Result<FeatureInput, DataError>>> = self
            .encoders
            .par_iter()
            .zip(self.stats.par_iter_mut())
            .zip(feature_ok.par_iter())
            .map(|(((i, enc), stats), ok)| {
                if !ok {
                    return None;
                }
                let cols: Option<Vec<&ArrayRef>> =
                    enc.columns().iter().map(|c| rb.column_by_name(c)).collect();
                let cols = cols?;
                let input = enc.encode(&cols, loc);
                if let Ok(input) = &input {
                    measure(&plan.features[*i], input, cols[0], stats);
                }
                Some(input)
            })
            .collect();
        let mut encoded: Vec<(FeatureEncoder, FeatureInput)> = Vec::new();
        for (k, result) in results.into_iter().enumerate() {
            let enc = &self.encoders[k].1;
            match result {
                // Grouped sequences are compared step by step below.
                Some(Ok(input)) if enc.sequence_group().is_some() => {
                    encoded.push((enc.clone(), input));
                }
                None | Some(Ok(_)) => {}
                Some(Err(e)) => {
                    feature_ok[k] = false;
                    self.findings.push(Finding::from_error(
                        Subject::Feature(enc.name().to_string()),
                        &e,
                    ));
                }
            }
        }
        if !encoded.is_empty() {
            let (encs, inputs): (Vec<FeatureEncoder>, Vec<FeatureInput>) =
                encoded.into_iter().unzip();
            if let Err(e) = check_step_counts(&encs, &inputs, loc) {
                let name = match &e {
                    DataError::StepCount { column, .. } => encs
                        .iter()
                        .find(|x| x.columns().first() == Some(column))
                        .map_or_else(String::new, |x| x.name().to_string()),
                    _ => String::new(),
                };
                self.findings
                    .push(Finding::from_error(Subject::Feature(name), &e));
            }
        }
        for (k, (subject, column)) in self.numbers.iter().enumerate() {
            if !number_ok[k] {
                continue;
            }
            if let Some(arr) = rb.column_by_name(column) {
                let what = match subject {
                    Subject::Label(_) => "label",
                    _ => "sample weight",
                };
                count_numbers(arr, column, what, loc, &mut self.number_stats[k]);
            }
        }
    }
}

/// Adds one batch of a feature's encoded input (and its first raw column)
/// to its statistics.
fn measure(spec: &FeatureSpec, input: &FeatureInput, raw: &ArrayRef, s: &mut FeatureStats) {
    let offsets = match input {
        FeatureInput::Ids { ids, offsets } => {
            if spec.kind == FeatureKind::IdVocab as i32 {
                let oov = spec
                    .default_bucketize_value
                    .map_or(VOCAB_OOV_ID, |v| v as u32);
                s.values += ids.len() as u64;
                s.oov += ids.iter().filter(|&&id| id == oov).count() as u64;
            }
            Some(offsets)
        }
        FeatureInput::SeqDense { offsets, .. } => Some(offsets),
        FeatureInput::Dense { .. } => None,
    };
    if let Some(offsets) = offsets {
        for w in offsets.windows(2) {
            let n = w[1] - w[0];
            s.rows += 1;
            if n == 0 {
                s.empty_rows += 1;
            }
            s.max_steps = s.max_steps.max(n);
        }
    }
    // Separator sniffing: only string scalar columns are split.
    let Ok(view) = ColumnView::new(raw) else {
        return;
    };
    if view.shape.list || view.shape.leaf != LeafKind::Str {
        return;
    }
    let configured = delimiter(spec);
    for r in 0..view.rows() {
        if s.string_rows >= SNIFF_ROWS {
            break;
        }
        let Some(Item::Str(v)) = view.scalar(r) else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        s.string_rows += 1;
        if v.contains(configured) {
            s.with_separator += 1;
        }
        for sep in LIKELY_SEPARATORS {
            if *sep != configured && v.contains(sep) {
                *s.with_other.entry(sep).or_default() += 1;
            }
        }
    }
}

/// The delimiter a string column of this feature is split by: the
/// sequence delimiter for sequences, else the multi-value separator.
fn delimiter(spec: &FeatureSpec) -> &str {
    if spec.sequence_length > 0 && !spec.sequence_delim.is_empty() {
        &spec.sequence_delim
    } else if spec.separator.is_empty() {
        DEFAULT_SEPARATOR
    } else {
        &spec.separator
    }
}

/// Counts nulls and non-finite values; keeps the first as an error.
fn count_numbers(
    arr: &ArrayRef,
    column: &str,
    what: &str,
    loc: &BatchLoc<'_>,
    s: &mut NumberStats,
) {
    let Ok(view) = ColumnView::new(arr) else {
        return;
    };
    for r in 0..view.rows() {
        s.rows += 1;
        let x = match view.scalar(r) {
            None => {
                s.nulls += 1;
                if s.first.is_none() {
                    s.first = Some(DataError::Null {
                        at: loc.at(r),
                        column: column.to_string(),
                        what: format!("a {what}"),
                    });
                }
                continue;
            }
            Some(Item::Float(x)) => x,
            Some(_) => continue,
        };
        if !x.is_finite() || !(x as f32).is_finite() {
            s.non_finite += 1;
            if s.first.is_none() {
                s.first = Some(DataError::NonFinite {
                    at: loc.at(r),
                    column: column.to_string(),
                    value: x,
                });
            }
        }
    }
}

fn number_finding(subject: &Subject, column: &str, s: NumberStats) -> Option<Finding> {
    let first = s.first?;
    let mut f = Finding::from_error(subject.clone(), &first);
    let what = match subject {
        Subject::Label(_) => "label",
        _ => "sample weight",
    };
    f.message = format!(
        "{what} column `{column}`: {} null and {} NaN or infinite of {} rows scanned; first at {}",
        s.nulls, s.non_finite, s.rows, f.message
    );
    Some(f)
}

/// The measurements of one feature worth reporting.
fn feature_findings(spec: &FeatureSpec, enc: &FeatureEncoder, s: &FeatureStats) -> Vec<Finding> {
    let mut out = Vec::new();
    let subject = || Subject::Feature(enc.name().to_string());
    let column = enc.columns().first().cloned().unwrap_or_default();
    if s.values > 0 {
        let coverage = 1.0 - s.oov as f64 / s.values as f64;
        let low = coverage < LOW_VOCAB_COVERAGE;
        out.push(Finding {
            subject: subject(),
            severity: if low { Severity::Warning } else { Severity::Advice },
            code: "plec::data::vocab_coverage".to_string(),
            message: format!(
                "the vocabulary of feature `{}` covers {:.1}% of the {} values of column `{column}` scanned",
                enc.name(),
                coverage * 100.0,
                s.values
            ),
            help: low.then(|| {
                "most values are out of vocabulary: check that the feature reads the right column and that the vocabulary comes from the same data".to_string()
            }),
        });
    }
    if spec.sequence_length > 0 && s.rows > 0 {
        let all_empty = s.empty_rows == s.rows;
        out.push(Finding {
            subject: subject(),
            severity: if all_empty {
                Severity::Warning
            } else {
                Severity::Advice
            },
            code: "plec::data::sequence_length".to_string(),
            message: format!(
                "sequence feature `{}`: {} of {} rows empty, longest {} steps (sequence_length {})",
                enc.name(),
                s.empty_rows,
                s.rows,
                s.max_steps,
                spec.sequence_length
            ),
            help: all_empty.then(|| {
                "every sequence is empty: check the column and `sequence_delim`".to_string()
            }),
        });
    }
    if s.with_separator == 0 && s.string_rows > 0 {
        if let Some((sep, n)) = s.with_other.iter().max_by_key(|(_, n)| **n) {
            if *n * 2 > s.string_rows {
                let configured = delimiter(spec);
                let field = if spec.sequence_length > 0 && !spec.sequence_delim.is_empty() {
                    "sequence_delim"
                } else {
                    "separator"
                };
                out.push(Finding {
                    subject: subject(),
                    severity: Severity::Warning,
                    code: "plec::data::separator".to_string(),
                    message: format!(
                        "column `{column}` never holds the {field} {configured:?} of feature `{}`, but {n} of the {} non-empty rows sampled hold {sep:?}",
                        enc.name(),
                        s.string_rows
                    ),
                    help: Some(if field == "separator" {
                        format!("each row is read as one value; if the rows are lists joined by {sep:?}, set `separator: {sep:?}`")
                    } else {
                        format!("each row is read as one step; if the steps are joined by {sep:?}, set `sequence_delim: {sep:?}`")
                    }),
                });
            }
        }
    }
    out
}

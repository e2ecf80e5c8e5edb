//! Errors of the data path: resolving input files, reading parquet, encoding
//! feature columns, and writing synthetic data.
//!
//! Every error about user data names the file, the column and the row
//! (0-based, counted from the start of the file) with its row group, so the
//! offending value can be found with any parquet tool; the `help` says how
//! to fix it.

use std::path::PathBuf;

use miette::Diagnostic;
use thiserror::Error;

/// Where in a file a bad value sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLoc {
    /// Shared, so an error stays small (clippy's `result_large_err`).
    pub file: std::sync::Arc<std::path::Path>,
    /// 0-based row index from the start of the file.
    pub row: u64,
    pub row_group: usize,
}

impl std::fmt::Display for RowLoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` row {} (row group {})",
            self.file.display(),
            self.row,
            self.row_group
        )
    }
}

/// Everything that can go wrong between input paths and encoded batches.
#[derive(Debug, Error, Diagnostic)]
pub enum DataError {
    #[error("no parquet files found for input `{input}`")]
    #[diagnostic(
        code(plec::data::no_files),
        help("give a parquet file, a directory holding *.parquet files, or a glob such as `data/*.parquet`")
    )]
    NoFiles { input: String },

    #[error("cannot read `{}`: {detail}", path.display())]
    #[diagnostic(
        code(plec::data::io),
        help("check that the path exists and is readable")
    )]
    Io { path: PathBuf, detail: String },

    #[error("`{}` is not a readable parquet file: {detail}", file.display())]
    #[diagnostic(
        code(plec::data::not_parquet),
        help("the file may be truncated (an interrupted copy) or not parquet at all; rewrite it")
    )]
    NotParquet { file: PathBuf, detail: String },

    #[error("`{}` row group {row_group}: reading failed: {detail}", file.display())]
    #[diagnostic(
        code(plec::data::corrupt),
        help("the file is damaged or truncated inside its data pages; rewrite it")
    )]
    Corrupt {
        file: PathBuf,
        row_group: usize,
        detail: String,
    },

    #[error("`{}` has no column `{column}`, needed by {needed_by}", file.display())]
    #[diagnostic(
        code(plec::data::missing_column),
        help("columns in this file: {available}; add the column or fix the config")
    )]
    MissingColumn {
        file: PathBuf,
        column: String,
        needed_by: String,
        available: String,
    },

    #[error("`{}` column `{column}` has type {found}, but {needed_by} needs {expected}", file.display())]
    #[diagnostic(
        code(plec::data::wrong_type),
        help("write the column as {expected}, or fix the config")
    )]
    WrongType {
        file: PathBuf,
        column: String,
        found: String,
        needed_by: String,
        expected: String,
    },

    #[error("{at}: column `{column}` is null, but {what} may not be null")]
    #[diagnostic(
        code(plec::data::null),
        help("fill or drop the rows with a null {what}")
    )]
    Null {
        at: RowLoc,
        column: String,
        what: String,
    },

    #[error("{at}: column `{column}` holds {value}, which is not a finite number")]
    #[diagnostic(
        code(plec::data::non_finite),
        help("fix or drop the row; NaN and infinities would poison training")
    )]
    NonFinite {
        at: RowLoc,
        column: String,
        value: f64,
    },

    #[error(
        "{at}: column `{column}` holds id {value}, outside [0, {num_ids}) of feature `{feature}`"
    )]
    #[diagnostic(
        code(plec::data::id_out_of_range),
        help("re-encode the ids into [0, {num_ids}), or raise `num_buckets` of the feature")
    )]
    IdOutOfRange {
        at: RowLoc,
        column: String,
        feature: String,
        value: i64,
        num_ids: u64,
    },

    #[error(
        "{at}: column `{column}` holds `{value}`, which is not {expected} (feature `{feature}`)"
    )]
    #[diagnostic(
        code(plec::data::bad_value),
        help("write the column as numbers, or fix the value")
    )]
    BadValue {
        at: RowLoc,
        column: String,
        feature: String,
        value: String,
        expected: &'static str,
    },

    #[error("{at}: column `{column}` has {found} values in a row, but feature `{feature}` needs {expected}")]
    #[diagnostic(
        code(plec::data::wrong_width),
        help("every non-empty row must hold exactly `value_dim` numbers")
    )]
    WrongWidth {
        at: RowLoc,
        column: String,
        feature: String,
        found: usize,
        expected: usize,
    },

    #[error("{at}: column `{column}` has {steps} steps but column `{other_column}` has {other_steps}; both are steps of sequence group `{group}`")]
    #[diagnostic(
        code(plec::data::step_count),
        help("the sub-sequences of one grouped sequence must have as many steps in every row; check the sequence_delim and the rows' histories")
    )]
    StepCount {
        at: RowLoc,
        column: String,
        steps: u32,
        other_column: String,
        other_steps: u32,
        group: String,
    },

    #[error("feature `{feature}` cannot be encoded: {detail}")]
    #[diagnostic(
        code(plec::data::bad_feature_spec),
        help("the plan is inconsistent; recompile it from the config")
    )]
    BadSpec { feature: String, detail: String },

    #[error("cannot write `{}`: {detail}", path.display())]
    #[diagnostic(code(plec::data::write), help("check free disk space and permissions"))]
    Write { path: PathBuf, detail: String },

    #[error("cannot continue the pass where the checkpoint left it: {detail}")]
    #[diagnostic(
        code(plec::data::reseek),
        help("resume with the data the run started with, or start a new run")
    )]
    Reseek { detail: String },

    #[error("the data reader thread stopped unexpectedly: {detail}")]
    #[diagnostic(
        code(plec::data::reader_stopped),
        help("this is a bug in plec; please report it")
    )]
    ReaderStopped { detail: String },
}

/// Result of the data path.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

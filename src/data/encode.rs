//! Feature encoding: arrow columns to [`FeatureInput`], exactly as a plan's
//! [`FeatureSpec`] says. Hands the reader one encoder per plan feature.
//!
//! # Stable contract
//! These rules decide which embedding row a value lands in, so trained
//! tables are only valid with them; changing any is a format break.
//!
//! - **Hashing** (`ID_HASH`, `COMBO_HASH`): `xxh3_64` with seed 0 over the
//!   UTF-8 bytes of the value's string form, modulo `num_ids`. Strings hash
//!   as they are; integers hash as their decimal form (`-12`, `7`), so the
//!   int64 `7` and the string `"7"` get the same id. Floats are not hashed
//!   (their string form differs between languages): store them as strings.
//! - **Combo** (`COMBO_HASH`): the cross product of the values of all input
//!   columns, in `input_columns` order; each combination is the string forms
//!   joined with `_` (`"u1"`, `"7"` -> `"u1_7"`), hashed as above. A row
//!   where any input is empty is empty.
//! - **Multi-value**: list columns give one value per list item; string
//!   columns are split by `separator` (default `"\x1d"`) and empty pieces
//!   are dropped. A null or empty row takes `default_value` (encoded like an
//!   input value); an empty `default_value` gives an empty bag, which pools
//!   to a zero embedding.
//! - **Vocab** (`ID_VOCAB`): with `vocab` (a list), word i has id i + 2,
//!   0 is the default and 1 is out-of-vocabulary; with `vocab_dict`, a word
//!   has its given id and out-of-vocabulary is 1. `default_bucketize_value`,
//!   when set, replaces the out-of-vocabulary id. Integers are looked up by
//!   their decimal form. A `default_value` missing from a vocab list maps to
//!   0.
//! - **Num buckets** (`ID_NUM_BUCKETS`): an integer (or a string holding
//!   one) that must lie in `[0, num_ids)`; anything else is an error.
//! - **Bucketized** (`RAW_BUCKETIZED`): bucket i holds
//!   `boundaries[i-1] <= x < boundaries[i]`; NaN counts as missing.
//! - **Dense** (`RAW_DENSE`): one number, or a list (or separator-joined
//!   string) of exactly `value_dim` numbers; NaN takes the default value of
//!   its position, infinities are errors. Then the normalizer: LOG10
//!   `log10(max(x, a))` (b where that is not finite), ZSCORE `(x - a) / b`,
//!   MINMAX `(x - a) / (b - a)`. The default is normalized too.

mod sequence;

use std::collections::HashMap;
use std::path::Path;

use arrow_array::ArrayRef;
use xxhash_rust::xxh3::{xxh3_64, Xxh3DefaultBuilder};

use super::batch::FeatureInput;
use super::column::{classify, format_i64, ColumnShape, ColumnView, Item, LeafKind, ViewError};
use super::error::{DataError, Result, RowLoc};
use crate::proto::plan::{FeatureKind, FeatureSpec, NormalizerKind};

/// Separator used when a spec leaves it empty (TorchEasyRec's default).
pub const DEFAULT_SEPARATOR: &str = "\x1d";

/// Vocab id of the default value.
pub const VOCAB_DEFAULT_ID: u32 = 0;
/// Vocab id of an out-of-vocabulary word unless overridden.
pub const VOCAB_OOV_ID: u32 = 1;

/// Hashes one value's string form into `[0, num_ids)`; see the module doc.
#[inline]
pub fn hash_id(s: &str, num_ids: u64) -> u32 {
    (xxh3_64(s.as_bytes()) % num_ids) as u32
}

/// Where a record batch starts in its file; turns batch rows into [`RowLoc`].
#[derive(Debug, Clone, Copy)]
pub struct BatchLoc<'a> {
    pub file: &'a Path,
    /// File row of the batch's first row.
    pub first_row: u64,
    pub row_group: usize,
}

impl BatchLoc<'_> {
    /// Location of batch row `r`.
    pub fn at(&self, r: usize) -> RowLoc {
        RowLoc {
            file: std::sync::Arc::from(self.file),
            row: self.first_row + r as u64,
            row_group: self.row_group,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Norm {
    None,
    Log10 { threshold: f64, fallback: f64 },
    Affine { shift: f64, scale: f64 },
}

impl Norm {
    #[inline]
    fn apply(self, x: f64) -> f64 {
        match self {
            Norm::None => x,
            Norm::Log10 {
                threshold,
                fallback,
            } => {
                let y = x.max(threshold).log10();
                if y.is_finite() {
                    y
                } else {
                    fallback
                }
            }
            Norm::Affine { shift, scale } => (x - shift) / scale,
        }
    }
}

/// Encodes the input column(s) of one feature.
#[derive(Debug, Clone)]
pub struct FeatureEncoder {
    name: String,
    kind: FeatureKind,
    columns: Vec<String>,
    num_ids: u64,
    separator: String,
    vocab: HashMap<String, u32, Xxh3DefaultBuilder>,
    oov_id: u32,
    boundaries: Vec<f64>,
    dim: usize,
    norm: Norm,
    /// Encoded `default_value` for id kinds (empty: zero embedding).
    default_ids: Vec<u32>,
    /// Raw (not yet normalized) default of each dense position.
    default_dense: Vec<f64>,
    /// Steps kept of a sequence feature (0: not a sequence).
    seq_len: usize,
    /// Splits a string row into steps.
    seq_delim: String,
    /// The sequence group the steps belong to (empty: none).
    seq_group: String,
    /// Encoded default steps of an id-kind sequence feature.
    seq_default_ids: Vec<u32>,
    /// Normalized default steps of a dense sequence feature, row-major.
    seq_default_dense: Vec<f64>,
}

fn bad_spec(spec: &FeatureSpec, detail: impl Into<String>) -> DataError {
    DataError::BadSpec {
        feature: spec.name.clone(),
        detail: detail.into(),
    }
}

impl FeatureEncoder {
    /// Checks `spec` and precomputes lookups; errors if the plan is
    /// inconsistent (unknown kind, ids beyond `num_ids`, bad default).
    pub fn new(spec: &FeatureSpec) -> Result<Self> {
        let kind = FeatureKind::try_from(spec.kind).unwrap_or(FeatureKind::Unspecified);
        let n_cols = spec.input_columns.len();
        match kind {
            FeatureKind::Unspecified => return Err(bad_spec(spec, "its kind is unspecified")),
            FeatureKind::ComboHash if n_cols == 0 => {
                return Err(bad_spec(spec, "a combo feature needs input columns"))
            }
            FeatureKind::ComboHash => {}
            _ if n_cols != 1 => {
                return Err(bad_spec(
                    spec,
                    format!("it needs exactly one input column, the plan lists {n_cols}"),
                ))
            }
            _ => {}
        }
        let embedded = kind != FeatureKind::RawDense;
        if embedded && (spec.num_ids == 0 || spec.num_ids > u32::MAX as u64 + 1) {
            return Err(bad_spec(
                spec,
                format!("num_ids {} is not in [1, 2^32]", spec.num_ids),
            ));
        }
        let separator = if spec.separator.is_empty() {
            DEFAULT_SEPARATOR.to_string()
        } else {
            spec.separator.clone()
        };
        let mut enc = FeatureEncoder {
            name: spec.name.clone(),
            kind,
            columns: spec.input_columns.clone(),
            num_ids: spec.num_ids,
            separator,
            vocab: HashMap::default(),
            oov_id: VOCAB_OOV_ID,
            boundaries: spec.boundaries.clone(),
            dim: (spec.value_dim as usize).max(1),
            norm: Norm::None,
            default_ids: Vec::new(),
            default_dense: Vec::new(),
            seq_len: 0,
            seq_delim: String::new(),
            seq_group: spec.sequence_group.clone(),
            seq_default_ids: Vec::new(),
            seq_default_dense: Vec::new(),
        };
        match kind {
            FeatureKind::IdVocab => enc.init_vocab(spec)?,
            FeatureKind::RawBucketized => {
                if enc
                    .boundaries
                    .windows(2)
                    .any(|w| w[0] >= w[1] || w[0].is_nan())
                {
                    return Err(bad_spec(spec, "boundaries must be strictly increasing"));
                }
                if spec.num_ids != enc.boundaries.len() as u64 + 1 {
                    return Err(bad_spec(
                        spec,
                        format!(
                            "{} boundaries make {} buckets, but num_ids is {}",
                            enc.boundaries.len(),
                            enc.boundaries.len() + 1,
                            spec.num_ids
                        ),
                    ));
                }
            }
            FeatureKind::RawDense => enc.init_dense(spec)?,
            _ => {}
        }
        if spec.sequence_length > 0 {
            if kind == FeatureKind::ComboHash {
                return Err(bad_spec(spec, "a combo feature cannot be a sequence"));
            }
            enc.init_sequence(spec)?;
            return Ok(enc);
        }
        if embedded && !spec.default_value.is_empty() {
            enc.default_ids = enc.encode_default(spec)?;
        }
        Ok(enc)
    }

    fn init_vocab(&mut self, spec: &FeatureSpec) -> Result<()> {
        if !spec.vocab.is_empty() && !spec.vocab_dict.is_empty() {
            return Err(bad_spec(spec, "it has both a vocab list and a vocab dict"));
        }
        for (i, w) in spec.vocab.iter().enumerate() {
            self.vocab.entry(w.clone()).or_insert(i as u32 + 2);
        }
        for (w, &id) in &spec.vocab_dict {
            if id >= spec.num_ids {
                return Err(bad_spec(
                    spec,
                    format!(
                        "vocab word `{w}` has id {id}, not below num_ids {}",
                        spec.num_ids
                    ),
                ));
            }
            self.vocab.insert(w.clone(), id as u32);
        }
        if let Some(&max) = self.vocab.values().max() {
            if max as u64 >= spec.num_ids {
                return Err(bad_spec(
                    spec,
                    format!(
                        "the vocab needs {} ids, but num_ids is {}",
                        max as u64 + 1,
                        spec.num_ids
                    ),
                ));
            }
        }
        if let Some(v) = spec.default_bucketize_value {
            if v >= spec.num_ids {
                return Err(bad_spec(
                    spec,
                    format!(
                        "default_bucketize_value {v} is not below num_ids {}",
                        spec.num_ids
                    ),
                ));
            }
            self.oov_id = v as u32;
        }
        if self.oov_id as u64 >= spec.num_ids {
            return Err(bad_spec(
                spec,
                format!(
                    "num_ids {} leaves no room for the out-of-vocabulary id",
                    spec.num_ids
                ),
            ));
        }
        Ok(())
    }

    fn init_dense(&mut self, spec: &FeatureSpec) -> Result<()> {
        if let Some(n) = &spec.normalizer {
            let (a, b) = (n.a, n.b);
            self.norm =
                match NormalizerKind::try_from(n.kind).unwrap_or(NormalizerKind::NormalizerNone) {
                    NormalizerKind::NormalizerNone => Norm::None,
                    NormalizerKind::Log10 => Norm::Log10 {
                        threshold: a,
                        fallback: b,
                    },
                    NormalizerKind::Zscore if b == 0.0 || !b.is_finite() => {
                        return Err(bad_spec(
                            spec,
                            "zscore normalizer has a zero or non-finite standard deviation",
                        ))
                    }
                    NormalizerKind::Zscore => Norm::Affine { shift: a, scale: b },
                    NormalizerKind::Minmax if b == a || !(b - a).is_finite() => {
                        return Err(bad_spec(spec, "minmax normalizer has max equal to min"))
                    }
                    NormalizerKind::Minmax => Norm::Affine {
                        shift: a,
                        scale: b - a,
                    },
                };
        }
        let pieces: Vec<&str> = split_pieces(&spec.default_value, &self.separator).collect();
        let parsed: Vec<f64> = pieces
            .iter()
            .map(|p| p.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                bad_spec(
                    spec,
                    format!("default_value `{}` is not a number", spec.default_value),
                )
            })?;
        self.default_dense = match parsed.len() {
            0 => vec![0.0; self.dim],
            1 => vec![parsed[0]; self.dim],
            n if n == self.dim => parsed,
            n => {
                return Err(bad_spec(
                    spec,
                    format!("default_value has {n} numbers, value_dim is {}", self.dim),
                ))
            }
        };
        if let Some(bad) = self
            .default_dense
            .iter()
            .map(|&x| self.norm.apply(x))
            .find(|y| !y.is_finite())
        {
            return Err(bad_spec(
                spec,
                format!("the normalized default value is {bad}"),
            ));
        }
        Ok(())
    }

    fn encode_default(&self, spec: &FeatureSpec) -> Result<Vec<u32>> {
        let d = spec.default_value.as_str();
        let mut out = Vec::new();
        match self.kind {
            FeatureKind::ComboHash => out.push(hash_id(d, self.num_ids)),
            FeatureKind::IdVocab => {
                for p in split_pieces(d, &self.separator) {
                    out.push(match self.vocab.get(p) {
                        Some(&id) => id,
                        None if spec.vocab_dict.is_empty() => VOCAB_DEFAULT_ID,
                        None => self.oov_id,
                    });
                }
            }
            _ => {
                for p in split_pieces(d, &self.separator) {
                    let id = self
                        .id_of(Item::Str(p), 0)
                        .map_err(|e| bad_spec(spec, format!("default_value `{d}`: {e}")))?;
                    out.extend(id);
                }
            }
        }
        Ok(out)
    }

    /// Feature name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sequence group whose steps this feature is part of.
    pub fn sequence_group(&self) -> Option<&str> {
        Some(self.seq_group.as_str()).filter(|g| self.seq_len > 0 && !g.is_empty())
    }

    /// Parquet columns read, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Checks that a column of `shape` can feed this feature; on failure
    /// returns words for what is expected.
    pub fn check_shape(&self, shape: Option<ColumnShape>) -> std::result::Result<(), &'static str> {
        let ok = shape.is_some_and(|s| match self.kind {
            FeatureKind::IdHash
            | FeatureKind::ComboHash
            | FeatureKind::IdNumBuckets
            | FeatureKind::IdVocab => {
                matches!(s.leaf, LeafKind::Int | LeafKind::Str)
            }
            FeatureKind::RawBucketized | FeatureKind::RawDense => {
                matches!(s.leaf, LeafKind::Int | LeafKind::Float | LeafKind::Str)
            }
            FeatureKind::Unspecified => false,
        });
        if ok {
            return Ok(());
        }
        Err(match self.kind {
            FeatureKind::RawBucketized | FeatureKind::RawDense => {
                "numbers (int, float or double), a list of numbers, or strings holding numbers"
            }
            FeatureKind::IdNumBuckets => {
                "integer ids, a list of integer ids, or strings holding integers"
            }
            _ => "integers or strings, or a list of them",
        })
    }

    /// Maps one value to an id; `Ok(None)` skips it (NaN when bucketizing).
    /// Errors carry no location; callers add it.
    #[inline]
    fn id_of(&self, item: Item<'_>, _col: usize) -> std::result::Result<Option<u32>, ItemError> {
        let mut buf = [0u8; 20];
        Ok(Some(match (self.kind, item) {
            (FeatureKind::IdHash | FeatureKind::ComboHash, Item::Str(s)) => {
                hash_id(s, self.num_ids)
            }
            (FeatureKind::IdHash | FeatureKind::ComboHash, Item::Int(v)) => {
                hash_id(format_i64(v, &mut buf), self.num_ids)
            }
            (FeatureKind::IdNumBuckets, Item::Int(v)) => self.check_range(v)?,
            (FeatureKind::IdNumBuckets, Item::Str(s)) => {
                let v = s.trim().parse::<i64>().map_err(|_| ItemError::NotNumber {
                    value: s.to_string(),
                    expected: "an integer id",
                })?;
                self.check_range(v)?
            }
            (FeatureKind::IdVocab, Item::Str(s)) => {
                self.vocab.get(s).copied().unwrap_or(self.oov_id)
            }
            (FeatureKind::IdVocab, Item::Int(v)) => self
                .vocab
                .get(format_i64(v, &mut buf))
                .copied()
                .unwrap_or(self.oov_id),
            (FeatureKind::RawBucketized, item) => {
                let x = number_of(item)?;
                if x.is_nan() {
                    return Ok(None);
                }
                self.boundaries.partition_point(|&b| b <= x) as u32
            }
            (_, item) => {
                return Err(ItemError::NotNumber {
                    value: format!("{item:?}"),
                    expected: "a value this feature reads",
                })
            }
        }))
    }

    #[inline]
    fn check_range(&self, v: i64) -> std::result::Result<u32, ItemError> {
        if v < 0 || v as u64 >= self.num_ids {
            return Err(ItemError::OutOfRange(v));
        }
        Ok(v as u32)
    }

    fn item_error(&self, e: ItemError, col: usize, at: RowLoc) -> DataError {
        let column = self.columns[col].clone();
        match e {
            ItemError::OutOfRange(v) => DataError::IdOutOfRange {
                at,
                column,
                feature: self.name.clone(),
                value: v,
                num_ids: self.num_ids,
            },
            ItemError::NotNumber { value, expected } => DataError::BadValue {
                at,
                column,
                feature: self.name.clone(),
                value,
                expected,
            },
        }
    }

    fn view<'a>(
        &self,
        arr: &'a ArrayRef,
        col: usize,
        loc: &BatchLoc<'_>,
    ) -> Result<ColumnView<'a>> {
        let checked = match self.check_shape(classify(arr.data_type())) {
            Ok(()) => ColumnView::new(arr),
            Err(_) => Err(ViewError::Unsupported),
        };
        checked.map_err(|e| match e {
            ViewError::Unsupported => DataError::WrongType {
                file: loc.file.to_path_buf(),
                column: self.columns[col].clone(),
                found: arr.data_type().to_string(),
                needed_by: format!("feature `{}`", self.name),
                expected: self.check_shape(None).err().unwrap_or("").to_string(),
            },
            ViewError::Overflow(o) => DataError::BadValue {
                at: loc.at(o.item.min(arr.len().saturating_sub(1))),
                column: self.columns[col].clone(),
                feature: self.name.clone(),
                value: o.value.to_string(),
                expected: "an integer below 2^63",
            },
        })
    }

    /// Encodes one record batch's input columns (in [`Self::columns`]
    /// order) into this feature's input for those rows.
    pub fn encode(&self, cols: &[&ArrayRef], loc: &BatchLoc<'_>) -> Result<FeatureInput> {
        if cols.len() != self.columns.len() {
            return Err(DataError::BadSpec {
                feature: self.name.clone(),
                detail: format!(
                    "{} columns given, {} expected",
                    cols.len(),
                    self.columns.len()
                ),
            });
        }
        let views = cols
            .iter()
            .enumerate()
            .map(|(i, a)| self.view(a, i, loc))
            .collect::<Result<Vec<_>>>()?;
        let rows = views[0].rows();
        if self.seq_len > 0 {
            return self.encode_sequence(&views[0], rows, loc);
        }
        match self.kind {
            FeatureKind::RawDense => self.encode_dense(&views[0], rows, loc),
            FeatureKind::ComboHash => self.encode_combo(&views, rows, loc),
            _ => self.encode_ids(&views[0], rows, loc),
        }
    }

    fn encode_ids(
        &self,
        view: &ColumnView<'_>,
        rows: usize,
        loc: &BatchLoc<'_>,
    ) -> Result<FeatureInput> {
        let mut ids = Vec::with_capacity(rows);
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0u32);
        let split = !view.shape.list;
        for r in 0..rows {
            let start = ids.len();
            for i in view.item_range(r) {
                let Some(item) = view.item(i) else { continue };
                match item {
                    Item::Str(s) if split => {
                        for p in split_pieces(s, &self.separator) {
                            let id = self
                                .id_of(Item::Str(p), 0)
                                .map_err(|e| self.item_error(e, 0, loc.at(r)))?;
                            ids.extend(id);
                        }
                    }
                    item => {
                        let id = self
                            .id_of(item, 0)
                            .map_err(|e| self.item_error(e, 0, loc.at(r)))?;
                        ids.extend(id);
                    }
                }
            }
            if ids.len() == start {
                ids.extend_from_slice(&self.default_ids);
            }
            offsets.push(ids.len() as u32);
        }
        Ok(FeatureInput::Ids { ids, offsets })
    }

    fn encode_combo(
        &self,
        views: &[ColumnView<'_>],
        rows: usize,
        loc: &BatchLoc<'_>,
    ) -> Result<FeatureInput> {
        let mut ids = Vec::with_capacity(rows);
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0u32);
        let mut pieces: Vec<Vec<Item<'_>>> = vec![Vec::new(); views.len()];
        let mut idx = vec![0usize; views.len()];
        let mut text = String::new();
        let mut buf = [0u8; 20];
        for r in 0..rows {
            for (v, out) in views.iter().zip(pieces.iter_mut()) {
                out.clear();
                for i in v.item_range(r) {
                    match v.item(i) {
                        Some(Item::Str(s)) if !v.shape.list => {
                            out.extend(split_pieces(s, &self.separator).map(Item::Str))
                        }
                        Some(Item::Str("")) => {}
                        Some(item) => out.push(item),
                        None => {}
                    }
                }
            }
            let start = ids.len();
            if pieces.iter().all(|p| !p.is_empty()) {
                idx.iter_mut().for_each(|i| *i = 0);
                'odometer: loop {
                    text.clear();
                    for (c, p) in pieces.iter().enumerate() {
                        if c > 0 {
                            text.push('_');
                        }
                        match p[idx[c]] {
                            Item::Str(s) => text.push_str(s),
                            Item::Int(v) => text.push_str(format_i64(v, &mut buf)),
                            other => {
                                let e = ItemError::NotNumber {
                                    value: format!("{other:?}"),
                                    expected: "an integer or a string",
                                };
                                return Err(self.item_error(e, c, loc.at(r)));
                            }
                        }
                    }
                    ids.push(hash_id(&text, self.num_ids));
                    for c in (0..idx.len()).rev() {
                        idx[c] += 1;
                        if idx[c] < pieces[c].len() {
                            continue 'odometer;
                        }
                        idx[c] = 0;
                    }
                    break;
                }
            }
            if ids.len() == start {
                ids.extend_from_slice(&self.default_ids);
            }
            offsets.push(ids.len() as u32);
        }
        Ok(FeatureInput::Ids { ids, offsets })
    }

    fn encode_dense(
        &self,
        view: &ColumnView<'_>,
        rows: usize,
        loc: &BatchLoc<'_>,
    ) -> Result<FeatureInput> {
        let dim = self.dim;
        let mut values = Vec::with_capacity(rows * dim);
        let mut row_vals: Vec<f64> = Vec::with_capacity(dim);
        let split = !view.shape.list;
        for r in 0..rows {
            row_vals.clear();
            for i in view.item_range(r) {
                match view.item(i) {
                    Some(Item::Str(s)) if split => {
                        for p in split_pieces(s, &self.separator) {
                            let x = number_of(Item::Str(p))
                                .map_err(|e| self.item_error(e, 0, loc.at(r)))?;
                            row_vals.push(x);
                        }
                    }
                    Some(item) => row_vals
                        .push(number_of(item).map_err(|e| self.item_error(e, 0, loc.at(r)))?),
                    // A null item keeps its position so widths still line up.
                    None if view.shape.list => row_vals.push(f64::NAN),
                    None => {}
                }
            }
            if row_vals.is_empty() {
                row_vals.extend_from_slice(&self.default_dense);
            } else if row_vals.len() != dim {
                return Err(DataError::WrongWidth {
                    at: loc.at(r),
                    column: self.columns[0].clone(),
                    feature: self.name.clone(),
                    found: row_vals.len(),
                    expected: dim,
                });
            }
            for (j, &x) in row_vals.iter().enumerate() {
                let x = if x.is_nan() { self.default_dense[j] } else { x };
                let y = self.norm.apply(x);
                if !y.is_finite() {
                    return Err(DataError::NonFinite {
                        at: loc.at(r),
                        column: self.columns[0].clone(),
                        value: x,
                    });
                }
                values.push(y as f32);
            }
        }
        Ok(FeatureInput::Dense { values, dim })
    }
}

/// A value that cannot be encoded, before its location is known.
#[derive(Debug)]
enum ItemError {
    OutOfRange(i64),
    NotNumber {
        value: String,
        expected: &'static str,
    },
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemError::OutOfRange(v) => write!(f, "id {v} is out of range"),
            ItemError::NotNumber { value, expected } => write!(f, "`{value}` is not {expected}"),
        }
    }
}

#[inline]
fn number_of(item: Item<'_>) -> std::result::Result<f64, ItemError> {
    match item {
        Item::Float(x) => Ok(x),
        Item::Int(v) => Ok(v as f64),
        Item::Bool(b) => Ok(b as u8 as f64),
        Item::Str(s) => s.trim().parse::<f64>().map_err(|_| ItemError::NotNumber {
            value: s.to_string(),
            expected: "a number",
        }),
    }
}

/// Non-empty pieces of `s` split by `sep`.
#[inline]
pub fn split_pieces<'a>(s: &'a str, sep: &'a str) -> Pieces<'a> {
    Pieces { rest: Some(s), sep }
}

/// Iterator of [`split_pieces`]. A one-byte separator (the usual case:
/// `\x1d`, `,`, `|`) is found with a byte scan instead of `str::split`'s
/// substring searcher, whose setup cost dominated short values.
pub struct Pieces<'a> {
    rest: Option<&'a str>,
    sep: &'a str,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        loop {
            let r = self.rest?;
            let found = match self.sep.as_bytes() {
                [] => None,
                [b] => r.as_bytes().iter().position(|x| x == b),
                _ => r.find(self.sep),
            };
            let piece = match found {
                Some(i) => {
                    self.rest = Some(&r[i + self.sep.len()..]);
                    &r[..i]
                }
                None => {
                    self.rest = None;
                    r
                }
            };
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }
}

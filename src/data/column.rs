//! A uniform view of one arrow column as rows of items, so encoders do not
//! care which of arrow's many physical types the parquet writer chose.
//!
//! Scalar columns hold one item per row; list columns (`List`, `LargeList`,
//! `FixedSizeList`) hold several. Items are integers (any width, widened to
//! i64), floats (f32/f64, widened to f64), strings (`Utf8`, `LargeUtf8`,
//! `Utf8View`, or dictionary-encoded strings, which are materialized) or
//! booleans. Hands encoders cheap per-row accessors; no per-row allocation.

use std::borrow::Cow;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, BooleanArray, LargeStringArray, StringArray, StringViewArray};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;

/// What one item of a column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    Int,
    Float,
    Str,
    Bool,
}

/// The shape of a column: its item kind and whether rows are lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnShape {
    pub leaf: LeafKind,
    pub list: bool,
}

impl ColumnShape {
    /// Words for messages, e.g. "a list of strings".
    pub fn describe(&self) -> String {
        let leaf = match self.leaf {
            LeafKind::Int => "integers",
            LeafKind::Float => "floats",
            LeafKind::Str => "strings",
            LeafKind::Bool => "booleans",
        };
        if self.list {
            format!("a list of {leaf}")
        } else {
            leaf.trim_end_matches('s').to_string()
        }
    }
}

fn leaf_kind(dt: &DataType) -> Option<LeafKind> {
    use DataType::*;
    match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => Some(LeafKind::Int),
        Float32 | Float64 => Some(LeafKind::Float),
        Utf8 | LargeUtf8 | Utf8View => Some(LeafKind::Str),
        Boolean => Some(LeafKind::Bool),
        Dictionary(k, v) if k.is_integer() => match leaf_kind(v) {
            Some(LeafKind::Str) => Some(LeafKind::Str),
            _ => None,
        },
        _ => None,
    }
}

/// Classifies an arrow type; `None` for types plec does not read.
pub fn classify(dt: &DataType) -> Option<ColumnShape> {
    use DataType::*;
    match dt {
        List(f) | LargeList(f) | FixedSizeList(f, _) => {
            leaf_kind(f.data_type()).map(|leaf| ColumnShape { leaf, list: true })
        }
        other => leaf_kind(other).map(|leaf| ColumnShape { leaf, list: false }),
    }
}

/// Items of a column, flattened.
pub enum Leaf<'a> {
    Int(Cow<'a, [i64]>),
    Float(Cow<'a, [f64]>),
    Str(StrLeaf<'a>),
    Bool(&'a BooleanArray),
}

/// A string array of any offset width.
pub enum StrLeaf<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
    Owned(StringArray),
}

impl StrLeaf<'_> {
    #[inline]
    pub fn value(&self, i: usize) -> &str {
        match self {
            StrLeaf::Utf8(a) => a.value(i),
            StrLeaf::Large(a) => a.value(i),
            StrLeaf::View(a) => a.value(i),
            StrLeaf::Owned(a) => a.value(i),
        }
    }
}

/// One item of a row, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bool(bool),
}

/// A column viewed as rows of items.
pub struct ColumnView<'a> {
    pub shape: ColumnShape,
    leaf: Leaf<'a>,
    leaf_nulls: Option<NullBuffer>,
    /// For list columns, row `r`'s items are `leaf[offsets[r]..offsets[r+1]]`.
    offsets: Option<Vec<usize>>,
    row_nulls: Option<NullBuffer>,
    rows: usize,
}

/// Why a column could not be viewed: a value too large for i64.
#[derive(Debug)]
pub struct Overflow {
    /// Row of the offending value (from [`ColumnView::new`]).
    pub item: usize,
    pub value: u64,
}

/// Error of [`ColumnView::new`].
#[derive(Debug)]
pub enum ViewError {
    /// The type is not one plec reads.
    Unsupported,
    Overflow(Overflow),
}

macro_rules! widen_int {
    ($arr:expr, $t:ty) => {
        Cow::Owned(
            $arr.as_primitive::<$t>()
                .values()
                .iter()
                .map(|&v| v as i64)
                .collect(),
        )
    };
}

fn leaf_of(arr: &dyn Array) -> Result<(Leaf<'_>, Option<NullBuffer>), ViewError> {
    use DataType::*;
    let nulls = arr.logical_nulls();
    let leaf = match arr.data_type() {
        Int64 => Leaf::Int(Cow::Borrowed(arr.as_primitive::<Int64Type>().values())),
        Int32 => Leaf::Int(widen_int!(arr, Int32Type)),
        Int16 => Leaf::Int(widen_int!(arr, Int16Type)),
        Int8 => Leaf::Int(widen_int!(arr, Int8Type)),
        UInt32 => Leaf::Int(widen_int!(arr, UInt32Type)),
        UInt16 => Leaf::Int(widen_int!(arr, UInt16Type)),
        UInt8 => Leaf::Int(widen_int!(arr, UInt8Type)),
        UInt64 => {
            let values = arr.as_primitive::<UInt64Type>().values();
            let mut out = Vec::with_capacity(values.len());
            for (i, &v) in values.iter().enumerate() {
                let valid = nulls.as_ref().is_none_or(|n| n.is_valid(i));
                if valid && v > i64::MAX as u64 {
                    return Err(ViewError::Overflow(Overflow { item: i, value: v }));
                }
                out.push(v as i64);
            }
            Leaf::Int(Cow::Owned(out))
        }
        Float64 => Leaf::Float(Cow::Borrowed(arr.as_primitive::<Float64Type>().values())),
        Float32 => Leaf::Float(Cow::Owned(
            arr.as_primitive::<Float32Type>()
                .values()
                .iter()
                .map(|&v| v as f64)
                .collect(),
        )),
        Utf8 => Leaf::Str(StrLeaf::Utf8(arr.as_string::<i32>())),
        LargeUtf8 => Leaf::Str(StrLeaf::Large(arr.as_string::<i64>())),
        Utf8View => Leaf::Str(StrLeaf::View(arr.as_string_view())),
        Boolean => Leaf::Bool(arr.as_boolean()),
        Dictionary(_, _) => {
            let owned = materialize_dictionary(arr).ok_or(ViewError::Unsupported)?;
            Leaf::Str(StrLeaf::Owned(owned))
        }
        _ => return Err(ViewError::Unsupported),
    };
    Ok((leaf, nulls))
}

/// Turns a dictionary of strings into a plain string array.
fn materialize_dictionary(arr: &dyn Array) -> Option<StringArray> {
    let dict = arr.as_any_dictionary_opt()?;
    let taken = arrow_select::take::take(dict.values().as_ref(), dict.keys(), None).ok()?;
    match taken.data_type() {
        DataType::Utf8 => Some(taken.as_string::<i32>().clone()),
        DataType::LargeUtf8 => Some(taken.as_string::<i64>().iter().collect()),
        DataType::Utf8View => Some(taken.as_string_view().iter().collect()),
        _ => None,
    }
}

impl<'a> ColumnView<'a> {
    /// Views `arr`; fails for types [`classify`] rejects.
    pub fn new(arr: &'a ArrayRef) -> Result<Self, ViewError> {
        let shape = classify(arr.data_type()).ok_or(ViewError::Unsupported)?;
        let rows = arr.len();
        if !shape.list {
            let (leaf, nulls) = leaf_of(arr.as_ref())?;
            return Ok(ColumnView {
                shape,
                leaf,
                leaf_nulls: nulls.clone(),
                offsets: None,
                row_nulls: nulls,
                rows,
            });
        }
        let row_nulls = arr.logical_nulls();
        let (values, offsets): (&ArrayRef, Vec<usize>) = match arr.data_type() {
            DataType::List(_) => {
                let l = arr.as_list::<i32>();
                (
                    l.values(),
                    l.value_offsets().iter().map(|&o| o as usize).collect(),
                )
            }
            DataType::LargeList(_) => {
                let l = arr.as_list::<i64>();
                (
                    l.values(),
                    l.value_offsets().iter().map(|&o| o as usize).collect(),
                )
            }
            DataType::FixedSizeList(_, n) => {
                let l = arr.as_fixed_size_list();
                let n = (*n).max(0) as usize;
                let base = l.offset() * n;
                (l.values(), (0..=rows).map(|r| base + r * n).collect())
            }
            _ => return Err(ViewError::Unsupported),
        };
        let (leaf, leaf_nulls) = leaf_of(values.as_ref()).map_err(|e| match e {
            // Report the row holding the item, not the flat item index.
            ViewError::Overflow(o) => ViewError::Overflow(Overflow {
                item: offsets.partition_point(|&x| x <= o.item).saturating_sub(1),
                value: o.value,
            }),
            other => other,
        })?;
        Ok(ColumnView {
            shape,
            leaf,
            leaf_nulls,
            offsets: Some(offsets),
            row_nulls,
            rows,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when row `r` is null as a whole.
    #[inline]
    pub fn is_null(&self, r: usize) -> bool {
        self.row_nulls.as_ref().is_some_and(|n| n.is_null(r))
    }

    /// Flat item range of row `r` (empty for a null row).
    #[inline]
    pub fn item_range(&self, r: usize) -> std::ops::Range<usize> {
        if self.is_null(r) {
            return 0..0;
        }
        match &self.offsets {
            Some(o) => o[r]..o[r + 1],
            None => r..r + 1,
        }
    }

    /// Flat item `i`, or `None` when that item is null.
    #[inline]
    pub fn item(&self, i: usize) -> Option<Item<'_>> {
        if self.leaf_nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(match &self.leaf {
            Leaf::Int(v) => Item::Int(v[i]),
            Leaf::Float(v) => Item::Float(v[i]),
            Leaf::Str(s) => Item::Str(s.value(i)),
            Leaf::Bool(b) => Item::Bool(b.value(i)),
        })
    }

    /// The only item of a scalar column's row `r` (`None` if null).
    #[inline]
    pub fn scalar(&self, r: usize) -> Option<Item<'_>> {
        if self.is_null(r) {
            return None;
        }
        self.item(r)
    }
}

/// Writes `v` in decimal into `buf` and returns the digits; avoids a heap
/// allocation per value when hashing integers.
#[inline]
pub fn format_i64(v: i64, buf: &mut [u8; 20]) -> &str {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    // Only ASCII digits and '-' were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

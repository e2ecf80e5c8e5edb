//! Non-feature columns: labels and sample weights (as f32) and grouping
//! keys (as strings), with the checks that keep garbage out of training.

use arrow_array::ArrayRef;

use super::column::{classify, format_i64, ColumnShape, ColumnView, Item, LeafKind};
use super::encode::BatchLoc;
use super::error::{DataError, Result};

/// What a label / weight column must be, for messages.
pub const NUMBER_EXPECTED: &str = "one number per row (int, float, double or bool)";
/// What a grouping-key column must be, for messages.
pub const KEY_EXPECTED: &str = "one integer or string per row";

/// Whether a column of `shape` can be read as labels or weights.
pub fn number_shape_ok(shape: Option<ColumnShape>) -> bool {
    shape.is_some_and(|s| !s.list)
}

/// Whether a column of `shape` can be read as grouping keys.
pub fn key_shape_ok(shape: Option<ColumnShape>) -> bool {
    shape.is_some_and(|s| !s.list && matches!(s.leaf, LeafKind::Int | LeafKind::Str))
}

fn wrong_type(
    arr: &ArrayRef,
    column: &str,
    what: &str,
    expected: &str,
    loc: &BatchLoc<'_>,
) -> DataError {
    DataError::WrongType {
        file: loc.file.to_path_buf(),
        column: column.to_string(),
        found: arr.data_type().to_string(),
        needed_by: what.to_string(),
        expected: expected.to_string(),
    }
}

/// Reads a label or sample-weight column; nulls and non-finite values are
/// errors naming the row. `what` is e.g. "label" or "sample weight".
pub fn read_numbers(
    arr: &ArrayRef,
    column: &str,
    what: &str,
    loc: &BatchLoc<'_>,
) -> Result<Vec<f32>> {
    let view = match ColumnView::new(arr) {
        Ok(v) if number_shape_ok(classify(arr.data_type())) => v,
        _ => return Err(wrong_type(arr, column, what, NUMBER_EXPECTED, loc)),
    };
    let mut out = Vec::with_capacity(view.rows());
    for r in 0..view.rows() {
        let x = match view.scalar(r) {
            None => {
                return Err(DataError::Null {
                    at: loc.at(r),
                    column: column.to_string(),
                    what: format!("a {what}"),
                })
            }
            Some(Item::Float(x)) => x,
            Some(Item::Int(v)) => v as f64,
            Some(Item::Bool(b)) => b as u8 as f64,
            Some(Item::Str(_)) => return Err(wrong_type(arr, column, what, NUMBER_EXPECTED, loc)),
        };
        if !x.is_finite() || !(x as f32).is_finite() {
            return Err(DataError::NonFinite {
                at: loc.at(r),
                column: column.to_string(),
                value: x,
            });
        }
        out.push(x as f32);
    }
    Ok(out)
}

/// Reads a grouping-key column as strings. A null key becomes the empty
/// string, so rows without a key form one group of their own (metrics
/// only; training never reads keys).
pub fn read_keys(arr: &ArrayRef, column: &str, loc: &BatchLoc<'_>) -> Result<Vec<String>> {
    let what = "grouped AUC (grouping key)";
    let view = match ColumnView::new(arr) {
        Ok(v) if key_shape_ok(classify(arr.data_type())) => v,
        _ => return Err(wrong_type(arr, column, what, KEY_EXPECTED, loc)),
    };
    let mut buf = [0u8; 20];
    (0..view.rows())
        .map(|r| match view.scalar(r) {
            Some(Item::Str(s)) => Ok(s.to_string()),
            Some(Item::Int(v)) => Ok(format_i64(v, &mut buf).to_string()),
            None => Ok(String::new()),
            Some(_) => Err(wrong_type(arr, column, what, KEY_EXPECTED, loc)),
        })
        .collect()
}

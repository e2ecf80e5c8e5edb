//! Encoding of sequence features: one id (or `value_dim` numbers) per step.
//!
//! As TorchEasyRec reads fg-encoded sequences
//! (`tzrec/features/feature.py`): a string column is split into steps by
//! `sequence_delim`; a list column gives one step per item. An empty or
//! null row takes the feature's `default_value` split the same way (the
//! lowering makes an empty default `"0"`, as tzrec does), so a row with no
//! history is one default step. A step holds one value: an id, or for a
//! dense feature `value_dim` numbers split by `separator`. Rows longer than
//! `sequence_length` keep their first `sequence_length` steps (the order
//! the history was written in, as TorchEasyRec's feature generator
//! truncates). An empty step (`a;;b`), a step with several ids, a value
//! that is not a number or an id out of range stops the run naming the
//! file, row and column.

use super::{split_pieces, FeatureEncoder, ItemError};
use crate::data::batch::FeatureInput;
use crate::data::column::{ColumnView, Item};
use crate::data::encode::BatchLoc;
use crate::data::error::{DataError, Result};
use crate::proto::plan::FeatureSpec;

/// Steps of one row, before encoding.
enum Steps<'a> {
    Items(Vec<Item<'a>>),
    Default,
}

impl FeatureEncoder {
    /// The encoded default steps of a sequence feature.
    pub(super) fn init_sequence(&mut self, spec: &FeatureSpec) -> Result<()> {
        self.seq_len = spec.sequence_length as usize;
        self.seq_delim = if spec.sequence_delim.is_empty() {
            ";".to_string()
        } else {
            spec.sequence_delim.clone()
        };
        let bad = |detail: String| DataError::BadSpec {
            feature: spec.name.clone(),
            detail,
        };
        let mut ids = Vec::new();
        let mut dense = Vec::new();
        for step in spec.sequence_default_steps(&self.seq_delim) {
            if self.is_dense() {
                let xs = self
                    .step_numbers(Item::Str(step))
                    .map_err(|e| bad(format!("default_value `{}`: {e}", spec.default_value)))?;
                dense.extend(xs);
            } else {
                let id = self
                    .step_id(Item::Str(step))
                    .map_err(|e| bad(format!("default_value `{}`: {e}", spec.default_value)))?;
                ids.push(id);
            }
        }
        ids.truncate(self.seq_len);
        dense.truncate(self.seq_len * self.dim);
        self.seq_default_ids = ids;
        self.seq_default_dense = dense;
        Ok(())
    }

    fn is_dense(&self) -> bool {
        self.kind == crate::proto::plan::FeatureKind::RawDense
    }

    /// The steps of row `r`: list items, or the pieces of a delimited
    /// string (empty pieces kept, so they are reported).
    fn steps<'a>(&self, view: &'a ColumnView<'a>, r: usize) -> Steps<'a> {
        if view.shape.list {
            let items: Vec<Item<'a>> = view.item_range(r).filter_map(|i| view.item(i)).collect();
            return if items.is_empty() {
                Steps::Default
            } else {
                Steps::Items(items)
            };
        }
        match view.scalar(r) {
            None => Steps::Default,
            Some(Item::Str("")) => Steps::Default,
            Some(Item::Str(s)) => {
                Steps::Items(s.split(self.seq_delim.as_str()).map(Item::Str).collect())
            }
            Some(item) => Steps::Items(vec![item]),
        }
    }

    /// The id of one step.
    fn step_id(&self, item: Item<'_>) -> std::result::Result<u32, ItemError> {
        if let Item::Str(s) = item {
            let mut pieces = split_pieces(s, &self.separator);
            match (pieces.next(), pieces.next()) {
                (Some(p), None) => return self.step_id_one(Item::Str(p)),
                (None, _) => {
                    return Err(ItemError::NotNumber {
                        value: s.to_string(),
                        expected: "a step with a value (it is empty)",
                    })
                }
                (Some(_), Some(_)) => {
                    return Err(ItemError::NotNumber {
                        value: s.to_string(),
                        expected: "one id per step (plec reads no multi-value steps)",
                    })
                }
            }
        }
        self.step_id_one(item)
    }

    fn step_id_one(&self, item: Item<'_>) -> std::result::Result<u32, ItemError> {
        match self.id_of(item, 0)? {
            Some(id) => Ok(id),
            // NaN bucketized: the step stays, in the missing-value bucket.
            None => Ok(0),
        }
    }

    /// The `value_dim` numbers of one dense step.
    fn step_numbers(&self, item: Item<'_>) -> std::result::Result<Vec<f64>, ItemError> {
        let xs: Vec<f64> = match item {
            Item::Str(s) => split_pieces(s, &self.separator)
                .map(|p| super::number_of(Item::Str(p)))
                .collect::<std::result::Result<_, _>>()?,
            other => vec![super::number_of(other)?],
        };
        if xs.len() != self.dim {
            return Err(ItemError::NotNumber {
                value: format!("{item:?}"),
                expected: "a step of exactly value_dim numbers",
            });
        }
        Ok(xs
            .into_iter()
            .map(|x| self.norm.apply(if x.is_nan() { 0.0 } else { x }))
            .collect())
    }

    /// Encodes a sequence feature's column: ids (`Ids`, one per step) or
    /// dense steps (`SeqDense`).
    pub(super) fn encode_sequence(
        &self,
        view: &ColumnView<'_>,
        rows: usize,
        loc: &BatchLoc<'_>,
    ) -> Result<FeatureInput> {
        let mut ids = Vec::new();
        let mut values = Vec::new();
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0u32);
        let dense = self.is_dense();
        let mut count = 0u32;
        for r in 0..rows {
            match self.steps(view, r) {
                Steps::Default if dense => {
                    values.extend(self.seq_default_dense.iter().map(|&x| x as f32));
                    count += (self.seq_default_dense.len() / self.dim) as u32;
                }
                Steps::Default => {
                    ids.extend_from_slice(&self.seq_default_ids);
                    count += self.seq_default_ids.len() as u32;
                }
                Steps::Items(items) => {
                    for item in items.into_iter().take(self.seq_len) {
                        if dense {
                            let xs = self
                                .step_numbers(item)
                                .map_err(|e| self.item_error(e, 0, loc.at(r)))?;
                            for x in xs {
                                if !x.is_finite() {
                                    return Err(DataError::NonFinite {
                                        at: loc.at(r),
                                        column: self.columns[0].clone(),
                                        value: x,
                                    });
                                }
                                values.push(x as f32);
                            }
                        } else {
                            ids.push(
                                self.step_id(item)
                                    .map_err(|e| self.item_error(e, 0, loc.at(r)))?,
                            );
                        }
                        count += 1;
                    }
                }
            }
            offsets.push(count);
        }
        Ok(if dense {
            FeatureInput::SeqDense {
                values,
                offsets,
                dim: self.dim,
            }
        } else {
            FeatureInput::Ids { ids, offsets }
        })
    }
}

/// The default steps of a sequence feature spec.
trait DefaultSteps {
    fn sequence_default_steps<'a>(&'a self, delim: &'a str) -> Vec<&'a str>;
}

impl DefaultSteps for FeatureSpec {
    fn sequence_default_steps<'a>(&'a self, delim: &'a str) -> Vec<&'a str> {
        let d = if self.default_value.is_empty() {
            "0"
        } else {
            self.default_value.as_str()
        };
        d.split(delim).collect()
    }
}

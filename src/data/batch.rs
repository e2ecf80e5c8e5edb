//! The unit handed from the data reader to the runtime: one batch of model
//! inputs, already encoded as the plan's feature specs say.

/// Encoded input of one feature for every row of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureInput {
    /// Ids of an embedded feature as bags: the ids of row `r` are
    /// `ids[offsets[r]..offsets[r + 1]]` (`offsets.len() == rows + 1`).
    /// An empty bag pools to an all-zero embedding.
    Ids { ids: Vec<u32>, offsets: Vec<u32> },
    /// Dense values, row-major `[rows, dim]`.
    Dense { values: Vec<f32>, dim: usize },
    /// Dense values of a sequence feature: row `r` has steps
    /// `offsets[r]..offsets[r + 1]`, each `dim` values of `values`.
    SeqDense {
        values: Vec<f32>,
        offsets: Vec<u32>,
        dim: usize,
    },
}

/// One batch of rows, encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    /// One entry per `Plan.features`, in plan order.
    pub features: Vec<FeatureInput>,
    /// One column per `DataSpec.label_fields`, each `rows` long.
    pub labels: Vec<Vec<f32>>,
    /// One column per `DataSpec.sample_weight_fields`, each `rows` long.
    pub sample_weights: Vec<Vec<f32>>,
    /// Grouping-key columns needed by grouped AUC, by column name: the
    /// string form of each row's key.
    pub group_keys: Vec<(String, Vec<String>)>,
}

impl FeatureInput {
    /// Rows `start..end` of this input, offsets rebased to start at 0.
    fn rows(&self, start: usize, end: usize) -> FeatureInput {
        let rebase = |offsets: &[u32]| -> (usize, usize, Vec<u32>) {
            let (lo, hi) = (offsets[start], offsets[end]);
            (
                lo as usize,
                hi as usize,
                offsets[start..=end].iter().map(|o| o - lo).collect(),
            )
        };
        match self {
            FeatureInput::Ids { ids, offsets } => {
                let (lo, hi, offsets) = rebase(offsets);
                FeatureInput::Ids {
                    ids: ids[lo..hi].to_vec(),
                    offsets,
                }
            }
            FeatureInput::Dense { values, dim } => FeatureInput::Dense {
                values: values[start * dim..end * dim].to_vec(),
                dim: *dim,
            },
            FeatureInput::SeqDense {
                values,
                offsets,
                dim,
            } => {
                let (lo, hi, offsets) = rebase(offsets);
                FeatureInput::SeqDense {
                    values: values[lo * dim..hi * dim].to_vec(),
                    offsets,
                    dim: *dim,
                }
            }
        }
    }
}

impl Batch {
    /// Whether every column has `rows` rows and every offset list `rows + 1` ascending
    /// offsets inside its values: what `rows_range` relies on. The reader's batches
    /// always do; a caller that splits a batch checks first.
    pub fn splittable(&self) -> bool {
        let offsets_ok = |offsets: &[u32], len: usize| {
            offsets.len() == self.rows + 1
                && offsets.first() == Some(&0)
                && offsets.windows(2).all(|w| w[0] <= w[1])
                && offsets.last().is_some_and(|&o| o as usize <= len)
        };
        let features_ok = self.features.iter().all(|f| match f {
            FeatureInput::Ids { ids, offsets } => offsets_ok(offsets, ids.len()),
            FeatureInput::Dense { values, dim } => values.len() == self.rows * dim,
            FeatureInput::SeqDense {
                values,
                offsets,
                dim,
            } => *dim > 0 && values.len() % dim == 0 && offsets_ok(offsets, values.len() / dim),
        });
        let columns_ok = self.labels.iter().all(|c| c.len() == self.rows)
            && self.sample_weights.iter().all(|c| c.len() == self.rows)
            && self.group_keys.iter().all(|(_, c)| c.len() == self.rows);
        features_ok && columns_ok
    }

    /// Rows `start..end` as a batch of their own (`start < end <= rows`, on a batch that
    /// is `splittable`).
    pub fn rows_range(&self, start: usize, end: usize) -> Batch {
        Batch {
            rows: end - start,
            features: self.features.iter().map(|f| f.rows(start, end)).collect(),
            labels: self.labels.iter().map(|c| c[start..end].to_vec()).collect(),
            sample_weights: self
                .sample_weights
                .iter()
                .map(|c| c[start..end].to_vec())
                .collect(),
            group_keys: self
                .group_keys
                .iter()
                .map(|(k, v)| (k.clone(), v[start..end].to_vec()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_range_keeps_each_rows_values() {
        let batch = Batch {
            rows: 3,
            features: vec![
                FeatureInput::Ids {
                    ids: vec![1, 2, 3, 4, 5],
                    offsets: vec![0, 2, 2, 5],
                },
                FeatureInput::Dense {
                    values: vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5],
                    dim: 2,
                },
                FeatureInput::SeqDense {
                    values: vec![9.0, 8.0, 7.0],
                    offsets: vec![0, 1, 3, 3],
                    dim: 1,
                },
            ],
            labels: vec![vec![1.0, 0.0, 1.0]],
            sample_weights: vec![vec![0.5, 1.0, 2.0]],
            group_keys: vec![("user".into(), vec!["a".into(), "b".into(), "c".into()])],
        };
        let tail = batch.rows_range(1, 3);
        assert_eq!(tail.rows, 2);
        assert_eq!(
            tail.features[0],
            FeatureInput::Ids {
                ids: vec![3, 4, 5],
                offsets: vec![0, 0, 3]
            }
        );
        assert_eq!(
            tail.features[1],
            FeatureInput::Dense {
                values: vec![1.0, 1.5, 2.0, 2.5],
                dim: 2
            }
        );
        assert_eq!(
            tail.features[2],
            FeatureInput::SeqDense {
                values: vec![8.0, 7.0],
                offsets: vec![0, 2, 2],
                dim: 1
            }
        );
        assert_eq!(tail.labels, vec![vec![0.0, 1.0]]);
        assert_eq!(tail.sample_weights, vec![vec![1.0, 2.0]]);
        assert_eq!(tail.group_keys[0].1, vec!["b".to_string(), "c".to_string()]);
        assert_eq!(batch.rows_range(0, 3), batch);
        assert!(batch.splittable());
        let mut bad = batch.clone();
        bad.labels[0].pop();
        assert!(!bad.splittable());
    }
}

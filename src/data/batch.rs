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

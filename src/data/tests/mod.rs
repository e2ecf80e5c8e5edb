//! Tests of the data path, one file per module.

mod encode;
mod reader;
mod seek;
mod sequence;
mod synth;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::proto::plan::{DataSpec, FeatureKind, FeatureSpec, Plan};

/// Writes `cols` to a parquet file with row groups of `rg_rows` rows.
pub(super) fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>, rg_rows: usize) {
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rg_rows))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

pub(super) fn spec(name: &str, kind: FeatureKind, cols: &[&str], num_ids: u64) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        kind: kind as i32,
        input_columns: cols.iter().map(|c| c.to_string()).collect(),
        num_ids,
        ..Default::default()
    }
}

pub(super) fn plan(features: Vec<FeatureSpec>, labels: &[&str], weights: &[&str]) -> Plan {
    Plan {
        data: Some(DataSpec {
            batch_size: 4,
            label_fields: labels.iter().map(|s| s.to_string()).collect(),
            sample_weight_fields: weights.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        features,
        ..Default::default()
    }
}

pub(super) fn arr<A: arrow_array::Array + 'static>(a: A) -> ArrayRef {
    Arc::new(a)
}

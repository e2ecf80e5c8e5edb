//! `plec export --inputs`: a data file's rows encoded exactly as
//! `plec predict` encodes them, laid out as the exported model's inputs
//! (`export::contract`), so anyone can feed the ONNX model the rows plec
//! scored.

use super::contract::{self, ContractError, InputKind, PAD_ID};
use super::npz::Array;
use crate::data::{DataError, DataSource, FeatureInput, ReadOptions};
use crate::proto::plan::Plan;

/// Why a data file cannot be encoded as model inputs.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// Boxed: a data error carries its file and row, and would make every
    /// `Result` of this module that large.
    #[error(transparent)]
    Data(Box<DataError>),
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("{0}")]
    Rows(String),
}

impl From<DataError> for InputsError {
    fn from(e: DataError) -> Self {
        InputsError::Data(Box::new(e))
    }
}

/// One input's rows as they arrive, before padding.
enum Collected {
    /// Bags: ids and, per row, where its bag ends.
    Bags {
        ids: Vec<i64>,
        ends: Vec<usize>,
    },
    Dense {
        values: Vec<f32>,
        dim: usize,
    },
    /// Dense steps: values and, per row, where its steps end (in steps).
    Steps {
        values: Vec<f32>,
        ends: Vec<usize>,
        dim: usize,
    },
    Domain(Vec<i64>),
}

/// Every row of `source` as the arrays of the model's inputs, named as the
/// inputs; also the number of rows.
pub fn encode(
    plan: &Plan,
    source: &DataSource,
    batch_size: usize,
) -> Result<(Vec<(String, Array)>, usize), InputsError> {
    let inputs = contract::graph_inputs(plan)?;
    let labels = plan
        .data
        .as_ref()
        .map(|d| d.label_fields.clone())
        .unwrap_or_default();
    let mut collected: Vec<Collected> = inputs
        .iter()
        .map(|i| match &i.kind {
            InputKind::Ids { .. } | InputKind::SequenceIds { .. } => Collected::Bags {
                ids: Vec::new(),
                ends: Vec::new(),
            },
            InputKind::Dense { dim, .. } => Collected::Dense {
                values: Vec::new(),
                dim: *dim,
            },
            InputKind::SequenceDense { dim, .. } => Collected::Steps {
                values: Vec::new(),
                ends: Vec::new(),
                dim: *dim,
            },
            InputKind::Domain { .. } => Collected::Domain(Vec::new()),
        })
        .collect();
    let mut rows = 0usize;
    // The rows `plec predict` reads, in its order (no grouping keys: no
    // metric is computed here).
    let mut opts = ReadOptions::eval(batch_size);
    opts.group_keys = false;
    for batch in source.batches(&opts) {
        let batch = batch?;
        for (input, c) in inputs.iter().zip(collected.iter_mut()) {
            let name = &input.name;
            match (&input.kind, c) {
                (
                    InputKind::Ids { feature } | InputKind::SequenceIds { feature, .. },
                    Collected::Bags { ids, ends },
                ) => {
                    let Some(FeatureInput::Ids { ids: got, offsets }) =
                        batch.features.get(*feature)
                    else {
                        return Err(InputsError::Rows(format!(
                            "feature \"{name}\" was not encoded as ids"
                        )));
                    };
                    if offsets.len() != batch.rows + 1 {
                        return Err(InputsError::Rows(format!(
                            "feature \"{name}\" has {} offsets for {} rows",
                            offsets.len(),
                            batch.rows
                        )));
                    }
                    let base = ids.len();
                    ids.extend(got.iter().map(|&v| v as i64));
                    ends.extend(offsets[1..].iter().map(|&o| base + o as usize));
                }
                (InputKind::Dense { feature, .. }, Collected::Dense { values, dim }) => {
                    let Some(FeatureInput::Dense {
                        values: got,
                        dim: d,
                    }) = batch.features.get(*feature)
                    else {
                        return Err(InputsError::Rows(format!(
                            "feature \"{name}\" was not encoded as dense values"
                        )));
                    };
                    if *d != *dim || got.len() != batch.rows * *dim {
                        return Err(InputsError::Rows(format!(
                            "feature \"{name}\" has {} values of width {d} for {} rows of width {dim}",
                            got.len(),
                            batch.rows
                        )));
                    }
                    values.extend_from_slice(got);
                }
                (
                    InputKind::SequenceDense { feature, .. },
                    Collected::Steps { values, ends, dim },
                ) => {
                    let Some(FeatureInput::SeqDense {
                        values: got,
                        offsets,
                        dim: d,
                    }) = batch.features.get(*feature)
                    else {
                        return Err(InputsError::Rows(format!(
                            "feature \"{name}\" was not encoded as dense steps"
                        )));
                    };
                    let steps = offsets.last().copied().unwrap_or(0) as usize;
                    if *d != *dim || offsets.len() != batch.rows + 1 || got.len() != steps * *dim {
                        return Err(InputsError::Rows(format!(
                            "feature \"{name}\" has {} values for {steps} steps of width {dim}",
                            got.len()
                        )));
                    }
                    let base = ends.last().copied().unwrap_or(0);
                    values.extend_from_slice(got);
                    ends.extend(offsets[1..].iter().map(|&o| base + o as usize));
                }
                (InputKind::Domain { label }, Collected::Domain(out)) => {
                    let col = batch.labels.get(*label).ok_or_else(|| {
                        InputsError::Rows(format!("label {} was not read", labels[*label]))
                    })?;
                    for (r, &d) in col.iter().enumerate() {
                        if !(d >= 0.0 && d.fract() == 0.0) {
                            return Err(InputsError::Rows(format!(
                                "label \"{}\" is {d} in row {}: a domain must be an integer >= 0",
                                labels[*label],
                                rows + r
                            )));
                        }
                        out.push(d as i64);
                    }
                }
                _ => {
                    return Err(InputsError::Rows(format!(
                        "input \"{name}\" changed kind while reading"
                    )))
                }
            }
        }
        rows += batch.rows;
    }
    if rows == 0 {
        return Err(InputsError::Rows(
            "the data has no rows; nothing to encode".to_string(),
        ));
    }
    let mut out = Vec::with_capacity(inputs.len());
    for (input, c) in inputs.iter().zip(collected) {
        let array = match (c, &input.kind) {
            (Collected::Bags { ids, ends }, InputKind::SequenceIds { steps, .. }) => {
                pad_bags(&ids, &ends, Some(*steps)).map_err(|(row, n)| {
                    InputsError::Rows(format!(
                        "sequence feature \"{}\" has {n} steps in row {row}, more than its \
                         sequence_length {steps}",
                        input.name
                    ))
                })?
            }
            (Collected::Bags { ids, ends }, _) => pad_bags(&ids, &ends, None)
                .map_err(|_| InputsError::Rows(format!("feature \"{}\" overflows", input.name)))?,
            (Collected::Steps { values, ends, dim }, InputKind::SequenceDense { steps, .. }) => {
                pad_steps(&values, &ends, *steps, dim).map_err(|(row, n)| {
                    InputsError::Rows(format!(
                        "sequence feature \"{}\" has {n} steps in row {row}, more than its \
                         sequence_length {steps}",
                        input.name
                    ))
                })?
            }
            (Collected::Steps { .. }, _) => {
                return Err(InputsError::Rows(format!(
                    "input \"{}\" changed kind while reading",
                    input.name
                )))
            }
            (Collected::Dense { values, dim }, _) => Array::F32 {
                shape: vec![rows, dim],
                data: values,
            },
            (Collected::Domain(values), _) => Array::I64 {
                shape: vec![rows],
                data: values,
            },
        };
        out.push((input.name.clone(), array));
    }
    Ok((out, rows))
}

/// Bags as `[rows, K]` with `PAD_ID` after each row's ids; `K` is `fixed`,
/// or the longest bag (at least 1). Err((row, length)) when a bag is
/// longer than `fixed`.
fn pad_bags(ids: &[i64], ends: &[usize], fixed: Option<usize>) -> Result<Array, (usize, usize)> {
    let mut start = 0usize;
    let mut longest = 0usize;
    for &e in ends {
        longest = longest.max(e - start);
        start = e;
    }
    let k = match fixed {
        Some(k) => {
            if longest > k {
                let mut start = 0usize;
                for (r, &e) in ends.iter().enumerate() {
                    if e - start > k {
                        return Err((r, e - start));
                    }
                    start = e;
                }
            }
            k
        }
        None => longest.max(1),
    };
    let mut data = vec![PAD_ID; ends.len() * k];
    let mut start = 0usize;
    for (r, &e) in ends.iter().enumerate() {
        data[r * k..r * k + (e - start)].copy_from_slice(&ids[start..e]);
        start = e;
    }
    Ok(Array::I64 {
        shape: vec![ends.len(), k],
        data,
    })
}

/// Dense steps as `[rows, steps, dim]`, zero after each row's steps.
/// Err((row, length)) when a row has more than `steps`.
fn pad_steps(
    values: &[f32],
    ends: &[usize],
    steps: usize,
    dim: usize,
) -> Result<Array, (usize, usize)> {
    let mut data = vec![0f32; ends.len() * steps * dim];
    let mut start = 0usize;
    for (r, &e) in ends.iter().enumerate() {
        let n = e - start;
        if n > steps {
            return Err((r, n));
        }
        let row = r * steps * dim;
        data[row..row + n * dim].copy_from_slice(&values[start * dim..e * dim]);
        start = e;
    }
    Ok(Array::F32 {
        shape: vec![ends.len(), steps, dim],
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bags_pad_with_minus_one() {
        let a = pad_bags(&[3, 4, 5], &[1, 1, 3], None).unwrap();
        assert_eq!(
            a,
            Array::I64 {
                shape: vec![3, 2],
                data: vec![3, -1, -1, -1, 4, 5]
            }
        );
        assert_eq!(pad_bags(&[1, 2, 3], &[3], Some(2)), Err((0, 3)));
        let none = pad_bags(&[], &[0, 0], None).unwrap();
        assert_eq!(
            none,
            Array::I64 {
                shape: vec![2, 1],
                data: vec![-1, -1]
            }
        );
    }
}

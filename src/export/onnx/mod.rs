//! `plec export --format onnx`: a plan as an ONNX model, from encoded
//! inputs (the contract in `export::contract`) to every task's logits and
//! probabilities, with the parameters and embedding tables as
//! initializers.
//!
//! A model whose file would pass protobuf's 2 GiB limit keeps its large
//! initializers in ONNX external data, a `<model>.data` file beside it
//! (`write`).
//!
//! IR version 8 and opset 17: every op used here has existed in that form
//! since opset 13 or earlier, and onnxruntime reads IR 8 / opset 17 from
//! version 1.13 on, so any onnxruntime >= 1.17 (and most other runtimes of
//! the last years) runs the file.

mod graph;
mod lower;
pub mod proto;
pub mod write;

use self::proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::export::contract::{self, ContractError, GraphInput, InputKind};
use crate::proto::plan::Plan;

/// The ONNX IR version written (`IR_VERSION_2021_7_30`).
pub const IR_VERSION: i64 = 8;
/// The default-domain opset written.
pub const OPSET: i64 = 17;
/// protobuf refuses messages of 2 GiB and more: a model file stays below
/// (the rest goes to external data, see `write`).
pub const MAX_MODEL_BYTES: u64 = (1 << 31) - 1;

/// Why a plan cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("op \"{op}\" ({kind}) cannot be exported to ONNX: {why}")]
    Unsupported {
        op: String,
        kind: String,
        why: String,
    },
    #[error("the plan is inconsistent: {0}")]
    InvalidPlan(String),
    #[error(transparent)]
    Contract(#[from] ContractError),
}

/// The ONNX model of `plan`.
pub fn to_onnx(plan: &Plan) -> Result<ModelProto, ExportError> {
    let analysis =
        crate::plan::validate::analyze(plan).map_err(|e| ExportError::InvalidPlan(e.0.clone()))?;
    let inputs = contract::graph_inputs(plan)?;
    let mut lowering = lower::Lowering::new(plan, &analysis);
    lowering.declare_inputs(&inputs)?;
    lowering.reserve_outputs()?;
    lowering.lower_ops()?;
    lowering.task_outputs()?;
    let graph = lowering.finish(&format!("plec_{}", plan.model_kind));
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("plec".to_string()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(format!(
            "{} model exported by plec from a plan trained {} steps; inputs are encoded \
             features (see the metadata key plec.inputs and plec's README, \"Serving and scaling out\")",
            plan.model_kind, plan.trained_steps
        )),
        graph: Some(graph),
        metadata_props: metadata(plan, &inputs),
    };
    Ok(model)
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    }
}

/// Where the model came from, and the input contract as JSON (one object
/// per input: its name, type, layout and how the feature is encoded).
fn metadata(plan: &Plan, inputs: &[GraphInput]) -> Vec<StringStringEntryProto> {
    let described: Vec<serde_json::Value> = inputs
        .iter()
        .map(|i| {
            let spec = |f: usize| plan.features.get(f);
            match &i.kind {
                InputKind::Ids { feature } => serde_json::json!({
                    "name": i.name,
                    "dtype": "int64",
                    "shape": ["batch", "K"],
                    "layout": "each row's ids, then -1 up to K",
                    "feature_kind": spec(*feature).map(|s| crate::proto::plan::FeatureKind::try_from(s.kind).map(|k| k.as_str_name()).unwrap_or("?")),
                    "num_ids": spec(*feature).map(|s| s.num_ids),
                    "pooling": spec(*feature).map(|s| if s.pooling == crate::proto::plan::Pooling::Mean as i32 { "mean" } else { "sum" }),
                }),
                InputKind::Dense { dim, .. } => serde_json::json!({
                    "name": i.name,
                    "dtype": "float32",
                    "shape": ["batch", dim],
                    "layout": "normalized values",
                }),
                InputKind::SequenceIds { feature, steps } => serde_json::json!({
                    "name": i.name,
                    "dtype": "int64",
                    "shape": ["batch", steps],
                    "layout": "each row's step ids, then -1",
                    "num_ids": spec(*feature).map(|s| s.num_ids),
                }),
                InputKind::SequenceDense { steps, dim, .. } => serde_json::json!({
                    "name": i.name,
                    "dtype": "float32",
                    "shape": ["batch", steps, dim],
                    "layout": "each row's steps, then zeros",
                }),
                InputKind::Domain { .. } => serde_json::json!({
                    "name": i.name,
                    "dtype": "int64",
                    "shape": ["batch"],
                    "layout": "the domain index whose tower scores the row",
                }),
            }
        })
        .collect();
    vec![
        entry(
            "plec.source_config_sha256",
            plan.source_config_sha256.clone(),
        ),
        entry("plec.model_kind", plan.model_kind.clone()),
        entry("plec.trained_steps", plan.trained_steps.to_string()),
        entry(
            "plec.inputs",
            serde_json::Value::Array(described).to_string(),
        ),
    ]
}

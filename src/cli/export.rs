//! `plec export`: a trained plan as an ONNX model (`--format onnx`) or as
//! TorchEasyRec's state_dict (`--format safetensors`), or a parquet file's
//! rows encoded as the model's inputs (`--inputs`, an `.npz` NumPy reads).
//! Every file is written to a temporary sibling and renamed into place, so
//! a failure leaves nothing behind.

use std::path::PathBuf;

use crate::export::contract::ContractError;
use crate::export::inputs::{self, InputsError};
use crate::export::npz;
use crate::export::onnx::write::{write_model, ExternalData};
use crate::export::onnx::{self, ExportError};
use crate::export::state_dict::write::{write_safetensors, WriteError};
use crate::export::state_dict::NamingError;

use super::run;
use super::{Outcome, RunError};

/// What `plec export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// An ONNX model (IR 8, opset 17): encoded inputs to each task's
    /// logits and probabilities.
    Onnx,
    /// Every table and parameter under the name TorchEasyRec's model of the
    /// same config gives it in its state_dict (f32, PyTorch layouts), with
    /// the feature contract in the header.
    Safetensors,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A plan file (a trained one from `plec run --out`).
    pub plan: PathBuf,
    /// Format of the model file.
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: ExportFormat,
    /// Instead of the model, write these parquet files' rows encoded as the
    /// model's inputs (an .npz of int64 and float32 arrays named after the
    /// inputs, rows in file order, as `plec predict` reads them).
    #[arg(long, num_args = 1..)]
    pub inputs: Vec<String>,
    /// Output file (`model.onnx`, `model.safetensors`, or `inputs.npz`
    /// with --inputs).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Write the parameters and tables to ONNX external data
    /// (`<output>.data` beside the model) even when one file would do;
    /// without it, that happens only past protobuf's 2 GiB limit.
    #[arg(long)]
    pub external_data: bool,
    /// Rows encoded at a time with --inputs (default: the plan's
    /// `eval_batch_size`, else `batch_size`); any size gives the same file.
    #[arg(long)]
    pub batch_size: Option<usize>,
}

fn contract_help(e: &ContractError) -> &'static str {
    match e {
        ContractError::NameClash { .. } => {
            "rename the feature or the tower so that every input and output name is distinct"
        }
        ContractError::MissingDomainLabel { .. } => {
            "recompile the plan from its config with `plec compile`"
        }
    }
}

fn export_error(e: ExportError) -> RunError {
    let help = match &e {
        ExportError::Unsupported { .. } => {
            "this model runs with `plec predict` only; the export covers the ops of the example configs"
        }
        ExportError::InvalidPlan(_) => "recompile the plan from its config with `plec compile`",
        ExportError::Contract(c) => contract_help(c),
    };
    RunError::from_error(e).with_help(help)
}

fn safetensors_error(e: WriteError) -> RunError {
    let help = match &e {
        WriteError::Naming(NamingError::NotRecorded) => {
            "compile the config again with this plec and take the trained values over with \
             `plec run NEW.bin --init-from OLD.bin` (or export from a newer run)"
        }
        WriteError::Naming(_) => {
            "plec names the parameters of PLE, MMoE, DBMTL (mask net included) and PEPNet \
             models whose feature groups are all DEEP and all read by the model (sequence \
             encoders included); \
             `--format onnx` exports every model (see the README's \"Serving and scaling out\")"
        }
        WriteError::Contract(c) => contract_help(c),
        WriteError::InvalidPlan(_) => "recompile the plan from its config with `plec compile`",
        WriteError::Write { .. } => "check that the output's folder exists and is writable",
    };
    RunError::from_error(e).with_help(help)
}

fn inputs_error(e: InputsError) -> RunError {
    match e {
        InputsError::Data(d) => run::data_error(&d),
        InputsError::Contract(c) => {
            let help = contract_help(&c);
            RunError::from_error(c).with_help(help)
        }
        e @ InputsError::Rows(_) => RunError::from_error(e),
    }
}

pub(crate) fn execute(args: &ExportArgs) -> Result<Outcome, RunError> {
    let plan = match run::load_plan(&args.plan, 0)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let write_error = |e: std::io::Error| {
        RunError::new(format!("cannot write {}: {e}", args.output.display()))
            .with_help("check that the output's folder exists and is writable")
    };
    if !args.inputs.is_empty() {
        let batch = run::eval_batch_size(&plan, args.batch_size, None)?;
        let source = run::open_data(&plan, &args.inputs)?;
        let (arrays, rows) = inputs::encode(&plan, &source, batch).map_err(inputs_error)?;
        npz::write_npz(&args.output, &arrays).map_err(write_error)?;
        println!(
            "plec export: {rows} rows -> {}: {}",
            args.output.display(),
            arrays
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(Outcome::Clean);
    }
    match args.format {
        ExportFormat::Safetensors => {
            let written = write_safetensors(&plan, &args.output).map_err(safetensors_error)?;
            println!(
                "plec export: {} ({} tensors, {:.2}M values; TorchEasyRec {} state_dict names)",
                args.output.display(),
                written.tensors,
                written.values as f64 / 1e6,
                plan.model_kind
            );
        }
        ExportFormat::Onnx => {
            let model = onnx::to_onnx(&plan).map_err(export_error)?;
            let names = |v: &[onnx::proto::ValueInfoProto]| {
                v.iter()
                    .filter_map(|i| i.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // Read before the model moves into the writer (its tables are
            // not worth a copy).
            let (nodes, input_names, output_names) = model
                .graph
                .as_ref()
                .map(|g| (g.node.len(), names(&g.input), names(&g.output)))
                .unwrap_or_default();
            let external = if args.external_data {
                ExternalData::Always
            } else {
                ExternalData::Auto
            };
            let written = write_model(model, &args.output, external).map_err(write_error)?;
            let data = match &written.data {
                Some((p, n)) => format!(
                    ", external data {} ({:.1} MB)",
                    p.display(),
                    *n as f64 / 1e6
                ),
                None => String::new(),
            };
            println!(
                "plec export: {} ({:.1} MB{data}; ONNX IR {}, opset {}, {} nodes)\n  inputs: {}\n  outputs: {}",
                args.output.display(),
                written.model_bytes as f64 / 1e6,
                onnx::IR_VERSION,
                onnx::OPSET,
                nodes,
                input_names,
                output_names
            );
        }
    }
    Ok(Outcome::Clean)
}

//! `plec import`: a safetensors `state_dict` (from `plec export --format
//! safetensors`, or saved from TorchEasyRec's model of the same config)
//! into a plan: compile the config, fill its tables and parameters by
//! TorchEasyRec name and shape, write the plan (a temporary sibling
//! renamed into place). What does not match is reported as a warm start
//! (`plec run --init-from`) reports it, and stops the import unless
//! `--allow-partial`.

use std::path::PathBuf;

use crate::export::state_dict::read::{self, ReadError};
use crate::export::state_dict::NamingError;
use crate::plan;

use super::run::{self, WarmLabels};
use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A safetensors file holding the model's state_dict.
    pub file: PathBuf,
    /// The config the parameters belong to (compiled here).
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the plan.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Write the plan even when some tensors are missing from the file or
    /// differ in shape (those keep their initial values).
    #[arg(long)]
    pub allow_partial: bool,
    /// Seed of the initial values of what the file does not fill.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn read_error(e: ReadError) -> RunError {
    let help = match &e {
        ReadError::Naming(NamingError::Unsupported { .. } | NamingError::Unnamed { .. }) => {
            "plec names the parameters of PLE, MMoE, DBMTL (mask net included) and PEPNet \
             models whose feature groups are all DEEP and all read by the model (sequence \
             encoders included) (see the README's \"Serving and scaling out\")"
        }
        ReadError::Invalid { .. } => {
            "pass a file written by `plec export --format safetensors` or by \
             `safetensors.torch.save_file(model.state_dict(), ...)`"
        }
        ReadError::Dtype { .. } => {
            "convert the state_dict to float32 before saving it (`{k: v.float() for k, v in ...}`)"
        }
        _ => "recompile the config with `plec compile` and try again",
    };
    RunError::from_error(e).with_help(help)
}

pub(crate) fn execute(args: &ImportArgs) -> Result<Outcome, RunError> {
    let mut plan = match run::load_plan(&args.config, args.seed)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let bytes = std::fs::read(&args.file)
        .map_err(|e| RunError::new(format!("cannot read {}: {e}", args.file.display())))?;
    let warm = read::import(&mut plan, &bytes, &args.file).map_err(read_error)?;
    let total = warm.copied + warm.mismatched.iter().filter(|e| e.a.is_some()).count();
    run::report_warm_start(
        &warm,
        total,
        &WarmLabels {
            from: &args.file,
            ours: "this config",
            theirs: "file",
            units: "tensors",
            flag: "--allow-partial",
        },
        args.allow_partial,
    )?;
    plan::file::save(&plan, &args.output).map_err(|e| {
        RunError::new(e.to_string())
            .with_help("check that the output's folder exists and is writable")
    })?;
    println!(
        "plec import: {} -> {} ({} tensors, config {})",
        args.file.display(),
        args.output.display(),
        warm.copied,
        args.config.display()
    );
    Ok(Outcome::Clean)
}

//! `plec run --resume DIR`: finds the newest complete checkpoint and
//! reconciles the command line with the settings the run started with.
//!
//! What decides the numbers (the data, the batch size, the seed) must stay
//! as it was, or the resumed run would not be the run that stopped: a flag
//! that changes one of them is an error. Everything else (steps, epochs,
//! evaluation, checkpoint cadence, output directory) may be given again
//! to extend or redirect the run; what is not given is taken from the
//! checkpoint.

use std::path::{Path, PathBuf};

use super::{RunArgs, RunSettings};
use crate::cli::RunError;
use crate::proto::checkpoint::{Checkpoint, RunRecord};
use crate::proto::plan::Plan;
use crate::runtime::checkpoint::dir as ckpt_dir;

/// A checkpoint to continue from, with the plan taken out of it.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub path: PathBuf,
    pub plan: Plan,
    pub checkpoint: Checkpoint,
}

/// Loads the newest complete checkpoint under `arg` (the run's `--out`
/// or its `checkpoints` folder); warns about newer ones that do not verify.
pub(crate) fn load(arg: &Path) -> Result<Resumed, RunError> {
    let dir = ckpt_dir::resolve(arg);
    let (path, mut checkpoint, skipped) = ckpt_dir::newest(&dir).map_err(|e| {
        RunError::from_error(e).with_help(
            "pass the --out directory of a run that wrote checkpoints \
             (every save_checkpoints_steps, or --checkpoint-every)",
        )
    })?;
    for s in skipped {
        eprintln!("warning: skipping {s}");
    }
    let plan = checkpoint
        .plan
        .take()
        .ok_or_else(|| RunError::new(format!("checkpoint {} holds no plan", path.display())))?;
    Ok(Resumed {
        path,
        plan,
        checkpoint,
    })
}

/// Paths as absolute strings (globs too), so a resume from another working
/// directory reads the same files.
pub(crate) fn absolute(inputs: &[String]) -> Vec<String> {
    let cwd = std::env::current_dir().unwrap_or_default();
    inputs
        .iter()
        .map(|s| {
            let p = Path::new(s);
            if p.is_absolute() {
                s.clone()
            } else {
                cwd.join(p).display().to_string()
            }
        })
        .collect()
}

/// The run directory a checkpoint file lies in (`<out>/checkpoints/ckpt-*`):
/// a resume writes there unless `--out` says otherwise, so a run directory
/// that was moved keeps working.
fn run_dir(checkpoint: &Path) -> Option<PathBuf> {
    let dir = checkpoint.parent()?;
    (dir.file_name()? == ckpt_dir::DIR_NAME)
        .then(|| dir.parent().map(Path::to_path_buf))
        .flatten()
}

/// A setting that must not change on resume: an error naming the flag when
/// it was given with another value.
fn keep<T: PartialEq + std::fmt::Debug>(
    flag: &str,
    given: Option<T>,
    recorded: T,
    path: &Path,
) -> Result<T, RunError> {
    match given {
        Some(g) if g != recorded => Err(RunError::new(format!(
            "{flag} {g:?} differs from the {recorded:?} the run in {} started with",
            path.display()
        ))
        .with_help(format!(
            "a resumed run must read the same data the same way to continue exactly; \
             drop {flag}, or start a new run (with --init-from to keep the parameters)"
        ))),
        _ => Ok(recorded),
    }
}

/// The data inputs, evaluation inputs and settings of the resumed run.
pub(crate) fn settings(
    args: &RunArgs,
    r: &Resumed,
    mut base: RunSettings,
) -> Result<(Vec<String>, Vec<String>, RunSettings), RunError> {
    let rec: RunRecord = r.checkpoint.run.clone().unwrap_or_default();
    let given = |v: &[String]| (!v.is_empty()).then(|| absolute(v));
    let data = keep("--data", given(&args.data), rec.data.clone(), &r.path)?;
    let eval = given(&args.eval).unwrap_or(rec.eval.clone());
    base.batch_size = Some(keep(
        "--batch-size",
        args.batch_size.map(|b| b as u64),
        rec.batch_size,
        &r.path,
    )? as usize);
    base.seed = Some(keep("--seed", args.seed, rec.seed, &r.path)?);
    base.eval_batch_size = args
        .eval_batch_size
        .or((rec.eval_batch_size > 0).then_some(rec.eval_batch_size as usize));
    if args.epochs.is_none() && args.steps.is_none() {
        base.epochs = (rec.epochs > 0).then_some(rec.epochs);
        base.steps = (rec.steps > 0).then_some(rec.steps);
    }
    base.eval_every = args
        .eval_every
        .or(rec.has_eval_every.then_some(rec.eval_every));
    base.checkpoint_every = args.checkpoint_every.or(Some(rec.checkpoint_every));
    base.keep_checkpoints = args.keep_checkpoints.or(Some(rec.keep_checkpoints));
    if base.out.is_none() {
        base.out =
            run_dir(&r.path).or_else(|| (!rec.out.is_empty()).then(|| rec.out.clone().into()));
    }
    Ok((data, eval, base))
}

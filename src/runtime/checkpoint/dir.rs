//! The checkpoint directory (`--out/checkpoints`): one file per saved step,
//! `ckpt-<global step, 12 digits>.plecckpt`, so names sort by step; the
//! newest `keep` are kept. A resume takes the newest file that verifies
//! and skips (with a warning) any that do not.

use std::path::{Path, PathBuf};

use super::file::{self, CheckpointError, TEMP_PREFIX};
use crate::proto::checkpoint::Checkpoint;

/// Name of the checkpoint directory inside a run's output directory.
pub(crate) const DIR_NAME: &str = "checkpoints";
const PREFIX: &str = "ckpt-";
const SUFFIX: &str = ".plecckpt";

/// The file name of the checkpoint at `step`.
pub(crate) fn file_name(step: u64) -> String {
    format!("{PREFIX}{step:012}{SUFFIX}")
}

/// The checkpoints in `dir` as (step, path), newest first. A directory
/// that does not exist has none.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let step = name
            .strip_prefix(PREFIX)
            .and_then(|s| s.strip_suffix(SUFFIX))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(step) = step {
            out.push((step, entry.path()));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// The checkpoint directory a `--resume` argument names: the directory
/// itself when it holds checkpoints, else its `checkpoints` folder (the
/// run's `--out`).
pub(crate) fn resolve(arg: &Path) -> PathBuf {
    let inner = arg.join(DIR_NAME);
    match list(arg) {
        Ok(v) if !v.is_empty() => arg.to_path_buf(),
        _ if inner.is_dir() => inner,
        _ => arg.to_path_buf(),
    }
}

/// The newest checkpoint in `dir` that reads and verifies; each newer one
/// that does not is named in `skipped` with the reason.
pub(crate) fn newest(dir: &Path) -> Result<(PathBuf, Checkpoint, Vec<String>), CheckpointError> {
    let found = list(dir)?;
    if found.is_empty() {
        return Err(CheckpointError::NoneFound {
            dir: dir.to_path_buf(),
            why: format!(
                "it holds no {PREFIX}*{SUFFIX} files (checkpoints are written every \
                 save_checkpoints_steps into --out/{DIR_NAME})"
            ),
        });
    }
    let mut skipped = Vec::new();
    for (_, path) in found {
        match file::load(&path) {
            Ok(c) => return Ok((path, c, skipped)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Err(CheckpointError::NoneFound {
        dir: dir.to_path_buf(),
        why: format!("none verifies: {}", skipped.join("; ")),
    })
}

/// Removes all but the newest `keep` checkpoints (0 keeps all) and any
/// temporary file a killed write left behind.
pub(crate) fn prune(dir: &Path, keep: u64) -> Result<(), CheckpointError> {
    if keep > 0 {
        for (_, path) in list(dir)?.into_iter().skip(keep as usize) {
            std::fs::remove_file(&path)
                .map_err(|source| CheckpointError::Write { path, source })?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let stale = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

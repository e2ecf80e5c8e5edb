//! Writes checkpoints on a background thread, so training stalls only for
//! the snapshot (copying parameters and optimizer state off the model),
//! not for encoding, hashing, writing and fsyncing hundreds of megabytes.
//! One write at a time: the trainer waits for the previous write before it
//! takes the next snapshot, and the snapshot is encoded straight into the
//! file, so the extra memory is one snapshot (`plan::memory` counts it).

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use super::{dir, file, CheckpointError};
use crate::proto::checkpoint::Checkpoint;

/// A finished write: the file and the seconds it took.
type Done = Result<(PathBuf, f64), CheckpointError>;

/// The background checkpoint writer of one run.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    keep: u64,
    pending: Option<JoinHandle<Done>>,
}

impl Writer {
    /// A writer into `dir`, keeping the newest `keep` checkpoints (0: all).
    pub(crate) fn new(dir: PathBuf, keep: u64) -> Self {
        Self {
            dir,
            keep,
            pending: None,
        }
    }

    /// Starts writing `c` as the checkpoint of `step`, after the previous
    /// write has finished; returns that previous write's result.
    pub(crate) fn submit(
        &mut self,
        c: Checkpoint,
        step: u64,
    ) -> Result<Option<(PathBuf, f64)>, CheckpointError> {
        let previous = self.wait()?;
        std::fs::create_dir_all(&self.dir).map_err(|source| CheckpointError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let (dir, keep) = (self.dir.clone(), self.keep);
        self.pending = Some(std::thread::spawn(move || {
            let t0 = Instant::now();
            let path = dir.join(dir::file_name(step));
            file::save(&c, &path)?;
            drop(c);
            dir::prune(&dir, keep)?;
            Ok((path, t0.elapsed().as_secs_f64()))
        }));
        Ok(previous)
    }

    /// Waits for the write in progress; its file and seconds, if any.
    pub(crate) fn wait(&mut self) -> Result<Option<(PathBuf, f64)>, CheckpointError> {
        match self.pending.take() {
            None => Ok(None),
            Some(h) => match h.join() {
                Ok(done) => done.map(Some),
                Err(_) => Err(CheckpointError::Write {
                    path: self.dir.clone(),
                    source: std::io::Error::other("the checkpoint writer thread panicked"),
                }),
            },
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A run that fails still finishes the write it started: the file
        // is then complete, never half there.
        let _ = self.wait();
    }
}

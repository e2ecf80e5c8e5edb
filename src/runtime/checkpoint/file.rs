//! The checkpoint file envelope, as the plan's (see `plan::file`): 8-byte
//! magic `PLECCKPT`, u32 LE format version, u64 LE payload length, 32-byte
//! SHA-256 of the payload, then the prost-encoded `Checkpoint`. A file cut
//! short or corrupted is recognized before anything is decoded.
//!
//! Writing is atomic and durable: a temporary file in the same directory,
//! fsync, rename, then fsync of the directory, so after a crash a
//! checkpoint is either complete or not there at all.

use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::proto::checkpoint::Checkpoint;

/// Identifies a plec checkpoint file.
pub(crate) const MAGIC: &[u8; 8] = b"PLECCKPT";
/// Current checkpoint format version; loaders refuse anything newer.
pub(crate) const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 32;
/// Prefix of the temporary files a write goes through.
pub(crate) const TEMP_PREFIX: &str = ".tmp-ckpt-";

/// A checkpoint that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a plec checkpoint: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{path} has checkpoint format version {found}, newer than this plec supports ({FORMAT_VERSION}); upgrade plec")]
    NewerVersion { path: PathBuf, found: u32 },
    #[error("no complete checkpoint in {dir}: {why}")]
    NoneFound { dir: PathBuf, why: String },
    #[error("the checkpoint {path} does not fit this run: {why}")]
    Mismatch { path: PathBuf, why: String },
}

/// Encodes a checkpoint into the envelope bytes (tests compare `save`'s
/// streamed file with it).
#[cfg(test)]
pub(crate) fn encode(ckpt: &Checkpoint) -> Vec<u8> {
    let payload = ckpt.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

/// Decodes envelope bytes; `path` only names the file in errors.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let invalid = |why: String| CheckpointError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(invalid("it does not start with the PLECCKPT magic".into()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(invalid(format!(
            "it is truncated ({} bytes, the header alone is {HEADER_LEN})",
            bytes.len()
        )));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version > FORMAT_VERSION {
        return Err(CheckpointError::NewerVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let expected = HEADER_LEN as u64 + u64::from_le_bytes(len);
    if bytes.len() as u64 != expected {
        return Err(invalid(format!(
            "it is truncated or padded ({} bytes, {expected} expected)",
            bytes.len()
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != &bytes[20..52] {
        return Err(invalid(
            "its checksum does not match its contents (corrupted)".into(),
        ));
    }
    Checkpoint::decode(payload).map_err(|e| invalid(format!("it does not decode: {e}")))
}

/// Reads and verifies a checkpoint file.
pub(crate) fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// Writes `ckpt` to `path` atomically and durably (see the module doc).
pub(crate) fn save(ckpt: &Checkpoint, path: &Path) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(err)?;
    // Streamed into the file: an encoded copy in memory would double (with
    // the envelope, triple) what the writer holds while training goes on.
    crate::plan::file::write_envelope(ckpt, MAGIC, FORMAT_VERSION, tmp.as_file_mut())
        .map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    sync_dir(dir).map_err(err)
}

/// Makes a rename in `dir` durable (a no-op where directories cannot be
/// opened, as on Windows).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::checkpoint::Progress;

    fn sample() -> Checkpoint {
        Checkpoint {
            format_version: FORMAT_VERSION,
            progress: Some(Progress {
                run_steps: 7,
                seed: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_damage_is_detected() {
        let path = Path::new("ckpt-x.plecckpt");
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes, path).unwrap(), sample());
        let msg = |b: &[u8]| decode(b, path).unwrap_err().to_string();
        assert!(msg(&bytes[..bytes.len() - 1]).contains("truncated"));
        assert!(msg(&bytes[..10]).contains("truncated"));
        assert!(msg(b"").contains("magic"));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(msg(&flipped).contains("checksum"));
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert!(msg(&newer).contains("upgrade plec"));
        assert!(msg(&newer).contains("ckpt-x.plecckpt"));
    }

    /// `save` streams the message into the file; the bytes are exactly
    /// the envelope `encode` builds in memory, and a data position (with
    /// its pending rows) survives the trip.
    #[test]
    fn saved_bytes_are_the_encoded_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = sample();
        if let Some(p) = c.progress.as_mut() {
            p.data = Some(crate::proto::checkpoint::DataPosition {
                file: 1,
                row: 3,
                pending_files: vec![0, 2],
                pending_rows: vec![9, 4],
                skip: 2,
                ..Default::default()
            });
        }
        let path = dir.path().join("ckpt.plecckpt");
        save(&c, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, encode(&c));
        assert_eq!(load(&path).unwrap(), c);
    }

    #[test]
    fn save_is_atomic_and_prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for step in [5, 10, 15] {
            save(
                &sample(),
                &dir.path().join(super::super::dir::file_name(step)),
            )
            .unwrap();
        }
        // A write killed half way leaves only a temporary file.
        std::fs::write(dir.path().join(format!("{TEMP_PREFIX}abc")), b"half").unwrap();
        std::fs::write(
            dir.path().join(super::super::dir::file_name(20)),
            b"PLECCKPT",
        )
        .unwrap();
        let (path, c, skipped) = super::super::dir::newest(dir.path()).unwrap();
        assert!(path.ends_with(super::super::dir::file_name(15)));
        assert_eq!(c, sample());
        assert_eq!(
            skipped.len(),
            1,
            "the damaged newest one is skipped: {skipped:?}"
        );
        super::super::dir::prune(dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                super::super::dir::file_name(15),
                super::super::dir::file_name(20)
            ]
        );
    }
}

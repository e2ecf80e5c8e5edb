//! The plan file envelope.
//!
//! Layout: 8-byte magic `PLECPLAN`, u32 LE format version, u64 LE payload
//! length, 32-byte SHA-256 of the payload, then the prost-encoded `Plan`.
//! The envelope lets a loader reject truncated, corrupted, empty or newer
//! files with a precise message before decoding anything.

use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::proto::plan::Plan;

/// Identifies a plec plan file.
pub const MAGIC: &[u8; 8] = b"PLECPLAN";
/// Current plan format version; loaders refuse anything newer.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 32;

#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write plan {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty, not a plec plan")]
    Empty { path: PathBuf },
    #[error("{path} is not a plec plan (it does not start with the PLECPLAN magic)")]
    BadMagic { path: PathBuf },
    #[error("{path} is truncated: expected {expected} bytes, found {found}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path} has plan format version {found}, newer than this plec supports ({supported}); upgrade plec")]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} is corrupted: its checksum does not match its contents")]
    Checksum { path: PathBuf },
    #[error("{path} is corrupted: {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
}

/// Encodes a plan into the envelope bytes.
pub fn encode(plan: &Plan) -> Vec<u8> {
    let payload = plan.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

/// Decodes envelope bytes; `path` only names the file in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Plan, PlanFileError> {
    let path = path.to_path_buf();
    if bytes.is_empty() {
        return Err(PlanFileError::Empty { path });
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(PlanFileError::BadMagic { path });
    }
    if bytes.len() < HEADER_LEN {
        return Err(PlanFileError::Truncated {
            path,
            expected: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version > FORMAT_VERSION {
        return Err(PlanFileError::NewerVersion {
            path,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[12..20]);
    let payload_len = u64::from_le_bytes(len_bytes);
    let expected = HEADER_LEN as u64 + payload_len;
    if bytes.len() as u64 != expected {
        return Err(PlanFileError::Truncated {
            path,
            expected,
            found: bytes.len() as u64,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != &bytes[20..52] {
        return Err(PlanFileError::Checksum { path });
    }
    Plan::decode(payload).map_err(|source| PlanFileError::Decode { path, source })
}

/// Reads and verifies a plan file.
pub fn load(path: &Path) -> Result<Plan, PlanFileError> {
    let bytes = std::fs::read(path).map_err(|source| PlanFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// Writes a plan atomically: a temporary file in the same directory, then a
/// rename, so a crash never leaves a half-written plan behind.
pub fn save(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    write_atomic(path, &encode(plan)).map_err(|source| PlanFileError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

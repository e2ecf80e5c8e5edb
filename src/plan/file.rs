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
    out.extend_from_slice(&header(
        MAGIC,
        FORMAT_VERSION,
        payload.len() as u64,
        &Sha256::digest(&payload).into(),
    ));
    out.extend_from_slice(&payload);
    out
}

/// The envelope header for a payload of `len` bytes with digest `sha`.
fn header(magic: &[u8; 8], version: u32, len: u64, sha: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..20].copy_from_slice(&len.to_le_bytes());
    h[20..].copy_from_slice(sha);
    h
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
///
/// The payload is encoded straight into the file (through a small buffer
/// that also feeds the digest) instead of into a second in-memory copy: a
/// trained plan holds every embedding table, and a copy of it would be the
/// run's peak memory.
pub fn save(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    save_streaming(plan, path).map_err(|source| PlanFileError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn save_streaming(plan: &Plan, path: &Path) -> std::io::Result<()> {
    let mut tmp = temp_sibling(path)?;
    write_envelope(plan, MAGIC, FORMAT_VERSION, tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `msg` into the empty file `out` in this envelope layout (with
/// `magic` and `version`: checkpoints share it), encoding straight into the
/// file rather than into an in-memory copy of the payload.
pub fn write_envelope<M: Message>(
    msg: &M,
    magic: &[u8; 8],
    version: u32,
    out: &mut std::fs::File,
) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let len = msg.encoded_len() as u64;
    // The digest is only known at the end: write it over the placeholder.
    out.write_all(&header(magic, version, len, &[0; 32]))?;
    let mut sink = HashingSink::new(out);
    msg.encode(&mut sink)
        .map_err(|e| std::io::Error::other(format!("encoding: {e}")))?;
    let (sha, written) = sink.finish()?;
    if written != len {
        return Err(std::io::Error::other(format!(
            "the message encoded to {written} bytes, {len} expected"
        )));
    }
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header(magic, version, len, &sha))?;
    Ok(())
}

/// A prost output buffer that writes full chunks to a file and hashes them.
struct HashingSink<'a> {
    out: &'a mut std::fs::File,
    hash: Sha256,
    buf: Box<[u8]>,
    pos: usize,
    written: u64,
    error: Option<std::io::Error>,
}

const SINK_CHUNK: usize = 1 << 20;

impl<'a> HashingSink<'a> {
    fn new(out: &'a mut std::fs::File) -> Self {
        Self {
            out,
            hash: Sha256::new(),
            buf: vec![0u8; SINK_CHUNK].into_boxed_slice(),
            pos: 0,
            written: 0,
            error: None,
        }
    }

    fn flush_chunk(&mut self) {
        use std::io::Write;
        let chunk = &self.buf[..self.pos];
        self.hash.update(chunk);
        self.written += chunk.len() as u64;
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(chunk) {
                self.error = Some(e);
            }
        }
        self.pos = 0;
    }

    /// Flushes the rest; the payload's digest and length, or the first
    /// write error.
    fn finish(mut self) -> std::io::Result<([u8; 32], u64)> {
        self.flush_chunk();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok((self.hash.clone().finalize().into(), self.written)),
        }
    }
}

// SAFETY: `chunk_mut` always hands out the initialized, unfilled tail of
// `buf` (never empty: a full buffer is flushed first), and `advance_mut`
// only moves `pos` within it (prost advances by at most what it wrote
// into the chunk it was given).
unsafe impl prost::bytes::BufMut for HashingSink<'_> {
    fn remaining_mut(&self) -> usize {
        usize::MAX - self.written as usize - self.pos
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.pos = (self.pos + cnt).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.flush_chunk();
        }
    }

    fn chunk_mut(&mut self) -> &mut prost::bytes::buf::UninitSlice {
        if self.pos == self.buf.len() {
            self.flush_chunk();
        }
        prost::bytes::buf::UninitSlice::new(&mut self.buf[self.pos..])
    }
}

/// A temporary file next to `path` (same file system, so the rename is
/// atomic).
fn temp_sibling(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::NamedTempFile::new_in(dir)
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = temp_sibling(path)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

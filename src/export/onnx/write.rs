//! Writing an ONNX model to disk: one file while it stays under
//! protobuf's 2 GiB limit, else (or when asked) the model plus ONNX
//! external data — the large initializers' bytes in `<model file>.data`
//! beside it, each initializer pointing at its offset and length (the
//! layout `onnx.save_model(..., save_as_external_data=True)` writes, which
//! onnxruntime and the onnx checker read). Both files go through temporary
//! siblings and renames: a failure leaves neither.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use super::proto::{ModelProto, StringStringEntryProto};
use super::MAX_MODEL_BYTES;

/// Initializers smaller than this stay in the model file: constants and
/// biases are not worth a seek, and a model of them only stays readable.
pub const EXTERNAL_MIN_BYTES: usize = 1024;

/// Offsets in the data file are multiples of this (onnx's own writer
/// aligns large tensors so they can be memory-mapped).
const ALIGN: u64 = 4096;

/// When the initializers go to an external data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalData {
    /// Only when the single file would pass 2 GiB.
    Auto,
    /// Always (for tests, or runtimes that map the weights).
    Always,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the model file.
    pub model_bytes: u64,
    /// The external data file and its size, when one was written.
    pub data: Option<(PathBuf, u64)>,
}

/// The data file of model file `path`: `model.onnx` -> `model.onnx.data`.
pub fn data_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".data");
    path.with_file_name(name)
}

fn temp_sibling(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::NamedTempFile::new_in(dir)
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    }
}

/// Writes `model` to `path` (see the module doc).
pub fn write_model(
    mut model: ModelProto,
    path: &Path,
    external: ExternalData,
) -> std::io::Result<Written> {
    let inline = external == ExternalData::Auto && model.encoded_len() as u64 <= MAX_MODEL_BYTES;
    if inline {
        let bytes = model.encode_to_vec();
        crate::plan::file::write_atomic(path, &bytes)?;
        return Ok(Written {
            model_bytes: bytes.len() as u64,
            data: None,
        });
    }
    let data_file = data_path(path);
    let location = data_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut data_tmp = temp_sibling(&data_file)?;
    let mut offset = 0u64;
    {
        let mut out = std::io::BufWriter::new(data_tmp.as_file_mut());
        if let Some(graph) = model.graph.as_mut() {
            for init in &mut graph.initializer {
                let big = init.raw_data.as_ref().map_or(0, Vec::len) >= EXTERNAL_MIN_BYTES;
                if !big {
                    continue;
                }
                let Some(bytes) = init.raw_data.take() else {
                    continue;
                };
                let pad = (ALIGN - offset % ALIGN) % ALIGN;
                out.write_all(&vec![0u8; pad as usize])?;
                offset += pad;
                out.write_all(&bytes)?;
                init.external_data = vec![
                    entry("location", location.clone()),
                    entry("offset", offset.to_string()),
                    entry("length", bytes.len().to_string()),
                ];
                init.data_location = Some(1);
                offset += bytes.len() as u64;
            }
        }
        out.flush()?;
    }
    let bytes = model.encode_to_vec();
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(std::io::Error::other(format!(
            "the model's graph alone is {} bytes, over protobuf's 2 GiB limit",
            bytes.len()
        )));
    }
    data_tmp.as_file().sync_all()?;
    let mut model_tmp = temp_sibling(path)?;
    model_tmp.write_all(&bytes)?;
    model_tmp.as_file().sync_all()?;
    // The data first: a model file never points at a missing data file.
    data_tmp.persist(&data_file).map_err(|e| e.error)?;
    model_tmp.persist(path).map_err(|e| e.error)?;
    Ok(Written {
        model_bytes: bytes.len() as u64,
        data: Some((data_file, offset)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_sits_beside_the_model() {
        assert_eq!(
            data_path(Path::new("out/model.onnx")),
            Path::new("out/model.onnx.data")
        );
        assert_eq!(data_path(Path::new("m.onnx")), Path::new("m.onnx.data"));
    }
}

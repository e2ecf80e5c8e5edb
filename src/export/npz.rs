//! NumPy `.npz` files (a zip of `.npy` arrays, stored uncompressed, as
//! `numpy.savez` writes them): what `numpy.load` reads with nothing else
//! installed.

use std::io::Write;
use std::path::Path;

/// One array: row-major values and their shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    I64 { shape: Vec<usize>, data: Vec<i64> },
    F32 { shape: Vec<usize>, data: Vec<f32> },
}

impl Array {
    fn shape(&self) -> &[usize] {
        match self {
            Array::I64 { shape, .. } | Array::F32 { shape, .. } => shape,
        }
    }
}

/// The `.npy` (format 1.0) encoding of `a`.
pub fn npy_bytes(a: &Array) -> Vec<u8> {
    let descr = match a {
        Array::I64 { .. } => "<i8",
        Array::F32 { .. } => "<f4",
    };
    let dims: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces and
    // ended by a newline to a multiple of 64 bytes, as the format asks.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match a {
        Array::I64 { data, .. } => data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Array::F32 { data, .. } => data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
    }
    out
}

/// Writes `arrays` to `path` as an `.npz`, through a temporary sibling file
/// and a rename, so a failure leaves no partial file.
pub fn write_npz(path: &Path, arrays: &[(String, Array)]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut zip = zip::ZipWriter::new(tmp.reopen()?);
    for (name, a) in arrays {
        let bytes = npy_bytes(a);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u32::MAX as u64);
        zip.start_file(format!("{name}.npy"), options)
            .map_err(std::io::Error::other)?;
        zip.write_all(&bytes)?;
    }
    let file = zip.finish().map_err(std::io::Error::other)?;
    file.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_padded_to_64_bytes() {
        let a = Array::I64 {
            shape: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, -1],
        };
        let b = npy_bytes(&a);
        let len = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + len]).unwrap();
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        assert!(header.ends_with('\n'));
        assert_eq!(b.len(), 10 + len + 6 * 8);
        let one = npy_bytes(&Array::F32 {
            shape: vec![4],
            data: vec![0.0; 4],
        });
        let len = u16::from_le_bytes([one[8], one[9]]) as usize;
        assert!(std::str::from_utf8(&one[10..10 + len])
            .unwrap()
            .contains("'shape': (4,)"));
    }
}

//! Checks of a parquet footer that the parquet crate makes with asserts
//! (panics) or not at all, made here when a file is opened so that a
//! corrupted file is refused with a clear error before any page is read.
//! Each check was found by fuzzing `parquet_read` (`fuzz/regressions/`).

use std::path::Path;

use parquet::file::metadata::ParquetMetaData;

use super::error::{DataError, Result};

/// Every column chunk must lie inside the file: a negative start or
/// length panics in `ColumnChunkMetaData::byte_range`, and one past the
/// end makes the reader ask for more bytes than the file has.
pub(super) fn check(md: &ParquetMetaData, file_len: u64, path: &Path) -> Result<()> {
    for (g, rg) in md.row_groups().iter().enumerate() {
        for c in rg.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let len = c.compressed_size();
            let inside = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(s, l)| s.checked_add(l))
                .is_some_and(|end| end <= file_len);
            if !inside {
                return Err(DataError::NotParquet {
                    file: path.to_path_buf(),
                    detail: format!(
                        "its footer places column `{}` of row group {g} at bytes {start}..+{len}, \
                         outside the {file_len}-byte file",
                        c.column_path()
                    ),
                });
            }
        }
    }
    Ok(())
}

//! Reads one row group of a parquet file through the parquet crate's
//! arrow reader, with every page checked before the crate decodes it.
//!
//! The crate trusts some page contents and panics on a few malformed
//! pages instead of returning an error (found by fuzzing `parquet_read`,
//! `fuzz/regressions/parquet_read/`): a dictionary page that declares no
//! values but holds bytes (a division by zero in its byte-array decoder),
//! a bit-packed run of definition levels longer than the bytes behind it
//! (an out-of-bounds bit range in arrow-buffer), a v1 page whose
//! bit-packed levels need more bytes than the page has, and a v2 page whose
//! null count disagrees with its definition levels (the same division).
//! Each page passes through [`check_page`] on its way from the page reader
//! to the decoders, so a damaged file is an error naming the row group and
//! the column, the data is decompressed once, and valid files read exactly
//! as before.

use std::fs::File;
use std::sync::{Arc, OnceLock};

use arrow_array::RecordBatch;

use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, RowGroups, RowSelection,
};
use parquet::arrow::{parquet_to_arrow_field_levels, ProjectionMask};
use parquet::basic::Encoding;
use parquet::column::page::{Page, PageIterator, PageMetadata, PageReader};
use parquet::errors::{ParquetError, Result as PqResult};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::serialized_reader::SerializedPageReader;

/// Record batches of one row group; an error is a page check's finding
/// (naming the column) or the crate's message. The caller names the file
/// and row group.
pub(crate) struct CheckedReader {
    inner: ParquetRecordBatchReader,
    /// The first page check that failed: the crate wraps it in its own
    /// error types, so it is kept here to be reported as it was found.
    fault: Arc<OnceLock<String>>,
}

impl Iterator for CheckedReader {
    type Item = Result<RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.inner.next()?;
        Some(next.map_err(|e| match self.fault.get() {
            Some(found) => found.clone(),
            None => e.to_string(),
        }))
    }
}

/// A record-batch reader over row group `row_group` of `file`, reading the
/// root columns `projection`, `batch_size` rows at a time, only the rows
/// `selection` picks when given.
pub(crate) fn row_group_reader(
    file: File,
    meta: &ArrowReaderMetadata,
    projection: &[usize],
    row_group: usize,
    batch_size: usize,
    selection: Option<RowSelection>,
) -> Result<CheckedReader, String> {
    let metadata = Arc::clone(meta.metadata());
    if row_group >= metadata.num_row_groups() {
        return Err(format!(
            "the file has {} row groups, no row group {row_group}",
            metadata.num_row_groups()
        ));
    }
    let mask = ProjectionMask::roots(meta.parquet_schema(), projection.iter().copied());
    let levels = parquet_to_arrow_field_levels(
        meta.parquet_schema(),
        mask.clone(),
        Some(meta.schema().fields()),
    )
    .map_err(|e| e.to_string())?;
    let rows = usize::try_from(metadata.row_group(row_group).num_rows()).unwrap_or(0);
    let fault = Arc::new(OnceLock::new());
    let groups = CheckedRowGroup {
        file: Arc::new(file),
        metadata,
        row_group,
        rows,
        fault: Arc::clone(&fault),
    };
    // As the crate's own builder does: no buffer larger than the group.
    let batch_size = batch_size.clamp(1, rows.max(1));
    let inner =
        ParquetRecordBatchReader::try_new_with_row_groups(&levels, &groups, batch_size, selection)
            .map_err(|e| fault.get().cloned().unwrap_or_else(|| e.to_string()))?;
    Ok(CheckedReader { inner, fault })
}

/// One row group of a file whose column chunks hand out checked pages.
struct CheckedRowGroup {
    file: Arc<File>,
    metadata: Arc<ParquetMetaData>,
    row_group: usize,
    rows: usize,
    fault: Arc<OnceLock<String>>,
}

impl RowGroups for CheckedRowGroup {
    fn num_rows(&self) -> usize {
        self.rows
    }

    fn column_chunks(&self, i: usize) -> PqResult<Box<dyn PageIterator>> {
        let rg = self.metadata.row_group(self.row_group);
        let chunk = rg.column(i);
        let descr = chunk.column_descr();
        let levels = Levels {
            max_def: descr.max_def_level(),
            max_rep: descr.max_rep_level(),
        };
        let column = chunk.column_path().string();
        let pages = SerializedPageReader::new(Arc::clone(&self.file), chunk, self.rows, None)?;
        let reader: Box<dyn PageReader> = Box::new(CheckedPages {
            inner: pages,
            levels,
            column,
            fault: Arc::clone(&self.fault),
        });
        Ok(Box::new(OneChunk(Some(reader))))
    }

    fn row_groups(&self) -> Box<dyn Iterator<Item = &RowGroupMetaData> + '_> {
        Box::new(std::iter::once(self.metadata.row_group(self.row_group)))
    }

    fn metadata(&self) -> &ParquetMetaData {
        &self.metadata
    }
}

/// The page readers of one column across the (single) row group.
struct OneChunk(Option<Box<dyn PageReader>>);

impl Iterator for OneChunk {
    type Item = PqResult<Box<dyn PageReader>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.take().map(Ok)
    }
}

impl PageIterator for OneChunk {}

/// A page reader that checks each page it hands to the decoders.
struct CheckedPages<R> {
    inner: R,
    levels: Levels,
    column: String,
    fault: Arc<OnceLock<String>>,
}

impl<R: PageReader> CheckedPages<R> {
    fn checked(&self, page: Option<Page>) -> PqResult<Option<Page>> {
        if let Some(page) = &page {
            check_page(page, self.levels).map_err(|why| {
                let found = format!("column `{}`: {why}", self.column);
                let _ = self.fault.set(found.clone());
                ParquetError::General(found)
            })?;
        }
        Ok(page)
    }
}

impl<R: PageReader> Iterator for CheckedPages<R> {
    type Item = PqResult<Page>;

    fn next(&mut self) -> Option<Self::Item> {
        self.get_next_page().transpose()
    }
}

impl<R: PageReader> PageReader for CheckedPages<R> {
    fn get_next_page(&mut self) -> PqResult<Option<Page>> {
        let page = self.inner.get_next_page()?;
        self.checked(page)
    }

    fn peek_next_page(&mut self) -> PqResult<Option<PageMetadata>> {
        self.inner.peek_next_page()
    }

    fn skip_next_page(&mut self) -> PqResult<()> {
        self.inner.skip_next_page()
    }

    fn supports_deferred_dictionary(&self) -> bool {
        self.inner.supports_deferred_dictionary()
    }

    fn take_deferred_dictionary(&mut self) -> PqResult<Option<Page>> {
        let page = self.inner.take_deferred_dictionary()?;
        self.checked(page)
    }

    fn at_record_boundary(&mut self) -> PqResult<bool> {
        self.inner.at_record_boundary()
    }
}

/// The highest definition and repetition levels of a column.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Levels {
    pub max_def: i16,
    pub max_rep: i16,
}

/// What makes a page unsafe to hand to the parquet crate's decoders, or
/// Ok. Checks only what the crate does not check itself.
pub(crate) fn check_page(page: &Page, levels: Levels) -> Result<(), String> {
    match page {
        Page::DictionaryPage {
            buf, num_values, ..
        } => {
            if *num_values == 0 && !buf.is_empty() {
                return Err(format!(
                    "a dictionary page declares no values but holds {} bytes",
                    buf.len()
                ));
            }
            Ok(())
        }
        Page::DataPage {
            buf,
            num_values,
            def_level_encoding,
            rep_level_encoding,
            ..
        } => {
            let n = *num_values as usize;
            let mut rest: &[u8] = buf;
            if levels.max_rep > 0 {
                let section = v1_levels(&mut rest, *rep_level_encoding, levels.max_rep, n)
                    .map_err(|why| format!("repetition levels: {why}"))?;
                if let Some((data, bits)) = section {
                    walk_levels(data, bits, n, None)
                        .map_err(|why| format!("repetition levels: {why}"))?;
                }
            }
            if levels.max_def > 0 {
                let section = v1_levels(&mut rest, *def_level_encoding, levels.max_def, n)
                    .map_err(|why| format!("definition levels: {why}"))?;
                if let Some((data, bits)) = section {
                    walk_levels(data, bits, n, None)
                        .map_err(|why| format!("definition levels: {why}"))?;
                }
            }
            Ok(())
        }
        Page::DataPageV2 {
            buf,
            num_values,
            num_nulls,
            def_levels_byte_len,
            rep_levels_byte_len,
            ..
        } => {
            let n = *num_values as usize;
            let rep_len = *rep_levels_byte_len as usize;
            let def_end = rep_len.saturating_add(*def_levels_byte_len as usize);
            if def_end > buf.len() {
                return Err(format!(
                    "a v2 data page's level sections ({def_end} bytes) pass the end of its {} bytes",
                    buf.len()
                ));
            }
            if *num_nulls > *num_values {
                return Err(format!(
                    "a v2 data page declares {num_nulls} nulls among {num_values} values"
                ));
            }
            if levels.max_rep > 0 {
                walk_levels(&buf[..rep_len], bit_width(levels.max_rep), n, None)
                    .map_err(|why| format!("repetition levels: {why}"))?;
            }
            let present = if levels.max_def > 0 {
                walk_levels(
                    &buf[rep_len..def_end],
                    bit_width(levels.max_def),
                    n,
                    Some(levels.max_def as u64),
                )
                .map_err(|why| format!("definition levels: {why}"))?
            } else {
                n
            };
            // The value decoders size their reads by `num_values -
            // num_nulls`; the levels decide how many values are read.
            let declared = (num_values - num_nulls) as usize;
            if present != declared {
                return Err(format!(
                    "a v2 data page declares {declared} non-null values but its definition \
                     levels have {present}"
                ));
            }
            Ok(())
        }
    }
}

/// Bits per level for levels up to `max`.
fn bit_width(max: i16) -> u32 {
    u64::BITS - (max.max(0) as u64).leading_zeros()
}

/// Splits a v1 page's level section off the front of `rest`: the bytes and
/// the bit width of an RLE section (to walk), or None for the deprecated
/// BIT_PACKED layout (only its length is checked; the crate reads it
/// bounded by the page).
fn v1_levels<'a>(
    rest: &mut &'a [u8],
    encoding: Encoding,
    max: i16,
    n: usize,
) -> Result<Option<(&'a [u8], u32)>, String> {
    let bits = bit_width(max);
    #[allow(deprecated)]
    match encoding {
        Encoding::RLE => {
            // A 4-byte length, then that many bytes; the crate checks both.
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Ok(None);
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > tail.len() {
                return Ok(None);
            }
            let (section, after) = tail.split_at(len);
            *rest = after;
            Ok(Some((section, bits)))
        }
        Encoding::BIT_PACKED => {
            let need = (n as u64 * u64::from(bits)).div_ceil(8);
            if need > rest.len() as u64 {
                return Err(format!(
                    "{n} bit-packed levels need {need} bytes, the page has {}",
                    rest.len()
                ));
            }
            *rest = &rest[need as usize..];
            Ok(None)
        }
        // The crate refuses other encodings itself.
        _ => Ok(None),
    }
}

/// Walks `n` levels of an RLE / bit-packed hybrid section, checking that
/// each run holds the bytes its header promises for the levels read, and
/// returns how many levels equal `count` (0 when None: not counted).
fn walk_levels(data: &[u8], bits: u32, n: usize, count: Option<u64>) -> Result<usize, String> {
    let mut pos = 0usize;
    let mut seen = 0usize;
    let mut matching = 0usize;
    let value_bytes = bits.div_ceil(8) as usize;
    while seen < n {
        let Some((header, used)) = uleb128(&data[pos.min(data.len())..]) else {
            return Err(format!(
                "the section ends after {seen} of {n} levels ({} bytes)",
                data.len()
            ));
        };
        pos += used;
        let run = header >> 1;
        if header & 1 == 1 {
            // Bit-packed: `run` groups of eight values, `bits` bytes each.
            let values = run.saturating_mul(8);
            let take = values.min((n - seen) as u64) as usize;
            let need = (take as u64 * u64::from(bits)).div_ceil(8) as usize;
            let have = data.len() - pos.min(data.len());
            if need > have {
                return Err(format!(
                    "a bit-packed run of {values} levels needs {need} bytes, {have} are left"
                ));
            }
            if let Some(wanted) = count {
                matching += (0..take)
                    .filter(|&i| unpack(&data[pos..], i, bits) == wanted)
                    .count();
            }
            seen += take;
            pos = pos.saturating_add(run.saturating_mul(u64::from(bits)) as usize);
        } else {
            let have = data.len() - pos.min(data.len());
            if value_bytes > have {
                return Err("a run's value is cut off".to_string());
            }
            let mut value = 0u64;
            for (b, byte) in data[pos..pos + value_bytes].iter().enumerate() {
                value |= u64::from(*byte) << (8 * b);
            }
            pos += value_bytes;
            let take = run.min((n - seen) as u64) as usize;
            if count == Some(value) {
                matching += take;
            }
            seen += take;
        }
    }
    Ok(matching)
}

/// The `i`-th `bits`-wide value of a little-endian bit-packed run.
fn unpack(data: &[u8], i: usize, bits: u32) -> u64 {
    let mut value = 0u64;
    for b in 0..bits as usize {
        let bit = i * bits as usize + b;
        if data[bit / 8] >> (bit % 8) & 1 == 1 {
            value |= 1 << b;
        }
    }
    value
}

/// A ULEB128 run header and how many bytes it took; None when it is cut
/// off or longer than ten bytes.
fn uleb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(max_def: i16) -> Levels {
        Levels {
            max_def,
            max_rep: 0,
        }
    }

    fn v2(buf: Vec<u8>, num_values: u32, num_nulls: u32, def_len: u32) -> Page {
        Page::DataPageV2 {
            buf: buf.into(),
            num_values,
            encoding: Encoding::PLAIN,
            num_nulls,
            num_rows: num_values,
            def_levels_byte_len: def_len,
            rep_levels_byte_len: 0,
            is_compressed: false,
            statistics: None,
        }
    }

    #[test]
    fn an_empty_dictionary_with_bytes_is_refused() {
        let page = Page::DictionaryPage {
            buf: vec![1u8, 0, 0, 0, b'a'].into(),
            num_values: 0,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let err = check_page(&page, levels(1)).unwrap_err();
        assert_eq!(
            err,
            "a dictionary page declares no values but holds 5 bytes"
        );
        let empty = Page::DictionaryPage {
            buf: Vec::<u8>::new().into(),
            num_values: 0,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        assert!(check_page(&empty, levels(1)).is_ok());
    }

    #[test]
    fn a_bit_packed_run_past_its_bytes_is_refused() {
        // Header 0b101: 2 groups (16 levels) bit-packed at width 1 need 2
        // bytes; one follows. A v1 section: 4-byte length, then the run.
        let page = Page::DataPage {
            buf: vec![2u8, 0, 0, 0, 0b101, 0xff, b'x'].into(),
            num_values: 16,
            encoding: Encoding::PLAIN,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let err = check_page(&page, levels(1)).unwrap_err();
        assert_eq!(
            err,
            "definition levels: a bit-packed run of 16 levels needs 2 bytes, 1 are left"
        );
        // Eight levels of the same run fit in the one byte.
        let page = Page::DataPage {
            buf: vec![2u8, 0, 0, 0, 0b011, 0xff, b'x'].into(),
            num_values: 8,
            encoding: Encoding::PLAIN,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        assert!(check_page(&page, levels(1)).is_ok());
    }

    #[test]
    fn v2_null_counts_must_match_the_levels() {
        // RLE run of 4 levels of value 1 (all present), width 1: header 8, value 1.
        let page = v2(vec![8, 1, b'a', b'b'], 4, 0, 2);
        assert!(check_page(&page, levels(1)).is_ok());
        let page = v2(vec![8, 1, b'a', b'b'], 4, 4, 2);
        assert_eq!(
            check_page(&page, levels(1)).unwrap_err(),
            "a v2 data page declares 0 non-null values but its definition levels have 4"
        );
        // Bit-packed 0b0101_0101: levels 1,0,1,0,... -> 4 of 8 present.
        let page = v2(vec![0b011, 0b0101_0101], 8, 4, 2);
        assert!(check_page(&page, levels(1)).is_ok());
        // A required column has no nulls to declare.
        assert!(check_page(&v2(vec![1, 2], 2, 1, 0), levels(0)).is_err());
        assert!(check_page(&v2(vec![1], 2, 0, 3), levels(1)).is_err());
    }

    #[test]
    fn bit_widths_and_headers() {
        assert_eq!(bit_width(1), 1);
        assert_eq!(bit_width(2), 2);
        assert_eq!(bit_width(3), 2);
        assert_eq!(bit_width(4), 3);
        assert_eq!(uleb128(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(uleb128(&[0x80]), None);
        assert_eq!(unpack(&[0b1110_0100], 1, 2), 0b01);
        assert_eq!(unpack(&[0b1110_0100], 3, 2), 0b11);
    }
}

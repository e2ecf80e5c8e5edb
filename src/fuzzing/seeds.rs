//! Seed corpora and dictionaries for the fuzz targets, written from the
//! repository's own configs (see the README's "Fuzzing" paragraph): the
//! configs themselves for the text targets, their plans for `plan_decode`,
//! small synthetic parquet files for `parquet_read`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatchReader;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use prost_reflect::DescriptorPool;

use super::{parquet_plan, structure_plan};

/// Every `.config` under `examples/` and `golden/` of the repository at
/// `root`, sorted.
pub fn configs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for pattern in ["examples/*.config", "golden/**/*.config"] {
        let full = root.join(pattern);
        if let Ok(paths) = glob::glob(&full.to_string_lossy()) {
            out.extend(paths.flatten());
        }
    }
    out.sort();
    out
}

/// Writes `out/<target>/` seed files for every target; returns how many
/// files each got.
pub fn write_seeds(root: &Path, out: &Path) -> Result<Vec<(String, usize)>, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut counts = Vec::new();
    let configs = configs(root);
    for target in ["check_source", "compile_mutated", "plan_decode"] {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut n = 0;
        for c in &configs {
            let text = std::fs::read_to_string(c).map_err(|e| io(c, e))?;
            let bytes = if target == "plan_decode" {
                match structure_plan(&text) {
                    Some(p) => crate::plan::file::encode(&p),
                    None => continue,
                }
            } else {
                text.into_bytes()
            };
            let rel = c.strip_prefix(root).unwrap_or(c);
            let name = rel.to_string_lossy().replace(['/', '\\'], "_");
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
            n += 1;
        }
        counts.push((target.to_string(), n));
    }
    let dir = out.join("parquet_read");
    counts.push(("parquet_read".to_string(), write_parquet_seeds(&dir)?));
    Ok(counts)
}

/// Small synthetic files for the `parquet_read` plan, each rewritten in a
/// few layouts (row-group sizes, compression, dictionary encoding) so the
/// fuzzer starts from several page and footer shapes.
fn write_parquet_seeds(dir: &Path) -> Result<usize, String> {
    let plan = parquet_plan().ok_or("the parquet_read plan does not compile")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    crate::data::generate(plan, 24, 6, 7, tmp.path()).map_err(|e| e.to_string())?;
    let layouts: [(&str, Compression, usize, bool); 4] = [
        ("plain", Compression::UNCOMPRESSED, 1024, false),
        ("groups", Compression::UNCOMPRESSED, 8, true),
        ("snappy", Compression::SNAPPY, 1024, true),
        ("zstd", Compression::ZSTD(ZstdLevel::default()), 10, false),
    ];
    let mut n = 0;
    for file in ["train", "eval"] {
        let src = tmp.path().join(format!("{file}.parquet"));
        let bytes = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(prost::bytes::Bytes::from(bytes))
            .and_then(|b| b.build())
            .map_err(|e| e.to_string())?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for (name, compression, rows, dictionary) in layouts {
            let props = WriterProperties::builder()
                .set_compression(compression)
                .set_max_row_group_row_count(Some(rows))
                .set_dictionary_enabled(dictionary)
                .build();
            let mut buf = Vec::new();
            let mut w = ArrowWriter::try_new(&mut buf, Arc::clone(&schema), Some(props))
                .map_err(|e| e.to_string())?;
            for b in &batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.close().map_err(|e| e.to_string())?;
            let path = dir.join(format!("{file}-{name}.parquet"));
            std::fs::write(&path, buf).map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// A libFuzzer dictionary of the text format: every field, message and enum
/// value name of the builtin schema, plus the format's punctuation.
pub fn config_dict() -> Result<String, String> {
    let pool = DescriptorPool::decode(crate::proto::DESCRIPTOR_SET).map_err(|e| e.to_string())?;
    let mut words = std::collections::BTreeSet::new();
    for m in pool.all_messages() {
        words.insert(m.name().to_string());
        for f in m.fields() {
            words.insert(f.name().to_string());
        }
    }
    for e in pool.all_enums() {
        for v in e.values() {
            words.insert(v.name().to_string());
        }
    }
    let mut out = String::from(
        "# Field, message and enum value names of the builtin schema, for\n\
         # the check_source and compile_mutated targets. Regenerate with\n\
         # `cargo test --release --test fuzz_regressions -- --ignored write_fuzz_seeds`.\n",
    );
    for p in [
        "{", "}", ":", "[", "]", "<", ">", ",", "\"", "#", "true", "false", "inf", "nan",
    ] {
        out.push_str(&format!("\"{p}\"\n").replace("\"\"\"", "\"\\\"\""));
    }
    for w in words {
        out.push_str(&format!("\"{w}\"\n"));
    }
    Ok(out)
}

/// A dictionary for `parquet_read`: the magic and the column names its
/// plan reads.
pub fn parquet_dict() -> Result<String, String> {
    let plan = parquet_plan().ok_or("the parquet_read plan does not compile")?;
    let mut words = std::collections::BTreeSet::new();
    for f in &plan.features {
        words.extend(f.input_columns.iter().cloned());
    }
    if let Some(d) = &plan.data {
        words.extend(d.label_fields.iter().cloned());
        words.extend(d.sample_weight_fields.iter().cloned());
    }
    let mut out = String::from(
        "# The parquet magic and the columns the parquet_read plan reads.\n\"PAR1\"\n",
    );
    for w in words {
        out.push_str(&format!("\"{w}\"\n"));
    }
    Ok(out)
}

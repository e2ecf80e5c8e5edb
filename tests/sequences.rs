//! End-to-end sequence features through the `plec` binary: a PLE that
//! reads the click history with DIN learns the history that `gen-data`
//! planted (its AUC beats the same model without the sequence group on
//! the same data), and bad history data stops the run naming the file,
//! column and row.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;

mod common;
use common::*;

/// A small PLE in the style of tzrec's ple_has_sequence benchmark.
const WITH_SEQUENCE: &str = r#"
train_config {
  sparse_optimizer { adagrad_optimizer { lr: 0.05 } constant_learning_rate {} }
  dense_optimizer { adam_optimizer { lr: 0.003 } constant_learning_rate {} }
  num_epochs: 3
}
data_config { batch_size: 256 fg_mode: FG_NORMAL label_fields: "clk" label_fields: "buy" }
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" hash_bucket_size: 1000 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "cate_id" expression: "item:cate_id" hash_bucket_size: 1000 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "brand" expression: "item:brand" hash_bucket_size: 1000 embedding_dim: 8 } }
feature_configs {
  sequence_feature {
    sequence_name: "click_seq"
    sequence_length: 10
    sequence_delim: "|"
    features { id_feature { feature_name: "cate_id" expression: "item:cate_id" hash_bucket_size: 1000 embedding_dim: 8 } }
    features { id_feature { feature_name: "brand" expression: "item:brand" hash_bucket_size: 1000 embedding_dim: 8 } }
  }
}
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "user_id"
    feature_names: "cate_id"
    feature_names: "brand"
    group_type: DEEP
    sequence_groups {
      group_name: "click_seq"
      feature_names: "cate_id"
      feature_names: "brand"
      feature_names: "click_seq__cate_id"
      feature_names: "click_seq__brand"
    }
    sequence_encoders { din_encoder { attn_mlp { hidden_units: [16, 8] } } }
  }
  ple {
    extraction_networks {
      network_name: "layer1"
      expert_num_per_task: 1
      share_num: 1
      task_expert_net { hidden_units: [32] }
      share_expert_net { hidden_units: [32] }
    }
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [16] } losses { binary_cross_entropy {} } metrics { auc {} } }
    task_towers { tower_name: "cvr" label_name: "buy" mlp { hidden_units: [16] } losses { binary_cross_entropy {} } metrics { auc {} } }
  }
}
"#;

/// The same model without its sequence group and encoder.
fn without_sequence() -> String {
    let a = WITH_SEQUENCE
        .find("    sequence_groups {")
        .expect("sequence group");
    let b = WITH_SEQUENCE.find("  ple {").expect("ple block");
    format!("{}  }}\n{}", &WITH_SEQUENCE[..a], &WITH_SEQUENCE[b..])
}

fn eval_auc(dir: &Path, task: &str) -> f64 {
    let t = std::fs::read_to_string(dir.join("metrics.json")).expect("metrics.json");
    let m: serde_json::Value = serde_json::from_str(&t).expect("json");
    m["eval"][format!("exact_auc_{task}")]
        .as_f64()
        .unwrap_or_else(|| panic!("no eval.exact_auc_{task}: {m}"))
}

/// Trains `config` on the data; returns the output directory.
fn train(dir: &Path, name: &str, config: &str, data: &Path) -> PathBuf {
    let cfg = write(dir, &format!("{name}.config"), config);
    let out = dir.join(name);
    let train = data.join("train.parquet");
    let eval = data.join("eval.parquet");
    ok(&[
        "run",
        s(&cfg),
        "--data",
        s(&train),
        "--eval",
        s(&eval),
        "-o",
        s(&out),
        "-q",
    ]);
    out
}

/// The planted history carries a large part of each label's logit: DIN
/// over the history must recover a clear share of it that a model without
/// the sequence cannot.
#[test]
fn din_learns_the_planted_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write(d, "gen.config", WITH_SEQUENCE);
    let data = d.join("data");
    ok(&["gen-data", s(&cfg), "--rows", "20000", "-o", s(&data)]);
    let with = train(d, "with", WITH_SEQUENCE, &data);
    let without = train(d, "without", &without_sequence(), &data);
    for task in ["ctr", "cvr"] {
        let (a, b) = (eval_auc(&with, task), eval_auc(&without, task));
        assert!(
            a > b + 0.05,
            "{task}: AUC with the sequence {a:.4}, without {b:.4}"
        );
    }
}

/// `rb` with row `row` of string column `name` set to `value`.
/// Multi-window DIN over the same history (windows of 3, 3 and 4 steps)
/// also recovers the planted signal.
#[test]
fn multi_window_din_learns_the_planted_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let multi = WITH_SEQUENCE.replace(
        "sequence_encoders { din_encoder { attn_mlp { hidden_units: [16, 8] } } }",
        "sequence_encoders { multi_window_din_encoder { input: \"click_seq\" attn_mlp { hidden_units: [16, 8] } windows_len: [3, 3, 4] } }",
    );
    assert_ne!(multi, WITH_SEQUENCE, "the encoder was replaced");
    let cfg = write(d, "gen.config", &multi);
    let data = d.join("data");
    ok(&["gen-data", s(&cfg), "--rows", "20000", "-o", s(&data)]);
    let with = train(d, "with", &multi, &data);
    let without = train(d, "without", &without_sequence(), &data);
    for task in ["ctr", "cvr"] {
        let (a, b) = (eval_auc(&with, task), eval_auc(&without, task));
        assert!(
            a > b + 0.05,
            "{task}: AUC with multi-window DIN {a:.4}, without {b:.4}"
        );
    }
}

fn with_value(rb: &RecordBatch, name: &str, row: usize, value: &str) -> RecordBatch {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in rb.schema().fields().iter().zip(rb.columns()) {
        fields.push(Field::new(f.name(), f.data_type().clone(), true));
        if f.name() != name {
            cols.push(c.clone());
            continue;
        }
        let strs = c
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("a string column");
        let v: Vec<Option<String>> = (0..strs.len())
            .map(|i| {
                if i == row {
                    Some(value.to_string())
                } else {
                    (!strs.is_null(i)).then(|| strs.value(i).to_string())
                }
            })
            .collect();
        cols.push(Arc::new(StringArray::from(v)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("record batch")
}

/// A history whose sub-sequences disagree on their step count, or holding
/// a step that is not an id of the feature, stops `run` naming the file,
/// the column and the row.
#[test]
fn bad_history_names_file_column_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write(d, "seq.config", WITH_SEQUENCE);
    let data = d.join("data");
    ok(&["gen-data", s(&cfg), "--rows", "200", "-o", s(&data)]);
    let rb = read_parquet(&data.join("train.parquet"));
    // Row 7's brand history gets one step more or less than its cate history.
    let cates = rb
        .column_by_name("click_seq__cate_id")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .expect("cate history column");
    let n = if cates.is_null(7) {
        1
    } else {
        cates.value(7).split('|').count()
    };
    let m = if n >= 2 { n - 1 } else { n + 1 };
    let brands = vec!["b"; m].join("|");
    for (column, value, words) in [
        ("click_seq__brand", brands.as_str(), "steps"),
        ("click_seq__cate_id", "x||y", "empty"),
    ] {
        let bad = d.join(format!("bad_{column}.parquet"));
        let f = std::fs::File::create(&bad).expect("create");
        let mut w = ArrowWriter::try_new(f, rb.schema(), None).expect("writer");
        w.write(&with_value(&rb, column, 7, value)).expect("write");
        w.close().expect("close");
        let o = plec(&[
            "run",
            s(&cfg),
            "--data",
            s(&bad),
            "-o",
            s(&d.join("out")),
            "-q",
        ]);
        let msg = text(&o);
        assert_ne!(o.status.code(), Some(0), "{msg}");
        for part in [
            bad.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            column,
            "row 7",
            words,
        ] {
            assert!(msg.contains(part), "{part:?} missing from:\n{msg}");
        }
    }
}

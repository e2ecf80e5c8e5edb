//! The rest of the multi-task family end to end through the `plec` binary:
//! PEPNet (EPNet, PPNet and per-domain towers picked by a label) and
//! variational dropout compile, train on `gen-data` output and evaluate,
//! and variational dropout's learned drop probabilities reach
//! `metrics.json`.

use std::path::Path;

mod common;
use common::*;

/// PEPNet in the style of tzrec's `examples/pepnet_taobao.config`, with
/// the domain index in its own label column (`scene`, three domains).
const PEPNET: &str = r#"
train_config {
  sparse_optimizer { adagrad_optimizer { lr: 0.05 } constant_learning_rate {} }
  dense_optimizer { adam_optimizer { lr: 0.003 } constant_learning_rate {} }
  num_epochs: 1
}
data_config { batch_size: 128 label_fields: "clk" label_fields: "buy" label_fields: "scene" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 500 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "age_level" num_buckets: 8 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "cate_id" num_buckets: 300 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "pid" num_buckets: 20 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "all" feature_names: "user_id" feature_names: "age_level" feature_names: "cate_id" feature_names: "pid" group_type: DEEP }
  feature_groups { group_name: "domain" feature_names: "pid" group_type: DEEP }
  feature_groups { group_name: "uia" feature_names: "user_id" feature_names: "cate_id" group_type: DEEP }
  pepnet {
    domain_input_name: "scene"
    task_domain_num: 3
    epnet_hidden_unit: 16
    ppnet_hidden_units: [32, 16]
    ppnet_dropout_ratio: [0.1]
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [8] } losses { binary_cross_entropy {} } metrics { auc {} } }
    task_towers { tower_name: "cvr" label_name: "buy" mlp { hidden_units: [8] } losses { binary_cross_entropy {} } metrics { auc {} } }
  }
}
"#;

/// A DBMTL with variational dropout over its one group.
const VARIATIONAL: &str = include_str!("data/dbmtl_variational_dropout.config");

fn metrics(dir: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(dir.join("metrics.json")).expect("metrics.json");
    serde_json::from_str(&t).expect("json")
}

/// Compiles, generates data for and trains `config`; returns the run's
/// metrics.
fn compile_and_train(dir: &Path, config: &str) -> serde_json::Value {
    let cfg = write(dir, "model.config", config);
    ok(&["check", s(&cfg), "--deny-warnings"]);
    let plan = dir.join("plan.bin");
    ok(&["compile", s(&cfg), "-o", s(&plan)]);
    let data = dir.join("data");
    ok(&["gen-data", s(&plan), "--rows", "3000", "-o", s(&data)]);
    let out = dir.join("run");
    ok(&[
        "run",
        s(&plan),
        "--data",
        s(&data.join("train.parquet")),
        "--eval",
        s(&data.join("eval.parquet")),
        "-o",
        s(&out),
        "-q",
    ]);
    metrics(&out)
}

#[test]
fn pepnet_trains_with_per_domain_towers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = compile_and_train(d, PEPNET);
    for task in ["ctr", "cvr"] {
        let auc = m["eval"][format!("exact_auc_{task}")].as_f64();
        assert!(auc.is_some_and(|a| a > 0.5), "{task}: {m}");
    }
    // Three towers per task, side by side in the logits; the data carries
    // every domain.
    let inspect = ok(&["inspect", s(&d.join("plan.bin"))]);
    assert!(inspect.contains("MUL x5"), "{inspect}");
    assert!(inspect.contains("STOP_GRADIENT x2"), "{inspect}");
    let graph = ok(&["graph", s(&d.join("model.config"))]);
    assert!(graph.contains("x 3 domains"), "{graph}");
    let train = read_parquet(&d.join("data/train.parquet"));
    let scene = train
        .column_by_name("scene")
        .expect("a scene column")
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .expect("int64 scene");
    for want in 0..3 {
        assert!(scene.values().contains(&want), "no row of domain {want}");
    }
}

#[test]
fn variational_dropout_trains_and_reports_drop_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let m = compile_and_train(dir.path(), VARIATIONAL);
    let list = m["variational_dropout"]["all.variational_dropout"]
        .as_array()
        .unwrap_or_else(|| panic!("no drop probabilities: {m}"));
    let mut names: Vec<&str> = list.iter().filter_map(|r| r["feature"].as_str()).collect();
    let probs: Vec<f64> = list.iter().filter_map(|r| r["drop_p"].as_f64()).collect();
    assert!(probs.windows(2).all(|w| w[0] <= w[1]), "{probs:?}");
    assert!(probs.iter().all(|p| (0.0..1.0).contains(p)), "{probs:?}");
    names.sort_unstable();
    assert_eq!(names, ["cate_id", "price", "user_id"]);
}

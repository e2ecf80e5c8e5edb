//! `plec export` end to end through the built binary: every example
//! config (and two small configs covering variational dropout and dense
//! sequences) is trained a few steps on `gen-data` output, exported as an
//! ONNX model, decoded back with prost and checked for structure, and —
//! when python3 with numpy and onnxruntime is importable — scored by
//! onnxruntime on 1,000 rows exported with `plec export --inputs`, which
//! must agree with `plec predict` on the same rows within 1e-5 relative.
//!
//! Without onnxruntime the comparison is skipped with a notice, except
//! under CI (`CI` set), where it fails: CI installs it from
//! `tests/export/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Tensor;
use prost::Message;

use plec::export::onnx::proto::{DimensionValue, ModelProto, ValueInfoProto};
use plec::proto::plan::Plan;

mod common;
use common::*;

/// Rows scored by both engines.
const ROWS: usize = 1000;
/// Largest relative difference allowed between onnxruntime and plec.
const RTOL: f64 = 1e-5;

/// Variational dropout (and a dense raw feature) in a DBMTL.
const VARIATIONAL: &str = include_str!("data/dbmtl_variational_dropout.config");

/// Batch norm over fused experts (`[E, B, D]`) and over a tower, layer
/// norm, dropout, leaky relu, gelu, prelu and silu, a bucketized and a
/// dense raw feature, and a regression task (`y_gmv`).
const NORMS: &str = include_str!("data/mmoe_norms.config");

/// The training and data settings the inline configs below share.
macro_rules! train_and_data {
    () => {
        r#"
train_config {
  sparse_optimizer { adagrad_optimizer { lr: 0.05 } constant_learning_rate {} }
  dense_optimizer { adam_optimizer { lr: 0.003 } constant_learning_rate {} }
  num_epochs: 1
}
data_config { batch_size: 128 label_fields: "clk" }
"#
    };
}

/// A grouped sequence of an id and a dense sub-feature (a shared table),
/// read by two DIN encoders (one with Dice in its attention MLP, as the
/// tower is) and a mean pooling encoder.
const DENSE_SEQUENCE: &str = concat!(
    train_and_data!(),
    r#"
feature_configs { id_feature { feature_name: "user" num_buckets: 50 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "cate" num_buckets: 60 embedding_dim: 6 embedding_name: "cate_emb" } }
feature_configs {
  sequence_feature {
    sequence_name: "seq"
    sequence_length: 5
    sequence_delim: ";"
    features { id_feature { feature_name: "cate" num_buckets: 60 embedding_dim: 6 embedding_name: "cate_emb" } }
    features { raw_feature { feature_name: "price" } }
  }
}
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "user"
    group_type: DEEP
    sequence_groups {
      group_name: "seq"
      feature_names: "cate"
      feature_names: "seq__cate"
      feature_names: "seq__price"
    }
    sequence_encoders { din_encoder { attn_mlp { hidden_units: [8] activation: "nn.Tanh" } } }
    sequence_encoders { din_encoder { attn_mlp { hidden_units: [6, 3] activation: "Dice" } } }
    sequence_encoders { pooling_encoder { input: "seq" pooling_type: "mean" } }
  }
  simple_multi_task {
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [8] activation: "Dice" } losses { binary_cross_entropy {} } }
  }
}
"#
);

/// Whether the onnxruntime comparison can run; under CI it must.
fn onnxruntime_available() -> bool {
    python_available("numpy, onnxruntime", "the onnxruntime comparison")
}

fn dims(v: &ValueInfoProto) -> Vec<String> {
    let shape = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .expect("a tensor shape");
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(DimensionValue::DimValue(v)) => v.to_string(),
            Some(DimensionValue::DimParam(p)) => p.clone(),
            None => "?".to_string(),
        })
        .collect()
}

/// The file decodes with prost into the model the plan describes: IR and
/// opset, one input per feature the model reads, two outputs per task,
/// every embedding table an initializer of its shape.
fn check_structure(model_path: &Path, plan: &Plan, external: bool) -> ModelProto {
    let bytes = std::fs::read(model_path).expect("model.onnx");
    let model = ModelProto::decode(bytes.as_slice()).expect("an ONNX ModelProto");
    assert_eq!(model.ir_version, Some(8));
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.opset_import[0].version, Some(17));
    let graph = model.graph.clone().expect("a graph");
    let inputs = plec::export::contract::graph_inputs(plan).expect("inputs");
    let names: Vec<String> = graph.input.iter().filter_map(|i| i.name.clone()).collect();
    let want: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    assert_eq!(names, want);
    for i in &graph.input {
        assert_eq!(dims(i)[0], "batch", "{:?}", i.name);
    }
    let outputs: Vec<String> = graph.output.iter().filter_map(|o| o.name.clone()).collect();
    let mut want = Vec::new();
    for t in &plan.tasks {
        want.push(format!("logits_{}", t.tower_name));
        want.push(prediction(&outputs, &t.tower_name));
    }
    assert_eq!(outputs, want);
    for t in &plan.tasks {
        let name = prediction(&outputs, &t.tower_name);
        let o = graph
            .output
            .iter()
            .find(|o| o.name.as_deref() == Some(name.as_str()))
            .expect("prediction output");
        assert_eq!(
            dims(o),
            ["batch".to_string(), t.num_class.max(1).to_string()]
        );
    }
    let used_tables: Vec<u32> = inputs
        .iter()
        .filter_map(|i| match i.kind {
            plec::export::contract::InputKind::Ids { feature }
            | plec::export::contract::InputKind::SequenceIds { feature, .. } => {
                Some(plan.features[feature].table)
            }
            _ => None,
        })
        .collect();
    for &t in &used_tables {
        let table = &plan.tables[t as usize];
        let init = graph
            .initializer
            .iter()
            .find(|i| i.name.as_deref() == Some(format!("table.{}", table.name).as_str()))
            .unwrap_or_else(|| panic!("no initializer for table {}", table.name));
        assert_eq!(init.dims, [table.num_rows as i64, table.dim as i64]);
        let bytes = table.num_rows * table.dim as u64 * 4;
        if external && bytes as usize >= plec::export::onnx::write::EXTERNAL_MIN_BYTES {
            // Its bytes are in the data file, at the offset and length the
            // initializer names.
            assert_eq!(init.data_location, Some(1));
            assert!(init.raw_data.is_none());
            let length = init
                .external_data
                .iter()
                .find(|e| e.key.as_deref() == Some("length"))
                .and_then(|e| e.value.clone());
            assert_eq!(length, Some(bytes.to_string()));
            continue;
        }
        assert_eq!(init.raw_data.as_ref().map(Vec::len), Some(bytes as usize));
        if !table.data.is_empty() {
            assert!(
                init.raw_data.as_deref() == Some(table.data.as_slice()),
                "table {} is exported as trained",
                table.name
            );
        }
    }
    model
}

/// The prediction output of a tower: `probs_<tower>`, or `y_<tower>` for
/// a regression task.
fn prediction(outputs: &[String], tower: &str) -> String {
    let y = format!("y_{tower}");
    if outputs.contains(&y) {
        y
    } else {
        format!("probs_{tower}")
    }
}

/// Where an export keeps its tensors.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// In the model file.
    Inline,
    /// In external data because `--external-data` asks for it.
    Forced,
    /// In external data because they pass protobuf's 2 GiB limit; the plan
    /// is compiled, not trained (its tables hold what the runtime would
    /// initialize them with), so the test stays cheap.
    PastTwoGib,
}

/// Exports `config`'s plan (trained a few steps, except for
/// [`Layout::PastTwoGib`]), scores the eval rows with onnxruntime and with
/// `plec predict`; returns the largest relative difference.
fn export_and_compare(config_name: &str, config: &Path, layout: Layout) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (plan_path, eval) = if layout == Layout::PastTwoGib {
        compile_untrained(d, config, ROWS)
    } else {
        train(d, config, ROWS)
    };
    let plan = read_plan(&plan_path);
    let model = d.join("model.onnx");
    let mut args = vec!["export", s(&plan_path), "--format", "onnx", "-o", s(&model)];
    if layout == Layout::Forced {
        args.push("--external-data");
    }
    let out = ok(&args);
    assert!(out.contains("outputs: "), "{out}");
    let external = layout != Layout::Inline;
    assert_eq!(d.join("model.onnx.data").exists(), external, "{out}");
    if layout == Layout::PastTwoGib {
        let data = std::fs::metadata(d.join("model.onnx.data")).unwrap().len();
        let graph = std::fs::metadata(&model).unwrap().len();
        assert!(data > 1 << 31 && graph < 1 << 20, "{data} / {graph} bytes");
    }
    check_structure(&model, &plan, external);
    let inputs = d.join("inputs.npz");
    ok(&[
        "export",
        s(&plan_path),
        "--inputs",
        s(&eval),
        "-o",
        s(&inputs),
    ]);
    let arrays = Tensor::read_npz(&inputs).expect("inputs.npz reads back");
    let contract = plec::export::contract::graph_inputs(&plan).expect("inputs");
    assert_eq!(arrays.len(), contract.len());
    for (name, t) in &arrays {
        assert_eq!(t.dims()[0], ROWS, "{name}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    if !onnxruntime_available() {
        return None;
    }
    let pred = d.join("pred.parquet");
    ok(&[
        "predict",
        s(&plan_path),
        "--data",
        s(&eval),
        "-o",
        s(&pred),
        "--threads",
        "1",
    ]);
    let ort_out = d.join("ort.npz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export/run_onnx.py");
    let mut args = vec![
        s(&script).to_string(),
        s(&model).to_string(),
        s(&inputs).to_string(),
        s(&ort_out).to_string(),
    ];
    if python_has("onnx") {
        args.push("--check".to_string());
    }
    let o = Command::new("python3")
        .args(&args)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "{config_name}: onnxruntime failed\n{text}"
    );
    let ort: Vec<(String, Tensor)> = Tensor::read_npz(&ort_out).expect("ort.npz");
    let ort_names: Vec<String> = ort.iter().map(|(n, _)| n.clone()).collect();
    let predicted = read_parquet(&pred);
    let mut worst = 0f64;
    for task in &plan.tasks {
        let t = &task.tower_name;
        let c = task.num_class.max(1) as usize;
        let output = prediction(&ort_names, t);
        let (_, probs) = ort
            .iter()
            .find(|(n, _)| *n == output)
            .unwrap_or_else(|| panic!("onnxruntime gave no {output}"));
        assert_eq!(probs.dims(), [ROWS, c]);
        let probs: Vec<f64> = probs
            .flatten_all()
            .and_then(|p| p.to_vec1::<f32>())
            .expect("f32 probabilities")
            .into_iter()
            .map(f64::from)
            .collect();
        for k in 0..c {
            let name = if c == 1 {
                output.clone()
            } else {
                format!("{output}_{k}")
            };
            let want = column(&predicted, &name);
            for (r, &b) in want.iter().enumerate() {
                let a = probs[r * c + k];
                // A regression output near zero has no meaningful relative
                // difference: below 1e-3 it is compared absolutely.
                let floor = if output.starts_with("y_") { 1e-3 } else { 0.0 };
                let scale = a.abs().max(b.abs()).max(floor);
                let rel = if scale > 0.0 {
                    (a - b).abs() / scale
                } else {
                    0.0
                };
                assert!(
                    rel <= RTOL,
                    "{config_name}: {name} row {r}: onnxruntime {a} vs plec predict {b} \
                     (relative difference {rel:e})"
                );
                worst = worst.max(rel);
            }
        }
    }
    eprintln!(
        "{config_name}: onnxruntime agrees with plec predict on {ROWS} rows, \
         max relative difference {worst:.2e}\n{text}"
    );
    Some(worst)
}

/// A compiled, untrained plan of `config` and generated eval rows.
fn compile_untrained(dir: &Path, config: &Path, eval_rows: usize) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let rows = eval_rows.to_string();
    ok(&[
        "gen-data",
        s(config),
        "--rows",
        "10",
        "--eval-rows",
        &rows,
        "-o",
        s(&data),
        "--seed",
        "3",
    ]);
    let plan = dir.join("plan.bin");
    ok(&["compile", s(config), "-o", s(&plan)]);
    (plan, data.join("eval.parquet"))
}

fn example(name: &str) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.config"));
    export_and_compare(name, &config, Layout::Inline);
}

fn inline(name: &str, body: &str, layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &format!("{name}.config"), body);
    export_and_compare(name, &config, layout);
}

#[test]
fn ple_taobao_matches_onnxruntime() {
    example("ple_taobao");
}

#[test]
fn ple_demo_matches_onnxruntime() {
    example("ple_demo");
}

#[test]
fn mmoe_taobao_matches_onnxruntime() {
    example("mmoe_taobao");
}

#[test]
fn dbmtl_taobao_matches_onnxruntime() {
    example("dbmtl_taobao");
}

#[test]
fn simple_multi_task_taobao_matches_onnxruntime() {
    example("simple_multi_task_taobao");
}

#[test]
fn pepnet_taobao_matches_onnxruntime() {
    example("pepnet_taobao");
}

#[test]
fn ple_has_sequence_matches_onnxruntime() {
    example("ple_has_sequence");
}

/// The self-attention encoder (multi-head attention, masked mean).
#[test]
fn mmoe_self_attention_matches_onnxruntime() {
    example("mmoe_self_attention");
}

/// DC2VR's intervention (orthogonal weights computed at export).
#[test]
fn dc2vr_taobao_matches_onnxruntime() {
    example("dc2vr_taobao");
}

#[test]
fn variational_dropout_matches_onnxruntime() {
    inline("variational", VARIATIONAL, Layout::Inline);
}

/// Also the external-data layout (forced: the model is small).
#[test]
fn norms_activations_and_regression_match_onnxruntime() {
    inline("norms", NORMS, Layout::Forced);
}

#[test]
fn dense_sequences_match_onnxruntime() {
    inline("dense_sequence", DENSE_SEQUENCE, Layout::Inline);
}

/// One table of 35M x 16 floats (2.24 GB): past protobuf's 2 GiB, so the
/// export keeps the tensors in `model.onnx.data` without being asked, and
/// onnxruntime still scores it as `plec predict` does.
const PAST_TWO_GIB: &str = concat!(
    train_and_data!(),
    r#"
feature_configs { id_feature { feature_name: "user" hash_bucket_size: 35000000 embedding_dim: 16 } }
feature_configs { id_feature { feature_name: "item" num_buckets: 100 embedding_dim: 8 } }
model_config {
  feature_groups { group_name: "all" feature_names: "user" feature_names: "item" group_type: DEEP }
  simple_multi_task {
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [8] } losses { binary_cross_entropy {} } }
  }
}
"#
);

#[test]
fn a_model_past_two_gib_takes_the_external_data_path() {
    // The export writes 2.24 GB and `plec predict` maps the plan; a machine
    // without the room is the environment's limit, not a failure of plec.
    let free = free_bytes(&std::env::temp_dir());
    if free.is_some_and(|f| f < 8 << 30) {
        eprintln!(
            "skipped: {} GiB free under {} (8 needed)",
            free.unwrap_or(0) >> 30,
            std::env::temp_dir().display()
        );
        return;
    }
    inline("past_two_gib", PAST_TWO_GIB, Layout::PastTwoGib);
}

/// Bytes available to this user on the filesystem of `dir` (`df -Pk`), when
/// `df` answers.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[test]
fn export_errors_name_the_file_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write(d, "v.config", VARIATIONAL);
    let plan = d.join("plan.bin");
    ok(&["compile", s(&config), "-o", s(&plan)]);
    // An untrained plan exports too (its tables as the runtime initializes
    // them).
    let model = d.join("m.onnx");
    ok(&["export", s(&plan), "-o", s(&model)]);
    let decoded = ModelProto::decode(std::fs::read(&model).unwrap().as_slice()).unwrap();
    assert!(decoded.graph.is_some());

    // Into a folder that does not exist: exit 2, the path named.
    let missing = d.join("no/such/dir/m.onnx");
    let o = plec(&["export", s(&plan), "-o", s(&missing)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(s(&missing)), "{}", text(&o));

    // A data file that does not exist: exit 2, no output.
    let npz = d.join("in.npz");
    let o = plec(&[
        "export",
        s(&plan),
        "--inputs",
        s(&d.join("nope.parquet")),
        "-o",
        s(&npz),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nope.parquet"), "{}", text(&o));
    assert!(!npz.exists());

    // Not a plan: exit 2, nothing written.
    let junk = write(d, "junk.bin", "\u{1}\u{2}not a plan");
    let o = plec(&["export", s(&junk), "-o", s(&d.join("j.onnx"))]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!d.join("j.onnx").exists());
}

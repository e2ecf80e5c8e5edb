//! `plec export --format safetensors` and `plec import` end to end through
//! the built binary: every config the export names (the PLE, MMoE, DBMTL
//! and PEPNet examples, the PLE sequence example, mask nets, sequence
//! encoders with Dice, variational dropout, norms and PReLU) is trained a
//! few steps, exported, imported back into a plan compiled from the config,
//! and must come back byte for byte with the same `plec predict` output.
//! The PLE example's key list is a snapshot (with the TorchEasyRec module
//! each key comes from), and a NumPy PLE built from the names and shapes
//! alone (`tests/export/ple_numpy.py`) must reproduce plec's probabilities
//! within 1e-5 relative: skipped with a notice without python3's numpy and
//! safetensors, except under CI (`CI` set), where it fails. The key lists
//! of these configs were also compared with real TorchEasyRec models
//! (`scripts/tzrec-state-dict-keys.sh`, outside CI).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Tensor;
use safetensors::SafeTensors;

use plec::export::state_dict::{derived, slots};
use plec::proto::plan::Plan;

mod common;
use common::*;

/// Rows scored by both.
const ROWS: usize = 1000;
/// Largest relative difference allowed between NumPy and plec.
const RTOL: f64 = 1e-5;

const VARIATIONAL: &str = include_str!("data/dbmtl_variational_dropout.config");
const NORMS: &str = include_str!("data/mmoe_norms.config");

fn test_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.config"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.config"))
}

/// Every table's and parameter's values, by name.
fn values(plan: &Plan) -> Vec<(String, Vec<u8>)> {
    let tables = plan
        .tables
        .iter()
        .map(|t| (format!("table {}", t.name), t.data.clone()));
    let params = plan.params.iter().map(|p| (p.name.clone(), p.data.clone()));
    tables.chain(params).collect()
}

/// `plec predict` of `plan` on `data`, as one record batch.
fn predict(dir: &Path, plan: &Path, data: &Path, name: &str) -> arrow_array::RecordBatch {
    let out = dir.join(name);
    ok(&[
        "predict",
        s(plan),
        "--data",
        s(data),
        "-o",
        s(&out),
        "--threads",
        "1",
    ]);
    read_parquet(&out)
}

/// Trains `config`, exports it, imports the file back with the config;
/// asserts identical values and predictions. Returns the work folder, the
/// trained plan, the safetensors file and the eval data.
fn round_trip(name: &str, config: &Path) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (trained, eval) = train(d, config, ROWS);
    let file = d.join("model.safetensors");
    let out = ok(&[
        "export",
        s(&trained),
        "--format",
        "safetensors",
        "-o",
        s(&file),
    ]);
    assert!(out.contains("state_dict names"), "{out}");
    let imported = d.join("imported.bin");
    let o = plec(&[
        "import",
        s(&file),
        "--config",
        s(config),
        "-o",
        s(&imported),
    ]);
    assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
    let a = read_plan(&trained);
    let b = read_plan(&imported);
    let (va, vb) = (values(&a), values(&b));
    assert_eq!(va.len(), vb.len(), "{name}");
    for ((na, da), (nb, db)) in va.iter().zip(&vb) {
        assert_eq!(na, nb, "{name}");
        assert!(
            da == db,
            "{name}: {na} differs after export and import ({} vs {} bytes)",
            da.len(),
            db.len()
        );
    }
    let pa = predict(d, &trained, &eval, "a.parquet");
    let pb = predict(d, &imported, &eval, "b.parquet");
    assert_eq!(pa, pb, "{name}: plec predict differs after the round trip");
    (dir, trained, file, eval)
}

#[test]
fn ple_taobao_round_trip_and_numpy_reference() {
    let (dir, trained, file, eval) = round_trip("ple_taobao", &example("ple_taobao"));
    numpy_reference(dir.path(), &trained, &file, &eval);
}

#[test]
fn ple_demo_round_trip() {
    round_trip("ple_demo", &example("ple_demo"));
}

#[test]
fn mmoe_taobao_round_trip() {
    round_trip("mmoe_taobao", &example("mmoe_taobao"));
}

#[test]
fn dbmtl_taobao_round_trip() {
    round_trip("dbmtl_taobao", &example("dbmtl_taobao"));
}

/// The exported file's keys.
fn keys(file: &Path) -> Vec<String> {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut k: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    k.sort();
    k
}

/// Serial mask blocks with a batch-normed top MLP, then the bottom MLP,
/// MMoE experts and a relation tower.
#[test]
fn dbmtl_mask_net_round_trip() {
    let (_d, _, file, _) = round_trip("dbmtl_mask_net", &test_config("dbmtl_mask_net"));
    keys_with(
        &file,
        &[
            "mask_net.ln_emb.weight",
            "mask_net.mask_blocks.1.mask_generator.2.weight",
            "mask_net.mask_blocks.1.ffn.1.bias",
            "mask_net.top_mlp.mlp.0.perceptron.1.num_batches_tracked",
            "mmoe.expert_mlps.1.mlp.0.perceptron.0.weight",
        ],
    );
}

/// The exported file's keys, which must include every one of `wanted`.
fn keys_with(file: &Path, wanted: &[&str]) -> Vec<String> {
    let k = keys(file);
    for key in wanted {
        assert!(k.iter().any(|x| x == key), "no {key} in {k:#?}");
    }
    k
}

/// Parallel mask blocks sized by `aggregation_dim`, no top MLP.
#[test]
fn dbmtl_mask_net_parallel_round_trip() {
    let (_d, _, file, _) = round_trip(
        "dbmtl_mask_net_parallel",
        &test_config("dbmtl_mask_net_parallel"),
    );
    let k = keys(&file);
    assert!(k.iter().any(|x| x == "mask_net.mask_blocks.2.ffn.0.weight"));
    assert!(!k.iter().any(|x| x.starts_with("mask_net.top_mlp")));
}

/// Sequence groups: their tables in TorchEasyRec's `EmbeddingCollection`s
/// (one per width), DIN with Dice (its frozen batch-norm scale and shift
/// have no tensor), multi-window DIN with its window buffers, simple
/// attention and pooling (no parameters), variational dropout counting
/// each encoder as a feature.
#[test]
fn mmoe_sequences_round_trip() {
    let (_d, _, file, _) = round_trip("mmoe_sequences", &test_config("mmoe_sequences"));
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let enc = "embedding_group._group_name_to_seq_encoders.all";
    let seq = "embedding_group.seq_emb_impls.__BASE__.ec_dict";
    for key in [
        format!("{seq}.8.embeddings.item_id_emb.weight"),
        format!("{seq}.8.embeddings.click_seq__item_id_emb.weight"),
        format!("{seq}.4.embeddings.seq_cate.weight"),
        format!("{seq}.8.embeddings.buy_items_emb.weight"),
        format!("{enc}.0.mlp.mlp.1.perceptron.1.alpha"),
        format!("{enc}.0.mlp.mlp.0.perceptron.1.bn.running_var"),
        format!("{enc}.0.linear.weight"),
        format!("{enc}.1.active.weight"),
    ] {
        assert!(st.tensor(&key).is_ok(), "no {key}");
    }
    let tracked = st
        .tensor(&format!(
            "{enc}.0.mlp.mlp.0.perceptron.1.bn.num_batches_tracked"
        ))
        .expect("Dice's num_batches_tracked");
    assert_eq!(tracked.dtype(), safetensors::Dtype::I64);
    let windows = st.tensor(&format!("{enc}.1.windows_len")).unwrap();
    assert_eq!(windows.dtype(), safetensors::Dtype::I64);
    let le = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    assert_eq!(windows.data(), le(&[2, 3]));
    let starts = st.tensor(&format!("{enc}.1.cumsum_windows_len")).unwrap();
    assert_eq!(starts.data(), le(&[0, 2]));
    // Variational dropout over three features and four encoder outputs.
    let repeat = st
        .tensor("group_variational_dropouts.all.feature_dim_repeat")
        .unwrap();
    assert_eq!(repeat.shape(), [7]);
    assert!(!st
        .names()
        .iter()
        .any(|k| k.contains(".bn.weight") || k.ends_with("bn.bias")));
}

/// Self-attention: plec's three input projections are one packed
/// `in_proj_weight` `[3 dim, dim]` (and `in_proj_bias`) in torch.
#[test]
fn mmoe_self_attention_round_trip() {
    let (_d, _, file, _) = round_trip("mmoe_self_attention", &example("mmoe_self_attention"));
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mha = "embedding_group._group_name_to_seq_encoders.all.0._multihead_attn";
    let w = st.tensor(&format!("{mha}.in_proj_weight")).unwrap();
    let b = st.tensor(&format!("{mha}.in_proj_bias")).unwrap();
    assert_eq!(w.shape()[0], 3 * w.shape()[1]);
    assert_eq!(b.shape(), [w.shape()[0]]);
    assert!(st.tensor(&format!("{mha}.out_proj.weight")).is_ok());
    assert!(st
        .tensor("embedding_group._group_name_to_seq_encoders.all.0._query.bias")
        .is_ok());
}

/// The sequence example (DIN over a grouped sequence) round trips too.
#[test]
fn ple_has_sequence_round_trip() {
    round_trip("ple_has_sequence", &example("ple_has_sequence"));
}

/// PEPNet over three groups (tables shared between them), one tower per
/// domain: `_task_tower.<task * 3 + domain>`.
#[test]
fn pepnet_taobao_round_trip() {
    let (_d, _, file, _) = round_trip("pepnet_taobao", &example("pepnet_taobao"));
    let k = keys_with(
        &file,
        &[
            "epnet.gate_nu.dense_layers.2.weight",
            "ppnet.linears.3.weight",
            "ppnet.gate_nus.3.dense_layers.0.bias",
            "_task_tower.5.linear.weight",
            "embedding_group.emb_impls.__BASE__.ebc.embedding_bags.pid_emb.weight",
        ],
    );
    assert!(!k.iter().any(|x| x.starts_with("_task_tower.6.")));
}

/// PEPNet with a PReLU PPNet, one tower per task and variational dropout
/// over the two groups of more than one feature.
#[test]
fn pepnet_prelu_round_trip() {
    let (_d, _, file, _) = round_trip("pepnet_prelu", &test_config("pepnet_prelu"));
    let k = keys_with(
        &file,
        &[
            "ppnet.activations.3.weight",
            "group_variational_dropouts.all.feature_p",
            "group_variational_dropouts.uia.feature_dim_repeat",
            "embedding_group.emb_impls.__BASE__.ebc.embedding_bags.cate_table.weight",
            "_task_tower.1.linear.bias",
        ],
    );
    assert!(!k
        .iter()
        .any(|x| x.starts_with("group_variational_dropouts.domain")));
}

/// [`round_trip`] of a config given as text; the exported file's bytes.
fn inline_round_trip(name: &str, body: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &format!("{name}.config"), body);
    let (_d, _, file, _) = round_trip(name, &config);
    std::fs::read(&file).unwrap()
}

#[test]
fn variational_dropout_round_trip() {
    let bytes = inline_round_trip("variational", VARIATIONAL);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let repeat = st
        .tensor("group_variational_dropouts.all.feature_dim_repeat")
        .expect("VariationalDropout's feature_dim_repeat buffer");
    assert_eq!(repeat.dtype(), safetensors::Dtype::I32);
    assert!(st
        .tensor("group_variational_dropouts.all.feature_p")
        .is_ok());
}

/// Batch norm (with `num_batches_tracked`), layer norm and PReLU.
#[test]
fn norms_round_trip() {
    let bytes = inline_round_trip("norms", NORMS);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tracked = st
        .tensor("mmoe.expert_mlps.0.mlp.0.perceptron.1.num_batches_tracked")
        .expect("BatchNorm1d's num_batches_tracked");
    assert_eq!(tracked.dtype(), safetensors::Dtype::I64);
    assert_eq!(tracked.data(), 4i64.to_le_bytes());
    for key in [
        "mmoe.expert_mlps.2.mlp.1.perceptron.1.running_var",
        "_task_tower.0.tower_mlp.mlp.0.perceptron.1.weight",
        "_task_tower.1.tower_mlp.mlp.1.perceptron.2.weight",
    ] {
        assert!(st.tensor(key).is_ok(), "no {key}");
    }
}

/// The TorchEasyRec module a key belongs to (read off TorchEasyRec's
/// source: tzrec/models/ple.py builds `_extraction_nets` of
/// tzrec/modules/extraction_net.py and `_task_tower` of task_tower.py).
fn module_of(key: &str) -> &'static str {
    if key.starts_with("embedding_group.") {
        "EmbeddingGroup > EmbeddingGroupImpl.ebc (torchrec EmbeddingBagCollection) > EmbeddingBag"
    } else if key.contains("._task_layers.") {
        "ExtractionNet._task_layers (MLP experts) > Perceptron > nn.Linear"
    } else if key.contains("._shared_layers.") {
        "ExtractionNet._shared_layers (MLP experts) > Perceptron > nn.Linear"
    } else if key.contains("._task_gates.") {
        "ExtractionNet._task_gates > nn.Linear"
    } else if key.contains("._shared_gate.") {
        "ExtractionNet._shared_gate > nn.Linear"
    } else if key.contains(".tower_mlp.") {
        "TaskTower.tower_mlp (MLP) > Perceptron > nn.Linear"
    } else if key.contains(".linear.") {
        "TaskTower.linear > nn.Linear"
    } else {
        "?"
    }
}

/// The PLE example's state_dict keys and shapes, each next to its module.
#[test]
fn ple_taobao_keys_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.bin");
    ok(&["compile", s(&example("ple_taobao")), "-o", s(&plan_path)]);
    let plan = read_plan(&plan_path);
    let slots = slots(&plan).expect("every PLE parameter is named");
    assert!(derived(&plan, &slots).is_empty(), "no norms, no dropout");
    let mut lines: Vec<String> = slots
        .iter()
        .map(|s| {
            let shape: Vec<String> = s.shape.iter().map(u64::to_string).collect();
            format!(
                "{:<72} [{}]  {}",
                s.name,
                shape.join(", "),
                module_of(&s.name)
            )
        })
        .collect();
    lines.sort();
    assert!(lines.iter().all(|l| !l.ends_with('?')), "{lines:#?}");
    insta::assert_snapshot!("ple_taobao_state_dict", lines.join("\n"));
}

/// A file with one tensor missing and one of another shape: the import
/// lists both and writes nothing, unless --allow-partial.
#[test]
fn import_reports_missing_and_misshapen_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = example("ple_demo");
    let plan_path = d.join("plan.bin");
    ok(&["compile", s(&config), "-o", s(&plan_path)]);
    let file = d.join("model.safetensors");
    ok(&[
        "export",
        s(&plan_path),
        "--format",
        "safetensors",
        "-o",
        s(&file),
    ]);
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let missing = "_task_tower.1.linear.bias";
    let misshapen = "_extraction_nets.0._task_gates.0.weight";
    let mut kept: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, v) in st.iter() {
        if name == missing {
            continue;
        }
        let (mut shape, mut data) = (v.shape().to_vec(), v.data().to_vec());
        if name == misshapen {
            // One row fewer.
            let row = shape[1] * 4;
            shape[0] -= 1;
            data.truncate(data.len() - row);
        }
        kept.push((name.to_string(), v.dtype(), shape, data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = kept
        .iter()
        .map(|(n, t, sh, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*t, sh.clone(), b).unwrap(),
            )
        })
        .collect();
    let broken = d.join("broken.safetensors");
    safetensors::serialize_to_file(views, None, &broken).unwrap();

    let out = d.join("imported.bin");
    let o = plec(&["import", s(&broken), "--config", s(&config), "-o", s(&out)]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("2 tables or parameters"), "{t}");
    assert!(t.contains(missing) && t.contains(misshapen), "{t}");
    assert!(t.contains("--allow-partial"), "{t}");
    assert!(!out.exists());

    let o = plec(&[
        "import",
        s(&broken),
        "--config",
        s(&config),
        "-o",
        s(&out),
        "--allow-partial",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("2 not copied"), "{}", text(&o));
    // What matched came from the file, the rest kept the compiled values:
    // the file holds the compiled values, so every parameter is as compiled.
    let compiled = read_plan(&plan_path);
    let imported = read_plan(&out);
    let params = |p: &Plan| -> Vec<(String, Vec<u8>)> {
        p.params
            .iter()
            .map(|p| (p.name.clone(), p.data.clone()))
            .collect()
    };
    assert_eq!(params(&compiled), params(&imported));
    assert!(imported.tables.iter().all(|t| !t.data.is_empty()));

    // Not a safetensors file: the file named, nothing written.
    let junk = write(d, "junk.safetensors", "not a safetensors file");
    let out2 = d.join("junk.bin");
    let o = plec(&["import", s(&junk), "--config", s(&config), "-o", s(&out2)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("junk.safetensors"), "{}", text(&o));
    assert!(!out2.exists());
}

/// Model kinds without TorchEasyRec names stop with the reason, and write
/// nothing.
#[test]
fn export_refuses_models_without_torch_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, reason) in [
        ("simple_multi_task_taobao", "no SimpleMultiTask model class"),
        ("dc2vr_taobao", "DC2VR is not named"),
    ] {
        let plan_path = d.join(format!("{name}.bin"));
        ok(&["compile", s(&example(name)), "-o", s(&plan_path)]);
        let file = d.join(format!("{name}.safetensors"));
        let o = plec(&[
            "export",
            s(&plan_path),
            "--format",
            "safetensors",
            "-o",
            s(&file),
        ]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        assert!(text(&o).contains(reason), "{name}: {}", text(&o));
        assert!(!file.exists(), "{name}");
    }
    // A second group MMoE does not read: TorchEasyRec still builds its
    // tables, plec does not.
    let first = "feature_names: \"age\" group_type: DEEP }\n";
    assert!(NORMS.contains(first));
    let body = NORMS.replacen(
        first,
        &format!(
            "{first}  feature_groups {{ group_name: \"extra\" feature_names: \"user_id\" group_type: DEEP }}\n"
        ),
        1,
    );
    let config = write(d, "two_groups.config", &body);
    let plan_path = d.join("two_groups.bin");
    ok(&["compile", s(&config), "-o", s(&plan_path)]);
    let file = d.join("two_groups.safetensors");
    let o = plec(&[
        "export",
        s(&plan_path),
        "--format",
        "safetensors",
        "-o",
        s(&file),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("does not read"), "{}", text(&o));
    assert!(!file.exists());
}

/// The NumPy PLE of `tests/export/ple_numpy.py` on the exported file and
/// the encoded eval rows against `plec predict`.
fn numpy_reference(d: &Path, trained: &Path, file: &Path, eval: &Path) {
    let inputs = d.join("inputs.npz");
    ok(&["export", s(trained), "--inputs", s(eval), "-o", s(&inputs)]);
    if !python_available("numpy, safetensors", "the NumPy PLE reference") {
        return;
    }
    let out = d.join("numpy.npz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export/ple_numpy.py");
    let o = Command::new("python3")
        .args([s(&script), s(file), s(&inputs), s(&out)])
        .output()
        .expect("python3");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "the NumPy reference failed\n{log}");
    let got: Vec<(String, Tensor)> = Tensor::read_npz(&out).expect("numpy.npz");
    let plan = read_plan(trained);
    let predicted = predict(d, trained, eval, "pred.parquet");
    let mut worst = 0f64;
    for (t, task) in plan.tasks.iter().enumerate() {
        let key = format!("probs_{t}");
        let (_, probs) = got
            .iter()
            .find(|(n, _)| *n == key)
            .unwrap_or_else(|| panic!("the reference wrote no {key}"));
        let probs: Vec<f64> = probs
            .flatten_all()
            .and_then(|p| p.to_vec1::<f64>())
            .expect("f64 probabilities");
        let column = format!("probs_{}", task.tower_name);
        let want = common::column(&predicted, &column);
        assert_eq!(probs.len(), want.len(), "{column}");
        for (r, (&a, &b)) in probs.iter().zip(&want).enumerate() {
            let rel = (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE);
            assert!(
                rel <= RTOL,
                "{column} row {r}: NumPy {a} vs plec predict {b} (relative {rel:e})"
            );
            worst = worst.max(rel);
        }
    }
    eprintln!(
        "ple_taobao: the NumPy PLE built from the state_dict agrees with plec predict on \
         {ROWS} rows, max relative difference {worst:.2e}\n{log}"
    );
}

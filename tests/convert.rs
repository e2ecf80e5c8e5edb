//! `plec convert`: EasyRec configs to TorchEasyRec ones.
//!
//! Two kinds of test. Golden cases (`golden/convert/*.config`, EasyRec
//! configs of our own) snapshot the written config and the diagnostics,
//! and the output must check without errors under TorchEasyRec's schema.
//! Then TorchEasyRec's own converter test
//! (`tzrec/tools/convert_easyrec_config_to_tzrec_config_test.py`): its
//! inputs and expected outputs are in `tests/convert/tzrec/`, and plec's
//! output must be the same message, compared parsed, field by field, except
//! at the paths listed per case, where plec follows EasyRec's behaviour on
//! purpose (each with the reason); every listed path must really differ,
//! so the list cannot go stale.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use plec::convert::{easyrec_to_tzrec, easyrec_to_tzrec_with, FgJson};
use plec::diag::{render_human, Severity};
use plec::pipeline::check_source;
use plec::schema::Schema;
use prost_reflect::{DynamicMessage, ReflectMessage, Value};

fn tzrec() -> Schema {
    Schema::builtin().expect("TorchEasyRec schema")
}

/// `path -> value` for every field set to something other than its
/// default (so "written as the default" and "not written" compare equal).
fn leaves(msg: &DynamicMessage, path: &str, out: &mut BTreeMap<String, String>) {
    for fd in msg.descriptor().fields() {
        if !msg.has_field(&fd) {
            continue;
        }
        let p = if path.is_empty() {
            fd.name().to_string()
        } else {
            format!("{path}.{}", fd.name())
        };
        match msg.get_field(&fd).as_ref() {
            Value::Message(m) => {
                out.insert(p.clone(), "{}".to_string());
                leaves(m, &p, out);
            }
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    let q = format!("{p}[{i}]");
                    match v {
                        Value::Message(m) => {
                            out.insert(q.clone(), "{}".to_string());
                            leaves(m, &q, out);
                        }
                        v => {
                            out.insert(q, format!("{v:?}"));
                        }
                    }
                }
            }
            v if *v == fd.default_value() => {}
            v => {
                out.insert(p, format!("{v:?}"));
            }
        }
    }
}

fn parse(schema: &Schema, text: &str, what: &str) -> DynamicMessage {
    let checked = check_source(schema, text);
    let bound = checked
        .bound
        .unwrap_or_else(|| panic!("{what} does not parse"));
    bound.message
}

/// `a[3].b[0].c` -> `a.b.c`.
fn plain(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Converts `input`, keeps the top-level fields of `expected`, compares.
fn same_as_tzrec(input: &str, expected: &str, differs_on_purpose: &[(&str, &str)]) {
    compare(input, None, expected, differs_on_purpose);
}

fn compare(input: &str, fg: Option<&str>, expected: &str, differs_on_purpose: &[(&str, &str)]) {
    let dir = Path::new("tests/convert/tzrec");
    let source = std::fs::read_to_string(dir.join(input)).expect("input");
    let want = std::fs::read_to_string(dir.join(expected)).expect("expected");
    let fg = fg.map(|f| {
        let text = std::fs::read_to_string(dir.join(f)).expect("fg.json");
        FgJson::parse(&text).expect("fg.json parses")
    });
    let converted = easyrec_to_tzrec_with(&source, fg.as_ref());
    let text = converted.text.expect("plec convert writes an output");
    let schema = tzrec();
    let ours = parse(&schema, &text, "plec's output");
    let theirs = parse(&schema, &want, expected);
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    leaves(&ours, "", &mut a);
    leaves(&theirs, "", &mut b);
    // Only the sections the expected output has.
    let roots: Vec<String> = b
        .keys()
        .map(|k| plain(k).split('.').next().unwrap_or("").to_string())
        .collect();
    a.retain(|k, _| roots.iter().any(|r| plain(k).split('.').next() == Some(r)));
    let mut unexplained = Vec::new();
    let mut seen = vec![false; differs_on_purpose.len()];
    for key in a.keys().chain(b.keys()) {
        if a.get(key) == b.get(key) {
            continue;
        }
        let p = plain(key);
        let allowed = differs_on_purpose
            .iter()
            .position(|(prefix, _)| p == *prefix || p.starts_with(&format!("{prefix}.")));
        match allowed {
            Some(i) => seen[i] = true,
            None => unexplained.push(format!(
                "{key}: plec {:?}, TorchEasyRec's converter {:?}",
                a.get(key),
                b.get(key)
            )),
        }
    }
    unexplained.dedup();
    assert!(
        unexplained.is_empty(),
        "{input} vs {expected}:\n{}",
        unexplained.join("\n")
    );
    for (i, (prefix, why)) in differs_on_purpose.iter().enumerate() {
        assert!(
            seen[i],
            "{input}: `{prefix}` no longer differs ({why}): drop it from the list"
        );
    }
}

/// EasyRec's DIN attention MLP when `seq_dnn` is not written; TorchEasyRec's
/// converter writes an empty MLP.
const ATTENTION: (&str, &str) = (
    "model_config.feature_groups.sequence_encoders.din_encoder.attn_mlp.hidden_units",
    "EasyRec's default attention MLP [128, 64, 32, 1]",
);
/// A tower's `loss_type` is its loss in EasyRec; TorchEasyRec's converter
/// reads only the `losses` list and leaves such towers without a loss.
fn towers_losses(model: &'static str) -> (&'static str, &'static str) {
    let path: &'static str = match model {
        "dbmtl" => "model_config.dbmtl.task_towers.losses",
        "mmoe" => "model_config.mmoe.task_towers.losses",
        "ple" => "model_config.ple.task_towers.losses",
        _ => "model_config.simple_multi_task.task_towers.losses",
    };
    (path, "the tower's loss_type is its loss")
}

#[test]
fn data_config_as_tzrec_converter() {
    same_as_tzrec("easyrec.config", "expected_data.config", &[]);
}

#[test]
fn features_as_tzrec_converter_without_fg_json() {
    same_as_tzrec(
        "easyrec.config",
        "expected_features_no_fg.config",
        &[
            (
                "feature_configs.id_feature.pooling",
                "the written `combiner: \"mean\"` is kept; TorchEasyRec's converter drops it",
            ),
            (
                "feature_configs.id_feature.separator",
                "the feature's own separator splits its values",
            ),
            (
                "feature_configs.raw_feature.separator",
                "the feature's own separator splits its values",
            ),
            (
                "feature_configs.lookup_feature.separator",
                "the feature's own separator splits its values",
            ),
            (
                "feature_configs.sequence_id_feature.pooling",
                "as for id features",
            ),
            (
                "feature_configs.sequence_id_feature.sequence_length",
                "TorchEasyRec's converter writes 1 (and logs an error); plec writes a bound \
                 and reports it",
            ),
            (
                "feature_configs.sequence_raw_feature.sequence_length",
                "as for id sequences",
            ),
        ],
    );
}

#[test]
fn features_as_tzrec_converter_with_fg_json() {
    compare(
        "easyrec.config",
        Some("fg.json"),
        "expected_features_fg.config",
        &[
            (
                "feature_configs.id_feature.pooling",
                "the written combiner is kept",
            ),
            (
                "feature_configs.id_feature.separator",
                "the feature's own separator",
            ),
            (
                "feature_configs.lookup_feature.separator",
                "the feature's own separator",
            ),

            (
                "feature_configs.sequence_id_feature.pooling",
                "the written combiner is kept",
            ),
            (
                "feature_configs.sequence_id_feature.sequence_length",
                "a sequence outside fg.json's sequence groups gets a bound (reported)",
            ),
            (
                "feature_configs.sequence_id_feature.sequence_delim",
                "and its EasyRec separator as the delimiter",
            ),
            (
                "feature_configs.sequence_feature.features.id_feature.pooling",
                "the written combiner is kept",
            ),
            (
                "feature_configs.sequence_feature.sequence_pk",
                "fg.json's sequence_pk is kept (TorchEasyRec's converter keeps it only with --use_old_fg off)",
            ),
        ],
    );
}

#[test]
fn dbmtl_as_tzrec_converter() {
    same_as_tzrec(
        "easyrec.config",
        "expected_model_dbmtl.config",
        &[
            ATTENTION,
            towers_losses("dbmtl"),
            (
                "model_config.dbmtl.expert_mlp",
                "EasyRec's DBMTL here has no experts; TorchEasyRec's converter writes an \
                 empty expert MLP",
            ),
            (
                "model_config.dbmtl.num_expert",
                "and `num_expert: 0` with it",
            ),
            (
                "model_config.dbmtl.task_towers.weight",
                "the tower's loss weight (2.0 for the second task) is kept",
            ),
        ],
    );
}

#[test]
fn simple_multi_task_as_tzrec_converter() {
    same_as_tzrec(
        "easyrec_simple_multi_task.config",
        "expected_model_simple_multi_task.config",
        &[ATTENTION, towers_losses("simple_multi_task")],
    );
}

#[test]
fn mmoe_as_tzrec_converter() {
    same_as_tzrec(
        "easyrec_mmoe.config",
        "expected_model_mmoe.config",
        &[
            ATTENTION,
            towers_losses("mmoe"),
            (
                "model_config.mmoe.gate_mlp",
                "EasyRec's MMoE gate is one linear layer (TorchEasyRec's without gate_mlp); \
                 TorchEasyRec's converter copies the expert MLP into the gate",
            ),
        ],
    );
}

#[test]
fn ple_as_tzrec_converter() {
    same_as_tzrec(
        "easyrec_ple.config",
        "expected_model_ple.config",
        &[
            ATTENTION,
            towers_losses("ple"),
            (
                "model_config.ple.extraction_networks",
                "TorchEasyRec's converter loses them (it overwrites the PLE it added them to)",
            ),
        ],
    );
}

/// Golden cases: the written config and the diagnostics, snapshotted; the
/// output checks without errors as TorchEasyRec.
#[test]
fn golden_conversions() {
    let schema = tzrec();
    let mut paths: Vec<_> = std::fs::read_dir("golden/convert")
        .expect("golden/convert")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "config"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "only {} convert cases", paths.len());
    for path in &paths {
        let source = std::fs::read_to_string(path).expect("read case");
        let converted = easyrec_to_tzrec(&source);
        let file = path.display().to_string();
        let text = converted.text.clone().unwrap_or_default();
        let checked = check_source(&schema, &text);
        let errors: Vec<_> = checked
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.message.clone())
            .collect();
        assert!(errors.is_empty(), "{file}: output has errors: {errors:?}");
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let snapshot = format!(
            "{}\n--- output ---\n{text}",
            render_human(&file, &source, &converted.diagnostics, false)
        );
        insta::with_settings!({
            snapshot_path => "../golden/snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("converted__{name}"), snapshot);
        });
    }
}

fn plec(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plec"))
        .args(args)
        .output()
        .expect("run plec");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A lossy conversion writes nothing without --allow-lossy (and leaves an
/// existing output alone), and writes with it.
#[test]
fn lossy_needs_allow_lossy() {
    let dir = std::env::temp_dir().join(format!("plec-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("out.config");
    std::fs::write(&out, "old").expect("write");
    let out_s = out.display().to_string();
    let input = "golden/convert/lossy.config";
    let (code, _, err) = plec(&["convert", input, "-o", &out_s]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nothing written"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "old");
    let (code, _, err) = plec(&["convert", input, "-o", &out_s, "--allow-lossy"]);
    assert_eq!(code, Some(0), "{err}");
    let written = std::fs::read_to_string(&out).expect("read");
    assert!(written.contains("model_config {"), "{written}");
    let leftovers = std::fs::read_dir(&dir).expect("dir").count();
    assert_eq!(leftovers, 1, "a temporary file was left beside the output");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TorchEasyRec config is not converted again.
#[test]
fn torcheasyrec_input_is_refused() {
    let out = std::env::temp_dir().join(format!("plec-convert-tz-{}.config", std::process::id()));
    let (code, _, err) = plec(&[
        "convert",
        "examples/ple_taobao.config",
        "-o",
        &out.display().to_string(),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("TorchEasyRec config already"), "{err}");
    assert!(!out.exists());
}

/// The EasyRec models TorchEasyRec has no class for (ESMM; the component
/// form with `backbone` blocks that AITM and the `*_backbone` samples use)
/// are one error each saying so, at the model block, and the backbone
/// blocks are not reported again as a dropped field.
#[test]
fn models_torcheasyrec_lacks_are_one_error_saying_so() {
    let features = r#"
feature_config {
  features { input_names: "user_id" feature_type: IdFeature hash_bucket_size: 10 embedding_dim: 4 }
}
"#;
    let esmm = format!(
        r#"{features}
model_config {{
  model_class: "ESMM"
  feature_groups {{ group_name: "all" feature_names: "user_id" wide_deep: DEEP }}
  esmm {{
    groups {{ input: "all" dnn {{ hidden_units: [8] }} }}
    ctr_tower {{ tower_name: "ctr" label_name: "clk" }}
    cvr_tower {{ tower_name: "cvr" label_name: "buy" }}
  }}
}}
"#
    );
    let backbone = format!(
        r#"{features}
model_config {{
  model_class: "MultiTaskModel"
  feature_groups {{ group_name: "all" feature_names: "user_id" wide_deep: DEEP }}
  backbone {{
    blocks {{ name: "all" inputs {{ feature_group_name: "all" }} input_layer {{ only_output_feature_list: false }} }}
  }}
  model_params {{
    task_towers {{ tower_name: "ctr" label_name: "clk" }}
  }}
}}
"#
    );
    for (source, message, not) in [
        (
            esmm.as_str(),
            "TorchEasyRec has no `esmm` model",
            "no converter",
        ),
        (
            backbone.as_str(),
            "EasyRec's backbone model (`model_class: \"MultiTaskModel\"` with `backbone` blocks) \
             has no TorchEasyRec counterpart",
            "model_config.backbone",
        ),
    ] {
        let converted = easyrec_to_tzrec(source);
        let errors: Vec<&str> = converted
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(errors, vec![message], "{source}");
        let all = render_human("in.config", source, &converted.diagnostics, false);
        assert!(!all.contains(not), "{all}");
        let helps: Vec<String> = converted
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .filter_map(|d| d.help.clone())
            .collect();
        assert!(helps[0].contains("its own converter leaves"), "{all}");
    }
}

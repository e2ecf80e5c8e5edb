//! EasyRec configs: `plec check --schema easyrec`, dialect detection in
//! plain `plec check` (and never on a TorchEasyRec config), and
//! `plec schema diff --schema easyrec`.

use std::process::Command;

use plec::pipeline::check_source_detecting;
use plec::schema::{Dialect, Schema};
use prost_reflect::ReflectMessage;

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

fn schemas() -> (Schema, Schema) {
    (
        Schema::builtin().expect("schema"),
        Schema::builtin_easyrec().expect("EasyRec schema"),
    )
}

#[test]
fn easyrec_schema_has_easyrecs_root() {
    let (_, easyrec) = schemas();
    assert!(easyrec.is_easyrec() && !easyrec.is_tzrec());
    let train = easyrec
        .pool
        .get_message_by_name("protos.TrainConfig")
        .expect("TrainConfig");
    assert!(train.get_field_by_name("optimizer_config").is_some());
    let model = easyrec
        .root
        .get_field_by_name("model_config")
        .expect("model");
    assert_eq!(model.number(), 14);
}

#[test]
fn no_torcheasyrec_example_is_taken_for_easyrec() {
    let (tzrec, easyrec) = schemas();
    let mut seen = 0;
    for entry in std::fs::read_dir("examples").expect("examples").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "config") {
            continue;
        }
        seen += 1;
        let source = std::fs::read_to_string(&path).expect("read");
        let checked = check_source_detecting(&tzrec, &easyrec, &source);
        assert_eq!(checked.detected, None, "{}", path.display());
    }
    assert!(seen >= 5, "{seen} examples");
}

/// A TorchEasyRec config with a few EasyRec habits pasted in stays a
/// TorchEasyRec config: its errors are TorchEasyRec's unknown fields.
#[test]
fn torcheasyrec_config_with_easyrec_fields_is_not_detected() {
    let (tzrec, easyrec) = schemas();
    let source = std::fs::read_to_string("examples/ple_taobao.config").expect("example");
    let edited = source
        .replacen(
            "train_config {",
            "train_config {\n  optimizer_config { use_moving_average: false }\n  sync_replicas: true",
            1,
        )
        .replacen(
            "eval_config {",
            "eval_config {\n  metrics_set { auc {} }",
            1,
        );
    assert_ne!(edited, source);
    let checked = check_source_detecting(&tzrec, &easyrec, &edited);
    assert_eq!(checked.detected, None);
    let unknown = checked
        .diagnostics
        .iter()
        .filter(|d| d.code == "plec::unknown-field")
        .count();
    assert!(unknown >= 3, "{:?}", checked.diagnostics);
}

#[test]
fn easyrec_config_is_detected_and_checked_as_easyrec() {
    let (tzrec, easyrec) = schemas();
    let source = std::fs::read_to_string("golden/easyrec/detect-ple.config").expect("case");
    let checked = check_source_detecting(&tzrec, &easyrec, &source);
    assert_eq!(checked.detected, Some(Dialect::EasyRec));
    assert_eq!(checked.diagnostics.len(), 1, "{:?}", checked.diagnostics);
    let d = &checked.diagnostics[0];
    assert_eq!(d.code, "plec::easyrec-dialect");
    let help = d.help.as_deref().unwrap_or("");
    for needle in [
        "`feature_config`",
        "`train_config.optimizer_config`",
        "`model_config.model_class`",
        "plec check --schema easyrec",
        "plec convert",
        "not built yet",
    ] {
        assert!(help.contains(needle), "{needle} not in {help}");
    }
    let bound = checked.bound.expect("bound");
    assert_eq!(
        bound.message.descriptor().full_name(),
        "protos.EasyRecConfig"
    );
}

#[test]
fn check_cli_detects_and_takes_schema_easyrec() {
    let case = "golden/easyrec/detect-ple.config";
    let (code, out, _) = plec(&["check", case]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("plec::easyrec-dialect"), "{out}");
    assert!(
        out.contains("1 warning (an EasyRec config, checked under EasyRec's schema"),
        "{out}"
    );
    let (code, out, _) = plec(&["check", case, "--deny-warnings"]);
    assert_eq!(code, Some(1), "{out}");
    let (code, out, _) = plec(&["check", "--schema", "easyrec", case]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("0 errors, 0 warnings (EasyRec's schema: syntax and schema checks only)"),
        "{out}"
    );
    let (code, out, _) = plec(&["check", "--schema", "tzrec", case]);
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("easyrec-dialect"), "{out}");
    assert!(out.contains("plec::unknown-field"), "{out}");
    let (code, out, _) = plec(&[
        "check",
        "--schema",
        "easyrec",
        "golden/easyrec/schema-errors.config",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("did you mean `hidden_units`?"), "{out}");
    let (code, _, err) = plec(&[
        "check",
        "--schema",
        "easyrec",
        "--proto-path",
        "proto",
        case,
    ]);
    assert_eq!(code, Some(2), "{err}");
    let (code, out, _) = plec(&["explain", "easyrec-dialect"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("plec check --schema easyrec"), "{out}");
}

#[test]
fn schema_diff_against_own_easyrec_tree_is_empty() {
    let (code, out, err) = plec(&[
        "schema",
        "diff",
        "--schema",
        "easyrec",
        "--proto-path",
        "proto",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("agree"), "{out}");
}

#[test]
fn schema_diff_reports_a_changed_easyrec_tree() {
    let dir = std::env::temp_dir().join(format!("plec-easyrec-diff-{}", std::process::id()));
    let protos = dir.join("easy_rec/python/protos");
    std::fs::create_dir_all(&protos).expect("mkdir");
    for entry in std::fs::read_dir("proto/easyrec/protos")
        .expect("protos")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).expect("read");
        // The layout of EasyRec's own checkout.
        let text = text.replace("\"easyrec/protos/", "\"easy_rec/python/protos/");
        std::fs::write(protos.join(entry.file_name()), text).expect("write");
    }
    let ple = protos.join("ple.proto");
    let text = std::fs::read_to_string(&ple).expect("ple.proto");
    let changed = text.replace(
        "optional float l2_regularization = 3 [default = 1e-4];",
        "optional float l2_regularization = 3 [default = 1e-5];",
    );
    assert_ne!(changed, text);
    std::fs::write(&ple, changed).expect("write");
    let dir_arg = dir.display().to_string();
    let (code, out, _) = plec(&[
        "schema",
        "diff",
        "--schema",
        "easyrec",
        "--proto-path",
        &dir_arg,
    ]);
    let (tz_code, _, tz_err) = plec(&["schema", "diff", "--proto-path", &dir_arg]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("field protos.PLE.l2_regularization (default 0.0001 built in, 1e-5 in tree)"),
        "{out}"
    );
    assert!(out.contains("1 difference"), "{out}");
    // Without --schema easyrec, plec says which flag compares such a tree.
    assert_eq!(tz_code, Some(2));
    assert!(tz_err.contains("--schema easyrec"), "{tz_err}");
}

use super::*;

#[test]
fn builtin_schema_checks_every_message() {
    let schema = Schema::builtin().expect("schema");
    assert!(schema
        .pool
        .get_extension_by_name("plec.unchecked")
        .is_some());
    let unchecked: Vec<String> = schema
        .pool
        .all_messages()
        .filter(|m| schema.is_unchecked(m))
        .map(|m| m.full_name().to_string())
        .collect();
    assert!(unchecked.is_empty(), "unchecked: {unchecked:?}");
    let deepfm = schema
        .pool
        .get_message_by_name("tzrec.protos.DeepFM")
        .expect("DeepFM");
    assert!(deepfm.get_field_by_name("wide_embedding_dim").is_some());
}

#[test]
fn schema_diff_of_builtin_with_itself_is_empty() {
    let schema = Schema::builtin().expect("schema");
    assert!(diff::diff(&schema.pool, &schema.pool).is_empty());
}

#[test]
fn schema_diff_reports_added_removed_and_changed() {
    let dir = std::env::temp_dir().join(format!("plec-diff-{}", std::process::id()));
    let protos = dir.join("tzrec/protos");
    std::fs::create_dir_all(&protos).expect("mkdir");
    std::fs::write(
        protos.join("a.proto"),
        "syntax = \"proto2\";\npackage tzrec.protos;\nmessage EasyRecConfig {\n  optional uint32 x = 2 [default = 3];\n  optional string y = 3;\n}\nenum E { A = 0; }\n",
    )
    .expect("write");
    let tree = Schema::from_proto_path(&dir, None).expect("compile");
    let found = diff::diff(&Schema::builtin().expect("schema").pool, &tree.pool);
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|l| l.contains("only in tree:  field tzrec.protos.EasyRecConfig.x")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.contains("only built in: field tzrec.protos.EasyRecConfig.train_config")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.contains("only in tree:  enum tzrec.protos.E")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.contains("only built in: message tzrec.protos.IdFeature")),
        "{text:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

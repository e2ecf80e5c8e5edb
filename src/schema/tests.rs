use super::*;

#[test]
fn builtin_schema_marks_unchecked_messages() {
    let schema = Schema::builtin().expect("schema");
    let deepfm = schema
        .pool
        .get_message_by_name("tzrec.protos.DeepFM")
        .expect("DeepFM is known by name");
    assert!(schema
        .pool
        .get_extension_by_name("plec.unchecked")
        .is_some());
    assert!(schema.is_unchecked(&deepfm));
    assert!(!schema.is_unchecked(&schema.root));
}

//! `plec schema diff`: the built-in schema agrees with the `proto/` tree it
//! is compiled from (exit 0), and a tree with one changed default, number or
//! enum value differs (exit 1, each difference named).

use std::path::Path;
use std::process::Command;

fn diff(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plec"))
        .args(["schema", "diff", "--proto-path"])
        .arg(dir)
        .output()
        .expect("run plec");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = entry.path();
        let dest = to.join(entry.file_name());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

#[test]
fn builtin_agrees_with_its_own_protos() {
    let (code, text) = diff(Path::new("proto"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("agree"), "{text}");
}

#[test]
fn changed_tree_is_reported() {
    let dir = std::env::temp_dir().join(format!("plec-schema-diff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(Path::new("proto"), &dir);
    let model = dir.join("tzrec/protos/model.proto");
    let text = std::fs::read_to_string(&model).expect("model.proto");
    let text = text
        .replace(
            "optional uint32 num_class = 2 [default = 1];",
            "optional uint32 num_class = 2 [default = 2];",
        )
        .replace("JAGGED_SEQUENCE = 3;", "JAGGED_SEQUENCE = 4;");
    std::fs::write(&model, text).expect("write");
    let (code, out) = diff(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("field tzrec.protos.ModelConfig.num_class (default 1 built in, 2 in tree)"),
        "{out}"
    );
    assert!(
        out.contains("enum value tzrec.protos.FeatureGroupType.JAGGED_SEQUENCE (number 3 built in, 4 in tree)"),
        "{out}"
    );
    assert!(out.contains("2 differences"), "{out}");
}

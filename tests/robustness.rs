//! Property tests: the parser and binder never panic, whatever the input —
//! random bytes, random printable text, and random edits of valid configs —
//! and every diagnostic's labels lie inside the text. Inputs go through
//! EasyRec dialect detection as in `plec check`, and an EasyRec config is
//! among the examples edited, so the detection path is exercised too.

use std::sync::OnceLock;

use plec::pipeline::check_source_detecting;
use plec::schema::Schema;
use proptest::prelude::*;

fn schemas() -> &'static (Schema, Schema) {
    static SCHEMAS: OnceLock<(Schema, Schema)> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        (
            Schema::builtin().expect("schema"),
            Schema::builtin_easyrec().expect("EasyRec schema"),
        )
    })
}

fn examples() -> Vec<String> {
    let mut out = Vec::new();
    for name in [
        "examples/ple_taobao.config",
        "examples/mmoe_taobao.config",
        "examples/dbmtl_taobao.config",
        "examples/simple_multi_task_taobao.config",
        "golden/easyrec/detect-ple.config",
    ] {
        out.push(std::fs::read_to_string(name).expect("example"));
    }
    out
}

fn assert_well_formed(source: &str) {
    let (tzrec, easyrec) = schemas();
    let checked = check_source_detecting(tzrec, easyrec, source);
    for d in &checked.diagnostics {
        assert!(!d.code.is_empty());
        assert!(!d.message.is_empty());
        for l in &d.labels {
            assert!(l.span.start <= l.span.end, "{d:?}");
            assert!(l.span.end <= source.len(), "{d:?}");
        }
    }
    // Rendering must not panic either.
    let _ = plec::diag::render_human("case", source, &checked.diagnostics, false);
    let _ = plec::diag::render_json("case", source, &checked.diagnostics);
}

/// A random edit: delete, insert or replace a byte range.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, usize, String),
}

fn apply(text: &str, edit: &Edit) -> String {
    let clamp = |i: usize| {
        let mut i = i % (text.len() + 1);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match edit {
        Edit::Delete(a, n) => {
            let a = clamp(*a);
            let b = clamp(a + n % 40);
            format!("{}{}", &text[..a], &text[b.max(a)..])
        }
        Edit::Insert(a, s) => {
            let a = clamp(*a);
            format!("{}{}{}", &text[..a], s, &text[a..])
        }
        Edit::Replace(a, n, s) => {
            let a = clamp(*a);
            let b = clamp(a + n % 20).max(a);
            format!("{}{}{}", &text[..a], s, &text[b..])
        }
    }
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let token = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("<".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(":".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("#".to_string()),
        Just("\\".to_string()),
        Just("-".to_string()),
        Just("0x".to_string()),
        Just("1e".to_string()),
        Just(" inf ".to_string()),
        Just("\n".to_string()),
        "[a-z_]{1,8}",
        "[0-9.eE+-]{1,6}",
        "\\PC{0,4}",
    ];
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), token.clone()).prop_map(|(a, s)| Edit::Insert(a, s)),
        (any::<usize>(), any::<usize>(), token).prop_map(|(a, n, s)| Edit::Replace(a, n, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert_well_formed(&text);
    }

    #[test]
    fn random_text_never_panics(text in "[ -~\n\t]{0,300}") {
        assert_well_formed(&text);
    }

    #[test]
    fn random_edits_of_examples_never_panic(
        which in 0usize..5,
        edits in proptest::collection::vec(edit_strategy(), 1..6),
    ) {
        let examples = examples();
        let mut text = examples[which].clone();
        for e in &edits {
            text = apply(&text, e);
        }
        assert_well_formed(&text);
    }
}

use super::ast::*;
use super::parse;

fn doc(src: &str) -> Document {
    let parsed = parse(src);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    parsed.document.expect("document")
}

#[test]
fn all_constructs() {
    let d = doc(r#"
# leading comment
a: 1 b: -2.5e3, c: "x" 'y' "z";
m { n: true } m2: { } m3 < k: 0x10 >
l: [1, 2, 3] lm [ { x: 1 }, { x: 2 } ]
e: ENUM_VALUE  # trailing
[ext.name] { }
f: inf g: -nan h: .5 i: 1.0f
"#);
    let names: Vec<String> = d.fields.iter().map(|f| f.name.display()).collect();
    assert_eq!(
        names,
        [
            "a",
            "b",
            "c",
            "m",
            "m2",
            "m3",
            "l",
            "lm",
            "e",
            "[ext.name]",
            "f",
            "g",
            "h",
            "i"
        ]
    );
    assert_eq!(d.comments.len(), 2);
    match &d.fields[2].value {
        Value::Scalar(Scalar {
            kind: ScalarKind::String(s),
            ..
        }) => assert_eq!(s, b"xyz"),
        other => panic!("{other:?}"),
    }
    match &d.fields[7].value {
        Value::List(l) => assert_eq!(l.items.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(!d.fields[7].has_colon);
}

fn codes(src: &str) -> Vec<String> {
    parse(src).diagnostics.into_iter().map(|d| d.code).collect()
}

#[test]
fn syntax_errors() {
    assert_eq!(codes("a: \"abc\nb: 1"), ["plec::unterminated-string"]);
    assert_eq!(codes("m { a: 1"), ["plec::unclosed-bracket"]);
    assert_eq!(codes("a: 1 }"), ["plec::stray-bracket"]);
    assert_eq!(codes("m { a: }"), ["plec::missing-value"]);
    assert_eq!(
        codes("a: 1.2.3 b: 09"),
        ["plec::malformed-number", "plec::malformed-number"]
    );
    assert_eq!(codes("m { a }"), ["plec::missing-value"]);
}

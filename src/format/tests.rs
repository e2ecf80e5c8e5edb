use super::format;

fn fmt(s: &str) -> String {
    match format(s) {
        Ok(out) => out,
        Err(e) => panic!("syntax errors: {e:?}"),
    }
}

#[test]
fn canonical_layout() {
    let src = "a:1 ;b <c: 'x' 'y'>,  d: {}\nlist:[1,2 ,3] m {n: -1.5e3 }";
    insta::assert_snapshot!(fmt(src), @r"
    a: 1
    b {
      c: 'x' 'y'
    }
    d {}
    list: [1, 2, 3]
    m {
      n: -1.5e3
    }
    ");
}

#[test]
fn comments_stay_where_they_belong() {
    let src = "# head\n\n\n\nmodel_config {  # open\n  # before a\n    a: 1 # after a\n\n\n  b: [ # in list\n 1, # one\n 2\n # before close\n ]\n  # end of block\n} # after block\n# tail\n";
    insta::assert_snapshot!(fmt(src), @r"
    # head

    model_config {  # open
      # before a
      a: 1  # after a

      b: [  # in list
        1,  # one
        2
        # before close
      ]
      # end of block
    }  # after block
    # tail
    ");
}

#[test]
fn long_lists_and_message_lists_break() {
    let names: Vec<String> = (0..12).map(|i| format!("\"feature_{i}\"")).collect();
    let src = format!("f: [{}]\ng [{{a: 1}}, {{b: 2}}]\n", names.join(","));
    insta::assert_snapshot!(fmt(&src));
}

#[test]
fn joined_strings_keep_their_lines() {
    let src = "s: \"a\"\n   \"b\" \"c\"\n";
    assert_eq!(fmt(src), "s: \"a\"\n    \"b\" \"c\"\n");
}

#[test]
fn idempotent_on_its_own_output() {
    let src = "x {  # c\n y: 'a' # d\n\n\n z < w: 1 >; }\n";
    let once = fmt(src);
    assert_eq!(fmt(&once), once);
}

#[test]
fn syntax_errors_stop_formatting() {
    assert!(format("a: \"open\n").is_err());
    assert_eq!(fmt(""), "");
}

//! `plec fmt`: every golden and example config (and random edits of them)
//! formats to text that binds to the same message, byte for byte, keeps
//! every comment in order, and formats to itself again; every one of them
//! is formatted but those on a short exemption list, each for a reason that
//! is checked; `--check` prints a unified diff and exits 1; a plain run
//! rewrites the file in place.

mod common;

use std::path::{Path, PathBuf};

use common::{plec, s, text, write};
use plec::format::format;
use plec::schema::{bind, Schema};
use plec::syntax::parse;
use proptest::prelude::*;

fn configs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            configs(&path, out);
        } else if path.extension().is_some_and(|e| e == "config") {
            out.push(path);
        }
    }
}

/// Every golden and example config that parses (syntax cases do not).
fn sources() -> Vec<(String, String)> {
    let mut paths = Vec::new();
    configs(Path::new("golden"), &mut paths);
    configs(Path::new("examples"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let src = std::fs::read_to_string(&p).ok()?;
            let ok = parse(&src).diagnostics.iter().all(|d| !d.is_error());
            ok.then(|| (p.display().to_string(), src))
        })
        .collect()
}

/// What a text means: the bound message's bytes, the codes of the schema
/// findings, and the comments in order.
fn meaning(schema: &Schema, src: &str) -> (Vec<u8>, Vec<String>, Vec<String>) {
    let parsed = parse(src);
    let doc = parsed.document.expect("parses");
    let bound = bind(schema, &doc, src);
    let bytes = prost::Message::encode_to_vec(&bound.message);
    // fmt writes the `:` a scalar needs, so a missing colon is the one
    // finding it may remove.
    let mut codes: Vec<String> = bound
        .diagnostics
        .iter()
        .map(|d| d.code.clone())
        .filter(|c| c != "plec::missing-colon")
        .collect();
    codes.sort();
    let comments = doc
        .comments
        .iter()
        .map(|c| c.text.trim_end().to_string())
        .collect();
    (bytes, codes, comments)
}

fn formatted(src: &str) -> String {
    match format(src) {
        Ok(f) => f,
        Err(e) => panic!("format failed: {e:?}"),
    }
}

fn assert_same_meaning(schema: &Schema, name: &str, src: &str) {
    let out = formatted(src);
    let before = meaning(schema, src);
    let after = meaning(schema, &out);
    assert!(
        before.0 == after.0,
        "{name}: bound bytes differ after fmt:\n{out}"
    );
    assert_eq!(before.1, after.1, "{name}: findings differ after fmt");
    assert_eq!(before.2, after.2, "{name}: comments differ after fmt");
    assert_eq!(formatted(&out), out, "{name}: fmt is not idempotent");
}

#[test]
fn every_config_keeps_its_meaning_and_is_idempotent() {
    let schema = Schema::builtin().expect("schema");
    let all = sources();
    assert!(all.len() >= 100, "only {} configs", all.len());
    for (name, src) in &all {
        assert_same_meaning(&schema, name, src);
    }
}

/// Why a config under `golden/` or `examples/` is not in fmt's layout.
enum Exempt {
    /// A syntax case: it does not parse, so fmt refuses it.
    DoesNotParse,
    /// fmt would remove the finding (this code) the case is about.
    RemovesFinding(&'static str),
    /// The case is about layout fmt rewrites: each snippet is in the case
    /// and not in its formatted text.
    Layout(&'static [&'static str]),
}

/// The configs left out of fmt's layout, and why (a path ending in `/`
/// covers its directory). Every other config must be formatted.
const EXEMPT: &[(&str, Exempt)] = &[
    // Syntax-error cases: fmt cannot parse them, by design.
    ("golden/syntax/", Exempt::DoesNotParse),
    // fmt writes the scalar's missing `:`, the finding this case is about.
    (
        "golden/schema/missing_colon.config",
        Exempt::RemovesFinding("plec::missing-colon"),
    ),
    // Every text-format variation the parser accepts: `< >` blocks, `;` and
    // `,` separators, a `:` before a block; fmt would write them away.
    (
        "golden/valid/text_format_variety.config",
        Exempt::Layout(&[
            "train_config <",
            "constant_learning_rate < >",
            "\"data/eval.parquet\";",
            "\"experiments/variety\",",
            "sparse_optimizer: {",
        ]),
    ),
];

/// `plec fmt --check` passes on every golden and example config but the
/// exempt ones, and each exemption still holds for its stated reason (and
/// still names a file), so the list cannot silently rot.
#[test]
fn every_config_is_formatted_or_exempt_for_its_reason() {
    let schema = Schema::builtin().expect("schema");
    let codes = |src: &str| -> Vec<String> {
        plec::pipeline::check_source(&schema, src)
            .diagnostics
            .into_iter()
            .map(|d| d.code)
            .collect()
    };
    let mut paths = Vec::new();
    configs(Path::new("golden"), &mut paths);
    configs(Path::new("examples"), &mut paths);
    paths.sort();
    assert!(paths.len() >= 150, "only {} configs", paths.len());
    let mut used = vec![0; EXEMPT.len()];
    let mut formatted_paths = Vec::new();
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.display().to_string().replace('\\', "/");
        let src = std::fs::read_to_string(path).expect("read config");
        let out = format(&src);
        let exempt = EXEMPT.iter().position(|(p, _)| {
            if p.ends_with('/') {
                name.starts_with(p)
            } else {
                name == *p
            }
        });
        let Some(i) = exempt else {
            match out {
                Ok(f) if f == src => formatted_paths.push(name),
                Ok(_) => failures.push(format!("{name}: not formatted (run `plec fmt {name}`)")),
                Err(_) => failures.push(format!("{name}: does not parse")),
            }
            continue;
        };
        used[i] += 1;
        let holds = match (&EXEMPT[i].1, &out) {
            (Exempt::DoesNotParse, out) => out.is_err(),
            (Exempt::RemovesFinding(code), Ok(f)) => {
                codes(&src).iter().any(|c| c == code) && !codes(f).iter().any(|c| c == code)
            }
            (Exempt::Layout(snippets), Ok(f)) => {
                f != &src && snippets.iter().all(|s| src.contains(s) && !f.contains(s))
            }
            (_, Err(_)) => false,
        };
        if !holds {
            failures.push(format!(
                "{name}: exempt from fmt, but no longer for its stated reason"
            ));
        }
    }
    for (n, (p, _)) in used.iter().zip(EXEMPT) {
        if *n == 0 {
            failures.push(format!("exemption {p} names no config"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The command itself agrees, for all of them at once.
    let mut args = vec!["fmt", "--check"];
    args.extend(formatted_paths.iter().map(String::as_str));
    let o = plec(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// One random edit that keeps the text parseable most of the time; edits
/// that break it are skipped.
fn edit(src: &str, op: u8, at: usize, width: usize) -> String {
    let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return src.to_string();
    }
    let k = at % lines.len();
    let pad = [" ", "\t", "    ", ""][width % 4].repeat(width % 7);
    match op % 6 {
        0 => lines[k] = format!("{pad}{}", lines[k].trim_start()),
        1 => lines.insert(k, pad.clone()),
        2 => lines.insert(k, format!("{pad}# edit {k}")),
        3 if k + 1 < lines.len() && !lines[k].contains('#') => {
            let next = lines.remove(k + 1);
            lines[k] = format!("{} {}", lines[k], next.trim_start());
        }
        4 if lines[k].trim_end().ends_with('{') => {
            let l = lines[k]
                .trim_end()
                .trim_end_matches('{')
                .trim_end()
                .to_string();
            lines[k] = format!("{l}: {{");
        }
        5 if lines[k].contains(": ")
            && !lines[k].contains('#')
            && !lines[k].trim_end().ends_with(['{', '[', ',']) =>
        {
            lines[k].push_str([";", ","][width % 2]);
        }
        _ => {}
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn random_edits_keep_meaning(
        pick in any::<usize>(),
        edits in proptest::collection::vec((any::<u8>(), any::<usize>(), 0usize..16), 1..12),
    ) {
        let schema = Schema::builtin().expect("schema");
        let all = sources();
        let (name, src) = &all[pick % all.len()];
        let mut edited = src.clone();
        for (op, at, width) in edits {
            edited = edit(&edited, op, at, width);
        }
        prop_assume!(parse(&edited).diagnostics.iter().all(|d| !d.is_error()));
        assert_same_meaning(&schema, name, &edited);
    }
}

#[test]
fn check_prints_a_diff_and_a_plain_run_rewrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "m.config",
        "model_config{ # the model\nple {task_towers {tower_name:\"ctr\" hidden_units:[64,32]}}}\n",
    );
    let o = plec(&["fmt", "--check", s(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let diff = String::from_utf8_lossy(&o.stdout).replace(s(&path), "m.config");
    insta::assert_snapshot!(diff);
    let o = plec(&["fmt", s(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = plec(&["fmt", "--check", s(&path)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let bad = write(dir.path(), "bad.config", "a { b: 1\n");
    let before = std::fs::read_to_string(&bad).expect("read");
    let o = plec(&["fmt", s(&bad)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("not formatted {}: it does not parse", s(&bad))),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&bad).expect("read"), before);
}

//! Golden tests: every `golden/<stage>/<case>.config` is checked, and the
//! rendered human output and JSON lines are snapshotted with insta under
//! `golden/snapshots/`. Each case also states what it must report in
//! `# expect: CODE@LINE` comments; the errors and warnings found must be
//! exactly those (advice is not listed).

use std::path::{Path, PathBuf};

use plec::diag::{render_human, render_json, LineIndex, Severity};
use plec::pipeline::check_source;
use plec::schema::Schema;

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            cases(&path, out);
        } else if path.extension().is_some_and(|e| e == "config") {
            out.push(path);
        }
    }
}

fn expectations(source: &str) -> Vec<String> {
    let mut out: Vec<String> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# expect:"))
        .map(|e| e.trim().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn golden_cases() {
    let schema = Schema::builtin().expect("built-in schema");
    let mut paths = Vec::new();
    cases(Path::new("golden"), &mut paths);
    paths.sort();
    assert!(paths.len() >= 40, "only {} golden cases", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let source = std::fs::read_to_string(path).expect("read case");
        let checked = check_source(&schema, &source);
        let index = LineIndex::new(&source);
        let mut found: Vec<String> = checked
            .diagnostics
            .iter()
            .filter(|d| d.severity != Severity::Advice)
            .map(|d| {
                let line = d.primary_span().map_or(0, |s| index.position(s.start).0);
                format!("{}@{line}", d.code)
            })
            .collect();
        found.sort();
        let expected = expectations(&source);
        if found != expected {
            failures.push(format!(
                "{}:\n  expected {expected:?}\n  found    {found:?}",
                path.display()
            ));
        }
        let name = path
            .strip_prefix("golden")
            .unwrap_or(path)
            .with_extension("")
            .display()
            .to_string()
            .replace(['/', '\\'], "__");
        let file = path.display().to_string();
        let snapshot = format!(
            "{}\n--- json ---\n{}",
            render_human(&file, &source, &checked.diagnostics, false),
            render_json(&file, &source, &checked.diagnostics)
        );
        insta::with_settings!({
            snapshot_path => "../golden/snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, snapshot);
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every code a golden case produces is explained by `plec explain`.
#[test]
fn every_reported_code_is_explained() {
    let schema = Schema::builtin().expect("built-in schema");
    let mut paths = Vec::new();
    cases(Path::new("golden"), &mut paths);
    let mut codes = std::collections::BTreeSet::new();
    for path in &paths {
        let source = std::fs::read_to_string(path).expect("read case");
        for d in check_source(&schema, &source).diagnostics {
            codes.insert(d.code);
        }
    }
    for code in &codes {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plec"))
            .args(["explain", code])
            .output()
            .expect("run plec explain");
        assert!(out.status.success(), "no explanation for {code}");
        assert!(out.stdout.len() > 80, "explanation of {code} is too short");
    }
    assert!(codes.len() >= 40, "{} codes", codes.len());
}

/// `golden/compile/*.config`: configs `check` accepts but `compile` must
/// refuse, naming every block plec cannot run faithfully. The diagnostics
/// of the build are snapshotted like check's; `# compile-expect: CODE@LINE`
/// lines state exactly which errors must be found.
#[test]
fn compile_golden_cases() {
    let mut paths = Vec::new();
    cases(Path::new("golden/compile"), &mut paths);
    paths.sort();
    assert!(paths.len() >= 3, "only {} compile cases", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let source = std::fs::read_to_string(path).expect("read case");
        let diagnostics = match plec::pipeline::build(&source, Default::default()) {
            Ok(_) => {
                failures.push(format!("{}: compiled, but must not", path.display()));
                continue;
            }
            Err(plec::pipeline::BuildError::Diagnostics(d)) => d,
            Err(e) => {
                failures.push(format!("{}: not a diagnostic: {e}", path.display()));
                continue;
            }
        };
        let index = LineIndex::new(&source);
        let mut found: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                let line = d.primary_span().map_or(0, |s| index.position(s.start).0);
                format!("{}@{line}", d.code)
            })
            .collect();
        found.sort();
        let mut expected: Vec<String> = source
            .lines()
            .filter_map(|l| l.trim().strip_prefix("# compile-expect:"))
            .map(|e| e.trim().to_string())
            .collect();
        expected.sort();
        if found != expected {
            failures.push(format!(
                "{}:\n  expected {expected:?}\n  found    {found:?}",
                path.display()
            ));
        }
        for d in diagnostics.iter().filter(|d| d.is_error()) {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_plec"))
                .args(["explain", &d.code])
                .output()
                .expect("run plec explain");
            if !out.status.success() || out.stdout.len() < 80 {
                failures.push(format!("no explanation for {}", d.code));
            }
        }
        let name = path
            .strip_prefix("golden")
            .unwrap_or(path)
            .with_extension("")
            .display()
            .to_string()
            .replace(['/', '\\'], "__");
        let file = path.display().to_string();
        let snapshot = format!(
            "{}\n--- json ---\n{}",
            render_human(&file, &source, &diagnostics, false),
            render_json(&file, &source, &diagnostics)
        );
        insta::with_settings!({
            snapshot_path => "../golden/snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("build__{name}"), snapshot);
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every model kind of the schema's `ModelConfig.model` oneof has a case in
/// `golden/kinds/shared/` that plants one mistake per shared rule (the
/// rules every kind gets), each expected at its line.
#[test]
fn every_model_kind_has_a_shared_rules_case() {
    let pool =
        prost_reflect::DescriptorPool::decode(plec::proto::DESCRIPTOR_SET).expect("descriptor set");
    let mc = pool
        .get_message_by_name("tzrec.protos.ModelConfig")
        .expect("ModelConfig");
    let oneof = mc
        .oneofs()
        .find(|o| o.name() == "model")
        .expect("oneof model");
    let shared = [
        "plec::unknown-feature",
        "plec::bucket-config",
        "plec::embedding-dim",
        "plec::duplicate-feature",
        "plec::duplicate-group",
    ];
    let mut missing = Vec::new();
    let mut kinds = 0;
    for field in oneof.fields() {
        kinds += 1;
        let kind = field.name();
        let path =
            Path::new("golden/kinds/shared").join(format!("{}.config", kind.replace('_', "-")));
        let Ok(source) = std::fs::read_to_string(&path) else {
            missing.push(format!("{kind}: no {}", path.display()));
            continue;
        };
        if !source
            .lines()
            .any(|l| l.trim().starts_with(&format!("{kind} {{")))
        {
            missing.push(format!(
                "{kind}: {} has no `{kind} {{` block",
                path.display()
            ));
        }
        let expected = expectations(&source);
        for code in shared {
            if !expected.iter().any(|e| e.starts_with(&format!("{code}@"))) {
                missing.push(format!("{kind}: {} plants no {code}", path.display()));
            }
        }
    }
    assert!(kinds >= 27, "only {kinds} model kinds");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

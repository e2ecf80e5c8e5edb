//! `plec check --format sarif|github`: the SARIF log validates against the
//! published SARIF 2.1.0 schema (`tests/data/sarif-schema-2.1.0.json`, from
//! OASIS' sarif-spec repository) and the GitHub lines follow the workflow
//! command syntax; both rendered outputs are snapshotted.

mod common;

use common::{plec, text};

const CASES: &[&str] = &[
    "golden/lint/many_mistakes.config",
    "golden/schema/oneof_conflict_feature.config",
    "golden/syntax/unterminated_string.config",
];

fn sarif_schema() -> jsonschema::Validator {
    let raw = std::fs::read_to_string("tests/data/sarif-schema-2.1.0.json").expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&raw).expect("schema is JSON");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

#[test]
fn sarif_validates_against_the_schema() {
    let validator = sarif_schema();
    let mut args = vec!["check", "--format", "sarif"];
    args.extend(CASES);
    let o = plec(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).expect("SARIF is JSON");
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "SARIF schema errors:\n{}",
        errors.join("\n")
    );
    let results = log["runs"][0]["results"].as_array().expect("results");
    assert!(results.len() >= 5, "{} results", results.len());
    // Every result names a rule the driver lists, and a 1-based region.
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    for r in results {
        let i = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
        let region = &r["locations"][0]["physicalLocation"]["region"];
        assert!(region["startLine"].as_u64().expect("startLine") >= 1);
    }
    // A conflict keeps its second place as a related location.
    assert!(results.iter().any(|r| r["relatedLocations"].is_array()));
    // A clean file is a valid log with no results.
    let o = plec(&["check", "--format", "sarif", "golden/lint/clean-ple.config"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let clean: serde_json::Value = serde_json::from_slice(&o.stdout).expect("SARIF is JSON");
    assert!(validator.is_valid(&clean));
    assert_eq!(clean["runs"][0]["results"], serde_json::json!([]));
}

#[test]
fn sarif_snapshot() {
    let o = plec(&["check", "--format", "sarif", CASES[1]]);
    insta::assert_snapshot!(String::from_utf8_lossy(&o.stdout));
}

#[test]
fn github_lines_follow_the_workflow_command_syntax() {
    let mut args = vec!["check", "--format", "github"];
    args.extend(CASES);
    let o = plec(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for line in out.lines() {
        let (command, rest) = line
            .strip_prefix("::")
            .and_then(|l| l.split_once(' '))
            .unwrap_or_else(|| panic!("not a workflow command: {line}"));
        assert!(["error", "warning", "notice"].contains(&command), "{line}");
        let (props, message) = rest.split_once("::").expect("properties::message");
        assert!(!message.is_empty() && !message.contains('\n'));
        for prop in props.split(',') {
            let (key, value) = prop.split_once('=').expect("key=value");
            assert!(
                ["file", "line", "col", "endLine", "endColumn", "title"].contains(&key),
                "{line}"
            );
            assert!(!value.contains(':'), "unescaped `:` in {line}");
        }
    }
    insta::assert_snapshot!(out);
}

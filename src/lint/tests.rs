//! Lint rule tests: each rule on a small config holding its mistake,
//! checking the code and the 1-based line of the primary label; the
//! examples lint clean; every code has an explanation.

use crate::diag::{Diagnostic, LineIndex, Severity};
use crate::pipeline::check_source;
use crate::schema::Schema;

use super::{all_codes, rule, rules};

fn explain(code: &str) -> Option<&'static str> {
    rule(code).map(|r| r.explain)
}

/// A small valid MMoE config; mutations below put one mistake in it.
const BASE: &str = r#"train_input_path: "data/train.parquet"
eval_input_path: "data/eval.parquet"
model_dir: "experiments/mmoe"
train_config {
  sparse_optimizer {
    adagrad_optimizer {
      lr: 0.01
    }
    constant_learning_rate {
    }
  }
  dense_optimizer {
    adam_optimizer {
      lr: 0.001
    }
    constant_learning_rate {
    }
  }
  num_epochs: 1
}
data_config {
  batch_size: 1024
  dataset_type: ParquetDataset
  fg_mode: FG_NORMAL
  label_fields: "clk"
  label_fields: "buy"
}
feature_configs {
  id_feature {
    feature_name: "user_id"
    expression: "user:user_id"
    hash_bucket_size: 100000
    embedding_dim: 16
  }
}
feature_configs {
  id_feature {
    feature_name: "item_id"
    expression: "item:item_id"
    hash_bucket_size: 100000
    embedding_dim: 16
  }
}
feature_configs {
  id_feature {
    feature_name: "cate_id"
    expression: "item:cate_id"
    num_buckets: 1000
    embedding_dim: 8
  }
}
feature_configs {
  raw_feature {
    feature_name: "price"
    expression: "item:price"
    boundaries: [1, 5, 10, 50, 100]
    embedding_dim: 8
  }
}
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "user_id"
    feature_names: "item_id"
    feature_names: "cate_id"
    feature_names: "price"
    group_type: DEEP
  }
  mmoe {
    expert_mlp {
      hidden_units: [256, 128]
    }
    num_expert: 3
    task_towers {
      tower_name: "ctr"
      label_name: "clk"
      mlp {
        hidden_units: [64]
      }
      losses {
        binary_cross_entropy {}
      }
      metrics {
        auc {}
      }
    }
    task_towers {
      tower_name: "cvr"
      label_name: "buy"
      task_space_indicator_label: "clk"
      mlp {
        hidden_units: [64]
      }
      losses {
        binary_cross_entropy {}
      }
      metrics {
        auc {}
      }
    }
  }
}
"#;

/// The model block of BASE, to swap for other families.
const MMOE_BLOCK: &str = r#"  mmoe {
    expert_mlp {
      hidden_units: [256, 128]
    }
    num_expert: 3
    task_towers {
      tower_name: "ctr"
      label_name: "clk"
      mlp {
        hidden_units: [64]
      }
      losses {
        binary_cross_entropy {}
      }
      metrics {
        auc {}
      }
    }
    task_towers {
      tower_name: "cvr"
      label_name: "buy"
      task_space_indicator_label: "clk"
      mlp {
        hidden_units: [64]
      }
      losses {
        binary_cross_entropy {}
      }
      metrics {
        auc {}
      }
    }
  }
"#;

const DBMTL_BLOCK: &str = r#"  dbmtl {
    bottom_mlp {
      hidden_units: [256]
    }
    task_towers {
      tower_name: "ctr"
      label_name: "clk"
      mlp {
        hidden_units: [64]
      }
      losses {
        binary_cross_entropy {}
      }
    }
    task_towers {
      tower_name: "cvr"
      label_name: "buy"
      relation_tower_names: "ctr"
      relation_mlp {
        hidden_units: [32]
      }
      mlp {
        hidden_units: [64]
      }
      losses {
        binary_cross_entropy {}
      }
    }
  }
"#;

const PLE_BLOCK: &str = r#"  ple {
    extraction_networks {
      network_name: "layer1"
      expert_num_per_task: 2
      share_num: 2
      task_expert_net {
        hidden_units: [128, 64]
      }
      share_expert_net {
        hidden_units: [128, 64]
      }
    }
    extraction_networks {
      network_name: "layer2"
      expert_num_per_task: 2
      share_num: 2
      task_expert_net {
        hidden_units: [64, 32]
      }
      share_expert_net {
        hidden_units: [64, 32]
      }
    }
    task_towers {
      tower_name: "ctr"
      label_name: "clk"
      losses {
        binary_cross_entropy {}
      }
    }
    task_towers {
      tower_name: "cvr"
      label_name: "buy"
      task_space_indicator_label: "clk"
      losses {
        binary_cross_entropy {}
      }
    }
  }
"#;

/// Lint diagnostics of a source (schema and syntax ones left out).
fn lint(src: &str) -> Vec<Diagnostic> {
    let schema = Schema::builtin().expect("built-in schema");
    let codes = all_codes();
    check_source(&schema, src)
        .diagnostics
        .into_iter()
        .filter(|d| codes.contains(&d.code.as_str()))
        .collect()
}

/// (code, 1-based line of the primary label) of each lint diagnostic.
fn found(src: &str) -> Vec<(String, usize)> {
    let index = LineIndex::new(src);
    lint(src)
        .iter()
        .map(|d| {
            let line = d.primary_span().map_or(0, |s| index.position(s.start).0);
            (d.code.clone(), line)
        })
        .collect()
}

/// 1-based line of the `n`th (0-based) occurrence of `pat`.
fn line_of_nth(src: &str, pat: &str, n: usize) -> usize {
    let (offset, _) = src
        .match_indices(pat)
        .nth(n)
        .unwrap_or_else(|| panic!("`{pat}` occurs fewer than {} times", n + 1));
    src[..offset].matches('\n').count() + 1
}

fn line_of(src: &str, pat: &str) -> usize {
    line_of_nth(src, pat, 0)
}

/// Replaces exactly one occurrence (the `n`th) of `from`.
fn edit_nth(src: &str, from: &str, to: &str, n: usize) -> String {
    let (offset, _) = src
        .match_indices(from)
        .nth(n)
        .unwrap_or_else(|| panic!("`{from}` not found"));
    format!("{}{}{}", &src[..offset], to, &src[offset + from.len()..])
}

fn edit(src: &str, from: &str, to: &str) -> String {
    edit_nth(src, from, to, 0)
}

#[track_caller]
fn assert_has(src: &str, code: &str, line: usize) {
    let got = found(src);
    assert!(
        got.iter().any(|(c, l)| c == code && *l == line),
        "expected {code} at line {line}, got {got:?}"
    );
}

#[track_caller]
fn assert_lacks(src: &str, code: &str) {
    let got = found(src);
    assert!(
        !got.iter().any(|(c, _)| c == code),
        "unexpected {code}: {got:?}"
    );
}

fn with_model(block: &str) -> String {
    edit(BASE, MMOE_BLOCK, block)
}

#[test]
fn base_configs_are_clean() {
    for src in [
        BASE.to_string(),
        with_model(DBMTL_BLOCK),
        with_model(PLE_BLOCK),
    ] {
        let schema = Schema::builtin().expect("built-in schema");
        let all = check_source(&schema, &src).diagnostics;
        assert!(all.is_empty(), "{all:#?}");
    }
}

#[test]
fn examples_have_no_lint_errors() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "config") {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("read example");
        let errors: Vec<_> = lint(&src).into_iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        seen += 1;
    }
    assert!(seen > 0, "no examples found");
}

#[test]
fn every_code_is_explained_once() {
    let codes = all_codes();
    for (i, code) in codes.iter().enumerate() {
        assert!(code.starts_with("plec::"), "{code}");
        assert!(!codes[..i].contains(code), "{code} twice");
        let text = explain(code).unwrap_or_default();
        assert!(
            text.contains("Example") && text.contains("Fix"),
            "{code}: {text}"
        );
        let bare = code.trim_start_matches("plec::");
        assert_eq!(rule(bare).map(|r| r.code), Some(*code));
    }
    assert!(explain("plec::no-such-rule").is_none());
    assert!(rules().count() >= 30);
}

#[test]
fn messages_follow_the_style() {
    // One mistake per rule family, then check message style on all of them.
    let src = edit(
        BASE,
        "feature_names: \"item_id\"",
        "feature_names: \"item_idd\"",
    );
    let src = edit(&src, "lr: 0.001", "lr: 0");
    let src = edit(&src, "label_name: \"clk\"", "label_name: \"click\"");
    for d in lint(&src) {
        assert!(!d.message.ends_with('.'), "{}", d.message);
        assert!(
            !d.message.starts_with(|c: char| c.is_ascii_uppercase()),
            "{}",
            d.message
        );
        assert!(d.labels.iter().any(|l| l.primary), "{d:?}");
        assert!(d.help.is_some(), "{d:?}");
        let r = rule(&d.code).expect("known code");
        assert_eq!(r.severity, d.severity, "{}", d.code);
    }
}

// ---- references ----

#[test]
fn unknown_feature() {
    let src = edit(
        BASE,
        "feature_names: \"item_id\"",
        "feature_names: \"item_idd\"",
    );
    assert_has(&src, "plec::unknown-feature", line_of(&src, "\"item_idd\""));
    let d = lint(&src)
        .into_iter()
        .find(|d| d.code == "plec::unknown-feature")
        .expect("diag");
    assert_eq!(d.message, "unknown feature \"item_idd\"");
    assert!(d.help.unwrap_or_default().contains("`item_id`"));
}

#[test]
fn unknown_label() {
    let src = edit(BASE, "label_name: \"clk\"", "label_name: \"click\"");
    assert_has(&src, "plec::unknown-label", line_of(&src, "\"click\""));
}

#[test]
fn unknown_label_of_dbmtl_tower_without_label() {
    let block = edit(DBMTL_BLOCK, "      label_name: \"buy\"\n", "");
    let third = "    task_towers {\n      tower_name: \"pay\"\n      losses {\n        binary_cross_entropy {}\n      }\n    }\n  }\n";
    let block = format!("{}{third}", block.strip_suffix("  }\n").expect("block end"));
    let src = with_model(&block);
    // cvr takes label_fields[1] = "buy"; "pay" (index 2) has none.
    assert_has(&src, "plec::unknown-label", line_of(&src, "\"pay\""));
    assert_eq!(
        found(&src)
            .iter()
            .filter(|(c, _)| c == "plec::unknown-label")
            .count(),
        1
    );
}

#[test]
fn unknown_sample_weight() {
    let src = edit(
        BASE,
        "tower_name: \"ctr\"\n",
        "tower_name: \"ctr\"\n      sample_weight_name: \"w\"\n",
    );
    assert_has(&src, "plec::unknown-sample-weight", line_of(&src, "\"w\""));
    let ok = edit(
        &src,
        "  label_fields: \"buy\"\n",
        "  label_fields: \"buy\"\n  sample_weight_fields: \"w\"\n",
    );
    assert_lacks(&ok, "plec::unknown-sample-weight");
}

#[test]
fn unknown_task_space_label() {
    let src = edit(
        BASE,
        "task_space_indicator_label: \"clk\"",
        "task_space_indicator_label: \"click\"",
    );
    assert_has(
        &src,
        "plec::unknown-task-space-label",
        line_of(&src, "\"click\""),
    );
}

#[test]
fn duplicate_feature() {
    let src = edit(
        BASE,
        "feature_name: \"cate_id\"",
        "feature_name: \"item_id\"",
    );
    assert_has(
        &src,
        "plec::duplicate-feature",
        line_of_nth(&src, "feature_name: \"item_id\"", 1),
    );
    let d = lint(&src)
        .into_iter()
        .find(|d| d.code == "plec::duplicate-feature")
        .expect("diag");
    assert_eq!(d.labels.len(), 2);
}

#[test]
fn duplicate_tower() {
    let src = edit(BASE, "tower_name: \"cvr\"", "tower_name: \"ctr\"");
    assert_has(
        &src,
        "plec::duplicate-tower",
        line_of_nth(&src, "tower_name: \"ctr\"", 1),
    );
}

#[test]
fn duplicate_group() {
    let src = edit(BASE, "    group_type: DEEP\n  }\n", "    group_type: DEEP\n  }\n  feature_groups {\n    group_name: \"all\"\n    feature_names: \"user_id\"\n  }\n");
    assert_has(
        &src,
        "plec::duplicate-group",
        line_of_nth(&src, "group_name: \"all\"", 1),
    );
}

#[test]
fn duplicate_network() {
    let src = with_model(&edit(
        PLE_BLOCK,
        "network_name: \"layer2\"",
        "network_name: \"layer1\"",
    ));
    assert_has(
        &src,
        "plec::duplicate-network",
        line_of_nth(&src, "network_name: \"layer1\"", 1),
    );
}

#[test]
fn unknown_relation_tower() {
    let src = with_model(&edit(
        DBMTL_BLOCK,
        "relation_tower_names: \"ctr\"",
        "relation_tower_names: \"ctrr\"",
    ));
    assert_has(
        &src,
        "plec::unknown-relation-tower",
        line_of(&src, "\"ctrr\""),
    );
}

#[test]
fn relation_order() {
    let later = edit(DBMTL_BLOCK, "      label_name: \"clk\"\n", "      label_name: \"clk\"\n      relation_tower_names: \"cvr\"\n      relation_mlp {\n        hidden_units: [32]\n      }\n");
    let src = with_model(&later);
    assert_has(
        &src,
        "plec::relation-order",
        line_of(&src, "relation_tower_names: \"cvr\""),
    );
    let itself = edit(
        DBMTL_BLOCK,
        "relation_tower_names: \"ctr\"",
        "relation_tower_names: \"cvr\"",
    );
    let src = with_model(&itself);
    assert_has(
        &src,
        "plec::relation-order",
        line_of(&src, "relation_tower_names: \"cvr\""),
    );
}

// ---- values ----

#[test]
fn dropout_ratio() {
    let src = edit(
        BASE,
        "hidden_units: [256, 128]\n",
        "hidden_units: [256, 128]\n      dropout_ratio: [0.1, 0.2, 0.3]\n",
    );
    assert_has(&src, "plec::dropout-ratio", line_of(&src, "dropout_ratio"));
    let src = edit(
        BASE,
        "hidden_units: [256, 128]\n",
        "hidden_units: [256, 128]\n      dropout_ratio: 1.5\n",
    );
    assert_has(&src, "plec::dropout-ratio", line_of(&src, "1.5"));
    let ok = edit(
        BASE,
        "hidden_units: [256, 128]\n",
        "hidden_units: [256, 128]\n      dropout_ratio: [0.2, 0.1]\n",
    );
    assert_lacks(&ok, "plec::dropout-ratio");
}

#[test]
fn bn_and_ln() {
    let src = edit(
        BASE,
        "hidden_units: [256, 128]\n",
        "hidden_units: [256, 128]\n      use_bn: true\n      use_ln: true\n",
    );
    assert_has(&src, "plec::bn-and-ln", line_of(&src, "use_ln"));
}

#[test]
fn unknown_activation() {
    let src = edit(
        BASE,
        "hidden_units: [256, 128]\n",
        "hidden_units: [256, 128]\n      activation: \"nn.Relu\"\n",
    );
    assert_has(&src, "plec::unknown-activation", line_of(&src, "nn.Relu"));
    let d = lint(&src)
        .into_iter()
        .find(|d| d.code == "plec::unknown-activation")
        .expect("diag");
    assert!(d.help.unwrap_or_default().contains("`nn.ReLU`"));
    for ok in [
        "nn.GELU",
        "Dice",
        "",
        "nn.LeakyReLU(negative_slope=0.1)",
        "torch.nn.SiLU",
        "my_pkg.MyAct",
    ] {
        let src = edit(
            BASE,
            "hidden_units: [256, 128]\n",
            &format!("hidden_units: [256, 128]\n      activation: \"{ok}\"\n"),
        );
        assert_lacks(&src, "plec::unknown-activation");
    }
}

#[test]
fn loss_num_class() {
    let src = edit(
        BASE,
        "label_name: \"clk\"\n",
        "label_name: \"clk\"\n      num_class: 2\n",
    );
    assert_has(
        &src,
        "plec::loss-num-class",
        line_of(&src, "binary_cross_entropy"),
    );
    let src = edit(BASE, "binary_cross_entropy {}", "softmax_cross_entropy {}");
    assert_has(
        &src,
        "plec::loss-num-class",
        line_of(&src, "softmax_cross_entropy"),
    );
}

#[test]
fn tower_without_loss() {
    let src = edit_nth(
        BASE,
        "      losses {\n        binary_cross_entropy {}\n      }\n",
        "",
        1,
    );
    assert_has(
        &src,
        "plec::tower-without-loss",
        line_of(&src, "tower_name: \"cvr\""),
    );
}

// ---- features ----

#[test]
fn unknown_pooling() {
    let src = edit(
        BASE,
        "expression: \"item:item_id\"\n",
        "expression: \"item:item_id\"\n    pooling: \"max\"\n",
    );
    assert_has(&src, "plec::unknown-pooling", line_of(&src, "\"max\""));
}

#[test]
fn bucket_config_none() {
    let src = edit(BASE, "    hash_bucket_size: 100000\n", "");
    assert_has(
        &src,
        "plec::bucket-config",
        line_of(&src, "feature_name: \"user_id\""),
    );
}

#[test]
fn bucket_config_two() {
    let src = edit(
        BASE,
        "    num_buckets: 1000\n",
        "    num_buckets: 1000\n    vocab_list: [\"a\", \"b\"]\n",
    );
    assert_has(&src, "plec::bucket-config", line_of(&src, "vocab_list"));
    let d = lint(&src)
        .into_iter()
        .find(|d| d.code == "plec::bucket-config")
        .expect("diag");
    assert_eq!(d.labels.len(), 2);
}

#[test]
fn boundaries_order() {
    let src = edit(BASE, "[1, 5, 10, 50, 100]", "[1, 5, 10, 5, 100]");
    assert_has(&src, "plec::boundaries-order", line_of(&src, "boundaries"));
}

#[test]
fn bad_expression() {
    let src = edit(BASE, "\"user:user_id\"", "\"usr:user_id\"");
    assert_has(&src, "plec::bad-expression", line_of(&src, "usr:user_id"));
    let src = edit(BASE, "\"item:cate_id\"", "\"cate_id\"");
    assert_has(
        &src,
        "plec::bad-expression",
        line_of(&src, "expression: \"cate_id\""),
    );
    // Under FG_NONE expressions are not read.
    let none = edit(&src, "FG_NORMAL", "FG_NONE");
    assert_lacks(&none, "plec::bad-expression");
}

#[test]
fn missing_expression() {
    let src = edit(BASE, "    expression: \"user:user_id\"\n", "");
    assert_has(
        &src,
        "plec::missing-expression",
        line_of(&src, "feature_name: \"user_id\""),
    );
    let none = edit(&src, "FG_NORMAL", "FG_NONE");
    assert_lacks(&none, "plec::missing-expression");
}

#[test]
fn combo_expressions() {
    let src = edit(
        BASE,
        "model_config {\n",
        "feature_configs {\n  combo_feature {\n    feature_name: \"user_cate\"\n    expression: \"user:user_id\"\n    hash_bucket_size: 10000\n    embedding_dim: 8\n  }\n}\nmodel_config {\n",
    );
    let src = edit(
        &src,
        "    feature_names: \"price\"\n",
        "    feature_names: \"price\"\n    feature_names: \"user_cate\"\n",
    );
    assert_has(
        &src,
        "plec::combo-expressions",
        line_of_nth(&src, "expression: \"user:user_id\"", 1),
    );
}

#[test]
fn shared_embedding_mismatch() {
    let src = edit(
        BASE,
        "    expression: \"user:user_id\"\n",
        "    expression: \"user:user_id\"\n    embedding_name: \"id_emb\"\n",
    );
    let src = edit(&src, "    expression: \"item:item_id\"\n    hash_bucket_size: 100000\n    embedding_dim: 16\n", "    expression: \"item:item_id\"\n    embedding_name: \"id_emb\"\n    hash_bucket_size: 100000\n    embedding_dim: 8\n");
    assert_has(
        &src,
        "plec::shared-embedding-mismatch",
        line_of(&src, "embedding_dim: 8"),
    );
    let d = lint(&src)
        .into_iter()
        .find(|d| d.code == "plec::shared-embedding-mismatch")
        .expect("diag");
    assert_eq!(d.labels.len(), 2);
}

#[test]
fn normalizer() {
    let src = edit(
        BASE,
        "    boundaries: [1, 5, 10, 50, 100]\n    embedding_dim: 8\n",
        "    normalizer: \"log10\"\n",
    );
    assert_has(&src, "plec::normalizer", line_of(&src, "normalizer"));
    for ok in [
        "method=log10",
        "method=log10,threshold=1e-10,default=-10",
        "method=zscore,mean=0.0,standard_deviation=10.0",
        "method=minmax,min=2.1,max=2.2",
        "method=expression,expr=sign(x)",
    ] {
        assert!(crate::lang::normalizer::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "log10",
        "method=log",
        "method=minmax,min=3,max=1",
        "method=zscore,mean=a",
        "method=log10,scale=2",
    ] {
        assert!(crate::lang::normalizer::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn expressions() {
    for ok in [
        "user:age",
        "item:price",
        "context:pid",
        "feature:x",
        "const:1",
    ] {
        assert!(super::features::expression_ok(ok), "{ok}");
    }
    for bad in ["age", "usr:age", "user:", ":age"] {
        assert!(!super::features::expression_ok(bad), "{bad}");
    }
}

// ---- training ----

#[test]
fn train_length() {
    let src = edit(BASE, "  num_epochs: 1\n", "");
    assert_has(&src, "plec::train-length", line_of(&src, "train_config"));
    let src = edit(
        BASE,
        "  num_epochs: 1\n",
        "  num_epochs: 1\n  num_steps: 1\n",
    );
    assert_has(&src, "plec::train-length", line_of(&src, "num_steps"));
}

#[test]
fn both_train_lengths() {
    let src = edit(
        BASE,
        "  num_epochs: 1\n",
        "  num_epochs: 1\n  num_steps: 5000\n",
    );
    assert_has(&src, "plec::both-train-lengths", line_of(&src, "num_steps"));
    assert_lacks(&src, "plec::train-length");
}

#[test]
fn learning_rate() {
    let src = edit(BASE, "lr: 0.001", "lr: 0");
    assert_has(&src, "plec::learning-rate", line_of(&src, "lr: 0\n"));
    let src = edit(BASE, "lr: 0.01", "lr: -0.01");
    assert_has(&src, "plec::learning-rate", line_of(&src, "lr: -0.01"));
}

#[test]
fn batch_size() {
    let src = edit(BASE, "batch_size: 1024", "batch_size: 0");
    assert_has(&src, "plec::batch-size", line_of(&src, "batch_size: 0"));
}

// ---- warnings ----

#[test]
fn unused_feature() {
    let src = edit(BASE, "    feature_names: \"price\"\n", "");
    assert_has(
        &src,
        "plec::unused-feature",
        line_of(&src, "feature_name: \"price\""),
    );
    let d = lint(&src)
        .into_iter()
        .find(|d| d.code == "plec::unused-feature")
        .expect("diag");
    assert_eq!(d.severity, Severity::Warning);
}

#[test]
fn ignored_group() {
    let src = edit(BASE, "    group_type: DEEP\n  }\n", "    group_type: DEEP\n  }\n  feature_groups {\n    group_name: \"extra\"\n    feature_names: \"user_id\"\n  }\n");
    assert_has(&src, "plec::ignored-group", line_of(&src, "\"extra\""));
}

#[test]
fn dense_in_wide() {
    let src = edit(
        BASE,
        "    boundaries: [1, 5, 10, 50, 100]\n    embedding_dim: 8\n",
        "",
    );
    let src = edit(&src, "    group_type: DEEP\n  }\n", "    group_type: DEEP\n  }\n  feature_groups {\n    group_name: \"wide\"\n    feature_names: \"price\"\n    group_type: WIDE\n  }\n");
    assert_has(
        &src,
        "plec::dense-in-wide",
        line_of_nth(&src, "feature_names: \"price\"", 1),
    );
}

#[test]
fn cvr_without_task_space() {
    let src = edit(BASE, "      task_space_indicator_label: \"clk\"\n", "");
    assert_has(
        &src,
        "plec::cvr-without-task-space",
        line_of(&src, "tower_name: \"cvr\""),
    );
    // DBMTL relating cvr to ctr models the dependency.
    assert_lacks(&with_model(DBMTL_BLOCK), "plec::cvr-without-task-space");
    assert_eq!(super::warnings::names_read("ctcvr"), (false, false));
    assert_eq!(super::warnings::names_read("is_click"), (true, false));
    assert_eq!(super::warnings::names_read("buy"), (false, true));
}

#[test]
fn unused_label() {
    let src = edit(
        BASE,
        "  label_fields: \"buy\"\n",
        "  label_fields: \"buy\"\n  label_fields: \"pay\"\n",
    );
    assert_has(&src, "plec::unused-label", line_of(&src, "\"pay\""));
}

#[test]
fn duplicate_group_feature() {
    let src = edit(
        BASE,
        "    feature_names: \"price\"\n",
        "    feature_names: \"price\"\n    feature_names: \"user_id\"\n",
    );
    assert_has(
        &src,
        "plec::duplicate-group-feature",
        line_of_nth(&src, "feature_names: \"user_id\"", 1),
    );
}

#[test]
fn relation_without_mlp() {
    let src = with_model(&edit(
        DBMTL_BLOCK,
        "      relation_mlp {\n        hidden_units: [32]\n      }\n",
        "",
    ));
    assert_has(
        &src,
        "plec::relation-without-mlp",
        line_of(&src, "relation_tower_names"),
    );
}

#[test]
fn ignored_task_space_weight() {
    let src = edit(
        BASE,
        "      label_name: \"clk\"\n",
        "      label_name: \"clk\"\n      out_task_space_weight: 0.5\n",
    );
    assert_has(
        &src,
        "plec::ignored-task-space-weight",
        line_of(&src, "out_task_space_weight"),
    );
}

#[test]
fn tower_weight() {
    let src = edit(
        BASE,
        "      label_name: \"buy\"\n",
        "      label_name: \"buy\"\n      weight: 0\n",
    );
    assert_has(&src, "plec::tower-weight", line_of(&src, "weight: 0"));
}

#[test]
fn ignored_embedding_dim() {
    let src = edit(BASE, "    boundaries: [1, 5, 10, 50, 100]\n", "");
    assert_has(
        &src,
        "plec::ignored-embedding-dim",
        line_of(&src, "embedding_dim: 8\n  }\n}\nmodel_config"),
    );
}

#[test]
fn fragment() {
    let start = BASE.find("model_config {").expect("model_config");
    let src = &BASE[start..];
    let got = found(src);
    assert_eq!(got, vec![("plec::fragment".to_string(), 1)], "{got:?}");
    let d = lint(src).remove(0);
    assert_eq!(d.severity, Severity::Advice);
    let help = d.help.unwrap_or_default();
    assert!(
        help.contains("feature names") && help.contains("label"),
        "{help}"
    );
}

#[test]
fn lint_tolerates_schema_errors() {
    // A schema error elsewhere: lint still runs on the rest.
    let src = edit(
        BASE,
        "  num_epochs: 1\n",
        "  num_epochs: 1\n  log_step_count_stepz: 100\n",
    );
    let src = edit(
        &src,
        "feature_names: \"item_id\"",
        "feature_names: \"item_idd\"",
    );
    assert_has(&src, "plec::unknown-feature", line_of(&src, "\"item_idd\""));
}

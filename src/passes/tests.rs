//! Pass tests: what survives a pass, and before/after equivalence of every
//! pass on random inputs with the reference evaluator.

use super::*;
use crate::ir::graph::{MlpRole, Node};
use crate::ir::reference::{evaluate, random_group_inputs};
use crate::ir::tests::{examples, typed};

/// The examples plus variants that exercise batch norm (no bias: gates do
/// not join), dropout, leaky relu, layer norm (not fused), different task
/// and shared widths, and MMoE gates without a gate MLP (gates join).
fn cases() -> Vec<(String, String)> {
    let mut out = examples();
    let find = |n: &str| {
        out.iter()
            .find(|(k, _)| k.starts_with(n))
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    let ple = find("ple");
    let mmoe = find("mmoe");
    let dbmtl = find("dbmtl");
    out.push((
        "ple+bn+dropout".into(),
        ple.replacen(
            "hidden_units: [1024, 512, 256]\n      }",
            "hidden_units: [1024, 512, 256]\n        use_bn: true\n        dropout_ratio: 0.1\n        activation: \"nn.LeakyReLU\"\n      }",
            2,
        ),
    ));
    out.push((
        "ple+mixed-widths".into(),
        ple.replacen(
            "hidden_units: [256, 128, 64]",
            "hidden_units: [256, 96, 64]",
            1,
        ),
    ));
    out.push((
        "mmoe-no-gate-mlp".into(),
        mmoe.replace("    gate_mlp {\n      hidden_units: [64]\n    }\n", ""),
    ));
    out.push((
        "mmoe+ln".into(),
        mmoe.replace(
            "hidden_units: [512, 256, 128]",
            "hidden_units: [512, 256, 128]\n      use_ln: true",
        ),
    ));
    out.push((
        "dbmtl+bn+gelu".into(),
        dbmtl.replace(
            "hidden_units: [256, 128]",
            "hidden_units: [256, 128]\n      use_bn: true\n      activation: \"nn.GELU\"",
        ),
    ));
    out
}

fn max_abs_diff(a: &crate::plan::Plan, b: &crate::plan::Plan, seed: u64) -> f32 {
    let inputs = random_group_inputs(a, 5, seed);
    let ya = evaluate(a, &inputs).expect("evaluate before");
    let yb = evaluate(b, &inputs).expect("evaluate after");
    assert_eq!(ya.len(), yb.len());
    let mut worst = 0.0f32;
    for (task, ta) in &ya {
        let tb = &yb[task];
        assert_eq!(ta.shape, tb.shape, "{task}");
        for (x, y) in ta.data.iter().zip(&tb.data) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

#[test]
fn every_pass_preserves_outputs_on_every_example() {
    let pipelines: Vec<(&str, Vec<Box<dyn Pass>>)> = vec![
        ("RemoveDeadNodes", vec![Box::new(RemoveDeadNodes)]),
        ("FuseParallelExperts", vec![Box::new(FuseParallelExperts)]),
        ("pipeline", pipeline(true)),
    ];
    for (name, source) in cases() {
        let (config, _) = typed(&source);
        let g0 = crate::ir::lower(&config).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let before = crate::plan::emit::emit(&g0, &config, &source, 11).expect("emit before");
        // The comparison can tell models apart: other parameters, other outputs.
        let other = crate::plan::emit::emit(&g0, &config, &source, 12).expect("emit other");
        assert!(
            max_abs_diff(&before, &other, 5) > 1e-3,
            "{name}: outputs do not depend on parameters"
        );
        for (pname, passes) in &pipelines {
            let mut g = g0.clone();
            let applied =
                optimize(&mut g, passes, None).unwrap_or_else(|e| panic!("{name}/{pname}: {e}"));
            let after = crate::plan::emit::emit(&g, &config, &source, 11).expect("emit after");
            let diff = max_abs_diff(&before, &after, 5);
            assert!(
                diff <= 1e-5,
                "{name}/{pname}: outputs differ by {diff} after {applied:?}"
            );
            assert_eq!(
                before.forward_flops_per_sample, after.forward_flops_per_sample,
                "{name}/{pname}"
            );
        }
    }
}

#[test]
fn fusion_batches_ple_layer_one_with_its_gates() {
    let ple = examples()
        .into_iter()
        .find(|(n, _)| n.starts_with("ple_taobao"))
        .expect("ple")
        .1;
    let (config, _) = typed(&ple);
    let mut g = crate::ir::lower(&config).expect("lowers");
    let applied = optimize(&mut g, &pipeline(true), None).expect("passes");
    // Layer 1: one group of six (all read the feature group); layers 2, 3:
    // one group per task input and one for the shared input.
    assert_eq!(
        applied
            .iter()
            .filter(|a| a.pass == "FuseParallelExperts")
            .count(),
        7
    );
    assert!(!g
        .graph
        .node_weights()
        .any(|n| matches!(n, Node::Mlp(m) if m.role == MlpRole::Expert)));
    let layer1 = g
        .graph
        .node_weights()
        .find_map(|n| match n {
            Node::FusedExperts(f) if f.name == "layer1.fused_experts" => Some(f.clone()),
            _ => None,
        })
        .expect("layer1 fused");
    assert_eq!(layer1.experts.len(), 6);
    assert_eq!(
        layer1.gates.len(),
        3,
        "both task gates and the shared gate join"
    );
    let plan = crate::plan::emit::emit(&g, &config, &ple, 0).expect("emit");
    let wide = plan
        .ops
        .iter()
        .find(|o| o.name == "layer1.fused_experts.layer0.wide")
        .expect("wide linear");
    let w = &plan.params[wide.params[0] as usize];
    assert_eq!(w.shape, vec![6 * 1024 + 4 + 4 + 6, 256]);
}

#[test]
fn max_patches_stops_the_driver() {
    let ple = examples()
        .into_iter()
        .find(|(n, _)| n.starts_with("ple_taobao"))
        .expect("ple")
        .1;
    let (config, _) = typed(&ple);
    let g0 = crate::ir::lower(&config).expect("lowers");
    let mut g = g0.clone();
    assert!(optimize(&mut g, &pipeline(true), Some(0))
        .expect("ok")
        .is_empty());
    assert_eq!(g.graph.node_count(), g0.graph.node_count());
    let applied = optimize(&mut g, &pipeline(true), Some(2)).expect("ok");
    assert_eq!(applied.len(), 2);
    g.check().expect("consistent after a partial run");
}

#[test]
fn layer_norm_experts_are_not_fused() {
    let (_, source) = cases()
        .into_iter()
        .find(|(n, _)| n == "mmoe+ln")
        .expect("case");
    let (config, _) = typed(&source);
    let mut g = crate::ir::lower(&config).expect("lowers");
    let applied = optimize(
        &mut g,
        &[Box::new(FuseParallelExperts) as Box<dyn Pass>],
        None,
    )
    .expect("ok");
    assert!(applied.is_empty());
}

/// A case's model with every feature made a dense raw feature (value_dim
/// 2), so a batch can feed the group directly.
fn dense_variant(source: &str) -> String {
    let model = &source[source.find("model_config {").unwrap_or(0)..];
    let mut out = String::new();
    // PEPNet's towers are picked by a label the plan must carry.
    if let Some(rest) = model.split("domain_input_name: \"").nth(1) {
        let label = rest.split('"').next().unwrap_or_default();
        out.push_str(&format!(
            "data_config {{ label_fields: \"clk\" label_fields: \"buy\" label_fields: \"{label}\" }}\n"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for line in model.lines() {
        if let Some(name) = line.trim().strip_prefix("feature_names: ") {
            let name = name.trim_matches('"');
            if !seen.insert(name.to_string()) {
                continue;
            }
            out.push_str(&format!(
                "feature_configs {{ raw_feature {{ feature_name: \"{name}\" expression: \"user:{name}\" value_dim: 2 }} }}\n"
            ));
        }
    }
    out + model
}

#[test]
fn candle_runtime_agrees_with_the_reference_evaluator() {
    use crate::data::batch::{Batch, FeatureInput};
    use crate::runtime::{Mode, Model};
    use candle_core::Device;
    for (name, source) in cases() {
        // The dense variant replaces every feature by a dense one; sequences
        // have no dense form. Their ops are checked against this evaluator
        // by `every_pass_preserves_outputs_on_every_example` and against
        // finite differences in `runtime::tests::sequence`.
        if source.contains("sequence_groups") {
            continue;
        }
        let source = dense_variant(&source);
        let (config, _) = typed(&source);
        for fuse in [false, true] {
            let mut g = crate::ir::lower(&config).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            optimize(&mut g, &pipeline(fuse), None).expect("passes");
            let plan = crate::plan::emit::emit(&g, &config, &source, 3).expect("emit");
            let rows = 6;
            let mut rng = crate::rng::SplitMix64::new(9);
            let feats: Vec<Vec<f32>> = plan
                .features
                .iter()
                .map(|_| {
                    (0..rows * 2)
                        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
                        .collect()
                })
                .collect();
            // Every group (PEPNet reads three) from the same feature values.
            let mut inputs = std::collections::HashMap::new();
            for group_op in plan
                .ops
                .iter()
                .filter(|o| o.kind == crate::plan::OpKind::FeatureGroup as i32)
            {
                let mut group = Vec::new();
                for r in 0..rows {
                    for &f in &group_op.features {
                        group.extend_from_slice(&feats[f as usize][r * 2..r * 2 + 2]);
                    }
                }
                let width = group.len() / rows;
                inputs.insert(
                    group_op.name.clone(),
                    crate::ir::reference::Tensor::new(vec![rows, width], group),
                );
            }
            assert!(!inputs.is_empty(), "{name}: no group op");
            let want = evaluate(&plan, &inputs).expect("reference");
            let batch = Batch {
                rows,
                features: feats
                    .into_iter()
                    .map(|values| FeatureInput::Dense { values, dim: 2 })
                    .collect(),
                labels: vec![vec![0.0; rows]; 2],
                sample_weights: vec![],
                group_keys: vec![],
            };
            let mut model =
                Model::from_plan(&plan, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
            let fwd = model
                .forward(&batch, Mode::Eval)
                .unwrap_or_else(|e| panic!("{name}/{fuse}: {e}"));
            for (task, logits) in plan.tasks.iter().zip(&fwd.logits) {
                let got: Vec<f32> = logits
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .expect("logits");
                let exp = &want[&task.tower_name].data;
                assert_eq!(got.len(), exp.len());
                for (a, b) in got.iter().zip(exp) {
                    assert!(
                        (a - b).abs() <= 1e-4,
                        "{name} fuse={fuse} {}: {a} vs {b}",
                        task.tower_name
                    );
                }
            }
        }
    }
}

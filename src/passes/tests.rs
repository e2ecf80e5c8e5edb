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
        .find(|(n, _)| n.starts_with("ple"))
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
        .find(|(n, _)| n.starts_with("ple"))
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

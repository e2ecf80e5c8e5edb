//! Lowering, emit, plan round trips, the PLE hand count and the shape
//! rules' golden cases.

use std::path::{Path, PathBuf};

use super::*;
use crate::plan::file::{self, PlanFileError};
use crate::proto::tzrec::protos::EasyRecConfig;
use crate::schema::{self, Schema, SpanMap};

/// Parses and binds a config text with the built-in schema.
pub(crate) fn typed(source: &str) -> (EasyRecConfig, SpanMap) {
    let schema = Schema::builtin().expect("built-in schema");
    let parsed = crate::syntax::parse(source);
    let doc = parsed.document.expect("the test config parses");
    let bound = schema::bind(&schema, &doc, source);
    let config = schema::typed_config(&bound).expect("typed config");
    (config, bound.spans)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `examples/*.config` (name, text).
pub(crate) fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "config"))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (name, std::fs::read_to_string(&p).expect("read example"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 4, "expected the four example configs");
    out
}

fn compile(source: &str, fuse: bool, seed: u64) -> (ModelGraph, crate::plan::Plan) {
    let (config, _) = typed(source);
    let mut g = lower(&config).unwrap_or_else(|e| panic!("lowering failed: {e:?}"));
    crate::passes::optimize(&mut g, &crate::passes::pipeline(fuse), None).expect("passes");
    let plan = crate::plan::emit::emit(&g, &config, source, seed).expect("emit");
    (g, plan)
}

#[test]
fn every_example_lowers_compiles_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, source) in examples() {
        let (config, _) = typed(&source);
        assert!(
            shape::check_config(&config).is_empty(),
            "{name} has shape errors"
        );
        for fuse in [false, true] {
            let (g, mut plan) = compile(&source, fuse, 7);
            g.check().unwrap_or_else(|p| panic!("{name}: {p:?}"));
            plan.source_path = name.clone();
            assert_eq!(plan.format_version, file::FORMAT_VERSION);
            assert_eq!(plan.source_config_sha256.len(), 64);
            assert_eq!(plan.tasks.len(), 2, "{name}");
            // 16 plain features; the DIN example adds its group's 3
            // query and 3 sequence features, the self-attention one 3
            // sequence features; the PEPNet one has 10.
            let want = if source.contains("self_attention_encoder") {
                19
            } else if source.contains("sequence_groups") {
                22
            } else if source.contains("pepnet {") {
                10
            } else {
                16
            };
            assert_eq!(plan.features.len(), want, "{name}");
            assert!(plan.forward_flops_per_sample > 0);
            let path = dir.path().join(format!("{name}.{fuse}.bin"));
            file::save(&plan, &path).expect("save");
            // Streamed to disk in 1 MiB chunks, byte for byte the in-memory envelope.
            assert_eq!(
                std::fs::read(&path).expect("read"),
                file::encode(&plan),
                "{name}"
            );
            let back = file::load(&path).expect("load");
            assert_eq!(back, plan, "{name}: plan changed in a save/load round trip");
        }
    }
}

#[test]
fn emit_is_deterministic_in_the_seed() {
    let (_, source) = &examples()[0];
    let (_, a) = compile(source, true, 3);
    let (_, b) = compile(source, true, 3);
    let (_, c) = compile(source, true, 4);
    assert_eq!(a, b);
    assert_ne!(a.params, c.params);
}

#[test]
fn damaged_plan_files_are_rejected() {
    let (_, source) = &examples()[0];
    let (_, plan) = compile(source, true, 1);
    let bytes = file::encode(&plan);
    let p = Path::new("plan.bin");
    assert!(matches!(
        file::decode(&[], p),
        Err(PlanFileError::Empty { .. })
    ));
    assert!(matches!(
        file::decode(b"not a plan at all", p),
        Err(PlanFileError::BadMagic { .. })
    ));
    let cut = &bytes[..bytes.len() - 10];
    assert!(matches!(
        file::decode(cut, p),
        Err(PlanFileError::Truncated { .. })
    ));
    assert!(matches!(
        file::decode(&bytes[..20], p),
        Err(PlanFileError::Truncated { .. })
    ));
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x10;
    assert!(matches!(
        file::decode(&flipped, p),
        Err(PlanFileError::Checksum { .. })
    ));
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(file::FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        file::decode(&newer, p),
        Err(PlanFileError::NewerVersion { .. })
    ));
    assert_eq!(file::decode(&bytes, p).expect("intact"), plan);
}

/// Parameters and multiply-adds of an MLP with biases.
fn mlp(input: u64, widths: &[u64]) -> (u64, u64) {
    let (mut params, mut macs, mut i) = (0, 0, input);
    for &w in widths {
        params += i * w + w;
        macs += i * w;
        i = w;
    }
    (params, macs)
}

#[test]
fn ple_summary_matches_a_hand_count() {
    let source =
        std::fs::read_to_string(root().join("examples/ple_taobao.config")).expect("ple example");
    let tasks = 2u64;
    let layers: [(u64, u64, [u64; 3]); 3] = [
        (2, 2, [1024, 512, 256]),
        (3, 3, [256, 128, 64]),
        (4, 4, [128, 64, 32]),
    ];
    let (mut params, mut flops, mut input) = (0u64, 0u64, 16 * 16u64);
    for (l, (per_task, shared, widths)) in layers.iter().enumerate() {
        let experts = tasks * per_task + shared;
        let (p, m) = mlp(input, widths);
        params += experts * p;
        flops += 2 * experts * m;
        let d = widths[2];
        // Task gates: Linear(input -> own + shared), then the weighted sum.
        let k = per_task + shared;
        params += tasks * (input * k + k);
        flops += tasks * (2 * input * k + 2 * k * d);
        if l + 1 < layers.len() {
            params += input * experts + experts;
            flops += 2 * input * experts + 2 * experts * d;
        }
        input = d;
    }
    let (p, m) = mlp(input, &[256, 128, 64, 1]);
    params += tasks * p;
    flops += tasks * 2 * m;
    assert_eq!(params, 6_811_509);
    assert_eq!(flops, 13_597_056);
    for fuse in [false, true] {
        let (g, plan) = compile(&source, fuse, 0);
        let s = summarize(&g, &plan);
        assert_eq!(s.input_width, 256);
        assert_eq!(s.layers, 3);
        assert_eq!(s.experts, 6 + 9 + 12);
        assert_eq!(s.gates, 3 + 3 + 2);
        assert_eq!(s.towers, 2);
        assert_eq!(s.dense_params, params, "fuse={fuse}");
        assert_eq!(s.forward_flops_per_sample, flops, "fuse={fuse}");
        let hash_sizes: u64 = [
            1141730u64, 98, 14, 3, 8, 5, 5, 3, 6, 846812, 12961, 423437, 255876, 461498, 20, 11,
        ]
        .iter()
        .sum();
        assert_eq!(s.embedding_params, hash_sizes * 16);
    }
}

#[test]
fn unused_features_are_dead_and_not_emitted() {
    let (_, source) = &examples()[0];
    let extra = source.replacen(
        "feature_configs {",
        "feature_configs {\n  id_feature {\n    feature_name: \"spare\"\n    expression: \"user:spare\"\n    hash_bucket_size: 10\n    embedding_dim: 4\n  }\n}\nfeature_configs {",
        1,
    );
    let (config, _) = typed(&extra);
    let g0 = lower(&config).expect("lowers");
    let before = g0.graph.node_count();
    let (g, plan) = compile(&extra, false, 0);
    assert_eq!(
        g.graph.node_count(),
        before - 3,
        "feature, column and table removed"
    );
    assert!(plan.features.iter().all(|f| f.name != "spare"));
    assert!(plan.tables.iter().all(|t| t.name != "spare"));
}

#[test]
fn feature_specs_resolve_columns_buckets_and_normalizers() {
    let (_, source) = &examples()[0];
    let (_, plan) = compile(source, true, 0);
    let price = plan
        .features
        .iter()
        .find(|f| f.name == "price")
        .expect("price");
    assert_eq!(price.num_ids, 11);
    assert_eq!(price.input_columns, vec!["price".to_string()]);
    assert_eq!(price.kind, crate::plan::FeatureKind::RawBucketized as i32);
    let t = &plan.tables[price.table as usize];
    assert_eq!((t.num_rows, t.dim), (11, 16));
    assert!(t.data.is_empty());
    let parse = |t: &str| {
        crate::lang::normalizer::parse(t)
            .ok()
            .and_then(|n| lower::plan_normalizer(&n))
    };
    let n = parse("method=log10,threshold=1e-10,default=-10").expect("log10");
    assert_eq!(
        (n.kind, n.a, n.b),
        (crate::plan::NormalizerKind::Log10 as i32, 1e-10, -10.0)
    );
    let z = parse("method=zscore,mean=2.5,standard_deviation=4").expect("zscore");
    assert_eq!((z.a, z.b), (2.5, 4.0));
    let m = parse("method=minmax,min=-1,max=3").expect("minmax");
    assert_eq!((m.a, m.b), (-1.0, 3.0));
    assert!(parse("method=cube").is_none());
    assert!(parse("method=expression,expr=sign(x)").is_none());
    let fg_none = source.replace("fg_mode: FG_NORMAL", "fg_mode: FG_NONE");
    let (_, plan) = compile(&fg_none, true, 0);
    assert!(plan
        .features
        .iter()
        .all(|f| f.input_columns == vec![f.name.clone()]));
    assert!(plan.data.as_ref().is_some_and(|d| d.fg_none));
}

#[test]
fn unsupported_model_kind_names_it() {
    let src = "model_config { feature_groups { group_name: \"all\" feature_names: \"a\" } dlrm {} }\nfeature_configs { id_feature { feature_name: \"a\" expression: \"user:a\" hash_bucket_size: 5 embedding_dim: 4 } }";
    let (config, _) = typed(src);
    let errs = lower(&config).expect_err("dlrm is not compiled");
    assert!(
        errs.iter()
            .any(|e| matches!(e, IrError::Unsupported { what, .. } if what.contains("Dlrm"))),
        "{errs:?}"
    );
}

/// `(line, code)` of every `# <- plec::code` marker.
fn markers(source: &str) -> Vec<(usize, String)> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            l.split("# <- ")
                .nth(1)
                .map(|c| (i + 1, c.trim().to_string()))
        })
        .collect()
}

#[test]
fn shape_golden_cases_report_the_right_code_and_line() {
    let dir = root().join("golden/shapes");
    let mut seen = Vec::new();
    let schema = Schema::builtin().expect("schema");
    for entry in std::fs::read_dir(&dir).expect("golden/shapes") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "config") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("read");
        let expected = markers(&source);
        assert!(!expected.is_empty(), "{} has no marker", path.display());
        let checked = crate::pipeline::check_source(&schema, &source);
        let errors: Vec<_> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect();
        for (line, code) in &expected {
            let hit = errors.iter().any(|d| {
                d.code == *code
                    && d.primary_span()
                        .is_some_and(|s| source[..s.start].matches('\n').count() + 1 == *line)
            });
            assert!(
                hit,
                "{}: no {code} on line {line}; got {errors:#?}",
                path.display()
            );
            assert!(explain(code).is_some(), "{code} has no explanation");
            seen.push(code.clone());
        }
        for d in &errors {
            assert!(
                expected.iter().any(|(_, c)| *c == d.code),
                "{}: unexpected {}",
                path.display(),
                d.code
            );
        }
        let (config, _) = typed(&source);
        let errs = lower(&config).expect_err("a shape error stops lowering");
        assert!(errs
            .iter()
            .any(|e| matches!(e, IrError::Shape(s) if expected.iter().any(|(_, c)| c == s.code))));
    }
    for code in [
        "plec::expert-width",
        "plec::missing-share-expert-net",
        "plec::zero-experts",
        "plec::empty-hidden-units",
        "plec::zero-width",
        "plec::embedding-dim",
    ] {
        assert!(seen.iter().any(|c| c == code), "no golden case for {code}");
    }
}

#[test]
fn mmoe_zero_experts_points_at_num_expert() {
    let source = std::fs::read_to_string(root().join("examples/mmoe_taobao.config")).expect("mmoe");
    let bad = source.replace("num_expert: 4", "num_expert: 0");
    let (config, spans) = typed(&bad);
    let diags = shape_diagnostics(&config, &spans);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].code, "plec::zero-experts");
    let span = diags[0].primary_span().expect("labelled");
    assert_eq!(&bad[span], "0");
}

#[test]
fn every_shape_code_is_explained() {
    for (code, text) in SHAPE_CODES {
        assert_eq!(explain(code), Some(*text));
        assert_eq!(explain(code.trim_start_matches("plec::")), Some(*text));
    }
    assert!(explain("plec::no-such-code").is_none());
}

#[test]
fn unsupported_optimizers_and_schedules_are_named() {
    let base = std::fs::read_to_string("examples/mmoe_taobao.config").expect("example");
    for (from, to, named) in [
        (
            "adagrad_optimizer {",
            "lamb_optimizer {",
            "sparse optimizer lamb_optimizer",
        ),
        (
            "adam_optimizer {",
            "rmsprop_optimizer {",
            "dense optimizer rmsprop_optimizer",
        ),
        (
            "constant_learning_rate {",
            "cosine_annealing_warm_restarts_learning_rate {",
            "cosine_annealing_warm_restarts_learning_rate",
        ),
    ] {
        let text = base.replacen(from, to, 1);
        let schema = crate::schema::Schema::builtin().expect("schema");
        let checked = crate::pipeline::check_source(&schema, &text);
        assert!(!checked.has_errors(), "check stays clean for {to}");
        let bound = checked.bound.expect("bound");
        let config = crate::schema::typed_config(&bound).expect("typed");
        let graph = crate::ir::lower(&config).expect("lowers");
        let err = crate::plan::emit::emit(&graph, &config, &text, 0).expect_err("unsupported");
        assert!(err.to_string().contains(named), "{err}");
    }
}

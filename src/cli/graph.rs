//! `plec graph`: the model graph as Graphviz DOT (`dot -Tsvg`).

use std::fmt::Write as _;
use std::path::PathBuf;

use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use crate::ir::graph::{MlpBlock, ModelGraph, Node};
use crate::proto::plan::FeatureKind;

use super::compile::{print_out, read, report};
use super::{Outcome, RunError};
use crate::pipeline::{lower, BuildOptions};

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Config file in protobuf text format.
    pub file: PathBuf,
    /// Write the DOT here instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Draw the graph after expert fusion.
    #[arg(long)]
    pub fused: bool,
    /// Also draw input columns and embedding tables.
    #[arg(long)]
    pub inputs: bool,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn widths(m: &MlpBlock) -> String {
    m.widths()
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("-")
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|&d| {
            if d < 0 {
                "B".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Renders a model graph as DOT.
pub(crate) fn to_dot(g: &ModelGraph, with_inputs: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", esc(&g.model_kind));
    out.push_str("  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let shown =
        |n: &Node| with_inputs || !matches!(n, Node::InputColumn { .. } | Node::EmbeddingTable(_));
    for n in g.graph.node_indices() {
        let node = &g.graph[n];
        if !shown(node) {
            continue;
        }
        let (label, attrs) = match node {
            Node::InputColumn { name } => (format!("column {name}"), "shape=plaintext"),
            Node::Feature(f) => {
                let kind = FeatureKind::try_from(f.spec.kind)
                    .map(|k| k.as_str_name().to_ascii_lowercase())
                    .unwrap_or_default();
                (
                    format!("{}\\n{kind}, {} wide", f.spec.name, f.width),
                    "shape=box, style=rounded",
                )
            }
            Node::EmbeddingTable(t) => (
                format!("table {}\\n{} x {}", t.name, t.rows, t.dim),
                "shape=cylinder",
            ),
            Node::FeatureGroup { name, width } => (
                format!("feature group {name}\\n{width} wide"),
                "shape=box, style=\"bold,filled\", fillcolor=\"#e8e8e8\"",
            ),
            Node::Mlp(m) => (
                format!("{}\\n{} {}", m.name, m.role.as_str(), widths(m)),
                "shape=box, style=filled, fillcolor=\"#cfe2f3\"",
            ),
            Node::FusedExperts(f) => {
                let gates: Vec<&str> = f.gates.iter().map(|h| h.gate.as_str()).collect();
                let w = f.experts.first().map(widths).unwrap_or_default();
                (
                    format!(
                        "{}\\n{} experts {w} batched{}",
                        f.name,
                        f.experts.len(),
                        if gates.is_empty() {
                            String::new()
                        } else {
                            format!("\\n+ gate linears: {}", gates.join(", "))
                        }
                    ),
                    "shape=box3d, style=filled, fillcolor=\"#9fc5e8\"",
                )
            }
            Node::Gate(gt) => (
                format!(
                    "{}\\nmixes {} experts, {} wide",
                    gt.name, gt.num_experts, gt.expert_dim
                ),
                "shape=invtrapezium, style=filled, fillcolor=\"#fce5cd\"",
            ),
            Node::Concat { name } => (format!("{name}\\nconcat"), "shape=box"),
            Node::Tower(t) => (
                format!(
                    "tower {}\\n{}-> {} logits",
                    t.name,
                    t.mlp
                        .as_ref()
                        .map(|m| format!("{} ", widths(m)))
                        .unwrap_or_default(),
                    t.logits.out_dim
                ) + &if t.more_domains.is_empty() {
                    String::new()
                } else {
                    format!("\\nx {} domains", 1 + t.more_domains.len())
                },
                "shape=box, style=filled, fillcolor=\"#d9ead3\"",
            ),
            Node::GateNu(gn) => (
                format!(
                    "{}\\ngate unit {} -> {} -> {}",
                    gn.name, gn.first.in_dim, gn.first.out_dim, gn.second.out_dim
                ),
                "shape=invtrapezium, style=filled, fillcolor=\"#fce5cd\"",
            ),
            Node::Product { name, scale } => (format!("{name}\\n{scale} x product"), "shape=box"),
            Node::VariationalDropout(v) => (
                format!(
                    "{}\\nvariational dropout over {} features",
                    v.name,
                    v.features.len()
                ),
                "shape=box",
            ),
            Node::Norm { name, .. } => (format!("{name}\\nnorm"), "shape=box"),
            Node::Intervention(v) => (
                format!(
                    "{}\\nintervention {} by {}, rank {}",
                    v.name, v.base_dim, v.source_dim, v.rank
                ),
                "shape=box",
            ),
            Node::StopGradient { name } => (format!("{name}\\nstop gradient"), "shape=box"),
            Node::Loss { .. } | Node::Metric { .. } => (node.name(), "shape=note"),
            Node::SequenceGroup(sg) => (
                format!(
                    "sequence group {}\\nquery {} wide, {} steps of {}",
                    sg.name, sg.query_width, sg.steps, sg.seq_width
                ),
                "shape=box, style=\"bold,filled\", fillcolor=\"#e8e8e8\"",
            ),
            Node::SeqEncoder(e) => (
                format!("{}\\n-> {} wide", e.name, e.width()),
                "shape=box, style=filled, fillcolor=\"#f4cccc\"",
            ),
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\", {attrs}];",
            n.index(),
            esc(&label).replace("\\\\n", "\\n")
        );
    }
    for e in (&g.graph).edge_references() {
        if !shown(&g.graph[e.source()]) || !shown(&g.graph[e.target()]) {
            continue;
        }
        let w = e.weight();
        let mut label = shape_text(&w.shape);
        if let Some((s, l)) = w.experts {
            label.push_str(&format!(" experts {s}..{}", s + l));
        }
        let _ = writeln!(
            out,
            "  n{} -> n{} [label=\"{}\"];",
            e.source().index(),
            e.target().index(),
            esc(&label)
        );
    }
    out.push_str("}\n");
    out
}

pub(crate) fn execute(args: &GraphArgs) -> Result<Outcome, RunError> {
    let source = read(&args.file)?;
    let opts = BuildOptions {
        fuse: args.fused,
        ..Default::default()
    };
    let graph = match lower(&source, opts) {
        Ok(l) => l.graph,
        Err(e) => return report(&args.file, &source, e),
    };
    let dot = to_dot(&graph, args.inputs);
    match &args.output {
        Some(p) => crate::plan::file::write_atomic(p, dot.as_bytes())
            .map_err(|e| RunError::new(format!("cannot write {}: {e}", p.display())))?,
        None => print_out(&dot),
    }
    Ok(Outcome::Clean)
}

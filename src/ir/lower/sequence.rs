//! Lowering of a DEEP group's `sequence_groups` and `sequence_encoders`.
//!
//! As in TorchEasyRec (`tzrec/modules/embedding.py`), a sequence group lists
//! query features (plain features, looked up once per row) and sequence
//! features (one lookup per step); the query is the concatenation of the
//! query features, the steps the concatenation of the sequence features,
//! and the step count of a row is its sequence length. The group's tables
//! are those of TorchEasyRec's sequence embedding collection: a feature's
//! table is its `embedding_name`, else its own name, shared between the
//! sequence groups of one feature group but never with the bag tables of
//! the plain feature list (torchrec keeps the two collections apart).
//! Each encoder reads one sequence group and adds one output after the
//! plain features, in the order the encoders are listed.

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;

use super::{input_column, resolve_feature, Builder, Out};
use crate::ir::error::IrError;
use crate::ir::graph::*;
use crate::proto::tzrec::protos::{
    feature_config::Feature, seq_encoder_config::SeqModule,
    seq_feature_config::Feature as SeqFeature, EasyRecConfig, FeatureConfig, FeatureGroupConfig,
};

/// Prefix of the tables of sequence groups, apart from the bag tables.
const SEQ_TABLE_PREFIX: &str = "seq:";

/// A feature a sequence group can name: its config (with the full name)
/// and, for sequence features, the step count and delimiter.
struct Candidate {
    config: FeatureConfig,
    path: String,
    sequence: Option<(u32, String)>,
    /// For grouped sub-features: the prefix of sequence input columns.
    prefix: Option<String>,
}

/// Every feature of the config by the name a group uses for it.
fn candidates(config: &EasyRecConfig) -> HashMap<String, Candidate> {
    let mut out = HashMap::new();
    for (i, fc) in config.feature_configs.iter().enumerate() {
        let path = format!("feature_configs[{i}]");
        match &fc.feature {
            Some(Feature::SequenceFeature(s)) => {
                let prefix = format!("{}__", s.sequence_name);
                for (k, sub) in s.features.iter().enumerate() {
                    let (feature, kind, name) = match &sub.feature {
                        Some(SeqFeature::IdFeature(f)) => {
                            let mut f = f.clone();
                            f.feature_name = format!("{prefix}{}", f.feature_name);
                            let n = f.feature_name.clone();
                            (Feature::IdFeature(f), "id_feature", n)
                        }
                        Some(SeqFeature::RawFeature(f)) => {
                            let mut f = f.clone();
                            f.feature_name = format!("{prefix}{}", f.feature_name);
                            let n = f.feature_name.clone();
                            (Feature::RawFeature(f), "raw_feature", n)
                        }
                        _ => continue,
                    };
                    out.insert(
                        name,
                        Candidate {
                            config: FeatureConfig {
                                feature: Some(feature),
                            },
                            path: format!("{path}.sequence_feature.features[{k}].{kind}"),
                            sequence: Some((s.sequence_length, s.sequence_delim.clone())),
                            prefix: Some(prefix.clone()),
                        },
                    );
                }
            }
            Some(Feature::SequenceIdFeature(f)) => {
                out.insert(
                    f.feature_name.clone(),
                    Candidate {
                        config: FeatureConfig {
                            feature: Some(Feature::IdFeature(f.clone())),
                        },
                        path: format!("{path}.sequence_id_feature"),
                        sequence: Some((
                            f.sequence_length.unwrap_or(0),
                            f.sequence_delim().to_string(),
                        )),
                        prefix: None,
                    },
                );
            }
            Some(Feature::SequenceRawFeature(f)) => {
                out.insert(
                    f.feature_name.clone(),
                    Candidate {
                        config: FeatureConfig {
                            feature: Some(Feature::RawFeature(f.clone())),
                        },
                        path: format!("{path}.sequence_raw_feature"),
                        sequence: Some((
                            f.sequence_length.unwrap_or(0),
                            f.sequence_delim().to_string(),
                        )),
                        prefix: None,
                    },
                );
            }
            Some(Feature::IdFeature(f)) => {
                out.insert(
                    f.feature_name.clone(),
                    plain(fc, format!("{path}.id_feature")),
                );
            }
            Some(Feature::RawFeature(f)) => {
                out.insert(
                    f.feature_name.clone(),
                    plain(fc, format!("{path}.raw_feature")),
                );
            }
            Some(Feature::ComboFeature(f)) => {
                out.insert(
                    f.feature_name.clone(),
                    plain(fc, format!("{path}.combo_feature")),
                );
            }
            _ => {}
        }
    }
    out
}

/// Whether `name` is a sub-feature of a grouped sequence
/// (`<sequence_name>__<feature_name>`).
pub(super) fn is_grouped_sub_feature(config: &EasyRecConfig, name: &str) -> bool {
    candidates(config)
        .get(name)
        .is_some_and(|c| c.prefix.is_some())
}

fn plain(fc: &FeatureConfig, path: String) -> Candidate {
    Candidate {
        config: fc.clone(),
        path,
        sequence: None,
        prefix: None,
    }
}

/// The expression's input column of a grouped sub-feature: tzrec prefixes
/// the sequence inputs (single-input kinds, any side but `feature`).
fn sequence_column(expression: &str, prefix: &str) -> String {
    let name = input_column(expression);
    if crate::lang::expression::reads_feature(expression) {
        name
    } else {
        format!("{prefix}{name}")
    }
}

impl Builder {
    /// Adds the sequence groups and encoders of `group`; returns each
    /// encoder's output, in the order the encoders are listed.
    pub(super) fn sequences(
        &mut self,
        config: &EasyRecConfig,
        group: &FeatureGroupConfig,
        gpath: &str,
        fg_none: bool,
        columns: &mut HashMap<String, NodeIndex>,
    ) -> Vec<Out> {
        if group.sequence_groups.is_empty() && group.sequence_encoders.is_empty() {
            return Vec::new();
        }
        if group.sequence_groups.is_empty() {
            self.errors.push(IrError::invalid(
                format!(
                    "group \"{}\" has sequence_encoders but no sequence_groups",
                    group.group_name
                ),
                format!("{gpath}.sequence_encoders"),
            ));
            return Vec::new();
        }
        let known = candidates(config);
        let mut tables: HashMap<String, (NodeIndex, TableNode, usize)> = HashMap::new();
        let single = group.sequence_groups.len() == 1;
        let mut outputs: HashMap<String, Out3> = HashMap::new();
        for (s, sg) in group.sequence_groups.iter().enumerate() {
            let spath = format!("{gpath}.sequence_groups[{s}]");
            let name = match sg.group_name.as_deref() {
                Some(n) => n.to_string(),
                None if single => group.group_name.clone(),
                None => {
                    self.errors.push(IrError::invalid(
                        "with several sequence groups, each needs a group_name",
                        spath,
                    ));
                    continue;
                }
            };
            if outputs.contains_key(&name) {
                self.errors.push(IrError::invalid(
                    format!("sequence group \"{name}\" is defined twice"),
                    format!("{spath}.group_name"),
                ));
                continue;
            }
            if let Some(out) =
                self.sequence_group(&name, sg, &spath, &known, fg_none, columns, &mut tables)
            {
                outputs.insert(name, out);
            }
        }
        let mut read: Vec<String> = Vec::new();
        let mut encoders = Vec::new();
        for (e, enc) in group.sequence_encoders.iter().enumerate() {
            let epath = format!("{gpath}.sequence_encoders[{e}]");
            let Some(module) = &enc.seq_module else {
                self.errors
                    .push(IrError::invalid("the encoder names no kind", epath));
                continue;
            };
            let input = match module {
                SeqModule::DinEncoder(m) => m.input.clone(),
                SeqModule::SimpleAttention(m) => m.input.clone(),
                SeqModule::PoolingEncoder(m) => m.input.clone(),
                SeqModule::SelfAttentionEncoder(m) => m.input.clone(),
                SeqModule::MultiWindowDinEncoder(m) => m.input.clone(),
            };
            // tzrec fills an encoder's missing input with the only group.
            let input = match input.as_str() {
                "" if single => outputs
                    .keys()
                    .next()
                    .cloned()
                    .or_else(|| group.sequence_groups[0].group_name.clone())
                    .unwrap_or_else(|| group.group_name.clone()),
                "" => {
                    self.errors.push(IrError::invalid(
                        "with several sequence groups, the encoder must name its input",
                        epath,
                    ));
                    continue;
                }
                s => s.to_string(),
            };
            let Some(seq) = outputs.get(&input).copied() else {
                if !group
                    .sequence_groups
                    .iter()
                    .any(|g| g.group_name.as_deref() == Some(input.as_str()))
                {
                    self.errors.push(IrError::invalid(
                        format!("the encoder reads sequence group \"{input}\", which this feature group does not define"),
                        format!("{epath}.{}.input", crate::ir::coverage::encoder_kind(module)),
                    ));
                }
                continue;
            };
            read.push(input.clone());
            if let Some(out) = self.encoder(module, e, &epath, &group.group_name, seq) {
                encoders.push(out);
            }
        }
        for (s, sg) in group.sequence_groups.iter().enumerate() {
            let name = sg
                .group_name
                .clone()
                .unwrap_or_else(|| group.group_name.clone());
            if outputs.contains_key(&name) && !read.contains(&name) {
                self.errors.push(IrError::invalid(
                    format!("sequence group \"{name}\" has no encoder"),
                    format!("{gpath}.sequence_groups[{s}]"),
                ));
            }
        }
        encoders
    }

    /// One sequence group node with its features; `None` after an error.
    #[allow(clippy::too_many_arguments)]
    fn sequence_group(
        &mut self,
        name: &str,
        sg: &crate::proto::tzrec::protos::SeqGroupConfig,
        spath: &str,
        known: &HashMap<String, Candidate>,
        fg_none: bool,
        columns: &mut HashMap<String, NodeIndex>,
        tables: &mut HashMap<String, (NodeIndex, TableNode, usize)>,
    ) -> Option<Out3> {
        let mut queries = Vec::new();
        let mut steps_of: Vec<(NodeIndex, u64)> = Vec::new();
        let mut steps: Option<u64> = None;
        let errors_before = self.errors.len();
        for (k, fname) in sg.feature_names.iter().enumerate() {
            let fpath = format!("{spath}.feature_names[{k}]");
            let Some(c) = known.get(fname) else {
                self.errors.push(IrError::invalid(
                    format!("the sequence group names feature \"{fname}\", which is not defined"),
                    fpath,
                ));
                continue;
            };
            let mut node = match resolve_feature(&c.config, &c.path, fg_none) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => {
                    self.errors.push(e);
                    continue;
                }
            };
            // Sequence-group features are distinct specs from the plain
            // list's (their own tables, per-step encoding).
            node.spec.name = format!("{name}.{fname}");
            node.table = node.table.map(|t| format!("{SEQ_TABLE_PREFIX}{t}"));
            if let Some((len, delim)) = &c.sequence {
                if *len == 0 {
                    self.errors.push(IrError::invalid(
                        format!("sequence feature \"{fname}\" needs a sequence_length above 0"),
                        c.path.clone(),
                    ));
                    continue;
                }
                match steps {
                    Some(l) if l != *len as u64 => {
                        self.errors.push(IrError::invalid(
                            format!(
                                "sequence feature \"{fname}\" has sequence_length {len}, another feature of the group {l}"
                            ),
                            fpath,
                        ));
                        continue;
                    }
                    _ => steps = Some(*len as u64),
                }
                node.spec.sequence_length = *len;
                node.spec.sequence_delim = delim.clone();
                node.spec.sequence_group = name.to_string();
                // tzrec resets an empty default of a sequence feature to 0.
                if node.spec.default_value.is_empty() {
                    node.spec.default_value = "0".into();
                }
                if let (Some(prefix), false) = (&c.prefix, fg_none) {
                    node.spec.input_columns = match &c.config.feature {
                        Some(Feature::IdFeature(f)) => vec![sequence_column(&f.expression, prefix)],
                        Some(Feature::RawFeature(f)) => {
                            vec![sequence_column(&f.expression, prefix)]
                        }
                        _ => node.spec.input_columns.clone(),
                    };
                }
                let w = node.width;
                if let Some(n) = self.add_feature(node, true, &c.path, 0, columns, tables) {
                    steps_of.push((n, w));
                }
            } else {
                let w = node.width;
                if let Some(n) = self.add_feature(node, true, &c.path, 0, columns, tables) {
                    queries.push((n, w));
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let Some(steps) = steps else {
            self.errors.push(IrError::invalid(
                format!("sequence group \"{name}\" names no sequence feature"),
                format!("{spath}.feature_names"),
            ));
            return None;
        };
        let query_width: u64 = queries.iter().map(|q| q.1).sum();
        let seq_width: u64 = steps_of.iter().map(|q| q.1).sum();
        let node = self.add(Node::SequenceGroup(SequenceGroupNode {
            name: name.to_string(),
            queries: queries.len(),
            query_width,
            seq_width,
            steps,
        }));
        for (k, (f, w)) in queries.iter().enumerate() {
            self.g
                .graph
                .add_edge(*f, node, Edge::new(batch_shape(*w), 0, k as u32));
        }
        for (k, (f, w)) in steps_of.iter().enumerate() {
            self.g.graph.add_edge(
                *f,
                node,
                Edge::new(
                    vec![BATCH, steps as i64, *w as i64],
                    0,
                    (queries.len() + k) as u32,
                ),
            );
        }
        Some(Out3 {
            node,
            query_width,
            seq_width,
            steps,
        })
    }

    /// A target-attention scorer: the attention MLP over `width`-wide step
    /// inputs, then a linear to one score per step.
    fn attention_scorer(
        &mut self,
        name: &str,
        path: &str,
        mlp: &crate::proto::tzrec::protos::Mlp,
        width: u64,
    ) -> (MlpBlock, LinearParams) {
        let block = self.mlp_block(
            &format!("{name}.attn"),
            MlpRole::Attention,
            path,
            mlp,
            width,
        );
        let last = if block.layers.is_empty() {
            width
        } else {
            block.out_dim()
        };
        let score = super::linear(&format!("{name}.score"), last, 1, true);
        (block, score)
    }

    /// One encoder over a sequence group's outputs.
    fn encoder(
        &mut self,
        module: &SeqModule,
        index: usize,
        epath: &str,
        group: &str,
        seq: Out3,
    ) -> Option<Out> {
        let kind_name = crate::ir::coverage::encoder_kind(module);
        let name = format!("{group}.seq_encoder{index}.{kind_name}");
        let (q, d) = (seq.query_width, seq.seq_width);
        let max_len = |m: i32| -> u64 {
            if m > 0 && (m as u64) < seq.steps {
                m as u64
            } else {
                seq.steps
            }
        };
        let (kind, max_steps) = match module {
            SeqModule::DinEncoder(m) => {
                if q > d || q == 0 {
                    self.errors.push(IrError::invalid(
                        format!(
                            "DIN needs a query no wider than the sequence and not empty; the query is {q} wide, the sequence {d}"
                        ),
                        format!("{epath}.{kind_name}"),
                    ));
                    return None;
                }
                let mpath = format!("{epath}.{kind_name}.attn_mlp");
                let (mlp, score) = self.attention_scorer(&name, &mpath, &m.attn_mlp, 4 * d);
                (
                    EncoderKind::Din {
                        mlp: Box::new(mlp),
                        score: Box::new(score),
                    },
                    max_len(m.max_seq_length()),
                )
            }
            SeqModule::SimpleAttention(m) => {
                if q != d {
                    self.errors.push(IrError::invalid(
                        format!(
                            "simple attention needs a query as wide as the sequence; the query is {q} wide, the sequence {d}"
                        ),
                        format!("{epath}.{kind_name}"),
                    ));
                    return None;
                }
                (EncoderKind::SimpleAttention, max_len(m.max_seq_length()))
            }
            SeqModule::PoolingEncoder(m) => {
                let mean = match m.pooling_type() {
                    "mean" => true,
                    "sum" => false,
                    other => {
                        self.errors.push(IrError::invalid(
                            format!("pooling_type \"{other}\" is not sum or mean"),
                            format!("{epath}.{kind_name}.pooling_type"),
                        ));
                        return None;
                    }
                };
                (EncoderKind::Pooling { mean }, max_len(m.max_seq_length()))
            }
            SeqModule::MultiWindowDinEncoder(m) => {
                let at = format!("{epath}.{kind_name}");
                if q > d || q == 0 {
                    self.errors.push(IrError::invalid(
                        format!(
                            "multi-window DIN needs a query no wider than the sequence and not empty; the query is {q} wide, the sequence {d}"
                        ),
                        at,
                    ));
                    return None;
                }
                if m.windows_len.is_empty() || m.windows_len.contains(&0) {
                    self.errors.push(IrError::invalid(
                        "multi-window DIN needs `windows_len`, every window at least one step long",
                        format!("{at}.windows_len"),
                    ));
                    return None;
                }
                let mpath = format!("{at}.attn_mlp");
                let (mlp, score) = self.attention_scorer(&name, &mpath, &m.attn_mlp, 3 * d);
                // tzrec's `nn.PReLU()`: one slope, 0.25 at the start.
                let act = super::parse_activation("nn.PReLU", &format!("{name}.active")).ok()?;
                (
                    EncoderKind::MultiWindowDin {
                        mlp: Box::new(mlp),
                        score: Box::new(score),
                        act: Box::new(act),
                        windows: m.windows_len.iter().map(|&w| u64::from(w)).collect(),
                    },
                    seq.steps,
                )
            }
            SeqModule::SelfAttentionEncoder(m) => {
                let at = format!("{epath}.{kind_name}");
                let params = self.self_attention(&name, &at, m, d)?;
                (
                    EncoderKind::SelfAttention(Box::new(params)),
                    max_len(m.max_seq_length()),
                )
            }
        };
        let block = SeqEncoderBlock {
            name,
            kind,
            query_width: q,
            seq_width: d,
            steps: seq.steps,
            max_steps,
        };
        let width = block.width();
        let node = self.add(Node::SeqEncoder(block));
        let l = seq.steps as i64;
        let shapes = [batch_shape(q), vec![BATCH, l, d as i64], vec![BATCH, l]];
        for (port, shape) in shapes.into_iter().enumerate() {
            self.g
                .graph
                .add_edge(seq.node, node, Edge::new(shape, port as u32, port as u32));
        }
        Some(Out {
            node,
            port: 0,
            width,
        })
    }
}

impl Builder {
    /// The parameters of a self-attention encoder over `d`-wide steps, as
    /// tzrec's `SelfAttentionEncoder` creates them: `query`, `key` and
    /// `value` are `nn.Linear(d, dim)` (torch's default init), then
    /// `nn.MultiheadAttention(dim, heads)`, whose packed in-projection
    /// `[3 dim, dim]` is Xavier-uniform (each third here is one `[dim,
    /// dim]` parameter with the packed matrix's bound) with zero biases,
    /// and whose out-projection is a default `nn.Linear(dim, dim)` with
    /// its bias zeroed. `None` after an error.
    fn self_attention(
        &mut self,
        name: &str,
        at: &str,
        m: &crate::proto::tzrec::protos::SelfAttentionEncoder,
        d: u64,
    ) -> Option<SelfAttentionParams> {
        let (dim, heads) = (m.multihead_attn_dim(), m.num_heads());
        if dim <= 0 || heads <= 0 || dim % heads != 0 {
            self.errors.push(IrError::invalid(
                format!(
                    "multihead_attn_dim {dim} must be a positive multiple of num_heads {heads}"
                ),
                format!("{at}.multihead_attn_dim"),
            ));
            return None;
        }
        let dropout = m.dropout();
        if !(0.0..1.0).contains(&dropout) {
            self.errors.push(IrError::invalid(
                format!("dropout {dropout} of the attention weights is not in [0, 1)"),
                format!("{at}.dropout"),
            ));
            return None;
        }
        let (dim, heads) = (dim as u64, heads as u64);
        let linear = |part: &str| super::linear(&format!("{name}.{part}"), d, dim, true);
        let mha = format!("{name}.multihead_attn");
        // Xavier-uniform over the packed [3 dim, dim] matrix.
        let xavier = (6.0 / (4 * dim) as f32).sqrt();
        let zero_bias = |mut l: LinearParams| {
            if let Some(b) = l.bias.as_mut() {
                b.init = Init::Constant(0.0);
            }
            l
        };
        let in_proj = |part: &str| {
            let mut l = zero_bias(super::linear(
                &format!("{mha}.in_proj_{part}"),
                dim,
                dim,
                true,
            ));
            l.weight.init = Init::Uniform { bound: xavier };
            l
        };
        Some(SelfAttentionParams {
            dim,
            heads,
            dropout,
            query: linear("query"),
            key: linear("key"),
            value: linear("value"),
            in_q: in_proj("q"),
            in_k: in_proj("k"),
            in_v: in_proj("v"),
            out: zero_bias(super::linear(&format!("{mha}.out_proj"), dim, dim, true)),
        })
    }
}

/// A sequence group's node and widths.
#[derive(Debug, Clone, Copy)]
struct Out3 {
    node: NodeIndex,
    query_width: u64,
    seq_width: u64,
    steps: u64,
}

//! Lowering: typed config to model graph, one function per model kind
//! (`ple`, `mmoe`, `dbmtl`, `simple_multi_task`, `pepnet`) built from shared
//! building blocks (features, MLP, gate, tower).

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;

mod dc2vr;
mod masknet;
mod pepnet;
mod sequence;

use super::error::IrError;
use super::graph::*;
use super::shape::{self, dropout_of, feature_width};
use crate::lang::normalizer::Normalizer;
use crate::proto::plan;
use crate::proto::tzrec::protos::{
    feature_config::Feature, loss_config::Loss, metric_config::Metric, model_config::Model,
    EasyRecConfig, FeatureConfig, FeatureGroupType, FgMode, LossConfig, MetricConfig, Mlp,
};

/// Lowers a typed config to the model graph, or every reason it cannot be.
pub(crate) fn lower(config: &EasyRecConfig) -> Result<ModelGraph, Vec<IrError>> {
    let shape_errors = shape::check_config(config);
    if !shape_errors.is_empty() {
        return Err(shape_errors.into_iter().map(IrError::Shape).collect());
    }
    let Some(mc) = &config.model_config else {
        return Err(vec![IrError::invalid(
            "the config has no model_config",
            "model_config",
        )]);
    };
    let kind = match &mc.model {
        Some(Model::Ple(_)) => "ple",
        Some(Model::Mmoe(_)) => "mmoe",
        Some(Model::Dbmtl(_)) => "dbmtl",
        Some(Model::SimpleMultiTask(_)) => "simple_multi_task",
        Some(Model::Pepnet(_)) => "pepnet",
        Some(Model::Dc2vr(_)) => "dc2vr",
        Some(other) => {
            let name = format!("{other:?}");
            let name = name.split('(').next().unwrap_or("this model").to_string();
            return Err(vec![IrError::unsupported(
                format!("model kind `{name}`"),
                "model_config",
            )]);
        }
        None => {
            return Err(vec![IrError::invalid(
            "model_config names no model (ple, mmoe, dbmtl, dc2vr, pepnet or simple_multi_task)",
            "model_config",
        )])
        }
    };
    let mut b = Builder {
        g: ModelGraph::new(kind),
        errors: Vec::new(),
    };
    if let Some(Model::Pepnet(m)) = &mc.model {
        b.pepnet(config, m);
    } else if let Some(group) = b.features(config) {
        match &mc.model {
            Some(Model::Ple(m)) => b.ple(m, group),
            Some(Model::Mmoe(m)) => b.mmoe(m, group),
            Some(Model::Dbmtl(m)) => b.dbmtl(m, group),
            Some(Model::Dc2vr(m)) => b.dc2vr(m, group),
            Some(Model::SimpleMultiTask(m)) => {
                for (t, tower) in m.task_towers.iter().enumerate() {
                    let path = format!("model_config.simple_multi_task.task_towers[{t}]");
                    let task = TaskDesc::from_tower(tower);
                    b.tower(&path, &task, tower.mlp.as_ref(), group);
                }
            }
            _ => {}
        }
    }
    if b.errors.is_empty()
        && !b
            .g
            .graph
            .node_weights()
            .any(|n| matches!(n, Node::Tower(_)))
    {
        b.errors.push(IrError::invalid(
            "the model has no task towers",
            format!("model_config.{kind}.task_towers"),
        ));
    }
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    b.g.check().map_err(|p| vec![IrError::Inconsistent(p)])?;
    Ok(b.g)
}

/// One output of a node: `[B, width]` at `port`.
#[derive(Debug, Clone, Copy)]
struct Out {
    node: NodeIndex,
    port: u32,
    width: u64,
}

struct Builder {
    g: ModelGraph,
    errors: Vec<IrError>,
}

/// A linear layer with torch's default init: weight and bias uniform in
/// `+-1/sqrt(fan_in)`.
pub(crate) fn linear(name: &str, in_dim: u64, out_dim: u64, bias: bool) -> LinearParams {
    let bound = 1.0 / (in_dim.max(1) as f32).sqrt();
    LinearParams {
        in_dim,
        out_dim,
        weight: ParamSpec {
            name: format!("{name}.weight"),
            shape: vec![out_dim, in_dim],
            init: Init::Uniform { bound },
            trainable: true,
            no_decay: false,
        },
        bias: bias.then(|| ParamSpec {
            name: format!("{name}.bias"),
            shape: vec![out_dim],
            init: Init::Uniform { bound },
            trainable: true,
            no_decay: true,
        }),
    }
}

fn constant(name: String, shape: Vec<u64>, value: f32, trainable: bool) -> ParamSpec {
    ParamSpec {
        name,
        shape,
        init: Init::Constant(value),
        trainable,
        no_decay: true,
    }
}

/// The plan's activation for an MLP's `activation` string (parsed by
/// `lang::activation`), or what plec cannot run of it.
pub(crate) fn parse_activation(text: &str, name: &str) -> Result<Act, String> {
    use crate::lang::activation::Activation as A;
    let parsed = crate::lang::activation::parse(text).map_err(|p| p.message)?;
    let kind = match &parsed {
        A::None => plan::Activation::ActNone,
        A::Torch { class, .. } => match *class {
            "Identity" => plan::Activation::ActNone,
            "ReLU" => plan::Activation::Relu,
            "Sigmoid" => plan::Activation::Sigmoid,
            "Tanh" => plan::Activation::Tanh,
            "LeakyReLU" => plan::Activation::LeakyRelu,
            "GELU" => plan::Activation::Gelu,
            "SiLU" => plan::Activation::Silu,
            "ELU" => plan::Activation::Elu,
            "PReLU" => plan::Activation::Prelu,
            _ => return Err(format!("activation `{}`", text.trim())),
        },
        A::Dice | A::Custom(_) => return Err(format!("activation `{}`", text.trim())),
    };
    // Only a leaky relu's slope and an elu's alpha change what plec
    // computes; any other argument (GELU's tanh approximation, PReLU's
    // channel count) would train a different model than the config asks.
    let takes_number = matches!(kind, plan::Activation::LeakyRelu | plan::Activation::Elu);
    let alpha = match (takes_number, parsed.significant_args()) {
        (_, 0) => 0.0,
        (true, 1) => parsed
            .first_number()
            .ok_or_else(|| format!("activation `{}` with that argument", text.trim()))?
            as f32,
        _ => return Err(format!("activation `{}` with those arguments", text.trim())),
    };
    Ok(Act {
        kind,
        alpha,
        // torch.nn.PReLU(): one slope shared by all channels, initialized 0.25.
        slope: (kind == plan::Activation::Prelu)
            .then(|| constant(format!("{name}.prelu.slope"), vec![1], 0.25, true)),
        dice: None,
    })
}

/// An MLP layer's activation of `width` channels: [`parse_activation`],
/// and Dice, whose parameters are per channel.
pub(crate) fn layer_activation(text: &str, name: &str, width: u64) -> Result<Act, String> {
    if !matches!(
        crate::lang::activation::parse(text),
        Ok(crate::lang::activation::Activation::Dice)
    ) {
        return parse_activation(text, name);
    }
    // tzrec's Dice: BatchNorm1d(width, affine=False) (eps 1e-5, momentum
    // 0.1, as every batch norm plec builds) and alpha zeros.
    let frozen =
        |what: &str, v: f32| constant(format!("{name}.dice.bn.{what}"), vec![width], v, false);
    Ok(Act {
        kind: plan::Activation::ActNone,
        alpha: 0.0,
        slope: None,
        dice: Some(Box::new(DiceParams {
            bn: [
                frozen("gamma", 1.0),
                frozen("beta", 0.0),
                frozen("running_mean", 0.0),
                frozen("running_var", 1.0),
            ],
            alpha: constant(format!("{name}.dice.alpha"), vec![width], 0.0, true),
        })),
    })
}

/// The bottom MLP and MMoE settings DBMTL and DC2VR share.
pub(super) struct SharedBottom<'a> {
    pub bottom: Option<&'a Mlp>,
    pub experts: Option<&'a Mlp>,
    pub gate: Option<&'a Mlp>,
    pub num_expert: u32,
}

/// Everything a tower needs besides its input and MLPs.
struct TaskDesc {
    name: String,
    label: String,
    num_class: u32,
    losses: Vec<LossConfig>,
    metrics: Vec<MetricConfig>,
    weight: f32,
    sample_weight_name: String,
    indicator: String,
    in_weight: f32,
    out_weight: f32,
}

/// `TaskTower` and `BayesTaskTower` share these fields; prost's accessors
/// give the schema's defaults (`num_class` 1, weights 1.0).
macro_rules! task_desc {
    ($t:expr, $label:expr) => {
        TaskDesc {
            name: $t.tower_name.clone(),
            label: $label,
            num_class: $t.num_class(),
            losses: $t.losses.clone(),
            metrics: $t.metrics.clone(),
            weight: $t.weight(),
            sample_weight_name: $t.sample_weight_name().to_string(),
            indicator: $t.task_space_indicator_label().to_string(),
            in_weight: $t.in_task_space_weight(),
            out_weight: $t.out_task_space_weight(),
        }
    };
}

impl TaskDesc {
    fn from_tower(t: &crate::proto::tzrec::protos::TaskTower) -> Self {
        task_desc!(t, t.label_name.clone())
    }

    fn from_bayes(t: &crate::proto::tzrec::protos::BayesTaskTower) -> Self {
        task_desc!(t, t.label_name().to_string())
    }
}

impl Builder {
    fn add(&mut self, node: Node) -> NodeIndex {
        self.g.graph.add_node(node)
    }

    fn connect(&mut self, from: Out, to: NodeIndex, port: u32) {
        self.g.graph.add_edge(
            from.node,
            to,
            Edge::new(batch_shape(from.width), from.port, port),
        );
    }

    /// Adds features, columns, tables and the first feature group; returns
    /// the group's output.
    fn features(&mut self, config: &EasyRecConfig) -> Option<Out> {
        let mc = config.model_config.as_ref()?;
        if mc.feature_groups.is_empty() {
            self.errors.push(IrError::invalid(
                "the model has no feature group",
                "model_config.feature_groups",
            ));
            return None;
        }
        self.feature_groups(config, &[0])?.into_iter().next()
    }

    /// Adds features, columns, tables and the feature groups at `wanted`
    /// (indices into `feature_groups`); returns each group's output, in
    /// the order asked. A feature read by several groups is one node (one
    /// lookup) feeding each of them.
    fn feature_groups(&mut self, config: &EasyRecConfig, wanted: &[usize]) -> Option<Vec<Out>> {
        let mc = config.model_config.as_ref()?;
        let groups: Vec<(usize, &crate::proto::tzrec::protos::FeatureGroupConfig)> = wanted
            .iter()
            .filter_map(|&g| mc.feature_groups.get(g).map(|c| (g, c)))
            .collect();
        for &(g, group) in &groups {
            if group.group_type != FeatureGroupType::Deep as i32 {
                self.errors.push(IrError::unsupported(
                    "a feature group that is not DEEP",
                    format!("model_config.feature_groups[{g}].group_type"),
                ));
            }
        }
        let fg_none = config
            .data_config
            .as_ref()
            .and_then(|d| d.fg_mode)
            .is_none_or(|m| m == FgMode::FgNone as i32);
        let by_name: HashMap<&str, (usize, &FeatureConfig)> = config
            .feature_configs
            .iter()
            .enumerate()
            .filter_map(|(i, fc)| feature_name(fc).map(|n| (n, (i, fc))))
            .collect();
        let mut columns: HashMap<String, NodeIndex> = HashMap::new();
        let mut tables: HashMap<String, (NodeIndex, TableNode, usize)> = HashMap::new();
        let mut feature_nodes: HashMap<usize, NodeIndex> = HashMap::new();
        let is_used = |name: &str| {
            groups
                .iter()
                .any(|(_, g)| g.feature_names.iter().any(|n| n == name))
        };
        // Resolve every supported feature (unused ones become dead nodes);
        // unsupported ones are an error only when a group uses them.
        let mut order: Vec<usize> = (0..config.feature_configs.len()).collect();
        order.sort_by_key(|&i| {
            let name = feature_name(&config.feature_configs[i]).unwrap_or("");
            (!is_used(name), i)
        });
        for i in order {
            let fc = &config.feature_configs[i];
            let used = feature_name(fc).is_some_and(is_used);
            let path = format!("feature_configs[{i}]");
            let node = match resolve_feature(fc, &path, fg_none) {
                Ok(Some(node)) => node,
                Ok(None) => continue,
                Err(e) => {
                    if used {
                        self.errors.push(e);
                    }
                    continue;
                }
            };
            if let Some(fnode) = self.add_feature(node, used, &path, i, &mut columns, &mut tables) {
                feature_nodes.insert(i, fnode);
            }
        }
        let mut outs = Vec::with_capacity(groups.len());
        for (g, group) in groups {
            let gpath = format!("model_config.feature_groups[{g}]");
            let mut width = 0;
            let mut members = Vec::new();
            let mut member_names = Vec::new();
            for (k, name) in group.feature_names.iter().enumerate() {
                match by_name.get(name.as_str()) {
                    None if sequence::is_grouped_sub_feature(config, name) => {
                        self.errors.push(IrError::unsupported(
                            format!("sub-feature \"{name}\" of a grouped sequence in a plain feature list (pooled over its steps)"),
                            format!("{gpath}.feature_names[{k}]"),
                        ))
                    }
                    None => self.errors.push(IrError::invalid(
                        format!("the feature group names feature \"{name}\", which is not defined"),
                        format!("{gpath}.feature_names[{k}]"),
                    )),
                    Some((i, fc)) => {
                        if let (Some(&fnode), Some(w)) = (feature_nodes.get(i), feature_width(fc)) {
                            width += w;
                            members.push((fnode, w));
                            member_names.push((name.clone(), w));
                        }
                    }
                }
            }
            if members.is_empty() && self.errors.is_empty() {
                self.errors.push(IrError::invalid(
                    "the feature group has no features",
                    format!("{gpath}.feature_names"),
                ));
            }
            let gnode = self.add(Node::FeatureGroup {
                name: group.group_name.clone(),
                width,
            });
            for (k, (fnode, w)) in members.into_iter().enumerate() {
                self.g
                    .graph
                    .add_edge(fnode, gnode, Edge::new(batch_shape(w), 0, k as u32));
            }
            let plain = Out {
                node: gnode,
                port: 0,
                width,
            };
            let encoders = self.sequences(config, group, &gpath, fg_none, &mut columns);
            // tzrec names an encoder's output `<group>_seq_encoder_<i>`.
            member_names.extend(
                encoders
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (format!("{}_seq_encoder_{i}", group.group_name), e.width)),
            );
            let out = if encoders.is_empty() {
                plain
            } else {
                // tzrec's group output: the plain features, then each encoder.
                let cat = self.add(Node::Concat {
                    name: format!("{}.with_sequences", group.group_name),
                });
                let mut total = 0;
                for (k, out) in std::iter::once(plain).chain(encoders).enumerate() {
                    self.connect(out, cat, k as u32);
                    total += out.width;
                }
                Out {
                    node: cat,
                    port: 0,
                    width: total,
                }
            };
            let out = match &mc.variational_dropout {
                // tzrec gives every non-sequence group of more than one
                // feature its own variational dropout.
                Some(vd) if member_names.len() > 1 => self.variational_dropout(
                    &group.group_name,
                    member_names,
                    vd.regularization_lambda(),
                    out,
                ),
                _ => out,
            };
            outs.push(out);
        }
        Some(outs)
    }

    /// A group's variational dropout: one drop logit per feature, drawn
    /// from a standard normal as torch's `randn`.
    fn variational_dropout(
        &mut self,
        group: &str,
        features: Vec<(String, u64)>,
        lambda: f32,
        input: Out,
    ) -> Out {
        let name = format!("{group}.variational_dropout");
        let node = self.add(Node::VariationalDropout(VariationalDropoutBlock {
            feature_p: ParamSpec {
                name: format!("{name}.feature_p"),
                shape: vec![features.len() as u64],
                init: Init::Normal,
                trainable: true,
                no_decay: false,
            },
            name,
            features,
            lambda,
        }));
        self.connect(input, node, 0);
        Out {
            node,
            port: 0,
            width: input.width,
        }
    }

    /// Adds a resolved feature with its input columns and (shared)
    /// embedding table; `None` when its table disagrees with an earlier
    /// feature sharing it (an error when the model reads the feature).
    fn add_feature(
        &mut self,
        node: FeatureNode,
        used: bool,
        path: &str,
        first: usize,
        columns: &mut HashMap<String, NodeIndex>,
        tables: &mut HashMap<String, (NodeIndex, TableNode, usize)>,
    ) -> Option<NodeIndex> {
        let columns_of = node.spec.input_columns.clone();
        let table = node.table.clone();
        let dim = node.spec.embedding_dim as u64;
        let rows = node.spec.num_ids;
        let tnode = match table {
            None => None,
            Some(t) => Some(match tables.get(&t) {
                Some((tn, existing, at)) => {
                    if existing.dim != dim || existing.rows != rows {
                        if used {
                            self.errors.push(IrError::invalid(
                                format!(
                                    "features sharing embedding \"{t}\" disagree on its size: {}x{} (feature_configs[{at}]) and {rows}x{dim}",
                                    existing.rows, existing.dim
                                ),
                                path.to_string(),
                            ));
                        }
                        return None;
                    }
                    *tn
                }
                None => {
                    let tn_data = TableNode {
                        name: t.clone(),
                        rows,
                        dim,
                    };
                    let tn = self.add(Node::EmbeddingTable(tn_data.clone()));
                    tables.insert(t.clone(), (tn, tn_data, first));
                    tn
                }
            }),
        };
        let fnode = self.add(Node::Feature(node));
        for c in columns_of {
            let cnode = *columns
                .entry(c.clone())
                .or_insert_with(|| self.g.graph.add_node(Node::InputColumn { name: c }));
            self.g
                .graph
                .add_edge(cnode, fnode, Edge::new(vec![BATCH], 0, 0));
        }
        if let Some(tnode) = tnode {
            self.g
                .graph
                .add_edge(tnode, fnode, Edge::new(vec![rows as i64, dim as i64], 0, 1));
        }
        Some(fnode)
    }

    fn mlp(&mut self, name: &str, role: MlpRole, path: &str, mlp: &Mlp, input: Out) -> Out {
        let block = self.mlp_block(name, role, path, mlp, input.width);
        let width = if block.layers.is_empty() {
            input.width
        } else {
            block.out_dim()
        };
        let node = self.add(Node::Mlp(block));
        self.connect(input, node, 0);
        Out {
            node,
            port: 0,
            width,
        }
    }

    /// The layers of an MLP reading `in_dim` features.
    fn mlp_block(
        &mut self,
        name: &str,
        role: MlpRole,
        path: &str,
        mlp: &Mlp,
        in_dim: u64,
    ) -> MlpBlock {
        let mut layers = Vec::new();
        let mut in_dim = in_dim;
        let use_bn = mlp.use_bn();
        let use_ln = mlp.use_ln();
        if use_bn && use_ln {
            self.errors.push(IrError::invalid(
                "an MLP cannot use both batch norm and layer norm",
                path,
            ));
        }
        for (k, &units) in mlp.hidden_units.iter().enumerate() {
            let out = units as u64;
            let lname = format!("{name}.layer{k}");
            let act = match layer_activation(mlp.activation(), &lname, out) {
                Ok(a) => a,
                Err(what) => {
                    self.errors
                        .push(IrError::unsupported(what, format!("{path}.activation")));
                    Act {
                        kind: plan::Activation::ActNone,
                        alpha: 0.0,
                        slope: None,
                        dice: None,
                    }
                }
            };
            let norm = if use_bn {
                Norm::Batch([
                    constant(format!("{lname}.bn.gamma"), vec![out], 1.0, true),
                    constant(format!("{lname}.bn.beta"), vec![out], 0.0, true),
                    constant(format!("{lname}.bn.running_mean"), vec![out], 0.0, false),
                    constant(format!("{lname}.bn.running_var"), vec![out], 1.0, false),
                ])
            } else if use_ln {
                Norm::Layer([
                    constant(format!("{lname}.ln.gamma"), vec![out], 1.0, true),
                    constant(format!("{lname}.ln.beta"), vec![out], 0.0, true),
                ])
            } else {
                Norm::None
            };
            let bias = mlp.bias() && !use_bn;
            layers.push(DenseLayer {
                linear: linear(&lname, in_dim, out, bias),
                norm,
                act,
                dropout: dropout_of(mlp, k),
            });
            in_dim = out;
        }
        MlpBlock {
            name: name.to_string(),
            role,
            layers,
            path: path.to_string(),
        }
    }

    fn gate(&mut self, name: &str, path: &str, selector: Out, experts: &[Out]) -> Out {
        let k = experts.len() as u64;
        let d = experts.first().map_or(0, |e| e.width);
        if experts.iter().any(|e| e.width != d) {
            let widths: Vec<String> = experts.iter().map(|e| e.width.to_string()).collect();
            self.errors.push(IrError::Shape(shape::ShapeError {
                code: "plec::gate-width",
                message: format!(
                    "gate \"{name}\" mixes experts of different widths ({})",
                    widths.join(", ")
                ),
                labels: vec![shape::PathLabel {
                    path: path.to_string(),
                    text: "experts mixed here".into(),
                    primary: true,
                }],
                help: "make every expert this gate mixes end in the same width".into(),
            }));
        }
        let node = self.add(Node::Gate(GateBlock {
            name: name.to_string(),
            num_experts: k,
            expert_dim: d,
            selector_dim: selector.width,
            head: Some(linear(&format!("{name}.linear"), selector.width, k, true)),
        }));
        self.connect(selector, node, 0);
        for (i, e) in experts.iter().enumerate() {
            self.connect(*e, node, i as u32 + 1);
        }
        Out {
            node,
            port: 0,
            width: d,
        }
    }

    fn tower(&mut self, path: &str, task: &TaskDesc, mlp: Option<&Mlp>, input: Out) {
        self.domain_tower(path, task, mlp, input, None);
    }

    /// One tower's MLP (built standalone, then moved into the tower node)
    /// and logits linear, named under `prefix`.
    fn tower_head(
        &mut self,
        prefix: &str,
        path: &str,
        mlp: Option<&Mlp>,
        num_class: u64,
        input: Out,
    ) -> TowerHead {
        let mut in_dim = input.width;
        let mlp_block = mlp.map(|m| {
            let out = self.mlp(
                &format!("{prefix}.mlp"),
                MlpRole::TaskMlp,
                &format!("{path}.mlp"),
                m,
                input,
            );
            in_dim = out.width;
            match self.g.graph.remove_node(out.node) {
                Some(Node::Mlp(b)) => b,
                _ => MlpBlock {
                    name: String::new(),
                    role: MlpRole::TaskMlp,
                    path: String::new(),
                    layers: Vec::new(),
                },
            }
        });
        TowerHead {
            mlp: mlp_block,
            logits: linear(&format!("{prefix}.logits"), in_dim, num_class, true),
        }
    }

    /// A task tower; with `domains` (PEPNet's label and domain count) one
    /// copy per domain, each row trained and scored by its domain's copy.
    fn domain_tower(
        &mut self,
        path: &str,
        task: &TaskDesc,
        mlp: Option<&Mlp>,
        input: Out,
        domains: Option<(&str, u32)>,
    ) {
        let name = &task.name;
        let num_class = task.num_class as u64;
        let Some(mut plan_task) = self.plan_task(path, task) else {
            return;
        };
        let mut heads = match domains {
            Some((label, count)) => {
                plan_task.domain_label = label.to_string();
                plan_task.domain_count = count;
                (0..count)
                    .map(|d| {
                        self.tower_head(&format!("{name}.domain{d}"), path, mlp, num_class, input)
                    })
                    .collect()
            }
            None => vec![self.tower_head(name, path, mlp, num_class, input)],
        };
        // Losses and metrics read every domain's logits; the runtime picks
        // each row's (`runtime::loss::task_logits`).
        let width = num_class * heads.len() as u64;
        let first = heads.remove(0);
        let node = self.add(Node::Tower(TowerBlock {
            name: name.clone(),
            mlp: first.mlp,
            logits: first.logits,
            more_domains: heads,
            task: plan_task.clone(),
        }));
        self.connect(input, node, 0);
        for loss in &plan_task.losses {
            let l = self.add(Node::Loss {
                task: name.clone(),
                loss: loss.clone(),
            });
            self.g
                .graph
                .add_edge(node, l, Edge::new(batch_shape(width), 0, 0));
        }
        for metric in &plan_task.metrics {
            let m = self.add(Node::Metric {
                task: name.clone(),
                metric: metric.clone(),
            });
            self.g
                .graph
                .add_edge(node, m, Edge::new(batch_shape(width), 0, 0));
        }
    }

    fn plan_task(&mut self, path: &str, t: &TaskDesc) -> Option<plan::Task> {
        let mut losses = Vec::new();
        for l in &t.losses {
            let mut session_feature = String::new();
            let (kind, gamma, alpha) = match &l.loss {
                Some(Loss::BinaryCrossEntropy(_)) => (plan::LossKind::BinaryCrossEntropy, 0.0, 0.0),
                Some(Loss::SoftmaxCrossEntropy(_)) => {
                    (plan::LossKind::SoftmaxCrossEntropy, 0.0, 0.0)
                }
                Some(Loss::L2Loss(_)) => (plan::LossKind::L2Loss, 0.0, 0.0),
                Some(Loss::BinaryFocalLoss(f)) => {
                    (plan::LossKind::BinaryFocalLoss, f.gamma(), f.alpha())
                }
                Some(Loss::JrcLoss(j)) => {
                    session_feature = j.session_name.clone();
                    (plan::LossKind::JrcLoss, 0.0, j.alpha())
                }
                None => continue,
            };
            losses.push(plan::Loss {
                kind: kind as i32,
                gamma,
                alpha,
                session_feature,
            });
        }
        if losses.is_empty() {
            // TorchEasyRec needs a loss; plec picks the one the logits fit.
            let kind = if t.num_class > 1 {
                plan::LossKind::SoftmaxCrossEntropy
            } else {
                plan::LossKind::BinaryCrossEntropy
            };
            losses.push(plan::Loss {
                kind: kind as i32,
                ..Default::default()
            });
        }
        let mut metrics = Vec::new();
        for (k, m) in t.metrics.iter().enumerate() {
            let metric = match &m.metric {
                Some(Metric::Auc(a)) => plan::Metric {
                    kind: plan::MetricKind::Auc as i32,
                    thresholds: a.thresholds(),
                    grouping_key: String::new(),
                },
                Some(Metric::GroupedAuc(g)) => plan::Metric {
                    kind: plan::MetricKind::GroupedAuc as i32,
                    thresholds: 0,
                    grouping_key: g.grouping_key.clone(),
                },
                Some(Metric::MeanSquaredError(_)) => plan::Metric {
                    kind: plan::MetricKind::MeanSquaredError as i32,
                    ..Default::default()
                },
                Some(Metric::MeanAbsoluteError(_)) => plan::Metric {
                    kind: plan::MetricKind::MeanAbsoluteError as i32,
                    ..Default::default()
                },
                Some(Metric::Accuracy(_)) => plan::Metric {
                    kind: plan::MetricKind::Accuracy as i32,
                    ..Default::default()
                },
                Some(other) => {
                    let name = format!("{other:?}");
                    let name = name.split('(').next().unwrap_or("this metric").to_string();
                    self.errors.push(IrError::unsupported(
                        format!("metric `{name}`"),
                        format!("{path}.metrics[{k}]"),
                    ));
                    continue;
                }
                None => continue,
            };
            metrics.push(metric);
        }
        Some(plan::Task {
            tower_name: t.name.clone(),
            label_name: t.label.clone(),
            num_class: t.num_class,
            logits: 0,
            losses,
            metrics,
            weight: t.weight,
            sample_weight_name: t.sample_weight_name.clone(),
            task_space_indicator_label: t.indicator.clone(),
            in_task_space_weight: t.in_weight,
            out_task_space_weight: t.out_weight,
            domain_label: String::new(),
            domain_count: 0,
        })
    }

    fn ple(&mut self, m: &crate::proto::tzrec::protos::Ple, group: Out) {
        let base = "model_config.ple";
        let tasks = m.task_towers.len();
        let mut task_in = vec![group; tasks];
        let mut shared_in = group;
        let layers = m.extraction_networks.len();
        self.g.layers = layers;
        for (l, net) in m.extraction_networks.iter().enumerate() {
            let p = format!("{base}.extraction_networks[{l}]");
            let lname = &net.network_name;
            let mut task_experts = Vec::with_capacity(tasks);
            for (t, tower) in m.task_towers.iter().enumerate() {
                let experts: Vec<Out> = (0..net.expert_num_per_task)
                    .map(|k| {
                        self.mlp(
                            &format!("{lname}.{}.expert{k}", tower.tower_name),
                            MlpRole::Expert,
                            &format!("{p}.task_expert_net"),
                            &net.task_expert_net,
                            task_in[t],
                        )
                    })
                    .collect();
                task_experts.push(experts);
            }
            let mut shared = Vec::new();
            if let Some(share_net) = &net.share_expert_net {
                for k in 0..net.share_num() {
                    shared.push(self.mlp(
                        &format!("{lname}.shared.expert{k}"),
                        MlpRole::Expert,
                        &format!("{p}.share_expert_net"),
                        share_net,
                        shared_in,
                    ));
                }
            }
            let mut next_task = Vec::with_capacity(tasks);
            for (t, tower) in m.task_towers.iter().enumerate() {
                let mut mixed = task_experts[t].clone();
                mixed.extend(shared.iter().copied());
                next_task.push(self.gate(
                    &format!("{lname}.{}.gate", tower.tower_name),
                    &p,
                    task_in[t],
                    &mixed,
                ));
            }
            if l + 1 < layers {
                let mut all: Vec<Out> = task_experts.iter().flatten().copied().collect();
                all.extend(shared.iter().copied());
                shared_in = self.gate(&format!("{lname}.shared.gate"), &p, shared_in, &all);
            }
            task_in = next_task;
        }
        for (t, tower) in m.task_towers.iter().enumerate() {
            let path = format!("{base}.task_towers[{t}]");
            let task = TaskDesc::from_tower(tower);
            self.tower(&path, &task, tower.mlp.as_ref(), task_in[t]);
        }
    }

    /// Experts on `input` and one gate per task (after an optional gate
    /// MLP); returns each task's mixed output.
    /// DBMTL's and DC2VR's shared part: the optional bottom MLP, then
    /// MMoE experts with a gate per tower (or the bottom's output for
    /// every tower).
    pub(super) fn shared_bottom(
        &mut self,
        base: &str,
        s: &SharedBottom<'_>,
        tower_names: &[String],
        group: Out,
    ) -> Vec<Out> {
        let input = match s.bottom {
            Some(b) => self.mlp(
                "bottom",
                MlpRole::Bottom,
                &format!("{base}.bottom_mlp"),
                b,
                group,
            ),
            None => group,
        };
        match s.experts {
            Some(e) => self.moe(base, e, s.gate, s.num_expert, tower_names, input),
            None => vec![input; tower_names.len()],
        }
    }

    /// A tower's own MLP over its input (the input itself without one).
    pub(super) fn task_mlp(
        &mut self,
        name: &str,
        path: &str,
        mlp: Option<&Mlp>,
        input: Out,
    ) -> Out {
        match mlp {
            Some(mlp) => self.mlp(
                &format!("{name}.mlp"),
                MlpRole::TaskMlp,
                &format!("{path}.mlp"),
                mlp,
                input,
            ),
            None => input,
        }
    }

    fn moe(
        &mut self,
        base: &str,
        expert_mlp: &Mlp,
        gate_mlp: Option<&Mlp>,
        num_expert: u32,
        tower_names: &[String],
        input: Out,
    ) -> Vec<Out> {
        self.g.layers = 1;
        let experts: Vec<Out> = (0..num_expert)
            .map(|k| {
                self.mlp(
                    &format!("expert{k}"),
                    MlpRole::Expert,
                    &format!("{base}.expert_mlp"),
                    expert_mlp,
                    input,
                )
            })
            .collect();
        tower_names
            .iter()
            .map(|name| {
                let selector = match gate_mlp {
                    Some(g) => self.mlp(
                        &format!("{name}.gate_mlp"),
                        MlpRole::GateMlp,
                        &format!("{base}.gate_mlp"),
                        g,
                        input,
                    ),
                    None => input,
                };
                self.gate(&format!("{name}.gate"), base, selector, &experts)
            })
            .collect()
    }

    fn mmoe(&mut self, m: &crate::proto::tzrec::protos::MMoE, group: Out) {
        let base = "model_config.mmoe";
        let names: Vec<String> = m.task_towers.iter().map(|t| t.tower_name.clone()).collect();
        let outs = self.moe(
            base,
            &m.expert_mlp,
            m.gate_mlp.as_ref(),
            m.num_expert,
            &names,
            group,
        );
        for (t, tower) in m.task_towers.iter().enumerate() {
            let path = format!("{base}.task_towers[{t}]");
            let task = TaskDesc::from_tower(tower);
            self.tower(&path, &task, tower.mlp.as_ref(), outs[t]);
        }
    }

    fn dbmtl(&mut self, m: &crate::proto::tzrec::protos::Dbmtl, group: Out) {
        let base = "model_config.dbmtl";
        let group = match &m.mask_net {
            Some(net) => self.mask_net(&format!("{base}.mask_net"), net, group),
            None => group,
        };
        let names: Vec<String> = m.task_towers.iter().map(|t| t.tower_name.clone()).collect();
        let shared = SharedBottom {
            bottom: m.bottom_mlp.as_ref(),
            experts: m.expert_mlp.as_ref(),
            gate: m.gate_mlp.as_ref(),
            num_expert: m.num_expert(),
        };
        let inputs = self.shared_bottom(base, &shared, &names, group);
        let mut rel: HashMap<&str, Out> = HashMap::new();
        for (t, tower) in m.task_towers.iter().enumerate() {
            let path = format!("{base}.task_towers[{t}]");
            let name = &tower.tower_name;
            let task_out = self.task_mlp(name, &path, tower.mlp.as_ref(), inputs[t]);
            let rel_out = match &tower.relation_mlp {
                Some(rmlp) => {
                    let mut parts = vec![task_out];
                    for (k, r) in tower.relation_tower_names.iter().enumerate() {
                        match rel.get(r.as_str()) {
                            Some(o) => parts.push(*o),
                            None => self.errors.push(IrError::invalid(
                                format!("relation tower \"{r}\" is not an earlier tower"),
                                format!("{path}.relation_tower_names[{k}]"),
                            )),
                        }
                    }
                    let concat_out = if parts.len() > 1 {
                        let width = parts.iter().map(|p| p.width).sum();
                        let c = self.add(Node::Concat {
                            name: format!("{name}.relation_input"),
                        });
                        for (k, p) in parts.iter().enumerate() {
                            self.connect(*p, c, k as u32);
                        }
                        Out {
                            node: c,
                            port: 0,
                            width,
                        }
                    } else {
                        task_out
                    };
                    self.mlp(
                        &format!("{name}.relation_mlp"),
                        MlpRole::Relation,
                        &format!("{path}.relation_mlp"),
                        rmlp,
                        concat_out,
                    )
                }
                None => task_out,
            };
            rel.insert(name.as_str(), rel_out);
            let task = TaskDesc::from_bayes(tower);
            self.tower(&path, &task, None, rel_out);
        }
    }
}

fn feature_name(fc: &FeatureConfig) -> Option<&str> {
    match fc.feature.as_ref()? {
        Feature::IdFeature(f) => Some(&f.feature_name),
        Feature::RawFeature(f) => Some(&f.feature_name),
        Feature::ComboFeature(f) => Some(&f.feature_name),
        Feature::SequenceIdFeature(f) => Some(&f.feature_name),
        Feature::SequenceRawFeature(f) => Some(&f.feature_name),
        _ => None,
    }
}

/// The input column of an expression `side:name` (the whole text without a side).
fn input_column(expression: &str) -> String {
    crate::lang::expression::input_column(expression).to_string()
}

/// The plan's form of a parsed normalizer (`lang::normalizer`); `None`
/// for an expression, which plec does not evaluate.
pub(crate) fn plan_normalizer(n: &Normalizer) -> Option<plan::Normalizer> {
    let (kind, a, b) = match *n {
        Normalizer::Log10 { threshold, default } => {
            (plan::NormalizerKind::Log10, threshold, default)
        }
        Normalizer::Zscore {
            mean,
            standard_deviation,
        } => (plan::NormalizerKind::Zscore, mean, standard_deviation),
        Normalizer::Minmax { min, max } => (plan::NormalizerKind::Minmax, min, max),
        Normalizer::Expression { .. } => return None,
    };
    Some(plan::Normalizer {
        kind: kind as i32,
        a,
        b,
        c: 0.0,
    })
}

fn pooling(p: Option<&str>) -> i32 {
    match p {
        Some("mean") => plan::Pooling::Mean as i32,
        _ => plan::Pooling::Sum as i32,
    }
}

/// Resolves a feature config into its node; `Ok(None)` for kinds that are
/// not features of a group (never), `Err` for unsupported kinds.
fn resolve_feature(
    fc: &FeatureConfig,
    path: &str,
    fg_none: bool,
) -> Result<Option<FeatureNode>, IrError> {
    let Some(feature) = &fc.feature else {
        return Ok(None);
    };
    let columns = |name: &str, exprs: &[&str]| -> Vec<String> {
        if fg_none {
            vec![name.to_string()]
        } else {
            exprs.iter().map(|e| input_column(e)).collect()
        }
    };
    // A sequence id feature in a plain feature list is pooled over its
    // steps like a multi-value id feature (tzrec's embedding bag).
    if let Feature::SequenceIdFeature(f) = feature {
        let mut f = f.clone();
        f.separator = Some(f.sequence_delim().to_string());
        let plain = FeatureConfig {
            feature: Some(Feature::IdFeature(f)),
        };
        return resolve_feature(&plain, path, fg_none);
    }
    let width = feature_width(fc).unwrap_or(0);
    let node = match feature {
        Feature::IdFeature(f) => {
            let (kind, num_ids) = if let Some(h) = f.hash_bucket_size {
                (plan::FeatureKind::IdHash, h)
            } else if let Some(n) = f.num_buckets {
                (plan::FeatureKind::IdNumBuckets, n)
            } else if !f.vocab_list.is_empty() {
                let n = f.vocab_list.len() as u64;
                (
                    plan::FeatureKind::IdVocab,
                    if f.default_bucketize_value.is_some() {
                        n.max(1)
                    } else {
                        n + 2
                    },
                )
            } else if !f.vocab_dict.is_empty() {
                let max = f.vocab_dict.values().copied().max().unwrap_or(0);
                (plan::FeatureKind::IdVocab, (max + 1).max(2))
            } else {
                return Err(IrError::invalid(
                    format!(
                        "id feature \"{}\" sets none of hash_bucket_size, num_buckets, vocab_list, vocab_dict",
                        f.feature_name
                    ),
                    format!("{path}.id_feature"),
                ));
            };
            let table = f
                .embedding_name
                .clone()
                .unwrap_or_else(|| f.feature_name.clone());
            FeatureNode {
                spec: plan::FeatureSpec {
                    name: f.feature_name.clone(),
                    kind: kind as i32,
                    input_columns: columns(&f.feature_name, &[&f.expression]),
                    num_ids,
                    vocab: f.vocab_list.clone(),
                    vocab_dict: f.vocab_dict.clone().into_iter().collect(),
                    default_value: f.default_value.clone().unwrap_or_default(),
                    separator: f.separator.clone().unwrap_or_else(|| "\x1d".into()),
                    pooling: pooling(f.pooling.as_deref()),
                    embedding_dim: f.embedding_dim,
                    default_bucketize_value: f.default_bucketize_value,
                    ..Default::default()
                },
                table: Some(table),
                width,
            }
        }
        Feature::RawFeature(f) => {
            if f.dense_emb.is_some() {
                return Err(IrError::unsupported(
                    "raw feature dense embeddings (autodis, mlp)",
                    format!("{path}.raw_feature"),
                ));
            }
            let normalizer = match f.normalizer.as_deref() {
                Some(n) if !n.trim().is_empty() => {
                    let at = format!("{path}.raw_feature.normalizer");
                    let parsed = crate::lang::normalizer::parse(n).map_err(|p| {
                        IrError::invalid(
                            format!("cannot read normalizer \"{n}\": {}", p.message),
                            at.clone(),
                        )
                    })?;
                    Some(
                        plan_normalizer(&parsed)
                            .ok_or_else(|| IrError::unsupported("an expression normalizer", at))?,
                    )
                }
                _ => None,
            };
            let bucketized = !f.boundaries.is_empty();
            let table = f
                .embedding_name
                .clone()
                .unwrap_or_else(|| f.feature_name.clone());
            FeatureNode {
                spec: plan::FeatureSpec {
                    name: f.feature_name.clone(),
                    kind: if bucketized {
                        plan::FeatureKind::RawBucketized
                    } else {
                        plan::FeatureKind::RawDense
                    } as i32,
                    input_columns: columns(&f.feature_name, &[&f.expression]),
                    num_ids: if bucketized {
                        f.boundaries.len() as u64 + 1
                    } else {
                        0
                    },
                    boundaries: f.boundaries.iter().map(|&b| b as f64).collect(),
                    value_dim: f.value_dim(),
                    normalizer,
                    default_value: f.default_value.clone().unwrap_or_else(|| "0".into()),
                    separator: f.separator.clone().unwrap_or_else(|| "\x1d".into()),
                    pooling: pooling(f.pooling.as_deref()),
                    embedding_dim: if bucketized { f.embedding_dim() } else { 0 },
                    ..Default::default()
                },
                table: bucketized.then_some(table),
                width,
            }
        }
        Feature::ComboFeature(f) => {
            let (kind, num_ids) = if let Some(h) = f.hash_bucket_size {
                (plan::FeatureKind::ComboHash, h)
            } else if !f.vocab_list.is_empty() {
                (plan::FeatureKind::ComboHash, f.vocab_list.len() as u64 + 2)
            } else {
                return Err(IrError::invalid(
                    format!(
                        "combo feature \"{}\" needs hash_bucket_size",
                        f.feature_name
                    ),
                    format!("{path}.combo_feature"),
                ));
            };
            let exprs: Vec<&str> = f.expression.iter().map(String::as_str).collect();
            let table = f
                .embedding_name
                .clone()
                .unwrap_or_else(|| f.feature_name.clone());
            FeatureNode {
                spec: plan::FeatureSpec {
                    name: f.feature_name.clone(),
                    kind: kind as i32,
                    input_columns: columns(&f.feature_name, &exprs),
                    num_ids,
                    vocab: f.vocab_list.clone(),
                    default_value: f.default_value.clone().unwrap_or_default(),
                    separator: f.separator.clone().unwrap_or_else(|| "\x1d".into()),
                    pooling: pooling(f.pooling.as_deref()),
                    embedding_dim: f.embedding_dim(),
                    default_bucketize_value: f.default_bucketize_value,
                    ..Default::default()
                },
                table: Some(table),
                width,
            }
        }
        other => {
            let name = format!("{other:?}");
            let name = name
                .split('(')
                .next()
                .unwrap_or("this feature kind")
                .to_string();
            return Err(IrError::unsupported(format!("feature kind `{name}`"), path));
        }
    };
    Ok(Some(node))
}

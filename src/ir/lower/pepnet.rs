//! PEPNet (TorchEasyRec's `pepnet`): an EPNet gate over the `domain`
//! group scales the `all` group's embeddings, a PPNet per task gates each
//! hidden layer by the `uia` group, and with `domain_input_name` every
//! task has one tower per domain, picked per row by that label.
//!
//! The facts follow `tzrec/models/pepnet.py` and
//! `tzrec/modules/personalized_net.py`: the groups are found by name and
//! `domain` and `uia` are optional; a gate unit is
//! `gamma * sigmoid(W2 relu(W1 x))` with `W1` as wide as the gated layer
//! (EPNet: `epnet_hidden_unit`, default the `all` width); both gates read
//! their group concatenated with the *detached* main input, so the gates
//! do not train the embeddings they scale.

use super::{parse_activation, Builder, Out, TaskDesc};
use crate::ir::error::IrError;
use crate::ir::graph::*;
use crate::ir::lower::linear;
use crate::proto::tzrec::protos::{EasyRecConfig, PepNet};

const BASE: &str = "model_config.pepnet";

impl Builder {
    pub(super) fn pepnet(&mut self, config: &EasyRecConfig, m: &PepNet) {
        let Some(mc) = config.model_config.as_ref() else {
            return;
        };
        let find = |name: &str| mc.feature_groups.iter().position(|g| g.group_name == name);
        let Some(all) = find("all") else {
            self.errors.push(IrError::invalid(
                "PEPNet reads its main input from a feature group named \"all\", and there is none",
                "model_config.feature_groups",
            ));
            return;
        };
        let (domain, uia) = (find("domain"), find("uia"));
        let wanted: Vec<usize> = [Some(all), domain, uia].into_iter().flatten().collect();
        let Some(outs) = self.feature_groups(config, &wanted) else {
            return;
        };
        let mut outs = outs.into_iter();
        let Some(main) = outs.next() else {
            return;
        };
        let domain_out = domain.and_then(|_| outs.next());
        let uia_out = uia.and_then(|_| outs.next());

        let mut x = main;
        if let Some(d) = domain_out {
            let hidden = m.epnet_hidden_unit.map_or(main.width, u64::from);
            let gate_input = self.gate_input("epnet", d, main);
            let gate = self.gate_unit("epnet.gate", gate_input, hidden, main.width);
            x = self.product("epnet", main, gate, m.epnet_gamma());
        }
        let tasks = m.task_towers.len();
        let inputs = match uia_out {
            Some(u) => self.ppnet(m, x, u),
            None => vec![x; tasks],
        };
        let domains = m
            .domain_input_name
            .as_deref()
            .filter(|_| m.task_domain_num() > 1)
            .map(|label| (label, m.task_domain_num()));
        for (t, (tower, input)) in m.task_towers.iter().zip(inputs).enumerate() {
            let path = format!("{BASE}.task_towers[{t}]");
            let task = TaskDesc::from_tower(tower);
            self.domain_tower(&path, &task, tower.mlp.as_ref(), input, domains);
        }
    }

    /// One PPNet chain per task over `x`, each layer gated by a unit that
    /// reads `uia` and the detached `x`.
    fn ppnet(&mut self, m: &PepNet, x: Out, uia: Out) -> Vec<Out> {
        let hidden = &m.ppnet_hidden_units;
        let tasks = m.task_towers.len();
        if hidden.is_empty() {
            self.errors.push(IrError::invalid(
                "PEPNet has a \"uia\" group, so its PPNet needs `ppnet_hidden_units` (TorchEasyRec fails on an empty list)",
                format!("{BASE}.ppnet_hidden_units"),
            ));
            return vec![x; tasks];
        }
        let dropout: Vec<f32> = match m.ppnet_dropout_ratio.as_slice() {
            [] => vec![0.0; hidden.len()],
            [r] => vec![*r; hidden.len()],
            rs if rs.len() == hidden.len() => rs.to_vec(),
            rs => {
                self.errors.push(IrError::invalid(
                    format!(
                        "`ppnet_dropout_ratio` has {} entries for {} hidden layers (give one, or one per layer)",
                        rs.len(),
                        hidden.len()
                    ),
                    format!("{BASE}.ppnet_dropout_ratio"),
                ));
                return vec![x; tasks];
            }
        };
        let act = match parse_activation(m.ppnet_activation(), "ppnet") {
            Ok(a) => a,
            Err(what) => {
                self.errors.push(IrError::unsupported(
                    what,
                    format!("{BASE}.ppnet_activation"),
                ));
                return vec![x; tasks];
            }
        };
        // Every PPNet gate reads the same `[uia, detach(x)]`.
        let gate_input = self.gate_input("ppnet", uia, x);
        let mut outs = Vec::with_capacity(tasks);
        for tower in &m.task_towers {
            let name = format!("ppnet.{}", tower.tower_name);
            let mut y = x;
            for (j, (&units, &ratio)) in hidden.iter().zip(&dropout).enumerate() {
                let units = u64::from(units);
                let lname = format!("{name}.layer{j}");
                // Parsed per layer: a PReLU's slope is the layer's own.
                let layer_act =
                    parse_activation(m.ppnet_activation(), &lname).unwrap_or(act.clone());
                let node = self.add(Node::Mlp(MlpBlock {
                    name: lname.clone(),
                    role: MlpRole::TaskMlp,
                    path: String::new(),
                    layers: vec![DenseLayer {
                        linear: linear(&lname, y.width, units, true),
                        norm: Norm::None,
                        act: layer_act,
                        // Dropout before the gate's product equals dropout
                        // after it: both scale the same units elementwise.
                        dropout: ratio,
                    }],
                }));
                self.connect(y, node, 0);
                let dense = Out {
                    node,
                    port: 0,
                    width: units,
                };
                let gate = self.gate_unit(&format!("{name}.gate{j}"), gate_input, units, units);
                y = self.product(&format!("{lname}.gated"), dense, gate, m.ppnet_gamma());
            }
            outs.push(y);
        }
        outs
    }

    /// A gate's input: `side` next to `main` detached.
    fn gate_input(&mut self, name: &str, side: Out, main: Out) -> Out {
        let detached = self.add(Node::StopGradient {
            name: format!("{name}.detached_input"),
        });
        self.connect(main, detached, 0);
        let cat = self.add(Node::Concat {
            name: format!("{name}.gate_input"),
        });
        self.connect(side, cat, 0);
        let detached = Out {
            node: detached,
            port: 0,
            width: main.width,
        };
        self.connect(detached, cat, 1);
        Out {
            node: cat,
            port: 0,
            width: side.width + main.width,
        }
    }

    /// A gate unit over `input`: `hidden` then `width` wide.
    fn gate_unit(&mut self, name: &str, input: Out, hidden: u64, width: u64) -> Out {
        let node = self.add(Node::GateNu(GateNuBlock {
            name: name.to_string(),
            first: linear(&format!("{name}.layer0"), input.width, hidden, true),
            second: linear(&format!("{name}.layer1"), hidden, width, true),
        }));
        self.connect(input, node, 0);
        Out {
            node,
            port: 0,
            width,
        }
    }

    fn product(&mut self, name: &str, value: Out, gate: Out, scale: f32) -> Out {
        let node = self.add(Node::Product {
            name: name.to_string(),
            scale,
        });
        self.connect(value, node, 0);
        self.connect(gate, node, 1);
        Out {
            node,
            port: 0,
            width: value.width,
        }
    }
}

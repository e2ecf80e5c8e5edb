//! MaskNet (TorchEasyRec's `MaskNetModule`, DBMTL's `mask_net`): mask
//! blocks that reweight the layer-normed embeddings (parallel) or the
//! previous block's output (serial) by a mask the raw embeddings generate,
//! each followed by a linear, layer norm and relu; then an optional top
//! MLP.
//!
//! Facts from `tzrec/modules/masknet.py`: the mask generator is
//! `Linear(D -> agg), ReLU, Linear(agg -> in)` over the raw embeddings;
//! `agg = int(in * reduction_ratio)` whenever the ratio is non-zero, and
//! tzrec passes the ratio's default of 1.0 even when the config leaves it
//! out (its kwargs carry default values), so `aggregation_dim` counts only
//! with `reduction_ratio: 0`.

use super::{constant, linear, Builder, Out};
use crate::ir::error::IrError;
use crate::ir::graph::*;
use crate::proto::plan;
use crate::proto::tzrec::protos::MaskNetModule;

fn act(kind: plan::Activation) -> Act {
    Act {
        kind,
        alpha: 0.0,
        slope: None,
        dice: None,
    }
}

impl Builder {
    pub(super) fn mask_net(&mut self, path: &str, net: &MaskNetModule, input: Out) -> Out {
        let d = input.width;
        let block = &net.mask_block;
        if net.n_mask_blocks == 0 || block.hidden_dim == 0 {
            self.errors.push(IrError::invalid(
                "a mask net needs n_mask_blocks > 0 and a mask_block with hidden_dim > 0",
                path,
            ));
            return input;
        }
        let ln = self.add(Node::Norm {
            name: "mask_net.ln_emb".into(),
            norm: Norm::Layer([
                constant("mask_net.ln_emb.gamma".into(), vec![d], 1.0, true),
                constant("mask_net.ln_emb.beta".into(), vec![d], 0.0, true),
            ]),
            width: d,
        });
        self.connect(input, ln, 0);
        let normed = Out {
            node: ln,
            port: 0,
            width: d,
        };
        let parallel = net.use_parallel();
        let mut outs = Vec::new();
        let mut hidden = normed;
        for i in 0..net.n_mask_blocks {
            let feature = if parallel { normed } else { hidden };
            let name = format!("mask_net.block{i}");
            let Some(out) = self.mask_block(&name, path, block, feature, input) else {
                return input;
            };
            outs.push(out);
            hidden = out;
        }
        let mut out = if parallel && outs.len() > 1 {
            let cat = self.add(Node::Concat {
                name: "mask_net.blocks".into(),
            });
            let mut width = 0;
            for (k, o) in outs.iter().enumerate() {
                self.connect(*o, cat, k as u32);
                width += o.width;
            }
            Out {
                node: cat,
                port: 0,
                width,
            }
        } else {
            hidden
        };
        if let Some(top) = &net.top_mlp {
            out = self.mlp(
                "mask_net.top_mlp",
                MlpRole::Bottom,
                &format!("{path}.top_mlp"),
                top,
                out,
            );
        }
        out
    }

    /// One mask block: `relu(ln(W (feature * mask(raw))))`.
    fn mask_block(
        &mut self,
        name: &str,
        path: &str,
        block: &crate::proto::tzrec::protos::MaskBlock,
        feature: Out,
        raw: Out,
    ) -> Option<Out> {
        let ratio = block.reduction_ratio();
        let agg = if ratio != 0.0 {
            // Python's int() of a float32 ratio times the width.
            (feature.width as f64 * f64::from(ratio)).floor() as u64
        } else {
            u64::from(block.aggregation_dim())
        };
        if agg == 0 {
            self.errors.push(IrError::invalid(
                format!(
                    "the mask block's aggregation layer is 0 wide ({} x reduction_ratio {ratio}, or aggregation_dim with reduction_ratio 0)",
                    feature.width
                ),
                format!("{path}.mask_block"),
            ));
            return None;
        }
        let generator = self.add(Node::Mlp(MlpBlock {
            name: format!("{name}.mask_generator"),
            role: MlpRole::Bottom,
            path: String::new(),
            layers: vec![
                DenseLayer {
                    linear: linear(
                        &format!("{name}.mask_generator.layer0"),
                        raw.width,
                        agg,
                        true,
                    ),
                    norm: Norm::None,
                    act: act(plan::Activation::Relu),
                    dropout: 0.0,
                },
                DenseLayer {
                    linear: linear(
                        &format!("{name}.mask_generator.layer1"),
                        agg,
                        feature.width,
                        true,
                    ),
                    norm: Norm::None,
                    act: act(plan::Activation::ActNone),
                    dropout: 0.0,
                },
            ],
        }));
        self.connect(raw, generator, 0);
        let mask = Out {
            node: generator,
            port: 0,
            width: feature.width,
        };
        let weighted = self.add(Node::Product {
            name: format!("{name}.weighted"),
            scale: 1.0,
        });
        self.connect(feature, weighted, 0);
        self.connect(mask, weighted, 1);
        let h = u64::from(block.hidden_dim);
        let ffn_name = format!("{name}.ffn");
        let ffn = self.add(Node::Mlp(MlpBlock {
            name: ffn_name.clone(),
            role: MlpRole::Bottom,
            path: String::new(),
            layers: vec![DenseLayer {
                linear: linear(&format!("{ffn_name}.layer0"), feature.width, h, true),
                norm: Norm::Layer([
                    constant(format!("{ffn_name}.layer0.ln.gamma"), vec![h], 1.0, true),
                    constant(format!("{ffn_name}.layer0.ln.beta"), vec![h], 0.0, true),
                ]),
                act: act(plan::Activation::Relu),
                dropout: 0.0,
            }],
        }));
        self.connect(
            Out {
                node: weighted,
                port: 0,
                width: feature.width,
            },
            ffn,
            0,
        );
        Some(Out {
            node: ffn,
            port: 0,
            width: h,
        })
    }
}

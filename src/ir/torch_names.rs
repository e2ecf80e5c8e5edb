//! TorchEasyRec's names for plec's parameters and tables: the keys the
//! `state_dict` of TorchEasyRec's model of the same config gives them.
//!
//! plec names a parameter by its place in the model (`layer1.ctr.expert0.
//! layer2.weight`, see `lower.rs`); TorchEasyRec by its module path
//! (`_extraction_nets.0._task_layers.0.0.mlp.2.perceptron.0.weight`). This
//! module walks the config the way both lowerings do and pairs the two, so
//! `plan::emit` can record each parameter's TorchEasyRec name in the plan
//! and `plec export --format safetensors` / `plec import` need nothing but
//! the plan. The facts come from TorchEasyRec's source (`tzrec/models/
//! ple.py`, `mmoe.py`, `dbmtl.py`, `pepnet.py`, `rank_model.py`;
//! `tzrec/modules/mlp.py`, `task_tower.py`, `extraction_net.py`, `mmoe.py`,
//! `masknet.py`, `personalized_net.py`, `embedding.py`, `sequence.py`,
//! `activation.py`, `variational_dropout.py`), and the key lists, shapes
//! and forward pass are checked against the model a real TorchEasyRec
//! builds from the same config (`scripts/tzrec-state-dict-keys.sh`).
//!
//! A name is given only where it is certain. SimpleMultiTask (no model
//! class in TorchEasyRec), DC2VR (TorchEasyRec's own `_create_model`
//! cannot build it, so nothing could be checked) and configs whose tables
//! TorchEasyRec lays out differently (feature groups the model does not
//! read, WIDE groups, zero-collision hashing) get no names at all, and the
//! export says so.

use std::collections::{HashMap, HashSet};

use crate::proto::tzrec::protos::{
    feature_config::Feature, model_config::Model, EasyRecConfig, FeatureGroupConfig,
    FeatureGroupType, MaskNetModule, Mlp, PepNet,
};

/// TorchEasyRec's data group of ranking features (`BASE_DATA_GROUP`).
const BASE_DATA_GROUP: &str = "__BASE__";

/// plec name -> TorchEasyRec key, for dense parameters and for tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TorchNames {
    /// By plec parameter name (the unfused one, as `lower.rs` gives it).
    pub(crate) params: HashMap<String, String>,
    /// By plan table name.
    pub(crate) tables: HashMap<String, String>,
    /// Why nothing is named, when nothing is.
    pub(crate) unsupported: Option<String>,
    /// plec parameters TorchEasyRec's model has no tensor for: constants
    /// by construction (Dice's affine-free batch norm's scale and shift).
    pub(crate) absent: HashSet<String>,
    /// plec parameters that are part `k` of `n` equal parts, in order, of
    /// one TorchEasyRec tensor (`nn.MultiheadAttention`'s packed
    /// `in_proj_weight` and `in_proj_bias`): plec name -> (key, k, n).
    pub(crate) packed: HashMap<String, (String, u64, u64)>,
}

/// Collects pairs; a plec name paired twice with different keys is
/// ambiguous and loses its name.
#[derive(Default)]
struct Pairs {
    map: HashMap<String, String>,
    ambiguous: Vec<String>,
    absent: HashSet<String>,
    packed: HashMap<String, (String, u64, u64)>,
}

impl Pairs {
    fn add(&mut self, plec: String, torch: String) {
        match self.map.get(&plec) {
            Some(t) if *t != torch => self.ambiguous.push(plec),
            _ => {
                self.map.insert(plec, torch);
            }
        }
    }

    fn finish(mut self) -> HashMap<String, String> {
        for a in &self.ambiguous {
            self.map.remove(a);
        }
        self.map
    }

    /// `nn.Linear` at `torch` (`<torch>.weight`, `<torch>.bias`).
    fn linear(&mut self, plec: &str, torch: &str) {
        for p in ["weight", "bias"] {
            self.add(format!("{plec}.{p}"), format!("{torch}.{p}"));
        }
    }

    /// tzrec's `MLP` at `torch`: `mlp.<i>` is a `Perceptron` whose
    /// `perceptron` Sequential holds the Linear (0), then BatchNorm1d or
    /// LayerNorm (1) when asked, then the activation module (PReLU's
    /// weight), then dropout.
    fn mlp(&mut self, plec: &str, torch: &str, mlp: &Mlp) {
        let norm = mlp.use_bn() || mlp.use_ln();
        for i in 0..mlp.hidden_units.len() {
            let p = format!("{plec}.layer{i}");
            let t = format!("{torch}.mlp.{i}.perceptron");
            self.linear(&p, &format!("{t}.0"));
            if mlp.use_bn() {
                for (ours, theirs) in [
                    ("gamma", "weight"),
                    ("beta", "bias"),
                    ("running_mean", "running_mean"),
                    ("running_var", "running_var"),
                ] {
                    self.add(format!("{p}.bn.{ours}"), format!("{t}.1.{theirs}"));
                }
            } else if mlp.use_ln() {
                self.add(format!("{p}.ln.gamma"), format!("{t}.1.weight"));
                self.add(format!("{p}.ln.beta"), format!("{t}.1.bias"));
            }
            let act = if norm { 2 } else { 1 };
            self.add(format!("{p}.prelu.slope"), format!("{t}.{act}.weight"));
            if is_dice(mlp.activation()) {
                // tzrec's `Dice`: `bn` (BatchNorm1d, affine=False: running
                // statistics only) and `alpha`; plec's frozen unit scale
                // and zero shift have no tensor in torch.
                self.add(format!("{p}.dice.alpha"), format!("{t}.{act}.alpha"));
                for stat in ["running_mean", "running_var"] {
                    self.add(
                        format!("{p}.dice.bn.{stat}"),
                        format!("{t}.{act}.bn.{stat}"),
                    );
                }
                self.absent.insert(format!("{p}.dice.bn.gamma"));
                self.absent.insert(format!("{p}.dice.bn.beta"));
            }
        }
    }

    /// tzrec's `TaskTower` at `torch`: `tower_mlp`, then `linear`.
    fn task_tower(&mut self, plec: &str, torch: &str, mlp: Option<&Mlp>) {
        if let Some(m) = mlp {
            self.mlp(&format!("{plec}.mlp"), &format!("{torch}.tower_mlp"), m);
        }
        self.linear(&format!("{plec}.logits"), &format!("{torch}.linear"));
    }

    /// tzrec's `MMoE` module at `mmoe`: `expert_mlps.<k>`, `gate_mlps.<t>`,
    /// `gate_finals.<t>` (`lower.rs`'s `moe` names experts `expert<k>` and
    /// gates after their tower).
    fn mmoe(&mut self, expert: &Mlp, gate: Option<&Mlp>, experts: u32, towers: &[&str]) {
        for k in 0..experts {
            self.mlp(
                &format!("expert{k}"),
                &format!("mmoe.expert_mlps.{k}"),
                expert,
            );
        }
        for (t, name) in towers.iter().enumerate() {
            if let Some(g) = gate {
                self.mlp(
                    &format!("{name}.gate_mlp"),
                    &format!("mmoe.gate_mlps.{t}"),
                    g,
                );
            }
            self.linear(
                &format!("{name}.gate.linear"),
                &format!("mmoe.gate_finals.{t}"),
            );
        }
    }

    /// A group's sequence encoders, TorchEasyRec's
    /// `embedding_group._group_name_to_seq_encoders.<group>.<i>` for the
    /// group's `i`-th encoder (`tzrec/modules/sequence.py`): DIN's
    /// attention `mlp` and score `linear` (plec's `attn` and `score`),
    /// multi-window DIN's too plus its `active` PReLU; simple attention and
    /// pooling hold no parameters; self-attention's three input
    /// projections are three plec parameters packed into one torch tensor.
    fn seq_encoders(&mut self, group: &FeatureGroupConfig) -> Result<(), String> {
        use crate::proto::tzrec::protos::seq_encoder_config::SeqModule;
        for (i, e) in group.sequence_encoders.iter().enumerate() {
            let g = &group.group_name;
            let torch = format!("embedding_group._group_name_to_seq_encoders.{g}.{i}");
            match &e.seq_module {
                Some(SeqModule::DinEncoder(m)) => {
                    let plec = format!("{g}.seq_encoder{i}.din_encoder");
                    self.mlp(
                        &format!("{plec}.attn"),
                        &format!("{torch}.mlp"),
                        &m.attn_mlp,
                    );
                    self.linear(&format!("{plec}.score"), &format!("{torch}.linear"));
                }
                Some(SeqModule::MultiWindowDinEncoder(m)) => {
                    let plec = format!("{g}.seq_encoder{i}.multi_window_din_encoder");
                    self.mlp(
                        &format!("{plec}.attn"),
                        &format!("{torch}.mlp"),
                        &m.attn_mlp,
                    );
                    self.linear(&format!("{plec}.score"), &format!("{torch}.linear"));
                    self.add(
                        format!("{plec}.active.prelu.slope"),
                        format!("{torch}.active.weight"),
                    );
                }
                Some(SeqModule::SimpleAttention(_)) | Some(SeqModule::PoolingEncoder(_)) => {}
                Some(SeqModule::SelfAttentionEncoder(_)) => {
                    // `_query`, `_key`, `_value` (nn.Linear), then
                    // `_multihead_attn` (nn.MultiheadAttention, batch
                    // first): `in_proj_weight` `[3 dim, dim]` and
                    // `in_proj_bias` hold its q, k, v projections in that
                    // order (plec's `in_proj_{q,k,v}`), `out_proj` a Linear.
                    let plec = format!("{g}.seq_encoder{i}.self_attention_encoder");
                    for part in ["query", "key", "value"] {
                        self.linear(&format!("{plec}.{part}"), &format!("{torch}._{part}"));
                    }
                    let mha = format!("{torch}._multihead_attn");
                    for (k, part) in ["q", "k", "v"].iter().enumerate() {
                        for (ours, theirs) in
                            [("weight", "in_proj_weight"), ("bias", "in_proj_bias")]
                        {
                            self.packed.insert(
                                format!("{plec}.multihead_attn.in_proj_{part}.{ours}"),
                                (format!("{mha}.{theirs}"), k as u64, 3),
                            );
                        }
                    }
                    self.linear(
                        &format!("{plec}.multihead_attn.out_proj"),
                        &format!("{mha}.out_proj"),
                    );
                }
                None => return Err("a sequence encoder without a module".into()),
            }
        }
        Ok(())
    }

    /// tzrec's `MaskNetModule` at `mask_net` (DBMTL): `ln_emb`, then
    /// `mask_blocks.<i>` (`mask_generator`: Linear 0, ReLU, Linear 2;
    /// `ffn`: Linear 0, LayerNorm 1, ReLU), then `top_mlp`. plec's
    /// `lower/masknet.rs` names the same modules `mask_net.ln_emb`,
    /// `mask_net.block<i>.{mask_generator.layer0,layer1, ffn.layer0}`.
    fn mask_net(&mut self, net: &MaskNetModule) {
        self.add(
            "mask_net.ln_emb.gamma".into(),
            "mask_net.ln_emb.weight".into(),
        );
        self.add("mask_net.ln_emb.beta".into(), "mask_net.ln_emb.bias".into());
        for i in 0..net.n_mask_blocks {
            let (p, t) = (
                format!("mask_net.block{i}"),
                format!("mask_net.mask_blocks.{i}"),
            );
            self.linear(
                &format!("{p}.mask_generator.layer0"),
                &format!("{t}.mask_generator.0"),
            );
            self.linear(
                &format!("{p}.mask_generator.layer1"),
                &format!("{t}.mask_generator.2"),
            );
            self.linear(&format!("{p}.ffn.layer0"), &format!("{t}.ffn.0"));
            self.add(
                format!("{p}.ffn.layer0.ln.gamma"),
                format!("{t}.ffn.1.weight"),
            );
            self.add(format!("{p}.ffn.layer0.ln.beta"), format!("{t}.ffn.1.bias"));
        }
        if let Some(top) = &net.top_mlp {
            self.mlp("mask_net.top_mlp", "mask_net.top_mlp", top);
        }
    }

    /// tzrec's PEPNet (`tzrec/models/pepnet.py`,
    /// `tzrec/modules/personalized_net.py`): `epnet.gate_nu` when there is
    /// a "domain" group, `ppnet` when there is a "uia" group, and
    /// `_task_tower.<t * D + d>` (D towers per task with
    /// `domain_input_name`, else one). A `GateNU`'s `dense_layers` is
    /// Linear 0, ReLU, Linear 2, Sigmoid; PPNet keeps flat ModuleLists
    /// (`linears`, `activations`, `gate_nus`) indexed `t * L + j` for task
    /// `t`'s layer `j` of `L`.
    fn pepnet(&mut self, m: &PepNet, read: &[&FeatureGroupConfig]) {
        let has = |name: &str| read.iter().any(|g| g.group_name == name);
        let gate_nu = |p: &mut Self, plec: &str, torch: &str| {
            p.linear(
                &format!("{plec}.layer0"),
                &format!("{torch}.dense_layers.0"),
            );
            p.linear(
                &format!("{plec}.layer1"),
                &format!("{torch}.dense_layers.2"),
            );
        };
        if has("domain") {
            gate_nu(self, "epnet.gate", "epnet.gate_nu");
        }
        let layers = m.ppnet_hidden_units.len();
        if has("uia") {
            for (t, tower) in m.task_towers.iter().enumerate() {
                let name = format!("ppnet.{}", tower.tower_name);
                for j in 0..layers {
                    let k = t * layers + j;
                    let lname = format!("{name}.layer{j}");
                    self.linear(&lname, &format!("ppnet.linears.{k}"));
                    // nn.PReLU()'s one slope; other activations hold none.
                    self.add(
                        format!("{lname}.prelu.slope"),
                        format!("ppnet.activations.{k}.weight"),
                    );
                    gate_nu(
                        self,
                        &format!("{name}.gate{j}"),
                        &format!("ppnet.gate_nus.{k}"),
                    );
                }
            }
        }
        // plec builds one tower per domain only for more than one domain;
        // tzrec's index `t * D + d` is `t` for one domain either way.
        let domains = match m.domain_input_name {
            Some(_) => m.task_domain_num() as usize,
            None => 1,
        };
        for (t, tower) in m.task_towers.iter().enumerate() {
            let name = &tower.tower_name;
            if domains > 1 {
                for d in 0..domains {
                    self.task_tower(
                        &format!("{name}.domain{d}"),
                        &format!("_task_tower.{}", t * domains + d),
                        tower.mlp.as_ref(),
                    );
                }
            } else if domains == 1 {
                self.task_tower(name, &format!("_task_tower.{t}"), tower.mlp.as_ref());
            }
        }
    }
}

/// Whether an MLP's activation is TorchEasyRec's `Dice`.
fn is_dice(text: &str) -> bool {
    matches!(
        crate::lang::activation::parse(text),
        Ok(crate::lang::activation::Activation::Dice)
    )
}

fn unsupported(why: impl Into<String>) -> TorchNames {
    TorchNames {
        unsupported: Some(why.into()),
        ..Default::default()
    }
}

/// TorchEasyRec's names for the parameters and tables of `config`'s model.
pub(crate) fn torch_names(config: &EasyRecConfig) -> TorchNames {
    let Some(mc) = &config.model_config else {
        return unsupported("the config has no model_config");
    };
    if let Some(Model::SimpleMultiTask(_)) = &mc.model {
        return unsupported(
            "TorchEasyRec has no SimpleMultiTask model class (only its config message), \
             so its parameters have no state_dict names",
        );
    }
    // The groups the model reads: PEPNet finds "all", "domain" and "uia"
    // by name (tzrec/models/pepnet.py), the others read the first group
    // (`embedding_group.group_names()[0]`).
    let read: Vec<&FeatureGroupConfig> = match &mc.model {
        Some(Model::Pepnet(_)) => ["all", "domain", "uia"]
            .iter()
            .filter_map(|n| mc.feature_groups.iter().find(|g| g.group_name == *n))
            .collect(),
        _ => mc.feature_groups.iter().take(1).collect(),
    };
    if read.len() < mc.feature_groups.len() {
        return unsupported(
            "TorchEasyRec builds tables (and variational dropouts) for every feature group, \
             but the model reads only some of them (the first group; PEPNet's \"all\", \
             \"domain\" and \"uia\"), and plec builds only those: configs with feature \
             groups the model does not read are not named",
        );
    }
    if read
        .iter()
        .any(|g| g.group_type != FeatureGroupType::Deep as i32)
    {
        return unsupported("only DEEP feature groups are named");
    }
    let mut p = Pairs::default();
    for group in &read {
        if let Err(why) = p.seq_encoders(group) {
            return unsupported(why);
        }
    }
    match &mc.model {
        Some(Model::Ple(m)) => {
            let towers: Vec<&str> = m
                .task_towers
                .iter()
                .map(|t| t.tower_name.as_str())
                .collect();
            let layers = m.extraction_networks.len();
            for (l, net) in m.extraction_networks.iter().enumerate() {
                let lname = &net.network_name;
                let torch = format!("_extraction_nets.{l}");
                for (t, tower) in towers.iter().enumerate() {
                    for k in 0..net.expert_num_per_task {
                        p.mlp(
                            &format!("{lname}.{tower}.expert{k}"),
                            &format!("{torch}._task_layers.{t}.{k}"),
                            &net.task_expert_net,
                        );
                    }
                    p.linear(
                        &format!("{lname}.{tower}.gate.linear"),
                        &format!("{torch}._task_gates.{t}"),
                    );
                }
                if let Some(share) = &net.share_expert_net {
                    for k in 0..net.share_num() {
                        p.mlp(
                            &format!("{lname}.shared.expert{k}"),
                            &format!("{torch}._shared_layers.{k}"),
                            share,
                        );
                    }
                }
                if l + 1 < layers {
                    p.linear(
                        &format!("{lname}.shared.gate.linear"),
                        &format!("{torch}._shared_gate"),
                    );
                }
            }
            for (t, tower) in m.task_towers.iter().enumerate() {
                p.task_tower(
                    &tower.tower_name,
                    &format!("_task_tower.{t}"),
                    tower.mlp.as_ref(),
                );
            }
        }
        Some(Model::Mmoe(m)) => {
            let towers: Vec<&str> = m
                .task_towers
                .iter()
                .map(|t| t.tower_name.as_str())
                .collect();
            p.mmoe(&m.expert_mlp, m.gate_mlp.as_ref(), m.num_expert, &towers);
            for (t, tower) in m.task_towers.iter().enumerate() {
                p.task_tower(
                    &tower.tower_name,
                    &format!("_task_tower.{t}"),
                    tower.mlp.as_ref(),
                );
            }
        }
        Some(Model::Dbmtl(m)) => {
            if let Some(net) = &m.mask_net {
                p.mask_net(net);
            }
            if let Some(b) = &m.bottom_mlp {
                p.mlp("bottom", "bottom_mlp", b);
            }
            let towers: Vec<&str> = m
                .task_towers
                .iter()
                .map(|t| t.tower_name.as_str())
                .collect();
            if let Some(e) = &m.expert_mlp {
                p.mmoe(e, m.gate_mlp.as_ref(), m.num_expert(), &towers);
            }
            for (t, tower) in m.task_towers.iter().enumerate() {
                let name = &tower.tower_name;
                if let Some(mlp) = &tower.mlp {
                    p.mlp(&format!("{name}.mlp"), &format!("task_mlps.{name}"), mlp);
                }
                if let Some(r) = &tower.relation_mlp {
                    p.mlp(
                        &format!("{name}.relation_mlp"),
                        &format!("relation_mlps.{name}"),
                        r,
                    );
                }
                p.linear(&format!("{name}.logits"), &format!("task_outputs.{t}"));
            }
        }
        Some(Model::Pepnet(m)) => p.pepnet(m, &read),
        Some(Model::Dc2vr(_)) => {
            return unsupported(
                "DC2VR is not named: TorchEasyRec's own model factory cannot build it (its \
                 __init__ takes no sample_weights), so no key list could be checked against a \
                 real model",
            )
        }
        // SimpleMultiTask returned above.
        _ => return unsupported("plec does not name this model kind"),
    }
    // tzrec's `init_input`: every group of more than one feature gets a
    // `VariationalDropout` under `group_variational_dropouts.<group>`; a
    // sequence encoder's output counts as one feature (tzrec's
    // `group_feature_dims`, plec's `lower::feature_groups`).
    if mc.variational_dropout.is_some() {
        for group in &read {
            if group.feature_names.len() + group.sequence_encoders.len() > 1 {
                p.add(
                    format!("{}.variational_dropout.feature_p", group.group_name),
                    format!("group_variational_dropouts.{}.feature_p", group.group_name),
                );
            }
        }
    }
    let absent = std::mem::take(&mut p.absent);
    let packed = std::mem::take(&mut p.packed);
    TorchNames {
        params: p.finish(),
        tables: table_names(config, &read),
        unsupported: None,
        absent,
        packed,
    }
}

/// Plan table name -> `embedding_group.emb_impls.__BASE__.ebc.embedding_bags.
/// <embedding name>.weight`, the embedding name being `embedding_name` or
/// `<feature_name>_emb` (tzrec's `emb_bag_config`), plus the group's
/// `embedding_name_suffix`, over the groups the model reads: one
/// `EmbeddingBagCollection` holds them all, a feature in several groups
/// looking up one table. Features with zero-collision hashing (tzrec's
/// `mc_ebc`) or of other kinds stay unnamed.
fn table_names(config: &EasyRecConfig, groups: &[&FeatureGroupConfig]) -> HashMap<String, String> {
    let mut p = Pairs::default();
    for group in groups {
        group_tables(config, group, &mut p);
        seq_tables(config, group, &mut p);
    }
    p.finish()
}

/// The tables of a group's sequence groups: plec's `seq:<embedding
/// name or feature name>` -> `embedding_group.seq_emb_impls.__BASE__.
/// ec_dict.<dim>.embeddings.<embedding name>.weight`: TorchEasyRec's
/// `SequenceEmbeddingGroupImpl` keeps one torchrec `EmbeddingCollection`
/// per embedding width (`ec_dict`), apart from the bag tables of the plain
/// features. A grouped sequence's sub-feature is named
/// `<sequence_name>__<feature_name>`. Features with zero-collision hashing
/// (`mc_ec_dict`) stay unnamed.
fn seq_tables(config: &EasyRecConfig, group: &FeatureGroupConfig, p: &mut Pairs) {
    for sg in &group.sequence_groups {
        for name in &sg.feature_names {
            let Some((plec, emb, dim)) = seq_table(config, name) else {
                continue;
            };
            p.add(
                format!("seq:{plec}"),
                format!(
                    "embedding_group.seq_emb_impls.{BASE_DATA_GROUP}.ec_dict.{dim}.embeddings.{emb}.weight"
                ),
            );
        }
    }
}

/// A sequence group member's plec table (without the `seq:` prefix),
/// TorchEasyRec embedding name and width; `None` for a feature without a
/// table (dense, or zero-collision hashing) or not found.
fn seq_table(config: &EasyRecConfig, name: &str) -> Option<(String, String, u32)> {
    use crate::proto::tzrec::protos::seq_feature_config::Feature as SeqFeature;
    // (full name, embedding_name, dim, has a plain table)
    let pick = |full: String, emb: &Option<String>, dim: u32, table: bool| {
        (full == name && table).then(|| {
            let plec = emb.clone().unwrap_or_else(|| full.clone());
            let torch = emb.clone().unwrap_or_else(|| format!("{full}_emb"));
            (plec, torch, dim)
        })
    };
    config
        .feature_configs
        .iter()
        .find_map(|fc| match fc.feature.as_ref()? {
            Feature::IdFeature(f) => pick(
                f.feature_name.clone(),
                &f.embedding_name,
                f.embedding_dim,
                f.zch.is_none(),
            ),
            Feature::RawFeature(f) => pick(
                f.feature_name.clone(),
                &f.embedding_name,
                f.embedding_dim(),
                !f.boundaries.is_empty(),
            ),
            Feature::ComboFeature(f) => pick(
                f.feature_name.clone(),
                &f.embedding_name,
                f.embedding_dim(),
                f.zch.is_none(),
            ),
            Feature::SequenceIdFeature(f) => pick(
                f.feature_name.clone(),
                &f.embedding_name,
                f.embedding_dim,
                f.zch.is_none(),
            ),
            Feature::SequenceRawFeature(f) => pick(
                f.feature_name.clone(),
                &f.embedding_name,
                f.embedding_dim(),
                !f.boundaries.is_empty(),
            ),
            Feature::SequenceFeature(s) => {
                s.features
                    .iter()
                    .find_map(|sub| match sub.feature.as_ref()? {
                        SeqFeature::IdFeature(f) => pick(
                            format!("{}__{}", s.sequence_name, f.feature_name),
                            &f.embedding_name,
                            f.embedding_dim,
                            f.zch.is_none(),
                        ),
                        SeqFeature::RawFeature(f) => pick(
                            format!("{}__{}", s.sequence_name, f.feature_name),
                            &f.embedding_name,
                            f.embedding_dim(),
                            !f.boundaries.is_empty(),
                        ),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    })
            }
            _ => None,
        })
}

fn group_tables(config: &EasyRecConfig, group: &FeatureGroupConfig, p: &mut Pairs) {
    let suffix = group
        .embedding_name_suffix
        .as_deref()
        .filter(|s| !s.is_empty());
    for name in &group.feature_names {
        let found = config.feature_configs.iter().find_map(|fc| {
            let (fname, emb_name, zch, embedded) = match fc.feature.as_ref()? {
                Feature::IdFeature(f) => {
                    (&f.feature_name, &f.embedding_name, f.zch.is_some(), true)
                }
                Feature::RawFeature(f) => (
                    &f.feature_name,
                    &f.embedding_name,
                    false,
                    !f.boundaries.is_empty(),
                ),
                Feature::ComboFeature(f) => {
                    (&f.feature_name, &f.embedding_name, f.zch.is_some(), true)
                }
                _ => return None,
            };
            (fname == name).then_some((fname, emb_name.clone(), zch, embedded))
        });
        let Some((fname, emb_name, zch, embedded)) = found else {
            continue;
        };
        if !embedded || zch {
            continue;
        }
        // plec's table: the embedding name, else the feature name.
        let plec = emb_name.clone().unwrap_or_else(|| fname.clone());
        let mut torch = emb_name.unwrap_or_else(|| format!("{fname}_emb"));
        if let Some(s) = suffix {
            torch = format!("{torch}_{s}");
        }
        p.add(
            plec,
            format!(
                "embedding_group.emb_impls.{BASE_DATA_GROUP}.ebc.embedding_bags.{torch}.weight"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp(units: &[u32], bn: bool, ln: bool) -> Mlp {
        Mlp {
            hidden_units: units.to_vec(),
            use_bn: Some(bn),
            use_ln: Some(ln),
            ..Default::default()
        }
    }

    #[test]
    fn perceptron_indices_follow_the_norm() {
        let mut p = Pairs::default();
        p.mlp("e", "m", &mlp(&[4, 2], true, false));
        p.mlp("t", "n", &mlp(&[3], false, false));
        let m = p.finish();
        assert_eq!(m["e.layer1.weight"], "m.mlp.1.perceptron.0.weight");
        assert_eq!(m["e.layer0.bn.gamma"], "m.mlp.0.perceptron.1.weight");
        assert_eq!(
            m["e.layer0.bn.running_var"],
            "m.mlp.0.perceptron.1.running_var"
        );
        assert_eq!(m["e.layer0.prelu.slope"], "m.mlp.0.perceptron.2.weight");
        assert_eq!(m["t.layer0.prelu.slope"], "n.mlp.0.perceptron.1.weight");
        assert!(!m.contains_key("t.layer0.bn.gamma"));
    }

    fn tower(name: &str) -> crate::proto::tzrec::protos::TaskTower {
        crate::proto::tzrec::protos::TaskTower {
            tower_name: name.into(),
            ..Default::default()
        }
    }

    fn group(name: &str) -> FeatureGroupConfig {
        FeatureGroupConfig {
            group_name: name.into(),
            ..Default::default()
        }
    }

    /// PPNet's flat lists run task by task, layer by layer; towers run
    /// task by task, domain by domain.
    #[test]
    fn pepnet_indices_are_task_major() {
        let m = PepNet {
            ppnet_hidden_units: vec![8, 4, 2],
            domain_input_name: Some("d".into()),
            task_domain_num: Some(2),
            task_towers: vec![tower("ctr"), tower("cvr")],
            ..Default::default()
        };
        let (all, uia) = (group("all"), group("uia"));
        let mut p = Pairs::default();
        p.pepnet(&m, &[&all, &uia]);
        let n = p.finish();
        assert_eq!(n["ppnet.cvr.layer1.weight"], "ppnet.linears.4.weight");
        assert_eq!(
            n["ppnet.cvr.gate2.layer1.bias"],
            "ppnet.gate_nus.5.dense_layers.2.bias"
        );
        assert_eq!(
            n["cvr.domain0.logits.weight"],
            "_task_tower.2.linear.weight"
        );
        assert_eq!(n["cvr.domain1.logits.bias"], "_task_tower.3.linear.bias");
        // No "domain" group: no EPNet.
        assert!(!n.values().any(|t| t.starts_with("epnet.")));
    }

    #[test]
    fn mask_net_blocks_and_norms() {
        let net = MaskNetModule {
            n_mask_blocks: 2,
            top_mlp: Some(mlp(&[4], false, true)),
            ..Default::default()
        };
        let mut p = Pairs::default();
        p.mask_net(&net);
        let n = p.finish();
        assert_eq!(
            n["mask_net.block1.mask_generator.layer1.weight"],
            "mask_net.mask_blocks.1.mask_generator.2.weight"
        );
        assert_eq!(
            n["mask_net.block0.ffn.layer0.ln.gamma"],
            "mask_net.mask_blocks.0.ffn.1.weight"
        );
        assert_eq!(
            n["mask_net.top_mlp.layer0.ln.beta"],
            "mask_net.top_mlp.mlp.0.perceptron.1.bias"
        );
    }

    #[test]
    fn dice_keeps_its_statistics_and_drops_its_affine() {
        let mut m = mlp(&[4], false, false);
        m.activation = Some("Dice".into());
        let mut p = Pairs::default();
        p.mlp("a", "e.mlp", &m);
        let absent = std::mem::take(&mut p.absent);
        let n = p.finish();
        assert_eq!(n["a.layer0.dice.alpha"], "e.mlp.mlp.0.perceptron.1.alpha");
        assert_eq!(
            n["a.layer0.dice.bn.running_var"],
            "e.mlp.mlp.0.perceptron.1.bn.running_var"
        );
        assert!(absent.contains("a.layer0.dice.bn.gamma"));
        assert!(!n.contains_key("a.layer0.dice.bn.gamma"));
    }

    #[test]
    fn a_name_paired_twice_differently_loses_it() {
        let mut p = Pairs::default();
        p.add("a".into(), "x".into());
        p.add("a".into(), "y".into());
        p.add("b".into(), "z".into());
        p.add("b".into(), "z".into());
        let m = p.finish();
        assert!(!m.contains_key("a"));
        assert_eq!(m["b"], "z");
    }
}

//! What every rule reads: the typed config seen through a few uniform
//! views (features of every kind, task towers of every model family, every
//! MLP with its path), plus span lookups. Built once per file.

use std::ops::Range;

use crate::proto::tzrec::protos::{
    feature_config::Feature as FeatureOneof, model_config::Model, ComboFeature, DataConfig,
    EasyRecConfig, FeatureGroupConfig, FgMode, IdFeature, LossConfig, Mlp, RawFeature,
};
use crate::schema::SpanMap;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};

use super::facts::{self, Facts};

/// A feature plec models (id, raw or combo, plain or sequence variant).
pub(super) struct Feature<'a> {
    /// Path of the feature block, e.g. `feature_configs[3].id_feature`.
    pub path: String,
    pub name: &'a str,
    pub kind: FeatureKind<'a>,
}

pub(super) enum FeatureKind<'a> {
    Id(&'a IdFeature),
    Raw(&'a RawFeature),
    Combo(&'a ComboFeature),
}

impl Feature<'_> {
    /// `id feature`, `raw feature` or `combo feature`.
    pub(super) fn kind_words(&self) -> &'static str {
        match self.kind {
            FeatureKind::Id(_) => "id feature",
            FeatureKind::Raw(_) => "raw feature",
            FeatureKind::Combo(_) => "combo feature",
        }
    }

    pub(super) fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    pub(super) fn embedding_name(&self) -> Option<&str> {
        match self.kind {
            FeatureKind::Id(f) => f.embedding_name.as_deref(),
            FeatureKind::Raw(f) => f.embedding_name.as_deref(),
            FeatureKind::Combo(f) => f.embedding_name.as_deref(),
        }
        .filter(|s| !s.is_empty())
    }

    pub(super) fn pooling(&self) -> Option<&str> {
        match self.kind {
            FeatureKind::Id(f) => f.pooling.as_deref(),
            FeatureKind::Raw(f) => f.pooling.as_deref(),
            FeatureKind::Combo(f) => f.pooling.as_deref(),
        }
    }

    /// Whether the feature's value enters a group as is (a raw feature
    /// without boundaries or a dense embedding).
    pub(super) fn is_dense(&self) -> bool {
        matches!(self.kind, FeatureKind::Raw(f) if f.boundaries.is_empty() && f.dense_emb.is_none())
    }
}

/// A task tower of any multi-task family (`TaskTower` or `BayesTaskTower`).
pub(super) struct Tower<'a> {
    /// Path of the tower block, e.g. `model_config.ple.task_towers[1]`.
    pub path: String,
    pub index: usize,
    pub name: &'a str,
    /// The label as written (None when absent).
    pub label: Option<&'a str>,
    pub num_class: Option<u32>,
    pub losses: &'a [LossConfig],
    pub weight: Option<f32>,
    pub sample_weight_name: Option<&'a str>,
    pub task_space_label: Option<&'a str>,
    pub in_task_space_weight: Option<f32>,
    pub out_task_space_weight: Option<f32>,
    /// DBMTL only.
    pub relations: &'a [String],
    /// DBMTL only.
    pub relation_mlp: Option<&'a Mlp>,
    /// A DBMTL tower (its label defaults to `label_fields[index]`).
    pub bayes: bool,
    /// A task of an HSTU model's `fusion_mtl_tower` (named by `task_name`;
    /// it has no task space, sample weight or relations).
    pub fusion: bool,
}

impl Tower<'_> {
    pub(super) fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    /// Path of the tower's name (`tower_name`, or a fusion task's
    /// `task_name`).
    pub(super) fn name_path(&self) -> String {
        self.field(if self.fusion {
            "task_name"
        } else {
            "tower_name"
        })
    }
}

/// The towers of a multi-task model (task towers, or the tasks of an HSTU
/// model's `fusion_mtl_tower`).
pub(super) struct MultiTask<'a> {
    pub towers: Vec<Tower<'a>>,
}

/// The typed config and span map with uniform views over them.
pub(super) struct Ctx<'a> {
    pub config: &'a EasyRecConfig,
    pub spans: &'a SpanMap,
    pub features: Vec<Feature<'a>>,
    pub data: Option<&'a DataConfig>,
    pub groups: &'a [FeatureGroupConfig],
    pub model: Option<MultiTask<'a>>,
    /// Every message of the config with its path (the root is `""`).
    pub nodes: Vec<(String, DynamicMessage)>,
    /// Every feature of every kind: (name, path of its block). Sub-features
    /// of a `sequence_feature` are named `<sequence_name>__<feature_name>`.
    pub all_features: Vec<(String, String)>,
    /// Every MLP of the model, wherever it appears, with its path.
    pub mlps: Vec<(String, Mlp)>,
    /// The schema's plec options.
    pub facts: Facts,
    /// `model_config.<kind>` and its descriptor, for any model kind.
    pub model_kind: Option<(String, MessageDescriptor)>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(config: &'a EasyRecConfig, spans: &'a SpanMap) -> Self {
        let mut features = Vec::new();
        for (i, fc) in config.feature_configs.iter().enumerate() {
            let base = format!("feature_configs[{i}]");
            let (field, name, kind) = match &fc.feature {
                Some(FeatureOneof::IdFeature(f)) => {
                    ("id_feature", f.feature_name.as_str(), FeatureKind::Id(f))
                }
                Some(FeatureOneof::SequenceIdFeature(f)) => (
                    "sequence_id_feature",
                    f.feature_name.as_str(),
                    FeatureKind::Id(f),
                ),
                Some(FeatureOneof::RawFeature(f)) => {
                    ("raw_feature", f.feature_name.as_str(), FeatureKind::Raw(f))
                }
                Some(FeatureOneof::SequenceRawFeature(f)) => (
                    "sequence_raw_feature",
                    f.feature_name.as_str(),
                    FeatureKind::Raw(f),
                ),
                Some(FeatureOneof::ComboFeature(f)) => (
                    "combo_feature",
                    f.feature_name.as_str(),
                    FeatureKind::Combo(f),
                ),
                Some(FeatureOneof::SequenceComboFeature(f)) => (
                    "sequence_combo_feature",
                    f.feature_name.as_str(),
                    FeatureKind::Combo(f),
                ),
                Some(_) => continue,
                None => continue,
            };
            features.push(Feature {
                path: format!("{base}.{field}"),
                name,
                kind,
            });
        }
        let groups = config
            .model_config
            .as_ref()
            .map_or(&[][..], |m| m.feature_groups.as_slice());
        let facts = Facts::builtin();
        let dynamic = facts.dynamic(config);
        let mut nodes = Vec::new();
        if let Some(d) = &dynamic {
            facts::walk(d, "", &mut nodes);
        }
        let mlps = nodes
            .iter()
            .filter(|(p, m)| {
                m.descriptor().full_name() == "tzrec.protos.MLP" && p.starts_with("model_config.")
            })
            .filter_map(|(p, m)| Some((p.clone(), Mlp::decode(m.encode_to_vec().as_slice()).ok()?)))
            .collect();
        let all_features = facts::feature_names(&nodes);
        let model_kind = dynamic.as_ref().and_then(facts::model_kind);
        Ctx {
            config,
            spans,
            features,
            nodes,
            all_features,
            mlps,
            facts,
            model_kind,
            data: config.data_config.as_ref(),
            groups,
            model: config
                .model_config
                .as_ref()
                .and_then(|m| multi_task(m.model.as_ref())),
        }
    }

    /// Span of the value at `path`.
    pub(super) fn value(&self, path: &str) -> Option<Range<usize>> {
        self.spans.value(path)
    }

    /// Span of the field name at `path`.
    pub(super) fn name(&self, path: &str) -> Option<Range<usize>> {
        self.spans.name(path)
    }

    /// The value at `path`, else the nearest enclosing block's name.
    pub(super) fn best(&self, path: &str) -> Option<Range<usize>> {
        self.spans.best(path)
    }

    /// Whether `path` was written in the source.
    pub(super) fn written(&self, path: &str) -> bool {
        self.spans.contains(path)
    }

    /// How feature generation runs (FG_NONE when there is no data_config).
    pub(super) fn fg_mode(&self) -> FgMode {
        self.data.map_or(FgMode::FgNone, |d| d.fg_mode())
    }

    /// Whether the file has feature definitions to check names against.
    pub(super) fn has_features(&self) -> bool {
        !self.config.feature_configs.is_empty()
    }

    /// The label column a tower trains on: its `label_name`, or for a DBMTL
    /// tower without one, `label_fields` at its position.
    pub(super) fn tower_label(&self, t: &Tower<'a>) -> Option<&'a str> {
        if let Some(l) = t.label {
            return Some(l);
        }
        if t.bayes {
            return self
                .data
                .and_then(|d| d.label_fields.get(t.index))
                .map(String::as_str);
        }
        None
    }

    pub(super) fn feature(&self, name: &str) -> Option<&Feature<'a>> {
        self.features.iter().find(|f| f.name == name)
    }

    pub(super) fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.all_features.iter().map(|(n, _)| n.as_str())
    }

    /// Whether a feature of any kind has this name.
    pub(super) fn has_feature(&self, name: &str) -> bool {
        self.all_features.iter().any(|(n, _)| n == name)
    }
}

fn opt_str(s: &Option<String>) -> Option<&str> {
    s.as_deref()
}

fn multi_task(model: Option<&Model>) -> Option<MultiTask<'_>> {
    let mut towers = Vec::new();
    match model? {
        Model::Ple(m) => {
            let path = "model_config.ple".to_string();
            push_task_towers(&path, &m.task_towers, &mut towers);
        }
        Model::Mmoe(m) => {
            let path = "model_config.mmoe".to_string();
            push_task_towers(&path, &m.task_towers, &mut towers);
        }
        Model::SimpleMultiTask(m) => {
            let path = "model_config.simple_multi_task".to_string();
            push_task_towers(&path, &m.task_towers, &mut towers);
        }
        Model::Pepnet(m) => {
            let path = "model_config.pepnet".to_string();
            push_task_towers(&path, &m.task_towers, &mut towers);
        }
        Model::Dc2vr(m) => {
            let path = "model_config.dc2vr".to_string();
            for (i, t) in m.task_towers.iter().enumerate() {
                towers.push(Tower {
                    path: format!("{path}.task_towers[{i}]"),
                    index: i,
                    name: &t.tower_name,
                    label: opt_str(&t.label_name),
                    num_class: t.num_class,
                    losses: &t.losses,
                    weight: t.weight,
                    sample_weight_name: None,
                    task_space_label: opt_str(&t.task_space_indicator_label),
                    in_task_space_weight: t.in_task_space_weight,
                    out_task_space_weight: t.out_task_space_weight,
                    relations: &[],
                    relation_mlp: None,
                    bayes: false,
                    fusion: false,
                });
            }
        }
        Model::DlrmHstu(m) => {
            let path = "model_config.dlrm_hstu.fusion_mtl_tower".to_string();
            push_fusion_tasks(&path, &m.fusion_mtl_tower.task_configs, &mut towers);
        }
        Model::UltraHstu(m) => {
            let path = "model_config.ultra_hstu.fusion_mtl_tower".to_string();
            push_fusion_tasks(&path, &m.fusion_mtl_tower.task_configs, &mut towers);
        }
        Model::Dbmtl(m) => {
            let path = "model_config.dbmtl".to_string();
            for (i, t) in m.task_towers.iter().enumerate() {
                towers.push(Tower {
                    path: format!("{path}.task_towers[{i}]"),
                    index: i,
                    name: &t.tower_name,
                    label: opt_str(&t.label_name),
                    num_class: t.num_class,
                    losses: &t.losses,
                    weight: t.weight,
                    sample_weight_name: opt_str(&t.sample_weight_name),
                    task_space_label: opt_str(&t.task_space_indicator_label),
                    in_task_space_weight: t.in_task_space_weight,
                    out_task_space_weight: t.out_task_space_weight,
                    relations: &t.relation_tower_names,
                    relation_mlp: t.relation_mlp.as_ref(),
                    bayes: true,
                    fusion: false,
                });
            }
        }
        _ => return None,
    }
    Some(MultiTask { towers })
}

fn push_task_towers<'a>(
    path: &str,
    src: &'a [crate::proto::tzrec::protos::TaskTower],
    out: &mut Vec<Tower<'a>>,
) {
    for (i, t) in src.iter().enumerate() {
        out.push(Tower {
            path: format!("{path}.task_towers[{i}]"),
            index: i,
            name: &t.tower_name,
            // `label_name` is required in TaskTower: empty means absent.
            label: Some(t.label_name.as_str()).filter(|l| !l.is_empty()),
            num_class: t.num_class,
            losses: &t.losses,
            weight: t.weight,
            sample_weight_name: opt_str(&t.sample_weight_name),
            task_space_label: opt_str(&t.task_space_indicator_label),
            in_task_space_weight: t.in_task_space_weight,
            out_task_space_weight: t.out_task_space_weight,
            relations: &[],
            relation_mlp: None,
            bayes: false,
            fusion: false,
        });
    }
}

fn push_fusion_tasks<'a>(
    path: &str,
    src: &'a [crate::proto::tzrec::protos::FusionSubTaskConfig],
    out: &mut Vec<Tower<'a>>,
) {
    for (i, t) in src.iter().enumerate() {
        out.push(Tower {
            path: format!("{path}.task_configs[{i}]"),
            index: i,
            name: &t.task_name,
            label: Some(t.label_name.as_str()).filter(|l| !l.is_empty()),
            num_class: t.num_class,
            losses: &t.losses,
            weight: t.weight,
            sample_weight_name: None,
            task_space_label: None,
            in_task_space_weight: None,
            out_task_space_weight: None,
            relations: &[],
            relation_mlp: None,
            bayes: false,
            fusion: true,
        });
    }
}

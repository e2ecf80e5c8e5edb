//! The HSTU family (`dlrm_hstu`, `ultra_hstu`, `hstu_match`): the feature
//! groups its modules read by fixed names and their types (consumed by
//! `plec::missing-group` and `plec::group-type`), the widths they derive
//! from those groups, and the settings their constructors assert
//! (TorchEasyRec's `tzrec/models/{dlrm_hstu,ultra_hstu,hstu}.py` and
//! `tzrec/modules/gr/`).

use std::collections::HashMap;

use super::context::Ctx;
use super::widths::{feature_widths, group_width, Width};
use super::{LabelAt, Rule};
use crate::diag::{Diagnostic, Severity};
use crate::proto::tzrec::protos::{
    gr_action_encoder::ActionEncoder, gr_content_encoder::ContentEncoder,
    gr_input_preprocessor::InputPreprocessor, model_config::Model, FeatureGroupConfig,
    FeatureGroupType, GrActionEncoder, GrContentEncoder, GrContextualizedMlp, Hstu,
};

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::hstu-dims",
        severity: Severity::Error,
        summary: "widths an HSTU model derives from its feature groups do not agree",
        explain: "\
DlrmHSTU, UltraHSTU and HSTUMatch size their layers from the widths of the
groups they read, and TorchEasyRec stops when these do not fit:
- every feature of the \"contextual\" group must have one width (each is one
  position of the contextual prefix), unless `concat_contextual_features` is
  set (DlrmHSTU, UltraHSTU): \"output_dim of features in contextual
  features_group must be same\";
- the content encoder joins the history (\"uih\") and candidate widths:
  `slice_content_encoder` needs the candidate group at least as wide as the
  history group, `pad_content_encoder` strictly wider, and
  `mlp_content_encoder` needs `uih_mlp` and `target_mlp` to end at one width;
- DlrmHSTU and UltraHSTU size the history and candidate layers by the whole
  group but feed them only the group's sequence part, so a plain
  (non-sequence) feature in those groups breaks the first batch.

Example:
    feature_groups { group_name: \"contextual\"
                     feature_names: \"user_id\"      # 16 wide
                     feature_names: \"age_level\" }  # 8 wide

Fix: give the features matching widths (`embedding_dim` / `value_dim`), or
set `concat_contextual_features: true`; move plain features out of the
history and candidate groups.",
        check: hstu_dims,
    },
    Rule {
        code: "plec::hstu-setting",
        severity: Severity::Error,
        summary: "an HSTU setting that TorchEasyRec's HSTU modules refuse",
        explain: "\
TorchEasyRec asserts these when it builds an HSTU model:
- an `action_encoder` needs an `action_mlp` (\"must set action_mlp\");
- `contextual_interleave_preprocessor` with interleaving (the default) needs
  an `action_encoder`;
- `watchtime_to_action_thresholds` and `watchtime_to_action_weights` pair up
  one to one;
- UltraHSTU needs at least one `hstu` channel, and with two or more every
  channel needs its own non-empty `name` (it names the channel's groups);
- HSTUMatch does not support `in_batch_negative`, encodes the history alone
  (only `uih_preprocessor` fits: the other preprocessors join candidates the
  user tower does not have), and its preprocessor reads the group named by
  `hstu.name` (\"uih\" when unset), which must be the group `user_tower.input`
  names.

Example:
    input_preprocessor { contextual_preprocessor {
        action_encoder { simple_action_encoder { ... } }
        content_encoder { slice_content_encoder {} }
        content_mlp { simple_mlp { hidden_dim: 256 } } } }  # no action_mlp

Fix: add the missing block, or remove the one that needs it.",
        check: hstu_setting,
    },
];

/// One HSTU encoder of the model with its path.
struct Channel<'a> {
    path: String,
    hstu: &'a Hstu,
}

impl Channel<'_> {
    /// The name the preprocessor gives the history's groups.
    fn uih(&self) -> String {
        match self.hstu.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => "uih".to_string(),
        }
    }

    fn preprocessor(&self) -> Option<(&'static str, &InputPreprocessor)> {
        let p = self.hstu.input_preprocessor.input_preprocessor.as_ref()?;
        let name = match p {
            InputPreprocessor::ContextualPreprocessor(_) => "contextual_preprocessor",
            InputPreprocessor::ContextualInterleavePreprocessor(_) => {
                "contextual_interleave_preprocessor"
            }
            InputPreprocessor::UihPreprocessor(_) => "uih_preprocessor",
        };
        Some((name, p))
    }

    fn preprocessor_path(&self) -> Option<String> {
        let (name, _) = self.preprocessor()?;
        Some(format!("{}.input_preprocessor.{name}", self.path))
    }

    /// (action_encoder, action_mlp, content_encoder) of the preprocessor.
    #[allow(clippy::type_complexity)]
    fn parts(
        &self,
    ) -> Option<(
        Option<&GrActionEncoder>,
        Option<&GrContextualizedMlp>,
        Option<&GrContentEncoder>,
    )> {
        Some(match self.preprocessor()?.1 {
            InputPreprocessor::ContextualPreprocessor(p) => (
                p.action_encoder.as_ref(),
                p.action_mlp.as_ref(),
                Some(&p.content_encoder),
            ),
            InputPreprocessor::ContextualInterleavePreprocessor(p) => (
                p.action_encoder.as_ref(),
                p.action_mlp.as_ref(),
                Some(&p.content_encoder),
            ),
            InputPreprocessor::UihPreprocessor(p) => {
                (p.action_encoder.as_ref(), p.action_mlp.as_ref(), None)
            }
        })
    }

    /// Whether the action encoder reads watch times.
    fn watchtime(&self) -> bool {
        let Some((Some(ae), _, _)) = self.parts() else {
            return false;
        };
        matches!(&ae.action_encoder, Some(ActionEncoder::SimpleActionEncoder(s)) if !s.watchtime_to_action_thresholds.is_empty())
    }
}

/// Whether the model ranks candidates (DlrmHSTU, UltraHSTU) or retrieves
/// (HSTUMatch).
#[derive(PartialEq, Eq, Clone, Copy)]
enum Family {
    Rank,
    Match,
}

struct HstuModel<'a> {
    kind: &'static str,
    family: Family,
    channels: Vec<Channel<'a>>,
    concat_contextual: bool,
}

fn model<'a>(cx: &Ctx<'a>) -> Option<HstuModel<'a>> {
    let m = cx.config.model_config.as_ref()?.model.as_ref()?;
    Some(match m {
        Model::DlrmHstu(m) => HstuModel {
            kind: "dlrm_hstu",
            family: Family::Rank,
            channels: vec![Channel {
                path: "model_config.dlrm_hstu.hstu".to_string(),
                hstu: &m.hstu,
            }],
            concat_contextual: m.concat_contextual_features(),
        },
        Model::UltraHstu(m) => HstuModel {
            kind: "ultra_hstu",
            family: Family::Rank,
            channels: m
                .hstu
                .iter()
                .enumerate()
                .map(|(i, hstu)| Channel {
                    path: format!("model_config.ultra_hstu.hstu[{i}]"),
                    hstu,
                })
                .collect(),
            concat_contextual: m.concat_contextual_features(),
        },
        Model::HstuMatch(m) => HstuModel {
            kind: "hstu_match",
            family: Family::Match,
            channels: vec![Channel {
                path: "model_config.hstu_match.user_tower.hstu".to_string(),
                hstu: &m.user_tower.hstu,
            }],
            concat_contextual: false,
        },
        _ => return None,
    })
}

/// A feature group an HSTU module reads by a fixed name.
pub(super) struct Needed {
    pub name: String,
    /// The group types it can be.
    pub types: Vec<FeatureGroupType>,
    /// The config path of the setting that makes it needed.
    pub at: String,
    /// What reads it, for the help text.
    pub why: String,
    /// Without the group TorchEasyRec fails at model build (else at the
    /// first batch).
    pub at_build: bool,
    /// With a group of another type TorchEasyRec fails at model build
    /// (DlrmHSTU checks the contextual group's type; the others break at
    /// the first batch).
    pub type_at_build: bool,
    /// `model_config.<kind>`.
    pub kind: &'static str,
}

/// Every group the HSTU model of the config reads by name.
pub(super) fn needed_groups(cx: &Ctx) -> Vec<Needed> {
    use FeatureGroupType::{Deep, JaggedSequence, Sequence};
    let Some(m) = model(cx) else {
        return Vec::new();
    };
    let base = format!("model_config.{}", m.kind);
    let mut out: Vec<Needed> = Vec::new();
    let mut need = |name: String, types: Vec<FeatureGroupType>, at: String, why: &str, at_build| {
        if out.iter().any(|n| n.name == name) {
            return;
        }
        out.push(Needed {
            type_at_build: name == "contextual",
            name,
            types,
            at,
            why: why.to_string(),
            at_build,
            kind: m.kind,
        });
    };
    if m.family == Family::Rank {
        need(
            "contextual".into(),
            vec![Deep, Sequence],
            base.clone(),
            "the model reads the user's contextual features from it",
            true,
        );
        need(
            "candidate".into(),
            vec![JaggedSequence],
            base.clone(),
            "the model reads the candidate items to rank from it",
            true,
        );
    }
    for ch in &m.channels {
        let uih = ch.uih();
        let pre = ch.preprocessor_path().unwrap_or_else(|| ch.path.clone());
        if m.family == Family::Rank {
            need(
                uih.clone(),
                vec![JaggedSequence],
                ch.path.clone(),
                "the HSTU encoder reads the user's interaction history from it",
                true,
            );
        }
        need(
            format!("{uih}_timestamp"),
            vec![JaggedSequence],
            pre.clone(),
            "the input preprocessor reads the history's timestamps from it",
            false,
        );
        if m.family == Family::Rank
            && !matches!(
                ch.preprocessor(),
                Some((_, InputPreprocessor::UihPreprocessor(_)))
            )
        {
            need(
                "candidate_timestamp".into(),
                vec![JaggedSequence],
                pre.clone(),
                "the input preprocessor reads the candidates' timestamps from it",
                false,
            );
        }
        if let Some((Some(_), _, _)) = ch.parts() {
            need(
                format!("{uih}_action"),
                vec![JaggedSequence],
                format!("{pre}.action_encoder"),
                "the action encoder reads the history's actions from it",
                false,
            );
        }
        if ch.watchtime() {
            need(
                format!("{uih}_watchtime"),
                vec![JaggedSequence],
                format!("{pre}.action_encoder.simple_action_encoder.watchtime_to_action_thresholds"),
                "the action encoder reads watch times from it (`watchtime_to_action_thresholds` is set)",
                false,
            );
        }
    }
    out
}

fn group<'a>(cx: &Ctx<'a>, name: &str) -> Option<(usize, &'a FeatureGroupConfig)> {
    cx.groups
        .iter()
        .enumerate()
        .find(|(_, g)| g.group_name == name)
}

fn hstu_dims(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(m) = model(cx) else { return };
    let widths = feature_widths(cx);
    contextual_dims(rule, cx, &m, &widths, out);
    if m.family != Family::Rank {
        return;
    }
    for ch in &m.channels {
        content_encoder_dims(rule, cx, ch, &widths, out);
    }
    // History and candidate groups: sized whole, read by their sequence part.
    let mut names: Vec<String> = m.channels.iter().map(Channel::uih).collect();
    names.push("candidate".into());
    for name in names {
        let Some((gi, g)) = group(cx, &name) else {
            continue;
        };
        for (i, f) in g.feature_names.iter().enumerate() {
            let Some(w) = widths.get(f) else { continue };
            if w.sequence {
                continue;
            }
            out.push(
                rule.diag(format!("group \"{name}\" holds \"{f}\", which is not a sequence feature"))
                    .primary_at(cx.value(&format!("model_config.feature_groups[{gi}].feature_names[{i}]")), "a plain feature")
                    .with_help(format!("{} sizes its layers by the whole width of \"{name}\" but reads only its sequence part; move \"{f}\" to the \"contextual\" group, or use a sequence feature", m.kind)),
            );
        }
    }
}

fn contextual_dims(
    rule: &Rule,
    cx: &Ctx,
    m: &HstuModel,
    widths: &HashMap<String, Width>,
    out: &mut Vec<Diagnostic>,
) {
    if m.concat_contextual {
        return;
    }
    let Some((gi, g)) = group(cx, "contextual") else {
        return;
    };
    // A SEQUENCE contextual group contributes its query (plain) features.
    let sequence_group = g.group_type() == FeatureGroupType::Sequence;
    let mut first: Option<(usize, u64)> = None;
    for (i, f) in g.feature_names.iter().enumerate() {
        let Some(w) = widths.get(f) else { return };
        if sequence_group && w.sequence {
            continue;
        }
        let Some(dim) = w.dim else { return };
        match first {
            None => first = Some((i, dim)),
            Some((fi, fd)) if fd != dim => {
                let gp = format!("model_config.feature_groups[{gi}].feature_names");
                let fix = if m.family == Family::Rank {
                    " or set `concat_contextual_features: true`"
                } else {
                    ""
                };
                out.push(
                    rule.diag(format!(
                        "the contextual features need one width, but \"{f}\" is {dim} wide and \"{}\" {fd}",
                        g.feature_names[fi]
                    ))
                    .primary_at(cx.value(&format!("{gp}[{i}]")), format!("{dim} wide"))
                    .secondary_at(cx.value(&format!("{gp}[{fi}]")), format!("{fd} wide"))
                    .with_help(format!("{} projects each contextual feature as one position of the sequence; give them one embedding_dim (or value_dim){fix}", m.kind)),
                );
                return;
            }
            Some(_) => {}
        }
    }
}

fn total(cx: &Ctx, widths: &HashMap<String, Width>, name: &str) -> Option<u64> {
    let (_, g) = group(cx, name)?;
    group_width(widths, g).total()
}

fn content_encoder_dims(
    rule: &Rule,
    cx: &Ctx,
    ch: &Channel,
    widths: &HashMap<String, Width>,
    out: &mut Vec<Diagnostic>,
) {
    let Some((_, _, Some(ce))) = ch.parts() else {
        return;
    };
    let Some(pre) = ch.preprocessor_path() else {
        return;
    };
    let at = format!("{pre}.content_encoder");
    let uih = ch.uih();
    match &ce.content_encoder {
        Some(ContentEncoder::MlpContentEncoder(e)) => {
            let (Some(u), Some(t)) = (
                e.uih_mlp.hidden_units.last(),
                e.target_mlp.hidden_units.last(),
            ) else {
                return;
            };
            if u != t {
                let i = e.target_mlp.hidden_units.len() - 1;
                let j = e.uih_mlp.hidden_units.len() - 1;
                out.push(
                    rule.diag(format!("mlp_content_encoder's uih_mlp ends {u} wide and its target_mlp {t} wide"))
                        .primary_at(cx.value(&format!("{at}.mlp_content_encoder.target_mlp.hidden_units[{i}]")), format!("{t} wide"))
                        .secondary_at(cx.value(&format!("{at}.mlp_content_encoder.uih_mlp.hidden_units[{j}]")), format!("{u} wide"))
                        .with_help("history and candidate embeddings are joined into one sequence; end both MLPs at one width"),
                );
            }
        }
        Some(
            kind @ (ContentEncoder::SliceContentEncoder(_) | ContentEncoder::PadContentEncoder(_)),
        ) => {
            let (Some(u), Some(c)) = (total(cx, widths, &uih), total(cx, widths, "candidate"))
            else {
                return;
            };
            let (name, ok, need) = match kind {
                ContentEncoder::SliceContentEncoder(_) => {
                    ("slice_content_encoder", c >= u, "at least as wide as")
                }
                _ => ("pad_content_encoder", c > u, "wider than"),
            };
            if ok {
                return;
            }
            out.push(
                rule.diag(format!("{name} needs the candidate group {need} the history group, but \"candidate\" is {c} wide and \"{uih}\" {u}"))
                    .primary_at(cx.name(&format!("{at}.{name}")), format!("candidate {c} wide, history {u} wide"))
                    .with_help(match kind {
                        ContentEncoder::SliceContentEncoder(_) => "the encoder cuts each candidate embedding to the history's width; widen the candidate features or narrow the history's, or use `mlp_content_encoder`",
                        _ => "the encoder pads each history embedding to the candidate's width; use `slice_content_encoder` when the widths are equal",
                    }),
            );
        }
        None => {}
    }
}

fn hstu_setting(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(m) = model(cx) else { return };
    for ch in &m.channels {
        let Some(pre) = ch.preprocessor_path() else {
            continue;
        };
        let Some((name, _)) = ch.preprocessor() else {
            continue;
        };
        let Some((ae, am, _)) = ch.parts() else {
            continue;
        };
        if ae.is_some() && am.is_none() {
            out.push(
                rule.diag(format!("{name} has an action_encoder but no action_mlp"))
                    .primary_at(cx.name(&format!("{pre}.action_encoder")), "needs `action_mlp`")
                    .with_help("TorchEasyRec asserts \"must set action_mlp\" when it builds the preprocessor; add `action_mlp { simple_mlp { hidden_dim: 256 } }`"),
            );
        }
        if let Some((_, InputPreprocessor::ContextualInterleavePreprocessor(p))) = ch.preprocessor()
        {
            if p.enable_interleaving() && ae.is_none() {
                out.push(
                    rule.diag("contextual_interleave_preprocessor interleaves actions but has no action_encoder")
                        .primary_at(cx.name(&pre), "needs `action_encoder`")
                        .with_help("TorchEasyRec asserts \"when enable interleaving, must set action_encoder\"; add an `action_encoder` (and `action_mlp`), or set `enable_interleaving: false`"),
                );
            }
        }
        if let Some(Some(ActionEncoder::SimpleActionEncoder(s))) = ae.map(|a| &a.action_encoder) {
            let (t, w) = (
                s.watchtime_to_action_thresholds.len(),
                s.watchtime_to_action_weights.len(),
            );
            if t != w {
                let sp = format!("{pre}.action_encoder.simple_action_encoder");
                out.push(
                    rule.diag(format!(
                        "{t} watch-time threshold{} but {w} watch-time weight{}",
                        if t == 1 { "" } else { "s" },
                        if w == 1 { "" } else { "s" }
                    ))
                        .primary_at(cx.name(&format!("{sp}.watchtime_to_action_weights")).or_else(|| cx.name(&format!("{sp}.watchtime_to_action_thresholds"))), format!("{w} weights"))
                        .secondary_at(cx.name(&format!("{sp}.watchtime_to_action_thresholds")), format!("{t} thresholds"))
                        .with_help("each threshold turns long watches into the action of the weight at its position; give as many weights as thresholds"),
                );
            }
        }
    }
    match m.kind {
        "ultra_hstu" => ultra_channels(rule, cx, &m, out),
        "hstu_match" => match_user_tower(rule, cx, &m, out),
        _ => {}
    }
}

fn ultra_channels(rule: &Rule, cx: &Ctx, m: &HstuModel, out: &mut Vec<Diagnostic>) {
    if m.channels.is_empty() {
        out.push(
            rule.diag("ultra_hstu has no hstu channel")
                .primary_at(cx.name("model_config.ultra_hstu"), "no `hstu` block")
                .with_help("TorchEasyRec asserts \"UltraHSTU requires at least 1 hstu channel\"; add an `hstu { ... }` block"),
        );
        return;
    }
    if m.channels.len() < 2 {
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for ch in &m.channels {
        let name = ch.hstu.name.as_deref().unwrap_or("");
        let problem = if name.is_empty() {
            Some("has no `name`".to_string())
        } else if seen.contains(&name) {
            Some(format!("repeats the name \"{name}\""))
        } else {
            None
        };
        seen.push(name);
        let Some(problem) = problem else { continue };
        out.push(
            rule.diag(format!("an ultra_hstu channel {problem}"))
                .primary_at(cx.value(&format!("{}.name", ch.path)).or_else(|| cx.name(&ch.path)), "channels need unique names")
                .with_help(format!("with {} channels, TorchEasyRec asserts that every channel sets a unique non-empty `name`; it names the channel's groups (\"<name>\", \"<name>_timestamp\", ...)", m.channels.len())),
        );
    }
}

fn match_user_tower(rule: &Rule, cx: &Ctx, m: &HstuModel, out: &mut Vec<Diagnostic>) {
    let Some(Model::HstuMatch(hm)) = cx
        .config
        .model_config
        .as_ref()
        .and_then(|c| c.model.as_ref())
    else {
        return;
    };
    if hm.in_batch_negative() {
        out.push(
            rule.diag("hstu_match does not support in_batch_negative")
                .primary_at(cx.value("model_config.hstu_match.in_batch_negative"), "not supported")
                .with_help("TorchEasyRec asserts this at model build (several positives per row make in-batch negatives ill-defined); remove it and configure a negative sampler"),
        );
    }
    let Some(ch) = m.channels.first() else { return };
    if let Some((name, p)) = ch.preprocessor() {
        if !matches!(p, InputPreprocessor::UihPreprocessor(_)) {
            out.push(
                rule.diag(format!("hstu_match's user tower cannot use {name}"))
                    .primary_at(
                        ch.preprocessor_path().and_then(|p| cx.name(&p)),
                        "joins candidates the user tower does not have",
                    )
                    .with_help(
                        "the user tower encodes the history alone; use `uih_preprocessor { ... }`",
                    ),
            );
        }
    }
    let input = hm.user_tower.input.as_str();
    let uih = ch.uih();
    if !input.is_empty() && input != uih && cx.groups.iter().any(|g| g.group_name == input) {
        let how = if ch.hstu.name.as_deref().is_some_and(|n| !n.is_empty()) {
            "`hstu.name` names"
        } else {
            "without `hstu.name` it reads"
        };
        out.push(
            rule.diag(format!("user_tower reads group \"{input}\", but its HSTU preprocessor reads \"{uih}\""))
                .primary_at(cx.value("model_config.hstu_match.user_tower.input"), format!("{how} \"{uih}\""))
                .with_help(format!("TorchEasyRec sizes the encoder by `input` and feeds it group \"{uih}\"; set `hstu {{ name: \"{input}\" }}`, or name the group \"{uih}\"")),
        );
    }
}

//! Rules for every model and feature kind: the facts read from the
//! schema's options (bucket settings, names TorchEasyRec depends on), and
//! the cross-checks TorchEasyRec's model classes make when they build (DLRM's
//! equal sparse dims, DeepFM's FM dims, a retrieval model's equal tower
//! widths), plus what runs in plec but not in TorchEasyRec.

use std::collections::BTreeMap;

use prost_reflect::{ReflectMessage, Value};

use super::context::Ctx;
use super::facts::{feature_blocks, is_set, str_field};
use super::{LabelAt, Rule};
use crate::diag::{closest_names, one_of, Diagnostic, Severity};

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::bucket-config",
        severity: Severity::Error,
        summary: "an id or combo feature sets no bucket setting, or a feature sets more than one",
        explain: "\
An embedded feature maps each input value to an embedding row in exactly one
way: `hash_bucket_size` (hash into N rows), `num_buckets` (the input is an
integer id below N), `vocab_list` / `vocab_dict` / `vocab_file` (a
vocabulary), `zch` (zero-collision hashing), `dynamicemb` (a dynamic
embedding table that grows to `max_capacity`) or `boundaries` (bucketize a
number). The schema marks these fields with `(plec.bucket)`. An id or combo
feature with none of them has no table size and TorchEasyRec stops; a
feature with two or more silently uses only the first in TorchEasyRec's
order.

Example:
    id_feature { feature_name: \"cate_id\" hash_bucket_size: 10000
                 num_buckets: 12961 embedding_dim: 16 }

Fix: keep exactly one setting.",
        check: bucket_config,
    },
    Rule {
        code: "plec::missing-name",
        severity: Severity::Error,
        summary: "a tower, feature or group lacks the name TorchEasyRec refers to it by",
        explain: "\
Most proto2 `required` fields are never read when unset, and protobuf's text
parser does not enforce them. A few are names TorchEasyRec depends on (the
schema marks them `(plec.needed)`): a task tower's `tower_name` (its losses
and metrics are named after it: an unnamed tower reports `auc_`, and two
unnamed towers collide), a feature's `feature_name`, a feature group's
`group_name`, a tower's `input` (the group it reads: without it TorchEasyRec
looks up a group named \"\" and fails at model build). A sequence encoder's
`input` may be left out when its group has one sequence group
(`plec::sequence-encoder`).

Example:
    task_towers { label_name: \"clk\" losses { binary_cross_entropy {} } }

Fix: give the name (`tower_name: \"ctr\"`).",
        check: missing_name,
    },
    Rule {
        code: "plec::sequence-encoder",
        severity: Severity::Error,
        summary: "a feature group's sequence groups and sequence encoders do not pair up",
        explain: "\
In a DEEP feature group, each sequence group (`sequence_groups`) is read by a
sequence encoder (`sequence_encoders`) whose `input` names it. TorchEasyRec
checks this when it builds the embedding group and stops when: an encoder's
`input` is not a sequence group of the same feature group; an encoder has no
`input` while the group has several sequence groups (with exactly one, the
input defaults to it); a sequence group has no encoder; several sequence
groups are unnamed, or two share a name; or a WIDE or SEQUENCE group has
sequence groups or encoders at all.

Example:
    feature_groups { group_name: \"all\" group_type: DEEP
      sequence_groups { group_name: \"click_seq\" ... }
      sequence_encoders { din_encoder { input: \"clicks\" ... } } }

Fix: name the sequence group in `input`, and give every sequence group an
encoder.",
        check: sequence_encoder,
    },
    Rule {
        code: "plec::sparse-dims",
        severity: Severity::Error,
        summary: "features that a model interacts pairwise have different embedding dims",
        explain: "\
DLRM and WuKong take dot products between the embeddings of their sparse
group, and DeepFM's FM part between the embeddings of its \"fm\" group (or
\"deep\" without one): all of them must have one `embedding_dim`.
TorchEasyRec raises \"sparse group feature dims must be the same\" (or the FM
equivalent) at model build. DLRM's `dense_mlp` must also end at that width.

Example:
    id_feature { feature_name: \"a\" embedding_dim: 16 ... }
    id_feature { feature_name: \"b\" embedding_dim: 8 ... }  # both in \"sparse\"

Fix: give the features one embedding_dim.",
        check: sparse_dims,
    },
    Rule {
        code: "plec::match-output-dim",
        severity: Severity::Error,
        summary: "a retrieval model's user and item towers end at different widths",
        explain: "\
A retrieval model (DSSM, DSSMV2, DAT) scores a user against an item by the
similarity of their tower outputs. With `output_dim: 0` each tower's output
is its MLP's last layer, and the two must be equally wide or the similarity
fails at run time.

Example:
    dssm { user_tower { mlp { hidden_units: [64, 32] } }
           item_tower { mlp { hidden_units: [64, 16] } } output_dim: 0 }

Fix: set `output_dim`, or end both MLPs at one width.",
        check: match_output_dim,
    },
    Rule {
        code: "plec::zero-embedding-dim",
        severity: Severity::Error,
        summary:
            "an embedded feature of a lookup, match, expression or other kind has embedding_dim 0",
        explain: "\
A feature with a bucket setting is embedded, and its `embedding_dim` must be
positive: TorchEasyRec asserts \"embedding_dim ... should be greater than 0\"
when it builds the embedding table. (Id, raw and combo features are checked
by `plec::embedding-dim`.)

Example:
    lookup_feature { feature_name: \"l\" map: \"item:kv\" key: \"user:id\"
                     num_buckets: 100 embedding_dim: 0 }

Fix: give a positive embedding_dim, such as 16.",
        check: zero_embedding_dim,
    },
    Rule {
        code: "plec::not-in-torcheasyrec",
        severity: Severity::Warning,
        summary: "the model kind runs in plec, but TorchEasyRec registers no model class for it",
        explain: "\
`simple_multi_task` is a message of TorchEasyRec's schema, but TorchEasyRec
has no model class of that name (only its tests define one), so
`BaseModel.create_class(\"SimpleMultiTask\")` fails when TorchEasyRec starts.
plec compiles and runs it; the same config will not train in TorchEasyRec.

Example:
    model_config { simple_multi_task { task_towers { ... } } }

Fix: use `mmoe`, `ple` or `dbmtl` where the config must also run in
TorchEasyRec.",
        check: not_in_torcheasyrec,
    },
];

fn bucket_config(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (path, msg) in feature_blocks(&cx.nodes) {
        let desc = msg.descriptor();
        let mut given: Vec<String> = desc
            .fields()
            .filter(|f| cx.facts.is_bucket(f) && is_set(&msg, f))
            .map(|f| f.name().to_string())
            .collect();
        // In the order written: the later settings are the extra ones.
        given.sort_by_key(|f| {
            cx.name(&format!("{path}.{f}"))
                .map_or(usize::MAX, |s| s.start)
        });
        let name = str_field(&msg, "feature_name").unwrap_or_default();
        let kind = path
            .rsplit('.')
            .next()
            .unwrap_or("feature")
            .replace('_', " ");
        let options: Vec<String> = desc
            .fields()
            .filter(|f| cx.facts.is_bucket(f))
            .map(|f| f.name().to_string())
            .collect();
        let options = one_of(&options);
        match given.as_slice() {
            [] if cx.facts.needs_bucket(&desc) => out.push(
                rule.diag(format!("{kind} \"{name}\" has no bucket setting"))
                    .primary_at(
                        cx.best(&format!("{path}.feature_name")),
                        "the table size is unknown",
                    )
                    .with_help(format!(
                        "set exactly one of {options}, e.g. `hash_bucket_size: 100000`"
                    )),
            ),
            [first, rest @ ..] => {
                for other in rest {
                    out.push(
                        rule.diag(format!("{kind} \"{name}\" sets both {first} and {other}"))
                            .primary_at(cx.name(&format!("{path}.{other}")), "also set here")
                            .secondary_at(cx.name(&format!("{path}.{first}")), "first set here")
                            .with_help(format!(
                                "exactly one of {options} decides how values become embedding rows; keep one"
                            )),
                    );
                }
            }
            [] => {}
        }
    }
}

fn missing_name(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (path, msg) in &cx.nodes {
        for fd in msg.descriptor().fields() {
            if !cx.facts.needed(&fd) {
                continue;
            }
            let empty = !msg.has_field(&fd)
                || msg
                    .get_field(&fd)
                    .as_str()
                    .is_some_and(|s| s.trim().is_empty());
            if !empty {
                continue;
            }
            let block = path.rsplit('.').next().unwrap_or(path);
            let block = block.split('[').next().unwrap_or(block);
            let field = fd.name();
            let help = match field {
                "tower_name" | "task_name" => "TorchEasyRec names the tower's losses and metrics after it (an unnamed tower reports `auc_`, and two unnamed towers collide); give it a unique name".to_string(),
                "input" | "augment_input" | "history_input" => format!("TorchEasyRec reads the feature group named by `{field}` when it builds the model; name one of the config's groups"),
                _ => format!("TorchEasyRec refers to the block by its `{field}`; give it one"),
            };
            let at = cx
                .value(&format!("{path}.{field}"))
                .or_else(|| cx.name(path));
            out.push(
                rule.diag(format!("`{block}` has no `{field}`"))
                    .primary_at(at, format!("`{field}` missing or empty"))
                    .with_help(help),
            );
        }
    }
}

/// `embedding_dim` of every feature by name (0 when unset).
fn dims_by_name(cx: &Ctx) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (name, path) in &cx.all_features {
        let Some((_, msg)) = cx.nodes.iter().find(|(p, _)| p == path) else {
            continue;
        };
        let dim = msg
            .descriptor()
            .get_field_by_name("embedding_dim")
            .map(|fd| match msg.get_field(&fd).as_ref() {
                Value::U32(v) => u64::from(*v),
                Value::U64(v) => *v,
                Value::I32(v) => u64::try_from(*v).unwrap_or(0),
                _ => 0,
            })
            .unwrap_or(0);
        out.insert(name.clone(), dim);
    }
    out
}

fn sparse_dims(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some((kind, _)) = &cx.model_kind else {
        return;
    };
    // Groups are keyed by name: two groups of one name count once.
    let distinct: std::collections::BTreeSet<&str> =
        cx.groups.iter().map(|g| g.group_name.as_str()).collect();
    let group = match kind.as_str() {
        "dlrm" | "wukong" if distinct.len() == 1 => cx.groups[0].group_name.clone(),
        "dlrm" | "wukong" => "sparse".to_string(),
        "deepfm" if cx.groups.iter().any(|g| g.group_name == "fm") => "fm".to_string(),
        "deepfm" => "deep".to_string(),
        _ => return,
    };
    let Some(gi) = cx.groups.iter().position(|g| g.group_name == group) else {
        return;
    };
    let dims = dims_by_name(cx);
    let mut first: Option<(usize, u64)> = None;
    for (i, name) in cx.groups[gi].feature_names.iter().enumerate() {
        let Some(&dim) = dims.get(name) else { continue };
        if dim == 0 {
            continue;
        }
        match first {
            None => first = Some((i, dim)),
            Some((fi, fd)) if fd != dim => {
                let gp = format!("model_config.feature_groups[{gi}].feature_names");
                out.push(
                    rule.diag(format!(
                        "{kind} needs one embedding_dim in group \"{group}\", but \"{name}\" is {dim} wide and \"{}\" {fd}",
                        cx.groups[gi].feature_names[fi]
                    ))
                    .primary_at(cx.value(&format!("{gp}[{i}]")), format!("{dim} wide"))
                    .secondary_at(cx.value(&format!("{gp}[{fi}]")), format!("{fd} wide"))
                    .with_help(format!(
                        "{kind} takes dot products between these embeddings; give every feature of \"{group}\" the same embedding_dim"
                    )),
                );
            }
            Some(_) => {}
        }
    }
    if matches!(kind.as_str(), "dlrm" | "wukong")
        && cx.groups.iter().any(|g| g.group_name == "dense")
    {
        let Some((_, dim)) = first else { return };
        let mlp_path = format!("model_config.{kind}.dense_mlp");
        if let Some((_, mlp)) = cx.mlps.iter().find(|(p, _)| *p == mlp_path) {
            if let Some(&last) = mlp.hidden_units.last() {
                if u64::from(last) != dim {
                    let i = mlp.hidden_units.len() - 1;
                    out.push(
                        rule.diag(format!(
                            "{kind}'s dense_mlp ends {last} wide, but its sparse features are {dim} wide"
                        ))
                        .primary_at(cx.value(&format!("{mlp_path}.hidden_units[{i}]")), format!("{last} wide"))
                        .with_help(format!(
                            "the dense vector joins the sparse embeddings' dot products; end dense_mlp at {dim}"
                        )),
                    );
                }
            }
        }
    }
}

fn match_output_dim(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some((kind, _)) = &cx.model_kind else {
        return;
    };
    if !matches!(kind.as_str(), "dssm" | "dssm_v2" | "dat") {
        return;
    }
    let base = format!("model_config.{kind}");
    let Some((_, model)) = cx.nodes.iter().find(|(p, _)| *p == base) else {
        return;
    };
    let output_dim = model
        .get_field_by_name("output_dim")
        .and_then(|v| v.as_i32())
        .unwrap_or(0);
    if output_dim > 0 {
        return;
    }
    let last = |tower: &str| {
        let path = format!("{base}.{tower}.mlp");
        cx.mlps
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, m)| {
                Some((
                    m.hidden_units.len().checked_sub(1)?,
                    *m.hidden_units.last()?,
                ))
            })
            .map(|(i, w)| (format!("{path}.hidden_units[{i}]"), w))
    };
    let (Some((up, uw)), Some((ip, iw))) = (last("user_tower"), last("item_tower")) else {
        return;
    };
    if uw != iw {
        out.push(
            rule.diag(format!(
                "{kind}'s user tower ends {uw} wide and its item tower {iw} wide"
            ))
            .primary_at(cx.value(&ip), format!("item tower: {iw}"))
            .secondary_at(cx.value(&up), format!("user tower: {uw}"))
            .with_help(format!(
                "without `output_dim` the similarity compares the towers' last layers; set `output_dim: {uw}` or end both at one width"
            )),
        );
    }
}

fn zero_embedding_dim(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (path, msg) in feature_blocks(&cx.nodes) {
        // Plain id, raw and combo features are the shape rules' business.
        let kind = path.rsplit('.').next().unwrap_or("");
        if matches!(kind, "id_feature" | "raw_feature" | "combo_feature")
            && !path.contains(".sequence_feature.")
        {
            continue;
        }
        let desc = msg.descriptor();
        let embedded = desc
            .fields()
            .any(|f| cx.facts.is_bucket(&f) && is_set(&msg, &f) && f.name() != "boundaries")
            || (desc
                .fields()
                .any(|f| f.name() == "boundaries" && is_set(&msg, &f)));
        if !embedded {
            continue;
        }
        let Some(fd) = desc.get_field_by_name("embedding_dim") else {
            continue;
        };
        let zero = matches!(
            msg.get_field(&fd).as_ref(),
            Value::U32(0) | Value::U64(0) | Value::I32(0)
        );
        if !zero {
            continue;
        }
        let name = str_field(&msg, "feature_name").unwrap_or_default();
        // TorchEasyRec asserts the dim only when a group reads the feature.
        let used = cx
            .all_features
            .iter()
            .filter(|(_, p)| *p == path)
            .any(|(n, _)| {
                cx.groups.iter().any(|g| {
                    g.feature_names.contains(n)
                        || g.sequence_groups
                            .iter()
                            .any(|s| s.feature_names.contains(n))
                })
            });
        if !cx.groups.is_empty() && !used {
            continue;
        }
        let written = cx.value(&format!("{path}.embedding_dim"));
        let label = if written.is_some() {
            "zero-wide embedding"
        } else {
            "no `embedding_dim`"
        };
        let at = written.or_else(|| cx.best(&format!("{path}.feature_name")));
        out.push(
            rule.diag(format!("feature \"{name}\" is embedded but its embedding_dim is 0"))
                .primary_at(at, label)
                .with_help("its bucket setting makes it an embedding lookup; set `embedding_dim` (for example 16)"),
        );
    }
}

fn not_in_torcheasyrec(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some((kind, _)) = &cx.model_kind else {
        return;
    };
    if kind != "simple_multi_task" {
        return;
    }
    out.push(
        rule.diag("TorchEasyRec has no model class for `simple_multi_task`")
            .primary_at(cx.name("model_config.simple_multi_task"), "runs in plec, not in TorchEasyRec")
            .with_help("TorchEasyRec fails at start creating model class \"SimpleMultiTask\"; use `mmoe`, `ple` or `dbmtl` if the config must also train there"),
    );
}

fn sequence_encoder(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    use crate::proto::tzrec::protos::FeatureGroupType;
    for (gi, g) in cx.groups.iter().enumerate() {
        let gp = format!("model_config.feature_groups[{gi}]");
        if g.sequence_groups.is_empty() && g.sequence_encoders.is_empty() {
            continue;
        }
        if g.group_type() != FeatureGroupType::Deep {
            out.push(
                rule.diag(format!(
                    "group \"{}\" is not DEEP but has sequence groups or encoders",
                    g.group_name
                ))
                .primary_at(cx.value(&format!("{gp}.group_type")).or_else(|| cx.name(&gp)), "not a DEEP group")
                .with_help("TorchEasyRec accepts `sequence_groups` and `sequence_encoders` only in DEEP groups"),
            );
            continue;
        }
        // Sequence group names as TorchEasyRec resolves them: a single
        // unnamed sequence group takes its feature group's name.
        let mut names: Vec<String> = Vec::new();
        let mut index: Vec<usize> = Vec::new();
        let unnamed = g
            .sequence_groups
            .iter()
            .filter(|s| s.group_name.is_none())
            .count();
        for (si, s) in g.sequence_groups.iter().enumerate() {
            let sp = format!("{gp}.sequence_groups[{si}]");
            let name = match &s.group_name {
                Some(n) => n.clone(),
                None if g.sequence_groups.len() == 1 => g.group_name.clone(),
                None => {
                    if unnamed > 1 {
                        out.push(
                            rule.diag(format!("group \"{}\" has several sequence groups and this one has no `group_name`", g.group_name))
                                .primary_at(cx.name(&sp), "unnamed sequence group")
                                .with_help("encoders name the sequence group they read; give every sequence group a `group_name`"),
                        );
                    }
                    continue;
                }
            };
            if names.contains(&name) {
                out.push(
                    rule.diag(format!("two sequence groups are named \"{name}\""))
                        .primary_at(
                            cx.value(&format!("{sp}.group_name"))
                                .or_else(|| cx.name(&sp)),
                            "second use of the name",
                        )
                        .with_help("give each sequence group its own name"),
                );
            }
            names.push(name);
            index.push(si);
        }
        let mut read = vec![false; names.len()];
        for ei in 0..g.sequence_encoders.len() {
            let ep = format!("{gp}.sequence_encoders[{ei}]");
            let Some((kind, input)) = encoder_input(cx, &ep) else {
                continue;
            };
            let ip = format!("{ep}.{kind}");
            match input {
                None if names.len() == 1 => read[0] = true,
                None if names.is_empty() => {}
                None => out.push(
                    rule.diag(format!(
                        "`{kind}` has no `input`, and group \"{}\" has {} sequence groups",
                        g.group_name,
                        names.len()
                    ))
                    .primary_at(cx.name(&ip), "which sequence group does it read?")
                    .with_help(format!("set `input` to one of {}", one_of(&names))),
                ),
                Some(v) => {
                    match names.iter().position(|n| *n == v) {
                        Some(i) => read[i] = true,
                        None => {
                            let close = closest_names(&v, names.iter().map(String::as_str), 3);
                            let help = if close.is_empty() {
                                format!("an encoder reads a sequence group of its own feature group: {}", one_of(&names))
                            } else {
                                format!("did you mean {}?", one_of(&close))
                            };
                            out.push(
                            rule.diag(format!("sequence encoder input \"{v}\" is not a sequence group of \"{}\"", g.group_name))
                                .primary_at(cx.value(&format!("{ip}.input")), "no such sequence group here")
                                .with_help(help),
                        );
                        }
                    }
                }
            }
        }
        for (i, done) in read.iter().enumerate() {
            if *done {
                continue;
            }
            let sp = format!("{gp}.sequence_groups[{}]", index[i]);
            out.push(
                rule.diag(format!("sequence group \"{}\" has no sequence encoder", names[i]))
                    .primary_at(cx.value(&format!("{sp}.group_name")).or_else(|| cx.name(&sp)), "read by no encoder")
                    .with_help(format!("TorchEasyRec stops when a sequence group has no encoder; add `sequence_encoders {{ din_encoder {{ input: \"{}\" ... }} }}`", names[i])),
            );
        }
    }
}

/// The chosen encoder kind of `sequence_encoders[i]` and its `input`.
fn encoder_input(cx: &Ctx, path: &str) -> Option<(String, Option<String>)> {
    let (_, msg) = cx.nodes.iter().find(|(p, _)| p == path)?;
    let fd = msg.descriptor().fields().find(|f| msg.has_field(f))?;
    let v = msg.get_field(&fd);
    let inner = v.as_message()?;
    // An empty string is an unset `input` (the typed config cannot tell).
    let input = str_field(inner, "input").filter(|s| !s.is_empty());
    Some((fd.name().to_string(), input))
}

//! Features, as TorchEasyRec's converter maps them without an `fg.json`:
//! each EasyRec feature reads the input column of its first `input_names`
//! (`expression: "user:<column>"`), with its embedding and bucket settings.

use std::collections::HashSet;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use super::dest::{child, copy, copy_as, push_child, set};
use super::source::Src;
use super::Ctx;

/// `feature_configs` (EasyRec's old layout) or `feature_config.features`.
pub(crate) fn features(ctx: &mut Ctx, src: &Src, out: &mut DynamicMessage) {
    let mut list = src.children("feature_configs");
    if let Some(v2) = src.child("feature_config") {
        list.extend(v2.children("features"));
    }
    let used = grouped(src);
    for f in &list {
        let name = f
            .peek("feature_name")
            .and_then(|v| v.as_str().map(str::to_string))
            .or_else(|| f.peek("input_names").and_then(|v| first_str(&v)))
            .unwrap_or_default();
        if used.contains(&name) {
            let before = written(out);
            feature(ctx, f, out);
            if written(out) > before {
                ctx.origins
                    .record(format!("feature_configs[{before}]"), f.path().to_string());
            }
        } else {
            ctx.left_out(
                f.path(),
                format!("feature `{name}` is not converted: no feature group uses it"),
                "EasyRec builds no input for a feature outside every group, so leaving it \
                 out does not change the model",
            );
        }
    }
    nest_sequence_groups(ctx, out);
}

/// How many features the output has.
fn written(out: &DynamicMessage) -> usize {
    out.get_field_by_name("feature_configs")
        .and_then(|v| v.as_list().map(<[Value]>::len))
        .unwrap_or(0)
}

/// fg.json's sequence groups: their members, converted one by one as
/// sequence features, move into one `sequence_feature` per group (at the
/// first member's place), under their names inside the group, without the
/// length and delimiter the group now holds.
fn nest_sequence_groups(ctx: &mut Ctx, out: &mut DynamicMessage) {
    let Some(fg) = ctx.fg else {
        return;
    };
    let Some(fd) = out.descriptor().get_field_by_name("feature_configs") else {
        return;
    };
    let Value::List(configs) = out.get_field(&fd).into_owned() else {
        return;
    };
    let mut kept: Vec<Value> = Vec::new();
    let mut groups: Vec<(String, usize)> = Vec::new();
    for config in configs {
        let member = config.as_message().and_then(|c| {
            ["sequence_id_feature", "sequence_raw_feature"]
                .into_iter()
                .find_map(|k| {
                    let fd = c.descriptor().get_field_by_name(k)?;
                    if !c.has_field(&fd) {
                        return None;
                    }
                    let f = c.get_field(&fd).as_message()?.clone();
                    let name = f.get_field_by_name("feature_name")?.as_str()?.to_string();
                    let group = fg.get(&name)?.sequence.clone()?;
                    Some((k, f, group, c.descriptor()))
                })
        });
        let Some((kind, mut feature, group, descriptor)) = member else {
            kept.push(config);
            continue;
        };
        let at = match groups.iter().find(|(n, _)| *n == group.name) {
            Some((_, at)) => *at,
            None => {
                let mut c = DynamicMessage::new(descriptor);
                if let Some(seq) = child(ctx, &mut c, "sequence_feature") {
                    set(
                        ctx,
                        seq,
                        "sequence_name",
                        &Value::String(group.name.clone()),
                    );
                    set(ctx, seq, "sequence_length", &Value::U32(group.length));
                    set(
                        ctx,
                        seq,
                        "sequence_delim",
                        &Value::String(group.delim.clone()),
                    );
                    if let Some(pk) = &group.pk {
                        set(ctx, seq, "sequence_pk", &Value::String(pk.clone()));
                    }
                }
                groups.push((group.name.clone(), kept.len()));
                kept.push(Value::Message(c));
                kept.len() - 1
            }
        };
        feature.clear_field_by_name("sequence_length");
        feature.clear_field_by_name("sequence_delim");
        set(
            ctx,
            &mut feature,
            "feature_name",
            &Value::String(group.member),
        );
        let Some(Value::Message(c)) = kept.get_mut(at) else {
            continue;
        };
        let Some(seq) = child(ctx, c, "sequence_feature") else {
            continue;
        };
        let Some(sub) = push_child(ctx, seq, "features") else {
            continue;
        };
        let inner = if kind == "sequence_id_feature" {
            "id_feature"
        } else {
            "raw_feature"
        };
        if let Some(fd) = sub.descriptor().get_field_by_name(inner) {
            sub.set_field(&fd, Value::Message(feature));
        }
    }
    if !groups.is_empty() {
        // Features moved: their comments are not carried (rare: fg.json
        // sequence groups only).
        ctx.origins.retain(|o| !o.starts_with("feature_configs["));
    }
    out.set_field(&fd, Value::List(kept));
}

fn first_str(v: &Value) -> Option<String> {
    match v {
        Value::List(items) => items.first().and_then(|i| i.as_str().map(str::to_string)),
        _ => None,
    }
}

/// The feature names the model's groups use (read without recording).
fn grouped(src: &Src) -> HashSet<String> {
    let mut out = HashSet::new();
    let strings = |v: Option<std::borrow::Cow<'_, Value>>, out: &mut HashSet<String>| {
        if let Some(Value::List(items)) = v.as_deref() {
            out.extend(items.iter().filter_map(|i| i.as_str().map(str::to_string)));
        }
    };
    let Some(Value::Message(model)) = src.peek("model_config").as_deref().cloned() else {
        return out;
    };
    let Some(fd) = model.descriptor().get_field_by_name("feature_groups") else {
        return out;
    };
    if let Value::List(groups) = model.get_field(&fd).as_ref() {
        for g in groups.iter().filter_map(Value::as_message) {
            let field = |m: &DynamicMessage, name: &str| {
                m.descriptor()
                    .get_field_by_name(name)
                    .map(|fd| std::borrow::Cow::Owned(m.get_field(&fd).into_owned()))
            };
            strings(field(g, "feature_names"), &mut out);
            if let Some(Value::List(seqs)) = field(g, "sequence_features").as_deref() {
                for s in seqs.iter().filter_map(Value::as_message) {
                    if let Some(Value::List(maps)) = field(s, "seq_att_map").as_deref() {
                        for m in maps.iter().filter_map(Value::as_message) {
                            for k in ["key", "hist_seq", "aux_hist_seq"] {
                                strings(field(m, k), &mut out);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The `sequence_length` written when EasyRec's config bounds nothing:
/// TorchEasyRec needs a bound, and its taobao examples keep 50 clicks.
const SEQUENCE_LENGTH: u32 = 50;

fn feature(ctx: &mut Ctx, f: &Src, out: &mut DynamicMessage) {
    let inputs = f.strs("input_names");
    let Some(first) = inputs.first().cloned() else {
        ctx.unsupported(
            f.path(),
            "a feature without `input_names` cannot be converted".to_string(),
            "give the feature its input column in `input_names`",
        );
        return;
    };
    let name = f.str("feature_name").unwrap_or_else(|| first.clone());
    let kind = f.enum_name("feature_type", true).unwrap_or_default();
    // fg.json's expression for a name, else the input column itself.
    let fg = ctx.fg;
    let expression = |column: &str| {
        let from_fg = fg
            .and_then(|fg| fg.get(column))
            .and_then(|e| e.expression.clone());
        Value::String(from_fg.unwrap_or_else(|| format!("user:{column}")))
    };
    // An fg.json lookup behind an EasyRec RawFeature (EasyRec reads the
    // looked-up value as a raw number).
    let fg_lookup = fg
        .and_then(|fg| fg.get(&name).or_else(|| fg.get(&first)))
        .filter(|e| e.feature_type == "lookup_feature" && e.map.is_some() && e.key.is_some())
        .cloned();
    let kind = if kind == "RawFeature" && fg_lookup.is_some() {
        "LookupFeature".to_string()
    } else {
        kind
    };
    let oneof = match kind.as_str() {
        "IdFeature" | "TagFeature" => "id_feature",
        "RawFeature" => "raw_feature",
        "ComboFeature" => "combo_feature",
        "LookupFeature" => "lookup_feature",
        "SequenceFeature" => {
            let sub = f.enum_name("sub_feature_type", true).unwrap_or_default();
            if sub == "RawFeature" {
                "sequence_raw_feature"
            } else {
                "sequence_id_feature"
            }
        }
        other => {
            ctx.unsupported(
                &f.field_path("feature_type"),
                format!(
                    "feature `{name}`: `{other}` has no TorchEasyRec counterpart in plec convert"
                ),
                "plec convert maps IdFeature, TagFeature, RawFeature, ComboFeature, \
                 LookupFeature and SequenceFeature",
            );
            return;
        }
    };
    let Some(config) = push_child(ctx, out, "feature_configs") else {
        return;
    };
    let Some(dst) = super::dest::child(ctx, config, oneof) else {
        return;
    };
    set(ctx, dst, "feature_name", &Value::String(name.clone()));
    match kind.as_str() {
        "ComboFeature" => {
            for column in &inputs {
                set(ctx, dst, "expression", &expression(column));
            }
        }
        "LookupFeature" => {
            if let Some(l) = &fg_lookup {
                set(
                    ctx,
                    dst,
                    "map",
                    &Value::String(l.map.clone().unwrap_or_default()),
                );
                set(
                    ctx,
                    dst,
                    "key",
                    &Value::String(l.key.clone().unwrap_or_default()),
                );
            } else if let Some(key) = inputs.get(1) {
                set(ctx, dst, "map", &expression(&first));
                set(ctx, dst, "key", &expression(key));
            } else {
                ctx.unsupported(
                    &f.field_path("input_names"),
                    "a LookupFeature needs two `input_names` (map, key)".to_string(),
                    "add the key column as the second input name",
                );
            }
        }
        _ => {
            let own = fg
                .and_then(|fg| fg.get(&name))
                .and_then(|e| e.expression.clone());
            let e = own.map_or_else(|| expression(&first), Value::String);
            set(ctx, dst, "expression", &e);
        }
    }
    copy_set(ctx, f, dst, &["embedding_dim"]);
    let name_set = f
        .peek("embedding_name")
        .is_some_and(|v| v.as_str() != Some(""));
    if name_set {
        copy(ctx, f, dst, &["embedding_name"]);
    } else {
        f.consume("embedding_name");
    }
    match oneof {
        "raw_feature" => {
            // One value per row: nothing to combine.
            f.consume("combiner");
            copy(ctx, f, dst, &["boundaries", "separator"]);
            copy_as(ctx, f, "raw_input_dim", dst, "value_dim");
        }
        "sequence_raw_feature" => raw_sequence(ctx, f, dst),
        "lookup_feature" => {
            copy(
                ctx,
                f,
                dst,
                &["boundaries", "vocab_list", "vocab_file", "separator"],
            );
            copy_set(ctx, f, dst, &["hash_bucket_size", "num_buckets"]);
        }
        "combo_feature" => {
            copy(ctx, f, dst, &["vocab_list", "vocab_file"]);
            copy_set(ctx, f, dst, &["hash_bucket_size"]);
        }
        _ => {
            copy(ctx, f, dst, &["vocab_list", "vocab_file"]);
            copy_set(ctx, f, dst, &["hash_bucket_size", "num_buckets"]);
        }
    }
    if oneof != "raw_feature" && oneof != "sequence_raw_feature" {
        copy_as(ctx, f, "combiner", dst, "pooling");
    }
    if kind == "TagFeature" {
        // Multi-valued: EasyRec splits on `separator` ('|' by default).
        let sep = f.str_or_default("separator");
        set(ctx, dst, "separator", &Value::String(sep));
        if f.value("kv_separator").is_some() {
            set(ctx, dst, "weighted", &Value::Bool(true));
        }
    } else if kind == "IdFeature" {
        copy(ctx, f, dst, &["separator"]);
    }
    if kind == "SequenceFeature" {
        // `max_seq_len` truncates the sequence, as TorchEasyRec's
        // `sequence_length` does; EasyRec's own `sequence_length` pads.
        let max = f.value("max_seq_len").and_then(|v| v.as_u32());
        let padded = f.value("sequence_length").and_then(|v| v.as_u32());
        let group = fg
            .and_then(|fg| fg.get(&name))
            .and_then(|e| e.sequence.clone());
        let from_fg = group.as_ref().map(|g| g.length).filter(|n| *n > 0);
        match max.or(from_fg).or(padded.filter(|n| *n > 1)) {
            Some(n) => set(ctx, dst, "sequence_length", &Value::U32(n)),
            None => {
                set(ctx, dst, "sequence_length", &Value::U32(SEQUENCE_LENGTH));
                ctx.approximated(
                    f.path(),
                    format!(
                        "feature `{name}`: EasyRec keeps whole sequences, TorchEasyRec \
                         truncates them to `sequence_length`; {SEQUENCE_LENGTH} is written"
                    ),
                    "no bound on the sequence here",
                    "set `max_seq_len` in the EasyRec config (or `sequence_length` in the \
                     output) to the longest sequence you feed",
                );
            }
        }
        let sep = match group {
            Some(g) => {
                f.consume("separator");
                g.delim
            }
            None => f.str_or_default("separator"),
        };
        set(ctx, dst, "sequence_delim", &Value::String(sep));
        // Several values in one step of the sequence.
        copy_as(ctx, f, "seq_multi_sep", dst, "separator");
        f.consume("sub_feature_type");
    }
}

/// Copies the written fields of `names` whose value is not 0: EasyRec's 0
/// means "not set" for sizes and dims (and is read either way).
fn copy_set(ctx: &mut Ctx, f: &Src, dst: &mut DynamicMessage, names: &[&str]) {
    for name in names {
        let zero = matches!(
            f.peek(name).as_deref(),
            Some(Value::U32(0) | Value::U64(0) | Value::I32(0) | Value::I64(0))
        );
        if zero {
            f.consume(name);
        } else {
            copy_as(ctx, f, name, dst, name);
        }
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U32(n) => Some(u64::from(*n)),
        Value::U64(n) => Some(*n),
        _ => None,
    }
}

/// A raw sequence's buckets, as EasyRec's feature column builds them:
/// `boundaries` when written; else, with `num_buckets` > 1 and
/// `max_val` > `min_val`, values taken as already scaled to [0, 1] and cut
/// into `num_buckets` equal buckets; else no buckets (`num_buckets`,
/// `min_val` and `max_val` then change nothing).
fn raw_sequence(ctx: &mut Ctx, f: &Src, dst: &mut DynamicMessage) {
    copy_as(ctx, f, "raw_input_dim", dst, "value_dim");
    if f.is_set("boundaries") {
        copy(ctx, f, dst, &["boundaries"]);
        return;
    }
    let buckets = f.peek("num_buckets").and_then(|v| as_u64(&v)).unwrap_or(0);
    let float = |name: &str| f.peek(name).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let (min, max) = (float("min_val"), float("max_val"));
    for name in ["num_buckets", "min_val", "max_val"] {
        f.consume(name);
    }
    if buckets > 1 && max > min {
        let n = buckets as f64;
        let bounds = (0..buckets)
            .map(|i| Value::F32((i as f64 / n) as f32))
            .collect();
        set(ctx, dst, "boundaries", &Value::List(bounds));
    } else if f
        .peek("embedding_dim")
        .and_then(|v| v.as_u32())
        .is_some_and(|d| d > 0)
    {
        // TorchEasyRec embeds raw values only through buckets.
        dst.clear_field_by_name("embedding_dim");
        ctx.unsupported(
            &f.field_path("embedding_dim"),
            "a raw sequence feature without buckets but with `embedding_dim` has no \
             TorchEasyRec counterpart (EasyRec projects each value to the embedding)"
                .to_string(),
            "give the feature `boundaries` (TorchEasyRec then embeds the buckets) or \
             feed the values as they are",
        );
    }
}

//! Features, as TorchEasyRec's converter maps them without an `fg.json`:
//! each EasyRec feature reads the input column of its first `input_names`
//! (`expression: "user:<column>"`), with its embedding and bucket settings.

use prost_reflect::{DynamicMessage, Value};

use super::dest::{copy, copy_as, push_child, set};
use super::source::Src;
use super::Ctx;

/// `feature_configs` (EasyRec's old layout) or `feature_config.features`.
pub(crate) fn features(ctx: &mut Ctx, src: &Src, out: &mut DynamicMessage) {
    let mut list = src.children("feature_configs");
    if let Some(v2) = src.child("feature_config") {
        list.extend(v2.children("features"));
    }
    for f in &list {
        feature(ctx, f, out);
    }
}

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
    let expression = |column: &str| Value::String(format!("user:{column}"));
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
                format!("feature `{name}`: `{other}` has no TorchEasyRec counterpart in plec convert"),
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
    set(ctx, dst, "feature_name", &Value::String(name));
    match kind.as_str() {
        "ComboFeature" => {
            for column in &inputs {
                set(ctx, dst, "expression", &expression(column));
            }
        }
        "LookupFeature" => {
            if let Some(key) = inputs.get(1) {
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
        _ => set(ctx, dst, "expression", &expression(&first)),
    }
    copy_set(ctx, f, dst, &["embedding_dim"]);
    let name_set = f.peek("embedding_name").is_some_and(|v| v.as_str() != Some(""));
    if name_set {
        copy(ctx, f, dst, &["embedding_name"]);
    } else {
        f.consume("embedding_name");
    }
    match oneof {
        "raw_feature" | "sequence_raw_feature" => {
            copy(ctx, f, dst, &["boundaries"]);
            copy_as(ctx, f, "raw_input_dim", dst, "value_dim");
        }
        "lookup_feature" => {
            copy(ctx, f, dst, &["boundaries", "vocab_list", "vocab_file"]);
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
        copy(ctx, f, dst, &["sequence_length"]);
        let sep = f.str_or_default("separator");
        set(ctx, dst, "sequence_delim", &Value::String(sep));
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

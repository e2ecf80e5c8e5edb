//! Writing the TorchEasyRec side: fields of a `tzrec.protos` dynamic
//! message set by name, values converted to the field's type (EasyRec's
//! `uint32 hash_bucket_size` is TorchEasyRec's `uint64`, its `double`
//! boundaries are `float`). A name or value the schema does not take is a
//! bug in the mapping, reported as `plec::internal`, never a panic.

use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use super::source::Src;
use super::Ctx;

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U32(n) => Some(u64::from(*n)),
        Value::U64(n) => Some(*n),
        Value::I32(n) => u64::try_from(*n).ok(),
        Value::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::U32(n) => Some(i64::from(*n)),
        Value::U64(n) => i64::try_from(*n).ok(),
        Value::I32(n) => Some(i64::from(*n)),
        Value::I64(n) => Some(*n),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(f) => Some(f64::from(*f)),
        Value::F64(f) => Some(*f),
        v => as_i64(v).map(|n| n as f64),
    }
}

/// `v` as a value of `kind`, when it fits.
fn coerce(kind: &Kind, v: &Value) -> Option<Value> {
    Some(match kind {
        Kind::String => Value::String(v.as_str()?.to_string()),
        Kind::Bool => Value::Bool(v.as_bool()?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(u32::try_from(as_u64(v)?).ok()?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(as_u64(v)?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(i32::try_from(as_i64(v)?).ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(as_i64(v)?),
        Kind::Float => match v {
            Value::F32(f) => Value::F32(*f),
            v => Value::F32(as_f64(v)? as f32),
        },
        Kind::Double => Value::F64(as_f64(v)?),
        _ => return None,
    })
}

/// Sets a singular scalar field (or appends the values of a list to a
/// repeated one).
pub(crate) fn set(ctx: &mut Ctx, dst: &mut DynamicMessage, name: &str, v: &Value) {
    let desc = dst.descriptor();
    let Some(fd) = desc.get_field_by_name(name) else {
        ctx.internal(format!("`{}` has no field `{name}`", desc.full_name()));
        return;
    };
    let kind = fd.kind();
    match v {
        Value::List(items) if fd.is_list() => {
            let converted: Option<Vec<Value>> = items.iter().map(|i| coerce(&kind, i)).collect();
            match (converted, dst.get_field_mut(&fd)) {
                (Some(c), Value::List(list)) => list.extend(c),
                _ => ctx.internal(format!("cannot write a list to `{name}`")),
            }
        }
        v if fd.is_list() => match (coerce(&kind, v), dst.get_field_mut(&fd)) {
            (Some(c), Value::List(list)) => list.push(c),
            _ => ctx.internal(format!("cannot append {v:?} to `{name}`")),
        },
        v => match coerce(&kind, v) {
            Some(c) => dst.set_field(&fd, c),
            None => ctx.internal(format!("cannot write {v:?} to `{name}`")),
        },
    }
}

/// Sets an enum field by value name.
pub(crate) fn set_enum(ctx: &mut Ctx, dst: &mut DynamicMessage, name: &str, value: &str) {
    let desc = dst.descriptor();
    let Some(fd) = desc.get_field_by_name(name) else {
        ctx.internal(format!("`{}` has no field `{name}`", desc.full_name()));
        return;
    };
    let number = match fd.kind() {
        Kind::Enum(e) => e.get_value_by_name(value).map(|v| v.number()),
        _ => None,
    };
    match number {
        Some(n) => dst.set_field(&fd, Value::EnumNumber(n)),
        None => ctx.internal(format!("`{name}` takes no value `{value}`")),
    }
}

/// The message field `name`, set (empty) if it was not.
pub(crate) fn child<'m>(
    ctx: &mut Ctx,
    dst: &'m mut DynamicMessage,
    name: &str,
) -> Option<&'m mut DynamicMessage> {
    let desc = dst.descriptor();
    let fd = desc.get_field_by_name(name).filter(|f| !f.is_list());
    let Some(fd) = fd else {
        ctx.internal(format!(
            "`{}` has no message field `{name}`",
            desc.full_name()
        ));
        return None;
    };
    match dst.get_field_mut(&fd) {
        Value::Message(m) => Some(m),
        _ => {
            ctx.internal(format!("`{name}` is not a message field"));
            None
        }
    }
}

/// A new element of the repeated message field `name`.
pub(crate) fn push_child<'m>(
    ctx: &mut Ctx,
    dst: &'m mut DynamicMessage,
    name: &str,
) -> Option<&'m mut DynamicMessage> {
    let desc = dst.descriptor();
    let fd = desc.get_field_by_name(name).filter(|f| f.is_list());
    let Some(fd) = fd else {
        ctx.internal(format!(
            "`{}` has no repeated field `{name}`",
            desc.full_name()
        ));
        return None;
    };
    let Kind::Message(m) = fd.kind() else {
        ctx.internal(format!("`{name}` does not hold messages"));
        return None;
    };
    match dst.get_field_mut(&fd) {
        Value::List(list) => {
            list.push(Value::Message(DynamicMessage::new(m)));
            match list.last_mut() {
                Some(Value::Message(m)) => Some(m),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Copies each written field of `names` from `src` to the field of the
/// same name of `dst`.
pub(crate) fn copy(ctx: &mut Ctx, src: &Src, dst: &mut DynamicMessage, names: &[&str]) {
    for name in names {
        copy_as(ctx, src, name, dst, name);
    }
}

/// Copies `from` of `src`, when written, to `to` of `dst`.
pub(crate) fn copy_as(ctx: &mut Ctx, src: &Src, from: &str, dst: &mut DynamicMessage, to: &str) {
    if let Some(v) = src.value(from) {
        set(ctx, dst, to, &v);
    }
}

//! Scalar literal to protobuf value, by field kind, with the same
//! acceptance rules as protobuf's text-format parser.

use prost_reflect::{EnumDescriptor, Kind, Syntax, Value};

use crate::syntax::ast::ScalarKind;

/// Why a literal does not fit a field; the binder turns it into a
/// diagnostic with the field's name and spans.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ConvertError {
    /// The literal is of another kind than the field.
    WrongKind {
        expected: String,
    },
    FloatForInteger,
    Negative {
        type_name: &'static str,
    },
    OutOfRange {
        type_name: &'static str,
        min: String,
        max: String,
    },
    UnknownEnum {
        enum_name: String,
        valid: Vec<String>,
    },
    UnknownEnumNumber {
        enum_name: String,
        valid: Vec<String>,
    },
    InvalidUtf8,
    InvalidBool,
}

/// What a field of this kind expects, in user words.
pub(super) fn expected_for(kind: &Kind) -> String {
    match kind {
        Kind::Double | Kind::Float => "a number".into(),
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64 => "an integer".into(),
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => {
            "a non-negative integer".into()
        }
        Kind::Bool => "`true` or `false`".into(),
        Kind::String | Kind::Bytes => "a quoted string".into(),
        Kind::Enum(e) => format!("a value of enum `{}`", e.name()),
        Kind::Message(m) => format!("a `{}` block", m.name()),
    }
}

fn float_ident(text: &str) -> Option<f64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" | "inff" | "infinity" | "infinityf" => f64::INFINITY,
        "nan" | "nanf" => f64::NAN,
        _ => return None,
    };
    Some(if neg { -v } else { v })
}

fn signed(
    kind: &ScalarKind,
    min: i128,
    max: i128,
    type_name: &'static str,
) -> Result<i128, ConvertError> {
    let v = match kind {
        ScalarKind::Integer {
            negative,
            magnitude,
        } => {
            let m = *magnitude as i128;
            if *negative {
                -m
            } else {
                m
            }
        }
        ScalarKind::BigInteger { .. } => {
            return Err(ConvertError::OutOfRange {
                type_name,
                min: min.to_string(),
                max: max.to_string(),
            })
        }
        ScalarKind::Float(_) => return Err(ConvertError::FloatForInteger),
        _ => {
            return Err(ConvertError::WrongKind {
                expected: "an integer".into(),
            })
        }
    };
    if v < min || v > max {
        if v < 0 && min == 0 {
            return Err(ConvertError::Negative { type_name });
        }
        return Err(ConvertError::OutOfRange {
            type_name,
            min: min.to_string(),
            max: max.to_string(),
        });
    }
    Ok(v)
}

fn enum_names(e: &EnumDescriptor) -> Vec<String> {
    e.values().map(|v| v.name().to_string()).collect()
}

/// Converts a literal for a field of `kind`. `text` is the literal's source
/// text (booleans accept exactly `0` and `1` as written).
pub(super) fn convert(kind: &Kind, scalar: &ScalarKind, text: &str) -> Result<Value, ConvertError> {
    let wrong = || ConvertError::WrongKind {
        expected: expected_for(kind),
    };
    Ok(match kind {
        Kind::Double | Kind::Float => {
            let v = match scalar {
                ScalarKind::Float(v) => *v,
                // protobuf reads float fields with a decimal parser, so a
                // hex integer is not a float there.
                ScalarKind::Integer { .. }
                    if text.trim_start_matches(['-', '+']).starts_with(['0'])
                        && text.contains(['x', 'X']) =>
                {
                    return Err(ConvertError::WrongKind {
                        expected: "a decimal number".into(),
                    })
                }
                ScalarKind::Integer {
                    negative,
                    magnitude,
                } => {
                    let m = *magnitude as f64;
                    if *negative {
                        -m
                    } else {
                        m
                    }
                }
                ScalarKind::BigInteger { text, .. } => text.parse::<f64>().map_err(|_| wrong())?,
                ScalarKind::Identifier(id) => float_ident(id).ok_or_else(wrong)?,
                _ => return Err(wrong()),
            };
            if matches!(kind, Kind::Float) {
                Value::F32(v as f32)
            } else {
                Value::F64(v)
            }
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(signed(scalar, i32::MIN as i128, i32::MAX as i128, "int32")? as i32)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(signed(scalar, i64::MIN as i128, i64::MAX as i128, "int64")? as i64)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(signed(scalar, 0, u32::MAX as i128, "uint32")? as u32)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(signed(scalar, 0, u64::MAX as i128, "uint64")? as u64)
        }
        Kind::Bool => match scalar {
            ScalarKind::Identifier(id) => match id.as_str() {
                "true" | "t" | "True" => Value::Bool(true),
                "false" | "f" | "False" => Value::Bool(false),
                _ => return Err(ConvertError::InvalidBool),
            },
            ScalarKind::Integer { .. } => match text {
                "1" => Value::Bool(true),
                "0" => Value::Bool(false),
                _ => return Err(ConvertError::InvalidBool),
            },
            _ => return Err(ConvertError::InvalidBool),
        },
        Kind::String => match scalar {
            ScalarKind::String(bytes) => Value::String(
                String::from_utf8(bytes.clone()).map_err(|_| ConvertError::InvalidUtf8)?,
            ),
            _ => return Err(wrong()),
        },
        Kind::Bytes => match scalar {
            ScalarKind::String(bytes) => Value::Bytes(bytes.clone().into()),
            _ => return Err(wrong()),
        },
        Kind::Enum(e) => match scalar {
            ScalarKind::Identifier(id) => match e.get_value_by_name(id) {
                Some(v) => Value::EnumNumber(v.number()),
                None => {
                    return Err(ConvertError::UnknownEnum {
                        enum_name: e.name().to_string(),
                        valid: enum_names(e),
                    })
                }
            },
            ScalarKind::Integer { .. } => {
                let n = signed(scalar, i32::MIN as i128, i32::MAX as i128, "int32")? as i32;
                let closed = e.parent_file().syntax() == Syntax::Proto2;
                if closed && e.get_value(n).is_none() {
                    return Err(ConvertError::UnknownEnumNumber {
                        enum_name: e.name().to_string(),
                        valid: enum_names(e),
                    });
                }
                Value::EnumNumber(n)
            }
            _ => return Err(wrong()),
        },
        Kind::Message(_) => return Err(wrong()),
    })
}

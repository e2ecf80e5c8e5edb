//! A raw feature's `normalizer`: comma-separated `key=value` settings,
//! `method` first in practice (`method=log10,threshold=1e-10,default=-10`,
//! `method=zscore,mean=0,standard_deviation=10`, `method=minmax,min=0,max=1`,
//! `method=expression,expr=sign(x)`), as TorchEasyRec's feature generator
//! reads them.

use std::collections::HashMap;

use super::Problem;
use crate::diag::closest_names;

/// A parsed normalizer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Normalizer {
    /// `x > threshold ? log10(x) : default`.
    Log10 { threshold: f64, default: f64 },
    /// `(x - mean) / standard_deviation`.
    Zscore { mean: f64, standard_deviation: f64 },
    /// `(x - min) / (max - min)`.
    Minmax { min: f64, max: f64 },
    /// An expression of `x`, evaluated by the feature generator.
    Expression { expr: String },
}

/// The methods, for messages.
const METHODS: [&str; 4] = ["log10", "zscore", "minmax", "expression"];

/// Keys each method accepts.
fn keys_of(method: &str) -> Option<&'static [&'static str]> {
    match method {
        "log10" => Some(&["threshold", "default"]),
        "zscore" => Some(&["mean", "standard_deviation"]),
        "minmax" => Some(&["min", "max"]),
        "expression" => Some(&["expr"]),
        _ => None,
    }
}

/// The `key=value` pairs; `expr`'s value runs to the end of the string
/// (an expression may hold commas: `expr=min(x,1)`).
fn pairs(text: &str) -> Result<Vec<(&str, &str)>, Problem> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut rest = text;
    while !rest.trim().is_empty() {
        let (part, next) = match rest.trim_start().starts_with("expr=") {
            true => (rest, ""),
            false => rest.split_once(',').unwrap_or((rest, "")),
        };
        rest = next;
        let part = part.trim();
        let Some((k, v)) = part.split_once('=') else {
            let help = if keys_of(part).is_some() {
                format!("write `method={part}`")
            } else {
                "write `key=value` pairs separated by commas, starting with `method=log10`, `method=zscore` or `method=minmax`".to_string()
            };
            return Err(Problem::new(
                format!("normalizer setting \"{part}\" is not `key=value`"),
                help,
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if out.iter().any(|(pk, _)| *pk == k) {
            return Err(Problem::new(
                format!("normalizer sets \"{k}\" twice"),
                format!("keep one `{k}=` setting"),
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Parses a normalizer string.
pub(crate) fn parse(text: &str) -> Result<Normalizer, Problem> {
    let pairs = pairs(text)?;
    let Some(&(_, method)) = pairs.iter().find(|(k, _)| *k == "method") else {
        return Err(Problem::new(
            "normalizer has no method",
            "start with `method=log10`, `method=zscore`, `method=minmax` or `method=expression`",
        ));
    };
    let Some(keys) = keys_of(method) else {
        let close = closest_names(method, METHODS, 2);
        let help = match close.first() {
            Some(c) => format!("did you mean `method={c}`?"),
            None => "the methods are `log10`, `zscore`, `minmax` and `expression`".to_string(),
        };
        return Err(Problem::new(
            format!("unknown normalizer method \"{method}\""),
            help,
        ));
    };
    let mut nums: HashMap<&str, f64> = HashMap::new();
    let mut expr = None;
    for &(k, v) in &pairs {
        if k == "method" {
            continue;
        }
        if !keys.contains(&k) {
            let known = keys
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Problem::new(
                format!("normalizer method {method} has no setting \"{k}\""),
                format!("{method} accepts {known}"),
            ));
        }
        if k == "expr" {
            if v.is_empty() {
                return Err(Problem::new(
                    "normalizer expression is empty",
                    "write e.g. `expr=sign(x)`",
                ));
            }
            expr = Some(v.to_string());
            continue;
        }
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() => {
                nums.insert(k, x);
            }
            _ => {
                return Err(Problem::new(
                    format!("normalizer setting \"{k}\" is not a number: \"{v}\""),
                    format!("write a number, e.g. `{k}=0.0`"),
                ))
            }
        }
    }
    let get = |k: &str| nums.get(k).copied();
    match method {
        "log10" => Ok(Normalizer::Log10 {
            threshold: get("threshold").unwrap_or(1e-10),
            default: get("default").unwrap_or(-10.0),
        }),
        "zscore" => {
            let standard_deviation = get("standard_deviation").unwrap_or(1.0);
            if standard_deviation == 0.0 {
                return Err(Problem::new(
                    "normalizer standard deviation is 0",
                    "zscore divides by the standard deviation; give the column's real spread",
                ));
            }
            Ok(Normalizer::Zscore {
                mean: get("mean").unwrap_or(0.0),
                standard_deviation,
            })
        }
        "minmax" => match (get("min"), get("max")) {
            (Some(min), Some(max)) if min < max => Ok(Normalizer::Minmax { min, max }),
            (Some(lo), Some(hi)) => Err(Problem::new(
                format!("normalizer min {lo} is not below max {hi}"),
                "minmax computes (x - min) / (max - min); min must be below max",
            )),
            _ => Err(Problem::new(
                "minmax normalizer needs both min and max",
                "write e.g. `method=minmax,min=0,max=100`",
            )),
        },
        _ => match expr {
            Some(expr) => Ok(Normalizer::Expression { expr }),
            None => Err(Problem::new(
                "expression normalizer needs expr",
                "write e.g. `method=expression,expr=sign(x)`",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(
            parse("method=log10,threshold=1e-10,default=-10"),
            Ok(Normalizer::Log10 {
                threshold: 1e-10,
                default: -10.0
            })
        );
        assert_eq!(
            parse("method=log10"),
            Ok(Normalizer::Log10 {
                threshold: 1e-10,
                default: -10.0
            })
        );
        assert_eq!(
            parse(" method=zscore , mean=2.5, standard_deviation=4"),
            Ok(Normalizer::Zscore {
                mean: 2.5,
                standard_deviation: 4.0
            })
        );
        assert_eq!(
            parse("method=minmax,min=-1,max=3"),
            Ok(Normalizer::Minmax {
                min: -1.0,
                max: 3.0
            })
        );
        assert_eq!(
            parse("method=expression,expr=min(x,1)"),
            Ok(Normalizer::Expression {
                expr: "min(x,1)".into()
            })
        );
    }

    #[test]
    fn problems() {
        let msg = |s: &str| parse(s).map(|_| ()).unwrap_err().message;
        assert_eq!(
            msg("log10"),
            "normalizer setting \"log10\" is not `key=value`"
        );
        assert_eq!(msg("method=cube"), "unknown normalizer method \"cube\"");
        assert_eq!(
            parse("method=log").unwrap_err().help,
            "did you mean `method=log10`?"
        );
        assert_eq!(
            msg("method=minmax,min=3,max=1"),
            "normalizer min 3 is not below max 1"
        );
        assert_eq!(
            msg("method=minmax,min=3"),
            "minmax normalizer needs both min and max"
        );
        assert_eq!(
            msg("method=zscore,mean=a"),
            "normalizer setting \"mean\" is not a number: \"a\""
        );
        assert_eq!(
            msg("method=log10,scale=2"),
            "normalizer method log10 has no setting \"scale\""
        );
        assert_eq!(
            msg("method=zscore,standard_deviation=0"),
            "normalizer standard deviation is 0"
        );
        assert_eq!(msg("threshold=1"), "normalizer has no method");
        assert_eq!(
            msg("method=log10,method=zscore"),
            "normalizer sets \"method\" twice"
        );
        assert_eq!(msg("method=expression"), "expression normalizer needs expr");
    }
}

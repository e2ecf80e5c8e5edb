//! An MLP's `activation`: a `torch.nn` class (`nn.ReLU`, `torch.nn.GELU`),
//! optionally called with arguments (`nn.LeakyReLU(negative_slope=0.2)`,
//! `nn.ELU(0.5)`), `Dice`, or the dotted path of a custom class that
//! TorchEasyRec imports at run time. Class names are case-sensitive, as
//! Python's are.

use super::Problem;
use crate::diag::{closest_names, one_of};

/// Activation classes of `torch.nn`.
pub(crate) const TORCH_ACTIVATIONS: &[&str] = &[
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "PReLU",
    "RReLU",
    "ELU",
    "SELU",
    "CELU",
    "GELU",
    "SiLU",
    "Mish",
    "Sigmoid",
    "Hardsigmoid",
    "LogSigmoid",
    "Tanh",
    "Hardtanh",
    "Tanhshrink",
    "Hardswish",
    "Hardshrink",
    "Softshrink",
    "Softplus",
    "Softsign",
    "Softmax",
    "Softmin",
    "LogSoftmax",
    "GLU",
    "Threshold",
    "Identity",
];

/// A parsed activation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Activation {
    /// An empty string: no activation.
    None,
    /// A `torch.nn` class (one of `TORCH_ACTIVATIONS`) and the values it
    /// is called with, positional or by keyword, in order, as written
    /// (`0.2`, `'tanh'`, `True`).
    Torch {
        class: &'static str,
        args: Vec<String>,
    },
    /// TorchEasyRec's own Dice activation.
    Dice,
    /// A class outside `torch.nn`, by its dotted path: TorchEasyRec imports
    /// it at run time, and plec cannot check it.
    Custom(String),
}

impl Activation {
    /// The first argument as a number, if it is one (a leaky relu's
    /// slope, an elu's alpha).
    pub(crate) fn first_number(&self) -> Option<f64> {
        match self {
            Activation::Torch { args, .. } => args.first().and_then(|a| a.parse().ok()),
            _ => None,
        }
    }

    /// Arguments other than booleans (`inplace=True` never changes what is
    /// computed).
    pub(crate) fn significant_args(&self) -> usize {
        match self {
            Activation::Torch { args, .. } => args
                .iter()
                .filter(|a| !matches!(a.as_str(), "True" | "False"))
                .count(),
            _ => 0,
        }
    }
}

/// The values inside `(...)`, keyword names dropped.
fn args(inside: &str) -> Vec<String> {
    inside
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.rsplit_once('=').map_or(p, |(_, v)| v).trim().to_string())
        .collect()
}

/// The known names, for suggestions.
fn known_names() -> Vec<String> {
    TORCH_ACTIVATIONS
        .iter()
        .map(|a| format!("nn.{a}"))
        .chain(std::iter::once("Dice".to_string()))
        .collect()
}

/// Parses an activation string.
pub(crate) fn parse(text: &str) -> Result<Activation, Problem> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Activation::None);
    }
    let (base, inside) = match t.split_once('(') {
        Some((base, rest)) => {
            let Some(inside) = rest.strip_suffix(')') else {
                return Err(unknown(base.trim(), text));
            };
            (base.trim(), inside)
        }
        None => (t, ""),
    };
    if base == "Dice" {
        return Ok(Activation::Dice);
    }
    let class = base
        .strip_prefix("torch.nn.")
        .or_else(|| base.strip_prefix("nn."));
    if let Some(c) = class {
        if let Some(&known) = TORCH_ACTIVATIONS.iter().find(|k| **k == c) {
            return Ok(Activation::Torch {
                class: known,
                args: args(inside),
            });
        }
    } else if base.contains('.') {
        return Ok(Activation::Custom(base.to_string()));
    }
    Err(unknown(base, text))
}

/// The problem of an unknown class (`base`, written as `text`), with the
/// closest known names.
fn unknown(base: &str, text: &str) -> Problem {
    let known = known_names();
    let bare = base.rsplit('.').next().unwrap_or(base);
    let mut close = closest_names(base, known.iter().map(String::as_str), 3);
    if close.is_empty() {
        // `Relu`, `relu`, `torch.relu`: match on the class name alone.
        close = known
            .iter()
            .filter(|k| {
                k.rsplit('.')
                    .next()
                    .is_some_and(|c| c.eq_ignore_ascii_case(bare))
            })
            .cloned()
            .collect();
    }
    let help = if close.is_empty() {
        "use a torch.nn activation such as `nn.ReLU`, `nn.GELU` or `nn.Sigmoid` (names are case-sensitive), or `Dice`".to_string()
    } else {
        format!(
            "did you mean {}? activation names are case-sensitive torch.nn classes",
            one_of(&close)
        )
    };
    Problem::new(format!("unknown activation \"{text}\""), help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse(""), Ok(Activation::None));
        assert_eq!(
            parse("nn.ReLU"),
            Ok(Activation::Torch {
                class: "ReLU",
                args: vec![]
            })
        );
        assert_eq!(
            parse("torch.nn.LeakyReLU(negative_slope=0.2)"),
            Ok(Activation::Torch {
                class: "LeakyReLU",
                args: vec!["0.2".into()]
            })
        );
        let elu = parse("nn.ELU(0.5, inplace=True)").unwrap();
        assert_eq!((elu.first_number(), elu.significant_args()), (Some(0.5), 1));
        let gelu = parse("nn.GELU(approximate='tanh')").unwrap();
        assert_eq!((gelu.first_number(), gelu.significant_args()), (None, 1));
        assert_eq!(parse("Dice"), Ok(Activation::Dice));
        assert_eq!(
            parse("my_pkg.acts.Swish"),
            Ok(Activation::Custom("my_pkg.acts.Swish".into()))
        );
    }

    #[test]
    fn problems() {
        let p = parse("nn.Relu").unwrap_err();
        assert_eq!(p.message, "unknown activation \"nn.Relu\"");
        assert!(p.help.contains("`nn.ReLU`"), "{}", p.help);
        assert_eq!(
            parse("relu").unwrap_err().message,
            "unknown activation \"relu\""
        );
        assert_eq!(
            parse("nn.LeakyReLU(0.2").unwrap_err().message,
            "unknown activation \"nn.LeakyReLU(0.2\""
        );
    }
}

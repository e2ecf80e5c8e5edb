//! Parsers of the small languages inside config strings: a raw feature's
//! `normalizer` (`method=log10,threshold=1e-10`), an MLP's `activation`
//! (`nn.LeakyReLU(negative_slope=0.2)`) and a feature's `expression`
//! (`user:age_level`). Each returns a typed value or a
//! typed problem: lint reports the problem where the string is written,
//! lowering uses the value. One parser per language, so the two stages
//! cannot disagree about what a string means.

pub(crate) mod activation;
pub(crate) mod expression;
pub(crate) mod normalizer;

/// Why a string of one of these languages is malformed, in the user's
/// words: what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub message: String,
    pub help: String,
}

impl Problem {
    fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            help: help.into(),
        }
    }
}

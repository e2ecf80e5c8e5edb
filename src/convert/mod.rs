//! `plec convert`: an EasyRec (TensorFlow) config to a TorchEasyRec one, in
//! Rust, without Python or a download. The file is checked under EasyRec's
//! schema first; its bound message is then read field by field (every read
//! recorded) and written as TorchEasyRec's `tzrec.protos.EasyRecConfig`,
//! following the mapping of TorchEasyRec's own converter
//! (`tzrec/tools/convert_easyrec_config_to_tzrec_config.py`, with or without
//! an `fg.json`). Every written field the mapping did not read is reported at
//! its line (`plec::convert-lossy`), and every part it cannot map yet
//! (`plec::convert-unsupported`), so nothing is lost silently.
//!
//! Covered: the input paths; one or two optimizers (Adam, Adagrad,
//! momentum) with a constant or exponentially decaying rate; batch size,
//! labels, dataset kind, CSV columns, sample weights; Id, Tag, Raw, Combo,
//! Lookup and Sequence features, with fg.json's expressions and sequence
//! groups when given; feature groups and their DIN sequence groups; PLE,
//! MMoE, DBMTL and SimpleMultiTask with their towers, MLPs, losses and
//! metrics; the input's comments (`comments`). Not covered (reported):
//! other models (ESMM, backbones, single-task models), regularizations,
//! the other optimizers, losses and schedules.

mod comments;
mod dest;
mod dropped;
mod features;
mod fg;
mod model;
mod print;
mod source;
mod train;

use std::ops::Range;

use prost_reflect::DynamicMessage;

use crate::diag::{self, Diagnostic};
use crate::pipeline::check_source;
use crate::schema::{Schema, SpanMap};

pub use fg::FgJson;
use source::{Src, Used};

/// Code of a part plec convert cannot map yet.
pub(crate) const UNSUPPORTED: &str = "plec::convert-unsupported";

/// The result of converting one file.
#[derive(Debug)]
pub struct Converted {
    /// The TorchEasyRec config, unless the input has schema or syntax
    /// errors (then only `diagnostics` tell why).
    pub text: Option<String>,
    /// EasyRec's own findings on the input, then the conversion's: fields
    /// dropped and parts not mapped, at their lines in the input.
    pub diagnostics: Vec<Diagnostic>,
}

impl Converted {
    /// Whether anything was lost in a way that can change the model.
    pub fn is_lossy(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// What the mapping reports as it goes.
pub(crate) struct Ctx<'a> {
    spans: &'a SpanMap,
    /// EasyRec's fg.json, when given: the features' expressions.
    fg: Option<&'a FgJson>,
    diags: Vec<Diagnostic>,
    /// Where output blocks came from, for the comments.
    origins: comments::Origins,
    /// Paths already reported as not converted: what lies in them is not
    /// reported again as dropped.
    reported: Vec<String>,
}

impl Ctx<'_> {
    fn span(&self, path: &str) -> Option<Range<usize>> {
        self.spans
            .name(path)
            .or_else(|| self.spans.nearest_ancestor(path).map(|s| s.name.clone()))
    }

    /// A part of the input (at `path`) that plec convert does not map.
    pub(crate) fn unsupported(&mut self, path: &str, message: String, help: &str) {
        let d = Diagnostic::error(UNSUPPORTED, message).with_help(format!(
            "{help}; or pass --allow-lossy to write the output without it"
        ));
        let d = match self.span(path) {
            Some(s) => d.with_primary(s, "not converted"),
            None => d,
        };
        self.diags.push(d);
        self.reported.push(path.to_string());
    }

    /// A part of the input converted only approximately (`label` says
    /// how), which can change the model: an error, as a dropped part is,
    /// but what lies inside it is still reported on its own.
    pub(crate) fn approximated(&mut self, path: &str, message: String, label: &str, help: &str) {
        let d = Diagnostic::error(UNSUPPORTED, message).with_help(format!(
            "{help}; or pass --allow-lossy to write the output as it is"
        ));
        let d = match self.span(path) {
            Some(s) => d.with_primary(s, label.to_string()),
            None => d,
        };
        self.diags.push(d);
    }

    /// A part of the input left out on purpose because leaving it out
    /// cannot change the model (a feature no group uses).
    pub(crate) fn left_out(&mut self, path: &str, message: String, help: &str) {
        let d = Diagnostic::warning(dropped::CODE, message).with_help(help.to_string());
        let d = match self.span(path) {
            Some(s) => d.with_primary(s, "not converted"),
            None => d,
        };
        self.diags.push(d);
        self.reported.push(path.to_string());
    }

    /// A bug in the mapping (a field the TorchEasyRec schema lacks).
    pub(crate) fn internal(&mut self, message: String) {
        self.diags.push(
            Diagnostic::error("plec::internal", format!("plec convert: {message}")).with_help(
                "this is a bug in plec convert, not in the config: please report it with \
                 the config",
            ),
        );
    }
}

/// Converts an EasyRec config text to a TorchEasyRec config text; each
/// feature reads the input column of its first input name.
pub fn easyrec_to_tzrec(source: &str) -> Converted {
    easyrec_to_tzrec_with(source, None)
}

/// Converts an EasyRec config text, taking the features' expressions from
/// EasyRec's fg.json when given.
pub fn easyrec_to_tzrec_with(source: &str, fg: Option<&FgJson>) -> Converted {
    let (easyrec, tzrec) = match (Schema::builtin_easyrec(), Schema::builtin()) {
        (Ok(e), Ok(t)) => (e, t),
        (Err(e), _) | (_, Err(e)) => {
            return Converted {
                text: None,
                diagnostics: vec![Diagnostic::error("plec::internal", e.to_string())],
            }
        }
    };
    let checked = check_source(&easyrec, source);
    let Some(bound) = checked.bound.as_ref().filter(|_| !checked.has_errors()) else {
        return Converted {
            text: None,
            diagnostics: checked.diagnostics,
        };
    };
    let used = Used::default();
    let src = Src::root(&bound.message, &used);
    let mut ctx = Ctx {
        spans: &bound.spans,
        fg,
        origins: comments::Origins::default(),
        diags: Vec::new(),
        reported: Vec::new(),
    };
    let mut out = DynamicMessage::new(tzrec.root.clone());
    train::paths(&mut ctx, &src, &mut out);
    train::train_config(&mut ctx, &src, &mut out);
    train::eval_config(&mut ctx, &mut out);
    train::data_config(&mut ctx, &src, &mut out);
    features::features(&mut ctx, &src, &mut out);
    model::model(&mut ctx, &src, &mut out);
    let comments = comments::Comments::collect(source, &bound.spans);
    let mut text = String::new();
    for line in &comments.header {
        text.push_str(line);
        text.push('\n');
    }
    if !comments.header.is_empty() {
        text.push('\n');
    }
    text.push_str(&print::print_with(&out, Some((&comments, &ctx.origins))));
    let mut diagnostics = checked.diagnostics.clone();
    diagnostics.extend(ctx.diags);
    diagnostics.extend(dropped::report(
        &bound.spans,
        &used.borrow(),
        &ctx.reported,
        source,
    ));
    diag::sort_by_position(&mut diagnostics);
    Converted {
        text: Some(text),
        diagnostics,
    }
}

/// (code, explanation) of the conversion's diagnostics, for `plec explain`.
pub const CODES: &[(&str, &str)] = &[
    (
        dropped::CODE,
        "`plec convert` found a field in the EasyRec config that it did not carry over \
to the TorchEasyRec config, because TorchEasyRec has no counterpart for it or plec \
convert does not map it yet. It is a warning when dropping it cannot change the model \
(checkpoint and logging intervals, evaluation settings, input pipeline tuning) and an \
error otherwise (a regularization, an initializer, a feature setting): then no output \
is written unless `--allow-lossy` is given. Set the field's TorchEasyRec equivalent by \
hand in the output, or accept the loss.",
    ),
    (
        UNSUPPORTED,
        "`plec convert` met a part of the EasyRec config that it cannot map yet: a model \
other than PLE, MMoE, DBMTL and SimpleMultiTask, a feature kind, loss, metric, \
optimizer, learning rate schedule or activation without a mapped TorchEasyRec \
counterpart. No output is written unless `--allow-lossy` is given (the part is then \
left out). Write that part of the TorchEasyRec config by hand, or convert the file \
with TorchEasyRec's own tools/convert_easyrec_config_to_tzrec_config.py.",
    ),
];

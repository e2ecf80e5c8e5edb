//! A feature's `expression`: which raw input a feature reads when a
//! feature generator runs (`fg_mode` other than FG_NONE), written
//! `side:input_name` (`user:age_level`, `item:cate_id`). The side is one of
//! `user`, `item`, `context`, `feature` (another feature's output) or
//! `const`.

use super::Problem;
use crate::diag::{closest_names, one_of};

/// Sides an expression may read from, as written.
pub(crate) const SIDES: &[&str] = &["user", "item", "context", "feature", "const"];

/// A well-formed expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expression<'a> {
    /// One of [`SIDES`].
    pub side: &'a str,
    /// The input column, trimmed.
    pub input: &'a str,
}

impl Expression<'_> {
    /// Whether the input is another feature's output rather than a column.
    pub(crate) fn reads_feature(&self) -> bool {
        self.side == "feature"
    }
}

/// Parses `side:input_name`, or says what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<Expression<'_>, Problem> {
    let Some((side, input)) = text.split_once(':') else {
        let guess = SIDES
            .iter()
            .take(3)
            .map(|s| format!("`{s}:{text}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Problem::new(
            format!("expression \"{text}\" has no side"),
            format!("write `side:input_name`, e.g. {guess}; the side is one of user, item, context, feature or const"),
        ));
    };
    if !SIDES.contains(&side) {
        let close = closest_names(side, SIDES.iter().copied(), 2);
        let help = if close.is_empty() {
            "the side is one of `user`, `item`, `context`, `feature` or `const`".to_string()
        } else {
            let written: Vec<String> = close.iter().map(|s| format!("{s}:{input}")).collect();
            format!("did you mean {}?", one_of(&written))
        };
        return Err(Problem::new(
            format!("unknown side \"{side}\" in expression \"{text}\""),
            help,
        ));
    }
    let input = input.trim();
    if input.is_empty() {
        return Err(Problem::new(
            format!("expression \"{text}\" names no input"),
            format!("write the input column after the colon, e.g. `{side}:my_column`"),
        ));
    }
    Ok(Expression { side, input })
}

/// The input column an expression names, read leniently: the text after
/// the first colon, or the whole text when there is none. Lowering uses
/// this where lint does not check the expression (FG_NONE, where
/// TorchEasyRec does not read it either) and [`parse`] where it does, so
/// both agree on every expression lint accepts.
pub(crate) fn input_column(text: &str) -> &str {
    match parse(text) {
        Ok(e) => e.input,
        Err(_) => text.split_once(':').map_or(text, |(_, name)| name).trim(),
    }
}

/// Whether a (leniently read) expression's side is `feature`.
pub(crate) fn reads_feature(text: &str) -> bool {
    match parse(text) {
        Ok(e) => e.reads_feature(),
        Err(_) => text
            .split_once(':')
            .is_some_and(|(s, _)| s.trim() == "feature"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_expressions_give_side_and_input() {
        let e = parse("user:age_level").unwrap();
        assert_eq!((e.side, e.input), ("user", "age_level"));
        assert_eq!(parse("item: cate_id ").unwrap().input, "cate_id");
        assert!(parse("feature:ctr").unwrap().reads_feature());
    }

    #[test]
    fn problems_say_what_is_wrong_and_suggest_a_fix() {
        let p = parse("age_level").unwrap_err();
        assert_eq!(p.message, "expression \"age_level\" has no side");
        assert!(p.help.contains("`user:age_level`"), "{}", p.help);
        let p = parse("usr:age_level").unwrap_err();
        assert_eq!(
            p.message,
            "unknown side \"usr\" in expression \"usr:age_level\""
        );
        assert_eq!(p.help, "did you mean `user:age_level`?");
        let p = parse("user: ").unwrap_err();
        assert_eq!(p.message, "expression \"user: \" names no input");
    }

    #[test]
    fn lenient_reading_agrees_with_parse_where_parse_accepts() {
        for text in ["user:a", "item: b", "feature:c", "const:1"] {
            assert_eq!(input_column(text), parse(text).unwrap().input);
        }
        assert_eq!(input_column("age_level"), "age_level");
        assert_eq!(input_column("usr:age_level"), "age_level");
        assert!(reads_feature("feature : x"));
        assert!(!reads_feature("user:x"));
    }
}

//! `plec diff A B`: which embedding tables and parameters of two plans (or
//! configs, compiled on the fly) differ in shape or exist in one only:
//! what a warm start (`plec run --init-from`) would not copy. Exit 0 when
//! every shape matches, 1 when some differ (as diff(1)).

use std::path::PathBuf;

use super::run::{load_plan, render_table};
use super::{Outcome, RunError};
use crate::plan::compare;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The first plan (or config).
    pub a: PathBuf,
    /// The second plan (or config).
    pub b: PathBuf,
}

pub(crate) fn execute(args: &DiffArgs) -> Result<Outcome, RunError> {
    let a = match load_plan(&args.a, 0)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let b = match load_plan(&args.b, 0)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let entries = compare::compare(&a, &b);
    let same = entries.iter().filter(|e| e.matches()).count();
    let differ = entries.len() - same;
    if differ == 0 {
        println!(
            "same shapes: all {} tables and parameters match by name and shape",
            entries.len()
        );
        return Ok(Outcome::Clean);
    }
    let name = |p: &PathBuf| p.display().to_string();
    print!(
        "{}",
        render_table(&compare::difference_rows(
            &entries,
            &name(&args.a),
            &name(&args.b)
        ))
    );
    println!("{differ} differ, {same} match (- : not in that plan)");
    Ok(Outcome::Problems)
}

//! `plec schema diff --proto-path DIR`: the drift guard between the
//! built-in TorchEasyRec schema and a `.proto` tree (exit 1 when they
//! differ, 0 when they agree).

use std::path::PathBuf;

use crate::schema::{diff, Schema};

use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    pub command: SchemaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// List every message, field, enum value and default that differs
    /// between the built-in schema and the .proto files under a directory.
    Diff(DiffArgs),
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Import root of the .proto tree to compare, e.g. a TorchEasyRec
    /// checkout (the directory that holds `tzrec/protos`).
    #[arg(long)]
    pub proto_path: PathBuf,
}

pub(crate) fn execute(args: &SchemaArgs) -> Result<Outcome, RunError> {
    match &args.command {
        SchemaCommand::Diff(d) => execute_diff(d),
    }
}

fn execute_diff(args: &DiffArgs) -> Result<Outcome, RunError> {
    let builtin = Schema::builtin().map_err(|e| RunError::new(e.to_string()))?;
    let tree = Schema::from_proto_path(&args.proto_path, None)
        .map_err(|e| RunError::new(e.to_string()))?;
    let found = diff::diff(&builtin.pool, &tree.pool);
    let mut out = String::new();
    for d in &found {
        out.push_str(&format!("{d}\n"));
    }
    let dir = args.proto_path.display();
    if found.is_empty() {
        out.push_str(&format!(
            "plec schema diff: the built-in schema and {dir} agree\n"
        ));
    } else {
        out.push_str(&format!(
            "plec schema diff: {} difference{} between the built-in schema and {dir}\n",
            found.len(),
            if found.len() == 1 { "" } else { "s" }
        ));
    }
    print!("{out}");
    Ok(if found.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Problems
    })
}

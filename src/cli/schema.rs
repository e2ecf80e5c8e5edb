//! `plec schema diff --proto-path DIR`: the drift guard between the
//! built-in TorchEasyRec schema and a `.proto` tree (exit 1 when they
//! differ, 0 when they agree).

use std::path::PathBuf;

use crate::schema::{diff, Dialect, Schema, SchemaError};

use super::check::SchemaName;

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
    /// checkout (the directory that holds `tzrec/protos`), or an EasyRec
    /// checkout (holding `easy_rec/python/protos`) with `--schema easyrec`.
    #[arg(long)]
    pub proto_path: PathBuf,
    /// The built-in schema to compare (default: TorchEasyRec's).
    #[arg(long, value_enum, default_value = "tzrec")]
    pub schema: SchemaName,
}

pub(crate) fn execute(args: &SchemaArgs) -> Result<Outcome, RunError> {
    match &args.command {
        SchemaCommand::Diff(d) => execute_diff(d),
    }
}

fn execute_diff(args: &DiffArgs) -> Result<Outcome, RunError> {
    let dialect = args.schema.dialect();
    let builtin = Schema::builtin_for(dialect).map_err(|e| RunError::new(e.to_string()))?;
    let tree = Schema::from_proto_path(&args.proto_path, Some(dialect.root())).map_err(|e| {
        let error = RunError::new(e.to_string());
        // A tree of the other dialect: say which flag compares it.
        let other = match dialect {
            Dialect::TorchEasyRec => ("easyrec", Dialect::EasyRec),
            Dialect::EasyRec => ("tzrec", Dialect::TorchEasyRec),
        };
        match e {
            SchemaError::UnknownRoot { .. }
                if Schema::from_proto_path(&args.proto_path, Some(other.1.root())).is_ok() =>
            {
                error.with_help(format!(
                    "{} holds {}'s protos: compare them with `--schema {}`",
                    args.proto_path.display(),
                    other.1.name(),
                    other.0
                ))
            }
            _ => error,
        }
    })?;
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

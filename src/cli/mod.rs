//! The command line: argument parsing and dispatch to the stages. The only
//! module that knows every stage, and the only place exit codes are chosen:
//! 0 clean, 1 problems found, 2 could not run, 130 interrupted (Ctrl-C).

pub(crate) mod bench;
pub(crate) mod check;
pub(crate) mod check_data;
pub(crate) mod compile;
pub(crate) mod convert;
pub(crate) mod demo;
pub(crate) mod diff;
pub(crate) mod eval;
pub(crate) mod explain;
pub(crate) mod export;
pub(crate) mod fmt;
pub(crate) mod gen_data;
pub(crate) mod graph;
pub(crate) mod import;
pub(crate) mod inspect;
pub(crate) mod lsp;
pub(crate) mod predict;
pub(crate) mod run;
pub(crate) mod schema;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// plec: check, compile and run TorchEasyRec multi-task model configs.
#[derive(Debug, Parser)]
#[command(name = "plec", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check config files: syntax, schema and semantic lint, every problem at once.
    Check(check::CheckArgs),
    /// Language server for config files over stdio (editors: diagnostics,
    /// hover, completion, definitions, symbols, quick fixes, formatting).
    Lsp(lsp::LspArgs),
    /// Rewrite config files in the canonical layout (`--check`: diff only).
    Fmt(fmt::FmtArgs),
    /// Compare the built-in schema with a .proto tree (`plec schema diff`).
    Schema(schema::SchemaArgs),
    /// Explain a diagnostic code: what it means, an example, how to fix it.
    Explain(explain::ExplainArgs),
    /// Convert an EasyRec (TensorFlow) config to a TorchEasyRec config.
    Convert(convert::ConvertArgs),
    /// Compile a config to a plan file (checks it first).
    Compile(compile::CompileArgs),
    /// Draw the model graph as Graphviz DOT.
    Graph(graph::GraphArgs),
    /// Summarize a config, or show what a plan file holds.
    Inspect(inspect::InspectArgs),
    /// Show which tables and layers of two plans differ in shape.
    Diff(diff::DiffArgs),
    /// Train a plan or config on parquet data, evaluate, save the trained plan.
    Run(run::RunArgs),
    /// Evaluate a (trained) plan on parquet data.
    Eval(eval::EvalArgs),
    /// Write each task's predictions for parquet data to a parquet file.
    Predict(predict::PredictArgs),
    /// Export a trained plan as an ONNX model or a TorchEasyRec state_dict
    /// (safetensors), or parquet data as its encoded inputs (`--inputs`, an .npz).
    Export(export::ExportArgs),
    /// Compile a config and fill its parameters from a safetensors
    /// state_dict (TorchEasyRec names), writing a plan.
    Import(import::ImportArgs),
    /// Generate synthetic parquet data for a config, with a planted model.
    GenData(gen_data::GenDataArgs),
    /// The PLE example end to end: check, compile, gen-data, train, evaluate.
    Demo(demo::DemoArgs),
    /// Training and evaluation throughput of the PLE example.
    Bench(bench::BenchArgs),
}

/// Outcome of a command, mapped to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Clean,
    /// Exit 1: the inputs have problems (reported).
    Problems,
    /// Exit 130: stopped by Ctrl-C or SIGTERM after writing a checkpoint
    /// (128 + SIGINT, as shells report an interrupted command).
    Interrupted,
}

/// A failure to run at all (exit 2): the error that stopped the command,
/// and advice on what to do about it, printed as a `help:` line.
#[derive(Debug)]
pub struct RunError {
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
    help: Option<String>,
}

/// A failure described by its message alone (a bad flag, a missing file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl RunError {
    /// A failure described by a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self::from_error(Message(msg.into()))
    }

    /// A failure caused by `error`.
    pub fn from_error(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        RunError {
            error: Box::new(error),
            help: None,
        }
    }

    /// The same failure with advice.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The advice, if any.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// The error that stopped the command.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref()
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Check(args) => check::execute(&args),
        Command::Explain(args) => explain::execute(&args),
        Command::Fmt(args) => fmt::execute(&args),
        Command::Lsp(args) => lsp::execute(&args),
        Command::Schema(args) => schema::execute(&args),
        Command::Compile(args) => compile::execute(&args),
        Command::Convert(args) => convert::execute(&args),
        Command::Graph(args) => graph::execute(&args),
        Command::Inspect(args) => inspect::execute(&args),
        Command::Diff(args) => diff::execute(&args),
        Command::Run(args) => run::execute(&args),
        Command::Eval(args) => eval::execute(&args),
        Command::Predict(args) => predict::execute(&args),
        Command::Export(args) => export::execute(&args),
        Command::Import(args) => import::execute(&args),
        Command::GenData(args) => gen_data::execute(&args),
        Command::Demo(args) => demo::execute(&args),
        Command::Bench(args) => bench::execute(&args),
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether stdout is a terminal (for color and progress bars).
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

//! `plec fmt`: rewrites config files in the canonical layout, or with
//! `--check` lists (as unified diffs) the files that are not in it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::diag;
use crate::format::format;

use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Config files in protobuf text format; `-` reads standard input and
    /// writes the formatted text to standard output (for editors).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing; print a diff of each file that is not formatted and
    /// exit 1 if there is any.
    #[arg(long)]
    pub check: bool,
}

pub(crate) fn execute(args: &FmtArgs) -> Result<Outcome, RunError> {
    let color = super::stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut problems = false;
    for path in &args.files {
        let stdin = path.as_os_str() == "-";
        let source = if stdin {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| RunError::new(format!("cannot read standard input: {e}")))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| RunError::new(format!("cannot read {}: {e}", path.display())))?
        };
        let name = if stdin {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let formatted = match format(&source) {
            Ok(f) => f,
            Err(errors) => {
                // A file that does not parse is left as it is.
                eprint!("{}", diag::render_human(&name, &source, &errors, color));
                eprintln!("not formatted {name}: it does not parse; fix the errors above first");
                problems = true;
                continue;
            }
        };
        if args.check {
            if formatted != source {
                print!("{}", unified_diff(&name, &source, &formatted));
                problems = true;
            }
        } else if stdin {
            print!("{formatted}");
        } else if formatted != source {
            write_keeping_mode(path, formatted.as_bytes())
                .map_err(|e| RunError::new(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("formatted {name}");
        }
    }
    Ok(if problems {
        Outcome::Problems
    } else {
        Outcome::Clean
    })
}

/// `--- a/FILE` / `+++ b/FILE` hunks with three lines of context.
fn unified_diff(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

/// Writes through a temporary sibling and a rename, so a crash leaves the
/// old file or the new one, never half of each; the file keeps its
/// permissions (a temporary file is created private).
fn write_keeping_mode(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let perms = std::fs::metadata(path)?.permissions();
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(tmp.path(), perms)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

//! Compiles the `.proto` files under `proto/` with protox (no system protoc)
//! into prost structs, and writes the encoded descriptor set that the binder
//! (prost-reflect) uses as its schema.
//!
//! `proto/easyrec/` (EasyRec's schema, for `plec check --schema easyrec` and
//! dialect detection) is compiled on its own into a second descriptor set,
//! with no prost structs: plec binds EasyRec configs dynamically only.

use std::path::{Path, PathBuf};

/// The EasyRec tree under `proto/`, kept out of the TorchEasyRec schema.
const EASYREC_DIR: &str = "easyrec";

fn collect_protos(dir: &Path, skip: Option<&Path>, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if skip.is_some_and(|s| path == s) {
            continue;
        }
        if path.is_dir() {
            collect_protos(&path, skip, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// Compiles every `.proto` under `dir` (but not under `skip`), with `root`
/// as the import root.
fn compile(
    root: &Path,
    dir: &Path,
    skip: Option<&Path>,
) -> Result<protox::Compiler, Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    collect_protos(dir, skip, &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|p| p.strip_prefix(root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;
    let mut compiler = protox::Compiler::new([root])?;
    // Source info keeps the .proto comments, which `plec lsp` shows on
    // hover; prost gets the set without it (see below).
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&relative)?;
    Ok(compiler)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let easyrec = root.join(EASYREC_DIR);
    let compiler = compile(root, root, Some(&easyrec))?;
    // Encoded by protox itself: going through prost_types would drop custom
    // options such as `(plec.unchecked)`, which prost cannot represent.
    std::fs::write(
        out_dir.join("descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let easyrec_compiler = compile(root, &easyrec, None)?;
    std::fs::write(
        out_dir.join("easyrec_descriptor_set.bin"),
        easyrec_compiler.encode_file_descriptor_set(),
    )?;
    let mut fds = compiler.file_descriptor_set();
    // Without source info prost writes no doc comments, so the generated
    // code stays as it was (and proto comments never become rustdoc).
    for file in &mut fds.file {
        file.source_code_info = None;
    }
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}

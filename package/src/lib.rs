//! Writes the filter's release files (see README, "The package: make
//! package"): `secretgate.wasm`, its `secretgate.wasm.sha256` and an OCI
//! image layout holding the filter in both Wasm image variants Istio's
//! fetcher reads. Every byte follows from the inputs (the .wasm and
//! [`Release`]), never from the clock or the file system, so two runs from
//! one commit write identical files.

// A release tool for the build machine. The root wasm build builds only the
// filter (`default-members`); a wasm32 build of this crate is a mistake.
#[cfg(target_arch = "wasm32")]
compile_error!(
    "secretgate-package is a native build tool; build it with `cargo build -p secretgate-package`"
);

pub mod blob;
pub mod canonical_json;
pub mod compat_layer;
pub mod error;
pub mod images;
pub mod layout;
pub mod output;
pub mod release;
pub mod wasm_module;

pub use error::PackageError;
pub use release::Release;

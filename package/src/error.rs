//! The one error type of the tool: what failed, in words an operator can act on.

use std::fmt;

/// What went wrong, with the step and the underlying cause in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageError(pub String);

impl PackageError {
    /// An error at `step` caused by `cause`.
    pub fn at(step: &str, cause: impl fmt::Display) -> PackageError {
        PackageError(format!("{step}: {cause}"))
    }
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PackageError {}

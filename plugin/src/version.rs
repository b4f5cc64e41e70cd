//! What a running filter says about itself, so an operator can tell which
//! build decided a request and under which configuration and policy
//! bundle: at start in Envoy's log, and in every audit record.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The filter's version: the `secretgate` package version it was built
/// from. `secretgate --version` prints the same.
pub const FILTER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest operator-given revision (`revision` in the configuration, a
/// bundle's `revision`) carried into records; a longer bundle revision is
/// cut, a longer configuration revision is refused.
pub const MAX_REVISION_LEN: usize = 128;

/// The revision of some content nobody named: `sha256:` and the first 16
/// hex digits of its SHA-256, which `sha256sum` also prints first.
pub fn content_revision(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 16);
    out.push_str("sha256:");
    for byte in &digest[..8] {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether an operator-given revision can go into logs and records as it
/// is: printable ASCII, no quotes or backslashes, within the length bound.
pub fn is_plain_revision(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_REVISION_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The revisions a decision was made under. Cheap to clone: every request's
/// record carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisions {
    /// The configuration's `revision`, else its [`content_revision`].
    pub config: Arc<str>,
    /// The live bundle's `revision` (cut at [`MAX_REVISION_LEN`]), else
    /// its [`content_revision`]; `None` when no bundle is in use.
    pub bundle: Option<Arc<str>>,
}

impl Revisions {
    /// The revision of a configuration whose `revision` key is `named`.
    pub fn of_config(named: Option<&str>, bytes: &[u8]) -> Revisions {
        Revisions {
            config: named
                .map_or_else(|| content_revision(bytes), str::to_owned)
                .into(),
            bundle: None,
        }
    }

    /// The same configuration serving a bundle named `named` (its
    /// `revision`) whose body has the [`content_revision`] `digest`.
    pub fn with_bundle(&self, named: Option<&str>, digest: &str) -> Revisions {
        Revisions {
            config: self.config.clone(),
            bundle: Some(bundle_revision(named, digest).into()),
        }
    }
}

/// How logs and records name a bundle: its `revision`, cleaned and cut,
/// or, when it has none, its body's [`content_revision`] `digest`.
pub fn bundle_revision(named: Option<&str>, digest: &str) -> String {
    match named.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => plain_cut(name),
        None => digest.to_owned(),
    }
}

/// A free-text bundle revision as records can carry it: control characters,
/// quotes and backslashes become `_`, and it is cut at the bound.
fn plain_cut(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .scan(0usize, |len, c| {
            *len += c.len_utf8();
            (*len <= MAX_REVISION_LEN).then_some(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_revision_is_the_sha256_prefix() {
        // sha256("") = e3b0c44298fc1c14...
        assert_eq!(content_revision(b""), "sha256:e3b0c44298fc1c14");
        assert_ne!(content_revision(b"a"), content_revision(b"b"));
    }

    #[test]
    fn a_named_configuration_keeps_its_name_and_an_unnamed_one_gets_its_digest() {
        assert_eq!(
            &*Revisions::of_config(Some("deploy-42"), b"{}").config,
            "deploy-42"
        );
        assert_eq!(
            &*Revisions::of_config(None, b"{}").config,
            content_revision(b"{}")
        );
    }

    #[test]
    fn a_bundle_revision_is_its_name_cleaned_and_cut_or_its_digest() {
        let base = Revisions::of_config(None, b"{}");
        let digest = content_revision(b"body");
        let named = base.with_bundle(Some("2026-12-02 \"rc\"\n"), &digest);
        assert_eq!(named.bundle.as_deref(), Some("2026-12-02 _rc_"));
        assert_eq!(named.config, base.config);
        let unnamed = base.with_bundle(None, &digest);
        assert_eq!(unnamed.bundle.as_deref(), Some(digest.as_str()));
        let blank = base.with_bundle(Some("  "), &digest);
        assert_eq!(blank.bundle, unnamed.bundle);
        let long = "é".repeat(100);
        let cut = base.with_bundle(Some(&long), &digest);
        let cut = cut.bundle.unwrap_or_default();
        assert!(cut.len() <= MAX_REVISION_LEN && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn plain_revisions_are_printable_bounded_and_unquoted() {
        assert!(is_plain_revision("v1.2.3+git.abc123"));
        for bad in ["", "a b", "a\"b", "a\\b", "tab\t", "é"] {
            assert!(!is_plain_revision(bad), "{bad:?}");
        }
        assert!(!is_plain_revision(&"x".repeat(MAX_REVISION_LEN + 1)));
    }
}

//! What a package says about itself: the version, the commit and its time,
//! and where the source lives. `package/package.sh` reads them from git and
//! the filter's Cargo.toml; nothing here reads the clock.

use crate::PackageError;

/// The inputs every manifest's annotations and the layer's times come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The filter's version (`secretgate` package): the oci variant's ref
    /// name and tag; the compat variant's is `<version>-compat`.
    pub version: String,
    /// The git commit the .wasm was built from (`org.opencontainers.image.revision`).
    pub revision: String,
    /// The commit time, `YYYY-MM-DDTHH:MM:SSZ` (`org.opencontainers.image.created`,
    /// the image configuration's `created`, the tar entry's mtime).
    pub created: String,
    /// Where the source is (`org.opencontainers.image.source`), without any
    /// user name or password a clone URL may carry.
    pub source: String,
}

/// Longest tag a registry takes is 128 characters; the compat tag adds
/// `-compat` to the version.
const MAX_VERSION_LEN: usize = 128 - COMPAT_SUFFIX.len();

/// What the compat variant's ref name adds to the version.
pub const COMPAT_SUFFIX: &str = "-compat";

impl Release {
    /// Checks each field and strips credentials from `source`.
    pub fn new(
        version: &str,
        revision: &str,
        created: &str,
        source: &str,
    ) -> Result<Release, PackageError> {
        if !is_tag(version) {
            return Err(PackageError(format!(
                "version {version:?} cannot be an image tag (letters, digits, '.', '_', '-'; at most {MAX_VERSION_LEN} characters, not starting with '.' or '-')"
            )));
        }
        let revision_ok = matches!(revision.len(), 40 | 64)
            && revision
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if !revision_ok {
            return Err(PackageError(format!(
                "revision {revision:?} is not a full git commit id (40 or 64 lowercase hex digits)"
            )));
        }
        epoch_seconds(created)?;
        let source = without_credentials(source);
        if source.is_empty() || source.chars().any(char::is_whitespace) {
            return Err(PackageError(format!(
                "source {source:?} must be a URL without spaces"
            )));
        }
        Ok(Release {
            version: version.to_owned(),
            revision: revision.to_owned(),
            created: created.to_owned(),
            source,
        })
    }

    /// Ref name (and tag) of the oci variant.
    pub fn oci_ref_name(&self) -> String {
        self.version.clone()
    }

    /// Ref name (and tag) of the compat variant.
    pub fn compat_ref_name(&self) -> String {
        format!("{}{COMPAT_SUFFIX}", self.version)
    }

    /// `created` as seconds since the Unix epoch.
    pub fn created_epoch_seconds(&self) -> Result<u64, PackageError> {
        epoch_seconds(&self.created)
    }
}

/// The tag grammar of the OCI distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]*`.
fn is_tag(text: &str) -> bool {
    let mut bytes = text.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && text.len() <= MAX_VERSION_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `https://user:token@host/x` → `https://host/x`: a clone URL with a token
/// in it must not end up in a published image.
fn without_credentials(url: &str) -> String {
    let trimmed = url.trim();
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        return trimmed.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => trimmed.to_owned(),
    }
}

/// Seconds since the epoch of a UTC time written `YYYY-MM-DDTHH:MM:SSZ`
/// (what `git show -s --date=format-local:%Y-%m-%dT%H:%M:%SZ` prints with
/// `TZ=UTC0`). Only this one form: it is also what goes into the manifests.
fn epoch_seconds(text: &str) -> Result<u64, PackageError> {
    let refuse = || {
        PackageError(format!(
            "created {text:?} is not a UTC time of the form YYYY-MM-DDTHH:MM:SSZ"
        ))
    };
    let b = text.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(refuse());
    }
    let number = |range: std::ops::Range<usize>| -> u64 {
        b[range]
            .iter()
            .fold(0, |acc, c| acc * 10 + u64::from(c - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
    if year < 1970
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(refuse());
    }
    let days = days_since_epoch(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date (year >= 1970).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let whole_years: u64 = (1970..year)
        .map(|y| if is_leap(y) { 366 } else { 365 })
        .sum();
    let whole_months: u64 = (1..month).map(|m| days_in_month(year, m)).sum();
    whole_years + whole_months + day - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "3362a5f0000000000000000000000000000000aa";

    #[test]
    fn epoch_seconds_of_known_times() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z").unwrap(), 0);
        // `date -u -d 2000-02-29T12:34:56Z +%s`
        assert_eq!(epoch_seconds("2000-02-29T12:34:56Z").unwrap(), 951_827_696);
        // `date -u -d 2026-12-03T07:00:00Z +%s`
        assert_eq!(
            epoch_seconds("2026-12-03T07:00:00Z").unwrap(),
            1_796_281_200
        );
    }

    #[test]
    fn times_of_another_form_or_impossible_dates_are_refused() {
        for text in [
            "2026-12-03T07:00:00+00:00",
            "2026-12-03 07:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "",
        ] {
            assert!(epoch_seconds(text).is_err(), "{text:?} was taken");
        }
    }

    #[test]
    fn a_release_takes_a_tag_a_commit_and_a_url() {
        let release = Release::new(
            "0.1.0",
            COMMIT,
            "2026-12-03T07:00:00Z",
            "https://example.org/secretgate.git",
        )
        .unwrap();
        assert_eq!(release.oci_ref_name(), "0.1.0");
        assert_eq!(release.compat_ref_name(), "0.1.0-compat");
        assert_eq!(release.created_epoch_seconds().unwrap(), 1_796_281_200);
    }

    #[test]
    fn bad_versions_and_revisions_are_refused() {
        let created = "2026-12-03T07:00:00Z";
        for version in ["", "-rc1", ".1", "0.1.0+build", "a/b", &"9".repeat(122)] {
            assert!(
                Release::new(version, COMMIT, created, "x").is_err(),
                "{version:?} was taken"
            );
        }
        for revision in ["HEAD", "3362a5f", &COMMIT.to_uppercase()] {
            assert!(
                Release::new("0.1.0", revision, created, "x").is_err(),
                "{revision:?} was taken"
            );
        }
        assert!(Release::new("0.1.0", COMMIT, created, "").is_err());
        assert!(Release::new("0.1.0", COMMIT, created, "a b").is_err());
    }

    #[test]
    fn credentials_are_cut_from_the_source_url() {
        let release = Release::new(
            "0.1.0",
            COMMIT,
            "2026-12-03T07:00:00Z",
            "https://ci-bot:s3cret@git.example.org/team/secretgate.git",
        )
        .unwrap();
        assert_eq!(
            release.source,
            "https://git.example.org/team/secretgate.git"
        );
        assert_eq!(
            without_credentials("git@example.org:team/x.git"),
            "git@example.org:team/x.git"
        );
        assert_eq!(
            without_credentials("file:///work/main"),
            "file:///work/main"
        );
    }
}

//! Live policy bundles: schema, policies and entities fetched over HTTP (an
//! Envoy cluster) and swapped in without restarting Envoy, so removing a
//! contractor from a group takes effect within one refresh interval.
//!
//! This module holds the pure part: the `bundle` configuration, the bundle
//! format, the digest check, and the fetch cycle's state. The adapter sends
//! the requests and swaps the validated configuration in.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest bundle accepted: it is copied into the VM's memory.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
const DEFAULT_REFRESH_S: u32 = 5;
const DEFAULT_TIMEOUT_MS: u32 = 5_000;

/// `bundle` in the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// The Envoy cluster that serves the bundle.
    pub cluster: String,
    /// `:authority` of the fetch.
    pub authority: String,
    #[serde(default = "default_bundle_path")]
    pub path: String,
    /// Seconds between fetches.
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u32,
    /// Timeout of each fetch.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Where the bundle's SHA-256 is announced (hex, `sha256sum` format
    /// accepted). When set, a bundle whose digest does not match is refused.
    #[serde(default)]
    pub digest_path: Option<String>,
}

fn default_bundle_path() -> String {
    "/bundle.json".into()
}

fn default_refresh_s() -> u32 {
    DEFAULT_REFRESH_S
}

fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}

impl BundleConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster.is_empty() || self.authority.is_empty() {
            return Err("cluster and authority must not be empty".into());
        }
        for path in std::iter::once(&self.path).chain(&self.digest_path) {
            if !path.starts_with('/') {
                return Err(format!("path {path:?} must start with '/'"));
            }
        }
        if !(1..=3600).contains(&self.refresh_s) {
            return Err("refresh_s must be between 1 and 3600".into());
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err("timeout_ms must be between 1 and 60000".into());
        }
        Ok(())
    }
}

/// A bundle as served: the same keys as the inline configuration. A key the
/// bundle leaves out keeps its inline value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub policies: Option<String>,
    #[serde(default)]
    pub entities: Option<Value>,
    /// Path templates by mount path (each a configured mount), replacing
    /// every inline template when present.
    #[serde(default)]
    pub templates: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Free text naming the bundle's version, for logs and records.
    #[serde(default)]
    pub revision: Option<String>,
    /// The body's [`crate::version::content_revision`], set by [`parse`]:
    /// what records name the bundle by when it has no `revision`.
    #[serde(skip)]
    pub digest: String,
}

/// Why a fetched bundle was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The fetch failed: unreachable, timed out, or a status other than 200/304.
    Fetch(String),
    TooLarge(usize),
    /// The announced digest is missing, malformed, or does not match.
    Digest(String),
    Format(String),
    /// The bundle parsed but the configuration it makes is invalid.
    Invalid(String),
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleError::Fetch(e) => write!(f, "fetch failed: {e}"),
            BundleError::TooLarge(size) => {
                write!(f, "bundle of {size} bytes exceeds {MAX_BUNDLE_BYTES}")
            }
            BundleError::Digest(e) => write!(f, "digest check failed: {e}"),
            BundleError::Format(e) => write!(f, "not a bundle: {e}"),
            BundleError::Invalid(e) => write!(f, "invalid bundle: {e}"),
        }
    }
}

/// Parses a bundle body.
pub fn parse(body: &[u8]) -> Result<Bundle, BundleError> {
    if body.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(body.len()));
    }
    let mut bundle: Bundle =
        serde_json::from_slice(body).map_err(|e| BundleError::Format(e.to_string()))?;
    bundle.digest = crate::version::content_revision(body);
    if bundle.entities.as_ref().is_some_and(|e| !e.is_array()) {
        return Err(BundleError::Format("entities must be a JSON array".into()));
    }
    Ok(bundle)
}

/// Checks `body` against an announced SHA-256: 64 hex digits, optionally
/// followed by whitespace and a file name (what `sha256sum` prints).
pub fn verify_digest(body: &[u8], announced: &[u8]) -> Result<(), BundleError> {
    let announced = std::str::from_utf8(announced)
        .ok()
        .and_then(|text| text.split_whitespace().next())
        .ok_or_else(|| BundleError::Digest("no digest announced".into()))?;
    if announced.len() != 64 || !announced.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BundleError::Digest(
            "the announced digest is not 64 hex digits".into(),
        ));
    }
    let actual = hex(&Sha256::digest(body));
    if !actual.eq_ignore_ascii_case(announced) {
        return Err(BundleError::Digest(format!(
            "bundle has SHA-256 {actual}, {} was announced",
            announced.to_ascii_lowercase()
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request the fetch cycle wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub path: String,
    pub if_none_match: Option<String>,
}

/// What a step of the fetch cycle concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchStep {
    /// Send this request next (the digest, after the bundle).
    Send(FetchRequest),
    /// The server still has the bundle in use.
    Unchanged,
    /// A bundle body passed its digest check: validate and swap it in.
    Candidate {
        body: Vec<u8>,
        etag: Option<String>,
    },
    Failed(BundleError),
}

/// The state of one fetch cycle: the bundle, then (if configured) its
/// digest. One cycle at a time; a reply that is not awaited is ignored.
#[derive(Debug, Default)]
pub struct FetchCycle {
    /// The `ETag` of the bundle in use, sent as `If-None-Match`.
    etag_in_use: Option<String>,
    awaiting: Awaiting,
}

#[derive(Debug, Default)]
enum Awaiting {
    #[default]
    Nothing,
    Bundle,
    Digest {
        body: Vec<u8>,
        etag: Option<String>,
    },
}

/// A reply to one of the cycle's requests; `status` is `None` when the
/// fetch failed before any response (connect error, timeout, reset).
#[derive(Debug)]
pub struct FetchReply<'a> {
    pub status: Option<u32>,
    pub etag: Option<&'a str>,
    pub body: &'a [u8],
}

impl FetchCycle {
    /// Whether a request of the cycle is in flight.
    pub fn busy(&self) -> bool {
        !matches!(self.awaiting, Awaiting::Nothing)
    }

    /// Starts a cycle: the bundle request to send.
    pub fn start(&mut self, config: &BundleConfig) -> FetchRequest {
        self.awaiting = Awaiting::Bundle;
        FetchRequest {
            path: config.path.clone(),
            if_none_match: self.etag_in_use.clone(),
        }
    }

    /// The request could not even be sent: the cycle ends.
    pub fn abandon(&mut self) {
        self.awaiting = Awaiting::Nothing;
    }

    /// Takes the reply to the request in flight.
    pub fn on_reply(&mut self, config: &BundleConfig, reply: FetchReply<'_>) -> FetchStep {
        match std::mem::take(&mut self.awaiting) {
            Awaiting::Nothing => FetchStep::Failed(BundleError::Fetch("unexpected reply".into())),
            Awaiting::Bundle => match reply.status {
                Some(304) if self.etag_in_use.is_some() => FetchStep::Unchanged,
                Some(200) => {
                    if reply.body.len() > MAX_BUNDLE_BYTES {
                        return FetchStep::Failed(BundleError::TooLarge(reply.body.len()));
                    }
                    let etag = reply.etag.map(str::to_owned);
                    match &config.digest_path {
                        Some(path) => {
                            self.awaiting = Awaiting::Digest {
                                body: reply.body.to_vec(),
                                etag,
                            };
                            FetchStep::Send(FetchRequest {
                                path: path.clone(),
                                if_none_match: None,
                            })
                        }
                        None => FetchStep::Candidate {
                            body: reply.body.to_vec(),
                            etag,
                        },
                    }
                }
                other => FetchStep::Failed(fetch_failure("bundle", other)),
            },
            Awaiting::Digest { body, etag } => match reply.status {
                Some(200) => match verify_digest(&body, reply.body) {
                    Ok(()) => FetchStep::Candidate { body, etag },
                    Err(e) => FetchStep::Failed(e),
                },
                other => FetchStep::Failed(fetch_failure("digest", other)),
            },
        }
    }

    /// The candidate was swapped in: later fetches ask whether it changed.
    pub fn accepted(&mut self, etag: Option<String>) {
        self.etag_in_use = etag;
    }
}

/// When a policy set's next fetch cycle is due. Cycles are timed from
/// when they start, not when they end, so a periodic tick of the same
/// period never skips one; `SCHEDULE_SLACK_MS` absorbs timer jitter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FetchSchedule {
    next_due_ms: u64,
}

const SCHEDULE_SLACK_MS: u64 = 50;

impl FetchSchedule {
    /// Whether a cycle should start at `now_ms` (the first one always does).
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms.saturating_add(SCHEDULE_SLACK_MS) >= self.next_due_ms
    }

    /// A cycle starts at `now_ms`; the next is due `wait_ms` later.
    pub fn started(&mut self, now_ms: u64, wait_ms: u64) {
        self.next_due_ms = now_ms.saturating_add(wait_ms);
    }
}

fn fetch_failure(what: &str, status: Option<u32>) -> BundleError {
    match status {
        Some(status) => BundleError::Fetch(format!("{what} answered HTTP {status}")),
        None => BundleError::Fetch(format!("{what} unreachable or timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_timed_from_the_start_of_a_cycle() {
        let mut schedule = FetchSchedule::default();
        assert!(schedule.due(0), "the first cycle starts at once");
        schedule.started(1_000, 5_000);
        assert!(!schedule.due(1_001));
        assert!(!schedule.due(5_900));
        // A tick of the same period, a little early, still starts the next.
        assert!(schedule.due(5_990));
        assert!(schedule.due(6_000));
    }

    fn config(digest: bool) -> BundleConfig {
        serde_json::from_value(serde_json::json!({
            "cluster": "bundles", "authority": "bundles.local",
            "digest_path": if digest { Some("/bundle.json.sha256") } else { None },
        }))
        .unwrap()
    }

    fn sha256_hex(body: &[u8]) -> String {
        hex(&Sha256::digest(body))
    }

    #[test]
    fn configuration_defaults_and_limits() {
        let c = config(false);
        assert_eq!(
            (c.path.as_str(), c.refresh_s, c.timeout_ms),
            ("/bundle.json", 5, 5000)
        );
        assert!(c.validate().is_ok());
        for bad in [
            serde_json::json!({"cluster": "", "authority": "a"}),
            serde_json::json!({"cluster": "c", "authority": "a", "path": "bundle.json"}),
            serde_json::json!({"cluster": "c", "authority": "a", "refresh_s": 0}),
            serde_json::json!({"cluster": "c", "authority": "a", "digest_path": "x"}),
            serde_json::json!({"cluster": "c", "authority": "a", "timeout_ms": 0}),
        ] {
            let c: BundleConfig = serde_json::from_value(bad.clone()).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<BundleConfig>(
            serde_json::json!({"cluster": "c", "authority": "a", "surprise": 1})
        )
        .is_err());
    }

    #[test]
    fn bundle_format() {
        let b = parse(br#"{"policies": "permit(principal, action, resource);", "revision": "r7"}"#)
            .unwrap();
        assert_eq!(b.revision.as_deref(), Some("r7"));
        assert!(b.schema.is_none() && b.entities.is_none());
        assert!(matches!(parse(b"not json"), Err(BundleError::Format(_))));
        assert!(matches!(
            parse(br#"{"entities": {}}"#),
            Err(BundleError::Format(_))
        ));
        assert!(matches!(
            parse(br#"{"polices": ""}"#),
            Err(BundleError::Format(_))
        ));
    }

    #[test]
    fn digest_check() {
        let body = br#"{"policies": ""}"#;
        let digest = sha256_hex(body);
        assert!(verify_digest(body, digest.as_bytes()).is_ok());
        assert!(verify_digest(
            body,
            format!("{}  bundle.json\n", digest.to_uppercase()).as_bytes()
        )
        .is_ok());
        let other = sha256_hex(b"something else");
        assert!(matches!(
            verify_digest(body, other.as_bytes()),
            Err(BundleError::Digest(_))
        ));
        assert!(matches!(
            verify_digest(body, b""),
            Err(BundleError::Digest(_))
        ));
        assert!(matches!(
            verify_digest(body, b"abc123"),
            Err(BundleError::Digest(_))
        ));
        assert!(matches!(
            verify_digest(body, &[0xff, 0xfe]),
            Err(BundleError::Digest(_))
        ));
    }

    #[test]
    fn cycle_without_digest_uses_etags() {
        let c = config(false);
        let mut cycle = FetchCycle::default();
        let first = cycle.start(&c);
        assert_eq!(
            first,
            FetchRequest {
                path: "/bundle.json".into(),
                if_none_match: None
            }
        );
        assert!(cycle.busy());
        let step = cycle.on_reply(
            &c,
            FetchReply {
                status: Some(200),
                etag: Some("\"v1\""),
                body: b"{}",
            },
        );
        let FetchStep::Candidate { body, etag } = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            (body.as_slice(), etag.as_deref()),
            (&b"{}"[..], Some("\"v1\""))
        );
        assert!(!cycle.busy());
        cycle.accepted(etag);
        assert_eq!(cycle.start(&c).if_none_match.as_deref(), Some("\"v1\""));
        assert_eq!(
            cycle.on_reply(
                &c,
                FetchReply {
                    status: Some(304),
                    etag: None,
                    body: b""
                }
            ),
            FetchStep::Unchanged
        );
        cycle.start(&c);
        assert!(matches!(
            cycle.on_reply(
                &c,
                FetchReply {
                    status: None,
                    etag: None,
                    body: b""
                }
            ),
            FetchStep::Failed(BundleError::Fetch(_))
        ));
        cycle.start(&c);
        assert!(matches!(
            cycle.on_reply(
                &c,
                FetchReply {
                    status: Some(500),
                    etag: None,
                    body: b"{}"
                }
            ),
            FetchStep::Failed(BundleError::Fetch(_))
        ));
        // A 304 to a request that sent no ETag is no answer.
        let mut fresh = FetchCycle::default();
        fresh.start(&c);
        assert!(matches!(
            fresh.on_reply(
                &c,
                FetchReply {
                    status: Some(304),
                    etag: None,
                    body: b""
                }
            ),
            FetchStep::Failed(_)
        ));
        // A reply nobody waits for.
        assert!(matches!(
            fresh.on_reply(
                &c,
                FetchReply {
                    status: Some(200),
                    etag: None,
                    body: b"{}"
                }
            ),
            FetchStep::Failed(_)
        ));
    }

    #[test]
    fn cycle_with_digest_checks_the_announced_sha256() {
        let c = config(true);
        let body = br#"{"revision": "r2"}"#;
        let mut cycle = FetchCycle::default();
        cycle.start(&c);
        let step = cycle.on_reply(
            &c,
            FetchReply {
                status: Some(200),
                etag: None,
                body,
            },
        );
        assert_eq!(
            step,
            FetchStep::Send(FetchRequest {
                path: "/bundle.json.sha256".into(),
                if_none_match: None
            })
        );
        let good = sha256_hex(body);
        assert!(matches!(
            cycle.on_reply(
                &c,
                FetchReply {
                    status: Some(200),
                    etag: None,
                    body: good.as_bytes()
                }
            ),
            FetchStep::Candidate { .. }
        ));

        cycle.start(&c);
        cycle.on_reply(
            &c,
            FetchReply {
                status: Some(200),
                etag: None,
                body,
            },
        );
        let wrong = sha256_hex(b"tampered");
        assert!(matches!(
            cycle.on_reply(
                &c,
                FetchReply {
                    status: Some(200),
                    etag: None,
                    body: wrong.as_bytes()
                }
            ),
            FetchStep::Failed(BundleError::Digest(_))
        ));

        cycle.start(&c);
        cycle.on_reply(
            &c,
            FetchReply {
                status: Some(200),
                etag: None,
                body,
            },
        );
        assert!(matches!(
            cycle.on_reply(
                &c,
                FetchReply {
                    status: Some(404),
                    etag: None,
                    body: b""
                }
            ),
            FetchStep::Failed(BundleError::Fetch(_))
        ));
    }
}

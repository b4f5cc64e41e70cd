//! The audit record: one JSON object per request saying who touched which
//! secret and why it was allowed, with every secret value masked.
//!
//! Bodies are parsed as JSON; keys and structure stay, values are masked
//! (keyed HMAC, so an auditor holding the key can search for a known value,
//! or redaction). Only an allowlist of non-secret metadata keys stays
//! readable, and keys that carry tokens can never be made readable. A body
//! that is not JSON, or larger than the capture limit, is never logged: only
//! its size and (in HMAC mode) the HMAC of every byte seen.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::classify::{Action, MountType};
use crate::masking::{self, MaskRules};
use crate::path::{parse_go_bool, query_unescape};
use crate::record::DecisionRecord;

type HmacSha256 = Hmac<Sha256>;

/// Largest capture limit accepted: bodies are copied into the VM's memory.
pub const MAX_CAPTURE_LIMIT: usize = 16 * 1024 * 1024;
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
const REDACTED: &str = "redacted";

/// `list`, `scan` (Go booleans) and `version` (a number) only choose what
/// OpenBao does; any other value, or another parameter, may be a secret.
fn is_readable_query_flag(key: &str, value: &str) -> bool {
    match key {
        "list" | "scan" => value.is_empty() || parse_go_bool(value).is_some(),
        "version" => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// Metadata keys whose scalar values are not secret, for every mount type.
const DEFAULT_READABLE_KEYS: &[&str] = &[
    "request_id",
    "lease_id",
    "lease_duration",
    "renewable",
    "version",
    "versions",
    "created_time",
    "updated_time",
    "deletion_time",
    "destroyed",
    "current_version",
    "oldest_version",
    "max_versions",
    "cas_required",
    "delete_version_after",
    "cas",
    "ttl",
    "type",
    "warnings",
    "errors",
    "mount_type",
    "policies",
    "token_policies",
    "identity_policies",
    "token_type",
    "orphan",
    "num_uses",
    "expiration",
    "creation_time",
    "creation_ttl",
    "serial_number",
];

/// Keys that carry credentials: always masked, never configurable as readable.
const NEVER_READABLE_KEYS: &[&str] = &[
    "client_token",
    "token",
    "accessor",
    "wrapped_accessor",
    "secret_id",
    "secret_id_accessor",
    "password",
    "private_key",
    "secret_key",
    "access_key",
    "security_token",
    "plaintext",
    "ciphertext",
    "data",
    "key",
    "keys",
];

const DEFAULT_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "repository",
    "ref",
    "environment",
    "workflow",
    "actor",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    HmacSha256,
    Redact,
}

/// `audit` in the plugin configuration, as operators write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditConfig {
    #[serde(default)]
    mode: Option<String>,
    /// Taken as a raw value so a mistyped key is never echoed in an error.
    #[serde(default)]
    hmac_key: Option<Value>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    claims: Option<Vec<String>>,
    /// Extra readable keys per mount type (`kv-v2`, ..., or `default` for all).
    #[serde(default)]
    readable_keys: BTreeMap<String, Vec<String>>,
    /// Log the names a LIST returns (default: only how many).
    #[serde(default)]
    list_keys: bool,
}

/// The validated audit settings.
#[derive(Clone)]
pub struct AuditConfig {
    pub mode: MaskMode,
    /// Keyed HMAC state, cloned per use (never printed).
    hmac: Option<HmacSha256>,
    pub max_body_bytes: usize,
    pub claims: Vec<String>,
    readable_default: KeySet,
    /// Per mount type: the default keys plus that mount's own.
    readable_by_mount: BTreeMap<String, KeySet>,
    pub list_keys: bool,
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("mode", &self.mode)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for AuditConfig {
    /// Redaction needs no key, so it is the safe default.
    fn default() -> Self {
        AuditConfig {
            mode: MaskMode::Redact,
            hmac: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            claims: DEFAULT_CLAIMS.iter().map(|c| (*c).to_owned()).collect(),
            readable_default: KeySet::new(DEFAULT_READABLE_KEYS.iter().map(|k| (*k).to_owned())),
            readable_by_mount: BTreeMap::new(),
            list_keys: false,
        }
    }
}

impl AuditConfig {
    pub fn from_raw(raw: RawAuditConfig) -> Result<AuditConfig, String> {
        let mode = match raw.mode.as_deref() {
            None | Some("redact") => MaskMode::Redact,
            Some("hmac-sha256") => MaskMode::HmacSha256,
            Some(other) => {
                return Err(format!(
                    "mode {other:?} is not one of \"hmac-sha256\", \"redact\""
                ))
            }
        };
        let mut config = AuditConfig {
            mode,
            ..AuditConfig::default()
        };
        match (config.mode, raw.hmac_key) {
            (MaskMode::HmacSha256, Some(Value::String(key))) if key.len() >= 16 => {
                config.hmac = Some(
                    HmacSha256::new_from_slice(key.as_bytes())
                        .map_err(|_| "hmac_key is not a usable key".to_owned())?,
                );
            }
            (MaskMode::HmacSha256, Some(Value::String(_))) => {
                return Err("hmac_key must be at least 16 bytes".into())
            }
            (MaskMode::HmacSha256, Some(_)) => return Err("hmac_key must be a string".into()),
            (MaskMode::HmacSha256, None) => {
                return Err("mode \"hmac-sha256\" needs an hmac_key".into())
            }
            (MaskMode::Redact, Some(_)) => {
                return Err("hmac_key is only used in mode \"hmac-sha256\"".into())
            }
            (MaskMode::Redact, None) => {}
        }
        if let Some(limit) = raw.max_body_bytes {
            if limit > MAX_CAPTURE_LIMIT {
                return Err(format!(
                    "max_body_bytes {limit} exceeds the limit of {MAX_CAPTURE_LIMIT}"
                ));
            }
            config.max_body_bytes = limit;
        }
        if let Some(claims) = raw.claims {
            config.claims = claims;
        }
        for (mount_type, keys) in raw.readable_keys {
            if mount_type != "default" && MountType::parse(&mount_type).is_none() {
                return Err(format!(
                    "readable_keys: {mount_type:?} is not a mount type (or \"default\")"
                ));
            }
            if let Some(key) = keys
                .iter()
                .find(|k| NEVER_READABLE_KEYS.contains(&k.as_str()))
            {
                return Err(format!(
                    "readable_keys: {key:?} carries credentials and is always masked"
                ));
            }
            let set = if mount_type == "default" {
                &mut config.readable_default
            } else {
                config.readable_by_mount.entry(mount_type).or_default()
            };
            set.extend(keys);
        }
        for set in config.readable_by_mount.values_mut() {
            set.extend(config.readable_default.0.iter().cloned());
        }
        config.list_keys = raw.list_keys;
        Ok(config)
    }

    /// The request target as the audit record shows it: the path as sent,
    /// each query parameter's name, and its value masked, since OpenBao
    /// takes tokens there too (`auth/token/lookup?token=…`,
    /// `sys/wrapping/lookup?token=…`). Only the flags that steer the
    /// operation stay readable, and only while they hold a flag's value.
    pub fn loggable_target<'a>(&self, target: &'a str) -> Cow<'a, str> {
        let Some((path, query)) = target.split_once('?') else {
            return Cow::Borrowed(target);
        };
        let mut out = String::with_capacity(target.len());
        out.push_str(path);
        out.push('?');
        for (index, pair) in query.split('&').enumerate() {
            if index > 0 {
                out.push('&');
            }
            let Some((key, value)) = pair.split_once('=') else {
                out.push_str(pair);
                continue;
            };
            out.push_str(key);
            out.push('=');
            if is_readable_query_flag(key, value) {
                out.push_str(value);
            } else {
                let decoded = query_unescape(value).unwrap_or_else(|| value.as_bytes().to_vec());
                match self.hmac_hex(&decoded) {
                    Some(hmac) => out.push_str(&hmac),
                    None => out.push_str(REDACTED),
                }
            }
        }
        Cow::Owned(out)
    }

    /// `hmac-sha256:<hex>` of a value, or `None` in redaction mode.
    pub fn hmac_hex(&self, value: &[u8]) -> Option<String> {
        let mut mac = self.hmac.clone()?;
        mac.update(value);
        Some(hex_tagged(&mac.finalize().into_bytes()))
    }

    /// Masks a JSON body: structure and keys stay; strings and numbers are
    /// masked unless their key is readable; booleans and nulls stay. In a
    /// LIST response (`listing`), `data.keys` and `data.key_info` (whose
    /// member names are the child names) become `{"count": N}` unless
    /// `list_keys`.
    /// `None` when the body is not JSON.
    pub fn mask_json(
        &self,
        body: &[u8],
        listing: bool,
        mount_type: Option<&str>,
    ) -> Option<String> {
        let rules = MaskScope {
            config: self,
            readable: mount_type
                .and_then(|m| self.readable_by_mount.get(m))
                .unwrap_or(&self.readable_default),
            list_response: listing,
        };
        masking::mask_json(body, &rules).ok()
    }

    /// [`AuditConfig::mask_json`] of a parsed value, for callers holding one.
    pub fn mask(&self, body: &Value, listing: bool, mount_type: Option<&str>) -> Value {
        serde_json::to_vec(body)
            .ok()
            .and_then(|bytes| self.mask_json(&bytes, listing, mount_type))
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    }

    pub fn capture(&self) -> BodyCapture {
        BodyCapture {
            limit: self.max_body_bytes,
            captured: Vec::new(),
            seen: 0,
            key: self.hmac.clone(),
            overflow_hmac: None,
            unreadable: false,
        }
    }
}

/// The masking rules of one body: the configuration plus what the request was.
struct MaskScope<'a> {
    config: &'a AuditConfig,
    readable: &'a KeySet,
    list_response: bool,
}

impl MaskRules for MaskScope<'_> {
    fn readable(&self, key: &str) -> bool {
        // Configuration already refuses credential keys; checked again so
        // no future path can make one readable.
        self.readable.contains(key) && !NEVER_READABLE_KEYS.contains(&key)
    }

    fn write_masked(&self, text: &[u8], out: &mut String) {
        out.push('"');
        match self.config.hmac.clone() {
            Some(mut mac) => {
                mac.update(text);
                push_tagged_hex(&mac.finalize().into_bytes(), out);
            }
            None => out.push_str(REDACTED),
        }
        out.push('"');
    }

    fn list_response(&self) -> bool {
        self.list_response
    }

    fn list_names_shown(&self) -> bool {
        self.config.list_keys
    }
}

/// A small sorted set of key names: looked up once per JSON key, where
/// hashing each key cost more than a binary search over a few dozen names.
#[derive(Clone, Default)]
struct KeySet(Vec<String>);

impl KeySet {
    fn new(keys: impl IntoIterator<Item = String>) -> KeySet {
        let mut set = KeySet::default();
        set.extend(keys);
        set
    }

    fn extend(&mut self, keys: impl IntoIterator<Item = String>) {
        self.0.extend(keys);
        self.0.sort_unstable();
        self.0.dedup();
    }

    fn contains(&self, key: &str) -> bool {
        self.0.binary_search_by(|k| k.as_str().cmp(key)).is_ok()
    }
}

fn hex_tagged(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(12 + bytes.len() * 2);
    push_tagged_hex(bytes, &mut out);
    out
}

fn push_tagged_hex(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 64];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out.push_str("hmac-sha256:");
    let used = (bytes.len() * 2).min(digits.len());
    out.push_str(std::str::from_utf8(&digits[..used]).unwrap_or_default());
}

/// A bounded copy of a streamed body: the first `limit` bytes, plus the
/// total size and (in HMAC mode) the HMAC of every byte, so memory stays
/// bounded however large the body is.
#[derive(Clone)]
pub struct BodyCapture {
    limit: usize,
    captured: Vec<u8>,
    seen: usize,
    /// The keyed HMAC state to start from, in HMAC mode.
    key: Option<HmacSha256>,
    /// The HMAC of every byte, kept running only once the body outgrows the
    /// limit; a body that fits is hashed from `captured` if it is not logged.
    overflow_hmac: Option<HmacSha256>,
    /// A chunk could not be read: what was captured is incomplete.
    unreadable: bool,
}

impl BodyCapture {
    /// Whether feeding more bytes changes anything (HMAC, or room left).
    pub fn wants_more(&self) -> bool {
        self.key.is_some() || self.captured.len() < self.limit
    }

    pub fn mark_unreadable(&mut self) {
        self.unreadable = true;
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.unreadable {
            return;
        }
        self.seen = self.seen.saturating_add(chunk.len());
        let room = self.limit.saturating_sub(self.captured.len());
        let (kept, rest) = chunk.split_at(room.min(chunk.len()));
        self.captured.extend_from_slice(kept);
        if rest.is_empty() {
            return;
        }
        if self.overflow_hmac.is_none() {
            self.overflow_hmac = self.key.clone().map(|mut mac| {
                mac.update(&self.captured);
                mac
            });
        }
        if let Some(mac) = self.overflow_hmac.as_mut() {
            mac.update(rest);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    pub fn truncated(&self) -> bool {
        self.seen > self.captured.len() || self.unreadable
    }

    /// `hmac-sha256:<hex>` of every byte seen, in HMAC mode.
    fn hmac_of_seen(&self) -> Option<String> {
        let mac = match &self.overflow_hmac {
            Some(running) => running.clone(),
            None => {
                let mut mac = self.key.clone()?;
                mac.update(&self.captured);
                mac
            }
        };
        Some(hex_tagged(&mac.finalize().into_bytes()))
    }

    /// The body as the audit record shows it, as JSON text:
    /// `{"size", "json": <masked>}` or `{"size", "hmac"?, "not_logged"}`.
    pub fn render(&self, config: &AuditConfig, listing: bool, mount_type: Option<&str>) -> String {
        let unlogged = |flag: &str| {
            let mut out = Map::new();
            out.insert("size".into(), json!(self.seen));
            if let Some(hmac) = self.hmac_of_seen() {
                out.insert("hmac".into(), Value::String(hmac));
            }
            out.insert("not_logged".into(), json!(flag));
            Value::Object(out).to_string()
        };
        if self.unreadable {
            return unlogged("unreadable");
        }
        if self.truncated() {
            return unlogged("over_max_body_bytes");
        }
        match config.mask_json(&self.captured, listing, mount_type) {
            Some(masked) => format!("{{\"size\":{},\"json\":{masked}}}", self.seen),
            None => unlogged("not_json"),
        }
    }
}

/// What the adapter knows about the response by the time the request ends.
#[derive(Clone, Default)]
pub struct ResponseFacts<'a> {
    pub status: Option<u32>,
    pub request_body: Option<&'a BodyCapture>,
    pub response_body: Option<&'a BodyCapture>,
}

/// RFC 3339 UTC time with milliseconds, from Unix nanoseconds.
pub fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let millis = (unix_nanos / 1_000_000) % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The audit record's JSON shape (documented in the README).
#[derive(Serialize)]
struct Record<'a> {
    time: String,
    request_id: &'a str,
    principal: Option<PrincipalField<'a>>,
    claims: Map<String, Value>,
    source_address: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    namespace: &'a str,
    action: Option<&'static str>,
    resource: Option<String>,
    decision: &'static str,
    reason: &'a str,
    policies: &'a [String],
    errors: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a Value>,
    response_status: Option<u32>,
    request_body: Option<Box<RawValue>>,
    response_body: Option<Box<RawValue>>,
    token_hmac: Option<&'a str>,
    request_body_truncated: bool,
    response_body_truncated: bool,
}

#[derive(Serialize)]
struct PrincipalField<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
}

/// Renders the one audit record of a request.
pub fn render(
    config: &AuditConfig,
    record: &DecisionRecord,
    response: &ResponseFacts<'_>,
) -> String {
    let mount_type = record.mount_type.map(MountType::name);
    let body = |capture: Option<&BodyCapture>| {
        let capture = capture.filter(|c| !c.is_empty())?;
        RawValue::from_string(capture.render(config, record.listing, mount_type)).ok()
    };
    let claims: Map<String, Value> = config
        .claims
        .iter()
        .filter_map(|name| Some((name.clone(), record.claims.get(name)?.clone())))
        .collect();
    let out = Record {
        time: rfc3339(record.time_nanos),
        request_id: &record.request_id,
        principal: record
            .principal
            .as_ref()
            .map(|(kind, id)| PrincipalField { kind, id }),
        claims,
        source_address: record.source_address.as_deref(),
        method: &record.method,
        path: &record.path,
        namespace: &record.namespace,
        action: record.action.map(Action::as_str),
        resource: record.resource.as_ref().map(ToString::to_string),
        decision: record.outcome.as_str(),
        reason: &record.reason,
        policies: &record.policies,
        errors: &record.errors,
        approval: record.approval.as_ref(),
        response_status: response.status,
        request_body: body(response.request_body),
        response_body: body(response.response_body),
        token_hmac: record.token_hmac.as_deref(),
        request_body_truncated: response.request_body.is_some_and(BodyCapture::truncated),
        response_body_truncated: response.response_body.is_some_and(BodyCapture::truncated),
    };
    // Serialising plain strings, numbers and pre-validated JSON cannot fail;
    // if it ever did, an empty object still marks that a request happened.
    serde_json::to_string(&out).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_config() -> AuditConfig {
        let raw: RawAuditConfig = serde_json::from_value(
            json!({"mode": "hmac-sha256", "hmac_key": "0123456789abcdef-test-key"}),
        )
        .unwrap();
        AuditConfig::from_raw(raw).unwrap()
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn hmac_is_keyed_and_tagged() {
        let config = hmac_config();
        let digest = config.hmac_hex(b"s3cr3t").unwrap();
        assert!(digest.starts_with("hmac-sha256:"));
        assert_eq!(digest.len(), "hmac-sha256:".len() + 64);
        assert_eq!(config.hmac_hex(b"s3cr3t"), Some(digest.clone()));
        assert_ne!(config.hmac_hex(b"s3cr3u"), Some(digest));
        assert_eq!(AuditConfig::default().hmac_hex(b"x"), None);
    }

    #[test]
    fn configuration_errors() {
        let load = |v: Value| {
            serde_json::from_value::<RawAuditConfig>(v)
                .map_err(|e| e.to_string())
                .and_then(AuditConfig::from_raw)
        };
        assert!(load(json!({"mode": "hmac-sha256"}))
            .unwrap_err()
            .contains("needs an hmac_key"));
        assert!(load(json!({"mode": "hmac-sha256", "hmac_key": "short"})).is_err());
        let numeric =
            load(json!({"mode": "hmac-sha256", "hmac_key": 123456789012345678u64})).unwrap_err();
        assert!(!numeric.contains("123456789012345678"), "{numeric}");
        assert!(load(json!({"mode": "rot13"})).is_err());
        assert!(load(json!({"readable_keys": {"kv-v2": ["password"]}}))
            .unwrap_err()
            .contains("always masked"));
        assert!(load(json!({"readable_keys": {"kv-v9": ["x"]}})).is_err());
        assert!(load(json!({"max_body_bytes": 1u64 << 40})).is_err());
        assert!(load(json!({"surprise": 1})).is_err());
        assert!(load(json!({})).is_ok());
    }
}

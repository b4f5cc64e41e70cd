//! The audit record: one JSON object per request saying who touched which
//! secret and why it was allowed, with every secret value masked.
//!
//! Bodies are parsed as JSON; keys and structure stay, values are masked
//! (keyed HMAC, so an auditor holding the key can search for a known value,
//! or redaction). Only an allowlist of non-secret metadata keys stays
//! readable, and keys that carry tokens can never be made readable. A body
//! that is not JSON, or larger than the capture limit, is never logged: only
//! its size and (in HMAC mode) the HMAC of every byte seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::classify::{Action, MountType};
use crate::gate::DecisionRecord;

type HmacSha256 = Hmac<Sha256>;

/// Largest capture limit accepted: bodies are copied into the VM's memory.
pub const MAX_CAPTURE_LIMIT: usize = 16 * 1024 * 1024;
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
const REDACTED: &str = "redacted";

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
    readable_default: HashSet<String>,
    readable_by_mount: HashMap<String, HashSet<String>>,
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
            readable_default: DEFAULT_READABLE_KEYS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            readable_by_mount: HashMap::new(),
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
        config.list_keys = raw.list_keys;
        Ok(config)
    }

    /// `hmac-sha256:<hex>` of a value, or `None` in redaction mode.
    pub fn hmac_hex(&self, value: &[u8]) -> Option<String> {
        let mut mac = self.hmac.clone()?;
        mac.update(value);
        Some(hex_tagged(&mac.finalize().into_bytes()))
    }

    fn mask_scalar(&self, text: &str) -> Value {
        match self.hmac_hex(text.as_bytes()) {
            Some(digest) => Value::String(digest),
            None => Value::String(REDACTED.to_owned()),
        }
    }

    fn readable(&self, key: &str, mount_type: Option<&str>) -> bool {
        !NEVER_READABLE_KEYS.contains(&key)
            && (self.readable_default.contains(key)
                || mount_type
                    .and_then(|m| self.readable_by_mount.get(m))
                    .is_some_and(|set| set.contains(key)))
    }

    /// Masks a JSON body: structure and keys stay; strings and numbers are
    /// masked unless their key is readable; booleans and nulls stay.
    pub fn mask(&self, body: &Value, action: Option<Action>, mount_type: Option<&str>) -> Value {
        let mut masked = self.mask_value(body, mount_type, false);
        if action == Some(Action::List) && !self.list_keys {
            if let Some(keys) = body.pointer("/data/keys").and_then(Value::as_array) {
                if let Some(data) = masked.get_mut("data").and_then(Value::as_object_mut) {
                    data.insert("keys".into(), json!({ "count": keys.len() }));
                }
            }
        } else if action == Some(Action::List) {
            if let Some(keys) = body.pointer("/data/keys") {
                if let Some(data) = masked.get_mut("data").and_then(Value::as_object_mut) {
                    data.insert("keys".into(), keys.clone());
                }
            }
        }
        masked
    }

    fn mask_value(&self, value: &Value, mount_type: Option<&str>, readable: bool) -> Value {
        match value {
            Value::String(s) if readable => Value::String(s.clone()),
            Value::Number(n) if readable => Value::Number(n.clone()),
            Value::String(s) => self.mask_scalar(s),
            Value::Number(n) => self.mask_scalar(&n.to_string()),
            Value::Bool(_) | Value::Null => value.clone(),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.mask_value(item, mount_type, readable))
                    .collect(),
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, field)| {
                        let readable = self.readable(key, mount_type);
                        (key.clone(), self.mask_value(field, mount_type, readable))
                    })
                    .collect(),
            ),
        }
    }

    pub fn capture(&self) -> BodyCapture {
        BodyCapture {
            limit: self.max_body_bytes,
            captured: Vec::new(),
            seen: 0,
            hmac: self.hmac.clone(),
            unreadable: false,
        }
    }
}

fn hex_tagged(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(12 + bytes.len() * 2);
    out.push_str("hmac-sha256:");
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A bounded copy of a streamed body: the first `limit` bytes, plus the
/// total size and a running HMAC of every byte, so memory stays bounded
/// however large the body is.
#[derive(Clone)]
pub struct BodyCapture {
    limit: usize,
    captured: Vec<u8>,
    seen: usize,
    hmac: Option<HmacSha256>,
    /// A chunk could not be read: what was captured is incomplete.
    unreadable: bool,
}

impl BodyCapture {
    /// Whether feeding more bytes changes anything (HMAC, or room left).
    pub fn wants_more(&self) -> bool {
        self.hmac.is_some() || self.captured.len() < self.limit
    }

    pub fn mark_unreadable(&mut self) {
        self.unreadable = true;
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.unreadable {
            return;
        }
        self.seen = self.seen.saturating_add(chunk.len());
        if let Some(mac) = self.hmac.as_mut() {
            mac.update(chunk);
        }
        let room = self.limit.saturating_sub(self.captured.len());
        self.captured
            .extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    pub fn truncated(&self) -> bool {
        self.seen > self.captured.len() || self.unreadable
    }

    /// The body as the audit record shows it.
    pub fn render(
        &self,
        config: &AuditConfig,
        action: Option<Action>,
        mount_type: Option<&str>,
    ) -> Value {
        let unlogged = |flag: &str| {
            let mut out = Map::new();
            out.insert("size".into(), json!(self.seen));
            if let Some(mac) = self.hmac.clone() {
                out.insert(
                    "hmac".into(),
                    Value::String(hex_tagged(&mac.finalize().into_bytes())),
                );
            }
            out.insert("not_logged".into(), json!(flag));
            Value::Object(out)
        };
        if self.unreadable {
            return unlogged("unreadable");
        }
        if self.truncated() {
            return unlogged("over_max_body_bytes");
        }
        match serde_json::from_slice::<Value>(&self.captured) {
            Ok(body) => json!({"size": self.seen, "json": config.mask(&body, action, mount_type)}),
            Err(_) => unlogged("not_json"),
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

/// Renders the one audit record of a request.
pub fn render(
    config: &AuditConfig,
    record: &DecisionRecord,
    response: &ResponseFacts<'_>,
) -> String {
    let mount_type = record.mount_type.map(MountType::name);
    let body = |capture: Option<&BodyCapture>| match capture {
        Some(c) if !c.is_empty() => c.render(config, record.action, mount_type),
        _ => Value::Null,
    };
    let claims: Map<String, Value> = config
        .claims
        .iter()
        .filter_map(|name| Some((name.clone(), record.claims.get(name)?.clone())))
        .collect();
    let mut out = json!({
        "time": rfc3339(record.time_nanos),
        "request_id": record.request_id,
        "principal": record.principal.as_ref().map(|(kind, id)| json!({"type": kind, "id": id})),
        "claims": claims,
        "source_address": record.source_address,
        "method": record.method,
        "path": record.path,
        "namespace": record.namespace,
        "action": record.action.map(Action::as_str),
        "resource": record.resource.as_ref().map(ToString::to_string),
        "decision": record.outcome.as_str(),
        "reason": record.reason,
        "policies": record.policies,
        "errors": record.errors,
        "response_status": response.status,
        "request_body": body(response.request_body),
        "response_body": body(response.response_body),
        "token_hmac": record.token_hmac,
        "request_body_truncated": response.request_body.is_some_and(BodyCapture::truncated),
        "response_body_truncated": response.response_body.is_some_and(BodyCapture::truncated),
    });
    if let (Some(approval), Some(fields)) = (&record.approval, out.as_object_mut()) {
        fields.insert("approval".into(), approval.clone());
    }
    out.to_string()
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

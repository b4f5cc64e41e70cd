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
pub use crate::masking::MaskLimits;
use crate::masking::{self, MaskRules, Unmasked};
use crate::path::{parse_go_bool, query_unescape};
use crate::record::{DecisionInputs, DecisionRecord, Outcome, ShadowOutcome};
use crate::shapes::BodyKind;
use crate::version::FILTER_VERSION;

type HmacSha256 = Hmac<Sha256>;

/// Largest capture limit accepted: bodies are copied into the VM's memory.
pub const MAX_CAPTURE_LIMIT: usize = 16 * 1024 * 1024;
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// About four times what a KV secret of a dozen values needs; a body with
/// more values is summarised, so one record costs at most this many HMACs.
const DEFAULT_MAX_MASKED_VALUES: usize = 1024;
const MAX_MASKED_VALUES_LIMIT: usize = 1 << 20;
/// A default-sized body (64 KiB) of ordinary secrets masks well below this.
const DEFAULT_MAX_MASKED_BODY_BYTES: usize = 256 * 1024;
const MIN_MASKED_BODY_BYTES: usize = 1024;
const MAX_MASKED_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Two bodies at the default masking bound, with room for the rest.
const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// A compact record (no claims, no bodies, the path cut at 2 KiB) fits.
const MIN_RECORD_BYTES: usize = 4 * 1024;
const MAX_RECORD_BYTES_LIMIT: usize = 256 * 1024 * 1024;
/// A compact record cuts the principal's id to this many bytes.
const COMPACT_PRINCIPAL_BYTES: usize = 256;
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

/// What an auditor and an approver read first about a CI job; the
/// approval callout carries the same claims.
const DEFAULT_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "repository",
    "ref",
    "ref_protected",
    "environment",
    "workflow",
    "job_workflow_ref",
    "actor",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    HmacSha256,
    Redact,
}

impl MaskMode {
    /// The name operators configure, and the record's `masking` field.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskMode::HmacSha256 => "hmac-sha256",
            MaskMode::Redact => "redact",
        }
    }
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
    max_masked_values: Option<usize>,
    #[serde(default)]
    max_masked_body_bytes: Option<usize>,
    #[serde(default)]
    claims: Option<Vec<String>>,
    /// Extra readable fields of an engine's answer, per mount type (`kv-v2`,
    /// ..., or `default` for all).
    #[serde(default)]
    readable_keys: BTreeMap<String, Vec<String>>,
    /// Log the names a LIST returns (default: only how many).
    #[serde(default)]
    list_keys: bool,
    #[serde(default)]
    on_failure: Option<String>,
    #[serde(default)]
    max_record_bytes: Option<usize>,
    #[serde(default)]
    fields: RecordFields,
}

/// `audit.fields`: which of the record's fields are written. `all` (the
/// default) writes every documented field, `null`, `[]` and `false`
/// included, as the record always has. `present` leaves out fields that are
/// null or empty and the truncation flags when false: a shorter record for
/// Envoy to copy and escape into every access-log line, read the same way
/// by a consumer that treats a missing field as null, empty or false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFields {
    #[default]
    All,
    Present,
}

/// What happens to a request whose audit record cannot be handed to Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer 503 `audit unavailable` and forward nothing, as Vault refuses
    /// a request it cannot audit.
    Deny,
    /// Go on, with a compact record if one fits, and count the loss.
    Log,
}

/// The validated audit settings.
#[derive(Clone)]
pub struct AuditConfig {
    pub mode: MaskMode,
    /// Keyed HMAC state, cloned per use (never printed).
    hmac: Option<HmacSha256>,
    pub max_body_bytes: usize,
    pub mask_limits: MaskLimits,
    pub claims: Vec<String>,
    readable_default: KeySet,
    /// Per mount type: the default keys plus that mount's own.
    readable_by_mount: BTreeMap<&'static str, KeySet>,
    pub list_keys: bool,
    pub on_failure: OnFailure,
    /// A rendered record longer than this is not handed to Envoy.
    pub max_record_bytes: usize,
    pub fields: RecordFields,
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
            mask_limits: MaskLimits {
                max_masked_values: DEFAULT_MAX_MASKED_VALUES,
                max_masked_body_bytes: DEFAULT_MAX_MASKED_BODY_BYTES,
            },
            claims: DEFAULT_CLAIMS.iter().map(|c| (*c).to_owned()).collect(),
            readable_default: KeySet::default(),
            readable_by_mount: BTreeMap::new(),
            list_keys: false,
            on_failure: OnFailure::Deny,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            fields: RecordFields::All,
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
            fields: raw.fields,
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
        if let Some(values) = raw.max_masked_values {
            if !(1..=MAX_MASKED_VALUES_LIMIT).contains(&values) {
                return Err(format!(
                    "max_masked_values {values} is not between 1 and {MAX_MASKED_VALUES_LIMIT}"
                ));
            }
            config.mask_limits.max_masked_values = values;
        }
        if let Some(bytes) = raw.max_masked_body_bytes {
            if !(MIN_MASKED_BODY_BYTES..=MAX_MASKED_BODY_BYTES_LIMIT).contains(&bytes) {
                return Err(format!(
                    "max_masked_body_bytes {bytes} is not between {MIN_MASKED_BODY_BYTES} and {MAX_MASKED_BODY_BYTES_LIMIT}"
                ));
            }
            config.mask_limits.max_masked_body_bytes = bytes;
        }
        if let Some(claims) = raw.claims {
            config.claims = claims;
        }
        for (mount_type, keys) in raw.readable_keys {
            let mount = match mount_type.as_str() {
                "default" => None,
                name => Some(MountType::parse(name).ok_or_else(|| {
                    format!("readable_keys: {mount_type:?} is not a mount type (or \"default\")")
                })?),
            };
            if let Some(key) = keys
                .iter()
                .find(|k| NEVER_READABLE_KEYS.contains(&k.as_str()))
            {
                return Err(format!(
                    "readable_keys: {key:?} carries credentials and is always masked"
                ));
            }
            let set = match mount {
                None => &mut config.readable_default,
                Some(mount) => config.readable_by_mount.entry(mount.name()).or_default(),
            };
            set.extend(keys);
        }
        for set in config.readable_by_mount.values_mut() {
            set.extend(config.readable_default.0.iter().cloned());
        }
        config.list_keys = raw.list_keys;
        config.on_failure = match raw.on_failure.as_deref() {
            None | Some("deny") => OnFailure::Deny,
            Some("log") => OnFailure::Log,
            Some(other) => {
                return Err(format!(
                    "on_failure {other:?} is not one of \"deny\", \"log\""
                ))
            }
        };
        if let Some(bytes) = raw.max_record_bytes {
            if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES_LIMIT).contains(&bytes) {
                return Err(format!(
                    "max_record_bytes {bytes} is not between {MIN_RECORD_BYTES} and {MAX_RECORD_BYTES_LIMIT}"
                ));
            }
            config.max_record_bytes = bytes;
        }
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

    /// Masks a JSON body of `kind`: keys and structure stay; strings and
    /// numbers are masked unless the body's shape keeps them
    /// ([`crate::shapes`]); booleans and nulls stay.
    fn mask_json_bounded(&self, body: &[u8], kind: BodyKind) -> Result<String, Unmasked> {
        let rules = MaskScope {
            config: self,
            readable: kind
                .mount_type
                .and_then(|m| self.readable_by_mount.get(m.name()))
                .unwrap_or(&self.readable_default),
        };
        masking::mask_json(body, kind.shape(), &rules)
    }

    /// The masked JSON text of `body`, or `None` when it is not JSON or
    /// too costly to mask (past `max_masked_values` or `max_masked_body_bytes`).
    pub fn mask_json(&self, body: &[u8], kind: BodyKind) -> Option<String> {
        self.mask_json_bounded(body, kind).ok()
    }

    /// [`AuditConfig::mask_json`] of a parsed value, for callers holding one.
    pub fn mask(&self, body: &Value, kind: BodyKind) -> Value {
        serde_json::to_vec(body)
            .ok()
            .and_then(|bytes| self.mask_json(&bytes, kind))
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
}

impl MaskRules for MaskScope<'_> {
    fn configured_readable(&self, key: &str) -> bool {
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

    fn list_names_shown(&self) -> bool {
        self.config.list_keys
    }

    fn limits(&self) -> MaskLimits {
        self.config.mask_limits
    }
}

/// A small sorted set of key names: looked up once per JSON key, where
/// hashing each key cost more than a binary search over a few dozen names.
#[derive(Clone, Default)]
struct KeySet(Vec<String>);

impl KeySet {
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
    /// `{"size", "json": <masked>}` or `{"size", "hmac"?, "not_logged", ...}`.
    pub fn render(&self, config: &AuditConfig, kind: BodyKind) -> String {
        let unlogged = |flag: &str, bound: Option<(&str, usize)>| {
            let mut out = Map::new();
            out.insert("size".into(), json!(self.seen));
            if let Some(hmac) = self.hmac_of_seen() {
                out.insert("hmac".into(), Value::String(hmac));
            }
            out.insert("not_logged".into(), json!(flag));
            if let Some((name, limit)) = bound {
                out.insert(name.into(), json!(limit));
            }
            Value::Object(out).to_string()
        };
        if self.unreadable {
            return unlogged("unreadable", None);
        }
        if self.truncated() {
            return unlogged("over_max_body_bytes", None);
        }
        let limits = config.mask_limits;
        match config.mask_json_bounded(&self.captured, kind) {
            Ok(masked) => format!("{{\"size\":{},\"json\":{masked}}}", self.seen),
            Err(Unmasked::NotJson) => unlogged("not_json", None),
            Err(Unmasked::TooManyValues) => unlogged(
                "over_max_masked_values",
                Some(("truncated_at_values", limits.max_masked_values)),
            ),
            Err(Unmasked::TooLarge) => unlogged(
                "over_max_masked_body_bytes",
                Some(("truncated_at_bytes", limits.max_masked_body_bytes)),
            ),
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

/// Unix seconds of an RFC 3339 time (`2026-12-02T05:27:02.123Z`, or with
/// an offset such as `+01:00`): how `secretgate replay` reads a record's
/// `time` and `explain` its `--time`. Fractions of a second are dropped, as
/// the filter drops them for `context.now`.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range| number_in(text, range);
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (hours, minutes) = (number_in(rest, 1..3)?, number_in(rest, 4..6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let days_in_month = *month_days.get(usize::try_from(month - 1).ok()?)?;
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's algorithm, as `rfc3339`).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn number_in(text: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let digits = text.get(range)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The audit record's JSON shape (documented in the README). The fields
/// that `audit.fields: "present"` may leave out are [`Field`]s.
#[derive(Serialize)]
struct Record<'a> {
    time: String,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    principal: Field<PrincipalField<'a>>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    claims: Field<Map<String, Value>>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    source_address: Field<&'a str>,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    namespace: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    action: Field<&'static str>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    resource: Field<String>,
    decision: &'static str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    policies: Field<&'a [String]>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    errors: Field<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a Value>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    response_status: Field<u32>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    request_body: Field<Box<RawValue>>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    response_body: Field<Box<RawValue>>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    token_hmac: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    request_body_truncated: Field<bool>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    response_body_truncated: Field<bool>,
    /// How the values in this record were masked, so a reader (an auditor,
    /// `secretgate report`) never has to guess it from the values.
    masking: &'static str,
    /// The filter build, configuration and bundle that decided.
    filter_version: &'static str,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    config_revision: Field<&'a str>,
    #[serde(skip_serializing_if = "Field::is_omitted")]
    bundle_revision: Field<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<InputsField<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<ShadowField<'a>>,
    /// Only in a compact record: why the full one was not written.
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_error: Option<&'a str>,
}

/// A record field: a value, `null`, or left out.
enum Field<T> {
    Value(T),
    Null,
    Omitted,
}

impl<T> Field<T> {
    fn is_omitted(&self) -> bool {
        matches!(self, Field::Omitted)
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Value(value) => value.serialize(serializer),
            Field::Null | Field::Omitted => serializer.serialize_none(),
        }
    }
}

impl RecordFields {
    /// An optional field: `null` when absent, unless absent fields are left out.
    fn optional<T>(self, value: Option<T>) -> Field<T> {
        match (value, self) {
            (Some(value), _) => Field::Value(value),
            (None, RecordFields::All) => Field::Null,
            (None, RecordFields::Present) => Field::Omitted,
        }
    }

    /// A field always written in full records, left out when `empty`.
    fn unless_empty<T>(self, value: T, empty: bool) -> Field<T> {
        if empty && self == RecordFields::Present {
            Field::Omitted
        } else {
            Field::Value(value)
        }
    }
}

/// `inputs`: what the policies read (see [`DecisionInputs`]).
#[derive(Serialize)]
struct InputsField<'a> {
    claims: &'a Map<String, Value>,
    source_ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recent_reads: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_header: Option<&'a str>,
}

impl<'a> From<&'a DecisionInputs> for InputsField<'a> {
    fn from(inputs: &'a DecisionInputs) -> Self {
        InputsField {
            claims: &inputs.claims,
            source_ip: &inputs.source_ip,
            recent_reads: inputs.recent_reads,
            namespace_header: inputs.namespace_header.as_deref(),
        }
    }
}

/// `shadow`: the shadow policy set's verdict, or why there is none.
#[derive(Serialize)]
#[serde(untagged)]
enum ShadowField<'a> {
    Evaluated {
        decision: &'static str,
        agrees: bool,
        policies: &'a [String],
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        errors: &'a [String],
    },
    Absent {
        absent: &'a str,
    },
}

impl<'a> From<&'a ShadowOutcome> for ShadowField<'a> {
    fn from(shadow: &'a ShadowOutcome) -> Self {
        match shadow {
            ShadowOutcome::Evaluated {
                verdict,
                agrees,
                policies,
                errors,
            } => ShadowField::Evaluated {
                decision: verdict.as_str(),
                agrees: *agrees,
                policies,
                errors,
            },
            ShadowOutcome::Absent(reason) => ShadowField::Absent { absent: reason },
        }
    }
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
    render_record(config, record, response, None)
}

/// The record written when the full one cannot be: no claims, no bodies,
/// the principal's id cut, and why (`audit_error`). It is small whatever
/// the request was, so it fits where the full one did not.
fn render_compact(
    config: &AuditConfig,
    record: &DecisionRecord,
    status: Option<u32>,
    audit_error: &str,
) -> String {
    let mut compact = DecisionRecord {
        claims: Map::new(),
        ..record.clone()
    };
    if let Some(inputs) = compact.inputs.as_mut() {
        inputs.claims = Map::new();
    }
    if let Some((_, id)) = compact.principal.as_mut() {
        if id.len() > COMPACT_PRINCIPAL_BYTES {
            let mut cut = COMPACT_PRINCIPAL_BYTES;
            while !id.is_char_boundary(cut) {
                cut -= 1;
            }
            id.truncate(cut);
        }
    }
    let response = ResponseFacts {
        status,
        ..ResponseFacts::default()
    };
    render_record(config, &compact, &response, Some(audit_error))
}

fn render_record(
    config: &AuditConfig,
    record: &DecisionRecord,
    response: &ResponseFacts<'_>,
    audit_error: Option<&str>,
) -> String {
    let body = |capture: Option<&BodyCapture>, kind: BodyKind| {
        let capture = capture.filter(|c| !c.is_empty())?;
        RawValue::from_string(capture.render(config, kind)).ok()
    };
    let claims: Map<String, Value> = config
        .claims
        .iter()
        .filter_map(|name| Some((name.clone(), record.claims.get(name)?.clone())))
        .collect();
    let fields = config.fields;
    let claims_empty = claims.is_empty();
    let request_body_truncated = response.request_body.is_some_and(BodyCapture::truncated);
    let response_body_truncated = response.response_body.is_some_and(BodyCapture::truncated);
    let out = Record {
        time: rfc3339(record.time_nanos),
        request_id: &record.request_id,
        principal: fields.optional(
            record
                .principal
                .as_ref()
                .map(|(kind, id)| PrincipalField { kind, id }),
        ),
        claims: fields.unless_empty(claims, claims_empty),
        source_address: fields.optional(record.source_address.as_deref()),
        method: &record.method,
        path: &record.path,
        namespace: fields.unless_empty(&record.namespace, record.namespace.is_empty()),
        action: fields.optional(record.action.map(Action::as_str)),
        resource: fields.optional(record.resource.as_ref().map(ToString::to_string)),
        decision: record.outcome.as_str(),
        reason: &record.reason,
        policies: fields.unless_empty(&record.policies, record.policies.is_empty()),
        errors: fields.unless_empty(&record.errors, record.errors.is_empty()),
        approval: record.approval.as_ref(),
        response_status: fields.optional(response.status),
        request_body: fields.optional(body(
            response.request_body,
            BodyKind::request(record.mount_type),
        )),
        response_body: fields.optional(body(
            response.response_body,
            BodyKind::response(record.mount_type, record.listing),
        )),
        token_hmac: fields.optional(record.token_hmac.as_deref()),
        request_body_truncated: fields
            .unless_empty(request_body_truncated, !request_body_truncated),
        response_body_truncated: fields
            .unless_empty(response_body_truncated, !response_body_truncated),
        masking: config.mode.as_str(),
        filter_version: FILTER_VERSION,
        config_revision: fields.optional(record.revisions.as_ref().map(|r| &*r.config)),
        bundle_revision: fields
            .optional(record.revisions.as_ref().and_then(|r| r.bundle.as_deref())),
        inputs: record.inputs.as_ref().map(InputsField::from),
        shadow: record.shadow.as_ref().map(ShadowField::from),
        audit_error,
    };
    // Serialising plain strings, numbers and pre-validated JSON cannot fail;
    // if it ever did, an empty object still marks that a request happened.
    serde_json::to_string(&out).unwrap_or_else(|_| "{}".to_owned())
}

/// Where records go: Envoy's filter state in the filter, a fake in tests.
pub trait RecordSink {
    /// Hands one rendered record over; `Err` says why the host refused it.
    fn put(&mut self, record: &str) -> Result<(), String>;
}

/// When a record is written, relative to the client's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before anything is forwarded or answered: a failure can still refuse.
    BeforeAnswer,
    /// The answer has started (or the client left): it cannot be taken back.
    AnswerStarted,
}

/// What became of a record handed to [`deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The full record was written.
    Written,
    /// `on_failure: deny`, before the answer: the request must be answered
    /// 503 `audit unavailable` and not forwarded. A compact record saying so
    /// was written, if the host took it.
    Refused,
    /// The full record was not written and the answer goes on (`log`, or
    /// too late to refuse); a compact record was written if the host took it.
    Lost,
}

/// Writes a request's record into `sink`, never past `max_record_bytes`,
/// and decides what a failure means for the request.
pub fn deliver(
    config: &AuditConfig,
    record: &DecisionRecord,
    response: &ResponseFacts<'_>,
    stage: Stage,
    sink: &mut impl RecordSink,
) -> Delivery {
    let full = render(config, record, response);
    let failure = if full.len() > config.max_record_bytes {
        format!(
            "record of {} bytes is over max_record_bytes ({})",
            full.len(),
            config.max_record_bytes
        )
    } else {
        match sink.put(&full) {
            Ok(()) => return Delivery::Written,
            Err(e) => format!("the host refused the record: {e}"),
        }
    };
    let refuse = config.on_failure == OnFailure::Deny && stage == Stage::BeforeAnswer;
    let compact = if refuse {
        let refused = DecisionRecord {
            outcome: Outcome::AuditUnavailable,
            reason: AUDIT_UNAVAILABLE.to_owned(),
            ..record.clone()
        };
        render_compact(config, &refused, Some(503), &failure)
    } else {
        render_compact(config, record, response.status, &failure)
    };
    // Best effort: a host that refused the full record may take this one.
    let _ = sink.put(&compact);
    if refuse {
        Delivery::Refused
    } else {
        Delivery::Lost
    }
}

/// The error a request refused for want of an audit record gets.
pub const AUDIT_UNAVAILABLE: &str = "audit unavailable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_what_it_formats_and_offsets() {
        for nanos in [
            0u64,
            1_700_000_100_123_000_000,
            951_782_400_000_000_000,
            4_107_542_399_000_000_000,
        ] {
            let text = rfc3339(nanos);
            assert_eq!(
                parse_rfc3339(&text),
                Some((nanos / 1_000_000_000) as i64),
                "{text}"
            );
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01",
            "x024-01-01T00:00:00Z",
            "2024-01-01T00:00:00+01:60",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

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

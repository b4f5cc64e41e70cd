//! Human approval for high-risk secrets: which permits require it (Cedar
//! annotations), what the filter asks the approval service, and how its
//! reply is read. Every reply that is not a well-formed decision is a deny.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{json, Value};

/// How a request waits for a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// The filter holds the request (long poll) until a decision or timeout.
    Hold,
    /// The filter answers 403 at once; the client retries once approved.
    Retry,
}

impl ApprovalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalMode::Hold => "hold",
            ApprovalMode::Retry => "retry",
        }
    }
}

/// What a permit's `@approval(...)` annotations require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    pub approvers: String,
    pub ttl_s: u64,
    pub mode: ApprovalMode,
}

const DEFAULT_TTL_S: u64 = 15 * 60;
const MAX_TTL_S: u64 = 7 * 24 * 3600;

/// Parses `90s`, `15m`, `1h30m`, `2d` into seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let amount: u64 = digits.parse().ok()?;
        total = total.checked_add(amount.checked_mul(unit)?)?;
        digits.clear();
        saw_unit = true;
    }
    (digits.is_empty() && saw_unit && total > 0).then_some(total)
}

impl ApprovalRule {
    /// Reads a policy's annotations; `Ok(None)` when it needs no approval.
    pub fn from_annotations(
        annotation: impl Fn(&str) -> Option<String>,
        is_permit: bool,
    ) -> Result<Option<ApprovalRule>, String> {
        let approvers = annotation("approval");
        let ttl = annotation("approval_ttl");
        let mode = annotation("approval_mode");
        let Some(approvers) = approvers else {
            if ttl.is_some() || mode.is_some() {
                return Err("@approval_ttl/@approval_mode need @approval(\"<group>\")".into());
            }
            return Ok(None);
        };
        if !is_permit {
            return Err("@approval only makes sense on a permit".into());
        }
        if approvers.trim().is_empty() {
            return Err("@approval needs an approver group".into());
        }
        let ttl_s = match ttl {
            None => DEFAULT_TTL_S,
            Some(text) => parse_duration(&text)
                .filter(|s| *s <= MAX_TTL_S)
                .ok_or_else(|| {
                    format!("@approval_ttl({text:?}) is not a duration up to 7d like \"15m\"")
                })?,
        };
        let mode = match mode.as_deref() {
            None | Some("hold") => ApprovalMode::Hold,
            Some("retry") => ApprovalMode::Retry,
            Some(other) => {
                return Err(format!(
                    "@approval_mode({other:?}) is not \"hold\" or \"retry\""
                ))
            }
        };
        Ok(Some(ApprovalRule {
            approvers,
            ttl_s,
            mode,
        }))
    }
}

/// The approval requirements of every annotated permit, by policy id.
#[derive(Debug, Clone, Default)]
pub struct ApprovalRules {
    by_policy: HashMap<String, ApprovalRule>,
}

impl ApprovalRules {
    pub fn insert(&mut self, policy_id: String, rule: ApprovalRule) {
        self.by_policy.insert(policy_id, rule);
    }

    pub fn is_empty(&self) -> bool {
        self.by_policy.is_empty()
    }

    /// Given the permits that allowed a request (sorted ids): `None` when
    /// at least one needs no approval (it passes without asking), else the
    /// first annotated permit's requirement.
    pub fn required<'a>(&'a self, permits: &'a [String]) -> Option<(&'a str, &'a ApprovalRule)> {
        let mut first = None;
        for id in permits {
            match self.by_policy.get(id) {
                None => return None,
                Some(rule) if first.is_none() => first = Some((id.as_str(), rule)),
                Some(_) => {}
            }
        }
        first
    }
}

/// `approval` in the plugin configuration (README: Approval).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// The Envoy cluster of the approval service.
    pub cluster: String,
    pub authority: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// The whole callout's timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// How long the service may hold a `hold` request (below `timeout_ms`).
    #[serde(default)]
    pub wait_ms: Option<u32>,
    /// Bearer token the service expects on callouts.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_path() -> String {
    "/v1/approvals".into()
}

fn default_timeout_ms() -> u32 {
    30_000
}

impl ApprovalConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster.is_empty() || self.authority.is_empty() {
            return Err("cluster and authority must not be empty".into());
        }
        if !self.path.starts_with('/') {
            return Err("path must start with /".into());
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be positive".into());
        }
        if self.effective_wait_ms() >= self.timeout_ms {
            return Err("wait_ms must be below timeout_ms".into());
        }
        Ok(())
    }

    /// The hold time sent to the service: a second short of the timeout
    /// unless configured, so its answer arrives before the callout times out.
    pub fn effective_wait_ms(&self) -> u32 {
        self.wait_ms
            .unwrap_or_else(|| self.timeout_ms.saturating_sub(1000))
    }
}

/// What the filter asks.
pub struct CalloutRequest<'a> {
    pub request_id: &'a str,
    pub principal_type: &'a str,
    pub principal_id: &'a str,
    pub claims: &'a serde_json::Map<String, Value>,
    pub action: &'a str,
    pub resource: &'a str,
    pub policy: &'a str,
    pub rule: &'a ApprovalRule,
    pub reason: &'a str,
    pub wait_ms: u32,
}

impl CalloutRequest<'_> {
    pub fn body(&self) -> String {
        let wait_ms = match self.rule.mode {
            ApprovalMode::Hold => self.wait_ms,
            ApprovalMode::Retry => 0,
        };
        json!({
            "request_id": self.request_id,
            "principal": {"type": self.principal_type, "id": self.principal_id},
            "claims": self.claims,
            "action": self.action,
            "resource": self.resource,
            "policies": [self.policy],
            "approvers": self.rule.approvers,
            "reason": self.reason,
            "mode": self.rule.mode.as_str(),
            "wait_ms": wait_ms,
            "ttl_s": self.rule.ttl_s,
        })
        .to_string()
    }
}

/// The service's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalReply {
    Approved {
        grant_id: String,
        approver: String,
        expires_at: String,
    },
    Denied {
        approver: String,
        reason: String,
    },
    Pending {
        approval_id: String,
        approval_url: String,
    },
}

/// Why a reply cannot be trusted; each is a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// No response at all: connection failure, reset or timeout.
    Unreachable,
    /// Envoy refused to send the callout (e.g. the cluster does not exist).
    CalloutRejected,
    Status(u32),
    Malformed(&'static str),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Unreachable => f.write_str("approval service unreachable or timed out"),
            ReplyError::CalloutRejected => f.write_str("callout to the approval cluster refused"),
            ReplyError::Status(status) => write!(f, "approval service answered HTTP {status}"),
            ReplyError::Malformed(what) => write!(f, "malformed approval reply: {what}"),
        }
    }
}

const MAX_FIELD_LEN: usize = 1024;

fn field(reply: &Value, name: &'static str) -> Result<String, ReplyError> {
    match reply.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_FIELD_LEN => Ok(s.clone()),
        _ => Err(ReplyError::Malformed(name)),
    }
}

/// Reads the service's reply; anything but a 200 with one exact shape is an error.
pub fn parse_reply(status: Option<u32>, body: &[u8]) -> Result<ApprovalReply, ReplyError> {
    match status {
        None => return Err(ReplyError::Unreachable),
        Some(200) => {}
        Some(other) => return Err(ReplyError::Status(other)),
    }
    let reply: Value =
        serde_json::from_slice(body).map_err(|_| ReplyError::Malformed("not JSON"))?;
    if !reply.is_object() {
        return Err(ReplyError::Malformed("not an object"));
    }
    match reply.get("status").and_then(Value::as_str) {
        Some("approved") => Ok(ApprovalReply::Approved {
            grant_id: field(&reply, "grant_id")?,
            approver: field(&reply, "approver")?,
            expires_at: field(&reply, "expires_at")?,
        }),
        Some("denied") => Ok(ApprovalReply::Denied {
            approver: field(&reply, "approver")?,
            reason: reply
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(MAX_FIELD_LEN)
                .collect(),
        }),
        Some("pending") => Ok(ApprovalReply::Pending {
            approval_id: field(&reply, "approval_id")?,
            approval_url: field(&reply, "approval_url")?,
        }),
        _ => Err(ReplyError::Malformed("status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("2d"), Some(172_800));
        for bad in ["", "15", "m", "1x", "-5m", "0s", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn annotations_parse_with_defaults_and_refuse_nonsense() {
        let rule = ApprovalRule::from_annotations(annotations(&[("approval", "secops")]), true)
            .unwrap()
            .unwrap();
        assert_eq!(rule.ttl_s, 900);
        assert_eq!(rule.mode, ApprovalMode::Hold);
        let rule = ApprovalRule::from_annotations(
            annotations(&[
                ("approval", "secops"),
                ("approval_ttl", "1h"),
                ("approval_mode", "retry"),
            ]),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!((rule.ttl_s, rule.mode), (3600, ApprovalMode::Retry));
        assert_eq!(
            ApprovalRule::from_annotations(annotations(&[]), true),
            Ok(None)
        );
        for (pairs, permit) in [
            (vec![("approval", "secops")], false),
            (vec![("approval", " ")], true),
            (vec![("approval_ttl", "1h")], true),
            (vec![("approval", "secops"), ("approval_ttl", "soon")], true),
            (vec![("approval", "secops"), ("approval_ttl", "30d")], true),
            (
                vec![("approval", "secops"), ("approval_mode", "later")],
                true,
            ),
        ] {
            assert!(
                ApprovalRule::from_annotations(annotations(&pairs), permit).is_err(),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn an_unannotated_permit_passes_without_asking() {
        let mut rules = ApprovalRules::default();
        let rule = ApprovalRule {
            approvers: "secops".into(),
            ttl_s: 900,
            mode: ApprovalMode::Hold,
        };
        rules.insert("prod-needs-approval".into(), rule.clone());
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            rules.required(&ids(&["prod-needs-approval"])),
            Some(("prod-needs-approval", &rule))
        );
        assert_eq!(
            rules.required(&ids(&["prod-needs-approval", "break-glass"])),
            None
        );
        assert_eq!(rules.required(&ids(&[])), None);
    }

    #[test]
    fn replies_parse_only_in_their_exact_shapes() {
        let ok = |body: &str| parse_reply(Some(200), body.as_bytes());
        assert_eq!(
            ok(
                r#"{"status":"approved","grant_id":"gr_1","approver":"alice","expires_at":"2026-11-28T14:00:00Z"}"#
            ),
            Ok(ApprovalReply::Approved {
                grant_id: "gr_1".into(),
                approver: "alice".into(),
                expires_at: "2026-11-28T14:00:00Z".into()
            })
        );
        assert_eq!(
            ok(r#"{"status":"denied","approver":"bob","reason":"freeze"}"#),
            Ok(ApprovalReply::Denied {
                approver: "bob".into(),
                reason: "freeze".into()
            })
        );
        assert!(matches!(
            ok(r#"{"status":"pending","approval_id":"ap_1","approval_url":"http://x/#ap_1"}"#),
            Ok(ApprovalReply::Pending { .. })
        ));
        assert_eq!(parse_reply(None, b""), Err(ReplyError::Unreachable));
        assert_eq!(parse_reply(Some(503), b"{}"), Err(ReplyError::Status(503)));
        assert_eq!(parse_reply(Some(302), b""), Err(ReplyError::Status(302)));
        for malformed in [
            "",
            "not json",
            "[]",
            "\"approved\"",
            "{}",
            r#"{"status":"APPROVED","grant_id":"g","approver":"a","expires_at":"t"}"#,
            r#"{"status":"approved"}"#,
            r#"{"status":"approved","grant_id":"","approver":"a","expires_at":"t"}"#,
            r#"{"status":"approved","grant_id":1,"approver":"a","expires_at":"t"}"#,
            r#"{"status":"denied"}"#,
            r#"{"status":"pending","approval_id":"ap_1"}"#,
            r#"{"status":"maybe"}"#,
        ] {
            assert!(
                matches!(ok(malformed), Err(ReplyError::Malformed(_))),
                "{malformed}"
            );
        }
    }

    #[test]
    fn config_validation() {
        let config = |v: Value| serde_json::from_value::<ApprovalConfig>(v).unwrap();
        assert!(
            config(json!({"cluster": "approver", "authority": "approver"}))
                .validate()
                .is_ok()
        );
        assert_eq!(
            config(json!({"cluster": "a", "authority": "a", "timeout_ms": 5000}))
                .effective_wait_ms(),
            4000
        );
        assert!(config(
            json!({"cluster": "a", "authority": "a", "timeout_ms": 5000, "wait_ms": 5000})
        )
        .validate()
        .is_err());
        assert!(config(json!({"cluster": "", "authority": "a"}))
            .validate()
            .is_err());
        assert!(
            config(json!({"cluster": "a", "authority": "a", "path": "v1"}))
                .validate()
                .is_err()
        );
        assert!(serde_json::from_value::<ApprovalConfig>(
            json!({"cluster": "a", "authority": "a", "x": 1})
        )
        .is_err());
    }
}

//! Human approval for high-risk secrets: which permits require it (Cedar
//! annotations), what the filter asks the approval service, and how its
//! reply is read. Every reply that is not a well-formed decision is a deny.
//!
//! The callout's shapes are `approval_protocol`'s, shared with the bundled
//! approver, so that what the filter sends and what it accepts are the
//! approver's types and the golden examples both crates are tested against.

use std::collections::HashMap;
use std::fmt;

use approval_protocol::{parse_reply as parse_reply_body, CalloutRequest, Malformed, Principal};
pub use approval_protocol::{CalloutReply, Mode};
use serde::Deserialize;
use serde_json::Value;

/// What a permit's `@approval(...)` annotations require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    pub approvers: String,
    pub ttl_s: u64,
    pub mode: Mode,
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
            None | Some("hold") => Mode::Hold,
            Some("retry") => Mode::Retry,
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

/// What the filter knows when it asks.
pub struct Callout<'a> {
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

impl Callout<'_> {
    pub fn request(&self) -> CalloutRequest {
        CalloutRequest {
            request_id: self.request_id.to_owned(),
            principal: Principal {
                kind: self.principal_type.to_owned(),
                id: self.principal_id.to_owned(),
            },
            claims: self.claims.clone(),
            action: self.action.to_owned(),
            resource: self.resource.to_owned(),
            policies: vec![self.policy.to_owned()],
            approvers: self.rule.approvers.clone(),
            reason: self.reason.to_owned(),
            mode: self.rule.mode,
            // Retry mode is never held: 0 says so even to a service that
            // looks only at `wait_ms`.
            wait_ms: match self.rule.mode {
                Mode::Hold => self.wait_ms,
                Mode::Retry => 0,
            },
            ttl_s: Some(self.rule.ttl_s),
        }
    }

    /// The callout body. Encoding plain strings and numbers does not fail;
    /// should it ever, the caller refuses the request rather than send nothing.
    pub fn body(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&self.request())
    }
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

/// Reads the service's reply; anything but a 200 with one exact shape is an error.
pub fn parse_reply(status: Option<u32>, body: &[u8]) -> Result<CalloutReply, ReplyError> {
    match status {
        None => return Err(ReplyError::Unreachable),
        Some(200) => {}
        Some(other) => return Err(ReplyError::Status(other)),
    }
    parse_reply_body(body).map_err(|Malformed(what)| ReplyError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(rule.mode, Mode::Hold);
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
        assert_eq!((rule.ttl_s, rule.mode), (3600, Mode::Retry));
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
            mode: Mode::Hold,
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

    // The bodies are the golden examples' (plugin/tests/approval_protocol.rs);
    // what is the filter's own is that only a 200 carries a decision.
    #[test]
    fn only_a_200_carries_a_decision() {
        let approved = br#"{"status":"approved","grant_id":"gr_1","approver":"alice","expires_at":"2026-11-28T14:00:00Z"}"#;
        assert!(parse_reply(Some(200), approved).is_ok());
        assert_eq!(parse_reply(None, approved), Err(ReplyError::Unreachable));
        assert_eq!(
            parse_reply(Some(201), approved),
            Err(ReplyError::Status(201))
        );
        assert_eq!(parse_reply(Some(503), b"{}"), Err(ReplyError::Status(503)));
        assert_eq!(parse_reply(Some(302), b""), Err(ReplyError::Status(302)));
        assert_eq!(
            parse_reply(Some(200), b"{}"),
            Err(ReplyError::Malformed("status"))
        );
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

//! The approval callout protocol: what the Secretgate filter POSTs to an
//! approval service and what the service answers. The filter and the bundled
//! approver both build on these types, so the two cannot drift apart; the
//! examples in `golden/` are the contract's test cases and both crates'
//! tests read them. Documented in `approver/README.md` (the callout
//! protocol): a public API, extended only additively, which is why unknown
//! fields are ignored on both sides.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(feature = "golden")]
pub mod golden;

/// Grant lifetime when a callout does not carry `ttl_s`.
pub const DEFAULT_GRANT_TTL_S: u64 = 900;

/// Longest reply field the filter accepts (bytes) and longest denial reason
/// it keeps (characters): a reply ends up in audit records and error bodies.
pub const MAX_FIELD_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// How the requester waits for a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The service long-polls up to `wait_ms` for a decision.
    Hold,
    /// The service answers at once. A callout without `mode` means this, so
    /// that a caller that never asked to be held is never held.
    #[default]
    Retry,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hold => "hold",
            Mode::Retry => "retry",
        }
    }
}

/// What the filter POSTs to the callout path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalloutRequest {
    pub request_id: String,
    pub principal: Principal,
    #[serde(default)]
    pub claims: Map<String, Value>,
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub policies: Vec<String>,
    pub approvers: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub mode: Mode,
    /// Milliseconds, 0 to 4294967295: the filter's `timeout_ms` and `wait_ms`
    /// settings are u32 too, so every value it can send is readable here and
    /// anything larger is refused rather than silently capped.
    #[serde(default)]
    pub wait_ms: u32,
    /// Additive: lifetime of the grant an approval creates (default 900 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

impl CalloutRequest {
    /// The only way a service should read a callout body: the JSON shape,
    /// then the rules the type cannot express.
    pub fn parse(body: &[u8]) -> Result<CalloutRequest, String> {
        let request: CalloutRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        request.validate()?;
        Ok(request)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("request_id", &self.request_id),
            ("principal.type", &self.principal.kind),
            ("principal.id", &self.principal.id),
            ("action", &self.action),
            ("resource", &self.resource),
            ("approvers", &self.approvers),
        ] {
            if v.is_empty() {
                return Err(format!("{name} must not be empty"));
            }
        }
        if self.ttl_s == Some(0) {
            return Err("ttl_s must be positive".into());
        }
        Ok(())
    }
}

/// What the service answers (always with HTTP 200). Serialisation is the
/// service's side; the filter's side is [`parse_reply`], which is stricter
/// than a derived `Deserialize` would be, so there is deliberately none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum CalloutReply {
    Approved {
        grant_id: String,
        approver: String,
        /// RFC 3339, UTC, second precision.
        expires_at: String,
    },
    Denied {
        approver: String,
        /// Optional on the wire (a service may have nothing to say); read as "".
        reason: String,
    },
    Pending {
        approval_id: String,
        approval_url: String,
    },
}

/// Why a reply body is not a decision: the field (or "not JSON", "not an
/// object", "status") that is missing or wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

fn field(reply: &Map<String, Value>, name: &'static str) -> Result<String, Malformed> {
    match reply.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_FIELD_LEN => Ok(s.clone()),
        _ => Err(Malformed(name)),
    }
}

/// Reads a reply body in exactly one of the three shapes. Fields not named
/// here are ignored, so that services may add some; a named field with the
/// wrong type or an empty value is never guessed at.
pub fn parse_reply(body: &[u8]) -> Result<CalloutReply, Malformed> {
    let reply: Value = serde_json::from_slice(body).map_err(|_| Malformed("not JSON"))?;
    let Value::Object(reply) = reply else {
        return Err(Malformed("not an object"));
    };
    match reply.get("status").and_then(Value::as_str) {
        Some("approved") => Ok(CalloutReply::Approved {
            grant_id: field(&reply, "grant_id")?,
            approver: field(&reply, "approver")?,
            expires_at: field(&reply, "expires_at")?,
        }),
        Some("denied") => Ok(CalloutReply::Denied {
            approver: field(&reply, "approver")?,
            reason: match reply.get("reason") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.chars().take(MAX_FIELD_LEN).collect(),
                Some(_) => return Err(Malformed("reason")),
            },
        }),
        Some("pending") => Ok(CalloutReply::Pending {
            approval_id: field(&reply, "approval_id")?,
            approval_url: field(&reply, "approval_url")?,
        }),
        _ => Err(Malformed("status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_long_denial_reason_is_cut_to_the_limit_in_characters() {
        let reason = "é".repeat(MAX_FIELD_LEN + 10);
        let body = json!({"status": "denied", "approver": "bob", "reason": reason}).to_string();
        let Ok(CalloutReply::Denied { reason, .. }) = parse_reply(body.as_bytes()) else {
            panic!("a long reason is still a denial");
        };
        assert_eq!(reason.chars().count(), MAX_FIELD_LEN);
    }

    #[test]
    fn other_fields_are_bounded_not_cut() {
        let long = "g".repeat(MAX_FIELD_LEN + 1);
        let body = json!({"status": "approved", "grant_id": long, "approver": "a",
                          "expires_at": "2026-01-01T00:00:00Z"})
        .to_string();
        assert_eq!(parse_reply(body.as_bytes()), Err(Malformed("grant_id")));
        let exact = "g".repeat(MAX_FIELD_LEN);
        let body = json!({"status": "approved", "grant_id": exact, "approver": "a",
                          "expires_at": "2026-01-01T00:00:00Z"})
        .to_string();
        assert!(parse_reply(body.as_bytes()).is_ok());
    }

    #[test]
    fn a_request_without_mode_is_answered_at_once() {
        let r = CalloutRequest::parse(
            br#"{"request_id": "r", "principal": {"type": "User", "id": "u"},
                 "action": "read", "resource": "x", "approvers": "g", "wait_ms": 5000}"#,
        )
        .unwrap();
        assert_eq!(r.mode, Mode::Retry);
    }
}

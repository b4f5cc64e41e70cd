//! The callout contract between the Secretgate filter and this service.
//! Documented in `approver/README.md`; changes here are changes to a public API.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Grant lifetime when the callout does not carry `ttl_s`.
pub const DEFAULT_GRANT_TTL_S: u64 = 900;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Long-poll up to `wait_ms` for a decision.
    Hold,
    /// Answer at once.
    #[default]
    Retry,
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
    #[serde(default)]
    pub wait_ms: u64,
    /// Additive: lifetime of the grant an approval creates (default 900 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

impl CalloutRequest {
    /// Identities that count as "the requester" for the self-approval rule:
    /// the principal id, and the `actor` and `email` claims when they are strings.
    pub fn requester_identities(&self) -> Vec<String> {
        let mut ids = vec![self.principal.id.clone()];
        for claim in ["actor", "email"] {
            if let Some(Value::String(s)) = self.claims.get(claim) {
                if !s.is_empty() {
                    ids.push(s.clone());
                }
            }
        }
        ids
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

/// What the service answers (always with HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        reason: String,
    },
    Pending {
        approval_id: String,
        approval_url: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_parses_the_documented_shape() {
        let v = json!({
            "request_id": "r1",
            "principal": {"type": "User", "id": "bob"},
            "claims": {"email": "bob@example.com", "actor": "bob-bot"},
            "action": "read",
            "resource": "secret/data/prod/db",
            "policies": ["p1", "p2"],
            "approvers": "secops",
            "reason": "INC-1",
            "mode": "hold",
            "wait_ms": 5000
        });
        let r: CalloutRequest = serde_json::from_value(v).unwrap();
        assert_eq!(r.principal.kind, "User");
        assert_eq!(r.mode, Mode::Hold);
        assert_eq!(r.wait_ms, 5000);
        assert_eq!(r.ttl_s, None);
        assert_eq!(r.policies, vec!["p1", "p2"]);
        assert_eq!(
            r.requester_identities(),
            vec!["bob", "bob-bot", "bob@example.com"]
        );
        assert!(r.validate().is_ok());
    }

    #[test]
    fn request_ttl_is_additive_and_mode_retry_parses() {
        let v = json!({
            "request_id": "r1", "principal": {"type": "User", "id": "bob"},
            "action": "read", "resource": "x", "approvers": "g",
            "mode": "retry", "wait_ms": 0, "ttl_s": 60
        });
        let r: CalloutRequest = serde_json::from_value(v).unwrap();
        assert_eq!(r.mode, Mode::Retry);
        assert_eq!(r.ttl_s, Some(60));
        assert!(r.claims.is_empty());
        assert_eq!(r.reason, "");
    }

    #[test]
    fn request_rejects_unknown_mode_and_empty_fields() {
        let v = json!({
            "request_id": "r1", "principal": {"type": "User", "id": "bob"},
            "action": "read", "resource": "x", "approvers": "g", "mode": "wait"
        });
        assert!(serde_json::from_value::<CalloutRequest>(v).is_err());
        let v = json!({
            "request_id": "r1", "principal": {"type": "User", "id": ""},
            "action": "read", "resource": "x", "approvers": "g"
        });
        let r: CalloutRequest = serde_json::from_value(v).unwrap();
        assert!(r.validate().is_err());
    }

    #[test]
    fn replies_serialise_to_the_documented_shapes() {
        let a = CalloutReply::Approved {
            grant_id: "g1".into(),
            approver: "alice".into(),
            expires_at: "2026-01-01T00:15:00Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"status": "approved", "grant_id": "g1", "approver": "alice",
                   "expires_at": "2026-01-01T00:15:00Z"})
        );
        let d = CalloutReply::Denied {
            approver: "alice".into(),
            reason: "no".into(),
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"status": "denied", "approver": "alice", "reason": "no"})
        );
        let p = CalloutReply::Pending {
            approval_id: "a1".into(),
            approval_url: "http://127.0.0.1/#a1".into(),
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"status": "pending", "approval_id": "a1",
                   "approval_url": "http://127.0.0.1/#a1"})
        );
        let back: CalloutReply = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}

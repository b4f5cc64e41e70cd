//! Who may decide an approval.

use crate::config::Approver;
use crate::store::Approval;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The approver is not in the approval's `approvers` group.
    NotInGroup,
    /// The approver is the requester (principal id, `actor` or `email` claim).
    SelfApproval,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotInGroup => write!(f, "not a member of the approver group"),
            Refusal::SelfApproval => write!(f, "nobody may decide their own request"),
        }
    }
}

/// Whether `who` is in the group that may see and decide `approval`.
pub fn in_group(who: &Approver, approval: &Approval) -> bool {
    who.groups.iter().any(|g| g == &approval.approvers)
}

/// Whether `who` may approve or deny `approval`. Identities compare
/// case-insensitively so that `Bob@Example.com` cannot approve `bob@example.com`.
pub fn may_decide(who: &Approver, approval: &Approval) -> Result<(), Refusal> {
    let me = who.id.to_lowercase();
    if approval
        .requester_identities()
        .iter()
        .any(|id| id.to_lowercase() == me)
    {
        return Err(Refusal::SelfApproval);
    }
    if !in_group(who, approval) {
        return Err(Refusal::NotInGroup);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CalloutRequest, Mode, Principal};
    use crate::store::Store;
    use serde_json::{json, Map};

    fn approval(pid: &str, claims: serde_json::Value) -> Approval {
        let s = Store::open_in_memory().unwrap();
        let claims: Map<_, _> = serde_json::from_value(claims).unwrap();
        let r = CalloutRequest {
            request_id: "r".into(),
            principal: Principal {
                kind: "User".into(),
                id: pid.into(),
            },
            claims,
            action: "read".into(),
            resource: "x".into(),
            policies: vec![],
            approvers: "secops".into(),
            reason: String::new(),
            mode: Mode::Retry,
            wait_ms: 0,
            ttl_s: None,
        };
        s.create_approval(&r, 900, 1000, 0).unwrap()
    }

    fn who(id: &str, groups: &[&str]) -> Approver {
        Approver {
            id: id.into(),
            token: "t".repeat(16),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn group_member_who_is_not_the_requester_may_decide() {
        let a = approval("bob", json!({}));
        assert_eq!(may_decide(&who("alice", &["secops"]), &a), Ok(()));
    }

    #[test]
    fn non_member_may_not_decide() {
        let a = approval("bob", json!({}));
        assert_eq!(
            may_decide(&who("alice", &["dba", "SECOPS"]), &a),
            Err(Refusal::NotInGroup)
        );
        assert_eq!(may_decide(&who("alice", &[]), &a), Err(Refusal::NotInGroup));
    }

    #[test]
    fn requester_may_not_decide_by_id_actor_or_email() {
        let a = approval(
            "svc-deploy",
            json!({"actor": "carol", "email": "Dave@Example.com", "sub": "erin"}),
        );
        for id in [
            "svc-deploy",
            "carol",
            "dave@example.com",
            "DAVE@example.COM",
        ] {
            assert_eq!(
                may_decide(&who(id, &["secops"]), &a),
                Err(Refusal::SelfApproval),
                "{id}"
            );
        }
        // Other claims do not count as the requester.
        assert_eq!(may_decide(&who("erin", &["secops"]), &a), Ok(()));
    }

    #[test]
    fn non_string_claims_are_ignored() {
        let a = approval("bob", json!({"actor": 7, "email": null}));
        assert_eq!(may_decide(&who("7", &["secops"]), &a), Ok(()));
    }
}

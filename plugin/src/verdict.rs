//! What the policies made of a request, in four words: the vocabulary the
//! audit record's `shadow` field, `secretgate replay` and `secretgate
//! explain` compare decisions in. The gate turns a verdict into an answer
//! (forward, ask a human, refuse); these tools only need the verdict.

use crate::approval::ApprovalRules;
use crate::policy::Evaluation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyVerdict {
    /// A permit applies that needs no approval, and no forbid.
    Allow,
    /// Only `@approval` permits apply, and no forbid: a human decides.
    Approval,
    /// A forbid applies, or no permit does.
    Deny,
    /// Evaluation failed: a deny.
    Error,
}

impl PolicyVerdict {
    /// The verdict of an evaluation, given the policy set's approval rules.
    pub fn of(evaluation: &Evaluation, approvals: &ApprovalRules) -> PolicyVerdict {
        if evaluation.allowed {
            if approvals.required(&evaluation.policies).is_some() {
                PolicyVerdict::Approval
            } else {
                PolicyVerdict::Allow
            }
        } else if evaluation.errors.is_empty() {
            PolicyVerdict::Deny
        } else {
            PolicyVerdict::Error
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyVerdict::Allow => "allow",
            PolicyVerdict::Approval => "approval",
            PolicyVerdict::Deny => "deny",
            PolicyVerdict::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<PolicyVerdict> {
        [
            PolicyVerdict::Allow,
            PolicyVerdict::Approval,
            PolicyVerdict::Deny,
            PolicyVerdict::Error,
        ]
        .into_iter()
        .find(|verdict| verdict.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for verdict in [
            PolicyVerdict::Allow,
            PolicyVerdict::Approval,
            PolicyVerdict::Deny,
            PolicyVerdict::Error,
        ] {
            assert_eq!(PolicyVerdict::parse(verdict.as_str()), Some(verdict));
        }
        assert_eq!(PolicyVerdict::parse("pending_approval"), None);
    }

    #[test]
    fn an_error_is_never_an_allow() {
        let evaluation = Evaluation {
            allowed: false,
            policies: vec!["p".into()],
            errors: vec!["boom".into()],
        };
        assert_eq!(
            PolicyVerdict::of(&evaluation, &ApprovalRules::default()),
            PolicyVerdict::Error
        );
    }
}

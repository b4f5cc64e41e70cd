//! Which parts of the request context a policy set reads, worked out from
//! Cedar's own JSON form of each policy (never from its text, where a
//! comment or a string can look like an attribute). `secretgate replay`
//! uses it to tell a record that lacks an input the candidate policies
//! read from one that merely lacks an input nobody reads.

use std::collections::BTreeSet;

use cedar_policy::Policy;
use serde_json::Value;

use crate::policy_shape;

/// What a policy set reads of `context`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextReads {
    /// Top-level context attributes read by name (`source_ip`, `now`, ...).
    pub attributes: BTreeSet<String>,
    /// Claims read by name (`context.claims.<name>`, `context.claims has <name>`).
    pub claims: BTreeSet<String>,
    /// `context.claims` (or `context` itself) is used as a whole, so every
    /// claim counts as read.
    pub every_claim: bool,
    /// `context` is used as a whole: every attribute counts as read.
    pub whole_context: bool,
}

impl ContextReads {
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Result<ContextReads, String> {
        let mut reads = ContextReads::default();
        for policy in policies {
            let json = policy_shape::parsed_json(policy)
                .ok_or_else(|| format!("policy {}: no JSON form", policy.id()))?;
            for condition in json
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(body) = condition.get("body") {
                    reads.visit(body);
                }
            }
        }
        Ok(reads)
    }

    pub fn reads_attribute(&self, name: &str) -> bool {
        self.whole_context || self.attributes.contains(name)
    }

    pub fn reads_claim(&self, name: &str) -> bool {
        self.every_claim || self.whole_context || self.claims.contains(name)
    }

    fn visit(&mut self, node: &Value) {
        match node {
            Value::Object(fields) => {
                if is_context(node) {
                    self.whole_context = true;
                    self.every_claim = true;
                    return;
                }
                for operator in [".", "has"] {
                    let Some(access) = fields.get(operator) else {
                        continue;
                    };
                    let (Some(left), Some(attr)) = (
                        access.get("left"),
                        access.get("attr").and_then(Value::as_str),
                    ) else {
                        continue;
                    };
                    if is_context(left) {
                        self.attributes.insert(attr.to_owned());
                        if attr == "claims" && operator == "." {
                            // `context.claims` itself, not one claim of it.
                            self.every_claim = true;
                        }
                        return;
                    }
                    if is_context_claims(left) {
                        self.attributes.insert("claims".to_owned());
                        self.claims.insert(attr.to_owned());
                        return;
                    }
                }
                for value in fields.values() {
                    self.visit(value);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.visit(item)),
            _ => {}
        }
    }
}

fn is_context(node: &Value) -> bool {
    node.get("Var").and_then(Value::as_str) == Some("context")
}

fn is_context_claims(node: &Value) -> bool {
    node.get(".").is_some_and(|access| {
        access.get("left").is_some_and(is_context)
            && access.get("attr").and_then(Value::as_str) == Some("claims")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::PolicySet;
    use std::str::FromStr;

    fn reads(text: &str) -> ContextReads {
        let set = PolicySet::from_str(text).unwrap();
        ContextReads::of(set.policies()).unwrap()
    }

    #[test]
    fn claims_read_by_name_are_named() {
        let r = reads(
            r#"permit (principal, action, resource)
               when { context.claims has repository && context.claims.repository == "a"
                      && context["claims"]["ref"] == "x" };"#,
        );
        assert_eq!(
            r.claims,
            ["ref", "repository"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        assert!(!r.every_claim && !r.whole_context);
        assert!(r.reads_claim("repository") && !r.reads_claim("environment"));
        assert!(r.reads_attribute("claims") && !r.reads_attribute("now"));
    }

    #[test]
    fn attributes_and_wholes_are_seen() {
        let r = reads(
            r#"forbid (principal, action, resource)
               unless { context.source_ip.isInRange(ip("10.0.0.0/8")) && context.now > 5 };"#,
        );
        assert!(r.reads_attribute("source_ip") && r.reads_attribute("now"));
        assert!(!r.reads_attribute("recent_reads") && r.claims.is_empty());

        let whole = reads(r#"permit (principal, action, resource) when { context.claims == {} };"#);
        assert!(whole.every_claim && whole.reads_claim("anything"));
        assert!(!whole.reads_attribute("now"));
    }

    #[test]
    fn strings_and_comments_that_look_like_reads_are_not_reads() {
        let r = reads(
            r#"// context.claims.secret
               permit (principal, action, resource) when { "context.now" == "x" };"#,
        );
        assert_eq!(r, ContextReads::default());
    }
}

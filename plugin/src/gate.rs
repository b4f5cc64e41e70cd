//! One decision per request: identity, classification, Cedar evaluation.
//! Pure: the host adapter gathers the facts and carries out the verdict.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::approval::{Callout, CalloutReply, ReplyError};
use crate::audit::AuditConfig;
use crate::classify::{Action, ClassifyError, HttpRequest};
use crate::config::{Config, ShadowPolicies};
use crate::identity::{IdentityError, IdentityEvidence, IdentitySource, Principal};
use crate::policy::PolicyEngine;
use crate::policy::{AccessRequest, Evaluation};
use crate::record::{DecisionInputs, DecisionRecord, Outcome, ShadowOutcome};
use crate::usage::{NoReadCounter, ReadCounter};
use crate::verdict::PolicyVerdict;

/// Headers that would let a client make OpenBao run a different operation
/// than the method the filter classified.
const METHOD_OVERRIDE_HEADERS: [&[u8]; 3] = [
    b"x-http-method-override",
    b"x-http-method",
    b"x-method-override",
];
/// OpenBao's inline authentication: `X-Vault-Inline-Auth-Path` and its
/// parameters make OpenBao log in inside the request, a login of its own
/// that the request's classification does not show. Refused, never forwarded.
const INLINE_AUTH_HEADER_PREFIX: &[u8] = b"x-vault-inline-auth-";
const NAMESPACE_HEADER: &[u8] = b"x-vault-namespace";
const REQUEST_ID_HEADER: &[u8] = b"x-request-id";
const VAULT_TOKEN_HEADER: &[u8] = b"x-vault-token";
const AUTHORIZATION_HEADER: &[u8] = b"authorization";
/// Why the caller wants the secret (e.g. a CI run URL), passed to approvers.
const REASON_HEADER: &[u8] = b"x-secretgate-reason";
const MAX_REASON_LEN: usize = 1024;

/// What the host observed about one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// Raw `:path`, query included.
    pub target: &'a str,
    /// Every request header; names lower-case, as Envoy presents them.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Envoy's `source.address` (`ip:port`).
    pub source_address: Option<&'a str>,
    pub now_nanos: u64,
    /// The pairs-encoded `jwt_authn` payload, when the source is `jwt`.
    pub jwt_payload: Option<&'a [u8]>,
    /// The peer's URI SAN, when the source is `mtls`.
    pub peer_uri_san: Option<&'a [u8]>,
}

/// Header edits that make OpenBao see exactly what was authorised.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardEdits {
    /// Replace `:path` with the canonical form, when it differs.
    pub path: Option<String>,
    /// Replace `X-Vault-Namespace` with the canonical form ("" removes it).
    pub namespace: Option<String>,
    /// Headers that must not reach OpenBao.
    pub remove_headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictAction {
    Forward(ForwardEdits),
    Respond {
        status: u32,
        body: String,
    },
    /// Ask the approval service (`body` is the callout JSON); forward with
    /// `edits` only if it approves.
    AskApproval {
        body: String,
        edits: ForwardEdits,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: VerdictAction,
    pub record: DecisionRecord,
}

/// Vault's error shape, plus the request id so a caller can quote it.
pub fn error_body(message: &str, request_id: &str) -> String {
    json!({"errors": [message], "request_id": request_id}).to_string()
}

fn header_values<'a>(headers: &[(&'a [u8], &'a [u8])], name: &[u8]) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| *value)
        .collect()
}

/// Why a header that makes OpenBao do more than the classified request is
/// refused, if one is present.
fn refused_header(headers: &[(&[u8], &[u8])]) -> Option<&'static str> {
    headers.iter().find_map(|(name, _)| {
        if METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|refused| name.eq_ignore_ascii_case(refused))
        {
            Some("method override header")
        } else if name.len() >= INLINE_AUTH_HEADER_PREFIX.len()
            && name[..INLINE_AUTH_HEADER_PREFIX.len()]
                .eq_ignore_ascii_case(INLINE_AUTH_HEADER_PREFIX)
        {
            Some("inline authentication is not supported")
        } else {
            None
        }
    })
}

/// The Vault token OpenBao will use (its `getTokenFromReq`): the first
/// `X-Vault-Token` unless empty, else the first `Authorization` value that
/// starts with `Bearer `, trimmed as Go's `strings.TrimSpace` trims.
fn vault_token<'a>(headers: &[(&'a [u8], &'a [u8])]) -> Option<&'a [u8]> {
    if let Some(token) = header_values(headers, VAULT_TOKEN_HEADER)
        .first()
        .filter(|token| !token.is_empty())
    {
        return Some(token);
    }
    header_values(headers, AUTHORIZATION_HEADER)
        .into_iter()
        .find_map(|value| value.strip_prefix(b"Bearer ".as_slice()))
        .map(trim_go_space)
        .filter(|token| !token.is_empty())
}

/// Go's `strings.TrimSpace`: ASCII white space and U+0085, U+00A0.
fn trim_go_space(mut bytes: &[u8]) -> &[u8] {
    loop {
        bytes = match bytes {
            [b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ', rest @ ..] => rest,
            [0xC2, 0x85 | 0xA0, rest @ ..] => rest,
            [rest @ .., b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' '] => rest,
            [rest @ .., 0xC2, 0x85 | 0xA0] => rest,
            _ => return bytes,
        };
    }
}

/// The IP of Envoy's `source.address` (`1.2.3.4:5`, `[::1]:5`).
fn source_ip(address: &str) -> Option<IpAddr> {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = address.parse() {
        return Some(ip);
    }
    address.rsplit_once(':')?.0.parse().ok()
}

/// The claims a decision read, for the record: every claim the schema
/// declares, `null` where the caller carried none (see [`DecisionInputs`]).
/// A caller without identity has no claims at all.
fn recorded_claims(principal: &Principal, engine: &PolicyEngine) -> Map<String, Value> {
    if principal.is_anonymous() {
        return Map::new();
    }
    engine
        .claims_shape()
        .names()
        .map(|name| {
            let value = principal.claims.get(name).cloned().unwrap_or(Value::Null);
            (name.to_owned(), value)
        })
        .collect()
}

/// The answer to a request without identity that is not forwarded: what
/// every such request got before `identity.anonymous` existed, so an
/// anonymous caller learns nothing about mounts, paths or policies. The
/// record keeps the real reason.
fn deny_anonymous(record: DecisionRecord, reason: &str) -> Verdict {
    deny(
        record,
        Outcome::NoIdentity,
        401,
        MISSING_IDENTITY,
        format!("no client identity; {reason}"),
    )
}

const MISSING_IDENTITY: &str = "missing client identity";

fn deny(
    mut record: DecisionRecord,
    outcome: Outcome,
    status: u32,
    message: &str,
    reason: String,
) -> Verdict {
    record.outcome = outcome;
    record.reason = reason;
    let body = error_body(message, &record.request_id);
    Verdict {
        action: VerdictAction::Respond { status, body },
        record,
    }
}

/// The record of a request as it arrived, before any decision, with the
/// target as `audit` logs it.
fn arrival_record(audit: &AuditConfig, facts: &RequestFacts<'_>) -> DecisionRecord {
    let request_id = header_values(facts.headers, REQUEST_ID_HEADER)
        .first()
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
        .to_owned();
    let mut record = DecisionRecord::new(
        request_id,
        facts.method,
        &audit.loggable_target(facts.target),
        facts.source_address,
        facts.now_nanos,
    );
    record.token_hmac = vault_token(facts.headers).and_then(|t| audit.hmac_hex(t));
    record
}

/// The verdict on a request reaching a filter that has no configuration
/// (Envoy normally refuses to serve one; this is the fail-closed answer if
/// it ever does). Its record is masked by the default audit settings.
pub fn unconfigured(audit: &AuditConfig, facts: &RequestFacts<'_>) -> Verdict {
    let record = arrival_record(audit, facts);
    let reason = "secretgate is not configured".to_owned();
    deny(
        record,
        Outcome::HostError,
        500,
        "secretgate is not configured",
        reason,
    )
}

impl Config {
    /// [`Config::decide_with`] for hosts with no read counter.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Verdict {
        self.decide_with(facts, &mut NoReadCounter)
    }

    /// The decision on one request; `reads` keeps `context.recent_reads`.
    pub fn decide_with(&self, facts: &RequestFacts<'_>, reads: &mut dyn ReadCounter) -> Verdict {
        let mut record = arrival_record(&self.audit, facts);
        record.revisions = Some(self.revisions.clone());
        let Some(engine) = &self.engine else {
            let reason = "no valid policy bundle has been loaded".to_owned();
            return deny(record, Outcome::NoPolicy, 503, "no policy loaded", reason);
        };

        let identity_header = match &self.identity.source {
            IdentitySource::Header { header } => Some(header.as_str()),
            _ => None,
        };
        let evidence = IdentityEvidence {
            header_values: identity_header
                .map(|name| header_values(facts.headers, name.as_bytes()))
                .unwrap_or_default(),
            jwt_payload: facts.jwt_payload,
            peer_uri_san: facts.peer_uri_san,
        };
        let principal = match self.identity.caller(&evidence, engine.claims_shape()) {
            Ok(p) => p,
            Err(e) => {
                let message = match e {
                    IdentityError::Missing => MISSING_IDENTITY,
                    _ => "invalid client identity",
                };
                return deny(record, Outcome::NoIdentity, 401, message, e.to_string());
            }
        };
        record.principal = Some((principal.entity_type.clone(), principal.id.clone()));
        record.claims = principal.claims.clone();
        // A caller without identity is refused as before, whatever the
        // reason; it never learns more than "missing client identity".
        let refuse = |record, outcome, status: u32, message: &str, reason: String| {
            if principal.is_anonymous() && (400..500).contains(&status) {
                deny_anonymous(record, &reason)
            } else {
                deny(record, outcome, status, message, reason)
            }
        };

        if let Some(reason) = refused_header(facts.headers) {
            return refuse(record, Outcome::BadRequest, 400, reason, reason.to_owned());
        }
        let namespaces = header_values(facts.headers, NAMESPACE_HEADER);
        let namespace = match namespaces.as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => {
                let reason = "namespace header sent more than once".to_owned();
                return refuse(record, Outcome::BadRequest, 400, &reason, reason.clone());
            }
        };
        let request = HttpRequest {
            method: facts.method,
            target: facts.target,
            namespace,
        };
        let classification = match self.mounts.classify(&request) {
            Ok(c) => c,
            Err(e) => {
                let (outcome, message) = match e {
                    ClassifyError::MethodNotAllowed => {
                        (Outcome::MethodNotAllowed, "unsupported method".to_owned())
                    }
                    ClassifyError::Path(p) => {
                        (Outcome::BadRequest, format!("invalid request path: {p}"))
                    }
                };
                return refuse(record, outcome, e.status(), &message, e.reason().to_owned());
            }
        };
        record.action = Some(classification.action);
        record.resource = Some(classification.resource.clone());
        record.namespace = classification.namespace.clone();
        record.mount_type = classification.mount_type;
        record.listing = classification.listing;

        let Some(ip) = facts.source_address.and_then(source_ip) else {
            let reason = "source address unavailable".to_owned();
            return refuse(
                record,
                Outcome::EvaluationError,
                403,
                "permission denied",
                reason,
            );
        };
        let ip_text = ip.to_string();
        let shadow_engine = match &self.shadow_policies {
            ShadowPolicies::Loaded(shadow) => Some(shadow),
            ShadowPolicies::Off | ShadowPolicies::Absent(_) => None,
        };
        let counts_reads = engine.uses_recent_reads()
            || shadow_engine.is_some_and(|shadow| shadow.uses_recent_reads());
        let recent_reads = if counts_reads {
            let who = format!("{}::{}", principal.entity_type, principal.id);
            let now = Duration::from_nanos(facts.now_nanos);
            let is_read = classification.action == Action::Read;
            match reads.recent_reads(&who, now, self.recent_reads_window, is_read) {
                Ok(count) => Some(i64::try_from(count).unwrap_or(i64::MAX)),
                Err(e) => {
                    let reason = format!("read counts unavailable: {e}");
                    return deny(record, Outcome::HostError, 500, "internal error", reason);
                }
            }
        } else {
            None
        };
        let mut access = AccessRequest {
            principal: &principal,
            action: classification.action,
            resource: &classification.resource,
            method: facts.method,
            source_ip: &ip_text,
            now_secs: i64::try_from(facts.now_nanos / 1_000_000_000).unwrap_or(i64::MAX),
            namespace: &classification.namespace,
            recent_reads: recent_reads.filter(|_| engine.uses_recent_reads()),
        };
        let evaluation = engine.evaluate(&access);
        let verdict = PolicyVerdict::of(&evaluation, engine.approvals());
        record.shadow = match (&self.shadow_policies, shadow_engine) {
            (_, Some(shadow)) => {
                access.recent_reads = recent_reads.filter(|_| shadow.uses_recent_reads());
                let evaluation = self.evaluate_shadow(shadow, engine, &evidence, &access);
                let shadow_verdict = PolicyVerdict::of(&evaluation, shadow.approvals());
                Some(ShadowOutcome::Evaluated {
                    verdict: shadow_verdict,
                    agrees: shadow_verdict == verdict,
                    policies: evaluation.policies,
                    errors: evaluation.errors,
                })
            }
            (ShadowPolicies::Absent(reason), None) => Some(ShadowOutcome::Absent(reason.clone())),
            _ => None,
        };
        record.inputs = Some(DecisionInputs {
            claims: recorded_claims(&principal, engine),
            source_ip: ip_text.clone(),
            recent_reads,
            namespace_header: namespace.map(|raw| String::from_utf8_lossy(raw).into_owned()),
        });
        record.policies = evaluation.policies;
        record.errors = evaluation.errors;
        let refusal = match verdict {
            PolicyVerdict::Allow | PolicyVerdict::Approval => None,
            PolicyVerdict::Deny if !record.policies.is_empty() => {
                Some((Outcome::DeniedByPolicy, "a forbid policy applies"))
            }
            PolicyVerdict::Deny if principal.is_anonymous() => Some((
                Outcome::DeniedByPolicy,
                "no policy permits callers without identity",
            )),
            PolicyVerdict::Deny => Some((Outcome::DeniedByPolicy, "no policy permits the request")),
            PolicyVerdict::Error => Some((Outcome::EvaluationError, "policy evaluation failed")),
        };
        if let Some((outcome, reason)) = refusal {
            return refuse(record, outcome, 403, "permission denied", reason.to_owned());
        }

        let edits = ForwardEdits {
            path: (classification.canonical_target != facts.target)
                .then_some(classification.canonical_target),
            // Also set when the namespace came in the path: OpenBao gets it
            // in the header, and the path relative to it.
            namespace: (namespace.unwrap_or_default() != classification.namespace.as_bytes())
                .then(|| classification.namespace.clone()),
            remove_headers: identity_header.map(str::to_owned).into_iter().collect(),
        };
        let required = engine.approvals().required(&record.policies);
        if required.is_some() && principal.is_anonymous() {
            // Unreachable: only permits naming `Unauthenticated` admit an
            // anonymous caller, and those may not carry `@approval`.
            return deny_anonymous(record, "a caller without identity cannot be approved");
        }
        let Some((policy, rule)) = required else {
            record.outcome = Outcome::Allowed;
            record.reason = "permitted".to_owned();
            return Verdict {
                action: VerdictAction::Forward(edits),
                record,
            };
        };
        let Some(service) = &self.approval else {
            // Config::from_json refuses @approval without a service; never pass.
            let reason = "approval required but no approval service".to_owned();
            return deny(
                record,
                Outcome::ApprovalError,
                403,
                "permission denied",
                reason,
            );
        };
        let reason_header = header_values(facts.headers, REASON_HEADER)
            .first()
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| v.chars().take(MAX_REASON_LEN).collect::<String>())
            .unwrap_or_default();
        let claims: Map<String, Value> = self
            .audit
            .claims
            .iter()
            .filter_map(|name| Some((name.clone(), principal.claims.get(name)?.clone())))
            .collect();
        let resource = classification.resource.to_string();
        let callout = Callout {
            request_id: &record.request_id,
            principal_type: &principal.entity_type,
            principal_id: &principal.id,
            claims: &claims,
            action: classification.action.as_str(),
            resource: &resource,
            policy,
            rule,
            reason: &reason_header,
            wait_ms: service.effective_wait_ms(),
        };
        let Ok(body) = callout.body() else {
            let reason = "approval callout could not be encoded".to_owned();
            return deny(
                record,
                Outcome::ApprovalError,
                403,
                "approval unavailable",
                reason,
            );
        };
        record.outcome = Outcome::AwaitingApproval;
        record.reason = "waiting for approval".to_owned();
        record.approval = Some(json!({
            "policy": policy,
            "approvers": rule.approvers,
            "mode": rule.mode.as_str(),
            "outcome": "pending",
            "request_reason": reason_header,
        }));
        Verdict {
            action: VerdictAction::AskApproval { body, edits },
            record,
        }
    }

    /// The shadow set's evaluation of a request the live set evaluated as
    /// `access`. A shadow whose schema declares other claims reads the
    /// caller's claims through its own schema, as it would once promoted; a
    /// caller it would refuse (a claim of another type) is an error.
    fn evaluate_shadow(
        &self,
        shadow: &PolicyEngine,
        live: &PolicyEngine,
        evidence: &IdentityEvidence<'_>,
        access: &AccessRequest<'_>,
    ) -> Evaluation {
        if shadow.claims_shape() == live.claims_shape() {
            return shadow.evaluate(access);
        }
        match self.identity.caller(evidence, shadow.claims_shape()) {
            Ok(principal) => shadow.evaluate(&AccessRequest {
                principal: &principal,
                ..access.clone()
            }),
            Err(e) => Evaluation {
                allowed: false,
                policies: Vec::new(),
                errors: vec![format!("identity under the shadow schema: {e}")],
            },
        }
    }

    /// Turns the approval service's reply into the request's fate. Anything
    /// but an approval is a deny; the record says who decided and why.
    pub fn conclude_approval(
        &self,
        mut record: DecisionRecord,
        edits: ForwardEdits,
        reply: Result<CalloutReply, ReplyError>,
    ) -> Verdict {
        let mut approval = record.approval.take().unwrap_or_else(|| json!({}));
        let verdict = match reply {
            Ok(CalloutReply::Approved {
                grant_id,
                approver,
                expires_at,
            }) => {
                approval["outcome"] = json!("approved");
                approval["grant_id"] = json!(grant_id);
                approval["approver"] = json!(approver);
                approval["expires_at"] = json!(expires_at);
                record.outcome = Outcome::Allowed;
                record.reason = "permitted after approval".to_owned();
                record.approval = Some(approval);
                return Verdict {
                    action: VerdictAction::Forward(edits),
                    record,
                };
            }
            Ok(CalloutReply::Denied { approver, reason }) => {
                approval["outcome"] = json!("denied");
                approval["approver"] = json!(approver);
                approval["reason"] = json!(reason);
                (Outcome::ApprovalDenied, "approval denied", None)
            }
            Ok(CalloutReply::Pending {
                approval_id,
                approval_url,
            }) => {
                approval["outcome"] = json!("pending");
                approval["id"] = json!(approval_id);
                let body = json!({
                    "errors": ["approval required"],
                    "approval_id": approval_id,
                    "approval_url": approval_url,
                    "request_id": record.request_id,
                })
                .to_string();
                (Outcome::ApprovalRequired, "approval required", Some(body))
            }
            Err(error) => {
                approval["outcome"] = json!("error");
                approval["reason"] = json!(error.to_string());
                (Outcome::ApprovalError, "approval unavailable", None)
            }
        };
        let (outcome, message, body) = verdict;
        record.reason = match outcome {
            Outcome::ApprovalError => approval["reason"].as_str().unwrap_or(message).to_owned(),
            _ => message.to_owned(),
        };
        record.outcome = outcome;
        record.approval = Some(approval);
        let body = body.unwrap_or_else(|| error_body(message, &record.request_id));
        Verdict {
            action: VerdictAction::Respond { status: 403, body },
            record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_handles_v4_v6_and_bare_addresses() {
        assert_eq!(
            source_ip("127.0.0.1:5000"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(source_ip("[::1]:5000"), Some("::1".parse().unwrap()));
        assert_eq!(source_ip("::1"), Some("::1".parse().unwrap()));
        assert_eq!(source_ip("pipe:/tmp/x"), None);
    }

    #[test]
    fn error_body_is_vault_shaped() {
        let body: serde_json::Value =
            serde_json::from_str(&error_body("permission denied", "abc")).unwrap();
        assert_eq!(
            body,
            json!({"errors": ["permission denied"], "request_id": "abc"})
        );
    }
}

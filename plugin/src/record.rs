//! The decision record: what one request was and what was decided about
//! it. The gate fills it in, the audit renders it, the adapter logs it; it
//! depends on nothing but the classification's vocabulary.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::classify::{Action, MountType, ResourceRef};
use crate::verdict::PolicyVerdict;
use crate::version::Revisions;

/// Raw paths longer than this are cut in the audit record.
pub const MAX_LOGGED_PATH: usize = 2048;

/// Why a request was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    DeniedByPolicy,
    EvaluationError,
    NoIdentity,
    BadRequest,
    MethodNotAllowed,
    HostError,
    /// Permitted only under `@approval`: waiting for the approval service.
    AwaitingApproval,
    ApprovalDenied,
    /// `retry` mode (or a hold that timed out): ask again once approved.
    ApprovalRequired,
    /// The approval service failed, timed out or answered garbage.
    ApprovalError,
    /// A policy bundle is configured but none has loaded yet.
    NoPolicy,
    /// The audit record could not be written, and `on_failure` is `deny`.
    AuditUnavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allow",
            Outcome::DeniedByPolicy => "deny",
            Outcome::EvaluationError => "error",
            Outcome::NoIdentity => "unauthenticated",
            Outcome::BadRequest => "bad_request",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::HostError => "host_error",
            Outcome::AwaitingApproval => "pending_approval",
            Outcome::ApprovalDenied => "approval_denied",
            Outcome::ApprovalRequired => "approval_required",
            Outcome::ApprovalError => "approval_error",
            Outcome::NoPolicy => "no_policy",
            Outcome::AuditUnavailable => "audit_unavailable",
        }
    }

    /// Every outcome, so a reader of records can map a `decision` back.
    pub const ALL: [Outcome; 13] = [
        Outcome::Allowed,
        Outcome::DeniedByPolicy,
        Outcome::EvaluationError,
        Outcome::NoIdentity,
        Outcome::BadRequest,
        Outcome::MethodNotAllowed,
        Outcome::HostError,
        Outcome::AwaitingApproval,
        Outcome::ApprovalDenied,
        Outcome::ApprovalRequired,
        Outcome::ApprovalError,
        Outcome::NoPolicy,
        Outcome::AuditUnavailable,
    ];

    /// The outcome a record's `decision` names.
    pub fn from_decision(decision: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == decision)
    }
}

/// What the policy evaluation read, besides principal, action, resource,
/// method, namespace and time (in the record already): with them, a
/// record can be decided again (`secretgate replay`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInputs {
    /// Every claim the schema declares, as `context.claims` held it; a
    /// declared claim the caller did not carry is `null`, so a replay can
    /// tell "absent" from "not recorded". Empty in a compact record.
    pub claims: Map<String, Value>,
    pub source_ip: String,
    /// `context.recent_reads`, when the schema declares it.
    pub recent_reads: Option<i64>,
    /// `X-Vault-Namespace` as the client sent it: the record's `namespace`
    /// is the canonical one, which may have come from the path instead.
    pub namespace_header: Option<String>,
}

/// What the shadow policy set made of the request.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowOutcome {
    Evaluated {
        verdict: PolicyVerdict,
        /// The live policy set reached the same verdict.
        agrees: bool,
        policies: Vec<String>,
        errors: Vec<String>,
    },
    /// A shadow is configured but none has loaded: why.
    Absent(String),
}

/// Everything worth recording about the decision. Never holds a token or
/// a body (only the token's keyed HMAC).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub time_nanos: u64,
    pub request_id: String,
    pub method: String,
    /// The `:path` as the client sent it, query values masked (cut at 2 KiB).
    pub path: String,
    pub namespace: String,
    pub source_address: Option<String>,
    pub mount_type: Option<MountType>,
    /// The request is a LIST: the audit counts the names its answer holds.
    pub listing: bool,
    /// The principal's schema-declared claims (the audit keeps an allowlist).
    pub claims: Map<String, Value>,
    pub token_hmac: Option<String>,
    /// Approval fields, when an approval was involved.
    pub approval: Option<Value>,
    pub principal: Option<(String, String)>,
    pub action: Option<Action>,
    pub resource: Option<ResourceRef>,
    pub outcome: Outcome,
    /// A fixed description of why, for logs.
    pub reason: String,
    pub policies: Vec<String>,
    pub errors: Vec<String>,
    /// Set once the policies were evaluated.
    pub inputs: Option<DecisionInputs>,
    /// Set when a shadow policy set is configured and the live one was
    /// evaluated.
    pub shadow: Option<ShadowOutcome>,
    /// The configuration and bundle it was decided under; `None` only
    /// when the filter has no configuration.
    pub revisions: Option<Revisions>,
}

impl DecisionRecord {
    /// A record of the request as it arrived, before any decision.
    pub fn new(
        request_id: String,
        method: &str,
        target: &str,
        source_address: Option<&str>,
        time_nanos: u64,
    ) -> Self {
        let mut path = target.to_owned();
        if path.len() > MAX_LOGGED_PATH {
            let mut cut = MAX_LOGGED_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
        }
        DecisionRecord {
            time_nanos,
            request_id,
            method: method.to_owned(),
            path,
            namespace: String::new(),
            source_address: source_address.map(str::to_owned),
            mount_type: None,
            listing: false,
            claims: Map::new(),
            token_hmac: None,
            approval: None,
            principal: None,
            action: None,
            resource: None,
            outcome: Outcome::BadRequest,
            reason: String::new(),
            policies: Vec::new(),
            errors: Vec::new(),
            inputs: None,
            shadow: None,
            revisions: None,
        }
    }

    /// The record of a request the host failed before any fact was known.
    pub fn host_failure(reason: String, now_nanos: u64) -> Self {
        let mut record = DecisionRecord::new(String::new(), "", "", None, now_nanos);
        record.fail(reason);
        record
    }

    /// Turns the record into a failure: the request is refused after all.
    pub fn fail(&mut self, reason: String) {
        self.outcome = Outcome::HostError;
        self.reason = reason;
    }

    /// One log line: who, what, which decision, which policies.
    pub fn log_line(&self) -> String {
        let mut line = format!(
            "secretgate decision={} request_id={:?}",
            self.outcome.as_str(),
            self.request_id
        );
        if let Some((kind, id)) = &self.principal {
            let _ = write!(line, " principal={kind}::{id:?}");
        }
        if let Some(action) = self.action {
            let _ = write!(line, " action={}", action.as_str());
        }
        if let Some(resource) = &self.resource {
            let _ = write!(line, " resource={resource}");
        }
        let _ = write!(line, " reason={:?}", self.reason);
        if !self.policies.is_empty() {
            let _ = write!(line, " policies={:?}", self.policies);
        }
        if !self.errors.is_empty() {
            let _ = write!(line, " errors={:?}", self.errors);
        }
        line
    }
}

//! Why the filter decides a request as it does: `secretgate explain`.
//!
//! Nothing here decides anything of its own. The request is classified by
//! the filter's classifier, its principal built as the filter builds one,
//! and evaluated by [`PolicyEngine::explain`], which runs the filter's own
//! evaluation and then asks Cedar, policy by policy, which scopes match the
//! request and how each of those policies fared alone. This module turns
//! that into an [`Explanation`] and renders it as text or JSON.

use std::fmt::Write;
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::classify::{Classification, ClassifyError, HttpRequest, ResourceKind, ResourceRef};
use crate::config::Config;
use crate::identity::{IdentityConfig, IdentityEvidence, IdentitySource, Principal};
use crate::policy::{AccessRequest, EvaluationTrace, PolicyCheck, PolicyEngine};
use crate::templates::Capture;
use crate::verdict::PolicyVerdict;

/// One request to explain: the command line's flags.
#[derive(Debug, Clone)]
pub struct ExplainRequest<'a> {
    pub method: &'a str,
    /// The raw `:path`, query included (`/v1/secret/data/app`).
    pub target: &'a str,
    /// The `X-Vault-Namespace` header, if sent.
    pub namespace: Option<&'a str>,
    /// `None`: a request without identity.
    pub principal: Option<&'a str>,
    /// JWT claims as JSON, typed by the schema as the filter types them.
    pub claims: Option<&'a Map<String, Value>>,
    pub source_ip: IpAddr,
    pub now_secs: i64,
    /// `context.recent_reads`, when the schema declares it (default 0).
    pub recent_reads: Option<i64>,
}

/// How one policy whose scope matches the request fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// It is one of the policies that determined the decision.
    Determining,
    /// Its condition held, but a forbid decided: a permit overruled.
    Overruled,
    /// Its condition was false.
    ConditionFalse,
    /// Evaluating its condition failed (Cedar's errors).
    ConditionError(Vec<String>),
    /// The filter does not evaluate it: a permit that does not name
    /// `Unauthenticated` never admits a caller without identity.
    NotForAnonymous,
}

impl PolicyOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyOutcome::Determining => "determining",
            PolicyOutcome::Overruled => "overruled",
            PolicyOutcome::ConditionFalse => "condition_false",
            PolicyOutcome::ConditionError(_) => "condition_error",
            PolicyOutcome::NotForAnonymous => "not_for_anonymous",
        }
    }
}

/// A policy whose scope (principal, action, resource) matches the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedPolicy {
    pub id: String,
    pub permit: bool,
    pub outcome: PolicyOutcome,
}

/// `context.recent_reads` as explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentReads {
    /// The schema does not declare it: not in the context.
    NotDeclared,
    /// In the context with this value (the filter counts it; explain takes
    /// it from `--recent-reads`, default 0), over a window of `window_s`.
    Given { value: i64, window_s: u64 },
}

/// What the policies made of a classified request.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub verdict: PolicyVerdict,
    /// The policies that determined the decision: the permits that allow
    /// it, or the forbids that deny it.
    pub determining: Vec<String>,
    pub errors: Vec<String>,
    /// The `@approval` permit that makes the verdict `approval`.
    pub approval_policy: Option<String>,
    /// The Cedar context as the filter builds it, or why it could not be.
    pub context: Result<Value, String>,
    pub recent_reads: RecentReads,
    pub captures: Vec<Capture>,
    /// The resource and folders that carry captures, with their names.
    pub attributed: Vec<(ResourceRef, Vec<String>)>,
    /// A caller without identity, for an action the schema does not accept
    /// it for: denied without evaluating any policy.
    pub anonymous_refused: bool,
    /// Every policy whose scope matches, in policy-set order.
    pub policies: Vec<MatchedPolicy>,
}

impl Evaluated {
    /// The entities that carry the template attribute `name`.
    fn carriers(&self, name: &str) -> Vec<String> {
        self.attributed
            .iter()
            .filter(|(_, names)| names.iter().any(|n| n == name))
            .map(|(entity, _)| entity.to_string())
            .collect()
    }
}

/// Everything `secretgate explain` says about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub method: String,
    pub target: String,
    pub principal: Principal,
    /// Claims given that the schema does not declare: the filter drops them.
    pub dropped_claims: Vec<String>,
    pub now_secs: i64,
    pub source_ip: String,
    /// The classifier's answer; an error means the filter refuses the
    /// request before any policy is evaluated.
    pub classification: Result<Classification, ClassifyError>,
    /// `None` when the request was not classified.
    pub evaluated: Option<Evaluated>,
}

/// The principal the filter would evaluate: `id` as the configured
/// principal type (validated as the filter validates an identity) with
/// `claims` typed by the schema, or without `id` the caller without
/// identity, which only a configuration with `identity.anonymous` admits.
/// An mTLS identity's claims come from its SPIFFE ID, as in the filter.
pub fn principal(
    identity: &IdentityConfig,
    engine: &PolicyEngine,
    id: Option<&str>,
    claims: Option<&Map<String, Value>>,
) -> Result<Principal, String> {
    let Some(id) = id else {
        if !identity.anonymous {
            return Err(
                "no --principal: this configuration does not set identity.anonymous, \
                 so the filter answers a request without identity with 401"
                    .into(),
            );
        }
        if claims.is_some_and(|claims| !claims.is_empty()) {
            return Err(
                "--claims without --principal: a caller without identity has no claims".into(),
            );
        }
        return Ok(Principal::anonymous());
    };
    let shape = engine.claims_shape();
    if identity.source == IdentitySource::Mtls {
        if claims.is_some() {
            return Err(
                "--claims: with identity.source mtls the claims come from the SPIFFE ID".into(),
            );
        }
        let evidence = IdentityEvidence {
            peer_uri_san: Some(id.as_bytes()),
            ..IdentityEvidence::default()
        };
        return identity
            .principal(&evidence, shape)
            .map_err(|e| format!("--principal: {e}"));
    }
    // The filter's checks of an identity's text (not empty, not too long,
    // no control characters), as it applies them to a header.
    let as_header = IdentityConfig {
        source: IdentitySource::Header {
            header: "x-secretgate-principal".into(),
        },
        ..identity.clone()
    };
    let evidence = IdentityEvidence {
        header_values: vec![id.as_bytes()],
        ..IdentityEvidence::default()
    };
    let mut principal = as_header
        .principal(&evidence, shape)
        .map_err(|e| format!("--principal: {e}"))?;
    if let Some(claims) = claims {
        principal.claims = shape
            .from_json(claims)
            .map_err(|e| format!("--claims: {e}"))?;
    }
    Ok(principal)
}

/// Explains one request under a configuration. `Err` for what the filter
/// would refuse before it classifies anything (no policy set, a principal
/// it would not accept) or a flag that does not fit the schema.
pub fn explain(config: &Config, request: &ExplainRequest<'_>) -> Result<Explanation, String> {
    let engine = config
        .engine
        .as_ref()
        .ok_or("the configuration has no policy set")?;
    let recent_reads = match (engine.uses_recent_reads(), request.recent_reads) {
        (true, reads) => RecentReads::Given {
            value: reads.unwrap_or(0),
            window_s: config.recent_reads_window.as_secs(),
        },
        (false, None) => RecentReads::NotDeclared,
        (false, Some(_)) => {
            return Err("--recent-reads: the schema does not declare context.recent_reads".into())
        }
    };
    let principal = principal(&config.identity, engine, request.principal, request.claims)?;
    let dropped_claims = request
        .claims
        .into_iter()
        .flatten()
        .filter(|(name, _)| engine.claims_shape().claim_type(name).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    let classification = config.mounts.classify(&HttpRequest {
        method: request.method,
        target: request.target,
        namespace: request.namespace.map(str::as_bytes),
    });
    let source_ip = request.source_ip.to_string();
    let evaluated = classification.as_ref().ok().map(|classification| {
        let trace = engine.explain(&AccessRequest {
            principal: &principal,
            action: classification.action,
            resource: &classification.resource,
            method: request.method,
            source_ip: &source_ip,
            now_secs: request.now_secs,
            namespace: &classification.namespace,
            recent_reads: match recent_reads {
                RecentReads::Given { value, .. } => Some(value),
                RecentReads::NotDeclared => None,
            },
        });
        evaluated(engine, trace, recent_reads)
    });
    Ok(Explanation {
        method: request.method.to_owned(),
        target: request.target.to_owned(),
        principal,
        dropped_claims,
        now_secs: request.now_secs,
        source_ip,
        classification,
        evaluated,
    })
}

fn outcome(check: &PolicyCheck, determining: &[String]) -> PolicyOutcome {
    if determining.contains(&check.id) {
        PolicyOutcome::Determining
    } else if !check.evaluated {
        PolicyOutcome::NotForAnonymous
    } else if !check.alone.errors.is_empty() {
        PolicyOutcome::ConditionError(check.alone.errors.clone())
    } else if check.alone.policies.contains(&check.id) {
        PolicyOutcome::Overruled
    } else {
        PolicyOutcome::ConditionFalse
    }
}

fn evaluated(
    engine: &PolicyEngine,
    trace: EvaluationTrace,
    recent_reads: RecentReads,
) -> Evaluated {
    let verdict = PolicyVerdict::of(&trace.evaluation, engine.approvals());
    let approval_policy = (verdict == PolicyVerdict::Approval)
        .then(|| engine.approvals().required(&trace.evaluation.policies))
        .flatten()
        .map(|(policy, _)| policy.to_owned());
    let policies = trace
        .policies
        .iter()
        .map(|check| MatchedPolicy {
            id: check.id.clone(),
            permit: check.permit,
            outcome: outcome(check, &trace.evaluation.policies),
        })
        .collect();
    Evaluated {
        verdict,
        determining: trace.evaluation.policies,
        errors: trace.evaluation.errors,
        approval_policy,
        context: trace.context,
        recent_reads,
        captures: trace.captures,
        attributed: trace.attributed,
        anonymous_refused: trace.anonymous_refused,
        policies,
    }
}

fn effect(permit: bool) -> &'static str {
    if permit {
        "permit"
    } else {
        "forbid"
    }
}

fn entity(principal: &Principal) -> String {
    format!("{}::{:?}", principal.entity_type, principal.id)
}

/// The `Path` folders a resource is `in`, as Cedar sees them.
fn parents(resource: &ResourceRef) -> Vec<String> {
    resource
        .ancestors()
        .map(|id| {
            ResourceRef {
                kind: ResourceKind::Path,
                id: id.to_owned(),
            }
            .to_string()
        })
        .collect()
}

fn time_text(secs: i64) -> String {
    u64::try_from(secs)
        .ok()
        .and_then(|secs| secs.checked_mul(1_000_000_000))
        .map(crate::audit::rfc3339)
        .unwrap_or_default()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

impl Explanation {
    /// The decision in the verdict's vocabulary; `None` when the filter
    /// refuses the request before evaluating policies.
    pub fn verdict(&self) -> Option<PolicyVerdict> {
        self.evaluated.as_ref().map(|evaluated| evaluated.verdict)
    }

    /// The explanation for a person, one fact a line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "request: {} {}", self.method, self.target);
        let anonymous = if self.principal.is_anonymous() {
            " (no --principal: a caller without identity)"
        } else {
            ""
        };
        let _ = writeln!(out, "principal: {}{anonymous}", entity(&self.principal));
        if !self.dropped_claims.is_empty() {
            let _ = writeln!(
                out,
                "claims dropped (not declared in the schema): {}",
                self.dropped_claims.join(", ")
            );
        }
        let classification = match &self.classification {
            Ok(classification) => classification,
            Err(e) => {
                let status = if self.principal.is_anonymous() {
                    " (a caller without identity is answered 401 missing client identity)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "classification: refused, {} {}{status}; no policy is evaluated",
                    e.status(),
                    e.reason()
                );
                let _ = writeln!(out, "decision: refused before policy evaluation");
                return out;
            }
        };
        let namespace = if classification.namespace.is_empty() {
            "(root)"
        } else {
            &classification.namespace
        };
        let _ = writeln!(out, "namespace: {namespace}");
        let mount_type = classification.mount_type.map_or("?", |t| t.name());
        let _ = writeln!(out, "mount: {} ({mount_type})", classification.mount);
        let _ = writeln!(out, "action: {}", classification.action.as_str());
        let _ = writeln!(out, "resource: {}", classification.resource);
        let _ = writeln!(
            out,
            "parents: {}",
            list_or_none(&parents(&classification.resource))
        );
        let Some(evaluated) = &self.evaluated else {
            return out;
        };
        if evaluated.captures.is_empty() {
            let _ = writeln!(out, "template attributes: none");
        } else {
            let _ = writeln!(out, "template attributes:");
            for capture in &evaluated.captures {
                let on = evaluated.carriers(&capture.name);
                let _ = writeln!(
                    out,
                    "  {} = {:?} (on {})",
                    capture.name,
                    capture.value,
                    on.join(", ")
                );
            }
        }
        let _ = writeln!(
            out,
            "time: {} (context.now = {})",
            time_text(self.now_secs),
            self.now_secs
        );
        match evaluated.recent_reads {
            RecentReads::NotDeclared => {
                let _ = writeln!(
                    out,
                    "recent_reads: not in the context (the schema does not declare it)"
                );
            }
            RecentReads::Given { value, window_s } => {
                let _ = writeln!(
                    out,
                    "recent_reads: {value} (from --recent-reads, default 0; the filter counts this caller's reads in the last {window_s} s)"
                );
            }
        }
        match &evaluated.context {
            Ok(context) => {
                let text = serde_json::to_string_pretty(context).unwrap_or_default();
                let _ = writeln!(out, "context:");
                for line in text.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "context: not built: {e}");
            }
        }
        let _ = writeln!(out, "decision: {}", evaluated.verdict.as_str());
        let determining = if evaluated.determining.is_empty() {
            match evaluated.verdict {
                PolicyVerdict::Deny if evaluated.anonymous_refused => {
                    "none (the schema does not accept a caller without identity for this action: no policy is evaluated)".to_owned()
                }
                PolicyVerdict::Deny => "none (no permit applies: Cedar denies by default)".to_owned(),
                _ => "none".to_owned(),
            }
        } else {
            evaluated.determining.join(", ")
        };
        let _ = writeln!(out, "determining policies: {determining}");
        if let Some(policy) = &evaluated.approval_policy {
            let _ = writeln!(out, "approval: {policy} requires a person's approval");
        }
        let _ = writeln!(out, "errors: {}", list_or_none(&evaluated.errors));
        if evaluated.anonymous_refused {
            return out;
        }
        if evaluated.policies.is_empty() {
            let _ = writeln!(out, "policies whose scope matches: none");
            return out;
        }
        let _ = writeln!(out, "policies whose scope matches:");
        for policy in &evaluated.policies {
            let how = match &policy.outcome {
                PolicyOutcome::Determining => "applies (determining)".to_owned(),
                PolicyOutcome::Overruled => {
                    "condition was true, but a forbid applies".to_owned()
                }
                PolicyOutcome::ConditionFalse => "condition was false".to_owned(),
                PolicyOutcome::ConditionError(errors) => {
                    format!("evaluating its condition failed: {}", errors.join("; "))
                }
                PolicyOutcome::NotForAnonymous => "not evaluated: a permit that does not name Unauthenticated never admits a caller without identity".to_owned(),
            };
            let _ = writeln!(out, "  {} ({}): {how}", policy.id, effect(policy.permit));
        }
        out
    }

    /// The explanation as JSON, for scripts.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "request": {"method": self.method, "path": self.target},
            "principal": {
                "type": self.principal.entity_type,
                "id": self.principal.id,
                "anonymous": self.principal.is_anonymous(),
            },
            "dropped_claims": self.dropped_claims,
            "now": self.now_secs,
            "source_ip": self.source_ip,
        });
        let classification = match &self.classification {
            Ok(classification) => json!({
                "namespace": classification.namespace,
                "mount": classification.mount,
                "mount_type": classification.mount_type.map(|t| t.name()),
                "action": classification.action.as_str(),
                "resource": classification.resource.to_string(),
                "parents": parents(&classification.resource),
            }),
            Err(e) => json!({"refused": {"status": e.status(), "reason": e.reason()}}),
        };
        out["classification"] = classification;
        let Some(evaluated) = &self.evaluated else {
            out["decision"] = json!("refused");
            return out;
        };
        out["decision"] = json!(evaluated.verdict.as_str());
        out["determining_policies"] = json!(evaluated.determining);
        out["errors"] = json!(evaluated.errors);
        out["approval_policy"] = json!(evaluated.approval_policy);
        out["anonymous_refused"] = json!(evaluated.anonymous_refused);
        out["template_attributes"] = evaluated
            .captures
            .iter()
            .map(|capture| {
                let on = evaluated.carriers(&capture.name);
                json!({"name": capture.name, "value": capture.value, "on": on})
            })
            .collect();
        out["context"] = match &evaluated.context {
            Ok(context) => context.clone(),
            Err(e) => json!({"error": e}),
        };
        out["recent_reads"] = match evaluated.recent_reads {
            RecentReads::NotDeclared => Value::Null,
            RecentReads::Given { value, window_s } => {
                json!({"value": value, "window_s": window_s})
            }
        };
        out["policies"] = evaluated
            .policies
            .iter()
            .map(|policy| {
                let mut entry = json!({
                    "id": policy.id,
                    "effect": effect(policy.permit),
                    "outcome": policy.outcome.as_str(),
                });
                if let PolicyOutcome::ConditionError(errors) = &policy.outcome {
                    entry["errors"] = json!(errors);
                }
                entry
            })
            .collect();
        out
    }
}

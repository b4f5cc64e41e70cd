//! `secretgate replay`: decides recorded requests again under a candidate
//! policy set and says which decisions would change.
//!
//! A record is decided with the filter's own pieces: the request is
//! classified again by the candidate configuration's mount table from the
//! recorded method, path and namespace header; the principal, claims,
//! source address, time and `recent_reads` are the ones the record says the
//! decision read (`inputs`); the candidate engine evaluates, and the verdict
//! is a [`PolicyVerdict`]. A record lacking an input the candidate policies
//! read is not replayable, never guessed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::audit::parse_rfc3339;
use crate::classify::{ClassifyError, HttpRequest};
use crate::config::Config;
use crate::identity::{Principal, ANONYMOUS_TYPE};
use crate::policy::{AccessRequest, PolicyEngine};
use crate::reads::ContextReads;
use crate::record::MAX_LOGGED_PATH;
use crate::verdict::PolicyVerdict;

/// How many examples a group of changes keeps for the summary.
const EXAMPLES_PER_GROUP: usize = 3;

/// The audit record's JSON text in one log line: the line itself, or the
/// `audit` field of a JSON access-log line (a string, as the shipped format
/// writes it, or an object). `None` for anything else.
pub fn record_text(line: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct AccessLine<'a> {
        #[serde(default, borrow)]
        audit: Option<&'a RawValue>,
    }
    let line = line.trim();
    let outer: AccessLine<'_> = serde_json::from_str(line).ok()?;
    match outer.audit.map(RawValue::get) {
        None => Some(Cow::Borrowed(line)),
        Some(raw) if raw.starts_with('"') => {
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
        }
        Some(raw) if raw.starts_with('{') => Some(Cow::Borrowed(raw)),
        Some(_) => None,
    }
}

/// The fields of an audit record that replay reads. Everything else (the
/// bodies above all) is skipped unparsed, which keeps a replay fast.
#[derive(Debug, Deserialize)]
pub struct RecordFields<'a> {
    #[serde(borrow)]
    pub decision: Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub principal: Option<PrincipalFields<'a>>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub path: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub time: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub action: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub resource: Option<Cow<'a, str>>,
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub errors: Vec<IgnoredAny>,
    #[serde(default)]
    pub approval: Option<IgnoredAny>,
    #[serde(default, borrow)]
    pub inputs: Option<InputFields<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct PrincipalFields<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

/// A record's `inputs` (README: Audit).
#[derive(Debug, Deserialize)]
pub struct InputFields<'a> {
    #[serde(default)]
    pub claims: Map<String, Value>,
    #[serde(default, borrow)]
    pub source_ip: Option<Cow<'a, str>>,
    #[serde(default)]
    pub recent_reads: Option<i64>,
    #[serde(default, borrow)]
    pub namespace_header: Option<Cow<'a, str>>,
}

impl<'a> RecordFields<'a> {
    /// The record in `text`, if it is one.
    pub fn parse(text: &'a str) -> Option<RecordFields<'a>> {
        serde_json::from_str(text).ok()
    }
}

/// A decision as replay compares them: a policy verdict, or a refusal
/// before any policy was asked (the candidate configuration would not
/// classify the request, or not accept the caller's claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    Policy(PolicyVerdict),
    Refused(&'static str),
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Policy(verdict) => verdict.as_str(),
            Decision::Refused(outcome) => outcome,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record decided again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub request_id: String,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub before: Decision,
    pub after: Decision,
    pub before_policies: Vec<String>,
    pub after_policies: Vec<String>,
}

/// Why a record cannot be decided again. The text is the summary's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReplayable(pub String);

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn not_replayable<T>(reason: impl Into<String>) -> Result<T, NotReplayable> {
    Err(NotReplayable(reason.into()))
}

fn required<'r>(field: &'r Option<Cow<'_, str>>, name: &str) -> Result<&'r str, NotReplayable> {
    match field {
        Some(text) => Ok(text),
        None => not_replayable(format!("malformed record: no {name}")),
    }
}

/// The policy verdict a record shows, if its decision was one.
fn recorded_verdict(record: &RecordFields<'_>) -> Result<PolicyVerdict, NotReplayable> {
    Ok(match record.decision.as_ref() {
        "allow" if record.approval.is_some() => PolicyVerdict::Approval,
        "allow" => PolicyVerdict::Allow,
        "deny" => PolicyVerdict::Deny,
        "error" => PolicyVerdict::Error,
        "pending_approval" | "approval_denied" | "approval_required" | "approval_error" => {
            PolicyVerdict::Approval
        }
        // A caller without identity hears "missing client identity" whatever
        // the policies said; the record keeps what they said.
        "unauthenticated" if !record.errors.is_empty() => PolicyVerdict::Error,
        "unauthenticated" => PolicyVerdict::Deny,
        other => {
            return not_replayable(format!(
                "recorded decision {other:?} is not a policy decision"
            ))
        }
    })
}

/// Decides records again under one candidate configuration.
pub struct Replayer<'a> {
    config: &'a Config,
    engine: &'a PolicyEngine,
    reads: ContextReads,
}

impl<'a> Replayer<'a> {
    pub fn new(config: &'a Config) -> Result<Replayer<'a>, String> {
        let engine = config
            .engine
            .as_deref()
            .ok_or("the candidate configuration has no policy set")?;
        let reads = engine.context_reads()?;
        Ok(Replayer {
            config,
            engine,
            reads,
        })
    }

    pub fn replay(&self, record: &RecordFields<'_>) -> Result<Replayed, NotReplayable> {
        let Some(inputs) = &record.inputs else {
            return not_replayable(format!(
                "no decision inputs: the request was refused before policy evaluation ({}), or the record predates inputs",
                record.decision
            ));
        };
        let before = recorded_verdict(record)?;
        let Some(recorded_principal) = &record.principal else {
            return not_replayable("malformed record: no principal");
        };
        let (principal_type, principal_id) = (&recorded_principal.kind, &recorded_principal.id);
        let method = required(&record.method, "method")?;
        let path = required(&record.path, "path")?;
        if path.len() + 3 >= MAX_LOGGED_PATH {
            return not_replayable("the path was cut in the record");
        }
        let time = required(&record.time, "time")?;
        let Some(now_secs) = parse_rfc3339(time) else {
            return not_replayable(format!("malformed record: time {time:?}"));
        };
        let source_ip = required(&inputs.source_ip, "inputs.source_ip")?;
        let namespace_header = inputs.namespace_header.as_deref();
        let recorded_claims = &inputs.claims;
        let recent_reads = inputs.recent_reads;
        let display_principal = format!("{principal_type}::{principal_id:?}");
        let replayed =
            |after: Decision, action: String, resource: String, after_policies| Replayed {
                request_id: record.request_id.clone().into_owned(),
                principal: display_principal.clone(),
                action,
                resource,
                before: Decision::Policy(before),
                after,
                before_policies: record.policies.clone(),
                after_policies,
            };
        let recorded_action = record.action.as_deref().unwrap_or("").to_owned();
        let recorded_resource = record.resource.as_deref().unwrap_or("").to_owned();

        let anonymous = principal_type.as_ref() == ANONYMOUS_TYPE;
        let refused = |outcome: &'static str| {
            Decision::Refused(if anonymous {
                "unauthenticated"
            } else {
                outcome
            })
        };
        let principal = if anonymous {
            if !self.config.identity.anonymous {
                return Ok(replayed(
                    Decision::Refused("unauthenticated"),
                    recorded_action,
                    recorded_resource,
                    Vec::new(),
                ));
            }
            Principal::anonymous()
        } else {
            let shape = self.engine.claims_shape();
            for name in shape.names() {
                if self.reads.reads_claim(name) && !recorded_claims.contains_key(name) {
                    return not_replayable(format!(
                        "claim {name:?} is read by the candidate policies but not recorded"
                    ));
                }
            }
            let Ok(claims) = shape.from_json(recorded_claims) else {
                // The filter answers 401 to a claim that does not decode as
                // its schema type.
                return Ok(replayed(
                    Decision::Refused("unauthenticated"),
                    recorded_action,
                    recorded_resource,
                    Vec::new(),
                ));
            };
            Principal {
                entity_type: self.config.identity.principal_type.clone(),
                id: principal_id.clone().into_owned(),
                claims,
            }
        };
        if self.engine.uses_recent_reads()
            && self.reads.reads_attribute("recent_reads")
            && recent_reads.is_none()
        {
            return not_replayable(
                "recent_reads is read by the candidate policies but not recorded",
            );
        }

        let request = HttpRequest {
            method,
            target: path,
            namespace: namespace_header.map(str::as_bytes),
        };
        let classification = match self.config.mounts.classify(&request) {
            Ok(classification) => classification,
            Err(e) => {
                let outcome = match e {
                    ClassifyError::MethodNotAllowed => "method_not_allowed",
                    ClassifyError::Path(_) => "bad_request",
                };
                return Ok(replayed(
                    refused(outcome),
                    recorded_action,
                    recorded_resource,
                    Vec::new(),
                ));
            }
        };
        let evaluation = self.engine.evaluate(&AccessRequest {
            principal: &principal,
            action: classification.action,
            resource: &classification.resource,
            method,
            source_ip,
            now_secs,
            namespace: &classification.namespace,
            // A schema that declares it gets a value: 0 when the policies
            // never read it, so nothing depends on it.
            recent_reads: self
                .engine
                .uses_recent_reads()
                .then(|| recent_reads.unwrap_or(0)),
        });
        let after = PolicyVerdict::of(&evaluation, self.engine.approvals());
        Ok(replayed(
            Decision::Policy(after),
            classification.action.as_str().to_owned(),
            classification.resource.to_string(),
            evaluation.policies,
        ))
    }
}

/// One changed decision, as the JSON output lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub request_id: String,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub before: &'static str,
    pub after: &'static str,
    pub before_policies: Vec<String>,
    pub after_policies: Vec<String>,
}

/// Changes with the same decisions and determining policies.
#[derive(Debug, Clone, Default)]
pub struct ChangeGroup {
    pub count: usize,
    pub examples: Vec<Change>,
}

/// (before, after, before policies, after policies).
pub type GroupKey = (Decision, Decision, Vec<String>, Vec<String>);

/// What a replay found, line by line.
#[derive(Debug, Default)]
pub struct Summary {
    pub lines_skipped: usize,
    pub records: usize,
    pub replayed: usize,
    pub not_replayable: BTreeMap<String, usize>,
    pub unchanged: usize,
    /// Same decision, other determining policies (counted in `unchanged`).
    pub policies_changed: usize,
    pub changes: Vec<Change>,
    pub groups: BTreeMap<GroupKey, ChangeGroup>,
}

impl Summary {
    /// Takes one log line.
    pub fn add_line(&mut self, replayer: &Replayer<'_>, line: &str) {
        let Some(text) = record_text(line) else {
            self.lines_skipped += 1;
            return;
        };
        let Some(record) = RecordFields::parse(&text) else {
            self.lines_skipped += 1;
            return;
        };
        self.records += 1;
        match replayer.replay(&record) {
            Ok(replayed) => self.add(replayed),
            Err(NotReplayable(reason)) => *self.not_replayable.entry(reason).or_default() += 1,
        }
    }

    fn add(&mut self, replayed: Replayed) {
        self.replayed += 1;
        if replayed.before == replayed.after {
            self.unchanged += 1;
            if replayed.before_policies != replayed.after_policies {
                self.policies_changed += 1;
            }
            return;
        }
        let change = Change {
            request_id: replayed.request_id,
            principal: replayed.principal,
            action: replayed.action,
            resource: replayed.resource,
            before: replayed.before.as_str(),
            after: replayed.after.as_str(),
            before_policies: replayed.before_policies,
            after_policies: replayed.after_policies,
        };
        let group = self
            .groups
            .entry((
                replayed.before,
                replayed.after,
                change.before_policies.clone(),
                change.after_policies.clone(),
            ))
            .or_default();
        group.count += 1;
        if group.examples.len() < EXAMPLES_PER_GROUP {
            group.examples.push(change.clone());
        }
        self.changes.push(change);
    }

    pub fn not_replayable_count(&self) -> usize {
        self.not_replayable.values().sum()
    }

    /// The `--json` form (README: secretgate replay).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "records": self.records,
            "replayed": self.replayed,
            "not_replayable": self.not_replayable_count(),
            "unchanged": self.unchanged,
            "changed": self.changes.len(),
            "changes": self.changes,
            "lines_skipped": self.lines_skipped,
            "not_replayable_reasons": self.not_replayable,
            "policies_changed": self.policies_changed,
        })
    }

    /// The human summary.
    pub fn to_text(&self) -> String {
        use fmt::Write as _;
        let list = |policies: &[String]| {
            if policies.is_empty() {
                "no policy".to_owned()
            } else {
                policies.join(", ")
            }
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "records read: {} ({} other lines skipped)",
            self.records, self.lines_skipped
        );
        let _ = writeln!(out, "replayed: {}", self.replayed);
        let _ = writeln!(out, "not replayable: {}", self.not_replayable_count());
        for (reason, count) in &self.not_replayable {
            let _ = writeln!(out, "  {count:>7}  {reason}");
        }
        let _ = writeln!(out, "unchanged: {}", self.unchanged);
        if self.policies_changed > 0 {
            let _ = writeln!(
                out,
                "  ({} with the same decision from other policies)",
                self.policies_changed
            );
        }
        let _ = writeln!(out, "changed: {}", self.changes.len());
        for ((before, after, before_policies, after_policies), group) in &self.groups {
            let _ = writeln!(
                out,
                "  {:>7}  {before} -> {after}  (before: {}; after: {})",
                group.count,
                list(before_policies),
                list(after_policies)
            );
            for example in &group.examples {
                let _ = writeln!(
                    out,
                    "             e.g. request_id={:?} {} {} {}",
                    example.request_id, example.principal, example.action, example.resource
                );
            }
        }
        out
    }
}

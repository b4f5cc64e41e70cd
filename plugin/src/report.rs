//! The figures of `secretgate report`: who read which secret, who was
//! refused, which approvals released what, and who was cut off, gathered
//! from audit records as they stream past.
//!
//! Memory grows with the distinct principals, resources, grants and hours
//! the records name, never with the number of records: each record only
//! bumps counters. Whether a principal was cut off ("allowed on a secret,
//! refused on it later") depends on record times, and records are not in
//! time order (a held request's record is written when it is released, with
//! the time it arrived; several logs interleave), so it takes a second,
//! cheap pass over the same lines: the first finds each pair's earliest
//! allow, the second the earliest refusal after it.
//!
//! No value of a record's bodies is ever read: only names, decisions,
//! times and approval fields, so the report cannot show a secret.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::audit::{parse_rfc3339, rfc3339};
use crate::record::Outcome;
use crate::replay::record_text;

/// The `format` of the JSON export; bumped only on an incompatible change.
pub const FORMAT: &str = "secretgate-access-report/1";

/// How many rows the "top" charts show.
pub const TOP_ROWS: usize = 10;

/// The refused caller of a request that carried no identity.
pub const NO_IDENTITY: &str = "(no identity)";

const MILLIS_PER_HOUR: i64 = 3_600_000;

/// Why a request was refused, as the report groups refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// A policy refused it (`deny`).
    Policy,
    /// No identity (`unauthenticated`).
    Unauthenticated,
    /// A bundle is configured but none had loaded (`no_policy`).
    NoPolicy,
    /// Something failed: evaluation, the host, the approval service, the
    /// audit (`error`, `host_error`, `approval_error`, `audit_unavailable`).
    Error,
    /// The request itself was refused (`bad_request`, `method_not_allowed`).
    BadRequest,
    /// Held for approval and not released: denied, expired, still pending
    /// (`approval_denied`, `approval_required`, `pending_approval`).
    Approval,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Policy,
        Refusal::Unauthenticated,
        Refusal::NoPolicy,
        Refusal::Error,
        Refusal::BadRequest,
        Refusal::Approval,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Policy => "policy",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::NoPolicy => "no_policy",
            Refusal::Error => "error",
            Refusal::BadRequest => "bad_request",
            Refusal::Approval => "approval",
        }
    }

    /// `None` for an allowed request.
    fn of(outcome: Outcome) -> Option<Refusal> {
        Some(match outcome {
            Outcome::Allowed => return None,
            Outcome::DeniedByPolicy => Refusal::Policy,
            Outcome::NoIdentity => Refusal::Unauthenticated,
            Outcome::NoPolicy => Refusal::NoPolicy,
            Outcome::EvaluationError
            | Outcome::HostError
            | Outcome::ApprovalError
            | Outcome::AuditUnavailable => Refusal::Error,
            Outcome::BadRequest | Outcome::MethodNotAllowed => Refusal::BadRequest,
            Outcome::AwaitingApproval | Outcome::ApprovalDenied | Outcome::ApprovalRequired => {
                Refusal::Approval
            }
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The records a report covers: `since` inclusive, `until` exclusive, in
/// Unix milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Period {
    fn contains(&self, millis: i64) -> bool {
        self.since.is_none_or(|since| millis >= since)
            && self.until.is_none_or(|until| millis < until)
    }
}

/// Unix milliseconds of an RFC 3339 time (the record's `time`, `--since`).
pub fn parse_time_millis(text: &str) -> Option<i64> {
    let seconds = parse_rfc3339(text)?;
    let mut millis = 0i64;
    if text.as_bytes().get(19) == Some(&b'.') {
        let mut digits = text.as_bytes()[20..]
            .iter()
            .take_while(|d| d.is_ascii_digit());
        for _ in 0..3 {
            millis = millis * 10 + digits.next().map_or(0, |d| i64::from(d - b'0'));
        }
    }
    seconds.checked_mul(1000)?.checked_add(millis)
}

/// RFC 3339 UTC with milliseconds; times before 1970 are not written by
/// the filter, and shown as the epoch.
pub fn format_millis(millis: i64) -> String {
    rfc3339(u64::try_from(millis).unwrap_or(0).saturating_mul(1_000_000))
}

/// The fields of a record the report reads. Bodies, claims and inputs are
/// skipped unparsed.
#[derive(Deserialize)]
struct RecordFields<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    decision: Cow<'a, str>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    principal: Option<PrincipalFields<'a>>,
    #[serde(default, borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    policies: Option<Vec<Cow<'a, str>>>,
    #[serde(default, borrow)]
    approval: Option<ApprovalFields<'a>>,
    #[serde(default, borrow)]
    masking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    token_hmac: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PrincipalFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// A record's `approval` (README: Approval).
#[derive(Deserialize)]
struct ApprovalFields<'a> {
    #[serde(default, borrow)]
    outcome: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    policy: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    approvers: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    approver: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    grant_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    expires_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    request_reason: Option<Cow<'a, str>>,
}

/// One record, as the report reads it.
struct Parsed<'a> {
    millis: i64,
    outcome: Outcome,
    fields: RecordFields<'a>,
}

/// What a line holds.
enum Line<'a> {
    Blank,
    /// An access-log line of a request the filter never saw (Envoy refused
    /// it first, e.g. `jwt_authn` an invalid token): no record to read.
    WithoutRecord,
    Unreadable,
    Record(Box<Parsed<'a>>),
}

/// A line read and parsed, owning what the report needs of it, so lines
/// can be parsed on other threads than the one that counts them.
pub struct ParsedLine(Line<'static>);

/// The record a line holds: the line itself, or the `audit` field of a
/// JSON access-log line. One parse of the outer line in the common cases.
fn record_of(text: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct AccessLine<'a> {
        #[serde(default, borrow)]
        audit: Option<Cow<'a, str>>,
    }
    let text = text.trim();
    if text.starts_with("{\"time\"") {
        return Some(Cow::Borrowed(text));
    }
    match serde_json::from_str::<AccessLine<'_>>(text) {
        Ok(AccessLine { audit: Some(audit) }) => Some(audit),
        // No `audit` string: a record of another field order, or a record
        // object in `audit`; `record_text` reads both shapes.
        _ => record_text(text),
    }
}

/// Parses one line of a log.
pub fn parse_line(text: &str) -> ParsedLine {
    if text.trim().is_empty() {
        return ParsedLine(Line::Blank);
    }
    let parse = |record: &str| {
        serde_json::from_str::<RecordFields<'_>>(record)
            .ok()
            .and_then(|fields| {
                Some(Parsed {
                    millis: parse_time_millis(&fields.time)?,
                    outcome: Outcome::from_decision(&fields.decision)?,
                    fields: fields.into_owned(),
                })
            })
    };
    // `record_of` takes a line starting with `"time"` for the record itself;
    // an access-log format that logs a `time` field first is read the long way.
    let parsed = record_of(text)
        .and_then(|record| parse(&record))
        .or_else(|| record_text(text).and_then(|record| parse(&record)));
    ParsedLine(match parsed {
        Some(parsed) => Line::Record(Box::new(parsed)),
        None if is_access_line_without_record(text) => Line::WithoutRecord,
        None => Line::Unreadable,
    })
}

/// Whether a line can matter to the second pass (a refusal by a policy):
/// most lines are skipped without parsing.
pub fn may_matter_again(text: &str) -> bool {
    text.contains("deny")
}

fn owned(value: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(value.into_owned())
}

impl RecordFields<'_> {
    /// What the report reads, owned; the time and decision are parsed
    /// already, and the masking mode is settled here.
    fn into_owned(self) -> RecordFields<'static> {
        let masking = match (self.masking.as_deref(), self.token_hmac.as_deref()) {
            (Some("hmac-sha256"), _) => Cow::Borrowed("hmac-sha256"),
            (Some("redact"), _) => Cow::Borrowed("redact"),
            (Some(other), _) => Cow::Owned(other.to_owned()),
            (None, Some(hmac)) if hmac.starts_with("hmac-sha256:") => Cow::Borrowed("hmac-sha256"),
            _ => Cow::Borrowed("unknown"),
        };
        RecordFields {
            time: Cow::Borrowed(""),
            decision: Cow::Borrowed(""),
            reason: self.reason.map(owned),
            principal: self.principal.map(|p| PrincipalFields {
                kind: owned(p.kind),
                id: owned(p.id),
            }),
            action: self.action.map(owned),
            resource: self.resource.map(owned),
            policies: self
                .policies
                .map(|policies| policies.into_iter().map(owned).collect()),
            approval: self.approval.map(|a| ApprovalFields {
                outcome: a.outcome.map(owned),
                policy: a.policy.map(owned),
                approvers: a.approvers.map(owned),
                approver: a.approver.map(owned),
                grant_id: a.grant_id.map(owned),
                expires_at: a.expires_at.map(owned),
                id: a.id.map(owned),
                reason: a.reason.map(owned),
                request_reason: a.request_reason.map(owned),
            }),
            masking: Some(masking),
            token_hmac: None,
        }
    }
}

/// A JSON access-log line whose `audit` is null or `-`, and that is no
/// record itself.
fn is_access_line_without_record(text: &str) -> bool {
    #[derive(Deserialize)]
    struct AccessLine<'a> {
        #[serde(default, borrow)]
        audit: Option<Cow<'a, str>>,
        #[serde(default)]
        decision: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        response_code: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<AccessLine<'_>>(text).is_ok_and(|line| {
        line.decision.is_none()
            && line.response_code.is_some()
            && line.audit.as_deref().is_none_or(|audit| audit == "-")
    })
}

/// Names seen in records, each stored once.
#[derive(Default)]
struct Names {
    index: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.index.insert(name.into(), id);
        id
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// How many times, and the first and last time.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: u64,
    first: i64,
    last: i64,
}

impl Tally {
    fn add(&mut self, millis: i64) {
        if self.count == 0 || millis < self.first {
            self.first = millis;
        }
        if self.count == 0 || millis > self.last {
            self.last = millis;
        }
        self.count += 1;
    }
}

/// What one principal did to one resource.
#[derive(Default)]
struct PairStats {
    allowed: Tally,
    /// Action ids of the allowed requests.
    actions: Vec<u32>,
    refused: Tally,
    refusals: [u64; Refusal::ALL.len()],
    /// The latest refusal by a policy: with `allowed.first`, whether the
    /// principal was cut off from this resource.
    last_policy_refusal: Option<i64>,
}

/// The first refusal by a policy after an allow of the same pair.
#[derive(Clone)]
struct CutOff {
    millis: i64,
    resource: u32,
    action: Option<u32>,
    reason: String,
    policies: Vec<String>,
}

struct Grant {
    requester: u32,
    resource: Option<u32>,
    action: Option<u32>,
    approver: String,
    group: String,
    policy: String,
    request_reason: String,
    expires_at: String,
    releases: Tally,
}

struct ApprovalDecision {
    millis: i64,
    requester: u32,
    resource: Option<u32>,
    action: Option<u32>,
    approver: String,
    reason: String,
    request_reason: String,
    expired: bool,
}

/// Principal, action, resource: what a grant covers.
type Scope = (u32, Option<u32>, Option<u32>);

/// Reads records and keeps the figures.
#[derive(Default)]
pub struct ReportBuilder {
    period: Period,
    lines: u64,
    records: u64,
    unreadable: u64,
    without_record: u64,
    outside_period: u64,
    first: Option<i64>,
    last: Option<i64>,
    principals: Names,
    resources: Names,
    actions: Names,
    pairs: HashMap<(u32, u32), PairStats>,
    /// Refusals of requests without a resource (a refused path), by principal.
    unplaced_refusals: HashMap<u32, u64>,
    allowed: u64,
    allowed_reads: u64,
    refusals: [u64; Refusal::ALL.len()],
    masking: BTreeMap<String, u64>,
    hourly: BTreeMap<i64, (u64, u64)>,
    grants: HashMap<String, Grant>,
    approval_decisions: Vec<ApprovalDecision>,
    /// Pending approval ids and when they were seen.
    pending: HashMap<String, (Scope, i64)>,
    /// The latest approval decision per scope (approved, denied, expired).
    decided: HashMap<Scope, i64>,
    /// Second pass: the earliest cut-off per principal.
    cut_offs: HashMap<u32, CutOff>,
}

impl ReportBuilder {
    pub fn new(period: Period) -> Self {
        ReportBuilder {
            period,
            ..ReportBuilder::default()
        }
    }

    /// The first pass: every line of every log, once.
    pub fn add_line(&mut self, line: &str) {
        self.add(&parse_line(line));
    }

    /// A line parsed by [`parse_line`], in the first pass.
    pub fn add(&mut self, line: &ParsedLine) {
        match &line.0 {
            Line::Blank => {}
            Line::WithoutRecord => {
                self.lines += 1;
                self.without_record += 1;
            }
            Line::Unreadable => {
                self.lines += 1;
                self.unreadable += 1;
            }
            Line::Record(parsed) => {
                self.lines += 1;
                if self.period.contains(parsed.millis) {
                    self.add_record(parsed);
                } else {
                    self.outside_period += 1;
                }
            }
        }
    }

    /// Whether a second pass over the same lines is needed to find when
    /// principals were cut off.
    pub fn wants_second_pass(&self) -> bool {
        self.pairs
            .values()
            .any(|pair| pair.cut_off_after().is_some())
    }

    /// The second pass, over the same lines in any order: the earliest
    /// policy refusal after each pair's first allow.
    pub fn add_line_again(&mut self, line: &str) {
        if may_matter_again(line) {
            self.add_again(&parse_line(line));
        }
    }

    /// A line parsed by [`parse_line`], in the second pass.
    pub fn add_again(&mut self, line: &ParsedLine) {
        if let Line::Record(parsed) = &line.0 {
            self.add_refusal_again(parsed);
        }
    }

    fn add_refusal_again(&mut self, parsed: &Parsed<'_>) {
        if parsed.outcome != Outcome::DeniedByPolicy || !self.period.contains(parsed.millis) {
            return;
        }
        let fields = &parsed.fields;
        let (Some(principal), Some(resource)) = (
            fields
                .principal
                .as_ref()
                .and_then(|p| self.principals.get(&principal_label(p))),
            fields
                .resource
                .as_deref()
                .and_then(|r| self.resources.get(r)),
        ) else {
            return;
        };
        let Some(allowed_first) = self
            .pairs
            .get(&(resource, principal))
            .and_then(PairStats::cut_off_after)
        else {
            return;
        };
        if parsed.millis <= allowed_first {
            return;
        }
        let earlier = self
            .cut_offs
            .get(&principal)
            .is_some_and(|known| (known.millis, known.resource) <= (parsed.millis, resource));
        if earlier {
            return;
        }
        let action = fields.action.as_deref().and_then(|a| self.actions.get(a));
        self.cut_offs.insert(
            principal,
            CutOff {
                millis: parsed.millis,
                resource,
                action,
                reason: fields.reason.as_deref().unwrap_or_default().to_owned(),
                policies: fields
                    .policies
                    .iter()
                    .flatten()
                    .map(|p| p.to_string())
                    .collect(),
            },
        );
    }

    fn add_record(&mut self, parsed: &Parsed<'_>) {
        let (millis, fields) = (parsed.millis, &parsed.fields);
        self.records += 1;
        self.first = Some(self.first.map_or(millis, |f| f.min(millis)));
        self.last = Some(self.last.map_or(millis, |l| l.max(millis)));
        let masking = fields.masking.as_deref().unwrap_or("unknown");
        match self.masking.get_mut(masking) {
            Some(count) => *count += 1,
            None => {
                self.masking.insert(masking.to_owned(), 1);
            }
        }

        let principal = fields
            .principal
            .as_ref()
            .map(|p| self.principals.id(&principal_label(p)));
        let resource = fields.resource.as_deref().map(|r| self.resources.id(r));
        let action = fields.action.as_deref().map(|a| self.actions.id(a));
        let hour = self
            .hourly
            .entry(millis.div_euclid(MILLIS_PER_HOUR))
            .or_default();
        match Refusal::of(parsed.outcome) {
            None => {
                hour.0 += 1;
                self.allowed += 1;
                if fields.action.as_deref() == Some("read") {
                    self.allowed_reads += 1;
                }
                if let (Some(principal), Some(resource)) = (principal, resource) {
                    let pair = self.pairs.entry((resource, principal)).or_default();
                    pair.allowed.add(millis);
                    if let Some(action) = action {
                        if !pair.actions.contains(&action) {
                            pair.actions.push(action);
                        }
                    }
                }
            }
            Some(refusal) => {
                hour.1 += 1;
                self.refusals[refusal.index()] += 1;
                let principal = principal.unwrap_or_else(|| self.principals.id(NO_IDENTITY));
                match resource {
                    Some(resource) => {
                        let pair = self.pairs.entry((resource, principal)).or_default();
                        pair.refused.add(millis);
                        pair.refusals[refusal.index()] += 1;
                        if refusal == Refusal::Policy {
                            pair.last_policy_refusal =
                                Some(pair.last_policy_refusal.map_or(millis, |l| l.max(millis)));
                        }
                    }
                    None => *self.unplaced_refusals.entry(principal).or_default() += 1,
                }
            }
        }
        if let (Some(approval), Some(principal)) = (&fields.approval, principal) {
            self.add_approval(millis, approval, (principal, action, resource));
        }
    }

    fn add_approval(&mut self, millis: i64, approval: &ApprovalFields<'_>, scope: Scope) {
        let text = |value: &Option<Cow<'_, str>>| value.as_deref().unwrap_or_default().to_owned();
        let (requester, action, resource) = scope;
        match approval.outcome.as_deref() {
            Some("approved") => {
                let grant_id = text(&approval.grant_id);
                let grant = self.grants.entry(grant_id).or_insert_with(|| Grant {
                    requester,
                    resource,
                    action,
                    approver: String::new(),
                    group: String::new(),
                    policy: String::new(),
                    request_reason: String::new(),
                    expires_at: String::new(),
                    releases: Tally::default(),
                });
                // The first release names who approved and why it was asked.
                if grant.releases.count == 0 || millis < grant.releases.first {
                    grant.approver = text(&approval.approver);
                    grant.group = text(&approval.approvers);
                    grant.policy = text(&approval.policy);
                    grant.request_reason = text(&approval.request_reason);
                    grant.expires_at = text(&approval.expires_at);
                }
                grant.releases.add(millis);
                self.decide(scope, millis);
            }
            Some("denied") => {
                let approver = text(&approval.approver);
                let reason = text(&approval.reason);
                // The approver answers an approval nobody decided in time as
                // a denial by "system" with the reason "expired".
                let expired = approver == "system" && reason == "expired";
                self.approval_decisions.push(ApprovalDecision {
                    millis,
                    requester,
                    resource,
                    action,
                    approver,
                    reason,
                    request_reason: text(&approval.request_reason),
                    expired,
                });
                self.decide(scope, millis);
            }
            Some("pending") => {
                if let Some(id) = approval.id.as_deref() {
                    let seen = self.pending.entry(id.to_owned()).or_insert((scope, millis));
                    seen.1 = seen.1.min(millis);
                }
            }
            _ => {}
        }
    }

    fn decide(&mut self, scope: Scope, millis: i64) {
        let latest = self.decided.entry(scope).or_insert(millis);
        *latest = (*latest).max(millis);
    }

    /// The report.
    pub fn finish(self) -> Report {
        let label = |names: &Names, id: Option<u32>| id.map(|id| names.name(id).to_owned());
        let secret_count = self
            .resources
            .names
            .iter()
            .filter(|name| name.starts_with("Secret::"))
            .count();
        let principal_count = self
            .principals
            .names
            .iter()
            .filter(|name| &***name != NO_IDENTITY)
            .count();
        let expired = self.approval_decisions.iter().filter(|d| d.expired).count();
        let undecided = self
            .pending
            .values()
            .filter(|(scope, seen)| self.decided.get(scope).is_none_or(|decided| decided < seen))
            .count();
        let approvals = ApprovalCounts {
            approved: self.grants.len() as u64,
            denied: (self.approval_decisions.len() - expired) as u64,
            expired: expired as u64,
            undecided: undecided as u64,
            requested: (self.grants.len() + self.approval_decisions.len() + undecided) as u64,
        };

        // Per resource and per principal, from the pairs.
        let mut by_resource: BTreeMap<&str, SecretRow> = BTreeMap::new();
        let mut by_principal: BTreeMap<&str, PrincipalRow> = BTreeMap::new();
        for (&(resource, principal), pair) in &self.pairs {
            let resource_name = self.resources.name(resource);
            let principal_name = self.principals.name(principal);
            let secret = by_resource
                .entry(resource_name)
                .or_insert_with(|| SecretRow::new(resource_name));
            if principal_name != NO_IDENTITY {
                by_principal
                    .entry(principal_name)
                    .or_insert_with(|| PrincipalRow::new(principal_name));
            }
            if pair.allowed.count > 0 {
                let mut actions: Vec<String> = pair
                    .actions
                    .iter()
                    .map(|&a| self.actions.name(a).to_owned())
                    .collect();
                actions.sort();
                secret
                    .readers
                    .push(Access::new(principal_name, pair.allowed, &actions));
                if let Some(person) = by_principal.get_mut(principal_name) {
                    person
                        .read
                        .push(Access::new(resource_name, pair.allowed, &actions));
                }
            }
            if pair.refused.count > 0 {
                let reasons = refusal_names(&pair.refusals);
                secret
                    .refused
                    .push(Refused::new(principal_name, pair.refused, &reasons));
                if let Some(person) = by_principal.get_mut(principal_name) {
                    person
                        .refused
                        .push(Refused::new(resource_name, pair.refused, &reasons));
                }
            }
        }
        for (grant_id, grant) in &self.grants {
            if let Some(resource) = grant.resource {
                let name = self.resources.name(resource);
                by_resource
                    .entry(name)
                    .or_insert_with(|| SecretRow::new(name))
                    .grants
                    .push(grant_id.clone());
            }
        }
        let mut secrets: Vec<SecretRow> = by_resource.into_values().collect();
        for secret in &mut secrets {
            secret.readers.sort_by(Access::order);
            secret.refused.sort_by(Refused::order);
            secret.grants.sort();
        }
        let mut principals: Vec<PrincipalRow> = by_principal.into_values().collect();
        for person in &mut principals {
            person.read.sort_by(Access::order);
            person.refused.sort_by(Refused::order);
        }

        let mut top_secrets: Vec<TopSecret> = secrets
            .iter()
            .filter(|s| s.kind == "Secret" && !s.readers.is_empty())
            .map(|s| TopSecret {
                resource: s.resource.clone(),
                readers: s.readers.len() as u64,
                reads: s.readers.iter().map(|r| r.count).sum(),
            })
            .collect();
        top_secrets.sort_by(|a, b| {
            (b.readers, b.reads)
                .cmp(&(a.readers, a.reads))
                .then_with(|| a.resource.cmp(&b.resource))
        });
        top_secrets.truncate(TOP_ROWS);
        let mut refused_by_principal: HashMap<u32, u64> = self.unplaced_refusals.clone();
        for (&(_, principal), pair) in &self.pairs {
            *refused_by_principal.entry(principal).or_default() += pair.refused.count;
        }
        let mut top_refused: Vec<TopPrincipal> = refused_by_principal
            .into_iter()
            .filter(|&(_, refusals)| refusals > 0)
            .map(|(principal, refusals)| TopPrincipal {
                principal: self.principals.name(principal).to_owned(),
                refusals,
            })
            .collect();
        top_refused.sort_by(|a, b| {
            b.refusals
                .cmp(&a.refusals)
                .then_with(|| a.principal.cmp(&b.principal))
        });
        top_refused.truncate(TOP_ROWS);

        let mut grants: Vec<GrantRow> = self
            .grants
            .iter()
            .map(|(grant_id, grant)| GrantRow {
                grant_id: grant_id.clone(),
                requester: self.principals.name(grant.requester).to_owned(),
                approver: grant.approver.clone(),
                resource: label(&self.resources, grant.resource),
                action: label(&self.actions, grant.action),
                request_reason: grant.request_reason.clone(),
                approvers: grant.group.clone(),
                policy: grant.policy.clone(),
                first_release: format_millis(grant.releases.first),
                last_release: format_millis(grant.releases.last),
                releases: grant.releases.count,
                expires_at: grant.expires_at.clone(),
            })
            .collect();
        grants
            .sort_by(|a, b| (&a.first_release, &a.grant_id).cmp(&(&b.first_release, &b.grant_id)));
        let mut decisions: Vec<&ApprovalDecision> = self.approval_decisions.iter().collect();
        decisions.sort_by_key(|d| d.millis);
        let approval_refusals = decisions
            .into_iter()
            .map(|d| ApprovalRefusalRow {
                time: format_millis(d.millis),
                requester: self.principals.name(d.requester).to_owned(),
                resource: label(&self.resources, d.resource),
                action: label(&self.actions, d.action),
                outcome: if d.expired { "expired" } else { "denied" },
                approver: d.approver.clone(),
                reason: d.reason.clone(),
                request_reason: d.request_reason.clone(),
            })
            .collect();

        let mut offboarding: Vec<WatchRow> = self
            .cut_offs
            .iter()
            .map(|(&principal, cut)| {
                let pair = self.pairs.get(&(cut.resource, principal));
                WatchRow {
                    principal: self.principals.name(principal).to_owned(),
                    first_allowed: format_millis(pair.map_or(0, |p| p.allowed.first)),
                    first_refusal: format_millis(cut.millis),
                    resource: self.resources.name(cut.resource).to_owned(),
                    action: label(&self.actions, cut.action),
                    reason: cut.reason.clone(),
                    policies: cut.policies.clone(),
                    allowed_again: pair.is_some_and(|p| p.allowed.last > cut.millis),
                    refusals: pair.map_or(0, |p| p.refused.count),
                }
            })
            .collect();
        offboarding.sort_by(|a, b| {
            (&a.first_refusal, &a.principal).cmp(&(&b.first_refusal, &b.principal))
        });

        let hourly = self
            .hourly
            .iter()
            .map(|(&hour, &(allowed, refused))| HourRow {
                hour: format_millis(hour * MILLIS_PER_HOUR),
                allowed,
                refused,
            })
            .collect();

        let refusals = &self.refusals;
        Report {
            format: FORMAT,
            period: PeriodRow {
                since: self.period.since.map(format_millis),
                until: self.period.until.map(format_millis),
                first_record: self.first.map(format_millis),
                last_record: self.last.map(format_millis),
            },
            summary: Summary {
                lines: self.lines,
                records: self.records,
                unreadable_lines: self.unreadable,
                lines_without_record: self.without_record,
                outside_period: self.outside_period,
                principals: principal_count as u64,
                secrets: secret_count as u64,
                resources: self.resources.names.len() as u64,
                allowed: self.allowed,
                allowed_reads: self.allowed_reads,
                refused: refusals.iter().sum(),
                refusals: RefusalCounts {
                    policy: refusals[Refusal::Policy.index()],
                    unauthenticated: refusals[Refusal::Unauthenticated.index()],
                    no_policy: refusals[Refusal::NoPolicy.index()],
                    error: refusals[Refusal::Error.index()],
                    bad_request: refusals[Refusal::BadRequest.index()],
                    approval: refusals[Refusal::Approval.index()],
                },
                approvals,
                masking: self.masking,
            },
            secrets,
            principals,
            approvals: grants,
            approval_refusals,
            offboarding,
            hourly,
            top_secrets_by_readers: top_secrets,
            top_refused_principals: top_refused,
        }
    }
}

impl PairStats {
    /// The pair's first allow, when a policy refused it later.
    fn cut_off_after(&self) -> Option<i64> {
        let refused = self.last_policy_refusal?;
        (self.allowed.count > 0 && refused > self.allowed.first).then_some(self.allowed.first)
    }
}

fn principal_label(principal: &PrincipalFields<'_>) -> String {
    format!("{}::{:?}", principal.kind, principal.id.as_ref())
}

fn refusal_names(counts: &[u64; Refusal::ALL.len()]) -> Vec<String> {
    Refusal::ALL
        .iter()
        .filter(|r| counts[r.index()] > 0)
        .map(|r| r.as_str().to_owned())
        .collect()
}

/// Everything the report shows; the JSON export is this, serialised.
#[derive(Debug, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub period: PeriodRow,
    pub summary: Summary,
    pub secrets: Vec<SecretRow>,
    pub principals: Vec<PrincipalRow>,
    /// Each grant that released a secret.
    pub approvals: Vec<GrantRow>,
    /// Each approval denied or expired.
    pub approval_refusals: Vec<ApprovalRefusalRow>,
    pub offboarding: Vec<WatchRow>,
    pub hourly: Vec<HourRow>,
    pub top_secrets_by_readers: Vec<TopSecret>,
    pub top_refused_principals: Vec<TopPrincipal>,
}

#[derive(Debug, Serialize)]
pub struct PeriodRow {
    pub since: Option<String>,
    pub until: Option<String>,
    pub first_record: Option<String>,
    pub last_record: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// Non-blank lines read.
    pub lines: u64,
    /// Audit records inside the period.
    pub records: u64,
    /// Lines that hold no readable record (truncated, garbled, not JSON).
    pub unreadable_lines: u64,
    /// Access-log lines (with a `response_code`) of requests the filter
    /// never saw: Envoy answered them first (`audit` null or `-`).
    pub lines_without_record: u64,
    /// Records outside `--since`/`--until`.
    pub outside_period: u64,
    pub principals: u64,
    /// Distinct `Secret` resources.
    pub secrets: u64,
    /// Distinct resources of every type (secrets, folders, endpoints).
    pub resources: u64,
    pub allowed: u64,
    pub allowed_reads: u64,
    pub refused: u64,
    pub refusals: RefusalCounts,
    pub approvals: ApprovalCounts,
    /// Records by the masking mode their values were masked with.
    pub masking: BTreeMap<String, u64>,
}

/// Refused requests by [`Refusal`].
#[derive(Debug, Serialize)]
pub struct RefusalCounts {
    pub policy: u64,
    pub unauthenticated: u64,
    pub no_policy: u64,
    pub error: u64,
    pub bad_request: u64,
    pub approval: u64,
}

impl RefusalCounts {
    /// Each group's name (as in [`Refusal::as_str`]) and count, in order.
    pub fn by_name(&self) -> [(&'static str, u64); 6] {
        [
            (Refusal::Policy.as_str(), self.policy),
            (Refusal::Unauthenticated.as_str(), self.unauthenticated),
            (Refusal::NoPolicy.as_str(), self.no_policy),
            (Refusal::Error.as_str(), self.error),
            (Refusal::BadRequest.as_str(), self.bad_request),
            (Refusal::Approval.as_str(), self.approval),
        ]
    }
}

#[derive(Debug, Serialize)]
pub struct ApprovalCounts {
    pub requested: u64,
    pub approved: u64,
    pub denied: u64,
    pub expired: u64,
    /// Asked, and no decision in the records by the end of the period.
    pub undecided: u64,
}

#[derive(Debug, Serialize)]
pub struct SecretRow {
    pub resource: String,
    /// The resource's entity type: `Secret`, `Path` (a folder), `Endpoint`, ...
    pub kind: String,
    pub readers: Vec<Access>,
    pub refused: Vec<Refused>,
    /// The grants that released it.
    pub grants: Vec<String>,
}

impl SecretRow {
    fn new(resource: &str) -> Self {
        SecretRow {
            resource: resource.to_owned(),
            kind: resource.split("::").next().unwrap_or_default().to_owned(),
            readers: Vec::new(),
            refused: Vec::new(),
            grants: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PrincipalRow {
    pub principal: String,
    pub read: Vec<Access>,
    pub refused: Vec<Refused>,
}

impl PrincipalRow {
    fn new(principal: &str) -> Self {
        PrincipalRow {
            principal: principal.to_owned(),
            read: Vec::new(),
            refused: Vec::new(),
        }
    }
}

/// Allowed requests of one principal on one resource (`who` is the other
/// side of the row it sits in).
#[derive(Debug, Serialize)]
pub struct Access {
    pub who: String,
    pub count: u64,
    pub first: String,
    pub last: String,
    pub actions: Vec<String>,
}

impl Access {
    fn new(who: &str, tally: Tally, actions: &[String]) -> Self {
        Access {
            who: who.to_owned(),
            count: tally.count,
            first: format_millis(tally.first),
            last: format_millis(tally.last),
            actions: actions.to_vec(),
        }
    }

    fn order(a: &Access, b: &Access) -> std::cmp::Ordering {
        b.count.cmp(&a.count).then_with(|| a.who.cmp(&b.who))
    }
}

#[derive(Debug, Serialize)]
pub struct Refused {
    pub who: String,
    pub count: u64,
    pub first: String,
    pub last: String,
    pub reasons: Vec<String>,
}

impl Refused {
    fn new(who: &str, tally: Tally, reasons: &[String]) -> Self {
        Refused {
            who: who.to_owned(),
            count: tally.count,
            first: format_millis(tally.first),
            last: format_millis(tally.last),
            reasons: reasons.to_vec(),
        }
    }

    fn order(a: &Refused, b: &Refused) -> std::cmp::Ordering {
        b.count.cmp(&a.count).then_with(|| a.who.cmp(&b.who))
    }
}

#[derive(Debug, Serialize)]
pub struct GrantRow {
    pub grant_id: String,
    pub requester: String,
    pub approver: String,
    pub resource: Option<String>,
    pub action: Option<String>,
    /// What the requester gave as the reason (`X-Secretgate-Reason`).
    pub request_reason: String,
    /// The approver group the policy named.
    pub approvers: String,
    pub policy: String,
    pub first_release: String,
    pub last_release: String,
    /// Requests the grant let through.
    pub releases: u64,
    pub expires_at: String,
}

#[derive(Debug, Serialize)]
pub struct ApprovalRefusalRow {
    pub time: String,
    pub requester: String,
    pub resource: Option<String>,
    pub action: Option<String>,
    /// `denied` or `expired`.
    pub outcome: &'static str,
    pub approver: String,
    pub reason: String,
    pub request_reason: String,
}

/// A principal allowed on a resource and refused on it later by a policy.
#[derive(Debug, Serialize)]
pub struct WatchRow {
    pub principal: String,
    /// Its first allow on that resource.
    pub first_allowed: String,
    /// Its first refusal by a policy after it.
    pub first_refusal: String,
    pub resource: String,
    pub action: Option<String>,
    pub reason: String,
    pub policies: Vec<String>,
    /// Allowed on that resource again after the refusal.
    pub allowed_again: bool,
    /// Every refusal of the principal on that resource in the period.
    pub refusals: u64,
}

#[derive(Debug, Serialize)]
pub struct HourRow {
    /// The hour's start, RFC 3339 UTC.
    pub hour: String,
    pub allowed: u64,
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct TopSecret {
    pub resource: String,
    /// Distinct principals allowed on it.
    pub readers: u64,
    pub reads: u64,
}

#[derive(Debug, Serialize)]
pub struct TopPrincipal {
    pub principal: String,
    pub refusals: u64,
}

/// Builds a report from whole lines held in memory (tests, benchmarks);
/// the CLI streams files through [`ReportBuilder`] instead.
pub fn report_of_lines<'a, I>(lines: I, period: Period) -> Report
where
    I: IntoIterator<Item = &'a str> + Clone,
{
    let mut builder = ReportBuilder::new(period);
    for line in lines.clone() {
        builder.add_line(line);
    }
    if builder.wants_second_pass() {
        for line in lines {
            builder.add_line_again(line);
        }
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: &str, principal: Option<&str>, resource: &str, decision: &str) -> String {
        let principal = principal.map_or("null".to_owned(), |id| {
            format!(r#"{{"type":"Workload","id":"{id}"}}"#)
        });
        format!(
            r#"{{"time":"{time}","request_id":"r","principal":{principal},"method":"GET","path":"/v1/x","action":"read","resource":"Secret::\"{resource}\"","decision":"{decision}","reason":"why","policies":["p"],"masking":"hmac-sha256"}}"#
        )
    }

    fn with_approval(line: &str, approval: &str) -> String {
        line.replacen(
            r#""masking""#,
            &format!(r#""approval":{approval},"masking""#),
            1,
        )
    }

    fn report(lines: &[String]) -> Report {
        report_of_lines(lines.iter().map(String::as_str), Period::default())
    }

    #[test]
    fn every_outcome_has_one_refusal_group_or_is_allowed() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::from_decision(outcome.as_str()), Some(outcome));
            assert_eq!(Refusal::of(outcome).is_none(), outcome == Outcome::Allowed);
        }
        assert_eq!(Outcome::from_decision("maybe"), None);
    }

    #[test]
    fn a_cut_off_is_found_whatever_the_order_of_the_lines() {
        let lines = vec![
            // Read order is not time order: the refusals come first.
            record(
                "2026-12-01T12:00:00.000Z",
                Some("contractor"),
                "secret/a",
                "deny",
            ),
            record(
                "2026-12-01T11:00:00.000Z",
                Some("contractor"),
                "secret/a",
                "deny",
            ),
            record(
                "2026-12-01T09:00:00.000Z",
                Some("contractor"),
                "secret/a",
                "deny",
            ),
            record(
                "2026-12-01T10:00:00.000Z",
                Some("contractor"),
                "secret/a",
                "allow",
            ),
            // Refused on a secret it never read: not a cut-off.
            record(
                "2026-12-01T10:30:00.000Z",
                Some("stranger"),
                "secret/a",
                "deny",
            ),
            record(
                "2026-12-01T09:30:00.000Z",
                Some("stranger"),
                "secret/b",
                "allow",
            ),
            // Allowed throughout.
            record(
                "2026-12-01T10:00:00.000Z",
                Some("steady"),
                "secret/b",
                "allow",
            ),
            record(
                "2026-12-01T13:00:00.000Z",
                Some("steady"),
                "secret/b",
                "allow",
            ),
            // Refused first, allowed later (a new grant), refused again never.
            record(
                "2026-12-01T08:00:00.000Z",
                Some("newcomer"),
                "secret/c",
                "deny",
            ),
            record(
                "2026-12-01T09:00:00.000Z",
                Some("newcomer"),
                "secret/c",
                "allow",
            ),
        ];
        let watch = report(&lines).offboarding;
        assert_eq!(watch.len(), 1, "{watch:?}");
        assert_eq!(watch[0].principal, r#"Workload::"contractor""#);
        assert_eq!(watch[0].first_allowed, "2026-12-01T10:00:00.000Z");
        assert_eq!(watch[0].first_refusal, "2026-12-01T11:00:00.000Z");
        assert_eq!(watch[0].resource, r#"Secret::"secret/a""#);
        assert_eq!(watch[0].policies, ["p"]);
        assert_eq!(watch[0].refusals, 3);
        assert!(!watch[0].allowed_again);
    }

    #[test]
    fn counts_per_secret_principal_and_reason() {
        let lines = vec![
            record("2026-12-01T10:00:00.000Z", Some("api"), "secret/a", "allow"),
            record("2026-12-01T10:05:00.000Z", Some("api"), "secret/a", "allow"),
            record("2026-12-01T10:10:00.000Z", Some("web"), "secret/a", "allow"),
            record("2026-12-01T11:10:00.000Z", Some("web"), "secret/b", "deny"),
            record(
                "2026-12-01T11:20:00.000Z",
                None,
                "secret/b",
                "unauthenticated",
            ),
            record(
                "2026-12-01T11:30:00.000Z",
                Some("web"),
                "secret/b",
                "no_policy",
            ),
            record(
                "2026-12-01T11:40:00.000Z",
                Some("web"),
                "secret/b",
                "host_error",
            ),
            String::new(),
            "{\"time\":\"2026-12-01T1".to_owned(),
            "not json at all".to_owned(),
            r#"{"start_time":"x","response_code":401,"audit":null}"#.to_owned(),
            r#"{"start_time":"x","response_code":401,"audit":"-"}"#.to_owned(),
            r#"{"start_time":"x","audit":"{\"time\":"}"#.to_owned(),
        ];
        let report = report(&lines);
        let s = &report.summary;
        assert_eq!((s.records, s.unreadable_lines, s.lines), (7, 3, 12));
        assert_eq!(s.lines_without_record, 2);
        assert_eq!((s.allowed, s.allowed_reads, s.refused), (3, 3, 4));
        assert_eq!((s.principals, s.secrets), (2, 2));
        assert_eq!(s.refusals.policy, 1);
        assert_eq!(s.refusals.unauthenticated, 1);
        assert_eq!(s.refusals.no_policy, 1);
        assert_eq!(s.refusals.error, 1);
        assert_eq!(s.masking["hmac-sha256"], 7);
        let a = &report.secrets[0];
        assert_eq!(a.resource, r#"Secret::"secret/a""#);
        assert_eq!(a.readers.len(), 2);
        assert_eq!(
            (a.readers[0].who.as_str(), a.readers[0].count),
            (r#"Workload::"api""#, 2)
        );
        assert_eq!(a.readers[0].first, "2026-12-01T10:00:00.000Z");
        assert_eq!(a.readers[0].last, "2026-12-01T10:05:00.000Z");
        let b = &report.secrets[1];
        assert_eq!(b.refused.len(), 2);
        assert_eq!(b.refused[0].who, r#"Workload::"web""#);
        assert_eq!(b.refused[0].reasons, ["policy", "no_policy", "error"]);
        assert_eq!(b.refused[1].who, NO_IDENTITY);
        let web = report
            .principals
            .iter()
            .find(|p| p.principal == r#"Workload::"web""#);
        let web = web.expect("web is listed");
        assert_eq!(web.read.len(), 1);
        assert_eq!(web.refused[0].count, 3);
        assert_eq!(report.hourly.len(), 2);
        assert_eq!((report.hourly[0].allowed, report.hourly[0].refused), (3, 0));
        assert_eq!((report.hourly[1].allowed, report.hourly[1].refused), (0, 4));
        assert_eq!(report.top_secrets_by_readers[0].readers, 2);
        assert_eq!(report.top_refused_principals[0].refusals, 3);
    }

    #[test]
    fn approvals_are_counted_once_per_request() {
        let approved = r#"{"outcome":"approved","grant_id":"gr_1","approver":"alice","approvers":"secops","policy":"prod","expires_at":"2026-12-01T11:00:00Z","request_reason":"https://ci.example/run/7"}"#;
        let lines = vec![
            // retry mode: pending, then the retry is approved, then the grant is reused.
            with_approval(
                &record(
                    "2026-12-01T10:00:00.000Z",
                    Some("api"),
                    "secret/prod",
                    "approval_required",
                ),
                r#"{"outcome":"pending","id":"ap_1"}"#,
            ),
            with_approval(
                &record(
                    "2026-12-01T10:02:00.000Z",
                    Some("api"),
                    "secret/prod",
                    "allow",
                ),
                approved,
            ),
            with_approval(
                &record(
                    "2026-12-01T10:03:00.000Z",
                    Some("api"),
                    "secret/prod",
                    "allow",
                ),
                approved,
            ),
            // hold mode, denied by a person; and one nobody decided (expired).
            with_approval(
                &record(
                    "2026-12-01T10:05:00.000Z",
                    Some("web"),
                    "secret/prod",
                    "approval_denied",
                ),
                r#"{"outcome":"denied","approver":"bob","reason":"freeze"}"#,
            ),
            with_approval(
                &record(
                    "2026-12-01T10:06:00.000Z",
                    Some("ops"),
                    "secret/prod",
                    "approval_denied",
                ),
                r#"{"outcome":"denied","approver":"system","reason":"expired"}"#,
            ),
            // pending twice under one id, never decided.
            with_approval(
                &record(
                    "2026-12-01T10:07:00.000Z",
                    Some("ops"),
                    "secret/prod2",
                    "approval_required",
                ),
                r#"{"outcome":"pending","id":"ap_9"}"#,
            ),
            with_approval(
                &record(
                    "2026-12-01T10:08:00.000Z",
                    Some("ops"),
                    "secret/prod2",
                    "approval_required",
                ),
                r#"{"outcome":"pending","id":"ap_9"}"#,
            ),
            // The approval service failed: not an approval decision.
            with_approval(
                &record(
                    "2026-12-01T10:09:00.000Z",
                    Some("ops"),
                    "secret/prod2",
                    "approval_error",
                ),
                r#"{"outcome":"error","reason":"callout failed"}"#,
            ),
        ];
        let report = report(&lines);
        let counts = &report.summary.approvals;
        assert_eq!(
            (
                counts.requested,
                counts.approved,
                counts.denied,
                counts.expired,
                counts.undecided
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(report.approvals.len(), 1);
        let grant = &report.approvals[0];
        assert_eq!(grant.grant_id, "gr_1");
        assert_eq!(
            (grant.approver.as_str(), grant.requester.as_str()),
            ("alice", r#"Workload::"api""#)
        );
        assert_eq!(grant.request_reason, "https://ci.example/run/7");
        assert_eq!(grant.releases, 2);
        assert_eq!(grant.first_release, "2026-12-01T10:02:00.000Z");
        assert_eq!(report.approval_refusals.len(), 2);
        assert_eq!(report.approval_refusals[1].outcome, "expired");
        assert_eq!(report.summary.refusals.approval, 5);
        assert_eq!(report.summary.refusals.error, 1);
        let prod = report
            .secrets
            .iter()
            .find(|s| s.resource == r#"Secret::"secret/prod""#);
        assert_eq!(prod.expect("listed").grants, ["gr_1"]);
    }

    #[test]
    fn an_access_log_whose_first_field_is_time_is_read_through_its_audit_field() {
        let inner = record("2026-12-01T11:50:00.000Z", Some("api"), "secret/a", "allow");
        let line = format!(
            r#"{{"time":"2026-12-01T11:50:00Z","audit":{}}}"#,
            serde_json::Value::String(inner)
        );
        let report = report(&[line]);
        assert_eq!(
            (report.summary.records, report.summary.unreadable_lines),
            (1, 0)
        );
        assert_eq!(report.summary.allowed, 1);
    }

    #[test]
    fn the_period_bounds_are_inclusive_then_exclusive() {
        let lines = [
            record("2026-12-01T09:59:59.999Z", Some("a"), "secret/a", "allow"),
            record("2026-12-01T10:00:00.000Z", Some("a"), "secret/a", "allow"),
            record("2026-12-01T10:59:59.999Z", Some("a"), "secret/a", "allow"),
            record("2026-12-01T11:00:00.000Z", Some("a"), "secret/a", "allow"),
        ];
        let period = Period {
            since: parse_time_millis("2026-12-01T10:00:00Z"),
            until: parse_time_millis("2026-12-01T11:00:00Z"),
        };
        let report = report_of_lines(lines.iter().map(String::as_str), period);
        assert_eq!(
            (report.summary.records, report.summary.outside_period),
            (2, 2)
        );
        assert_eq!(
            report.period.first_record.as_deref(),
            Some("2026-12-01T10:00:00.000Z")
        );
        assert_eq!(
            report.period.last_record.as_deref(),
            Some("2026-12-01T10:59:59.999Z")
        );
    }

    #[test]
    fn memory_follows_distinct_names_not_records() {
        let mut builder = ReportBuilder::new(Period::default());
        for i in 0..20_000 {
            let minute = i % 60;
            let decision = if i % 3 == 0 { "deny" } else { "allow" };
            let principal = format!("p{}", i % 7);
            let time = format!("2026-12-01T10:{minute:02}:00.000Z");
            builder.add_line(&record(&time, Some(&principal), "secret/a", decision));
        }
        assert_eq!(builder.records, 20_000);
        assert_eq!(builder.principals.names.len(), 7);
        assert_eq!(builder.resources.names.len(), 1);
        assert_eq!(builder.pairs.len(), 7);
        assert_eq!(builder.hourly.len(), 1);
        assert!(builder.pairs.values().all(|pair| pair.actions.len() == 1));
    }

    #[test]
    fn times_keep_their_milliseconds() {
        assert_eq!(
            parse_time_millis("2026-12-01T10:00:00.5Z"),
            Some(1_796_119_200_500)
        );
        assert_eq!(
            parse_time_millis("2026-12-01T10:00:00.123456Z"),
            Some(1_796_119_200_123)
        );
        assert_eq!(
            parse_time_millis("2026-12-01T11:00:00+01:00"),
            Some(1_796_119_200_000)
        );
        assert_eq!(format_millis(1_796_119_200_123), "2026-12-01T10:00:00.123Z");
        assert_eq!(parse_time_millis("yesterday"), None);
    }
}

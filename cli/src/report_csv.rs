//! The access report's tables as CSV files (RFC 4180), one per table, for
//! the auditors' own tools.
//!
//! A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return
//! gets a leading `'`: spreadsheets run such a cell as a formula, and names
//! and reasons in records are chosen by callers.

use std::path::Path;

use secretgate::report::Report;

fn cell(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

struct Table {
    text: String,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        let mut table = Table {
            text: String::new(),
        };
        table.row(header.iter().map(|h| (*h).to_owned()));
        table
    }

    fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let cells: Vec<String> = cells.into_iter().map(|c| cell(&c)).collect();
        self.text.push_str(&cells.join(","));
        self.text.push_str("\r\n");
    }
}

/// The tables, by file name.
pub fn tables(report: &Report) -> Vec<(&'static str, String)> {
    let summary = &report.summary;
    let mut figures = Table::new(&["figure", "value"]);
    let period = &report.period;
    for (name, value) in [
        ("first_record", period.first_record.clone()),
        ("last_record", period.last_record.clone()),
        ("since", period.since.clone()),
        ("until", period.until.clone()),
    ] {
        figures.row([name.to_owned(), value.unwrap_or_default()]);
    }
    for (name, value) in [
        ("lines", summary.lines),
        ("records", summary.records),
        ("unreadable_lines", summary.unreadable_lines),
        ("lines_without_record", summary.lines_without_record),
        ("outside_period", summary.outside_period),
        ("principals", summary.principals),
        ("secrets", summary.secrets),
        ("resources", summary.resources),
        ("allowed", summary.allowed),
        ("allowed_reads", summary.allowed_reads),
        ("refused", summary.refused),
        ("approvals_requested", summary.approvals.requested),
        ("approvals_approved", summary.approvals.approved),
        ("approvals_denied", summary.approvals.denied),
        ("approvals_expired", summary.approvals.expired),
        ("approvals_undecided", summary.approvals.undecided),
    ] {
        figures.row([name.to_owned(), value.to_string()]);
    }
    for (reason, count) in summary.refusals.by_name() {
        figures.row([format!("refused_{reason}"), count.to_string()]);
    }
    for (mode, count) in &summary.masking {
        figures.row([format!("masking_{mode}"), count.to_string()]);
    }

    let access_header = [
        "resource",
        "principal",
        "requests",
        "first",
        "last",
        "actions",
    ];
    let refused_header = [
        "resource",
        "principal",
        "requests",
        "first",
        "last",
        "reasons",
    ];
    let mut secret_reads = Table::new(&access_header);
    let mut secret_refusals = Table::new(&refused_header);
    for secret in &report.secrets {
        for a in &secret.readers {
            secret_reads.row([
                secret.resource.clone(),
                a.who.clone(),
                a.count.to_string(),
                a.first.clone(),
                a.last.clone(),
                a.actions.join(" "),
            ]);
        }
        for r in &secret.refused {
            secret_refusals.row([
                secret.resource.clone(),
                r.who.clone(),
                r.count.to_string(),
                r.first.clone(),
                r.last.clone(),
                r.reasons.join(" "),
            ]);
        }
    }
    let mut principal_reads = Table::new(&[
        "principal",
        "resource",
        "requests",
        "first",
        "last",
        "actions",
    ]);
    let mut principal_refusals = Table::new(&[
        "principal",
        "resource",
        "requests",
        "first",
        "last",
        "reasons",
    ]);
    for principal in &report.principals {
        for a in &principal.read {
            principal_reads.row([
                principal.principal.clone(),
                a.who.clone(),
                a.count.to_string(),
                a.first.clone(),
                a.last.clone(),
                a.actions.join(" "),
            ]);
        }
        for r in &principal.refused {
            principal_refusals.row([
                principal.principal.clone(),
                r.who.clone(),
                r.count.to_string(),
                r.first.clone(),
                r.last.clone(),
                r.reasons.join(" "),
            ]);
        }
    }
    let mut approvals = Table::new(&[
        "grant_id",
        "requester",
        "approver",
        "resource",
        "action",
        "request_reason",
        "approvers",
        "policy",
        "first_release",
        "last_release",
        "releases",
        "expires_at",
    ]);
    for g in &report.approvals {
        approvals.row([
            g.grant_id.clone(),
            g.requester.clone(),
            g.approver.clone(),
            g.resource.clone().unwrap_or_default(),
            g.action.clone().unwrap_or_default(),
            g.request_reason.clone(),
            g.approvers.clone(),
            g.policy.clone(),
            g.first_release.clone(),
            g.last_release.clone(),
            g.releases.to_string(),
            g.expires_at.clone(),
        ]);
    }
    let mut approval_refusals = Table::new(&[
        "time",
        "requester",
        "resource",
        "action",
        "outcome",
        "approver",
        "reason",
        "request_reason",
    ]);
    for a in &report.approval_refusals {
        approval_refusals.row([
            a.time.clone(),
            a.requester.clone(),
            a.resource.clone().unwrap_or_default(),
            a.action.clone().unwrap_or_default(),
            a.outcome.to_owned(),
            a.approver.clone(),
            a.reason.clone(),
            a.request_reason.clone(),
        ]);
    }
    let mut offboarding = Table::new(&[
        "principal",
        "resource",
        "action",
        "first_allowed",
        "first_refusal",
        "reason",
        "policies",
        "refusals",
        "allowed_again",
    ]);
    for w in &report.offboarding {
        offboarding.row([
            w.principal.clone(),
            w.resource.clone(),
            w.action.clone().unwrap_or_default(),
            w.first_allowed.clone(),
            w.first_refusal.clone(),
            w.reason.clone(),
            w.policies.join(" "),
            w.refusals.to_string(),
            w.allowed_again.to_string(),
        ]);
    }
    let mut hourly = Table::new(&["hour", "allowed", "refused"]);
    for h in &report.hourly {
        hourly.row([h.hour.clone(), h.allowed.to_string(), h.refused.to_string()]);
    }
    let mut top_secrets = Table::new(&["resource", "readers", "requests"]);
    for t in &report.top_secrets_by_readers {
        top_secrets.row([
            t.resource.clone(),
            t.readers.to_string(),
            t.reads.to_string(),
        ]);
    }
    let mut top_refused = Table::new(&["principal", "refusals"]);
    for t in &report.top_refused_principals {
        top_refused.row([t.principal.clone(), t.refusals.to_string()]);
    }
    vec![
        ("summary.csv", figures.text),
        ("secret_reads.csv", secret_reads.text),
        ("secret_refusals.csv", secret_refusals.text),
        ("principal_reads.csv", principal_reads.text),
        ("principal_refusals.csv", principal_refusals.text),
        ("approvals.csv", approvals.text),
        ("approval_refusals.csv", approval_refusals.text),
        ("offboarding.csv", offboarding.text),
        ("hourly.csv", hourly.text),
        ("top_secrets.csv", top_secrets.text),
        ("top_refused_principals.csv", top_refused.text),
    ]
}

pub fn write(report: &Report, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in tables(report) {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
    }
}

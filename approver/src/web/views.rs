//! The approvers' page as HTML: pure functions of what the store holds, so
//! what an approver sees (and that every value in it is escaped) is tested
//! without a server. Every value that reaches the page goes through `esc`;
//! a requester's claims and reason are attacker-influenced (a repository
//! name is chosen by whoever creates the repository).

use crate::store::{Approval, Decided, HistoryFilter, TrackRecord, DECIDED_OUTCOMES};
use crate::util::{html_escape as esc, rfc3339};
use serde_json::Value;

/// The three views of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Pending,
    History,
    Grants,
}

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Pending => "pending",
            View::History => "history",
            View::Grants => "grants",
        }
    }
}

/// The claims a CI job's approver looks at first, in this order; the rest
/// follow by name.
const FIRST_CLAIMS: [&str; 6] = [
    "repository",
    "ref",
    "ref_protected",
    "job_workflow_ref",
    "environment",
    "actor",
];

/// A whole HTML document. The script and style come from the approver
/// itself (`/static/...`), so the CSP can forbid inline code.
pub fn document(title: &str, server_now: i64, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t}</title><link rel=\"stylesheet\" href=\"/static/approvals.css\">\
<script src=\"/static/approvals.js\" defer></script></head>\
<body data-server-now=\"{server_now}\"><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    )
}

pub fn login_form(error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{err}<form method=\"post\" action=\"/login\">\
<label for=\"token\">Approver token</label> \
<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required> \
<button type=\"submit\" id=\"login\">Sign in</button></form>"
    )
}

/// The signed-in frame around a view: who is signed in, the views, sign out.
pub fn frame(view: View, me: &str, csrf: &str, content: &str) -> String {
    let link = |target: View, href: &str, label: &str| {
        let current = if target == view {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!(
            "<a href=\"{href}\" id=\"nav-{}\"{current}>{label}</a>",
            target.name()
        )
    };
    format!(
        "<header><p>Signed in as <b id=\"me\">{me}</b></p>\
<nav aria-label=\"Views\">{pending} {history} {grants}</nav>\
<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\">Sign out</button></form></header>\
<p id=\"status\" role=\"status\" aria-live=\"polite\"></p>\
<main id=\"view\" data-view=\"{name}\">{content}</main>",
        me = esc(me),
        csrf = esc(csrf),
        pending = link(View::Pending, "/", "Pending"),
        history = link(View::History, "/history", "History"),
        grants = link(View::Grants, "/grants", "Live grants"),
        name = view.name(),
    )
}

/// One pending request and what the page shows with it.
pub struct PendingItem<'a> {
    pub approval: &'a Approval,
    /// The signed-in approver is the requester: no decision buttons.
    pub own: bool,
    /// Until when a hold-mode callout keeps the client waiting.
    pub held_until: Option<i64>,
    pub record: TrackRecord,
    pub record_days: i64,
}

pub fn pending_view(items: &[PendingItem<'_>], csrf: &str, now: i64) -> String {
    if items.is_empty() {
        return "<h2>Pending requests</h2><p id=\"empty\">No pending requests.</p>".to_owned();
    }
    let mut out = String::from("<h2>Pending requests</h2>");
    for item in items {
        out.push_str(&pending_item(item, csrf, now));
    }
    out
}

fn pending_item(item: &PendingItem<'_>, csrf: &str, now: i64) -> String {
    let a = item.approval;
    let id = esc(&a.id);
    let hold = match item.held_until {
        Some(until) if until > now => countdown("hold", until, now),
        _ => "<span class=\"not-held\">not held: the client asks again</span>".to_owned(),
    };
    let policies: String = a
        .policies
        .iter()
        .map(|p| format!("<li><code>{}</code></li>", esc(p)))
        .collect();
    format!(
        "<article class=\"request\" id=\"{id}\" aria-labelledby=\"title-{id}\">\
<h3 id=\"title-{id}\"><span class=\"action\">{action}</span> <code class=\"resource\">{resource}</code></h3>\
<div class=\"facts\">\
<section class=\"who\"><h4>Who is asking</h4>\
<p class=\"principal\">{ptype} <b>{pid}</b></p>{claims}</section>\
<section class=\"why\"><h4>Reason</h4><p class=\"reason\">{reason}</p></section>\
<section class=\"unlocks\"><h4>What it unlocks</h4><dl>\
<dt>Action</dt><dd class=\"action\">{action}</dd>\
<dt>Path</dt><dd class=\"path\"><code>{path}</code></dd>\
<dt>Policies requiring approval</dt><dd class=\"policies\"><ul>{policies}</ul></dd>\
<dt>Approval group</dt><dd class=\"group\">{group}</dd>\
<dt>Grant lifetime if approved</dt><dd class=\"ttl\" data-ttl-s=\"{ttl_s}\">{ttl} ({ttl_s} s)</dd>\
</dl></section>\
<section class=\"time\"><h4>Time left</h4><dl>\
<dt>Request expires in</dt><dd>{expires}</dd>\
<dt>Client held for</dt><dd>{hold}</dd></dl></section>\
<section class=\"track\"><h4>Track record, last {days} days</h4>{track}</section>\
</div>{decide}</article>",
        action = esc(&a.scope.action),
        resource = esc(&a.scope.resource),
        path = esc(&secret_path(&a.scope.resource)),
        ptype = esc(&a.scope.principal_type),
        pid = esc(&a.scope.principal_id),
        claims = claims_table(a),
        reason = reason_html(&a.reason),
        group = esc(&a.approvers),
        ttl_s = a.ttl_s,
        ttl = human(i64::try_from(a.ttl_s).unwrap_or(i64::MAX).saturating_mul(1000)),
        expires = countdown("expires", a.expires_at, now),
        days = item.record_days,
        track = track_record(&item.record),
        decide = decide_forms(&id, item.own, csrf),
    )
}

fn decide_forms(id: &str, own: bool, csrf: &str) -> String {
    if own {
        return "<p class=\"decide\"><em>your own request: someone else must decide</em></p>"
            .to_owned();
    }
    let csrf = esc(csrf);
    format!(
        "<div class=\"decide\">\
<form method=\"post\" action=\"/ui/approvals/{id}/approve\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" class=\"approve\" id=\"approve-{id}\" aria-describedby=\"title-{id}\">Approve</button></form>\
<form method=\"post\" action=\"/ui/approvals/{id}/deny\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"reason-{id}\">Reason for denying</label> \
<input type=\"text\" name=\"reason\" id=\"reason-{id}\" required> \
<button type=\"submit\" class=\"deny\" id=\"deny-{id}\" aria-describedby=\"title-{id}\">Deny</button></form></div>"
    )
}

/// The secret's path out of the Cedar entity the filter names
/// (`Secret::"secret/prod/db"`), or the resource as sent when it is no
/// such entity.
pub fn secret_path(resource: &str) -> String {
    let quoted = resource
        .split_once("::\"")
        .and_then(|(_, rest)| rest.strip_suffix('"'));
    let Some(inner) = quoted else {
        return resource.to_owned();
    };
    match serde_json::from_str::<String>(&format!("\"{inner}\"")) {
        Ok(path) => path,
        Err(_) => resource.to_owned(),
    }
}

/// Every claim the filter sent, the CI ones first.
fn claims_table(a: &Approval) -> String {
    if a.claims.is_empty() {
        return "<p class=\"no-claims\">No claims (not a token-identified caller).</p>".to_owned();
    }
    let mut names: Vec<&String> = a.claims.keys().collect();
    names.sort_by_key(|name| {
        let first = FIRST_CLAIMS.iter().position(|f| f == name);
        (first.unwrap_or(FIRST_CLAIMS.len()), name.as_str())
    });
    let rows: String = names
        .into_iter()
        .map(|name| {
            let value = match &a.claims[name] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!(
                "<tr data-claim=\"{n}\"><th scope=\"row\">{n}</th><td>{v}</td></tr>",
                n = esc(name),
                v = esc(&value)
            )
        })
        .collect();
    format!(
        "<div class=\"scroll\"><table class=\"claims\"><caption>Claims</caption>{rows}</table></div>"
    )
}

/// The reason as text, or as a link when it is an http(s) URL (a CI run,
/// a ticket). No other scheme is ever a link: `javascript:` and `data:`
/// would run in the approver's session.
pub fn reason_html(reason: &str) -> String {
    if reason.is_empty() {
        return "<em>none given</em>".to_owned();
    }
    if is_web_url(reason) {
        let r = esc(reason);
        return format!("<a href=\"{r}\" rel=\"noopener noreferrer\" target=\"_blank\">{r}</a>");
    }
    esc(reason)
}

fn is_web_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    matches!(rest, Some(host) if !host.is_empty() && !host.starts_with('/'))
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn track_record(record: &TrackRecord) -> String {
    let counts = format!(
        "<p class=\"track-record\">{} approved, {} denied, {} expired</p>",
        record.approved, record.denied, record.expired
    );
    let last = match &record.last {
        Some(last) => format!(
            "<p class=\"last-decision\">Last decision: <b>{outcome}</b> by <b>{by}</b>, \
<time datetime=\"{at}\">{at}</time></p>",
            outcome = esc(&last.outcome),
            by = esc(&last.by),
            at = rfc3339(last.at),
        ),
        None => "<p class=\"last-decision\">No earlier decision.</p>".to_owned(),
    };
    counts + &last
}

/// A time that counts down in the browser (`approvals.js`), rendered with
/// the time left when the page was made.
fn countdown(class: &str, deadline: i64, now: i64) -> String {
    format!(
        "<time class=\"countdown {class}\" data-deadline=\"{deadline}\" datetime=\"{at}\">{left}</time>",
        at = rfc3339(deadline),
        left = human(deadline.saturating_sub(now))
    )
}

/// `1h 02m`, `14m 05s`, `45s`; `expired` at or below zero.
pub fn human(ms: i64) -> String {
    if ms <= 0 {
        return "expired".to_owned();
    }
    let s = ms.div_euclid(1000);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn history_view(list: &[Decided], filter: &HistoryFilter) -> String {
    let selected = |o: &str| {
        if filter.outcome.as_deref() == Some(o) {
            " selected"
        } else {
            ""
        }
    };
    let options: String = DECIDED_OUTCOMES
        .iter()
        .map(|o| format!("<option value=\"{o}\"{}>{o}</option>", selected(o)))
        .collect();
    let form = format!(
        "<form method=\"get\" action=\"/history\" class=\"filter\">\
<label for=\"f-outcome\">Outcome</label> <select id=\"f-outcome\" name=\"outcome\">\
<option value=\"\">any</option>{options}</select> \
<label for=\"f-principal\">Principal</label> \
<input type=\"text\" id=\"f-principal\" name=\"principal\" value=\"{principal}\"> \
<label for=\"f-resource\">Resource</label> \
<input type=\"text\" id=\"f-resource\" name=\"resource\" value=\"{resource}\"> \
<button type=\"submit\" id=\"filter\">Filter</button></form>",
        principal = esc(filter.principal.as_deref().unwrap_or("")),
        resource = esc(filter.resource.as_deref().unwrap_or("")),
    );
    if list.is_empty() {
        return format!("<h2>History</h2>{form}<p id=\"empty\">No decided requests match.</p>");
    }
    let rows: String = list.iter().map(history_row).collect();
    format!(
        "<h2>History</h2>{form}<div class=\"scroll\"><table id=\"history\">\
<caption>Decided requests, newest first</caption>\
<tr><th scope=\"col\">Decided</th><th scope=\"col\">Outcome</th><th scope=\"col\">Who</th>\
<th scope=\"col\">What</th><th scope=\"col\">Decided by</th><th scope=\"col\">Decision reason</th>\
<th scope=\"col\">Grant</th></tr>{rows}</table></div>"
    )
}

fn history_row(d: &Decided) -> String {
    let a = &d.approval;
    let decided_at = a.decided_at.map(rfc3339).unwrap_or_default();
    let grant = match &d.grant {
        None => "none".to_owned(),
        Some(g) => {
            let state = match (&g.revoked_at, &g.revoked_by) {
                (Some(at), by) => format!(
                    "revoked by <b class=\"revoked-by\">{}</b>, {}",
                    esc(by.as_deref().unwrap_or("")),
                    rfc3339(*at)
                ),
                (None, _) => format!("until {}", rfc3339(g.expires_at)),
            };
            format!("<code>{}</code> {state}", esc(&g.id))
        }
    };
    format!(
        "<tr id=\"{id}\" data-outcome=\"{outcome}\"><td><time datetime=\"{decided_at}\">{decided_at}</time></td>\
<td class=\"outcome\">{outcome}</td><td>{ptype} <b>{pid}</b></td>\
<td>{action} <code>{resource}</code></td><td class=\"decider\">{by}</td>\
<td class=\"decision-reason\">{why}</td><td class=\"grant\">{grant}</td></tr>",
        id = esc(&a.id),
        outcome = esc(d.outcome()),
        ptype = esc(&a.scope.principal_type),
        pid = esc(&a.scope.principal_id),
        action = esc(&a.scope.action),
        resource = esc(&a.scope.resource),
        by = esc(a.decided_by.as_deref().unwrap_or("")),
        why = esc(a.decision_reason.as_deref().unwrap_or("")),
    )
}

pub fn grants_view(list: &[Decided], csrf: &str, now: i64) -> String {
    let grants: Vec<_> = list
        .iter()
        .filter_map(|d| d.grant.as_ref().map(|g| (&d.approval, g)))
        .collect();
    if grants.is_empty() {
        return "<h2>Live grants</h2><p id=\"empty\">No grant is in force.</p>".to_owned();
    }
    let csrf = esc(csrf);
    let rows: String = grants
        .into_iter()
        .map(|(a, g)| {
            let gid = esc(&g.id);
            format!(
                "<tr id=\"{gid}\" data-approval=\"{aid}\"><td>{ptype} <b>{pid}</b></td>\
<td>{action} <code>{resource}</code></td><td class=\"approver\">{approver}</td>\
<td><time datetime=\"{granted}\">{granted}</time></td><td>{left}</td>\
<td><form method=\"post\" action=\"/ui/grants/{gid}/revoke\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" class=\"revoke\" id=\"revoke-{gid}\" \
aria-label=\"Revoke the grant of {action} on {resource} to {pid}\">Revoke</button></form></td></tr>",
                aid = esc(&a.id),
                ptype = esc(&g.scope.principal_type),
                pid = esc(&g.scope.principal_id),
                action = esc(&g.scope.action),
                resource = esc(&g.scope.resource),
                approver = esc(&g.approver),
                granted = rfc3339(g.created_at),
                left = countdown("grant", g.expires_at, now),
            )
        })
        .collect();
    format!(
        "<h2>Live grants</h2><div class=\"scroll\"><table id=\"grants\">\
<caption>Grants in force, soonest to expire first</caption>\
<tr><th scope=\"col\">Who</th><th scope=\"col\">What</th><th scope=\"col\">Approved by</th>\
<th scope=\"col\">Approved</th><th scope=\"col\">Expires in</th><th scope=\"col\">Revoke</th></tr>\
{rows}</table></div>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CalloutRequest, Mode, Principal};
    use crate::store::Store;
    use serde_json::json;

    fn approval(reason: &str, claims: Value) -> Approval {
        let s = Store::open_in_memory().unwrap();
        let req = CalloutRequest {
            request_id: "r".into(),
            principal: Principal {
                kind: "Workload".into(),
                id: "repo:acme/api:environment:production".into(),
            },
            claims: claims.as_object().cloned().unwrap_or_default(),
            action: "read".into(),
            resource: r#"Secret::"secret/prod/acme/api/db""#.into(),
            policies: vec!["prod-needs-approval".into()],
            approvers: "secops".into(),
            reason: reason.into(),
            mode: Mode::Hold,
            wait_ms: 20_000,
            ttl_s: Some(900),
        };
        s.create_approval(&req, 900, 3_600_000, 1_000).unwrap()
    }

    fn item(a: &Approval) -> PendingItem<'_> {
        PendingItem {
            approval: a,
            own: false,
            held_until: Some(21_000),
            record: TrackRecord::default(),
            record_days: 30,
        }
    }

    #[test]
    fn a_pending_request_shows_its_claims_reason_policies_lifetime_and_deadlines() {
        let a = approval(
            "https://github.com/acme/api/actions/runs/42",
            json!({"actor": "octocat", "repository": "acme/api", "ref": "refs/heads/main",
                   "ref_protected": true, "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
                   "environment": "production", "run_id": "42"}),
        );
        let html = pending_view(&[item(&a)], "tok", 2_000);
        for expected in [
            "<tr data-claim=\"repository\"><th scope=\"row\">repository</th><td>acme/api</td></tr>",
            "<td>true</td>",
            "acme/api/.github/workflows/deploy.yml@refs/heads/main",
            "<a href=\"https://github.com/acme/api/actions/runs/42\" rel=\"noopener noreferrer\"",
            "<code>prod-needs-approval</code>",
            "<dd class=\"group\">secops</dd>",
            "15m 00s (900 s)",
            "class=\"countdown expires\" data-deadline=\"3601000\"",
            "class=\"countdown hold\" data-deadline=\"21000\"",
            "0 approved, 0 denied, 0 expired",
            "id=\"approve-",
            "<label for=\"reason-",
        ] {
            assert!(html.contains(expected), "{expected} missing from {html}");
        }
        // The CI claims come first, in the order an approver reads them.
        let at = |claim: &str| html.find(&format!("data-claim=\"{claim}\"")).unwrap();
        assert!(
            at("repository") < at("ref") && at("ref") < at("actor") && at("actor") < at("run_id")
        );
    }

    #[test]
    fn hostile_claims_and_reasons_render_as_text() {
        let a = approval(
            "javascript:alert(1)",
            json!({"repository": "<script>alert(1)</script>", "actor": "\"><img src=x onerror=alert(1)>"}),
        );
        let html = pending_view(&[item(&a)], "tok", 2_000);
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.contains("href=\"javascript"));
        assert!(html.contains("<p class=\"reason\">javascript:alert(1)</p>"));
    }

    #[test]
    fn only_http_and_https_urls_become_links() {
        for linked in ["https://ci.example/run/1", "HTTP://tickets.example/INC-7"] {
            assert!(reason_html(linked).starts_with("<a href="), "{linked}");
        }
        for text in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<b>x</b>",
            "vbscript:x",
            "https://",
            "https:///path",
            "https://ci.example/run 1",
            "//ci.example/run/1",
            " https://ci.example/run/1",
            "INC-7 restore",
        ] {
            assert!(!reason_html(text).contains("<a "), "{text}");
        }
        assert_eq!(reason_html(""), "<em>none given</em>");
        assert_eq!(
            reason_html("https://x.example/?a=\"b\"&c=<d>"),
            "<a href=\"https://x.example/?a=&quot;b&quot;&amp;c=&lt;d&gt;\" rel=\"noopener noreferrer\" \
target=\"_blank\">https://x.example/?a=&quot;b&quot;&amp;c=&lt;d&gt;</a>"
        );
    }

    #[test]
    fn the_requester_gets_no_buttons_and_a_finished_hold_is_not_counted_down() {
        let a = approval("INC-7", json!({}));
        let mut own = item(&a);
        own.own = true;
        own.held_until = Some(1_500);
        let html = pending_view(&[own], "tok", 2_000);
        assert!(!html.contains("id=\"approve-"));
        assert!(html.contains("your own request"));
        assert!(html.contains("not held"));
        assert!(!html.contains("countdown hold"));
    }

    #[test]
    fn the_path_is_read_out_of_the_secret_entity() {
        assert_eq!(secret_path(r#"Secret::"secret/prod/db""#), "secret/prod/db");
        assert_eq!(secret_path(r#"Secret::"a\"b""#), "a\"b");
        assert_eq!(secret_path("secret/prod/db"), "secret/prod/db");
        assert_eq!(
            secret_path(r#"Secret::"unterminated"#),
            r#"Secret::"unterminated"#
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(0), "expired");
        assert_eq!(human(45_400), "45s");
        assert_eq!(human(845_000), "14m 05s");
        assert_eq!(human(3_720_000), "1h 02m");
    }
}

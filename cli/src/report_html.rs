//! The access report as one self-contained HTML page: inline CSS and SVG,
//! no script, nothing fetched (its Content-Security-Policy forbids every
//! load), readable when printed. Every name in it comes from records that
//! callers influence (a repository's name is chosen by whoever creates the
//! repository), so every text and attribute is escaped.

use std::fmt::Write as _;

use secretgate::report::{Access, Refused, Report, TopPrincipal, TopSecret};

/// More hourly bars than this are drawn per day instead.
const MAX_HOURLY_BARS: i64 = 24 * 62;
/// Labels in the "top" charts are cut to this many characters (the full
/// name is the bar's tooltip and in the tables).
const MAX_LABEL_CHARS: usize = 56;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --allowed: #2b7a3d; --refused: #b3261e; --ink: #1b1b1f; --muted: #5c5c66; --rule: #d7d7de; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 70rem; padding: 1.5rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid var(--rule); padding-bottom: .2rem; margin-top: 2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .3rem; word-break: break-all; }
p.meta, figcaption, .muted { color: var(--muted); }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .6rem; margin: 0; }
.figures div { border: 1px solid var(--rule); border-radius: .4rem; padding: .5rem .7rem; }
.figures dt { font-size: .85rem; color: var(--muted); }
.figures dd { margin: 0; font-size: 1.5rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--rule); vertical-align: top; }
td { word-break: break-word; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { border-left: 4px solid var(--allowed); background: #f1f7f2; padding: .6rem .9rem; }
.warn { border-left: 4px solid var(--refused); background: #fbf0ef; padding: .6rem .9rem; }
.empty { font-size: 1.2rem; font-weight: 600; }
figure { margin: 1rem 0; }
svg { max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: var(--ink); }
.bar.allowed, .swatch.allowed { fill: var(--allowed); }
.bar.refused, .swatch.refused { fill: var(--refused); }
.bar.readers { fill: #3d5a98; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { break-after: avoid; }
  tr, figure, .figures div { break-inside: avoid; }
}
"#;

pub fn render(report: &Report, logs: &[String], generated_at: &str) -> String {
    let summary = &report.summary;
    let mut html = String::with_capacity(64 * 1024);
    let period = match (&report.period.first_record, &report.period.last_record) {
        (Some(first), Some(last)) => format!("{first} to {last}"),
        _ => "no records".to_owned(),
    };
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Secret access report: {}</title><style>{STYLE}</style></head><body>\n",
        escape(&period)
    );
    let _ = writeln!(
        html,
        "<header><h1>Secret access report</h1><p class=\"meta\">Records from {}{}{}. \
         Generated {} by <code>secretgate report</code> from {}.</p></header>",
        escape(&period),
        report
            .period
            .since
            .as_ref()
            .map(|s| format!(" (since {})", escape(s)))
            .unwrap_or_default(),
        report
            .period
            .until
            .as_ref()
            .map(|u| format!(" (until {})", escape(u)))
            .unwrap_or_default(),
        escape(generated_at),
        logs.iter()
            .map(|l| format!("<code>{}</code>", escape(l)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    html.push_str("<main>\n<section id=\"summary\"><h2>Summary</h2>\n");
    if summary.records == 0 {
        let _ = writeln!(
            html,
            "<p class=\"empty\" id=\"empty\">The logs hold no audit records{}: there is nothing to report.</p>",
            if summary.outside_period > 0 {
                " inside the period"
            } else {
                ""
            }
        );
    }
    html.push_str("<dl class=\"figures\">\n");
    let figures: [(&str, &str, u64); 10] = [
        ("records", "Audit records", summary.records),
        ("principals", "Principals", summary.principals),
        ("secrets", "Secrets", summary.secrets),
        ("allowed_reads", "Allowed reads", summary.allowed_reads),
        ("allowed", "Allowed requests", summary.allowed),
        ("refused", "Refused requests", summary.refused),
        (
            "approvals_requested",
            "Approvals requested",
            summary.approvals.requested,
        ),
        (
            "approvals_approved",
            "Approvals approved",
            summary.approvals.approved,
        ),
        (
            "unreadable_lines",
            "Unreadable lines",
            summary.unreadable_lines,
        ),
        (
            "outside_period",
            "Records outside the period",
            summary.outside_period,
        ),
    ];
    for (key, label, value) in figures {
        let _ = writeln!(
            html,
            "<div><dt>{label}</dt><dd id=\"figure-{key}\" data-figure=\"{key}\">{value}</dd></div>"
        );
    }
    html.push_str("</dl>\n");
    if summary.unreadable_lines > 0 {
        let _ = writeln!(
            html,
            "<p class=\"warn\" id=\"unreadable\">{} line(s) held no readable audit record (truncated, garbled or not JSON) and were skipped.</p>",
            summary.unreadable_lines
        );
    }
    if summary.lines_without_record > 0 {
        let _ = writeln!(
            html,
            "<p class=\"note\" id=\"without-record\">{} access-log line(s) carry no audit record: \
             requests Envoy answered before the filter saw them (an invalid or expired JWT, for one).</p>",
            summary.lines_without_record
        );
    }
    html.push_str(
        "<h3>Refusals by reason</h3><table id=\"refusals\"><thead><tr><th scope=\"col\">reason</th>\
         <th scope=\"col\" class=\"n\">requests</th></tr></thead><tbody>\n",
    );
    for (reason, count) in summary.refusals.by_name() {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"n\" data-refusal=\"{reason}\">{count}</td></tr>",
            refusal_label(reason)
        );
    }
    html.push_str("</tbody></table>\n");
    let approvals = &summary.approvals;
    html.push_str(
        "<h3>Approvals</h3><table id=\"approval-counts\"><thead><tr><th scope=\"col\">requested</th>\
         <th scope=\"col\">approved</th><th scope=\"col\">denied</th><th scope=\"col\">expired</th>\
         <th scope=\"col\">undecided</th></tr></thead><tbody>",
    );
    let _ = writeln!(
        html,
        "<tr><td class=\"n\" data-approvals=\"requested\">{}</td><td class=\"n\" data-approvals=\"approved\">{}</td>\
         <td class=\"n\" data-approvals=\"denied\">{}</td><td class=\"n\" data-approvals=\"expired\">{}</td>\
         <td class=\"n\" data-approvals=\"undecided\">{}</td></tr></tbody></table>",
        approvals.requested, approvals.approved, approvals.denied, approvals.expired, approvals.undecided
    );
    html.push_str("</section>\n");

    integrity(&mut html, report);
    charts(&mut html, report);
    offboarding(&mut html, report);
    approval_tables(&mut html, report);
    per_secret(&mut html, report);
    per_principal(&mut html, report);
    html.push_str("</main>\n<footer class=\"muted\"><p>secretgate report: ");
    html.push_str(secretgate::report::FORMAT);
    html.push_str("</p></footer>\n</body></html>\n");
    html
}

fn refusal_label(reason: &str) -> &'static str {
    match reason {
        "policy" => "refused by a policy",
        "unauthenticated" => "no identity (unauthenticated)",
        "no_policy" => "no policy loaded",
        "error" => "error (evaluation, host, approval service, audit)",
        "bad_request" => "bad request (path or method refused)",
        "approval" => "held for approval, not released",
        _ => "other",
    }
}

fn integrity(html: &mut String, report: &Report) {
    html.push_str(
        "<section id=\"integrity\"><h2>Integrity note</h2><div class=\"note\"><p>\
         <strong>This report shows no secret values.</strong> It is built from the audit records' \
         principals, resource names, decisions, times and approval fields only; it never reads the \
         records' bodies, and the records themselves hold every secret value, token and query value \
         masked by the filter.</p><p>Masking mode of the records:</p><ul id=\"masking\">",
    );
    if report.summary.masking.is_empty() {
        html.push_str("<li>no records</li>");
    }
    for (mode, count) in &report.summary.masking {
        let label = match mode.as_str() {
            "hmac-sha256" => {
                "hmac-sha256 (keyed HMAC: a known value can be searched for with the key)"
            }
            "redact" => "redact (values replaced by \"redacted\")",
            "unknown" => "not stated (records written before the record named its masking mode)",
            _ => "other",
        };
        let _ = write!(
            html,
            "<li data-masking=\"{}\"><code>{}</code>: {count} record(s): {}</li>",
            escape(mode),
            escape(mode),
            escape(label)
        );
    }
    html.push_str("</ul></div></section>\n");
}

fn charts(html: &mut String, report: &Report) {
    html.push_str("<section id=\"charts\"><h2>Activity</h2>\n");
    hourly_chart(html, report);
    let secrets: Vec<(String, u64)> = report
        .top_secrets_by_readers
        .iter()
        .map(
            |TopSecret {
                 resource, readers, ..
             }| (resource.clone(), *readers),
        )
        .collect();
    bar_chart(
        html,
        "chart-top-secrets",
        "Top secrets by readers (distinct principals allowed)",
        &secrets,
        "readers",
    );
    let refused: Vec<(String, u64)> = report
        .top_refused_principals
        .iter()
        .map(
            |TopPrincipal {
                 principal,
                 refusals,
             }| (principal.clone(), *refusals),
        )
        .collect();
    bar_chart(
        html,
        "chart-top-refused",
        "Top refused principals (refused requests)",
        &refused,
        "refused",
    );
    html.push_str("</section>\n");
}

/// Allowed and refused requests per hour (per day over long periods),
/// every hour of the period drawn, quiet ones as gaps.
fn hourly_chart(html: &mut String, report: &Report) {
    let buckets: Vec<(i64, u64, u64)> = report
        .hourly
        .iter()
        .filter_map(|row| {
            let hour = secretgate::report::parse_time_millis(&row.hour)? / 3_600_000;
            Some((hour, row.allowed, row.refused))
        })
        .collect();
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        html.push_str(
            "<figure id=\"chart-hourly\"><figcaption>Allowed and refused requests per hour: no records.</figcaption></figure>\n",
        );
        return;
    };
    let per_day = last.0 - first.0 + 1 > MAX_HOURLY_BARS;
    let width_hours = if per_day { 24 } else { 1 };
    let start = first.0.div_euclid(width_hours);
    let slots = usize::try_from(last.0.div_euclid(width_hours) - start + 1).unwrap_or(1);
    let mut counts = vec![(0u64, 0u64); slots];
    for &(hour, allowed, refused) in &buckets {
        if let Some(slot) = usize::try_from(hour.div_euclid(width_hours) - start)
            .ok()
            .and_then(|i| counts.get_mut(i))
        {
            slot.0 += allowed;
            slot.1 += refused;
        }
    }
    let max = counts.iter().map(|(a, r)| a + r).max().unwrap_or(1).max(1);
    let (chart_w, chart_h, left, top, bottom) = (720.0f64, 180.0f64, 48.0f64, 10.0f64, 34.0f64);
    let step = chart_w / slots as f64;
    let bar_w = (step * 0.8).max(0.5);
    let unit = if per_day { "day" } else { "hour" };
    let _ = write!(
        html,
        "<figure><svg id=\"chart-hourly\" role=\"img\" viewBox=\"0 0 {} {}\" width=\"{}\" \
         aria-label=\"Allowed and refused requests per {unit}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title>Allowed and refused requests per {unit}</title>",
        left + chart_w + 10.0,
        top + chart_h + bottom,
        left + chart_w + 10.0
    );
    let _ = write!(
        html,
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#888\"/>\
         <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{max}</text>\
         <text x=\"{tx}\" y=\"{y}\" text-anchor=\"end\">0</text>",
        y = top + chart_h,
        x2 = left + chart_w,
        tx = left - 6.0,
        ty = top + 10.0,
    );
    for (i, &(allowed, refused)) in counts.iter().enumerate() {
        let x = left + step * i as f64 + (step - bar_w) / 2.0;
        let slot_start = (start + i as i64) * width_hours * 3_600_000;
        let when = secretgate::report::format_millis(slot_start);
        let allowed_h = chart_h * allowed as f64 / max as f64;
        let refused_h = chart_h * refused as f64 / max as f64;
        if allowed > 0 {
            let _ = write!(
                html,
                "<rect class=\"bar allowed\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{bar_w:.2}\" height=\"{allowed_h:.2}\">\
                 <title>{when}: {allowed} allowed</title></rect>",
                top + chart_h - allowed_h
            );
        }
        if refused > 0 {
            let _ = write!(
                html,
                "<rect class=\"bar refused\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{bar_w:.2}\" height=\"{refused_h:.2}\">\
                 <title>{when}: {refused} refused</title></rect>",
                top + chart_h - allowed_h - refused_h
            );
        }
    }
    let first_label = secretgate::report::format_millis(start * width_hours * 3_600_000);
    let last_label =
        secretgate::report::format_millis((start + slots as i64 - 1) * width_hours * 3_600_000);
    let _ = writeln!(
        html,
        "<text x=\"{left}\" y=\"{ly}\">{}</text><text x=\"{rx}\" y=\"{ly}\" text-anchor=\"end\">{}</text>\
         <rect class=\"swatch allowed\" x=\"{lx}\" y=\"{sy}\" width=\"10\" height=\"10\"/><text x=\"{lx2}\" y=\"{ty2}\">allowed</text>\
         <rect class=\"swatch refused\" x=\"{lx3}\" y=\"{sy}\" width=\"10\" height=\"10\"/><text x=\"{lx4}\" y=\"{ty2}\">refused</text>\
         </svg><figcaption>Allowed and refused requests per {unit}, {} to {} (UTC).</figcaption></figure>",
        to_minute(&first_label),
        to_minute(&last_label),
        to_minute(&first_label),
        to_minute(&last_label),
        ly = top + chart_h + 14.0,
        rx = left + chart_w,
        lx = left + chart_w / 2.0 - 80.0,
        lx2 = left + chart_w / 2.0 - 66.0,
        lx3 = left + chart_w / 2.0 + 10.0,
        lx4 = left + chart_w / 2.0 + 24.0,
        sy = top + chart_h + 20.0,
        ty2 = top + chart_h + 29.0,
    );
}

/// `2026-12-01T10:00` of `2026-12-01T10:00:00.000Z`.
fn to_minute(time: &str) -> &str {
    time.get(..16).unwrap_or(time)
}

fn bar_chart(html: &mut String, id: &str, title: &str, rows: &[(String, u64)], class: &str) {
    if rows.is_empty() {
        let _ = writeln!(
            html,
            "<figure id=\"{id}\"><figcaption>{}: none.</figcaption></figure>",
            escape(title)
        );
        return;
    }
    let max = rows.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1);
    let (label_w, bar_area, row_h) = (380.0f64, 300.0f64, 22.0f64);
    let height = row_h * rows.len() as f64 + 6.0;
    let _ = write!(
        html,
        "<figure><svg id=\"{id}\" role=\"img\" viewBox=\"0 0 {w} {height}\" width=\"{w}\" \
         aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>",
        w = label_w + bar_area + 60.0,
        t = escape(title)
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = row_h * i as f64 + 3.0;
        let short: String = if label.chars().count() > MAX_LABEL_CHARS {
            let mut cut: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            label.clone()
        };
        let w = (bar_area * *value as f64 / max as f64).max(1.0);
        let _ = write!(
            html,
            "<text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"bar {class}\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bh}\"><title>{}: {value}</title></rect>\
             <text x=\"{vx:.1}\" y=\"{ty:.1}\">{value}</text>",
            escape(&short),
            escape(label),
            lx = label_w - 6.0,
            ty = y + 14.0,
            bh = row_h - 6.0,
            vx = label_w + w + 4.0,
        );
    }
    let _ = writeln!(
        html,
        "</svg><figcaption>{}</figcaption></figure>",
        escape(title)
    );
}

fn offboarding(html: &mut String, report: &Report) {
    html.push_str(
        "<section id=\"offboarding\"><h2>Off-boarding watch</h2><p class=\"muted\">Principals a policy \
         refused on a resource they had been allowed on earlier in the period: someone removed from a \
         group and still trying, or a policy change that cut a workload off. Each is listed with its \
         first such refusal.</p>\n",
    );
    if report.offboarding.is_empty() {
        html.push_str("<p id=\"offboarding-none\">No principal was refused after being allowed.</p></section>\n");
        return;
    }
    html.push_str(
        "<table id=\"offboarding-table\"><thead><tr><th scope=\"col\">principal</th><th scope=\"col\">resource</th>\
         <th scope=\"col\">first allowed</th><th scope=\"col\">first refused</th><th scope=\"col\">refused by</th>\
         <th scope=\"col\" class=\"n\">refusals</th><th scope=\"col\">allowed again later</th></tr></thead><tbody>\n",
    );
    for row in &report.offboarding {
        let _ = writeln!(
            html,
            "<tr data-principal=\"{}\"><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&row.principal),
            escape(&row.principal),
            escape(&row.resource),
            row.action
                .as_ref()
                .map(|a| format!(" ({})", escape(a)))
                .unwrap_or_default(),
            escape(&row.first_allowed),
            escape(&row.first_refusal),
            escape(&row.reason),
            if row.policies.is_empty() {
                String::new()
            } else {
                format!(": {}", escape(&row.policies.join(", ")))
            },
            row.refusals,
            if row.allowed_again { "yes" } else { "no" }
        );
    }
    html.push_str("</tbody></table></section>\n");
}

fn approval_tables(html: &mut String, report: &Report) {
    html.push_str("<section id=\"approvals\"><h2>Approvals</h2>\n");
    if report.approvals.is_empty() {
        html.push_str("<p id=\"approvals-none\">No access was released by an approval.</p>\n");
    } else {
        html.push_str(
            "<table id=\"approvals-table\"><thead><tr><th scope=\"col\">grant</th><th scope=\"col\">requester</th>\
             <th scope=\"col\">approver</th><th scope=\"col\">secret</th><th scope=\"col\">requester's reason</th>\
             <th scope=\"col\">released</th><th scope=\"col\" class=\"n\">requests</th><th scope=\"col\">grant expires</th></tr></thead><tbody>\n",
        );
        for grant in &report.approvals {
            let released = if grant.first_release == grant.last_release {
                escape(&grant.first_release)
            } else {
                format!(
                    "{} to {}",
                    escape(&grant.first_release),
                    escape(&grant.last_release)
                )
            };
            let _ = writeln!(
                html,
                "<tr data-grant=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&grant.grant_id),
                escape(&grant.grant_id),
                escape(&grant.requester),
                escape(&grant.approver),
                escape(grant.resource.as_deref().unwrap_or("")),
                grant
                    .action
                    .as_ref()
                    .map(|a| format!(" ({})", escape(a)))
                    .unwrap_or_default(),
                escape(&grant.request_reason),
                released,
                grant.releases,
                escape(&grant.expires_at)
            );
        }
        html.push_str("</tbody></table>\n");
    }
    if !report.approval_refusals.is_empty() {
        html.push_str(
            "<h3>Approvals denied or expired</h3><table id=\"approval-refusals\"><thead><tr><th scope=\"col\">time</th>\
             <th scope=\"col\">requester</th><th scope=\"col\">secret</th><th scope=\"col\">outcome</th>\
             <th scope=\"col\">decided by</th><th scope=\"col\">reason</th><th scope=\"col\">requester's reason</th></tr></thead><tbody>\n",
        );
        for row in &report.approval_refusals {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&row.time),
                escape(&row.requester),
                escape(row.resource.as_deref().unwrap_or("")),
                row.outcome,
                escape(&row.approver),
                escape(&row.reason),
                escape(&row.request_reason)
            );
        }
        html.push_str("</tbody></table>\n");
    }
    html.push_str("</section>\n");
}

fn access_table(html: &mut String, heading: &str, who: &str, rows: &[Access]) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        html,
        "<table><caption class=\"muted\">{heading}</caption><thead><tr><th scope=\"col\">{who}</th>\
         <th scope=\"col\">actions</th><th scope=\"col\" class=\"n\">requests</th><th scope=\"col\">first</th>\
         <th scope=\"col\">last</th></tr></thead><tbody>"
    );
    for row in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.who),
            escape(&row.actions.join(", ")),
            row.count,
            escape(&row.first),
            escape(&row.last)
        );
    }
    html.push_str("</tbody></table>\n");
}

fn refused_table(html: &mut String, heading: &str, who: &str, rows: &[Refused]) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        html,
        "<table><caption class=\"muted\">{heading}</caption><thead><tr><th scope=\"col\">{who}</th>\
         <th scope=\"col\">why</th><th scope=\"col\" class=\"n\">requests</th><th scope=\"col\">first</th>\
         <th scope=\"col\">last</th></tr></thead><tbody>"
    );
    for row in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.who),
            escape(&row.reasons.join(", ")),
            row.count,
            escape(&row.first),
            escape(&row.last)
        );
    }
    html.push_str("</tbody></table>\n");
}

fn per_secret(html: &mut String, report: &Report) {
    html.push_str(
        "<section id=\"per-secret\"><h2>Per secret</h2><p class=\"muted\">Every resource the records name: \
         secrets, folders (a LIST) and endpoints.</p>\n",
    );
    for secret in &report.secrets {
        let _ = write!(
            html,
            "<article class=\"secret\" data-resource=\"{}\"><h3>{}</h3>",
            escape(&secret.resource),
            escape(&secret.resource)
        );
        access_table(html, "allowed", "principal", &secret.readers);
        refused_table(html, "refused", "principal", &secret.refused);
        if !secret.grants.is_empty() {
            let _ = write!(
                html,
                "<p>Released by approval: {}</p>",
                secret
                    .grants
                    .iter()
                    .map(|g| format!("<code>{}</code>", escape(g)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        html.push_str("</article>\n");
    }
    html.push_str("</section>\n");
}

fn per_principal(html: &mut String, report: &Report) {
    html.push_str("<section id=\"per-principal\"><h2>Per principal</h2>\n");
    for principal in &report.principals {
        let _ = write!(
            html,
            "<article class=\"principal\" data-principal=\"{}\"><h3>{}</h3>",
            escape(&principal.principal),
            escape(&principal.principal)
        );
        access_table(html, "allowed", "resource", &principal.read);
        refused_table(html, "refused", "resource", &principal.refused);
        html.push_str("</article>\n");
    }
    html.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretgate::report::{report_of_lines, Period};

    #[test]
    fn escape_covers_every_markup_character() {
        assert_eq!(
            escape(r#"<script>alert('x')</script> & "q""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn hostile_names_render_as_text() {
        let record = r#"{"time":"2026-12-01T10:00:00.000Z","request_id":"r","principal":{"type":"Workload","id":"repo:<img src=x onerror=alert(1)>\"'"},"method":"GET","path":"/v1/x","action":"read","resource":"Secret::\"secret/<b>\"","decision":"allow","reason":"permitted","policies":[]}"#;
        let report = report_of_lines([record], Period::default());
        let html = render(&report, &["<log>".to_owned()], "now");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"));
        assert!(!html.contains("<log>"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.contains("<script"), "the page carries no script");
    }

    #[test]
    fn an_empty_log_says_so() {
        let report = report_of_lines(["", "not json"], Period::default());
        let html = render(&report, &[], "now");
        assert!(html.contains("id=\"empty\""));
        assert!(html.contains("data-figure=\"unreadable_lines\">1<"));
    }
}

//! Notification that an approval is waiting: a Slack-incoming-webhook-compatible
//! JSON POST. Failures are logged; they never block or fail the callout.

use crate::config::Webhook;
use crate::store::Approval;
use crate::util::rfc3339;
use serde_json::{json, Value};
use std::time::Duration;

/// Slack treats `&`, `<` and `>` as control characters in `text`; a line
/// break in a requester's value must not break the one-line summary.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(|c: char| c.is_control(), " ")
}

pub fn body(a: &Approval, approval_url: &str) -> Value {
    let reason = if a.reason.is_empty() {
        "(no reason given)".to_string()
    } else {
        a.reason.clone()
    };
    let text = format!(
        "Secretgate approval needed ({group}): {ptype} {pid} wants {action} on {resource}. \
         Reason: {reason}. Decide: {url}",
        group = slack_escape(&a.approvers),
        ptype = slack_escape(&a.scope.principal_type),
        pid = slack_escape(&a.scope.principal_id),
        action = slack_escape(&a.scope.action),
        resource = slack_escape(&a.scope.resource),
        reason = slack_escape(&reason),
        url = approval_url,
    );
    json!({
        "text": text,
        "event": "approval.pending",
        "approval_id": a.id,
        "approval_url": approval_url,
        "request_id": a.request_id,
        "principal": {"type": a.scope.principal_type, "id": a.scope.principal_id},
        "action": a.scope.action,
        "resource": a.scope.resource,
        "approvers": a.approvers,
        "reason": a.reason,
        "policies": a.policies,
        "claims": a.claims,
        "ttl_s": a.ttl_s,
        "created_at": rfc3339(a.created_at),
        "expires_at": rfc3339(a.expires_at),
    })
}

/// Send the notification; logs and swallows every failure.
pub async fn send(client: reqwest::Client, hook: Webhook, a: Approval, approval_url: String) {
    let payload = body(&a, &approval_url);
    let res = client
        .post(&hook.url)
        .timeout(Duration::from_millis(hook.timeout_ms))
        .json(&payload)
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => {
            tracing::info!(approval_id = %a.id, "webhook delivered")
        }
        Ok(r) => tracing::warn!(approval_id = %a.id, status = %r.status(), "webhook refused"),
        Err(e) => tracing::warn!(approval_id = %a.id, error = %e, "webhook failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CalloutRequest, Mode, Principal};
    use crate::store::Store;

    #[test]
    fn body_is_slack_compatible_with_structured_fields() {
        let s = Store::open_in_memory().unwrap();
        let r = CalloutRequest {
            request_id: "r1".into(),
            principal: Principal {
                kind: "User".into(),
                id: "bob<script>".into(),
            },
            claims: serde_json::json!({"repository": "acme/api", "ref_protected": true})
                .as_object()
                .cloned()
                .unwrap(),
            action: "read".into(),
            resource: "secret/data/prod".into(),
            policies: vec!["p".into()],
            approvers: "secops".into(),
            reason: "INC-7\nsecond line".into(),
            mode: Mode::Retry,
            wait_ms: 0,
            ttl_s: None,
        };
        let a = s.create_approval(&r, 900, 1000, 0).unwrap();
        let b = body(&a, "http://127.0.0.1:1/#x");
        let text = b["text"].as_str().unwrap();
        assert!(text.contains("bob&lt;script&gt;"));
        assert!(text.contains("INC-7 second line"));
        assert!(!text.contains('\n'), "the summary stays one line: {text}");
        assert_eq!(b["claims"]["repository"], "acme/api");
        assert_eq!(b["claims"]["ref_protected"], true);
        assert_eq!(b["policies"][0], "p");
        assert_eq!(b["ttl_s"], 900);
        assert_eq!(b["expires_at"], rfc3339(a.expires_at));
        assert_eq!(b["approval_id"], a.id.as_str());
        assert_eq!(b["principal"]["id"], "bob<script>");
        assert_eq!(b["resource"], "secret/data/prod");
    }
}

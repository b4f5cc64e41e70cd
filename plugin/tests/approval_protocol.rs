//! The filter against the approval protocol's golden examples
//! (`approver/protocol/golden/`, which the approver's tests read too): it
//! takes exactly the replies the contract accepts, refuses every other one
//! naming what is wrong, and sends exactly the golden requests.

use approval_protocol::golden::{case, cases};
use approval_protocol::CalloutRequest;
use secretgate::approval::{parse_reply, ApprovalConfig, ApprovalRule, Callout, ReplyError};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

#[test]
fn the_filter_reads_every_golden_reply_as_the_contract_says() {
    let mut statuses = BTreeSet::new();
    let mut refused = 0;
    for example in cases("reply") {
        let read = parse_reply(Some(200), &example.body);
        match (&example.malformed, read) {
            (None, Ok(reply)) => {
                let reply = serde_json::to_value(&reply).unwrap();
                assert_eq!(reply, example.meaning(), "{}", example.name);
                statuses.insert(reply["status"].as_str().unwrap().to_owned());
            }
            (Some(field), Err(ReplyError::Malformed(named))) => {
                assert_eq!(named, field, "{}", example.name);
                refused += 1;
            }
            (expected, read) => {
                panic!(
                    "{}: expected {expected:?} malformed, read {read:?}",
                    example.name
                )
            }
        }
        // However well-formed, a body under another status is no decision.
        assert_eq!(
            parse_reply(Some(500), &example.body),
            Err(ReplyError::Status(500))
        );
        assert_eq!(
            parse_reply(None, &example.body),
            Err(ReplyError::Unreachable)
        );
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        ["approved", "denied", "pending"],
        "the examples show every decision"
    );
    assert!(refused >= 10, "the examples show the malformed replies");
}

/// What the gate hands the serializer for the two golden callouts: a
/// `@approval` permit's annotations and the `approval` configuration.
fn callout_body(
    request_id: &str,
    annotations: &[(&str, &str)],
    reason: &str,
    approval_config: Value,
) -> Value {
    let rule = ApprovalRule::from_annotations(
        |key| {
            annotations
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        },
        true,
    )
    .unwrap()
    .unwrap();
    let service: ApprovalConfig = serde_json::from_value(approval_config).unwrap();
    service.validate().unwrap();
    let claims: Map<String, Value> =
        serde_json::from_value(json!({"repository": "acme/web", "actor": "carol"})).unwrap();
    let body = Callout {
        request_id,
        principal_type: "Workload",
        principal_id: "repo:acme/web:ref:refs/heads/main",
        claims: &claims,
        action: "read",
        resource: "Secret::\"secret/prod/acme/web/db\"",
        policy: "prod-needs-secops",
        rule: &rule,
        reason,
        wait_ms: service.effective_wait_ms(),
    }
    .body()
    .unwrap();
    // What the service reads is what the filter meant.
    let read = CalloutRequest::parse(body.as_bytes()).unwrap();
    assert_eq!(serde_json::to_string(&read).unwrap(), body);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_filter_sends_exactly_the_golden_requests() {
    let config = json!({"cluster": "approver", "authority": "approver.local"});
    let sent = [
        (
            "request/hold.json",
            callout_body(
                "0d6c1c9e-7d1a-4f5e-9a43-1f3e2f1b8c2a",
                &[
                    ("approval", "secops"),
                    ("approval_ttl", "30m"),
                    ("approval_mode", "hold"),
                ],
                "INC-42 restore",
                config.clone(),
            ),
        ),
        (
            // Held 29 s if it were hold mode; retry mode is never held.
            "request/retry.json",
            callout_body(
                "0d6c1c9e-7d1a-4f5e-9a43-1f3e2f1b8c2a",
                &[("approval", "secops"), ("approval_mode", "retry")],
                "",
                config,
            ),
        ),
    ];
    for (name, body) in &sent {
        assert_eq!(body, &case(name).json(), "{name}");
    }
    let golden: BTreeSet<String> = cases("request")
        .into_iter()
        .filter(|c| c.sent_by_filter)
        .map(|c| c.name)
        .collect();
    let produced: BTreeSet<String> = sent.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        golden, produced,
        "every request marked sent_by_filter is produced here"
    );
}

#[test]
fn the_filter_never_sends_a_wait_the_service_cannot_read() {
    // The largest hold the configuration allows is the largest the protocol
    // carries: both are u32.
    let longest = json!({"cluster": "a", "authority": "a", "timeout_ms": u32::MAX});
    let body = callout_body("r", &[("approval", "secops")], "", longest);
    assert_eq!(body["wait_ms"], json!(u32::MAX - 1000));
    let too_long = json!({"cluster": "a", "authority": "a", "timeout_ms": u64::from(u32::MAX) + 1});
    assert!(serde_json::from_value::<ApprovalConfig>(too_long).is_err());
}

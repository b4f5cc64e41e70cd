//! The approver against the approval protocol's golden examples
//! (`approver/protocol/golden/`, which the filter's tests read too): the
//! real service answers every golden request as the contract says, its
//! replies are ones the filter's reader accepts, and the READMEs show the
//! golden examples and nothing else.

mod common;

use approval_protocol::golden::{case, cases, Case};
use approval_protocol::{parse_reply, CalloutReply, CalloutRequest};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

async fn post_raw(s: &Service, body: &[u8]) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/approvals", s.url))
        .bearer_auth(CALLOUT_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// Keys of a JSON object, to compare a live reply's shape with an example's.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_approver_reads_every_golden_request_as_the_contract_says() {
    let examples = cases("request");
    assert!(examples.iter().any(|c| c.accept) && examples.iter().any(|c| !c.accept));
    for example in examples {
        match CalloutRequest::parse(&example.body) {
            Ok(read) => {
                assert!(example.accept, "{} should be refused", example.name);
                let read = serde_json::to_value(&read).unwrap();
                assert_eq!(read, example.meaning(), "{}", example.name);
            }
            Err(e) => assert!(!example.accept, "{} refused: {e}", example.name),
        }
    }
}

#[tokio::test]
async fn the_service_answers_every_golden_request_as_the_contract_says() {
    let dir = tempfile::tempdir().unwrap();
    // A hold is not what is tested here; keep the held examples quick.
    let s = start(dir.path(), "max_wait_ms = 10");
    for example in cases("request") {
        let (status, body) = post_raw(&s, &example.body).await;
        if example.accept {
            assert_eq!(status, 200, "{}", example.name);
            let reply = parse_reply(&body);
            assert!(
                matches!(reply, Ok(CalloutReply::Pending { .. })),
                "{}: {reply:?}",
                example.name
            );
        } else {
            assert_eq!(status, 400, "{}", example.name);
            let error: Value = serde_json::from_slice(&body).unwrap();
            assert!(
                error["error"].as_str().unwrap().starts_with("bad callout"),
                "{}: {error}",
                example.name
            );
        }
    }
}

/// Every live reply is one the filter accepts, is exactly the shared type's
/// serialisation, and has the keys of the golden example of its status.
fn check_live(body: &[u8], golden: &str) -> CalloutReply {
    let reply = parse_reply(body).unwrap_or_else(|e| {
        panic!(
            "the filter refuses {:?}: {e:?}",
            String::from_utf8_lossy(body)
        )
    });
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(sent, serde_json::to_value(&reply).unwrap());
    assert_eq!(keys(&sent), keys(&case(golden).json()), "{golden}");
    reply
}

#[tokio::test]
async fn every_reply_the_service_gives_is_one_the_filter_reads() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "pending_ttl_s = 1\nmax_wait_ms = 10");
    let hold = case("request/hold.json").json();
    let mut retry = case("request/retry.json").json();
    retry["resource"] = "Secret::\"secret/prod/acme/web/other\"".into();
    let mut late = case("request/minimal.json").json();

    let (_, body) = post_raw(&s, hold.to_string().as_bytes()).await;
    let CalloutReply::Pending { approval_id, .. } = check_live(&body, "reply/pending.json") else {
        panic!("a new request is pending")
    };
    let (code, _) = act(
        &s,
        ALICE,
        &format!("/v1/approvals/{approval_id}/approve"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (_, body) = post_raw(&s, hold.to_string().as_bytes()).await;
    check_live(&body, "reply/approved.json");

    let (_, body) = post_raw(&s, retry.to_string().as_bytes()).await;
    let CalloutReply::Pending { approval_id, .. } = check_live(&body, "reply/pending.json") else {
        panic!("a new request is pending")
    };
    let reason = Some(serde_json::json!({"reason": "not during the freeze"}));
    let (code, _) = act(
        &s,
        BOB,
        &format!("/v1/approvals/{approval_id}/deny"),
        reason,
    )
    .await;
    assert_eq!(code, 200);
    let (_, body) = post_raw(&s, retry.to_string().as_bytes()).await;
    check_live(&body, "reply/denied.json");

    late["resource"] = "secret/data/prod/late".into();
    let (_, body) = post_raw(&s, late.to_string().as_bytes()).await;
    check_live(&body, "reply/pending.json");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (_, body) = post_raw(&s, late.to_string().as_bytes()).await;
    let expired = check_live(&body, "reply/denied-expired.json");
    assert_eq!(
        serde_json::to_value(&expired).unwrap(),
        case("reply/denied-expired.json").json()
    );
}

#[test]
fn the_shared_reply_type_writes_what_the_filter_reads() {
    for example in cases("reply").into_iter().filter(|c| c.accept) {
        let reply = parse_reply(&example.body).unwrap();
        let written = serde_json::to_vec(&reply).unwrap();
        assert_eq!(parse_reply(&written), Ok(reply), "{}", example.name);
        assert_eq!(
            serde_json::from_slice::<Value>(&written).unwrap(),
            example.meaning(),
            "{}",
            example.name
        );
    }
}

/// The ```json blocks of a README section (from its heading to the next
/// heading of the same or a higher level), each block a stream of values.
fn json_examples(readme: &str, heading: &str) -> Vec<Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(readme)).unwrap();
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{readme} has no {heading:?}"));
    let section = &text[start + heading.len() + 2..];
    let end = section
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let hashes = section[i..].chars().take_while(|c| *c == '#').count();
            (1..=level).contains(&hashes) && section[i + hashes..].starts_with(' ')
        })
        .unwrap_or(section.len());
    let mut values = Vec::new();
    for block in section[..end].split("```json\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        for value in serde_json::Deserializer::from_str(block).into_iter::<Value>() {
            values.push(value.unwrap_or_else(|e| panic!("{readme} {heading}: {e}\n{block}")));
        }
    }
    values
}

#[test]
fn the_readmes_show_the_golden_examples_and_nothing_else() {
    let accepted: Vec<Case> = cases("request")
        .into_iter()
        .chain(cases("reply"))
        .filter(|c| c.accept)
        .collect();
    let name_of = |value: &Value| {
        accepted
            .iter()
            .find(|c| &c.json() == value)
            .map(|c| c.name.clone())
    };
    for (readme, heading, must_show) in [
        (
            "README.md",
            "## Approval",
            &[
                "request/hold.json",
                "reply/approved.json",
                "reply/denied.json",
                "reply/pending.json",
            ][..],
        ),
        (
            "approver/README.md",
            "## The callout protocol (public contract)",
            &[
                "request/hold.json",
                "request/minimal.json",
                "reply/approved.json",
                "reply/denied.json",
                "reply/pending.json",
                "reply/denied-expired.json",
            ][..],
        ),
    ] {
        let mut shown = BTreeSet::new();
        for value in json_examples(readme, heading) {
            let name = name_of(&value)
                .unwrap_or_else(|| panic!("{readme} {heading} shows a non-golden example {value}"));
            shown.insert(name);
        }
        for name in must_show {
            assert!(
                shown.contains(*name),
                "{readme} {heading} does not show {name}"
            );
        }
    }
}

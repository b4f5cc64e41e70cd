//! The service over real HTTP on 127.0.0.1, started as the real binary.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn create_pending_is_idempotent_then_approve_gives_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let body = callout_body("carol@example.com", "secret/data/prod/db", "retry", 0);

    let t = Instant::now();
    let first = callout(&s, &body).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "retry answers at once"
    );
    assert_eq!(first["status"], "pending");
    let id = first["approval_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ap_"));
    assert_eq!(first["approval_url"], format!("{}/#{id}", s.url));

    // Asking again while pending returns the same approval.
    let again = callout(&s, &body).await;
    assert_eq!(again["approval_id"], id.as_str());
    let pending = list(&s, ALICE, "pending").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["reason"], "INC-42 restore");

    let (code, v) = act(&s, ALICE, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 200, "{v}");
    let grant = v["grant_id"].as_str().unwrap().to_string();

    let r = callout(&s, &body).await;
    assert_eq!(r["status"], "approved");
    assert_eq!(r["grant_id"], grant.as_str());
    assert_eq!(r["approver"], "alice@example.com");
    assert!(r["expires_at"].as_str().unwrap().ends_with('Z'));

    // The grant is scoped: another resource or principal needs its own approval.
    let other = callout(
        &s,
        &callout_body("carol@example.com", "secret/data/prod/other", "retry", 0),
    )
    .await;
    assert_eq!(other["status"], "pending");
    let other = callout(
        &s,
        &callout_body("erin@example.com", "secret/data/prod/db", "retry", 0),
    )
    .await;
    assert_eq!(other["status"], "pending");

    // Deciding twice is a conflict.
    let (code, _) = act(&s, BOB, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn hold_is_released_when_an_approver_approves_during_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(start(dir.path(), ""));
    let body = callout_body("carol@example.com", "secret/hold", "hold", 15_000);
    let t = Instant::now();
    let held = {
        let s = s.clone();
        tokio::spawn(async move { callout(&s, &body).await })
    };
    // Wait for the approval to appear, then approve it.
    let id = loop {
        let p = list(&s, ALICE, "pending").await;
        if let Some(a) = p.first() {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "hold mode must wait");
    let (code, _) = act(&s, ALICE, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 200);
    let r = held.await.unwrap();
    assert_eq!(r["status"], "approved", "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "released promptly, not at wait_ms"
    );
}

#[tokio::test]
async fn hold_times_out_as_pending_and_is_capped_by_config() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let t = Instant::now();
    let r = callout(&s, &callout_body("carol", "secret/x", "hold", 400)).await;
    let waited = t.elapsed();
    assert_eq!(r["status"], "pending");
    assert!(waited >= Duration::from_millis(380), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    drop(s);

    // wait_ms is capped by max_wait_ms.
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "max_wait_ms = 500");
    let t = Instant::now();
    let r = callout(&s, &callout_body("carol", "secret/x", "hold", 60_000)).await;
    assert_eq!(r["status"], "pending");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(s);

    // A pending approval that expires during the hold ends it as denied.
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "pending_ttl_s = 1");
    let t = Instant::now();
    let r = callout(&s, &callout_body("carol", "secret/x", "hold", 10_000)).await;
    // The approval expires after 1 s; the hold ends then with the expiry denial.
    assert_eq!(r["status"], "denied", "{r}");
    assert_eq!(r["reason"], "expired");
    assert!(t.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn deny_answers_denied_with_reason_once_then_a_new_request_opens() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let body = callout_body("carol", "secret/deny", "retry", 0);
    let id = callout(&s, &body).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = act(
        &s,
        BOB,
        &format!("/v1/approvals/{id}/deny"),
        Some(json!({"reason": "not during the freeze"})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let r = callout(&s, &body).await;
    assert_eq!(
        r,
        json!({"status": "denied", "approver": "bob@example.com", "reason": "not during the freeze"})
    );
    let r = callout(&s, &body).await;
    assert_eq!(r["status"], "pending");
    assert_ne!(r["approval_id"], id.as_str());
}

#[tokio::test]
async fn a_grant_expires_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let mut body = callout_body("carol", "secret/ttl", "retry", 0);
    body["ttl_s"] = json!(1);
    let id = callout(&s, &body).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = act(&s, ALICE, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 200);
    assert_eq!(callout(&s, &body).await["status"], "approved");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = callout(&s, &body).await;
    assert_eq!(r["status"], "pending", "expired grant is ignored: {r}");
    assert_ne!(r["approval_id"], id.as_str());
}

#[tokio::test]
async fn a_revoked_grant_no_longer_answers_approved() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let body = callout_body("carol", "secret/revoke", "retry", 0);
    let id = callout(&s, &body).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = act(&s, ALICE, &format!("/v1/approvals/{id}/approve"), None).await;
    let grant = v["grant_id"].as_str().unwrap().to_string();
    let (code, _) = act(&s, DAVE, &format!("/v1/grants/{grant}/revoke"), None).await;
    assert_eq!(code, 403, "non-member cannot revoke");
    let (code, _) = act(&s, BOB, &format!("/v1/grants/{grant}/revoke"), None).await;
    assert_eq!(code, 200);
    assert_eq!(callout(&s, &body).await["status"], "pending");
}

#[tokio::test]
async fn the_requester_cannot_approve_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    // By principal id.
    let id = callout(
        &s,
        &callout_body("bob@example.com", "secret/self", "retry", 0),
    )
    .await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = act(&s, BOB, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 403, "{v}");
    let (code, _) = act(
        &s,
        BOB,
        &format!("/v1/approvals/{id}/deny"),
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(code, 403, "nor deny it");
    // By actor claim, for a service principal acting for alice.
    let mut body = callout_body("svc-deploy", "secret/self2", "retry", 0);
    body["principal"]["type"] = json!("Service");
    body["claims"] = json!({"actor": "alice@example.com"});
    let id2 = callout(&s, &body).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = act(&s, ALICE, &format!("/v1/approvals/{id2}/approve"), None).await;
    assert_eq!(code, 403);
    // Someone else may.
    let (code, _) = act(&s, ALICE, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_non_member_of_the_group_cannot_approve_or_see() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let id = callout(&s, &callout_body("carol", "secret/group", "retry", 0)).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = act(&s, DAVE, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 403, "{v}");
    assert!(list(&s, DAVE, "pending").await.is_empty());
    let (code, _) = act(&s, "no-such-token-000000", "/v1/approvals/x/approve", None).await;
    assert_eq!(code, 401);
    assert_eq!(
        callout(&s, &callout_body("carol", "secret/group", "retry", 0)).await["status"],
        "pending"
    );
}

#[tokio::test]
async fn the_callout_needs_the_shared_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let c = reqwest::Client::new();
    let url = format!("{}/v1/approvals", s.url);
    let body = callout_body("carol", "secret/auth", "retry", 0);
    let r = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .bearer_auth(ALICE)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "an approver token is not the callout token"
    );
    let r = c
        .post(&url)
        .bearer_auth(CALLOUT_TOKEN)
        .json(&json!({"request_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn pending_requests_expire_into_denied() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "pending_ttl_s = 1");
    let body = callout_body("carol", "secret/exp", "retry", 0);
    let id = callout(&s, &body).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (code, _) = act(&s, ALICE, &format!("/v1/approvals/{id}/approve"), None).await;
    assert_eq!(code, 409, "too late to approve");
    let r = callout(&s, &body).await;
    assert_eq!(
        r,
        json!({"status": "denied", "approver": "system", "reason": "expired"})
    );
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let approved = callout_body("carol", "secret/keep-approved", "retry", 0);
    let pending = callout_body("carol", "secret/keep-pending", "retry", 0);
    let a = callout(&s, &approved).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = callout(&s, &pending).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = act(&s, ALICE, &format!("/v1/approvals/{a}/approve"), None).await;
    let grant = v["grant_id"].as_str().unwrap().to_string();
    stop(s);

    let s = start(dir.path(), "");
    let r = callout(&s, &approved).await;
    assert_eq!(r["status"], "approved");
    assert_eq!(r["grant_id"], grant.as_str());
    let r = callout(&s, &pending).await;
    assert_eq!(
        r["approval_id"],
        p.as_str(),
        "same pending approval after restart"
    );
    let (code, _) = act(&s, BOB, &format!("/v1/approvals/{p}/approve"), None).await;
    assert_eq!(code, 200);
    let all = list(&s, ALICE, "all").await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|x| x["status"] == "approved"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_asks_for_one_scope_share_one_approval() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(start(dir.path(), ""));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            callout(&s, &callout_body("carol", "secret/race", "retry", 0)).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        ids.insert(r["approval_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(list(&s, ALICE, "pending").await.len(), 1);
}

#[tokio::test]
async fn the_callout_path_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "callout_path = \"/hooks/secretgate\"");
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/secretgate", s.url))
        .bearer_auth(CALLOUT_TOKEN)
        .json(&callout_body("carol", "secret/path", "retry", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "pending");
    // The approver listing stays where it was.
    assert_eq!(list(&s, ALICE, "pending").await.len(), 1);
}

//! Webhook delivery, the CLI, and the web page's login/CSRF/approve flow over HTTP.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-shot loopback HTTP receiver: returns its URL and the first request's JSON body.
async fn receiver() -> (String, tokio::task::JoinHandle<(String, Value)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let (mut sock, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                    sock.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await
                    .unwrap();
                    return (head, body);
                }
            }
        }
    });
    (url, h)
}

#[tokio::test]
async fn the_webhook_receives_a_slack_compatible_notification() {
    let (url, got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &format!("[webhook]\nurl = \"{url}\"\n"));
    let r = callout(&s, &callout_body("carol", "secret/hook", "retry", 0)).await;
    let id = r["approval_id"].as_str().unwrap();
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), got)
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("post /hook"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("carol") && text.contains("secret/hook"),
        "{text}"
    );
    assert!(text.contains("INC-42 restore"), "{text}");
    assert_eq!(body["approval_id"], id);
    assert_eq!(body["approval_url"], r["approval_url"]);
    assert_eq!(body["approvers"], "secops");
    assert_eq!(body["principal"]["id"], "carol");
}

#[tokio::test]
async fn a_hanging_webhook_does_not_block_the_callout() {
    // A receiver that accepts connections (kernel backlog) but never answers:
    // the webhook hangs until its timeout, which must not delay the callout.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = hang.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        &format!("[webhook]\nurl = \"http://{dead}/hook\"\ntimeout_ms = 5000\n"),
    );
    let t = Instant::now();
    let r = callout(&s, &callout_body("carol", "secret/dead-hook", "retry", 0)).await;
    assert_eq!(r["status"], "pending");
    assert!(t.elapsed() < Duration::from_secs(2));
}

fn cli(s: &Service, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_approver"))
        .args(args)
        .env("APPROVER_URL", &s.url)
        .env("APPROVER_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_lists_approves_and_denies_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let a = callout(&s, &callout_body("carol", "secret/cli-a", "retry", 0)).await;
    let b = callout(&s, &callout_body("carol", "secret/cli-b", "retry", 0)).await;
    let (a, b) = (
        a["approval_id"].as_str().unwrap().to_string(),
        b["approval_id"].as_str().unwrap().to_string(),
    );
    let out = tokio::task::block_in_place(|| cli(&s, ALICE, &["list"]));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&a) && stdout.contains(&b), "{stdout}");
    assert!(stdout.contains("secret/cli-a"), "{stdout}");

    let out = tokio::task::block_in_place(|| cli(&s, ALICE, &["approve", &a]));
    assert!(out.status.success(), "{out:?}");
    let out = tokio::task::block_in_place(|| {
        cli(&s, ALICE, &["deny", &b, "--reason", "use the staging copy"])
    });
    assert!(out.status.success(), "{out:?}");
    // Refusals surface as a failing exit status.
    let c = callout(&s, &callout_body("carol", "secret/cli-c", "retry", 0)).await;
    let c = c["approval_id"].as_str().unwrap().to_string();
    let out = tokio::task::block_in_place(|| cli(&s, DAVE, &["approve", &c]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    assert_eq!(
        callout(&s, &callout_body("carol", "secret/cli-a", "retry", 0)).await["status"],
        "approved"
    );
    let d = callout(&s, &callout_body("carol", "secret/cli-b", "retry", 0)).await;
    assert_eq!(d["status"], "denied");
    assert_eq!(d["reason"], "use the staging copy");
}

fn csrf_of(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_page_logs_in_with_a_cookie_and_approves_with_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let mut body = callout_body("carol", "secret/web", "retry", 0);
    body["reason"] = serde_json::json!("<b>INC-9</b>");
    let id = callout(&s, &body).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let login = c.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.text().await.unwrap().contains("action=\"/login\""));

    let bad = c
        .post(format!("{}/login", s.url))
        .form(&[("token", "wrong-token-000000000")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);

    let ok = c
        .post(format!("{}/login", s.url))
        .form(&[("token", ALICE)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let cookie = cookie.split(';').next().unwrap().to_string();

    let page = c
        .get(format!("{}/", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains(&id) && html.contains("secret/web"), "{html}");
    assert!(
        html.contains("&lt;b&gt;INC-9&lt;/b&gt;"),
        "reason is escaped"
    );
    let csrf = csrf_of(&html);

    // Without the CSRF token (a cross-site form post) the decision is refused.
    let r = c
        .post(format!("{}/ui/approvals/{id}/approve", s.url))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Without the session cookie too.
    let r = c
        .post(format!("{}/ui/approvals/{id}/approve", s.url))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(callout(&s, &body).await["status"], "pending");

    let r = c
        .post(format!("{}/ui/approvals/{id}/approve", s.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = callout(&s, &body).await;
    assert_eq!(r["status"], "approved");
    assert_eq!(r["approver"], "alice@example.com");
    let html = c
        .get(format!("{}/", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("No pending requests"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_page_hides_buttons_on_your_own_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let id = callout(
        &s,
        &callout_body("alice@example.com", "secret/own", "retry", 0),
    )
    .await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ok = c
        .post(format!("{}/login", s.url))
        .form(&[("token", ALICE)])
        .send()
        .await
        .unwrap();
    let cookie = ok.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let html = c
        .get(format!("{}/", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("your own request"));
    assert!(!html.contains(&format!("approve-{id}")));
    let csrf = csrf_of(&html);
    let r = c
        .post(format!("{}/ui/approvals/{id}/approve", s.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_page_denies_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "");
    let body = callout_body("carol", "secret/web-deny", "retry", 0);
    let id = callout(&s, &body).await["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ok = c
        .post(format!("{}/login", s.url))
        .form(&[("token", BOB)])
        .send()
        .await
        .unwrap();
    let cookie = ok.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let html = c
        .get(format!("{}/", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&html);
    let r = c
        .post(format!("{}/ui/approvals/{id}/deny", s.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("reason", "ask in #secops first")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = callout(&s, &body).await;
    assert_eq!(r["status"], "denied");
    assert_eq!(r["approver"], "bob@example.com");
    assert_eq!(r["reason"], "ask in #secops first");

    // Signing out ends the session.
    let r = c
        .post(format!("{}/logout", s.url))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let html = c
        .get(format!("{}/", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("action=\"/login\""));
}

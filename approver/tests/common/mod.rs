//! Start the real `approver` binary on a loopback port with a throwaway config.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const CALLOUT_TOKEN: &str = "callout-token-0123456789";
pub const ALICE: &str = "alice-token-0123456789"; // alice@example.com, secops
pub const BOB: &str = "bob-token-0123456789"; // bob@example.com, secops
pub const DAVE: &str = "dave-token-0123456789"; // dave, dba only

pub struct Service {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
database = "{db}"
callout_token = "{CALLOUT_TOKEN}"
{extra}

[[approvers]]
id = "alice@example.com"
token = "{ALICE}"
groups = ["secops"]

[[approvers]]
id = "bob@example.com"
token = "{BOB}"
groups = ["secops", "dba"]

[[approvers]]
id = "dave"
token = "{DAVE}"
groups = ["dba"]
"#,
        db = dir.join("approver.db").display()
    )
}

/// Start the service with `extra` TOML lines placed before the approver tables.
pub fn start(dir: &Path, extra: &str) -> Service {
    let cfg = dir.join("approver.toml");
    std::fs::write(&cfg, config(dir, extra)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_approver"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("approver listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Service {
        child,
        url,
        dir: dir.to_path_buf(),
    }
}

pub fn stop(mut s: Service) {
    let _ = s.child.kill();
    let _ = s.child.wait();
}

pub fn callout_body(principal: &str, resource: &str, mode: &str, wait_ms: u64) -> Value {
    json!({
        "request_id": format!("req-{principal}-{resource}"),
        "principal": {"type": "User", "id": principal},
        "claims": {"email": principal},
        "action": "read",
        "resource": resource,
        "policies": ["policy0"],
        "approvers": "secops",
        "reason": "INC-42 restore",
        "mode": mode,
        "wait_ms": wait_ms
    })
}

pub async fn callout(s: &Service, body: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/approvals", s.url))
        .bearer_auth(CALLOUT_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "callout status");
    r.json().await.unwrap()
}

/// POST to an approver endpoint; returns (status, json).
pub async fn act(s: &Service, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = reqwest::Client::new()
        .post(format!("{}{path}", s.url))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

pub async fn list(s: &Service, token: &str, status: &str) -> Vec<Value> {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/approvals?status={status}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["approvals"].as_array().unwrap().clone()
}

//! An approver approves through the web page in headless Chromium (Debian's
//! `chromium`, which `envoy/setup.sh` installs), while a hold-mode callout
//! waits. The page alone, against the service; `envoy/tests/
//! test_approval_browser_e2e.py` drives the same page with real Envoy and
//! OpenBao in the loop.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cdp {
    ws: Ws,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("devtools reply")
                .expect("devtools stream open")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    async fn wait_for(&mut self, js: &str) {
        let t = Instant::now();
        while self.eval(js).await != json!(true) {
            assert!(t.elapsed() < Duration::from_secs(15), "timed out on {js}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let b64 = r["data"].as_str().unwrap();
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, base64_decode(b64)).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

/// Start headless Chromium and return it with its DevTools port.
fn launch(profile: &std::path::Path) -> (Browser, u16) {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let mut child = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1200,700",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting {bin}: {e} (envoy/setup.sh installs Debian's chromium)")
        });
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining so Chromium never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("DevTools listening on ws://127.0.0.1:") {
                let port: u16 = rest.split('/').next().unwrap().parse().unwrap();
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium printed its DevTools address");
    (Browser(child), port)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approver_approves_with_the_button_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(start(dir.path(), ""));

    // The filter's request waits in hold mode while the human decides.
    let held = {
        let s = s.clone();
        tokio::spawn(async move {
            callout(
                &s,
                &callout_body("carol@example.com", "secret/data/prod/db", "hold", 60_000),
            )
            .await
        })
    };
    let t = Instant::now();
    let id = loop {
        if let Some(a) = list(&s, ALICE, "pending").await.first() {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let (_browser, port) = launch(&dir.path().join("profile"));
    let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws_url = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut cdp = Cdp { ws, next: 0 };
    cdp.call("Page.enable", json!({})).await;

    cdp.call("Page.navigate", json!({"url": format!("{}/", s.url)}))
        .await;
    cdp.wait_for("!!document.getElementById('token')").await;
    cdp.eval(&format!(
        "document.getElementById('token').value = '{ALICE}'; \
         document.getElementById('login').click(); true"
    ))
    .await;
    let button = format!("approve-{id}");
    cdp.wait_for(&format!("!!document.getElementById('{button}')"))
        .await;
    let text = cdp.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(text.contains("carol@example.com"), "{text}");
    assert!(text.contains("secret/data/prod/db"), "{text}");
    assert!(text.contains("INC-42 restore"), "{text}");
    cdp.screenshot("approver-browser-pending.png").await;
    assert!(!held.is_finished(), "the callout is still held");

    cdp.eval(&format!(
        "document.getElementById('{button}').click(); true"
    ))
    .await;
    let r = tokio::time::timeout(Duration::from_secs(15), held)
        .await
        .expect("hold released by the click")
        .unwrap();
    assert_eq!(r["status"], "approved", "{r}");
    assert_eq!(r["approver"], "alice@example.com");

    cdp.wait_for("!!document.getElementById('empty')").await;
    cdp.screenshot("approver-browser-after.png").await;
}

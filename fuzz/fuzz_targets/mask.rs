//! Audit masking of response bodies. Input: one selector byte, then the body.
//!
//! Properties: no panic; `mask_json` accepts exactly what serde_json accepts
//! and its output is JSON; a streamed capture, fed in chunks, renders JSON;
//! a body placed where a secret sits (KV v2 `data.data`, a KV v1 write) has
//! every string and number masked, whatever its keys and depth.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secretgate::audit::{AuditConfig, RawAuditConfig};
use secretgate::classify::MountType;
use secretgate::shapes::BodyKind;
use serde_json::Value;

fn config(json: &str) -> AuditConfig {
    let raw: RawAuditConfig = serde_json::from_str(json).expect("fixed audit config parses");
    match AuditConfig::from_raw(raw) {
        Ok(config) => config,
        Err(e) => panic!("fixed audit config {json} refused: {e}"),
    }
}

/// HMAC with bounds no fuzz input reaches; redaction with a small capture
/// limit, small masking bounds, LIST names shown and extra readable keys,
/// so truncation, summaries and both modes are reached.
fn configs() -> &'static [AuditConfig; 2] {
    static CONFIGS: OnceLock<[AuditConfig; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [
            config(
                r#"{"mode":"hmac-sha256","hmac_key":"0123456789abcdef-fuzz",
                    "max_masked_values":1048576,"max_masked_body_bytes":67108864}"#,
            ),
            config(
                r#"{"mode":"redact","max_body_bytes":256,"list_keys":true,
                    "max_masked_values":16,"max_masked_body_bytes":1024,
                    "readable_keys":{"default":["name","version"],"kv-v2":["owner","type"]}}"#,
            ),
        ]
    })
}

/// Whether the body answers a LIST: its names are counted, not shown.
const LISTINGS: [bool; 4] = [false, true, false, false];
const MOUNTS: [Option<MountType>; 4] = [
    None,
    Some(MountType::KvV2),
    Some(MountType::KvV1),
    Some(MountType::Database),
];

/// Whether every string and number in `value` is a masked one.
fn all_masked(value: &Value) -> bool {
    match value {
        Value::String(s) => s == "redacted" || s.starts_with("hmac-sha256:"),
        Value::Number(_) => false,
        Value::Array(items) => items.iter().all(all_masked),
        Value::Object(fields) => fields.values().all(all_masked),
        Value::Bool(_) | Value::Null => true,
    }
}

/// `body` stored as a secret: under a KV v2 answer's `data.data`, and as a
/// KV v1 write. Every value in it must come out masked.
fn check_secret_place(config: &AuditConfig, body: &[u8]) {
    let Ok(secret) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let answer = serde_json::json!({"request_id": "r", "data": {"data": secret}}).to_string();
    let kv2 = BodyKind::response(Some(MountType::KvV2), false);
    if let Some(text) = config.mask_json(answer.as_bytes(), kv2) {
        let masked: Value = serde_json::from_str(&text).expect("masked output is JSON");
        assert!(all_masked(&masked["data"]["data"]), "secret readable in {text}");
    }
    let kv1 = BodyKind::request(Some(MountType::KvV1));
    if let Some(text) = config.mask_json(body, kv1) {
        let masked: Value = serde_json::from_str(&text).expect("masked output is JSON");
        assert!(all_masked(&masked), "secret readable in {text}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let config = &configs()[usize::from(selector & 1)];
    let listing = LISTINGS[usize::from((selector >> 1) & 3)];
    let mount = MOUNTS[usize::from((selector >> 3) & 3)];

    let serde_ok = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    let kind = BodyKind::response(mount, listing);
    let masked = config.mask_json(body, kind);
    match &masked {
        Some(text) => {
            assert!(serde_ok, "masker accepted what serde_json refuses");
            if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
                panic!("masked output is not JSON ({e}): {text:?}");
            }
        }
        // Only the unbounded configuration must mask every JSON body.
        None if selector & 1 == 0 => assert!(!serde_ok, "masker refused what serde_json accepts"),
        None => {}
    }

    // The same body streamed in chunks of a size taken from the selector.
    let chunk = usize::from(selector >> 5) * 7 + 1;
    let mut capture = config.capture();
    for piece in body.chunks(chunk) {
        capture.feed(piece);
    }
    assert_eq!(capture.is_empty(), body.is_empty());
    assert_eq!(capture.truncated(), body.len() > config.max_body_bytes);
    let rendered = capture.render(config, kind);
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&rendered) {
        panic!("rendered capture is not JSON ({e}): {rendered:?}");
    }

    check_secret_place(config, body);
});

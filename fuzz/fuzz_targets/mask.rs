//! Audit masking of response bodies. Input: one selector byte, then the body.
//!
//! Properties: no panic; `mask_json` accepts exactly what serde_json accepts
//! and its output is JSON; a streamed capture, fed in chunks, renders JSON.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secretgate::audit::{AuditConfig, RawAuditConfig};

fn config(json: &str) -> AuditConfig {
    let raw: RawAuditConfig = serde_json::from_str(json).expect("fixed audit config parses");
    match AuditConfig::from_raw(raw) {
        Ok(config) => config,
        Err(e) => panic!("fixed audit config {json} refused: {e}"),
    }
}

/// HMAC with the defaults; redaction with a small capture limit, LIST names
/// shown and extra readable keys, so truncation and both modes are reached.
fn configs() -> &'static [AuditConfig; 2] {
    static CONFIGS: OnceLock<[AuditConfig; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [
            config(r#"{"mode":"hmac-sha256","hmac_key":"0123456789abcdef-fuzz"}"#),
            config(
                r#"{"mode":"redact","max_body_bytes":256,"list_keys":true,
                    "readable_keys":{"default":["name"],"kv-v2":["owner"]}}"#,
            ),
        ]
    })
}

/// Whether the body answers a LIST: its names are counted, not shown.
const LISTINGS: [bool; 4] = [false, true, false, false];
const MOUNTS: [Option<&str>; 4] = [None, Some("kv-v2"), Some("kv-v1"), Some("database")];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let config = &configs()[usize::from(selector & 1)];
    let listing = LISTINGS[usize::from((selector >> 1) & 3)];
    let mount = MOUNTS[usize::from((selector >> 3) & 3)];

    let serde_ok = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    let masked = config.mask_json(body, listing, mount);
    match &masked {
        Some(text) => {
            assert!(serde_ok, "masker accepted what serde_json refuses");
            if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
                panic!("masked output is not JSON ({e}): {text:?}");
            }
        }
        None => assert!(!serde_ok, "masker refused what serde_json accepts"),
    }

    // The same body streamed in chunks of a size taken from the selector.
    let chunk = usize::from(selector >> 5) * 7 + 1;
    let mut capture = config.capture();
    for piece in body.chunks(chunk) {
        capture.feed(piece);
    }
    assert_eq!(capture.is_empty(), body.is_empty());
    assert_eq!(capture.truncated(), body.len() > config.max_body_bytes);
    let rendered = capture.render(config, listing, mount);
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&rendered) {
        panic!("rendered capture is not JSON ({e}): {rendered:?}");
    }
});

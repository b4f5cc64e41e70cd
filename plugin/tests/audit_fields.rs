//! `audit.fields`: `all` (the default) writes every documented field of the
//! record, `null`, `[]` and `false` included; `present` writes the same
//! record without the fields that are null or empty and without false
//! truncation flags, and never leaves out a field that has a value.

use secretgate::audit::{self, ResponseFacts};
use secretgate::config::Config;
use secretgate::gate::RequestFacts;
use serde_json::{json, Map, Value};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

/// Every field the README documents as always present in a full record.
const ALWAYS_IN_FULL: [&str; 24] = [
    "time",
    "request_id",
    "principal",
    "claims",
    "source_address",
    "method",
    "path",
    "namespace",
    "action",
    "resource",
    "decision",
    "reason",
    "policies",
    "errors",
    "response_status",
    "request_body",
    "response_body",
    "token_hmac",
    "request_body_truncated",
    "response_body_truncated",
    "masking",
    "filter_version",
    "config_revision",
    "bundle_revision",
];

/// Written by both settings, even when empty (a request without an id).
const NEVER_LEFT_OUT: [&str; 8] = [
    "time",
    "request_id",
    "method",
    "path",
    "decision",
    "reason",
    "masking",
    "filter_version",
];

fn config(fields: Option<&str>) -> Config {
    let mut audit = json!({"mode": "hmac-sha256", "hmac_key": "an-audit-key-of-some-length"});
    if let Some(fields) = fields {
        audit["fields"] = json!(fields);
    }
    let config = json!({
        "schema": SCHEMA,
        "policies": r#"@id("reads") permit (principal == Workload::"ci", action == Action::"read", resource in Path::"secret/ci");"#,
        "mounts": {"secret": "kv-v2"},
        "identity": {"source": "header", "principal_type": "Workload"},
        "audit": audit,
        // Named, so both settings' records name the same configuration.
        "revision": "audit-fields-test",
    });
    Config::from_json(config.to_string().as_bytes()).expect("configuration loads")
}

/// The record of one request: an allowed read answered with a secret, a
/// denied read, or a request without identity.
fn record(config: &Config, case: &str) -> Map<String, Value> {
    let (target, principal) = match case {
        "allowed" => ("/v1/secret/data/ci/db", Some("ci")),
        "denied" => ("/v1/secret/data/prod/db", Some("ci")),
        _ => ("/v1/secret/data/ci/db", None),
    };
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"x-vault-token", b"hvs.a-token")];
    if let Some(principal) = principal {
        headers.push((b"x-secretgate-principal", principal.as_bytes()));
    }
    let verdict = config.decide(&RequestFacts {
        method: "GET",
        target,
        headers: &headers,
        source_address: Some("127.0.0.1:40000"),
        now_nanos: 1_764_650_000_123_000_000,
        jwt_payload: None,
        peer_uri_san: None,
    });
    let mut reply = config.audit.capture();
    reply.feed(br#"{"data":{"data":{"password":"hunter2-canary"},"metadata":{"version":3}}}"#);
    let allowed = case == "allowed";
    let text = audit::render(
        &config.audit,
        &verdict.record,
        &ResponseFacts {
            status: Some(if allowed { 200 } else { 403 }),
            request_body: None,
            response_body: allowed.then_some(&reply),
        },
    );
    assert!(!text.contains("hunter2-canary"), "{text}");
    match serde_json::from_str(&text) {
        Ok(Value::Object(fields)) => fields,
        other => panic!("not a JSON object: {other:?}"),
    }
}

fn empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::String(text) => text.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

#[test]
fn present_is_the_full_record_without_its_empty_fields() {
    let (full, present) = (config(None), config(Some("present")));
    assert_eq!(
        full.audit.fields,
        config(Some("all")).audit.fields,
        "all is the default"
    );
    for case in ["allowed", "denied", "anonymous"] {
        let full_record = record(&full, case);
        for field in ALWAYS_IN_FULL {
            assert!(full_record.contains_key(field), "{case}: {field} missing");
        }
        let mut expected = full_record.clone();
        expected.retain(|name, value| {
            NEVER_LEFT_OUT.contains(&name.as_str())
                || !empty(value)
                || !ALWAYS_IN_FULL.contains(&name.as_str())
        });
        let mut present_record = record(&present, case);
        // Two renderings differ in nothing else; `time` is fixed by the facts.
        assert_eq!(present_record, expected, "{case}");
        assert!(
            present_record.len() < full_record.len(),
            "{case}: nothing was left out"
        );
        present_record.retain(|_, value| empty(value));
        assert!(
            present_record
                .keys()
                .all(|name| NEVER_LEFT_OUT.contains(&name.as_str())),
            "{case}: empty fields written: {present_record:?}"
        );
    }
}

#[test]
fn an_unknown_fields_setting_is_refused() {
    let config = json!({
        "schema": SCHEMA,
        "policies": "",
        "identity": {"source": "header"},
        "audit": {"mode": "redact", "fields": "some"},
    });
    let error = Config::from_json(config.to_string().as_bytes()).expect_err("must not load");
    assert!(error.to_string().contains("`all` or `present`"), "{error}");
}

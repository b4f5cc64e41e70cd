//! Masking of every response shape the gate classifies: the audit record
//! keeps keys and structure, readable metadata stays readable, and no secret
//! value survives in either mode.

use secretgate::audit::{AuditConfig, RawAuditConfig};
use serde_json::{json, Value};

const KEY: &str = "audit-test-key-0123456789";

fn config(extra: Value) -> AuditConfig {
    let mut raw = json!({"mode": "hmac-sha256", "hmac_key": KEY});
    if let (Some(target), Some(fields)) = (raw.as_object_mut(), extra.as_object()) {
        target.extend(fields.clone());
    }
    let raw: RawAuditConfig = serde_json::from_value(raw).unwrap();
    AuditConfig::from_raw(raw).unwrap()
}

fn redact() -> AuditConfig {
    AuditConfig::default()
}

fn hmac(value: &str) -> String {
    config(json!({})).hmac_hex(value.as_bytes()).unwrap()
}

/// Every secret must be gone from the masked text, in both modes.
fn assert_masked(body: &Value, listing: bool, mount: &str, secrets: &[&str]) -> (Value, Value) {
    let keyed = config(json!({})).mask(body, listing, Some(mount));
    let redacted = redact().mask(body, listing, Some(mount));
    for masked in [&keyed, &redacted] {
        let text = masked.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} survived in {text}");
        }
    }
    (keyed, redacted)
}

#[test]
fn kv_v2_read_keeps_metadata_and_masks_data() {
    let body = json!({
        "request_id": "8c4de05e-7d95", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": {"data": {"password": "hunter2", "port": 5432, "nested": {"token": "t0k"}},
                 "metadata": {"created_time": "2026-11-28T12:41:48Z", "custom_metadata": {"owner": "alice"},
                              "deletion_time": "", "destroyed": false, "version": 3}},
        "wrap_info": null, "warnings": null, "auth": null
    });
    let (keyed, redacted) =
        assert_masked(&body, false, "kv-v2", &["hunter2", "5432", "t0k", "alice"]);
    assert_eq!(keyed["request_id"], "8c4de05e-7d95");
    assert_eq!(keyed["data"]["metadata"]["version"], 3);
    assert_eq!(
        keyed["data"]["metadata"]["created_time"],
        "2026-11-28T12:41:48Z"
    );
    assert_eq!(keyed["data"]["metadata"]["destroyed"], false);
    assert_eq!(keyed["data"]["data"]["password"], hmac("hunter2"));
    assert_eq!(keyed["data"]["data"]["port"], hmac("5432"));
    assert_eq!(keyed["data"]["data"]["nested"]["token"], hmac("t0k"));
    assert_eq!(redacted["data"]["data"]["password"], "redacted");
    assert_eq!(keyed["wrap_info"], Value::Null);
}

#[test]
fn kv_v1_read_and_write_request_bodies_are_masked() {
    let read = json!({"request_id": "r", "data": {"api_key": "AKIA-secret", "enabled": true}});
    let (keyed, _) = assert_masked(&read, false, "kv-v1", &["AKIA-secret"]);
    assert_eq!(
        keyed["data"]["enabled"], true,
        "booleans carry no secret and stay"
    );
    let write = json!({"options": {"cas": 2}, "data": {"password": "n3w-s3cret"}});
    let (keyed, _) = assert_masked(&write, false, "kv-v2", &["n3w-s3cret"]);
    assert_eq!(keyed["options"]["cas"], 2);
}

#[test]
fn metadata_read_masks_custom_metadata() {
    let body = json!({"data": {"current_version": 2, "max_versions": 0, "oldest_version": 1,
        "custom_metadata": {"rotation-contact": "ops@acme.test"},
        "versions": {"1": {"created_time": "t1", "destroyed": false}}}});
    let (keyed, _) = assert_masked(&body, false, "kv-v2", &["ops@acme.test"]);
    assert_eq!(keyed["data"]["current_version"], 2);
    assert_eq!(keyed["data"]["versions"]["1"]["created_time"], "t1");
}

#[test]
fn list_keeps_only_a_count_unless_configured() {
    let body = json!({"request_id": "r", "data": {"keys": ["db", "prod-root-password-name/"]}});
    let (keyed, redacted) = assert_masked(&body, true, "kv-v2", &["prod-root-password-name"]);
    assert_eq!(keyed["data"]["keys"], json!({"count": 2}));
    assert_eq!(redacted["data"]["keys"], json!({"count": 2}));
    let shown = config(json!({"list_keys": true})).mask(&body, true, Some("kv-v2"));
    assert_eq!(
        shown["data"]["keys"],
        json!(["db", "prod-root-password-name/"])
    );
}

#[test]
fn a_detailed_metadata_list_counts_its_children_instead_of_naming_them() {
    // `LIST secret/detailed-metadata/prod`: every child's name is a member
    // name of `key_info`, and its custom metadata a value below it.
    let body = json!({"request_id": "r", "data": {
        "keys": ["db", "child-name-canary/"],
        "key_info": {
            "db": {"current_version": 3, "custom_metadata": {"owner": "owner-canary"}},
            "child-name-canary/": null,
        }
    }});
    let (keyed, redacted) =
        assert_masked(&body, true, "kv-v2", &["child-name-canary", "owner-canary"]);
    for masked in [&keyed, &redacted] {
        assert_eq!(masked["data"]["keys"], json!({"count": 2}));
        assert_eq!(masked["data"]["key_info"], json!({"count": 2}));
    }
    // Not a LIST: `key_info` is an ordinary (masked) field.
    let read = config(json!({})).mask(&body, false, Some("kv-v2"));
    assert!(read["data"]["key_info"].is_object());
    assert!(!read.to_string().contains("owner-canary"));
}

#[test]
fn dynamic_credentials_are_masked_but_lease_metadata_stays() {
    let database = json!({"lease_id": "database/creds/ro/abc", "lease_duration": 3600, "renewable": true,
        "data": {"username": "v-ci-ro-x1", "password": "A1a-db-pass"}});
    let (keyed, _) = assert_masked(&database, false, "database", &["v-ci-ro-x1", "A1a-db-pass"]);
    assert_eq!(keyed["lease_id"], "database/creds/ro/abc");
    assert_eq!(keyed["lease_duration"], 3600);
    let aws = json!({"data": {"access_key": "AKIAEXAMPLE", "secret_key": "wJalrXUtnFEMI", "security_token": "FwoGZX"}});
    assert_masked(
        &aws,
        false,
        "aws",
        &["AKIAEXAMPLE", "wJalrXUtnFEMI", "FwoGZX"],
    );
}

#[test]
fn pki_issue_masks_the_private_key_and_keeps_the_serial() {
    let body = json!({"data": {"certificate": "-----BEGIN CERTIFICATE-----MIIB",
        "private_key": "-----BEGIN RSA PRIVATE KEY-----MIIEpA", "private_key_type": "rsa",
        "serial_number": "39:dd:2e", "ca_chain": ["-----BEGIN CERTIFICATE-----CA"]}});
    let (keyed, _) = assert_masked(&body, false, "pki", &["PRIVATE KEY-----MIIEpA"]);
    assert_eq!(keyed["data"]["serial_number"], "39:dd:2e");
    assert!(keyed["data"]["ca_chain"].is_array());
}

#[test]
fn transit_decrypt_plaintext_is_masked() {
    let body = json!({"data": {"plaintext": "c2VjcmV0IHBsYWlu"}});
    assert_masked(&body, false, "transit", &["c2VjcmV0IHBsYWlu"]);
}

#[test]
fn unwrap_and_login_tokens_are_masked_even_when_configured_readable_elsewhere() {
    let unwrap = json!({"data": {"marker": "wrapped-value"}, "wrap_info": null});
    assert_masked(&unwrap, false, "sys", &["wrapped-value"]);
    let wrapped = json!({"wrap_info": {"token": "hvs.wrapping", "accessor": "acc-1", "ttl": 300,
        "creation_time": "t", "creation_path": "secret/data/x", "wrapped_accessor": "acc-2"}});
    let (keyed, _) = assert_masked(
        &wrapped,
        false,
        "kv-v2",
        &["hvs.wrapping", "acc-1", "acc-2"],
    );
    assert_eq!(keyed["wrap_info"]["ttl"], 300);
    let login = json!({"auth": {"client_token": "hvs.CAESIJ", "accessor": "0e9e354a",
        "policies": ["default", "ci"], "token_policies": ["default"], "metadata": {"role": "ci"},
        "lease_duration": 2764800, "renewable": true, "entity_id": "e-1", "token_type": "service", "orphan": true}});
    let (keyed, _) = assert_masked(&login, false, "auth", &["hvs.CAESIJ", "0e9e354a"]);
    assert_eq!(keyed["auth"]["policies"], json!(["default", "ci"]));
    assert_eq!(keyed["auth"]["token_type"], "service");
}

#[test]
fn readable_keys_are_configurable_per_mount_type() {
    let body = json!({"data": {"username": "svc-user", "password": "pw"}});
    let per_mount = config(json!({"readable_keys": {"database": ["username"]}}));
    let masked = per_mount.mask(&body, false, Some("database"));
    assert_eq!(masked["data"]["username"], "svc-user");
    let elsewhere = per_mount.mask(&body, false, Some("kv-v2"));
    assert_eq!(elsewhere["data"]["username"], hmac("svc-user"));
}

#[test]
fn nested_arrays_unicode_and_numbers() {
    let body = json!({"data": {"list": [["ünïcødé-sëcret", 42.5], {"deep": [true, null, "x"]}]}});
    let (keyed, _) = assert_masked(&body, false, "kv-v2", &["ünïcødé-sëcret", "42.5"]);
    assert_eq!(keyed["data"]["list"][0][0], hmac("ünïcødé-sëcret"));
    assert_eq!(
        keyed["data"]["list"][1]["deep"],
        json!([true, null, hmac("x")])
    );
}

#[test]
fn bodies_that_are_not_json_or_too_large_are_never_logged() {
    let audit = config(json!({"max_body_bytes": 32}));
    let mut malformed = audit.capture();
    malformed.feed(b"{\"password\": \"unterminated");
    let shown: Value =
        serde_json::from_str(&malformed.render(&audit, false, Some("kv-v2"))).unwrap();
    assert_eq!(shown["not_logged"], "not_json");
    assert_eq!(shown["size"], 26);
    assert_eq!(shown["hmac"], hmac("{\"password\": \"unterminated"));
    assert!(!shown.to_string().contains("unterminated"));

    let mut large = audit.capture();
    large.feed(b"{\"data\": {\"password\": \"");
    large.feed(b"this-part-is-past-the-limit\"}}");
    assert!(large.truncated());
    let shown: Value = serde_json::from_str(&large.render(&audit, false, Some("kv-v2"))).unwrap();
    assert_eq!(shown["not_logged"], "over_max_body_bytes");
    assert_eq!(shown["size"], 53);
    assert_eq!(
        shown["hmac"],
        hmac("{\"data\": {\"password\": \"this-part-is-past-the-limit\"}}")
    );

    let mut fits = audit.capture();
    fits.feed(b"{\"data\": {\"pin\": 1234}}");
    let shown: Value = serde_json::from_str(&fits.render(&audit, false, Some("kv-v2"))).unwrap();
    assert_eq!(shown["json"]["data"]["pin"], hmac("1234"));

    let redacting = redact();
    let mut redacted = redacting.capture();
    redacted.feed(b"not json at all");
    let shown: Value = serde_json::from_str(&redacted.render(&redacting, false, None)).unwrap();
    assert_eq!(shown, json!({"size": 15, "not_logged": "not_json"}));
}

#[test]
fn keys_and_readable_values_are_escaped_into_valid_json() {
    let body = json!({"request_id": "quote\" backslash\\ newline\n tab\t nul\u{0}", "we\"ird\nkey": {"x\\": "y"}});
    let masked = config(json!({})).mask(&body, false, Some("kv-v2"));
    assert_eq!(masked["request_id"], body["request_id"]);
    assert_eq!(masked["we\"ird\nkey"]["x\\"], hmac("y"));
}

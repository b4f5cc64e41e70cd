//! Masking of every response shape the gate classifies: the audit record
//! keeps keys and structure, readable metadata stays readable, and no secret
//! value survives in either mode.

use secretgate::audit::{AuditConfig, RawAuditConfig};
use secretgate::classify::MountType;
use secretgate::shapes::BodyKind;
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

fn answer(mount: &str) -> BodyKind {
    BodyKind::response(MountType::parse(mount), false)
}

fn list_answer(mount: &str) -> BodyKind {
    BodyKind::response(MountType::parse(mount), true)
}

fn request(mount: &str) -> BodyKind {
    BodyKind::request(MountType::parse(mount))
}

/// Every secret must be gone from the masked text, in both modes.
fn assert_masked(body: &Value, kind: BodyKind, secrets: &[&str]) -> (Value, Value) {
    let keyed = config(json!({})).mask(body, kind);
    let redacted = redact().mask(body, kind);
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
        assert_masked(&body, answer("kv-v2"), &["hunter2", "5432", "t0k", "alice"]);
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
    let (keyed, _) = assert_masked(&read, answer("kv-v1"), &["AKIA-secret"]);
    assert_eq!(
        keyed["data"]["enabled"], true,
        "booleans carry no secret and stay"
    );
    let write = json!({"options": {"cas": 2}, "data": {"password": "n3w-s3cret"}});
    let (keyed, _) = assert_masked(&write, request("kv-v2"), &["n3w-s3cret"]);
    assert_eq!(keyed["options"]["cas"], 2);
}

#[test]
fn metadata_read_masks_custom_metadata() {
    let body = json!({"data": {"current_version": 2, "max_versions": 0, "oldest_version": 1,
        "custom_metadata": {"rotation-contact": "ops@acme.test"},
        "versions": {"1": {"created_time": "t1", "destroyed": false}}}});
    let (keyed, _) = assert_masked(&body, answer("kv-v2"), &["ops@acme.test"]);
    assert_eq!(keyed["data"]["current_version"], 2);
    assert_eq!(keyed["data"]["versions"]["1"]["created_time"], "t1");
}

#[test]
fn list_keeps_only_a_count_unless_configured() {
    let body = json!({"request_id": "r", "data": {"keys": ["db", "prod-root-password-name/"]}});
    let (keyed, redacted) =
        assert_masked(&body, list_answer("kv-v2"), &["prod-root-password-name"]);
    assert_eq!(keyed["data"]["keys"], json!({"count": 2}));
    assert_eq!(redacted["data"]["keys"], json!({"count": 2}));
    let shown = config(json!({"list_keys": true})).mask(&body, list_answer("kv-v2"));
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
    let (keyed, redacted) = assert_masked(
        &body,
        list_answer("kv-v2"),
        &["child-name-canary", "owner-canary"],
    );
    for masked in [&keyed, &redacted] {
        assert_eq!(masked["data"]["keys"], json!({"count": 2}));
        assert_eq!(masked["data"]["key_info"], json!({"count": 2}));
    }
    // Not a LIST: `key_info` is an ordinary (masked) field.
    let read = config(json!({})).mask(&body, answer("kv-v2"));
    assert!(read["data"]["key_info"].is_object());
    assert!(!read.to_string().contains("owner-canary"));
}

#[test]
fn dynamic_credentials_are_masked_but_lease_metadata_stays() {
    let database = json!({"lease_id": "database/creds/ro/abc", "lease_duration": 3600, "renewable": true,
        "data": {"username": "v-ci-ro-x1", "password": "A1a-db-pass"}});
    let (keyed, _) = assert_masked(
        &database,
        answer("database"),
        &["v-ci-ro-x1", "A1a-db-pass"],
    );
    assert_eq!(keyed["lease_id"], "database/creds/ro/abc");
    assert_eq!(keyed["lease_duration"], 3600);
    let aws = json!({"data": {"access_key": "AKIAEXAMPLE", "secret_key": "wJalrXUtnFEMI", "security_token": "FwoGZX"}});
    assert_masked(
        &aws,
        answer("aws"),
        &["AKIAEXAMPLE", "wJalrXUtnFEMI", "FwoGZX"],
    );
}

#[test]
fn pki_issue_masks_the_private_key_and_keeps_the_serial() {
    let body = json!({"data": {"certificate": "-----BEGIN CERTIFICATE-----MIIB",
        "private_key": "-----BEGIN RSA PRIVATE KEY-----MIIEpA", "private_key_type": "rsa",
        "serial_number": "39:dd:2e", "ca_chain": ["-----BEGIN CERTIFICATE-----CA"]}});
    let (keyed, _) = assert_masked(&body, answer("pki"), &["PRIVATE KEY-----MIIEpA"]);
    assert_eq!(keyed["data"]["serial_number"], "39:dd:2e");
    assert!(keyed["data"]["ca_chain"].is_array());
}

#[test]
fn transit_decrypt_plaintext_is_masked() {
    let body = json!({"data": {"plaintext": "c2VjcmV0IHBsYWlu"}});
    assert_masked(&body, answer("transit"), &["c2VjcmV0IHBsYWlu"]);
}

#[test]
fn unwrap_and_login_tokens_are_masked_even_when_configured_readable_elsewhere() {
    let unwrap = json!({"data": {"marker": "wrapped-value"}, "wrap_info": null});
    assert_masked(&unwrap, answer("sys"), &["wrapped-value"]);
    let wrapped = json!({"wrap_info": {"token": "hvs.wrapping", "accessor": "acc-1", "ttl": 300,
        "creation_time": "t", "creation_path": "secret/data/x", "wrapped_accessor": "acc-2"}});
    let (keyed, _) = assert_masked(
        &wrapped,
        answer("kv-v2"),
        &["hvs.wrapping", "acc-1", "acc-2"],
    );
    assert_eq!(keyed["wrap_info"]["ttl"], 300);
    let login = json!({"auth": {"client_token": "hvs.CAESIJ", "accessor": "0e9e354a",
        "policies": ["default", "ci"], "token_policies": ["default"], "metadata": {"role": "ci"},
        "lease_duration": 2764800, "renewable": true, "entity_id": "e-1", "token_type": "service", "orphan": true}});
    let (keyed, _) = assert_masked(&login, answer("auth"), &["hvs.CAESIJ", "0e9e354a"]);
    assert_eq!(keyed["auth"]["policies"], json!(["default", "ci"]));
    assert_eq!(keyed["auth"]["token_type"], "service");
}

#[test]
fn readable_keys_are_configurable_per_mount_type() {
    let body = json!({"data": {"username": "svc-user", "password": "pw"}});
    let per_mount = config(json!({"readable_keys": {"database": ["username"]}}));
    let masked = per_mount.mask(&body, answer("database"));
    assert_eq!(masked["data"]["username"], "svc-user");
    let elsewhere = per_mount.mask(&body, answer("kv-v2"));
    assert_eq!(elsewhere["data"]["username"], hmac("svc-user"));
}

#[test]
fn nested_arrays_unicode_and_numbers() {
    let body = json!({"data": {"list": [["ünïcødé-sëcret", 42.5], {"deep": [true, null, "x"]}]}});
    let (keyed, _) = assert_masked(&body, answer("kv-v2"), &["ünïcødé-sëcret", "42.5"]);
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
    let shown: Value = serde_json::from_str(&malformed.render(&audit, answer("kv-v2"))).unwrap();
    assert_eq!(shown["not_logged"], "not_json");
    assert_eq!(shown["size"], 26);
    assert_eq!(shown["hmac"], hmac("{\"password\": \"unterminated"));
    assert!(!shown.to_string().contains("unterminated"));

    let mut large = audit.capture();
    large.feed(b"{\"data\": {\"password\": \"");
    large.feed(b"this-part-is-past-the-limit\"}}");
    assert!(large.truncated());
    let shown: Value = serde_json::from_str(&large.render(&audit, answer("kv-v2"))).unwrap();
    assert_eq!(shown["not_logged"], "over_max_body_bytes");
    assert_eq!(shown["size"], 53);
    assert_eq!(
        shown["hmac"],
        hmac("{\"data\": {\"password\": \"this-part-is-past-the-limit\"}}")
    );

    let mut fits = audit.capture();
    fits.feed(b"{\"data\": {\"pin\": 1234}}");
    let shown: Value = serde_json::from_str(&fits.render(&audit, answer("kv-v2"))).unwrap();
    assert_eq!(shown["json"]["data"]["pin"], hmac("1234"));

    let redacting = redact();
    let mut redacted = redacting.capture();
    redacted.feed(b"not json at all");
    let shown: Value =
        serde_json::from_str(&redacted.render(&redacting, BodyKind::response(None, false)))
            .unwrap();
    assert_eq!(shown, json!({"size": 15, "not_logged": "not_json"}));
}

#[test]
fn keys_and_readable_values_are_escaped_into_valid_json() {
    let body = json!({"request_id": "quote\" backslash\\ newline\n tab\t nul\u{0}", "we\"ird\nkey": {"x\\": "y"}});
    let masked = config(json!({})).mask(&body, answer("kv-v2"));
    assert_eq!(masked["request_id"], body["request_id"]);
    assert_eq!(masked["we\"ird\nkey"]["x\\"], hmac("y"));
}

/// Issue #15 A: a secret whose keys are named like metadata (`type`,
/// `version`, `ttl`, `expiration`, `serial_number`) is masked, in an answer
/// and in a write, at any depth.
#[test]
fn metadata_names_inside_a_secret_are_masked() {
    let secret = json!({"type": "type-canary", "version": "version-canary", "ttl": 9137,
        "expiration": "expiration-canary", "serial_number": "serial-canary",
        "lease_duration": "lease-canary", "request_id": "request-canary",
        "nested": {"metadata": {"version": "deep-canary", "policies": ["policy-canary"]}}});
    let canaries = [
        "type-canary",
        "version-canary",
        "9137",
        "expiration-canary",
        "serial-canary",
        "lease-canary",
        "request-canary",
        "deep-canary",
        "policy-canary",
    ];
    let kv2_read = json!({"request_id": "r", "data": {"data": secret, "metadata": {"version": 4}}});
    let (keyed, _) = assert_masked(&kv2_read, answer("kv-v2"), &canaries);
    assert_eq!(keyed["data"]["metadata"]["version"], 4);
    assert_eq!(keyed["request_id"], "r");
    assert_masked(&json!({"data": secret}), answer("kv-v1"), &canaries);
    assert_masked(&json!({"data": secret}), answer("cubbyhole"), &canaries);
    assert_masked(&json!({"data": secret}), answer("sys"), &canaries);
    assert_masked(
        &json!({"data": secret, "options": {"cas": 1}}),
        request("kv-v2"),
        &canaries,
    );
    // A KV v1 write is the secret itself: even envelope names are its own.
    assert_masked(&secret, request("kv-v1"), &canaries);
    // Configured readable keys name an engine's own fields, never a secret's.
    let configured =
        config(json!({"readable_keys": {"default": ["nested", "type"], "kv-v2": ["version"]}}));
    let text = configured.mask(&kv2_read, answer("kv-v2")).to_string();
    for canary in canaries {
        assert!(!text.contains(canary), "{canary} survived in {text}");
    }
}

/// Issue #15 item 1: a body of many tiny values is summarised, never
/// logged raw, and never costs more than `max_masked_values` HMACs.
#[test]
fn a_body_of_many_tiny_values_is_summarised() {
    let ones = format!(
        "{{\"data\":{{\"data\":{{\"v\":[{}1]}}}}}}",
        "1,".repeat(32_000)
    );
    assert!(ones.len() < 65_536);
    let audit = config(json!({}));
    let mut capture = audit.capture();
    capture.feed(ones.as_bytes());
    let rendered = capture.render(&audit, answer("kv-v2"));
    let shown: Value = serde_json::from_str(&rendered).unwrap();
    assert_eq!(
        shown,
        json!({"size": ones.len(), "hmac": hmac(&ones), "not_logged": "over_max_masked_values",
               "truncated_at_values": 1024})
    );
    // A body just inside the bound is masked whole.
    let fits = format!("{{\"data\":{{\"data\":[{}1]}}}}", "1,".repeat(1023));
    let mut capture = audit.capture();
    capture.feed(fits.as_bytes());
    let shown: Value = serde_json::from_str(&capture.render(&audit, answer("kv-v2"))).unwrap();
    assert_eq!(
        shown["json"]["data"]["data"].as_array().unwrap().len(),
        1024
    );

    // Past the size bound (long keys stay keys), in redaction mode.
    let redacting = config_redact(json!({"max_masked_body_bytes": 1024}));
    let long_keys = json!({"data": {"data": {"k".repeat(700): 1, "j".repeat(700): 2}}}).to_string();
    let mut capture = redacting.capture();
    capture.feed(long_keys.as_bytes());
    let shown: Value = serde_json::from_str(&capture.render(&redacting, answer("kv-v2"))).unwrap();
    assert_eq!(
        shown,
        json!({"size": long_keys.len(), "not_logged": "over_max_masked_body_bytes",
               "truncated_at_bytes": 1024})
    );
}

#[test]
fn mask_bounds_are_validated() {
    let load = |v: Value| {
        serde_json::from_value::<RawAuditConfig>(v)
            .map_err(|e| e.to_string())
            .and_then(AuditConfig::from_raw)
    };
    assert!(load(json!({"max_masked_values": 0}))
        .unwrap_err()
        .contains("max_masked_values"));
    assert!(load(json!({"max_masked_values": 1u64 << 30})).is_err());
    assert!(load(json!({"max_masked_body_bytes": 10}))
        .unwrap_err()
        .contains("max_masked_body_bytes"));
    assert!(load(json!({"max_masked_body_bytes": 1u64 << 40})).is_err());
    let loaded = load(json!({"max_masked_values": 10, "max_masked_body_bytes": 4096})).unwrap();
    assert_eq!(loaded.mask_limits.max_masked_values, 10);
    assert_eq!(loaded.mask_limits.max_masked_body_bytes, 4096);
}

fn config_redact(extra: Value) -> AuditConfig {
    let mut raw = json!({"mode": "redact"});
    if let (Some(target), Some(fields)) = (raw.as_object_mut(), extra.as_object()) {
        target.extend(fields.clone());
    }
    AuditConfig::from_raw(serde_json::from_value(raw).unwrap()).unwrap()
}

/// Property: a value stored in a secret, under any key name (every name
/// any shape keeps readable among them) and at any depth, is masked in the
/// rendered record, for every mount type, in both directions and modes,
/// with or without configured readable keys.
#[test]
fn a_secret_under_any_key_at_any_depth_is_never_in_the_record() {
    const NAMES: &[&str] = &[
        "data",
        "metadata",
        "version",
        "versions",
        "type",
        "ttl",
        "expiration",
        "serial_number",
        "lease_duration",
        "lease_id",
        "request_id",
        "renewable",
        "created_time",
        "deletion_time",
        "destroyed",
        "current_version",
        "max_versions",
        "cas",
        "options",
        "policies",
        "token_policies",
        "key_version",
        "batch_results",
        "wrap_info",
        "auth",
        "keys",
        "key_info",
        "custom_metadata",
        "private_key_type",
        "creation_time",
        "warnings",
        "errors",
        "username",
        "name",
        "1",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    let configs = [
        config(json!({})),
        config_redact(json!({})),
        config(json!({"readable_keys": {"default": ["username", "name", "1"], "kv-v2": ["type"]}})),
    ];
    let mounts = ["kv-v1", "kv-v2", "cubbyhole", "sys"];
    for case in 0..4000 {
        let canary = format!("canary-{case:05}-value");
        // A secret of random depth whose every key is a metadata-like name,
        // with the canary as a string or a number at the bottom.
        let leaf = if case % 3 == 0 {
            json!(9_000_000_000u64 + case as u64)
        } else {
            json!(canary)
        };
        let needle = leaf.to_string().trim_matches('"').to_owned();
        let mut secret = leaf;
        for _ in 0..=random(6) {
            secret = if random(4) == 0 {
                json!([secret])
            } else {
                json!({NAMES[random(NAMES.len())]: secret, "pad": true})
            };
        }
        let mount = mounts[case % mounts.len()];
        let (body, kind) = match (mount, case % 2) {
            ("kv-v2", 0) => (
                json!({"data": {"data": secret, "metadata": {"version": 1}}}),
                answer(mount),
            ),
            ("kv-v2", _) => (
                json!({"data": secret, "options": {"cas": 0}}),
                request(mount),
            ),
            (_, 0) => (json!({"request_id": "r", "data": secret}), answer(mount)),
            (_, _) => (secret, request(mount)),
        };
        let text = body.to_string();
        for audit in &configs {
            let mut capture = audit.capture();
            capture.feed(text.as_bytes());
            let rendered = capture.render(audit, kind);
            assert!(
                !rendered.contains(&needle),
                "case {case}: {needle} in {rendered} from {text} ({mount})"
            );
            assert!(
                rendered.contains("\"json\":"),
                "case {case}: not masked at all: {rendered}"
            );
        }
    }
}

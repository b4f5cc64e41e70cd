//! The classification table (`classification_cases.json`): every request
//! maps to the action and resource in the table, or is refused with the
//! table's status. The differential test replays the same table against a
//! real OpenBao to prove the table matches what OpenBao serves.

use std::collections::BTreeMap;

use secretgate::classify::{HttpRequest, MountTable};
use serde_json::Value;

fn table() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/classification_cases.json"
    ))
    .expect("table readable");
    serde_json::from_str(&text).expect("table is JSON")
}

#[test]
fn every_case_in_the_table_classifies_as_listed() {
    let table = table();
    let mounts: BTreeMap<String, String> =
        serde_json::from_value(table["mounts"].clone()).expect("mounts map");
    let namespaces: Vec<String> =
        serde_json::from_value(table["namespaces"].clone()).expect("namespaces list");
    let mounts = MountTable::from_config(&mounts, &namespaces).expect("mounts valid");
    let cases = table["cases"].as_array().expect("cases");
    assert!(cases.len() >= 60, "the table keeps at least 60 cases");

    let mut failures = Vec::new();
    for case in cases {
        let method = case["method"].as_str().unwrap();
        let target = case["target"].as_str().unwrap();
        let namespace = case.get("namespace").and_then(Value::as_str);
        let label = format!("{method} {target} ns={namespace:?}");
        let result = mounts.classify(&HttpRequest {
            method,
            target,
            namespace: namespace.map(str::as_bytes),
        });
        match (case.get("status").and_then(Value::as_u64), result) {
            (Some(status), Err(e)) if u64::from(e.status()) == status => {}
            (Some(status), other) => {
                failures.push(format!("{label}: want {status}, got {other:?}"))
            }
            (None, Err(e)) => failures.push(format!("{label}: unexpected refusal {e:?}")),
            (None, Ok(c)) => {
                let resource = c.resource.to_string();
                if c.action.as_str() != case["action"] || resource != case["resource"] {
                    failures.push(format!(
                        "{label}: want {} {}, got {} {resource}",
                        case["action"],
                        case["resource"],
                        c.action.as_str()
                    ));
                }
                if let Some(parents) = case.get("parents").and_then(Value::as_array) {
                    let got: Vec<String> = c
                        .resource
                        .ancestors()
                        .map(|p| format!("Path::{p:?}"))
                        .collect();
                    let want: Vec<&str> = parents.iter().filter_map(Value::as_str).collect();
                    if got != want {
                        failures.push(format!("{label}: parents want {want:?}, got {got:?}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn canonical_target_is_what_was_classified() {
    let mounts = MountTable::from_config(
        &BTreeMap::from([
            ("secret".to_string(), "kv-v2".to_string()),
            ("nsx/secret".to_string(), "kv-v2".to_string()),
        ]),
        &["nsx".to_string()],
    )
    .unwrap();
    let classify = |target: &str| {
        mounts
            .classify(&HttpRequest {
                method: "GET",
                target,
                namespace: None,
            })
            .unwrap()
            .canonical_target
    };
    assert_eq!(
        classify("/v1/secret//data/./ci/x/../app"),
        "/v1/secret/data/ci/app"
    );
    assert_eq!(
        classify("/v1/secret/%64ata/ci/app?version=1"),
        "/v1/secret/data/ci/app?version=1"
    );
    assert_eq!(
        classify("/v1/secret/data/my%20app/"),
        "/v1/secret/data/my%20app/"
    );
}

/// The namespace every root case of the table is replayed in, here and by
/// the differential test against OpenBao (`envoy/tests/test_differential.py`).
const SHIFT_NAMESPACE: &str = "nsx";

/// `%XX` decoded, byte for byte (invalid escapes kept as written): only to
/// tell which cases are written under a namespace, never to classify.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A case of the root namespace: no namespace header, a path whose first
/// segment is no declared namespace, and a resource outside every namespace.
/// The differential test picks the same cases.
fn is_root_case(case: &Value, namespaces: &[String]) -> bool {
    let under_namespace = |id: &str| {
        namespaces
            .iter()
            .any(|ns| id == ns || id.starts_with(&format!("{ns}/")))
    };
    let target = case["target"].as_str().unwrap();
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let first_segment = path
        .strip_prefix("/v1/")
        .map(percent_decoded)
        .and_then(|rest| rest.split('/').find(|s| !s.is_empty()).map(str::to_owned));
    let resource_id = case
        .get("resource")
        .and_then(Value::as_str)
        .and_then(|r| r.split_once("::\""))
        .map(|(_, quoted)| quoted.trim_end_matches('"'));
    case.get("namespace").is_none()
        && !first_segment.is_some_and(|s| under_namespace(&s))
        && !resource_id.is_some_and(under_namespace)
}

/// The target with the namespace written as a path prefix: after `/v1/`,
/// or after the first segment of a target that does not start with `/v1/`.
fn prefixed_target(target: &str, namespace: &str) -> String {
    match target.strip_prefix("/v1/") {
        Some(rest) => format!("/v1/{namespace}/{rest}"),
        None => match target[1..].split_once('/') {
            Some((first, rest)) => format!("/{first}/{namespace}/{rest}"),
            None => format!("{target}/{namespace}"),
        },
    }
}

/// Every root case of the table, replayed inside namespace `nsx` (mounted
/// there as in the root namespace) in both spellings, header and path
/// prefix, gets the same action on the same resource shifted into `nsx`,
/// namespace `nsx`, and the same path to forward; or the same refusal.
#[test]
fn every_root_case_classifies_the_same_inside_a_namespace_in_both_spellings() {
    let table = table();
    let config: BTreeMap<String, String> =
        serde_json::from_value(table["mounts"].clone()).expect("mounts map");
    let namespaces: Vec<String> =
        serde_json::from_value(table["namespaces"].clone()).expect("namespaces list");
    assert!(namespaces.iter().any(|ns| ns == SHIFT_NAMESPACE));
    let root = MountTable::from_config(&config, &namespaces).expect("mounts valid");

    // Every root mount is mounted again inside nsx, with the same type.
    let declared: Vec<String> = root.namespaces().collect();
    let mut shifted_config = config.clone();
    for (path, mount_type) in &config {
        if !declared
            .iter()
            .any(|ns| path.starts_with(&format!("{ns}/")))
        {
            let inside = format!("{SHIFT_NAMESPACE}/{path}");
            let previous = shifted_config.insert(inside.clone(), mount_type.clone());
            assert!(
                previous.is_none_or(|p| &p == mount_type),
                "{inside}: the table mounts it with another type"
            );
        }
    }
    let shifted = MountTable::from_config(&shifted_config, &namespaces).expect("mounts valid");

    let mut failures = Vec::new();
    let mut checked = 0;
    for case in table["cases"].as_array().expect("cases") {
        if !is_root_case(case, &namespaces) {
            continue;
        }
        let method = case["method"].as_str().unwrap();
        let target = case["target"].as_str().unwrap();
        let in_root = root.classify(&HttpRequest {
            method,
            target,
            namespace: None,
        });
        let prefixed = prefixed_target(target, SHIFT_NAMESPACE);
        let spellings = [
            (
                format!("{method} {target} [X-Vault-Namespace: {SHIFT_NAMESPACE}]"),
                HttpRequest {
                    method,
                    target,
                    namespace: Some(SHIFT_NAMESPACE.as_bytes()),
                },
            ),
            (
                format!("{method} {prefixed}"),
                HttpRequest {
                    method,
                    target: &prefixed,
                    namespace: None,
                },
            ),
        ];
        for (label, request) in spellings {
            checked += 1;
            match (&in_root, shifted.classify(&request)) {
                (Err(want), Err(got)) if want.status() == got.status() => {}
                (Err(want), got) => failures.push(format!(
                    "{label}: root refuses {}, got {got:?}",
                    want.status()
                )),
                (Ok(_), Err(got)) => {
                    failures.push(format!("{label}: root classifies, got refusal {got:?}"))
                }
                (Ok(want), Ok(got)) => {
                    let want_id = format!("{SHIFT_NAMESPACE}/{}", want.resource.id);
                    let want_parents: Vec<String> = want
                        .resource
                        .ancestors()
                        .map(|p| format!("{SHIFT_NAMESPACE}/{p}"))
                        .chain([SHIFT_NAMESPACE.to_owned()])
                        .collect();
                    let got_parents: Vec<String> =
                        got.resource.ancestors().map(str::to_owned).collect();
                    if got.action != want.action
                        || got.resource.kind != want.resource.kind
                        || got.resource.id != want_id
                        || got.namespace != SHIFT_NAMESPACE
                        || got.canonical_target != want.canonical_target
                        || got_parents != want_parents
                    {
                        failures.push(format!(
                            "{label}: want {} {:?} {want_id:?} ns {SHIFT_NAMESPACE:?} -> {} parents {want_parents:?}, \
                             got {} {:?} {:?} ns {:?} -> {} parents {got_parents:?}",
                            want.action.as_str(),
                            want.resource.kind,
                            want.canonical_target,
                            got.action.as_str(),
                            got.resource.kind,
                            got.resource.id,
                            got.namespace,
                            got.canonical_target,
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked >= 300,
        "only {checked} namespaced spellings checked"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

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

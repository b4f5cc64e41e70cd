//! OpenBao's own route list (`openbao_routes.json`, taken from a real
//! server's OpenAPI document) against the classifier: every operation of
//! every route lands on the action and resource the table names, and
//! `other` only where the table says why the route touches no secret, key
//! or role. `envoy/tests/test_openbao_routes.py` checks that a real
//! OpenBao's route list is exactly this table's, so a route added by a new
//! OpenBao version fails there instead of passing here as `other`.

use std::collections::BTreeMap;

use secretgate::classify::{HttpRequest, MountTable};
use serde_json::Value;

fn table() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/openbao_routes.json"
    ))
    .expect("route table readable");
    serde_json::from_str(&text).expect("route table is JSON")
}

/// `/transit/keys/{name}` → `/v1/transit/keys/name`.
fn instantiate(route: &str) -> String {
    format!("/v1{}", route.replace(['{', '}'], ""))
}

#[test]
fn every_openbao_route_lands_on_a_named_action_and_resource() {
    let table = table();
    let mounts: BTreeMap<String, String> =
        serde_json::from_value(table["mounts"].clone()).expect("mounts map");
    let mounts = MountTable::from_config(&mounts, &[]).expect("mounts valid");
    let routes = table["routes"].as_array().expect("routes");
    let mut failures = Vec::new();
    let mut checked = 0;
    for route in routes {
        let pattern = route["route"].as_str().expect("route");
        let target = instantiate(pattern);
        let operations = route["operations"].as_object().expect("operations");
        for (operation, want) in operations {
            let method = operation.to_ascii_uppercase();
            let label = format!("{method} {pattern}");
            checked += 1;
            let got = match mounts.classify(&HttpRequest {
                method: &method,
                target: &target,
                namespace: None,
            }) {
                Ok(got) => got,
                Err(e) => {
                    failures.push(format!("{label}: refused ({e:?})"));
                    continue;
                }
            };
            let resource = got.resource.to_string();
            if got.action.as_str() != want["action"] || resource != want["resource"] {
                failures.push(format!(
                    "{label}: want {} {}, got {} {resource}",
                    want["action"],
                    want["resource"],
                    got.action.as_str()
                ));
            }
            let reason = route["other_because"].as_str().unwrap_or_default();
            if got.action.as_str() == "other" && reason.is_empty() {
                failures.push(format!(
                    "{label}: 'other' without saying why it touches no secret"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        checked >= 270,
        "the table covers OpenBao's routes ({checked})"
    );
}

#[test]
fn every_engine_type_is_in_the_route_table() {
    let table = table();
    let routes = table["routes"].as_array().expect("routes");
    for mount in table["mounts"].as_object().expect("mounts").keys() {
        assert!(
            routes.iter().any(|r| r["route"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("/{mount}/")))),
            "no route of {mount}"
        );
    }
    assert!(
        routes.iter().any(|r| r["route"]
            .as_str()
            .is_some_and(|p| p.starts_with("/cubbyhole/"))),
        "no route of the built-in cubbyhole"
    );
}

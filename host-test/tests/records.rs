//! Issue #15 items 2 and 3, on the real `.wasm`: every answer the filter
//! gives, on every path (forwarded, denied, refused, host failure, no
//! configuration, approval), leaves exactly one audit record in the filter
//! state Envoy's access log reads; and a record the host will not take is
//! never silently lost (`audit.on_failure`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use host_test::runner::{run, HostOptions, Outcome};
use host_test::scenario::{self, Scenario};
use serde_json::Value;

const AUDIT_KEY: &str = "wasm.secretgate_audit";

fn scenario(config_extra: &str, request: &str, callouts: &str) -> Scenario {
    scenario_with("{source: header}", config_extra, request, callouts)
}

fn scenario_with(identity: &str, config_extra: &str, request: &str, callouts: &str) -> Scenario {
    let dir = std::env::temp_dir().join(format!(
        "host-test-records-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let policies = host_test::repo_root().join("policies");
    let yaml = format!(
        r#"
config:
  schema: {policies}/schema.cedarschema
  policies: {policies}/policies.cedar
  entities: {policies}/entities.json
  policies_append: |
    @id("dev-bot-reads-prod")
    permit(principal == Workload::"dev-bot", action == Action::"read", resource in Path::"secret/prod");
    @id("dev-bot-held")
    @approval("secops")
    permit(principal == Workload::"dev-bot", action == Action::"read", resource in Path::"secret/held");
  mounts: {{secret: kv-v2}}
  identity: {identity}
  approval: {{cluster: approver, authority: approver.local, timeout_ms: 1000}}
{config_extra}
scenarios:
  - name: one request
    request: {request}
{callouts}
    expect: {{}}
"#,
        policies = policies.display()
    );
    let file: PathBuf = dir.join("records.yaml");
    std::fs::write(&file, yaml).unwrap();
    scenario::load_file(&file)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

const DEV_BOT: &str = "{x-secretgate-principal: dev-bot}";

fn request(method: &str, path: &str, headers: &str) -> String {
    format!("{{method: {method}, path: '{path}', headers: {headers}}}")
}

fn run_one(scenario: &Scenario, options: &HostOptions) -> Outcome {
    run(common::filter(), scenario, options).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The one record the access log would write for this request.
fn the_record(outcome: &Outcome) -> Value {
    let bytes = outcome
        .filter_state
        .get(AUDIT_KEY)
        .unwrap_or_else(|| panic!("no audit record; events {:?}", outcome.events));
    let record: Value = serde_json::from_slice(bytes).expect("the record is one JSON object");
    assert!(record.is_object());
    record
}

struct Path {
    name: &'static str,
    scenario: Scenario,
    options: HostOptions,
    status: u32,
    decision: &'static str,
    forwarded: bool,
}

fn paths() -> Vec<Path> {
    let plain = |name, request: String, status, decision, forwarded| Path {
        name,
        scenario: scenario("", &request, ""),
        options: HostOptions::default(),
        status,
        decision,
        forwarded,
    };
    let approver = |reply: &str| format!("    callouts:\n      approver: {reply}");
    vec![
        plain(
            "allowed and forwarded",
            request("GET", "/v1/secret/data/prod/a", DEV_BOT),
            200,
            "allow",
            true,
        ),
        plain(
            "denied by policy",
            request("GET", "/v1/secret/data/dev/a", DEV_BOT),
            403,
            "deny",
            false,
        ),
        plain(
            "unparseable path",
            request("GET", "/v1/secret/data/a/%zz", DEV_BOT),
            400,
            "bad_request",
            false,
        ),
        plain(
            "no identity",
            request("GET", "/v1/secret/data/prod/a", "{}"),
            401,
            "unauthenticated",
            false,
        ),
        plain(
            "method override header",
            request(
                "GET",
                "/v1/secret/data/prod/a",
                "{x-secretgate-principal: dev-bot, x-http-method-override: DELETE}",
            ),
            400,
            "bad_request",
            false,
        ),
        plain(
            "unknown method",
            request("BREW", "/v1/secret/data/prod/a", DEV_BOT),
            405,
            "method_not_allowed",
            false,
        ),
        Path {
            name: "approval approved",
            scenario: scenario(
                "",
                &request("GET", "/v1/secret/data/held/a", DEV_BOT),
                &approver(
                    r#"{status: 200, body: '{"status":"approved","grant_id":"g1","approver":"alice","expires_at":"2026-11-28T15:00:00Z"}'}"#,
                ),
            ),
            options: HostOptions::default(),
            status: 200,
            decision: "allow",
            forwarded: true,
        },
        Path {
            name: "approval denied",
            scenario: scenario(
                "",
                &request("GET", "/v1/secret/data/held/a", DEV_BOT),
                &approver(
                    r#"{status: 200, body: '{"status":"denied","approver":"bob","reason":"no"}'}"#,
                ),
            ),
            options: HostOptions::default(),
            status: 403,
            decision: "approval_denied",
            forwarded: false,
        },
        Path {
            name: "approval callout failed",
            scenario: scenario(
                "",
                &request("GET", "/v1/secret/data/held/a", DEV_BOT),
                &approver("null"),
            ),
            options: HostOptions::default(),
            status: 403,
            decision: "approval_error",
            forwarded: false,
        },
        Path {
            name: "host error reading the request",
            scenario: scenario("", &request("GET", "/v1/secret/data/prod/a", DEV_BOT), ""),
            options: HostOptions {
                failing: HashMap::from([("proxy_get_header_map_pairs".to_owned(), 10)]),
                ..HostOptions::default()
            },
            status: 500,
            decision: "host_error",
            forwarded: false,
        },
        Path {
            name: "no configuration",
            scenario: scenario(
                "  audit: {mode: rot13}",
                &request("GET", "/v1/secret/data/prod/a", DEV_BOT),
                "",
            ),
            options: HostOptions {
                serve_unconfigured: true,
                ..HostOptions::default()
            },
            status: 500,
            decision: "host_error",
            forwarded: false,
        },
    ]
}

#[test]
fn every_answer_leaves_exactly_one_record() {
    for path in paths() {
        let outcome = run_one(&path.scenario, &path.options);
        let name = path.name;
        assert_eq!(
            outcome.status,
            Some(path.status),
            "{name}: {:?}",
            outcome.logs
        );
        assert_eq!(outcome.forwarded.is_some(), path.forwarded, "{name}");
        let record = the_record(&outcome);
        assert_eq!(record["decision"], path.decision, "{name}: {record}");
        assert_eq!(record["response_status"], path.status, "{name}: {record}");
        // The record's decision is counted once, however often it was written.
        let counted: i64 = outcome
            .metrics
            .iter()
            .filter(|(name, _)| name.starts_with("secretgate.decisions."))
            .map(|(_, count)| count)
            .sum();
        assert_eq!(counted, 1, "{name}: {:?}", outcome.metrics);
        assert!(
            !outcome.metrics.contains_key("secretgate.audit.lost")
                && !outcome.metrics.contains_key("secretgate.audit.refused"),
            "{name}: {:?}",
            outcome.metrics
        );
    }
}

#[test]
fn no_configuration_is_a_recorded_500() {
    let scenario = scenario(
        "  audit: {mode: rot13}",
        &request(
            "GET",
            "/v1/secret/data/prod/a?token=hvs.QUERY-canary",
            DEV_BOT,
        ),
        "",
    );
    let options = HostOptions {
        serve_unconfigured: true,
        ..HostOptions::default()
    };
    let outcome = run_one(&scenario, &options);
    assert!(outcome.config_rejected.is_some());
    let record = the_record(&outcome);
    assert_eq!(record["reason"], "secretgate is not configured");
    assert_eq!(record["method"], "GET");
    assert_eq!(record["path"], "/v1/secret/data/prod/a?token=redacted");
    let body: Value = serde_json::from_slice(&outcome.client_body).unwrap();
    assert_eq!(body["errors"][0], "secretgate is not configured");
}

#[test]
fn a_record_the_host_refuses_denies_the_request_by_default() {
    let scenario = scenario("", &request("GET", "/v1/secret/data/prod/a", DEV_BOT), "");
    let options = HostOptions {
        failing: HashMap::from([("proxy_set_property".to_owned(), 2)]),
        ..HostOptions::default()
    };
    let outcome = run_one(&scenario, &options);
    assert_eq!(outcome.status, Some(503));
    assert!(
        outcome.forwarded.is_none(),
        "a request that cannot be audited is not forwarded"
    );
    let body: Value = serde_json::from_slice(&outcome.client_body).unwrap();
    assert_eq!(body["errors"], serde_json::json!(["audit unavailable"]));
    assert_eq!(outcome.metrics.get("secretgate.audit.refused"), Some(&1));
    assert_eq!(
        outcome
            .metrics
            .get("secretgate.decisions.audit_unavailable"),
        Some(&1)
    );
    assert!(outcome.filter_state.is_empty());
}

#[test]
fn in_log_mode_a_refused_record_is_counted_as_lost_and_the_request_goes_on() {
    let scenario = scenario(
        "  audit: {on_failure: log}",
        &request("GET", "/v1/secret/data/prod/a", DEV_BOT),
        "",
    );
    let options = HostOptions {
        failing: HashMap::from([("proxy_set_property".to_owned(), 2)]),
        ..HostOptions::default()
    };
    let outcome = run_one(&scenario, &options);
    assert_eq!(outcome.status, Some(200));
    assert!(outcome.forwarded.is_some());
    // Refused before forwarding and again when the response ended.
    assert_eq!(outcome.metrics.get("secretgate.audit.lost"), Some(&2));
    assert_eq!(outcome.metrics.get("secretgate.decisions.allow"), Some(&1));
}

#[test]
fn an_oversized_record_leaves_a_compact_one_and_a_503() {
    // Claims are copied into the record whole; a JWT can carry large ones.
    let request = format!(
        "{{path: /v1/secret/data/prod/a, jwt_claims: {{sub: '{}', repository: '{}'}}}}",
        "s".repeat(600),
        "r".repeat(6000)
    );
    let scenario = scenario_with(
        "{source: jwt, payload_in_metadata: ci_claims}",
        "  audit: {max_record_bytes: 4096}",
        &request,
        "",
    );
    let outcome = run_one(&scenario, &HostOptions::default());
    assert_eq!(outcome.status, Some(503), "{:?}", outcome.logs);
    assert!(outcome.forwarded.is_none());
    let record = the_record(&outcome);
    assert_eq!(record["decision"], "audit_unavailable");
    assert!(record["audit_error"]
        .as_str()
        .unwrap()
        .contains("max_record_bytes"));
    assert_eq!(record["principal"]["id"].as_str().unwrap().len(), 256);
    assert_eq!(record["claims"], serde_json::json!({}));
    assert_eq!(outcome.metrics.get("secretgate.audit.refused"), Some(&1));
}

//! The host itself: it fails loudly, defers local responses as Envoy does,
//! isolates scenarios, and its leak checker can fail.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use host_test::runner::{run, run_all, run_and_check, HostOptions};
use host_test::scenario::{self, Scenario};

/// Scenarios from an inline YAML document, with paths relative to policies/.
fn scenarios(yaml: &str) -> Vec<Scenario> {
    let dir = std::env::temp_dir().join(format!(
        "host-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let policies = host_test::repo_root().join("policies");
    let text = yaml.replace("POLICIES", &policies.display().to_string());
    let file: PathBuf = dir.join("scenario.yaml");
    std::fs::write(&file, text).unwrap();
    scenario::load_file(&file).unwrap_or_else(|e| panic!("{e}"))
}

const HEADER_CONFIG: &str = r#"
config:
  schema: POLICIES/schema.cedarschema
  policies: POLICIES/policies.cedar
  entities: POLICIES/entities.json
  policies_append: |
    @id("dev-bot-reads-prod")
    permit(principal == Workload::"dev-bot", action == Action::"read", resource in Path::"secret/prod");
  mounts: {secret: kv-v2}
  identity: {source: header}
"#;

#[test]
fn every_import_links_and_an_unimplemented_host_call_fails_loudly() {
    let imports = common::filter().imports();
    assert!(imports
        .iter()
        .any(|(m, n)| m == "env" && n == "proxy_send_local_response"));

    let yaml = format!(
        "{HEADER_CONFIG}\nscenarios:\n  - name: read\n    request: {{path: /v1/secret/data/prod/a, headers: {{x-secretgate-principal: dev-bot}}}}\n    expect: {{forwarded: true}}\n"
    );
    let scenario = &scenarios(&yaml)[0];
    assert!(run_and_check(common::filter(), scenario, &HostOptions::default()).passed());

    let options = HostOptions {
        disabled: HashSet::from(["proxy_get_current_time_nanoseconds".to_string()]),
        ..HostOptions::default()
    };
    let report = run_and_check(common::filter(), scenario, &options);
    assert!(!report.passed());
    let failure = report.failures.join("\n");
    assert!(
        failure.contains("unimplemented host function env::proxy_get_current_time_nanoseconds"),
        "{failure}"
    );
}

#[test]
fn a_local_response_is_sent_after_the_callback_returns() {
    let yaml = format!(
        "{HEADER_CONFIG}\nscenarios:\n  - name: denied\n    request: {{path: /v1/secret/data/prod/a, headers: {{x-secretgate-principal: someone}}}}\n    expect: {{status: 403}}\n"
    );
    let outcome = run(
        common::filter(),
        &scenarios(&yaml)[0],
        &HostOptions::default(),
    )
    .unwrap();
    let at = |event: &str| {
        outcome
            .events
            .iter()
            .position(|e| e == event)
            .unwrap_or_else(|| panic!("no event {event:?} in {:#?}", outcome.events))
    };
    let requested = at("send_local_response 403 (deferred)");
    let returned = at("<- proxy_on_request_headers");
    let sent = at("local response 403 sent");
    assert!(
        requested < returned && returned < sent,
        "{:#?}",
        outcome.events
    );
    assert!(outcome.forwarded.is_none());
    assert!(!outcome
        .events
        .iter()
        .any(|e| e.contains("proxy_on_response_headers")));
    // The stream still ends as Envoy ends it.
    assert!(at("-> proxy_on_log") > sent);
    assert!(at("-> proxy_on_delete") > at("-> proxy_on_done"));
}

#[test]
fn parallel_scenarios_do_not_share_state() {
    let mut yaml = format!("{HEADER_CONFIG}\nscenarios:\n");
    for i in 0..24 {
        let (principal, expect) = if i % 2 == 0 {
            ("dev-bot", "{forwarded: true, status: 200}")
        } else {
            ("nobody", "{forwarded: false, status: 403}")
        };
        yaml.push_str(&format!(
            "  - name: s{i}\n    clock: {}\n    request: {{path: /v1/secret/data/prod/s{i}, headers: {{x-secretgate-principal: {principal}, x-vault-token: canary-{i}-end}}}}\n    expect: {expect}\n",
            1_700_000_000 + i
        ));
    }
    let all = scenarios(&yaml);
    let reports = run_all(common::filter(), &all, &HostOptions::default()).unwrap();
    for (i, report) in reports.iter().enumerate() {
        assert!(report.passed(), "{}: {:?}", report.name, report.failures);
        let outcome = report.outcome.as_ref().unwrap();
        let decisions: Vec<_> = outcome
            .logs
            .iter()
            .filter(|l| l.message.starts_with("secretgate decision="))
            .collect();
        assert_eq!(decisions.len(), 1, "{}: {:?}", report.name, outcome.logs);
        assert!(decisions[0]
            .message
            .contains(&format!("Secret::\"secret/prod/s{i}\"")));
        if let Some(forwarded) = &outcome.forwarded {
            let token = forwarded
                .iter()
                .find(|(k, _)| k == "x-vault-token")
                .unwrap();
            assert_eq!(token.1, format!("canary-{i}-end"));
        }
    }
}

#[test]
fn never_contains_catches_a_planted_leak() {
    // The principal is logged with every decision: a "secret" planted there
    // must be reported.
    let yaml = format!(
        "{HEADER_CONFIG}\nscenarios:\n  - name: planted\n    request: {{path: /v1/secret/data/prod/a, headers: {{x-secretgate-principal: hvs.PLANTED}}}}\n    expect: {{status: 403, never_contains: [hvs.PLANTED]}}\n"
    );
    let report = run_and_check(
        common::filter(),
        &scenarios(&yaml)[0],
        &HostOptions::default(),
    );
    assert!(!report.passed());
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("\"hvs.PLANTED\" leaked into log line")),
        "{:?}",
        report.failures
    );
}

#[test]
fn a_wrong_expectation_fails() {
    let yaml = format!(
        "{HEADER_CONFIG}\nscenarios:\n  - name: wrong\n    request: {{path: /v1/secret/data/prod/a, headers: {{x-secretgate-principal: dev-bot}}}}\n    expect: {{forwarded: false, status: 403, decision: deny, path: /v1/elsewhere}}\n"
    );
    let report = run_and_check(
        common::filter(),
        &scenarios(&yaml)[0],
        &HostOptions::default(),
    );
    assert!(report.failures.len() >= 3, "{:?}", report.failures);
}

#[test]
fn jwt_claims_reach_the_filter_typed_as_envoy_encodes_them() {
    let yaml = r#"
config:
  schema: POLICIES/schema.cedarschema
  policies: POLICIES/policies.cedar
  entities: POLICIES/entities.json
  base: POLICIES/config.json
  identity: {source: jwt, payload_in_metadata: ci_claims}
scenarios:
  - name: numbers are doubles
    request:
      path: /v1/secret/data/ci/acme/api/db
      jwt_claims: {sub: "repo:acme/api:ref:refs/heads/main", repository: acme/api, ref_protected: "true", iat: 1700000000, exp: 1700000600, groups: [a, b]}
    expect: {forwarded: true}
  - name: a claim of the wrong type fails closed
    request:
      path: /v1/secret/data/ci/acme/api/db
      jwt_claims: {sub: "repo:acme/api:ref:refs/heads/main", repository: acme/api, ref_protected: "true", iat: yesterday}
    expect: {forwarded: false, status: 401, body: {errors: [invalid client identity]}}
  # Envoy's encoding carries no type tag: a JSON `true` arrives as the byte
  # 0x01, which is a valid one-character String. The schema says String, so
  # the filter reads "\u0001", not "true": the protected-branch forbid holds.
  - name: a boolean where the schema says String is not "true"
    request:
      path: /v1/secret/data/ci/acme/api/db
      jwt_claims: {sub: "repo:acme/api:ref:refs/heads/main", repository: acme/api, ref_protected: true}
    expect: {forwarded: false, status: 403, logs_contain: [ci-protected-branches-only]}
"#;
    for scenario in scenarios(yaml) {
        let report = run_and_check(common::filter(), &scenario, &HostOptions::default());
        assert!(report.passed(), "{}: {:?}", report.name, report.failures);
    }
}

/// `repeat` sends one request many times to one filter instance; shared data
/// outlives each request, so `context.recent_reads` counts across them.
#[test]
fn repeated_requests_share_data_and_trip_a_recent_reads_limit() {
    let schema =
        std::fs::read_to_string(host_test::repo_root().join("policies/schema.cedarschema"))
            .unwrap()
            .replace(
                "  namespace: String,\n};",
                "  namespace: String,\n  recent_reads: Long,\n};",
            );
    assert!(schema.contains("recent_reads"));
    let schema_file = std::env::temp_dir().join(format!(
        "host-test-recent-reads-{}.cedarschema",
        std::process::id()
    ));
    std::fs::write(&schema_file, schema).unwrap();
    let config = format!(
        r#"
config:
  schema: {}
  policies: POLICIES/policies.cedar
  entities: POLICIES/entities.json
  policies_append: |
    @id("dev-bot-reads-prod")
    permit(principal == Workload::"dev-bot", action == Action::"read", resource in Path::"secret/prod");
    @id("no-read-bursts")
    forbid(principal, action == Action::"read", resource) when {{ context.recent_reads > 3 }};
  mounts: {{secret: kv-v2}}
  identity: {{source: header}}
"#,
        schema_file.display()
    );
    let request =
        "request: {path: /v1/secret/data/prod/a, headers: {x-secretgate-principal: dev-bot}}";
    let yaml = format!(
        "{config}\nscenarios:\n  - name: third read\n    repeat: 3\n    {request}\n    expect: {{status: 200, forwarded: true}}\n  - name: fourth read\n    repeat: 4\n    {request}\n    expect: {{status: 403, forwarded: false, audit: {{policies: [no-read-bursts]}}}}\n"
    );
    for scenario in scenarios(&yaml) {
        let report = run_and_check(common::filter(), &scenario, &HostOptions::default());
        assert!(
            report.passed(),
            "{}: {}",
            scenario.name,
            report.failures.join("\n")
        );
    }
}

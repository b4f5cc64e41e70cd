//! The report's off-boarding watch on a log seeded with a known story. The
//! records are the filter's own: requests decided by `Config::decide` and
//! rendered by `audit::render`, first under entities where the contractor is
//! in `Group::"ci"`, then under entities where it is not. Around it, other
//! principals read their own folders all along, and a stranger is refused
//! where it never was allowed. The watch must list exactly the contractor,
//! with its first refusal after the change.

use secretgate::audit::{self, ResponseFacts};
use secretgate::config::Config;
use secretgate::gate::RequestFacts;
use secretgate::report::{report_of_lines, Period};
use serde_json::json;

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const CANARY: &str = "FAKE-report-seeded-canary-value";
/// 2026-12-01T00:00:00Z.
const START_NANOS: u64 = 1_796_083_200_000_000_000;
const MINUTE_NANOS: u64 = 60_000_000_000;

const WORKLOADS: [&str; 4] = ["api", "web", "batch", "contractor"];

fn config(contractor_in_ci: bool) -> Config {
    let mut entities =
        vec![json!({"uid": {"type": "Group", "id": "ci"}, "attrs": {}, "parents": []})];
    for name in WORKLOADS {
        let in_ci = name != "contractor" || contractor_in_ci;
        entities.push(json!({
            "uid": {"type": "Workload", "id": name},
            "attrs": {},
            "parents": if in_ci { vec![json!({"type": "Group", "id": "ci"})] } else { vec![] },
        }));
    }
    entities
        .push(json!({"uid": {"type": "Workload", "id": "stranger"}, "attrs": {}, "parents": []}));
    let config = json!({
        "schema": SCHEMA,
        "policies": r#"@id("ci-reads-shared") permit (principal in Group::"ci", action == Action::"read", resource in Path::"secret/shared");"#,
        "entities": entities,
        "mounts": {"secret": "kv-v2"},
        "identity": {"source": "header", "principal_type": "Workload"},
        "audit": {"mode": "hmac-sha256", "hmac_key": "a-report-test-audit-key"},
    });
    Config::from_json(config.to_string().as_bytes()).expect("configuration loads")
}

fn record(config: &Config, principal: &str, secret: &str, minute: u64) -> String {
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b"x-vault-token", b"hvs.a-token"),
        (b"x-secretgate-principal", principal.as_bytes()),
    ];
    let target = format!("/v1/secret/data/shared/{secret}");
    let verdict = config.decide(&RequestFacts {
        method: "GET",
        target: &target,
        headers: &headers,
        source_address: Some("127.0.0.1:40000"),
        now_nanos: START_NANOS + minute * MINUTE_NANOS,
        jwt_payload: None,
        peer_uri_san: None,
    });
    let allowed = verdict.record.outcome.as_str() == "allow";
    let mut reply = config.audit.capture();
    reply.feed(
        format!(r#"{{"data":{{"data":{{"password":"{CANARY}"}},"metadata":{{"version":1}}}}}}"#)
            .as_bytes(),
    );
    let text = audit::render(
        &config.audit,
        &verdict.record,
        &ResponseFacts {
            status: Some(if allowed { 200 } else { 403 }),
            request_body: None,
            response_body: allowed.then_some(&reply),
        },
    );
    // As Envoy's JSON access log writes it: the record as a string field.
    json!({"start_time": "-", "response_code": 200, "audit": text}).to_string()
}

#[test]
fn the_watch_lists_exactly_the_principal_cut_off_by_the_entities_change() {
    let (before, after) = (config(true), config(false));
    let mut lines = Vec::new();
    for minute in 0..240u64 {
        let config = if minute < 120 { &before } else { &after };
        for (i, name) in WORKLOADS.iter().enumerate() {
            if minute % (i as u64 + 2) == 0 {
                lines.push(record(config, name, "db", minute));
            }
        }
        if minute % 30 == 7 {
            lines.push(record(config, "stranger", "db", minute));
        }
    }
    let report = report_of_lines(lines.iter().map(String::as_str), Period::default());
    let watch: Vec<&str> = report
        .offboarding
        .iter()
        .map(|w| w.principal.as_str())
        .collect();
    assert_eq!(watch, [r#"Workload::"contractor""#]);
    let cut = &report.offboarding[0];
    assert_eq!(cut.first_allowed, "2026-12-01T00:00:00.000Z");
    // The contractor (every 5th minute) is first refused at minute 120.
    assert_eq!(cut.first_refusal, "2026-12-01T02:00:00.000Z");
    assert_eq!(cut.resource, r#"Secret::"secret/shared/db""#);
    assert!(!cut.allowed_again);
    assert_eq!(cut.refusals, 24);
    // The stranger was refused all along and is no off-boarding case, and
    // the report holds no value of any body.
    assert_eq!(report.summary.refusals.policy, 24 + 8);
    let text = serde_json::to_string(&report).expect("serialises");
    assert!(!text.contains(CANARY));
    assert!(!text.contains("hvs.a-token"));
    assert_eq!(
        report.summary.masking.get("hmac-sha256"),
        Some(&(lines.len() as u64))
    );
}

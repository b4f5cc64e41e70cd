//! `secretgate replay`'s core, natively: records the gate writes (through
//! the real audit renderer) are decided again under candidate policies.

use secretgate::audit::{self, ResponseFacts};
use secretgate::bundle::Bundle;
use secretgate::config::Config;
use secretgate::gate::RequestFacts;
use secretgate::pairs;
use secretgate::replay::{record_text, Decision, RecordFields, Replayer, Summary};
use secretgate::verdict::PolicyVerdict;
use serde_json::{json, Value};

fn policies_file(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../policies/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("policy file")
}

fn entities() -> Value {
    serde_json::from_str(&policies_file("entities.json")).unwrap()
}

/// The demo mounts, and the KV mount of namespace `team`.
fn mounts() -> Value {
    let mut mounts =
        serde_json::from_str::<Value>(&policies_file("config.json")).unwrap()["mounts"].clone();
    mounts["team/secret"] = json!({"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]});
    mounts
}

/// The filter configuration the records are written under.
fn live_config(audit: Value) -> Config {
    let config = json!({
        "schema": policies_file("schema.cedarschema"),
        "policies": policies_file("policies.cedar"),
        "entities": entities(),
        "mounts": mounts(),
        "namespaces": ["team"],
        "identity": {"source": "jwt", "payload_in_metadata": "ci_claims"},
        "audit": audit,
    });
    Config::from_json(config.to_string().as_bytes()).expect("live config")
}

/// What replay decides with: the tools' configuration and a policy set.
fn candidate(policies: &str) -> Config {
    let config = json!({
        "mounts": mounts(),
        "namespaces": ["team"],
        "identity": {"source": "jwt", "payload_in_metadata": "ci_claims"},
    });
    let bundle = Bundle {
        schema: Some(policies_file("schema.cedarschema")),
        policies: Some(policies.to_owned()),
        entities: Some(entities()),
        ..Bundle::default()
    };
    Config::for_tools(config.to_string().as_bytes(), bundle).expect("candidate config")
}

struct Job {
    repository: &'static str,
    git_ref: &'static str,
    protected: bool,
    environment: Option<&'static str>,
}

const API_MAIN: Job = Job {
    repository: "acme/api",
    git_ref: "refs/heads/main",
    protected: true,
    environment: None,
};
const API_RELEASE: Job = Job {
    environment: Some("production"),
    ..API_MAIN
};
const API_FEATURE: Job = Job {
    repository: "acme/api",
    git_ref: "refs/heads/feature-x",
    protected: false,
    environment: None,
};
const WEB_MAIN: Job = Job {
    repository: "acme/web",
    git_ref: "refs/heads/main",
    protected: true,
    environment: None,
};
const VENDOR: Job = Job {
    repository: "acme/vendor-sync",
    git_ref: "refs/heads/main",
    protected: true,
    environment: Some("production"),
};

/// Writes the audit record of one request, as the filter would.
fn record(
    config: &Config,
    id: &str,
    job: &Job,
    method: &str,
    target: &str,
    namespace: Option<&str>,
) -> String {
    let sub = format!("repo:{}:ref:{}", job.repository, job.git_ref);
    let protected = if job.protected { "true" } else { "false" };
    let mut claims: Vec<(&[u8], &[u8])> = vec![
        (b"sub", sub.as_bytes()),
        (b"repository", job.repository.as_bytes()),
        (b"ref", job.git_ref.as_bytes()),
        (b"ref_protected", protected.as_bytes()),
    ];
    if let Some(environment) = job.environment {
        claims.push((b"environment", environment.as_bytes()));
    }
    let payload = pairs::encode(&claims);
    let mut headers: Vec<(&[u8], &[u8])> = vec![
        (b"x-request-id", id.as_bytes()),
        (b"x-vault-token", b"hvs.replay-test-token"),
    ];
    if let Some(namespace) = namespace {
        headers.push((b"x-vault-namespace", namespace.as_bytes()));
    }
    let verdict = config.decide(&RequestFacts {
        method,
        target,
        headers: &headers,
        source_address: Some("127.0.0.1:40000"),
        now_nanos: 1_764_650_000_123_000_000,
        jwt_payload: Some(&payload),
        peer_uri_san: None,
    });
    audit::render(&config.audit, &verdict.record, &ResponseFacts::default())
}

/// A day of CI traffic under the live policies, one record per line.
fn traffic(config: &Config) -> Vec<String> {
    vec![
        record(
            config,
            "api-reads-own",
            &API_MAIN,
            "GET",
            "/v1/secret/data/ci/acme/api/db",
            None,
        ),
        record(
            config,
            "api-lists-own",
            &API_MAIN,
            "LIST",
            "/v1/secret/metadata/ci/acme/api",
            None,
        ),
        record(
            config,
            "api-reads-web",
            &API_MAIN,
            "GET",
            "/v1/secret/data/ci/acme/web/db",
            None,
        ),
        record(
            config,
            "feature-reads-own",
            &API_FEATURE,
            "GET",
            "/v1/secret/data/ci/acme/api/db",
            None,
        ),
        record(
            config,
            "web-reads-own",
            &WEB_MAIN,
            "GET",
            "/v1/secret/data/ci/acme/web/db?version=2",
            None,
        ),
        record(
            config,
            "web-reads-kv",
            &WEB_MAIN,
            "GET",
            "/v1/kv/ci/acme/web/token",
            None,
        ),
        record(
            config,
            "release-reads-prod",
            &API_RELEASE,
            "GET",
            "/v1/secret/data/prod/payments",
            None,
        ),
        record(
            config,
            "api-reads-prod-no-env",
            &API_MAIN,
            "GET",
            "/v1/secret/data/prod/payments",
            None,
        ),
        record(
            config,
            "vendor-reads-prod",
            &VENDOR,
            "GET",
            "/v1/secret/data/prod/payments",
            None,
        ),
        record(
            config,
            "api-reads-own-dotdot",
            &API_MAIN,
            "GET",
            "/v1/secret/data/ci/acme/web/../api/db",
            None,
        ),
        record(
            config,
            "api-mounts",
            &API_MAIN,
            "GET",
            "/v1/sys/internal/ui/mounts/secret",
            None,
        ),
        record(
            config,
            "api-in-team",
            &API_MAIN,
            "GET",
            "/v1/secret/data/ci/acme/api/db",
            Some("team"),
        ),
        record(
            config,
            "api-nowhere",
            &API_MAIN,
            "GET",
            "/v1/nowhere/x",
            None,
        ),
    ]
}

fn replay_lines(candidate: &Config, lines: &[String]) -> Summary {
    let replayer = Replayer::new(candidate).expect("replayer");
    let mut summary = Summary::default();
    for line in lines {
        summary.add_line(&replayer, line);
    }
    summary
}

fn changed_ids(summary: &Summary) -> Vec<&str> {
    let mut ids: Vec<&str> = summary
        .changes
        .iter()
        .map(|c| c.request_id.as_str())
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn the_same_policies_reproduce_every_recorded_decision() {
    let live = live_config(json!({}));
    let lines = traffic(&live);
    let summary = replay_lines(&candidate(&policies_file("policies.cedar")), &lines);
    assert_eq!(summary.records, 13);
    assert_eq!(summary.changes, vec![], "{}", summary.to_text());
    // Only the request under no mount was refused before evaluation.
    assert_eq!(summary.replayed, 12, "{}", summary.to_text());
    assert_eq!(summary.not_replayable_count(), 1);
    assert!(summary
        .not_replayable
        .keys()
        .all(|reason| reason.contains("before policy evaluation (bad_request)")));
    // The mix covers every verdict the demo set gives.
    let verdicts: Vec<&str> = lines
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|r| r["decision"].as_str().unwrap().to_owned())
        .map(|d| {
            if d == "allow" {
                "allow"
            } else if d == "deny" {
                "deny"
            } else {
                "other"
            }
        })
        .collect();
    assert!(verdicts.contains(&"allow") && verdicts.contains(&"deny"));
}

#[test]
fn a_tightened_policy_changes_exactly_the_records_it_should() {
    let live = live_config(json!({}));
    let lines = traffic(&live);
    let tightened = format!(
        "{}\n@id(\"freeze-acme-api\")\nforbid (principal, action, resource in Path::\"secret/ci/acme/api\");\n",
        policies_file("policies.cedar")
    );
    let summary = replay_lines(&candidate(&tightened), &lines);
    assert_eq!(
        changed_ids(&summary),
        // Not api-in-team: namespace team's secret is another resource.
        ["api-lists-own", "api-reads-own", "api-reads-own-dotdot"],
        "{}",
        summary.to_text()
    );
    for change in &summary.changes {
        assert_eq!((change.before, change.after), ("allow", "deny"));
        assert_eq!(change.after_policies, ["freeze-acme-api"]);
    }
    // feature-reads-own was denied already, by another forbid: unchanged,
    // though now two forbids determine it.
    assert_eq!(summary.policies_changed, 1, "{}", summary.to_text());
    // One group: same decisions, same policies before and after.
    assert_eq!(summary.groups.len(), 1);
    assert_eq!(summary.groups.values().next().unwrap().count, 3);
}

#[test]
fn a_loosened_policy_changes_exactly_the_others() {
    let live = live_config(json!({}));
    let lines = traffic(&live);
    let loosened = format!(
        "{}\n@id(\"api-reads-web\")\npermit (principal == Workload::\"repo:acme/api:ref:refs/heads/main\", action == Action::\"read\", resource in Path::\"secret/ci/acme/web\");\n",
        policies_file("policies.cedar")
    );
    let summary = replay_lines(&candidate(&loosened), &lines);
    assert_eq!(
        changed_ids(&summary),
        ["api-reads-web"],
        "{}",
        summary.to_text()
    );
    let change = &summary.changes[0];
    assert_eq!((change.before, change.after), ("deny", "allow"));
    assert_eq!(change.before_policies, Vec::<String>::new());
    assert_eq!(change.after_policies, ["api-reads-web"]);
    assert_eq!(
        change.principal,
        "Workload::\"repo:acme/api:ref:refs/heads/main\""
    );
    assert_eq!(change.resource, "Secret::\"secret/ci/acme/web/db\"");
}

#[test]
fn records_under_a_rotated_hmac_key_replay_alike() {
    let first =
        live_config(json!({"mode": "hmac-sha256", "hmac_key": "first-key-0123456789abcdef"}));
    let second =
        live_config(json!({"mode": "hmac-sha256", "hmac_key": "second-key-0123456789abcdef"}));
    let (a, b) = (traffic(&first), traffic(&second));
    assert_ne!(a, b, "the keys differ, so the token HMACs do");
    let mut lines = a;
    lines.extend(b);
    let summary = replay_lines(&candidate(&policies_file("policies.cedar")), &lines);
    assert_eq!(summary.records, 26);
    assert_eq!(summary.replayed, 24);
    assert_eq!(summary.changes, vec![]);
}

#[test]
fn log_lines_of_every_shipped_shape_are_read_and_others_skipped() {
    let live = live_config(json!({}));
    let record = traffic(&live).remove(0);
    let as_string = json!({"time": "x", "audit": record}).to_string();
    let as_object = json!({"audit": serde_json::from_str::<Value>(&record).unwrap()}).to_string();
    let lines = vec![
        record.clone(),
        as_string,
        as_object,
        "not json".to_owned(),
        "{\"audit\": \"-\"}".to_owned(),
        "{\"path\": \"/v1/x\"}".to_owned(),
        record[..record.len() / 2].to_owned(),
        String::new(),
    ];
    let summary = replay_lines(&candidate(&policies_file("policies.cedar")), &lines);
    assert_eq!((summary.records, summary.lines_skipped), (3, 5));
    assert_eq!((summary.replayed, summary.changes.len()), (3, 0));
}

#[test]
fn a_record_lacking_an_input_the_candidate_reads_is_not_guessed() {
    let live = live_config(json!({}));
    let mut record: Value = serde_json::from_str(&traffic(&live)[0]).unwrap();
    // A compact record keeps no claims.
    record["inputs"]["claims"] = json!({});
    let line = record.to_string();
    let summary = replay_lines(
        &candidate(&policies_file("policies.cedar")),
        std::slice::from_ref(&line),
    );
    assert_eq!(summary.replayed, 0);
    let reasons: Vec<&String> = summary.not_replayable.keys().collect();
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("is read by the candidate policies but not recorded"),
        "{reasons:?}"
    );

    // Policies that read no claim replay it all the same.
    let claimless = "@id(\"all-ci\")\npermit (principal in Group::\"ci\", action, resource in Path::\"secret/ci\");";
    let summary = replay_lines(&candidate(claimless), &[line]);
    assert_eq!(summary.replayed, 1, "{}", summary.to_text());
    assert_eq!(summary.changes, vec![]);

    // No inputs at all (a record from before they were written).
    record.as_object_mut().unwrap().remove("inputs");
    let summary = replay_lines(&candidate(claimless), &[record.to_string()]);
    assert_eq!(summary.not_replayable_count(), 1);

    // A path cut at 2 KiB cannot be classified again.
    let long = format!("/v1/secret/data/ci/acme/api/{}", "a".repeat(3000));
    let cut = traffic_one(&live, &long);
    let summary = replay_lines(&candidate(claimless), &[cut]);
    assert_eq!(
        summary.not_replayable.keys().next().map(String::as_str),
        Some("the path was cut in the record")
    );
}

fn traffic_one(config: &Config, target: &str) -> String {
    record(config, "long", &API_MAIN, "GET", target, None)
}

#[test]
fn a_changed_mount_table_is_a_changed_decision() {
    let live = live_config(json!({}));
    let lines = vec![traffic(&live).remove(0)];
    let config = json!({"mounts": {"kv": "kv-v1"}, "namespaces": ["team"]});
    let bundle = Bundle {
        schema: Some(policies_file("schema.cedarschema")),
        policies: Some(policies_file("policies.cedar")),
        entities: Some(entities()),
        ..Bundle::default()
    };
    let candidate = Config::for_tools(config.to_string().as_bytes(), bundle).unwrap();
    let summary = replay_lines(&candidate, &lines);
    assert_eq!(summary.changes.len(), 1);
    assert_eq!(summary.changes[0].after, "bad_request");
    let replayer = Replayer::new(&candidate).unwrap();
    let text = record_text(&lines[0]).unwrap();
    let replayed = replayer
        .replay(&RecordFields::parse(&text).unwrap())
        .unwrap();
    assert_eq!(replayed.before, Decision::Policy(PolicyVerdict::Allow));
}

//! The shadow policy set and the decision inputs in the record, natively:
//! a shadow is evaluated next to the live set and never changes an
//! outcome; the record says what it decided, or why there is none.

use secretgate::audit::{self, ResponseFacts};
use secretgate::bundle::{self, Bundle};
use secretgate::config::{Config, ShadowPolicies};
use secretgate::gate::{RequestFacts, Verdict, VerdictAction};
use secretgate::pairs;
use secretgate::record::{Outcome, ShadowOutcome};
use secretgate::verdict::PolicyVerdict;
use serde_json::{json, Value};

fn policies_file(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../policies/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("policy file")
}

fn demo_config(extra: Value) -> Value {
    let mut config = json!({
        "schema": policies_file("schema.cedarschema"),
        "policies": policies_file("policies.cedar"),
        "entities": serde_json::from_str::<Value>(&policies_file("entities.json")).unwrap(),
        "mounts": serde_json::from_str::<Value>(&policies_file("config.json")).unwrap()["mounts"],
        "identity": {"source": "jwt", "payload_in_metadata": "ci_claims"},
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    config
}

fn shadowed() -> Config {
    let config = demo_config(json!({
        "shadow": {"cluster": "shadow", "authority": "shadow.local", "refresh_s": 5},
    }));
    Config::from_json(config.to_string().as_bytes()).expect("config with a shadow loads")
}

/// The demo set plus a forbid on every CI secret: stricter than live.
fn stricter_bundle() -> Bundle {
    let policies = format!(
        "{}\n@id(\"shadow-freezes-ci\")\nforbid (principal, action, resource in Path::\"secret/ci\");\n",
        policies_file("policies.cedar")
    );
    let text = json!({"policies": policies, "revision": "stricter"});
    bundle::parse(text.to_string().as_bytes()).unwrap()
}

fn claims(repository: &str) -> Vec<u8> {
    let sub = format!("repo:{repository}:ref:refs/heads/main");
    pairs::encode(&[
        (b"sub", sub.as_bytes()),
        (b"repository", repository.as_bytes()),
        (b"ref", b"refs/heads/main"),
        (b"ref_protected", b"true"),
        // Not declared by the live schema: the live set never sees it.
        (b"job_workflow_sha", b"0123abcd"),
    ])
}

fn decide(config: &Config, target: &str, namespace: Option<&str>) -> Verdict {
    let payload = claims("acme/api");
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"x-request-id", b"req-7")];
    if let Some(namespace) = namespace {
        headers.push((b"x-vault-namespace", namespace.as_bytes()));
    }
    config.decide(&RequestFacts {
        method: "GET",
        target,
        headers: &headers,
        source_address: Some("10.1.2.3:40000"),
        now_nanos: 1_700_000_100_000_000_000,
        jwt_payload: Some(&payload),
        peer_uri_san: None,
    })
}

fn rendered(verdict: &Verdict) -> Value {
    let text = audit::render(
        &Config::from_json(demo_config(json!({})).to_string().as_bytes())
            .unwrap()
            .audit,
        &verdict.record,
        &ResponseFacts::default(),
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_stricter_shadow_never_changes_the_outcome_and_the_record_shows_it() {
    let config = shadowed().with_shadow(stricter_bundle()).unwrap();
    let verdict = decide(&config, "/v1/secret/data/ci/acme/api/db", None);
    assert!(
        matches!(verdict.action, VerdictAction::Forward(_)),
        "the live set allows: {}",
        verdict.record.log_line()
    );
    assert_eq!(verdict.record.outcome, Outcome::Allowed);
    assert_eq!(
        verdict.record.shadow,
        Some(ShadowOutcome::Evaluated {
            verdict: PolicyVerdict::Deny,
            agrees: false,
            policies: vec!["shadow-freezes-ci".into()],
            errors: vec![],
        })
    );
    let record = rendered(&verdict);
    assert_eq!(
        record["shadow"],
        json!({"decision": "deny", "agrees": false, "policies": ["shadow-freezes-ci"]})
    );
    assert_eq!(record["decision"], "allow");

    // Where both deny, they agree.
    let verdict = decide(&config, "/v1/secret/data/ci/acme/web/db", None);
    assert_eq!(verdict.record.outcome, Outcome::DeniedByPolicy);
    assert!(matches!(
        verdict.record.shadow,
        Some(ShadowOutcome::Evaluated {
            verdict: PolicyVerdict::Deny,
            agrees: true,
            ..
        })
    ));
}

#[test]
fn a_shadow_that_never_loaded_is_reported_absent_and_serving_goes_on() {
    let config = shadowed();
    assert!(matches!(config.shadow_policies, ShadowPolicies::Absent(_)));
    let verdict = decide(&config, "/v1/secret/data/ci/acme/api/db", None);
    assert_eq!(verdict.record.outcome, Outcome::Allowed);
    assert_eq!(
        rendered(&verdict)["shadow"],
        json!({"absent": "no shadow bundle has loaded yet"})
    );

    let failed = config
        .with_shadow_failure("shadow bundle not loaded: not a bundle")
        .expect("the reason changes");
    let verdict = decide(&failed, "/v1/secret/data/ci/acme/api/db", None);
    assert_eq!(verdict.record.outcome, Outcome::Allowed);
    assert_eq!(
        verdict.record.shadow,
        Some(ShadowOutcome::Absent(
            "shadow bundle not loaded: not a bundle".into()
        ))
    );
}

#[test]
fn a_loaded_shadow_survives_a_failed_refresh_and_a_live_bundle_swap() {
    let loaded = shadowed().with_shadow(stricter_bundle()).unwrap();
    assert!(loaded.with_shadow_failure("fetch failed").is_none());
    let live = json!({"policies": policies_file("policies.cedar")});
    let swapped = loaded
        .with_bundle(bundle::parse(live.to_string().as_bytes()).unwrap())
        .unwrap();
    assert!(matches!(swapped.shadow_policies, ShadowPolicies::Loaded(_)));
}

#[test]
fn an_invalid_shadow_bundle_is_refused_whole() {
    let broken = bundle::parse(
        br#"{"policies": "permit (principal, action, resource) when { context.nope };"}"#,
    )
    .unwrap();
    let error = shadowed().with_shadow(broken).unwrap_err().to_string();
    assert!(error.contains("policies"), "{error}");
}

#[test]
fn without_a_shadow_the_record_has_no_shadow_field() {
    let config = Config::from_json(demo_config(json!({})).to_string().as_bytes()).unwrap();
    let verdict = decide(&config, "/v1/secret/data/ci/acme/api/db", None);
    assert_eq!(verdict.record.shadow, None);
    assert!(rendered(&verdict).get("shadow").is_none());
}

#[test]
fn shadow_keys_are_validated_as_bundle_keys_are() {
    let bad = demo_config(json!({"shadow": {"cluster": "s", "authority": "s", "refresh_s": 0}}));
    let error = Config::from_json(bad.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("shadow: refresh_s"), "{error}");
    let unknown = demo_config(json!({"shadow": {"cluster": "s", "authority": "s", "nope": 1}}));
    assert!(Config::from_json(unknown.to_string().as_bytes()).is_err());
}

#[test]
fn the_record_carries_what_the_decision_read() {
    let config = Config::from_json(
        demo_config(
            json!({"namespaces": ["team"], "mounts": {"secret": "kv-v2", "team/secret": "kv-v2"}}),
        )
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let verdict = decide(&config, "/v1/secret/data/ci/acme/api/db", Some("team"));
    let inputs = verdict.record.inputs.as_ref().expect("evaluated");
    assert_eq!(inputs.source_ip, "10.1.2.3");
    assert_eq!(inputs.namespace_header.as_deref(), Some("team"));
    assert_eq!(inputs.claims["repository"], "acme/api");
    // Declared but not carried: null, so a replay knows it was absent.
    assert_eq!(inputs.claims["environment"], Value::Null);
    let record = rendered(&verdict);
    assert_eq!(record["namespace"], "team");
    assert_eq!(record["inputs"]["source_ip"], "10.1.2.3");
    assert_eq!(record["inputs"]["claims"]["ref_protected"], "true");
    assert!(record["inputs"]["claims"]
        .as_object()
        .unwrap()
        .contains_key("environment"));

    // A request refused before evaluation has no inputs: nothing was read.
    let refused = decide(&config, "/v1/nowhere/x", None);
    assert_eq!(refused.record.inputs, None);
    assert!(rendered(&refused).get("inputs").is_none());
}

#[test]
fn a_shadow_reads_claims_through_its_own_schema_as_it_would_once_promoted() {
    // The candidate declares a claim the live schema does not, and forbids
    // CI reads without it: the token carries it, so once promoted the read
    // is allowed, and the shadow must say so.
    let schema = policies_file("schema.cedarschema").replace(
        "  sha?: String,",
        "  sha?: String,\n  job_workflow_sha?: String,",
    );
    let policies = format!(
        "{}\n@id(\"ci-pins-its-workflow\")\nforbid (principal, action, resource in Path::\"secret/ci\")\nunless {{ context.claims has job_workflow_sha }};\n",
        policies_file("policies.cedar")
    );
    let candidate = Bundle {
        schema: Some(schema),
        policies: Some(policies),
        ..Bundle::default()
    };
    let config = shadowed().with_shadow(candidate).unwrap();
    let verdict = decide(&config, "/v1/secret/data/ci/acme/api/db", None);
    assert_eq!(verdict.record.outcome, Outcome::Allowed);
    assert_eq!(
        verdict.record.shadow,
        Some(ShadowOutcome::Evaluated {
            verdict: PolicyVerdict::Allow,
            agrees: true,
            policies: vec!["ci-reads-own-repository".into()],
            errors: vec![],
        })
    );
    // The live record's inputs are the live schema's claims.
    let inputs = verdict.record.inputs.as_ref().unwrap();
    assert!(!inputs.claims.contains_key("job_workflow_sha"));
}

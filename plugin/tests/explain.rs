//! `secretgate explain`'s core: which policies' scopes match a request, how
//! each fared, and that the decision it explains is the filter's own.

use std::net::IpAddr;

use secretgate::classify::{ResourceKind, ResourceRef};
use secretgate::config::Config;
use secretgate::explain::{
    explain, ExplainRequest, Explanation, MatchedPolicy, PolicyOutcome, RecentReads,
};
use secretgate::gate::{RequestFacts, VerdictAction};
use secretgate::verdict::PolicyVerdict;
use serde_json::{json, Map, Value};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

const POLICIES: &str = r#"
@id("ci-reads-own-repository")
permit (principal in Group::"ci", action in [Action::"read", Action::"list"], resource in Path::"secret/ci")
when { resource has repository && context.claims has repository
       && resource.repository == context.claims.repository };

@id("ops-reads-production")
permit (principal in Group::"ops", action == Action::"read", resource in Path::"secret/prod")
when { context.claims has environment && context.claims.environment == "production" };

@id("contractors-never-production")
forbid (principal in Group::"contractors", action, resource in Path::"secret/prod");

@id("anyone-writes-scratch")
permit (principal, action == Action::"write", resource in Path::"secret/scratch");

@id("anyone-reads-kv")
permit (principal, action == Action::"read", resource in Path::"kv");

@id("overflow")
forbid (principal == Workload::"boom", action, resource)
when { context.now * 9223372036854775807 > 1 };

@id("anyone-health")
permit (principal, action == Action::"sys", resource == Endpoint::"sys/health");
"#;

fn entities() -> Value {
    let workload = |id: &str, groups: &[&str]| {
        let parents: Vec<Value> = groups
            .iter()
            .map(|g| json!({"type": "Group", "id": g}))
            .collect();
        json!({"uid": {"type": "Workload", "id": id}, "attrs": {}, "parents": parents})
    };
    json!([
        {"uid": {"type": "Group", "id": "ci"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Group", "id": "ops"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Group", "id": "contractors"}, "attrs": {}, "parents": []},
        workload("job", &["ci"]),
        workload("op", &["ops"]),
        workload("vendor", &["ops", "contractors"]),
        workload("boom", &[]),
    ])
}

fn config_with(schema: &str, policies: &str, anonymous: bool) -> Config {
    let config = json!({
        "schema": schema,
        "policies": policies,
        "entities": entities(),
        "mounts": {
            "secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]},
            "kv": "kv-v1",
        },
        "identity": {"source": "header", "anonymous": anonymous},
    });
    Config::from_json(config.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn config() -> Config {
    config_with(SCHEMA, POLICIES, false)
}

fn request<'a>(
    method: &'a str,
    target: &'a str,
    principal: Option<&'a str>,
    claims: Option<&'a Map<String, Value>>,
) -> ExplainRequest<'a> {
    ExplainRequest {
        method,
        target,
        namespace: None,
        principal,
        claims,
        source_ip: IpAddr::from([10, 1, 2, 3]),
        now_secs: 1_700_000_000,
        recent_reads: None,
    }
}

fn claims(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn explained(config: &Config, request: &ExplainRequest<'_>) -> Explanation {
    explain(config, request).unwrap_or_else(|e| panic!("{e}"))
}

/// The matched policies as (id, outcome).
fn outcomes(explanation: &Explanation) -> Vec<(String, PolicyOutcome)> {
    let evaluated = explanation.evaluated.as_ref().expect("evaluated");
    evaluated
        .policies
        .iter()
        .map(|MatchedPolicy { id, outcome, .. }| (id.clone(), outcome.clone()))
        .collect()
}

fn verdict_and_determining(explanation: &Explanation) -> (PolicyVerdict, Vec<String>) {
    let evaluated = explanation.evaluated.as_ref().expect("evaluated");
    (evaluated.verdict, evaluated.determining.clone())
}

#[test]
fn a_scope_matching_permit_whose_condition_is_false_is_reported() {
    let config = config();
    let wrong_repository = claims(json!({"repository": "acme/web"}));
    let explanation = explained(
        &config,
        &request(
            "GET",
            "/v1/secret/data/ci/acme/api/db",
            Some("job"),
            Some(&wrong_repository),
        ),
    );
    assert_eq!(
        verdict_and_determining(&explanation),
        (PolicyVerdict::Deny, vec![])
    );
    // Only the permit whose scope matches is listed: not the write, kv,
    // production, health or `boom` policies.
    assert_eq!(
        outcomes(&explanation),
        [(
            "ci-reads-own-repository".to_owned(),
            PolicyOutcome::ConditionFalse
        )]
    );
    let text = explanation.to_text();
    assert!(
        text.contains("  ci-reads-own-repository (permit): condition was false\n"),
        "{text}"
    );
    assert!(
        text.contains("determining policies: none (no permit applies"),
        "{text}"
    );

    // The same request with the right claim: the permit determines.
    let right_repository = claims(json!({"repository": "acme/api"}));
    let explanation = explained(
        &config,
        &request(
            "GET",
            "/v1/secret/data/ci/acme/api/db",
            Some("job"),
            Some(&right_repository),
        ),
    );
    assert_eq!(
        verdict_and_determining(&explanation),
        (
            PolicyVerdict::Allow,
            vec!["ci-reads-own-repository".to_owned()]
        )
    );
    assert_eq!(
        outcomes(&explanation),
        [(
            "ci-reads-own-repository".to_owned(),
            PolicyOutcome::Determining
        )]
    );
}

#[test]
fn a_forbid_that_applies_is_the_determining_policy() {
    let config = config();
    let production = claims(json!({"environment": "production"}));
    let explanation = explained(
        &config,
        &request(
            "GET",
            "/v1/secret/data/prod/db",
            Some("vendor"),
            Some(&production),
        ),
    );
    assert_eq!(
        verdict_and_determining(&explanation),
        (
            PolicyVerdict::Deny,
            vec!["contractors-never-production".to_owned()]
        )
    );
    // The permit's condition held: it is overruled, not false.
    assert_eq!(
        outcomes(&explanation),
        [
            ("ops-reads-production".to_owned(), PolicyOutcome::Overruled),
            (
                "contractors-never-production".to_owned(),
                PolicyOutcome::Determining
            ),
        ]
    );
    let text = explanation.to_text();
    assert!(
        text.contains("determining policies: contractors-never-production\n"),
        "{text}"
    );
    assert!(
        text.contains("  contractors-never-production (forbid): applies (determining)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  ops-reads-production (permit): condition was true, but a forbid applies\n"
        ),
        "{text}"
    );

    // Without the claim, the permit's condition is false; the forbid still
    // decides. For someone outside `contractors` the forbid's scope does
    // not match, so it is not listed.
    let explanation = explained(
        &config,
        &request("GET", "/v1/secret/data/prod/db", Some("op"), None),
    );
    assert_eq!(
        outcomes(&explanation),
        [(
            "ops-reads-production".to_owned(),
            PolicyOutcome::ConditionFalse
        )]
    );
}

#[test]
fn policies_whose_scope_does_not_match_are_not_listed() {
    let config = config();
    // A write under secret/scratch: only the write permit's scope matches.
    let explanation = explained(
        &config,
        &request("POST", "/v1/secret/data/scratch/x", Some("vendor"), None),
    );
    assert_eq!(
        outcomes(&explanation),
        [(
            "anyone-writes-scratch".to_owned(),
            PolicyOutcome::Determining
        )]
    );
    // Nothing matches a read of an unrelated secret: none is listed.
    let explanation = explained(
        &config,
        &request("GET", "/v1/secret/data/elsewhere/x", Some("job"), None),
    );
    assert_eq!(outcomes(&explanation), []);
    assert!(explanation
        .to_text()
        .contains("policies whose scope matches: none\n"));
}

#[test]
fn template_attributes_and_classification_appear() {
    let config = config();
    let explanation = explained(
        &config,
        &request("GET", "/v1/secret/data/ci/acme/api/db", Some("job"), None),
    );
    let classification = explanation.classification.as_ref().expect("classified");
    assert_eq!(classification.mount, "secret");
    assert_eq!(
        classification.resource,
        ResourceRef {
            kind: ResourceKind::Secret,
            id: "secret/ci/acme/api/db".into()
        }
    );
    let evaluated = explanation.evaluated.as_ref().expect("evaluated");
    let captured: Vec<(&str, &str)> = evaluated
        .captures
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_str()))
        .collect();
    assert_eq!(captured, [("repository", "acme/api")]);
    // The secret and the folders that hold the whole capture carry it;
    // `secret/ci/acme` holds other repositories too.
    let carriers: Vec<String> = evaluated
        .attributed
        .iter()
        .map(|(entity, _)| entity.to_string())
        .collect();
    assert_eq!(
        carriers,
        [
            r#"Secret::"secret/ci/acme/api/db""#,
            r#"Path::"secret/ci/acme/api/db""#,
            r#"Path::"secret/ci/acme/api""#,
        ]
    );
    let text = explanation.to_text();
    for line in [
        "mount: secret (kv-v2)\n",
        "action: read\n",
        "resource: Secret::\"secret/ci/acme/api/db\"\n",
        "parents: Path::\"secret/ci/acme/api/db\", Path::\"secret/ci/acme/api\", Path::\"secret/ci/acme\", Path::\"secret/ci\", Path::\"secret\"\n",
        "  repository = \"acme/api\" (on Secret::\"secret/ci/acme/api/db\", Path::\"secret/ci/acme/api/db\", Path::\"secret/ci/acme/api\")\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    let json = explanation.to_json();
    assert_eq!(
        json["template_attributes"][0]["value"],
        json!("acme/api"),
        "{json}"
    );
    assert_eq!(json["classification"]["mount_type"], json!("kv-v2"));
}

#[test]
fn an_erroring_condition_is_reported_with_its_error() {
    let config = config();
    let explanation = explained(&config, &request("GET", "/v1/kv/x", Some("boom"), None));
    let evaluated = explanation.evaluated.as_ref().expect("evaluated");
    assert_eq!(evaluated.verdict, PolicyVerdict::Error);
    assert!(!evaluated.errors.is_empty());
    let outcomes = outcomes(&explanation);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(
        outcomes[0],
        ("anyone-reads-kv".to_owned(), PolicyOutcome::Determining)
    );
    match &outcomes[1] {
        (id, PolicyOutcome::ConditionError(errors)) if id == "overflow" => {
            assert!(errors.iter().any(|e| e.contains("overflow")), "{errors:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(explanation
        .to_text()
        .contains("  overflow (forbid): evaluating its condition failed: "));
}

#[test]
fn the_context_is_the_one_the_filter_builds() {
    let config = config();
    let given = claims(json!({"repository": "acme/api", "undeclared": "x", "environment": null}));
    let mut explained_request = request("GET", "/v1/kv/x", Some("job"), Some(&given));
    explained_request.namespace = None;
    let explanation = explained(&config, &explained_request);
    let evaluated = explanation.evaluated.as_ref().expect("evaluated");
    assert_eq!(
        evaluated.context,
        Ok(json!({
            "method": "GET",
            "claims": {"repository": "acme/api"},
            "source_ip": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}},
            "now": 1_700_000_000,
            "namespace": "",
        }))
    );
    assert_eq!(evaluated.recent_reads, RecentReads::NotDeclared);
    assert_eq!(explanation.dropped_claims, ["undeclared"]);

    // A schema that declares recent_reads gets it, 0 unless given.
    let schema = SCHEMA.replacen(
        "  namespace: String,\n};",
        "  namespace: String,\n  recent_reads: Long,\n};",
        1,
    );
    assert_ne!(schema, SCHEMA);
    let config = config_with(&schema, POLICIES, false);
    let mut with_reads = request("GET", "/v1/kv/x", Some("job"), None);
    let context = |request: &ExplainRequest<'_>| {
        let explanation = explained(&config, request);
        let evaluated = explanation.evaluated.expect("evaluated");
        (evaluated.context, evaluated.recent_reads)
    };
    let (default_context, default_reads) = context(&with_reads);
    assert_eq!(
        default_context.ok().map(|c| c["recent_reads"].clone()),
        Some(json!(0))
    );
    assert_eq!(
        default_reads,
        RecentReads::Given {
            value: 0,
            window_s: 60
        }
    );
    with_reads.recent_reads = Some(7);
    let (given_context, _) = context(&with_reads);
    assert_eq!(
        given_context.ok().map(|c| c["recent_reads"].clone()),
        Some(json!(7))
    );

    // Without the declaration, --recent-reads is refused rather than ignored.
    let refused = explain(&self::config(), &with_reads);
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn a_caller_without_identity_is_explained_as_the_filter_treats_it() {
    // Refused outright unless the configuration admits it.
    let refused = explain(&config(), &request("GET", "/v1/sys/health", None, None));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("identity.anonymous")),
        "{refused:?}"
    );

    let policies = format!(
        "{POLICIES}\n@id(\"anonymous-health\") permit (principal == Unauthenticated::\"anonymous\", action == Action::\"sys\", resource == Endpoint::\"sys/health\");"
    );
    let config = config_with(SCHEMA, &policies, true);
    let explanation = explained(&config, &request("GET", "/v1/sys/health", None, None));
    assert!(explanation.principal.is_anonymous());
    assert_eq!(
        verdict_and_determining(&explanation),
        (PolicyVerdict::Allow, vec!["anonymous-health".to_owned()])
    );
    // `anyone-health`'s scope matches, but a permit for any principal never
    // admits a caller without identity: the filter does not evaluate it.
    assert_eq!(
        outcomes(&explanation),
        [
            ("anyone-health".to_owned(), PolicyOutcome::NotForAnonymous),
            ("anonymous-health".to_owned(), PolicyOutcome::Determining),
        ]
    );
    // `read` does not accept Unauthenticated: denied, nothing evaluated.
    let explanation = explained(&config, &request("GET", "/v1/kv/x", None, None));
    let evaluated = explanation.evaluated.as_ref().expect("evaluated");
    assert!(evaluated.anonymous_refused);
    assert_eq!(evaluated.verdict, PolicyVerdict::Deny);
    assert!(evaluated.policies.is_empty());
}

#[test]
fn a_request_the_classifier_refuses_is_not_evaluated() {
    let explanation = explained(
        &config(),
        &request("GET", "/v1/nomount/x", Some("job"), None),
    );
    assert!(explanation.classification.is_err());
    assert_eq!(explanation.verdict(), None);
    assert!(explanation
        .to_text()
        .contains("classification: refused, 400 path is under no configured mount"));
}

/// Explain's decision is the filter's: the gate, given the same request
/// (a header identity, so no claims), forwards exactly when explain says
/// allow, with the same determining policies and errors.
#[test]
fn explain_decides_as_the_filter_decides() {
    let config = config();
    let cases = [
        ("GET", "/v1/secret/data/ci/acme/api/db", "job"),
        ("GET", "/v1/secret/data/prod/db", "vendor"),
        ("GET", "/v1/secret/data/prod/db", "op"),
        ("POST", "/v1/secret/data/scratch/x", "job"),
        ("DELETE", "/v1/secret/data/scratch/x", "job"),
        ("GET", "/v1/kv/x", "boom"),
        ("GET", "/v1/kv/x", "job"),
        ("GET", "/v1/sys/health", "nobody"),
    ];
    let mut allowed = 0;
    for (method, target, principal) in cases {
        let explanation = explained(&config, &request(method, target, Some(principal), None));
        let evaluated = explanation.evaluated.as_ref().expect("evaluated");
        let headers: [(&[u8], &[u8]); 1] =
            [(b"x-secretgate-principal".as_slice(), principal.as_bytes())];
        let verdict = config.decide(&RequestFacts {
            method,
            target,
            headers: &headers,
            source_address: Some("10.1.2.3:5000"),
            now_nanos: 1_700_000_000 * 1_000_000_000,
            jwt_payload: None,
            peer_uri_san: None,
        });
        let forwarded = matches!(verdict.action, VerdictAction::Forward(_));
        assert_eq!(
            forwarded,
            evaluated.verdict == PolicyVerdict::Allow,
            "{method} {target} {principal}"
        );
        assert_eq!(verdict.record.policies, evaluated.determining, "{target}");
        assert_eq!(verdict.record.errors, evaluated.errors, "{target}");
        allowed += usize::from(forwarded);
    }
    assert!(allowed >= 2 && allowed < cases.len(), "{allowed}");
}

/// `--time` is read by `audit::parse_rfc3339`, shared with replay: the
/// cases an operator types that its own tests do not spell out.
#[test]
fn the_time_flag_reads_offsets_and_leap_years() {
    use secretgate::audit::parse_rfc3339;
    let noon = parse_rfc3339("2024-06-01T12:00:00Z").expect("valid");
    assert_eq!(
        parse_rfc3339("2024-06-01T12:00:00-05:30"),
        Some(noon + 5 * 3600 + 30 * 60)
    );
    assert_eq!(parse_rfc3339("2024-06-01T12:00:00+00:00"), Some(noon));
    assert_eq!(parse_rfc3339("2024-06-01t12:00:00.999z"), Some(noon));
    // An offset can move the instant across a year boundary.
    assert_eq!(
        parse_rfc3339("2000-01-01T00:30:00+01:00"),
        parse_rfc3339("1999-12-31T23:30:00Z")
    );
    // 2000 is a leap year; 1900 and 2100 are not.
    assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
    assert_eq!(parse_rfc3339("1900-02-29T00:00:00Z"), None);
    assert_eq!(parse_rfc3339("2100-02-29T00:00:00Z"), None);
    assert_eq!(
        parse_rfc3339("2024-03-01T00:00:00Z").zip(parse_rfc3339("2024-02-28T00:00:00Z")),
        Some((1_709_251_200, 1_709_078_400))
    );
}

#[test]
fn an_approval_permit_makes_the_verdict_approval() {
    let policies = r#"
        @id("sre-approves-prod") @approval("sre")
        permit (principal in Group::"ops", action == Action::"read", resource in Path::"secret/prod");
    "#;
    let config = json!({
        "schema": SCHEMA,
        "policies": policies,
        "entities": entities(),
        "mounts": {"secret": "kv-v2"},
        "identity": {"source": "header"},
        "approval": {"cluster": "approver", "authority": "approver.local"},
    });
    let config = Config::from_json(config.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let explanation = explained(
        &config,
        &request("GET", "/v1/secret/data/prod/db", Some("op"), None),
    );
    let evaluated = explanation.evaluated.as_ref().expect("evaluated");
    assert_eq!(evaluated.verdict, PolicyVerdict::Approval);
    assert_eq!(
        evaluated.approval_policy.as_deref(),
        Some("sre-approves-prod")
    );
    assert!(explanation
        .to_text()
        .contains("approval: sre-approves-prod requires a person's approval\n"));
}

#[test]
fn an_mtls_principal_is_checked_and_gets_its_claims_from_the_spiffe_id() {
    let schema = SCHEMA.replacen(
        "  iss?: String,",
        "  iss?: String,\n  trust_domain?: String,",
        1,
    );
    assert_ne!(schema, SCHEMA);
    let config = json!({
        "schema": schema,
        "policies": POLICIES,
        "entities": entities(),
        "mounts": {"secret": "kv-v2"},
        "identity": {"source": "mtls"},
    });
    let config = Config::from_json(config.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let spiffe = "spiffe://acme.test/ci/api";
    let explanation = explained(
        &config,
        &request("GET", "/v1/secret/data/x", Some(spiffe), None),
    );
    assert_eq!(
        explanation.principal.claims,
        claims(json!({"trust_domain": "acme.test"}))
    );
    // The filter answers 401 to a peer whose URI SAN is not a SPIFFE ID.
    let refused = explain(
        &config,
        &request("GET", "/v1/secret/data/x", Some("job"), None),
    );
    assert!(refused.is_err(), "{refused:?}");
    // Claims come from the certificate, not the command line.
    let given = claims(json!({"trust_domain": "other"}));
    let refused = explain(
        &config,
        &request("GET", "/v1/secret/data/x", Some(spiffe), Some(&given)),
    );
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("SPIFFE")),
        "{refused:?}"
    );
}

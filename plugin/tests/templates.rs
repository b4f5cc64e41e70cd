//! Path templates through the whole decision: one rule compares a secret's
//! captured `repository` with the CI token's claim, for every repository.

use secretgate::bundle;
use secretgate::config::Config;
use secretgate::gate::{RequestFacts, Verdict, VerdictAction};
use secretgate::pairs;
use serde_json::{json, Value};

const SCHEMA: &str = r#"
entity Group in [Group];
entity Workload in [Group];
entity Path in [Path] { repository?: String, team?: String };
entity Secret in [Path] { repository?: String, team?: String };
entity Endpoint in [Path];
type Claims = { sub?: String, repository?: String };
action read, list, write, delete, issue, decrypt, use, unwrap, login, sys, other
  appliesTo {
    principal: [Workload], resource: [Secret, Path, Endpoint],
    context: { method: String, claims: Claims, source_ip: ipaddr, now: Long, namespace: String },
  };
"#;

/// The rule the issue asks for, verbatim.
const POLICIES: &str = r#"
@id("ci-reads-own-repository")
permit (principal in Group::"ci", action in [Action::"read", Action::"list"], resource)
when { resource has repository && context.claims has repository
       && resource.repository == context.claims.repository };
"#;

fn entities() -> Value {
    json!([
        {"uid": {"type": "Group", "id": "ci"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Workload", "id": "ci-job"}, "attrs": {},
         "parents": [{"type": "Group", "id": "ci"}]},
    ])
}

fn config_with(mounts: Value, entities: Value) -> Result<Config, String> {
    let config = json!({
        "schema": SCHEMA,
        "policies": POLICIES,
        "entities": entities,
        "mounts": mounts,
        "identity": {"source": "jwt", "payload_in_metadata": "ci_claims"},
    });
    Config::from_json(config.to_string().as_bytes()).map_err(|e| e.to_string())
}

fn templated() -> Config {
    config_with(
        json!({
            "secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**", "teams/{team}/**"]},
            "kv": "kv-v1",
        }),
        entities(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn claims(repository: &str) -> Vec<u8> {
    pairs::encode(&[(b"sub", b"ci-job"), (b"repository", repository.as_bytes())])
}

fn decide(config: &Config, method: &str, target: &str, repository: &str) -> Verdict {
    let payload = claims(repository);
    config.decide(&RequestFacts {
        method,
        target,
        headers: &[(b"x-vault-token", b"hvs.test-token")],
        source_address: Some("127.0.0.1:40000"),
        now_nanos: 1_700_000_100_000_000_000,
        jwt_payload: Some(&payload),
        peer_uri_san: None,
    })
}

fn allowed(verdict: &Verdict) -> bool {
    matches!(verdict.action, VerdictAction::Forward(_))
}

fn status(config: &Config, method: &str, target: &str, repository: &str) -> u32 {
    let verdict = decide(config, method, target, repository);
    match &verdict.action {
        VerdictAction::Forward(_) => 200,
        VerdictAction::Respond { status, .. } => *status,
        VerdictAction::AskApproval { .. } => 0,
    }
}

#[test]
fn one_rule_serves_every_repository_its_own_secrets_only() {
    let config = templated();
    let repositories: Vec<String> = (0..20).map(|i| format!("acme/repo-{i}")).collect();
    for own in &repositories {
        for target in &repositories {
            let verdict = decide(
                &config,
                "GET",
                &format!("/v1/secret/data/ci/{target}/db"),
                own,
            );
            assert_eq!(
                allowed(&verdict),
                own == target,
                "{own} reading {target}: {}",
                verdict.record.log_line()
            );
        }
    }
    let verdict = decide(
        &config,
        "GET",
        "/v1/secret/data/ci/acme/repo-1/db",
        "acme/repo-1",
    );
    assert_eq!(verdict.record.policies, ["ci-reads-own-repository"]);
}

#[test]
fn every_spelling_of_another_repository_is_refused() {
    let config = templated();
    // An encoded `/` is refused outright (400), whoever asks; every other
    // spelling resolves to acme/web's secret, as OpenBao resolves it.
    for (target, for_owner) in [
        ("/v1/secret/data/ci/acme%2Fweb/db", 400),
        ("/v1/secret/data/ci/acme/api/../../acme/web/db", 200),
        ("/v1/secret/data/ci/acme/./web/db", 200),
        ("/v1/secret/data//ci/acme/web/db", 200),
        ("/v1/secret/data/ci/acme/%77eb/db", 200),
        ("/v1/secret/metadata/ci/acme/web/db", 200),
        ("/v1/secret/data/ci/acme/web", 200),
    ] {
        let refused = status(&config, "GET", target, "acme/api");
        assert!(refused == 403 || refused == 400, "{target}: {refused}");
        assert_eq!(
            status(&config, "GET", target, "acme/web"),
            for_owner,
            "{target} for its owner"
        );
    }
    // A repository name that only looks like a prefix of another.
    assert_eq!(
        status(
            &config,
            "GET",
            "/v1/secret/data/ci/acme/api-old/db",
            "acme/api"
        ),
        403
    );
    // Above the repository folder, no capture: nothing matches the rule.
    assert_eq!(
        status(&config, "LIST", "/v1/secret/metadata/ci/acme", "acme/api"),
        403
    );
    assert_eq!(
        status(&config, "GET", "/v1/secret/data/ci/acme", "acme/api"),
        403
    );
}

#[test]
fn a_kv_v2_metadata_path_and_a_folder_list_get_the_same_attributes() {
    let config = templated();
    assert_eq!(
        status(
            &config,
            "GET",
            "/v1/secret/metadata/ci/acme/api/db",
            "acme/api"
        ),
        200
    );
    assert_eq!(
        status(
            &config,
            "LIST",
            "/v1/secret/metadata/ci/acme/api",
            "acme/api"
        ),
        200
    );
    assert_eq!(
        status(
            &config,
            "GET",
            "/v1/secret/metadata/ci/acme/api/?list=true",
            "acme/api"
        ),
        200
    );
    assert_eq!(
        status(
            &config,
            "LIST",
            "/v1/secret/metadata/ci/acme/api/sub",
            "acme/api"
        ),
        200
    );
    assert_eq!(
        status(
            &config,
            "LIST",
            "/v1/secret/metadata/ci/acme/web",
            "acme/api"
        ),
        403
    );
    // Writes are not in the rule.
    assert_eq!(
        status(
            &config,
            "POST",
            "/v1/secret/data/ci/acme/api/db",
            "acme/api"
        ),
        403
    );
}

#[test]
fn an_untemplated_mount_gives_no_attributes() {
    let config = templated();
    assert_eq!(
        status(&config, "GET", "/v1/kv/ci/acme/api/db", "acme/api"),
        403
    );
}

#[test]
fn an_undeclared_attribute_is_a_configuration_error_naming_the_template() {
    let error = config_with(
        json!({"secret": {"type": "kv-v2", "templates": ["ci/{repo=*/*}/**"]}}),
        entities(),
    )
    .unwrap_err();
    assert!(error.contains("ci/{repo=*/*}/**"), "{error}");
    assert!(error.contains("repo?: String"), "{error}");
}

#[test]
fn an_attribute_declared_with_another_type_or_required_is_refused() {
    for (attribute, problem) in [
        ("repository: String", "required"),
        ("repository?: Long", "Long"),
    ] {
        let schema = SCHEMA.replace(
            "entity Path in [Path] { repository?: String",
            &format!("entity Path in [Path] {{ {attribute}"),
        );
        let config = json!({
            "schema": schema, "policies": "", "entities": [],
            "mounts": {"secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]}},
            "identity": {"source": "jwt", "payload_in_metadata": "ci_claims"},
        });
        let error = Config::from_json(config.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`repository?: String` on Path"),
            "{problem}: {error}"
        );
    }
}

#[test]
fn a_malformed_template_is_a_configuration_error_naming_it() {
    let error = config_with(
        json!({"secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*"]}}),
        entities(),
    )
    .unwrap_err();
    assert!(error.starts_with("mounts: "), "{error}");
    assert!(error.contains("\"ci/{repository=*/*\""), "{error}");
    let unknown_key = config_with(
        json!({"secret": {"type": "kv-v2", "template": []}}),
        entities(),
    )
    .unwrap_err();
    assert!(
        unknown_key.contains("unknown field `template`"),
        "{unknown_key}"
    );
    let bad_type = config_with(json!({"secret": {"type": "kv-v9"}}), entities()).unwrap_err();
    assert!(bad_type.contains("kv-v9"), "{bad_type}");
}

#[test]
fn an_entity_attribute_a_template_also_sets_is_a_configuration_error() {
    let mounts = json!({"secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]}});
    for (entity_type, id) in [
        ("Path", "secret/ci/acme/api"),
        ("Secret", "secret/ci/acme/api/db"),
    ] {
        let mut conflicting = entities();
        conflicting.as_array_mut().unwrap().push(json!({
            "uid": {"type": entity_type, "id": id},
            "attrs": {"repository": "acme/other"}, "parents": [],
        }));
        let error = config_with(mounts.clone(), conflicting).unwrap_err();
        assert!(
            error.contains(&format!("{entity_type}::\"{id}\"")),
            "{error}"
        );
        assert!(error.contains("ci/{repository=*/*}/**"), "{error}");
    }
    // The same attribute on a folder no capture reaches is the author's own.
    let mut above = entities();
    above.as_array_mut().unwrap().push(json!({
        "uid": {"type": "Path", "id": "secret/ci/acme"},
        "attrs": {"repository": "acme/api"}, "parents": [],
    }));
    config_with(mounts, above).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn stored_entity_attributes_and_captured_ones_combine() {
    let mut with_team = entities();
    with_team.as_array_mut().unwrap().push(json!({
        "uid": {"type": "Path", "id": "secret/ci/acme/api"},
        "attrs": {"team": "red"}, "parents": [],
    }));
    let config = config_with(
        json!({"secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]}}),
        with_team,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status(&config, "GET", "/v1/secret/data/ci/acme/api/db", "acme/api"),
        200
    );
    assert_eq!(
        status(&config, "GET", "/v1/secret/data/ci/acme/api/db", "acme/web"),
        403
    );
}

#[test]
fn templates_may_come_in_a_bundle_with_the_same_validation() {
    let base = config_with(json!({"secret": "kv-v2"}), entities()).unwrap();
    assert_eq!(
        status(&base, "GET", "/v1/secret/data/ci/acme/api/db", "acme/api"),
        403
    );
    let bundle = |templates: Value| {
        bundle::parse(json!({"templates": templates}).to_string().as_bytes()).unwrap()
    };
    let live = base
        .with_bundle(bundle(json!({"secret": ["ci/{repository=*/*}/**"]})))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status(&live, "GET", "/v1/secret/data/ci/acme/api/db", "acme/api"),
        200
    );
    assert_eq!(
        status(&live, "GET", "/v1/secret/data/ci/acme/web/db", "acme/api"),
        403
    );
    let undeclared = base
        .with_bundle(bundle(json!({"secret": ["ci/{repo=*/*}/**"]})))
        .unwrap_err()
        .to_string();
    assert!(undeclared.contains("ci/{repo=*/*}/**"), "{undeclared}");
    let unknown_mount = base
        .with_bundle(bundle(json!({"nope": ["{team}"]})))
        .unwrap_err()
        .to_string();
    assert!(
        unknown_mount.contains("\"nope\": not a configured mount"),
        "{unknown_mount}"
    );
}

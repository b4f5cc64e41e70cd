//! The whole decision, natively: configuration → identity → classification
//! → Cedar, using the demo policy set in `policies/`.

use secretgate::config::{Config, ConfigError};
use secretgate::gate::{RequestFacts, Verdict, VerdictAction};
use secretgate::pairs;
use secretgate::record::Outcome;
use serde_json::{json, Value};

const TOKEN: &str = "hvs.CAESIJ-this-is-a-vault-token";

fn policies_dir(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../policies/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("policy file")
}

fn demo_config(identity: Value) -> Value {
    json!({
        "schema": policies_dir("schema.cedarschema"),
        "policies": policies_dir("policies.cedar"),
        "entities": serde_json::from_str::<Value>(&policies_dir("entities.json")).unwrap(),
        "mounts": demo_mounts(),
        "identity": identity,
    })
}

/// The demo set's mounts, with their path templates.
fn demo_mounts() -> Value {
    serde_json::from_str::<Value>(&policies_dir("config.json")).unwrap()["mounts"].clone()
}

fn jwt_config() -> Config {
    let config = demo_config(json!({"source": "jwt", "payload_in_metadata": "ci_claims"}));
    Config::from_json(config.to_string().as_bytes()).expect("demo config loads")
}

fn github_claims(repository: &str, git_ref: &str, protected: bool) -> Vec<u8> {
    let sub = format!("repo:{repository}:ref:{git_ref}");
    let iat = 1_700_000_000f64.to_le_bytes();
    let protected = if protected { "true" } else { "false" };
    pairs::encode(&[
        (b"iss", b"https://ci.secretgate.local"),
        (b"sub", sub.as_bytes()),
        (b"repository", repository.as_bytes()),
        (b"ref", git_ref.as_bytes()),
        (b"ref_protected", protected.as_bytes()),
        (b"environment", b"production"),
        (b"iat", &iat),
        (b"not_in_schema", b"ignored"),
    ])
}

struct Call<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
    jwt: Option<Vec<u8>>,
}

impl<'a> Call<'a> {
    fn get(target: &'a str) -> Self {
        Call {
            method: "GET",
            target,
            headers: vec![
                (b"x-vault-token", TOKEN.as_bytes()),
                (b"x-request-id", b"req-1"),
            ],
            jwt: None,
        }
    }
    fn method(mut self, method: &'a str) -> Self {
        self.method = method;
        self
    }
    fn jwt(mut self, payload: Vec<u8>) -> Self {
        self.jwt = Some(payload);
        self
    }
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name.as_bytes(), value.as_bytes()));
        self
    }
    fn decide(&self, config: &Config) -> Verdict {
        let verdict = config.decide(&RequestFacts {
            method: self.method,
            target: self.target,
            headers: &self.headers,
            source_address: Some("127.0.0.1:40000"),
            now_nanos: 1_700_000_100_000_000_000,
            jwt_payload: self.jwt.as_deref(),
            peer_uri_san: None,
        });
        assert_no_token(&verdict);
        verdict
    }
}

fn assert_no_token(verdict: &Verdict) {
    let rendered = format!("{verdict:?} {}", verdict.record.log_line());
    assert!(!rendered.contains(TOKEN), "token leaked: {rendered}");
}

fn status(verdict: &Verdict) -> u32 {
    match &verdict.action {
        VerdictAction::Forward(_) => 200,
        VerdictAction::Respond { status, .. } => *status,
        VerdictAction::AskApproval { .. } => 0,
    }
}

fn body(verdict: &Verdict) -> Value {
    match &verdict.action {
        VerdictAction::Respond { body, .. } => serde_json::from_str(body).unwrap(),
        VerdictAction::Forward(_) | VerdictAction::AskApproval { .. } => Value::Null,
    }
}

#[test]
fn a_ci_job_reads_its_own_repository_secret() {
    let verdict = Call::get("/v1/secret/data/ci/acme/api/db")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&jwt_config());
    assert_eq!(status(&verdict), 200, "{}", verdict.record.log_line());
    assert_eq!(verdict.record.outcome, Outcome::Allowed);
    assert_eq!(verdict.record.policies, ["ci-reads-own-repository"]);
    assert_eq!(
        verdict.record.principal,
        Some((
            "Workload".into(),
            "repo:acme/api:ref:refs/heads/main".into()
        ))
    );
}

#[test]
fn a_ci_job_cannot_read_another_repository_secret() {
    let verdict = Call::get("/v1/secret/data/ci/acme/web/token")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&jwt_config());
    assert_eq!(status(&verdict), 403);
    assert_eq!(verdict.record.outcome, Outcome::DeniedByPolicy);
    assert_eq!(
        body(&verdict),
        json!({"errors": ["permission denied"], "request_id": "req-1"})
    );
    // Which policy decided goes to the log, never to the caller.
    assert!(!body(&verdict).to_string().contains("ci-"));
}

#[test]
fn unprotected_branches_are_forbidden_by_name() {
    let verdict = Call::get("/v1/secret/data/ci/acme/api/db")
        .jwt(github_claims("acme/api", "refs/heads/feature-x", false))
        .decide(&jwt_config());
    assert_eq!(status(&verdict), 403);
    assert_eq!(verdict.record.policies, ["ci-protected-branches-only"]);
    assert!(verdict
        .record
        .log_line()
        .contains("ci-protected-branches-only"));
}

#[test]
fn contractors_never_reach_production_even_when_release_permits() {
    let release = Call::get("/v1/secret/data/prod/acme/api/db")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&jwt_config());
    assert_eq!(status(&release), 200, "{}", release.record.log_line());
    let contractor = Call::get("/v1/secret/data/prod/acme/api/db")
        .jwt(github_claims("acme/vendor-sync", "refs/heads/main", true))
        .decide(&jwt_config());
    assert_eq!(status(&contractor), 403);
    assert_eq!(contractor.record.policies, ["contractors-never-production"]);
}

#[test]
fn kv_v1_and_list_are_governed() {
    let config = jwt_config();
    let claims = || github_claims("acme/api", "refs/heads/main", true);
    let kv1 = Call::get("/v1/kv/ci/acme/api/legacy")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&kv1), 200);
    let list = Call::get("/v1/secret/metadata/ci/acme/api")
        .method("LIST")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&list), 200);
    let list_other = Call::get("/v1/secret/metadata/ci/acme/web?list=true")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&list_other), 403);
    let write = Call::get("/v1/secret/data/ci/acme/api/db")
        .method("POST")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&write), 403, "the demo grants no writes");
}

#[test]
fn no_identity_is_401_and_never_uses_the_vault_token() {
    let verdict = Call::get("/v1/secret/data/ci/acme/api/db").decide(&jwt_config());
    assert_eq!(status(&verdict), 401);
    assert_eq!(verdict.record.outcome, Outcome::NoIdentity);
    assert_eq!(body(&verdict)["errors"], json!(["missing client identity"]));
}

#[test]
fn header_identity_for_development() {
    let config = demo_config(
        json!({"source": "header", "header": "x-secretgate-principal", "principal_type": "Workload"}),
    );
    let config = Config::from_json(config.to_string().as_bytes()).unwrap();
    // Without claims the repository conditions cannot hold: denied.
    let verdict = Call::get("/v1/secret/data/ci/acme/api/db")
        .header(
            "x-secretgate-principal",
            "repo:acme/api:ref:refs/heads/main",
        )
        .decide(&config);
    assert_eq!(status(&verdict), 403);
    assert_eq!(
        verdict.record.principal,
        Some((
            "Workload".into(),
            "repo:acme/api:ref:refs/heads/main".into()
        ))
    );
    let twice = Call::get("/v1/secret/data/ci/acme/api/db")
        .header("x-secretgate-principal", "a")
        .header("x-secretgate-principal", "b")
        .decide(&config);
    assert_eq!(status(&twice), 401);
}

#[test]
fn path_variants_are_forwarded_in_canonical_form_or_refused() {
    let config = jwt_config();
    let claims = || github_claims("acme/api", "refs/heads/main", true);
    let variant = Call::get("/v1/secret//data/./ci/acme/api/x/../db")
        .jwt(claims())
        .decide(&config);
    match &variant.action {
        VerdictAction::Forward(edits) => {
            assert_eq!(
                edits.path.as_deref(),
                Some("/v1/secret/data/ci/acme/api/db")
            );
        }
        other => panic!("expected forward, got {other:?}"),
    }
    // A variant that lands on another repository's secret is that secret.
    let sneaky = Call::get("/v1/secret/data/ci/acme/api/%2e%2e/web/token")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&sneaky), 403);
    assert_eq!(
        sneaky
            .record
            .resource
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("Secret::\"secret/ci/acme/web/token\"")
    );
    for refused in [
        "/v1/secret/data/ci%2Facme/api/db",
        "/v1/secret/../kv/ci/acme/api/legacy",
        "/v1/secret/data/ci/acme/api/db%00",
    ] {
        let verdict = Call::get(refused).jwt(claims()).decide(&config);
        assert_eq!(status(&verdict), 400, "{refused}");
        assert!(body(&verdict)["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("invalid request path"));
    }
}

#[test]
fn method_tricks_are_refused() {
    let config = jwt_config();
    let claims = || github_claims("acme/api", "refs/heads/main", true);
    let override_header = Call::get("/v1/secret/data/ci/acme/api/db")
        .header("x-http-method-override", "DELETE")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&override_header), 400);
    let trace = Call::get("/v1/secret/data/ci/acme/api/db")
        .method("TRACE")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&trace), 405);
    let two_namespaces = Call::get("/v1/secret/data/ci/acme/api/db")
        .header("x-vault-namespace", "a")
        .header("x-vault-namespace", "b")
        .jwt(claims())
        .decide(&config);
    assert_eq!(status(&two_namespaces), 400);
}

#[test]
fn unknown_endpoints_are_other_and_denied() {
    let verdict = Call::get("/v1/sys/wrapping/unwrap")
        .method("POST")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&jwt_config());
    assert_eq!(status(&verdict), 403);
    let cubbyhole = Call::get("/v1/cubbyhole/response")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&jwt_config());
    assert_eq!(status(&cubbyhole), 403);
}

#[test]
fn a_claim_of_the_wrong_type_fails_closed() {
    let iat = b"not-a-double";
    let payload = pairs::encode(&[
        (b"sub", b"repo:acme/api:ref:refs/heads/main"),
        (b"repository", b"acme/api"),
        (b"ref_protected", b"true"),
        (b"iat", iat),
    ]);
    let verdict = Call::get("/v1/secret/data/ci/acme/api/db")
        .jwt(payload)
        .decide(&jwt_config());
    assert_eq!(status(&verdict), 401);
}

fn load_error(config: Value) -> String {
    match Config::from_json(config.to_string().as_bytes()) {
        Ok(_) => panic!("configuration should be rejected"),
        Err(e) => e.to_string(),
    }
}

fn with(mut config: Value, key: &str, value: Value) -> Value {
    config[key] = value;
    config
}

#[test]
fn the_minimal_contract_loads_as_is() {
    let minimal = json!({
        "schema": policies_dir("schema.cedarschema"),
        "policies": "permit(principal, action == Action::\"read\", resource in Path::\"secret/ci\");",
        "entities": [],
        "mounts": {"secret": "kv-v2", "kv": "kv-v1"},
        "identity": {"source": "header", "header": "x-secretgate-principal", "principal_type": "Workload"}
    });
    Config::from_json(minimal.to_string().as_bytes()).expect("minimal form loads");
}

#[test]
fn configuration_errors_are_named_precisely() {
    let base = demo_config(json!({"source": "jwt", "payload_in_metadata": "ci_claims"}));
    assert!(matches!(
        Config::from_json(b"{not json"),
        Err(ConfigError::Json(_))
    ));
    assert!(load_error(with(base.clone(), "surprise", json!(1))).contains("unknown field"));
    assert!(
        load_error(with(base.clone(), "identity", json!({"source": "token"}))).contains("token")
    );
    assert!(load_error(with(
        base.clone(),
        "identity",
        json!({"source": "jwt", "payload_in_metadata": "x", "extra": 1})
    ))
    .contains("unknown field"));
    assert!(load_error(with(base.clone(), "mounts", json!({"secret": "kv-v9"}))).contains("kv-v9"));

    let syntax = "@id(\"fine\")\npermit(principal, action, resource);\n@id(\"broken\")\npermit(principal, action resource);";
    let error = load_error(with(base.clone(), "policies", json!(syntax)));
    assert!(error.contains("policy \"broken\" (line 4)"), "{error}");

    let ill_typed =
        "@id(\"typo\")\npermit(principal, action, resource) when { context.claims.repo == \"x\" };";
    let error = load_error(with(base.clone(), "policies", json!(ill_typed)));
    assert!(error.contains("policy \"typo\""), "{error}");

    let deep = format!(
        "@id(\"deep\") permit(principal, action, resource) when {{ {}true{} }};",
        "(".repeat(200),
        ")".repeat(200)
    );
    let error = load_error(with(base.clone(), "policies", json!(deep)));
    assert!(
        error.contains("policy \"deep\"") && error.contains("nesting"),
        "{error}"
    );

    let error = load_error(with(
        base.clone(),
        "entities",
        json!([{"uid": {"type": "Workload", "id": "x"}, "attrs": {"surprise": 1}, "parents": []}]),
    ));
    assert!(error.contains("entities"), "{error}");

    let no_unwrap = policies_dir("schema.cedarschema").replace("unwrap, ", "");
    assert!(
        load_error(with(base.clone(), "schema", json!(no_unwrap))).contains("Action::\"unwrap\"")
    );

    let no_context = policies_dir("schema.cedarschema").replace("  namespace: String,\n", "");
    assert!(load_error(with(base.clone(), "schema", json!(no_context)))
        .contains("schema does not accept"));

    let bad_principal = with(
        base.clone(),
        "identity",
        json!({"source": "mtls", "principal_type": "Robot"}),
    );
    assert!(load_error(bad_principal).contains("Robot"));

    let templates = "permit(principal == ?principal, action, resource);";
    assert!(load_error(with(base, "policies", json!(templates))).contains("templates"));
}

#[test]
fn principal_claim_and_type_are_configurable() {
    let schema = policies_dir("schema.cedarschema")
        .replace("  actor?: String,", "  actor?: String,\n  email?: String,");
    let config = json!({
        "schema": schema,
        "policies": "@id(\"alice-reads-ci\") permit(principal == User::\"alice@acme.test\", action == Action::\"read\", resource in Path::\"secret/ci\");",
        "entities": [],
        "mounts": {"secret": "kv-v2"},
        "identity": {"source": "jwt", "payload_in_metadata": "oidc", "principal_claim": "email", "principal_type": "User"}
    });
    let config = Config::from_json(config.to_string().as_bytes()).unwrap();
    let payload =
        |email: &str| pairs::encode(&[(b"sub", b"248289761001"), (b"email", email.as_bytes())]);
    let alice = Call::get("/v1/secret/data/ci/app")
        .jwt(payload("alice@acme.test"))
        .decide(&config);
    assert_eq!(status(&alice), 200);
    assert_eq!(
        alice.record.principal,
        Some(("User".into(), "alice@acme.test".into()))
    );
    let mallory = Call::get("/v1/secret/data/ci/app")
        .jwt(payload("mallory@acme.test"))
        .decide(&config);
    assert_eq!(status(&mallory), 403);
}

#[test]
fn an_evaluation_error_is_a_deny_even_when_it_disarms_a_forbid() {
    // Cedar skips a policy whose condition errors; a skipped forbid would let
    // the permit through. The filter denies whenever any policy errored.
    let policies = r#"
        @id("permit-ci") permit(principal, action == Action::"read", resource in Path::"secret/ci");
        @id("overflowing-forbid") forbid(principal, action, resource)
        when { context.now * 9223372036854775807 > 0 };
    "#;
    let config = json!({
        "schema": policies_dir("schema.cedarschema"),
        "policies": policies,
        "mounts": {"secret": "kv-v2"},
        "identity": {"source": "header"}
    });
    let config = Config::from_json(config.to_string().as_bytes()).unwrap();
    let verdict = Call::get("/v1/secret/data/ci/app")
        .header("x-secretgate-principal", "ci-bot")
        .decide(&config);
    assert_eq!(status(&verdict), 403);
    assert_eq!(verdict.record.outcome, Outcome::EvaluationError);
    assert!(
        verdict
            .record
            .errors
            .iter()
            .any(|e| e.contains("overflowing-forbid")),
        "{:?}",
        verdict.record.errors
    );
    assert_eq!(body(&verdict)["errors"], json!(["permission denied"]));
}

mod approval {
    use super::*;
    use secretgate::approval::{CalloutReply, ReplyError};

    const POLICIES: &str = r#"
        @id("prod-needs-secops")
        @approval("secops")
        @approval_ttl("30m")
        permit(principal, action == Action::"read", resource in Path::"secret/prod");

        @id("break-glass-bot-needs-nobody")
        permit(principal == Workload::"break-glass", action == Action::"read", resource in Path::"secret/prod");

        @id("retry-for-staging")
        @approval("release")
        @approval_mode("retry")
        permit(principal, action == Action::"read", resource in Path::"secret/staging");

        @id("contractors-never-prod")
        forbid(principal == Workload::"contractor", action, resource in Path::"secret/prod");
    "#;

    fn config() -> Config {
        let config = json!({
            "schema": policies_dir("schema.cedarschema"),
            "policies": POLICIES,
            "mounts": {"secret": "kv-v2"},
            "identity": {"source": "header"},
            "approval": {"cluster": "approver", "authority": "approver.local", "timeout_ms": 10000}
        });
        Config::from_json(config.to_string().as_bytes()).unwrap()
    }

    fn ask(principal: &'static str, target: &'static str) -> Verdict {
        Call::get(target)
            .header("x-secretgate-principal", principal)
            .header("x-secretgate-reason", "https://ci.example/run/42")
            .decide(&config())
    }

    #[test]
    fn a_permit_under_approval_pauses_and_asks_the_service() {
        let verdict = ask("ci-bot", "/v1/secret/data/prod/db");
        assert_eq!(verdict.record.outcome, Outcome::AwaitingApproval);
        let VerdictAction::AskApproval { body, .. } = &verdict.action else {
            panic!("expected a callout, got {:?}", verdict.action);
        };
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body["principal"],
            json!({"type": "Workload", "id": "ci-bot"})
        );
        assert_eq!(body["action"], "read");
        assert_eq!(body["resource"], "Secret::\"secret/prod/db\"");
        assert_eq!(body["approvers"], "secops");
        assert_eq!(body["policies"], json!(["prod-needs-secops"]));
        assert_eq!(body["reason"], "https://ci.example/run/42");
        assert_eq!(body["mode"], "hold");
        assert_eq!(body["wait_ms"], 9000);
        assert_eq!(body["ttl_s"], 1800);
        assert_eq!(body["request_id"], "req-1");
        assert!(!body.to_string().contains(TOKEN));
    }

    #[test]
    fn an_unannotated_permit_passes_without_asking_and_forbid_still_wins() {
        let glass = ask("break-glass", "/v1/secret/data/prod/db");
        assert_eq!(status(&glass), 200);
        assert_eq!(glass.record.outcome, Outcome::Allowed);
        let contractor = ask("contractor", "/v1/secret/data/prod/db");
        assert_eq!(status(&contractor), 403);
        assert_eq!(contractor.record.policies, ["contractors-never-prod"]);
    }

    #[test]
    fn retry_mode_asks_without_waiting() {
        let verdict = ask("ci-bot", "/v1/secret/data/staging/db");
        let VerdictAction::AskApproval { body, .. } = &verdict.action else {
            panic!("expected a callout");
        };
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (body["mode"].as_str(), body["wait_ms"].as_u64()),
            (Some("retry"), Some(0))
        );
    }

    fn conclude(reply: Result<CalloutReply, ReplyError>) -> Verdict {
        let config = config();
        let asked = ask("ci-bot", "/v1/secret/data/prod/db");
        let VerdictAction::AskApproval { edits, .. } = asked.action else {
            panic!("expected a callout");
        };
        config.conclude_approval(asked.record, edits, reply)
    }

    #[test]
    fn only_an_approval_releases_the_request() {
        let approved = conclude(Ok(CalloutReply::Approved {
            grant_id: "gr_1".into(),
            approver: "alice".into(),
            expires_at: "2026-11-28T15:00:00Z".into(),
        }));
        assert_eq!(status(&approved), 200);
        assert_eq!(approved.record.outcome, Outcome::Allowed);
        let fields = approved.record.approval.clone().unwrap();
        assert_eq!(fields["outcome"], "approved");
        assert_eq!(fields["approver"], "alice");
        assert_eq!(fields["grant_id"], "gr_1");

        let denied = conclude(Ok(CalloutReply::Denied {
            approver: "bob".into(),
            reason: "freeze".into(),
        }));
        assert_eq!(status(&denied), 403);
        assert_eq!(body(&denied)["errors"], json!(["approval denied"]));
        assert_eq!(denied.record.approval.clone().unwrap()["reason"], "freeze");

        let pending = conclude(Ok(CalloutReply::Pending {
            approval_id: "ap_9".into(),
            approval_url: "http://approver/#ap_9".into(),
        }));
        assert_eq!(status(&pending), 403);
        assert_eq!(
            body(&pending),
            json!({"errors": ["approval required"], "approval_id": "ap_9",
                   "approval_url": "http://approver/#ap_9", "request_id": "req-1"})
        );

        for failure in [
            ReplyError::Unreachable,
            ReplyError::CalloutRejected,
            ReplyError::Status(500),
            ReplyError::Malformed("status"),
        ] {
            let failed = conclude(Err(failure.clone()));
            assert_eq!(status(&failed), 403, "{failure:?}");
            assert_eq!(failed.record.outcome, Outcome::ApprovalError);
            assert_eq!(body(&failed)["errors"], json!(["approval unavailable"]));
            assert_eq!(failed.record.reason, failure.to_string());
        }
    }

    #[test]
    fn approval_annotations_need_a_service_and_sane_values() {
        let without_service = json!({
            "schema": policies_dir("schema.cedarschema"),
            "policies": POLICIES,
            "identity": {"source": "header"}
        });
        assert!(load_error(without_service).contains("no approval service"));
        let bad_ttl = json!({
            "schema": policies_dir("schema.cedarschema"),
            "policies": "@id(\"p\") @approval(\"x\") @approval_ttl(\"soon\") permit(principal, action, resource);",
            "identity": {"source": "header"},
            "approval": {"cluster": "a", "authority": "a"}
        });
        let error = load_error(bad_ttl);
        assert!(
            error.contains("policy \"p\"") && error.contains("approval_ttl"),
            "{error}"
        );
    }
}

fn bundle_config() -> Config {
    let mut config = demo_config(json!({"source": "jwt", "payload_in_metadata": "ci_claims"}));
    let fields = config.as_object_mut().unwrap();
    fields.remove("policies");
    fields.remove("entities");
    fields.insert(
        "bundle".into(),
        json!({"cluster": "bundles", "authority": "bundles.local", "refresh_s": 5}),
    );
    Config::from_json(config.to_string().as_bytes()).expect("bundle config loads")
}

fn bundle(entities: Value) -> secretgate::bundle::Bundle {
    let text = json!({"policies": policies_dir("policies.cedar"), "entities": entities});
    secretgate::bundle::parse(text.to_string().as_bytes()).unwrap()
}

#[test]
fn with_a_bundle_configured_nothing_passes_until_one_loads() {
    let waiting = bundle_config();
    let verdict = Call::get("/v1/secret/data/ci/acme/api/db")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&waiting);
    assert_eq!(status(&verdict), 503);
    assert_eq!(verdict.record.outcome, Outcome::NoPolicy);
    assert_eq!(body(&verdict)["errors"][0], "no policy loaded");

    let entities: Value = serde_json::from_str(&policies_dir("entities.json")).unwrap();
    let loaded = waiting.with_bundle(bundle(entities)).expect("bundle loads");
    let verdict = Call::get("/v1/secret/data/ci/acme/api/db")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&loaded);
    assert_eq!(status(&verdict), 200, "{}", verdict.record.log_line());
}

#[test]
fn a_new_bundle_offboards_a_contractor() {
    let entities: Value = serde_json::from_str(&policies_dir("entities.json")).unwrap();
    let before = bundle_config()
        .with_bundle(bundle(entities.clone()))
        .unwrap();
    let read = Call::get("/v1/secret/data/ci/acme/vendor-sync/api-key").jwt(github_claims(
        "acme/vendor-sync",
        "refs/heads/main",
        true,
    ));
    assert_eq!(status(&read.decide(&before)), 200);

    let mut offboarded = entities;
    for entity in offboarded.as_array_mut().unwrap() {
        if entity["uid"]["id"] == "repo:acme/vendor-sync:ref:refs/heads/main" {
            entity["parents"] = json!([]);
        }
    }
    let after = before.with_bundle(bundle(offboarded)).unwrap();
    assert_eq!(status(&read.decide(&after)), 403);
    // The configuration in use is untouched until the swap.
    assert_eq!(status(&read.decide(&before)), 200);
}

#[test]
fn a_bad_bundle_is_refused_whole() {
    let config = bundle_config();
    let broken = secretgate::bundle::parse(
        json!({"policies": "permit(principal, action, resource) when { context.nope };"})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let error = config.with_bundle(broken).unwrap_err();
    assert!(matches!(error, ConfigError::Policy(_)), "{error}");
    let no_policies = secretgate::bundle::parse(b"{\"entities\": []}").unwrap();
    assert!(matches!(
        config.with_bundle(no_policies).unwrap_err(),
        ConfigError::Bundle(_)
    ));
    let approval_without_service = secretgate::bundle::parse(
        json!({"policies": "@approval(\"sre\") permit(principal, action, resource);"})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert!(matches!(
        config.with_bundle(approval_without_service).unwrap_err(),
        ConfigError::Approval(_)
    ));
}

/// The demo policies plus a burst limit on `context.recent_reads`.
fn burst_config() -> Config {
    let schema = policies_dir("schema.cedarschema").replace(
        "  namespace: String,\n};",
        "  namespace: String,\n  recent_reads: Long,\n};",
    );
    assert!(
        schema.contains("recent_reads"),
        "the schema's RequestContext changed shape"
    );
    let policies = format!(
        "{}\n@id(\"no-read-bursts\")\nforbid (principal, action == Action::\"read\", resource)\nwhen {{ context.recent_reads > 3 }};\n",
        policies_dir("policies.cedar")
    );
    let mut config = demo_config(json!({"source": "jwt", "payload_in_metadata": "ci_claims"}));
    config["schema"] = json!(schema);
    config["policies"] = json!(policies);
    config["recent_reads"] = json!({"window_s": 60});
    Config::from_json(config.to_string().as_bytes()).expect("burst config loads")
}

/// The filter's counter over an in-memory store with Envoy's semantics.
fn shared_counter(
    store: &mut secretgate::usage::MemoryStore,
) -> impl secretgate::usage::ReadCounter + '_ {
    secretgate::usage::SharedCounter::new(store, || Ok([5; 32]), None)
}

#[test]
fn a_burst_of_reads_trips_a_recent_reads_policy() {
    let config = burst_config();
    let mut store = secretgate::usage::MemoryStore::default();
    let read = |store: &mut secretgate::usage::MemoryStore, repository: &str, path: &str| {
        let call = Call::get(path).jwt(github_claims(repository, "refs/heads/main", true));
        config.decide_with(
            &RequestFacts {
                method: call.method,
                target: call.target,
                headers: &call.headers,
                source_address: Some("127.0.0.1:40000"),
                now_nanos: 1_700_000_100_000_000_000,
                jwt_payload: call.jwt.as_deref(),
                peer_uri_san: None,
            },
            &mut shared_counter(store),
        )
    };
    for _ in 0..3 {
        assert_eq!(
            status(&read(
                &mut store,
                "acme/api",
                "/v1/secret/data/ci/acme/api/db"
            )),
            200
        );
    }
    let fourth = read(&mut store, "acme/api", "/v1/secret/data/ci/acme/api/db");
    assert_eq!(status(&fourth), 403);
    assert_eq!(fourth.record.policies, ["no-read-bursts"]);
    // Another workload has its own count.
    assert_eq!(
        status(&read(
            &mut store,
            "acme/web",
            "/v1/secret/data/ci/acme/web/token"
        )),
        200
    );

    // Without a counter, a schema that wants counts fails closed.
    let unconfigured = Call::get("/v1/secret/data/ci/acme/api/db")
        .jwt(github_claims("acme/api", "refs/heads/main", true))
        .decide(&config);
    assert_eq!(status(&unconfigured), 500);
    assert!(unconfigured
        .record
        .reason
        .contains("read counts unavailable"));
}

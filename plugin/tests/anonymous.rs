//! Callers without identity (`identity.anonymous`): the demo schema and
//! policies plus `policies/examples/anonymous.cedar`, decided natively.

use secretgate::config::{Config, ConfigError};
use secretgate::gate::{RequestFacts, Verdict, VerdictAction};
use secretgate::pairs;
use secretgate::record::Outcome;
use serde_json::{json, Value};

const TOKEN: &str = "hvs.CAESIJ-anonymous-vault-token";

fn policy_file(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../policies/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("policy file")
}

/// The demo configuration with the example permits appended.
fn config_json(identity: Value, extra_policies: &str) -> Value {
    let policies = format!(
        "{}\n{}\n{extra_policies}",
        policy_file("policies.cedar"),
        policy_file("examples/anonymous.cedar")
    );
    json!({
        "schema": policy_file("schema.cedarschema"),
        "policies": policies,
        "entities": serde_json::from_str::<Value>(&policy_file("entities.json")).unwrap(),
        "mounts": {"secret": "kv-v2", "kv": "kv-v1", "pki": "pki"},
        "identity": identity,
    })
}

fn load(config: &Value) -> Result<Config, ConfigError> {
    Config::from_json(config.to_string().as_bytes())
}

fn header_identity(anonymous: bool) -> Value {
    json!({"source": "header", "header": "x-secretgate-principal", "anonymous": anonymous})
}

fn jwt_identity(anonymous: bool) -> Value {
    json!({"source": "jwt", "payload_in_metadata": "ci_claims", "anonymous": anonymous})
}

fn anonymous_config(extra_policies: &str) -> Config {
    load(&config_json(header_identity(true), extra_policies)).expect("config loads")
}

struct Call<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
    jwt: Option<Vec<u8>>,
    peer_uri_san: Option<&'a [u8]>,
}

impl<'a> Call<'a> {
    fn get(target: &'a str) -> Self {
        Call {
            method: "GET",
            target,
            headers: vec![
                (b"x-vault-token", TOKEN.as_bytes()),
                (b"x-request-id", b"req-anon"),
            ],
            jwt: None,
            peer_uri_san: None,
        }
    }
    fn method(mut self, method: &'a str) -> Self {
        self.method = method;
        self
    }
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name.as_bytes(), value.as_bytes()));
        self
    }
    fn jwt(mut self, payload: Vec<u8>) -> Self {
        self.jwt = Some(payload);
        self
    }
    fn peer(mut self, san: &'a [u8]) -> Self {
        self.peer_uri_san = Some(san);
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
            peer_uri_san: self.peer_uri_san,
        });
        let rendered = format!("{verdict:?} {}", verdict.record.log_line());
        assert!(!rendered.contains(TOKEN), "token leaked: {rendered}");
        verdict
    }
}

fn status(verdict: &Verdict) -> u32 {
    match &verdict.action {
        VerdictAction::Forward(_) => 200,
        VerdictAction::Respond { status, .. } => *status,
        VerdictAction::AskApproval { .. } => 0,
    }
}

fn errors(verdict: &Verdict) -> Value {
    match &verdict.action {
        VerdictAction::Respond { body, .. } => {
            serde_json::from_str::<Value>(body).unwrap()["errors"].clone()
        }
        VerdictAction::Forward(_) | VerdictAction::AskApproval { .. } => Value::Null,
    }
}

fn anonymous_principal() -> Option<(String, String)> {
    Some(("Unauthenticated".into(), "anonymous".into()))
}

/// The answer every request without identity got before the opt-in.
fn assert_missing_identity(verdict: &Verdict) {
    assert_eq!(status(verdict), 401, "{}", verdict.record.log_line());
    assert_eq!(errors(verdict), json!(["missing client identity"]));
    assert_eq!(verdict.record.outcome, Outcome::NoIdentity);
}

#[test]
fn without_the_opt_in_no_identity_is_401_as_before() {
    for identity in [header_identity(false), jwt_identity(false)] {
        let mut without_key = identity.clone();
        without_key.as_object_mut().unwrap().remove("anonymous");
        for identity in [identity, without_key] {
            let config = load(&config_json(identity, "")).unwrap();
            for target in ["/v1/sys/health", "/v1/identity/oidc/.well-known/keys"] {
                let verdict = Call::get(target).decide(&config);
                assert_missing_identity(&verdict);
                assert_eq!(verdict.record.principal, None);
                assert_eq!(verdict.record.action, None, "never classified");
            }
        }
    }
}

#[test]
fn a_permit_naming_unauthenticated_admits_a_caller_without_identity() {
    let config = anonymous_config("");
    for (method, target, policy) in [
        ("GET", "/v1/sys/health", "anonymous-health-checks"),
        (
            "HEAD",
            "/v1/sys/health?standbyok=true",
            "anonymous-health-checks",
        ),
        (
            "GET",
            "/v1/identity/oidc/.well-known/openid-configuration",
            "anonymous-oidc-discovery",
        ),
        (
            "GET",
            "/v1/identity/oidc/.well-known/keys",
            "anonymous-oidc-discovery",
        ),
        ("GET", "/v1/pki/ca/pem", "anonymous-pki-ca-and-crl"),
        ("GET", "/v1/pki/crl", "anonymous-pki-ca-and-crl"),
    ] {
        let verdict = Call::get(target).method(method).decide(&config);
        assert_eq!(status(&verdict), 200, "{}", verdict.record.log_line());
        assert_eq!(verdict.record.outcome, Outcome::Allowed);
        assert_eq!(verdict.record.principal, anonymous_principal());
        assert!(verdict.record.claims.is_empty());
        assert_eq!(verdict.record.policies, [policy]);
        assert!(verdict
            .record
            .log_line()
            .contains(r#"principal=Unauthenticated::"anonymous""#));
    }
    // The same caller with an identity is judged as itself: the demo
    // policies do not let a workload read the health endpoint.
    let named = Call::get("/v1/sys/health")
        .header("x-secretgate-principal", "ci-bot")
        .decide(&config);
    assert_eq!(status(&named), 403);
}

#[test]
fn without_a_permit_the_answer_stays_401_missing_identity() {
    let config = anonymous_config("");
    for (method, target, reason) in [
        // Permitted for anonymous only with GET/HEAD.
        (
            "POST",
            "/v1/sys/health",
            "no policy permits callers without identity",
        ),
        // `rotate` is under the CRL's folder but not one of its endpoints.
        (
            "GET",
            "/v1/pki/crl/rotate",
            "no policy permits callers without identity",
        ),
        (
            "GET",
            "/v1/sys/seal-status",
            "no policy permits callers without identity",
        ),
        // The schema does not let `read` have an Unauthenticated principal.
        (
            "GET",
            "/v1/secret/data/ci/acme/api/db",
            "no policy permits callers without identity",
        ),
        (
            "GET",
            "/v1/kv/ci/acme/api/legacy",
            "no policy permits callers without identity",
        ),
        // Refused before Cedar: still only "missing client identity".
        ("GET", "/v1/nowhere/x", "path is under no configured mount"),
        ("GET", "/v1/secret/data/a%2Fb", "encoded slash in path"),
        ("TRACE", "/v1/sys/health", "method not allowed"),
    ] {
        let verdict = Call::get(target).method(method).decide(&config);
        assert_missing_identity(&verdict);
        assert_eq!(verdict.record.principal, anonymous_principal());
        let expected = format!("no client identity; {reason}");
        assert_eq!(verdict.record.reason, expected, "{method} {target}");
    }
    let overridden = Call::get("/v1/sys/health")
        .header("x-http-method-override", "DELETE")
        .decide(&config);
    assert_missing_identity(&overridden);
    assert_eq!(
        overridden.record.reason,
        "no client identity; method override header"
    );
}

#[test]
fn a_permit_for_any_principal_never_admits_a_caller_without_identity() {
    // The demo set's `anyone-discovers-mount-types` is
    // `permit (principal, action == Action::"sys", resource in Path::"sys/internal/ui/mounts")`.
    let config =
        anonymous_config(r#"@id("everyone-everything") permit (principal, action, resource);"#);
    let named = Call::get("/v1/sys/internal/ui/mounts/secret")
        .header("x-secretgate-principal", "ci-bot")
        .decide(&config);
    assert_eq!(status(&named), 200, "{}", named.record.log_line());
    for target in ["/v1/sys/internal/ui/mounts/secret", "/v1/sys/seal-status"] {
        let verdict = Call::get(target).decide(&config);
        assert_missing_identity(&verdict);
        assert_eq!(verdict.record.policies, Vec::<String>::new());
    }
}

#[test]
fn a_forbid_for_any_principal_still_applies_to_a_caller_without_identity() {
    let config = anonymous_config(
        r#"@id("no-health-from-anyone") forbid (principal, action, resource == Endpoint::"sys/health");"#,
    );
    let verdict = Call::get("/v1/sys/health").decide(&config);
    assert_missing_identity(&verdict);
    assert_eq!(verdict.record.policies, ["no-health-from-anyone"]);
    assert_eq!(
        verdict.record.reason,
        "no client identity; a forbid policy applies"
    );
}

#[test]
fn an_invalid_identity_is_never_downgraded_to_anonymous() {
    let header = anonymous_config("");
    let long = "a".repeat(1025);
    for values in [
        vec!["a", "b"],
        vec![""],
        vec!["bad\u{7}"],
        vec![long.as_str()],
    ] {
        let mut call = Call::get("/v1/sys/health");
        for value in values {
            call = call.header("x-secretgate-principal", value);
        }
        let verdict = call.decide(&header);
        assert_eq!(status(&verdict), 401);
        assert_eq!(errors(&verdict), json!(["invalid client identity"]));
        assert_eq!(verdict.record.principal, None);
    }

    let jwt = load(&config_json(jwt_identity(true), "")).unwrap();
    let allowed = Call::get("/v1/sys/health").decide(&jwt);
    assert_eq!(status(&allowed), 200);
    let no_sub = pairs::encode(&[(b"repository", b"acme/api")]);
    let bad_type = pairs::encode(&[(b"sub", b"x"), (b"iat", b"not-a-number")]);
    for payload in [no_sub, bad_type, b"garbage".to_vec()] {
        let verdict = Call::get("/v1/sys/health").jwt(payload).decide(&jwt);
        assert_eq!(status(&verdict), 401, "{}", verdict.record.log_line());
        assert_eq!(errors(&verdict), json!(["invalid client identity"]));
        assert_eq!(verdict.record.principal, None);
    }

    let mtls = load(&config_json(
        json!({"source": "mtls", "anonymous": true}),
        "",
    ))
    .unwrap();
    assert_eq!(status(&Call::get("/v1/sys/health").decide(&mtls)), 200);
    let not_spiffe = Call::get("/v1/sys/health")
        .peer(b"https://acme.test/x")
        .decide(&mtls);
    assert_eq!(errors(&not_spiffe), json!(["invalid client identity"]));
}

#[test]
fn a_workload_named_anonymous_is_not_the_anonymous_caller() {
    let config = anonymous_config("");
    // Alternating, so a memoised scope of one is never reused for the other.
    for _ in 0..2 {
        let named = Call::get("/v1/sys/health")
            .header("x-secretgate-principal", "anonymous")
            .decide(&config);
        assert_eq!(status(&named), 403, "{}", named.record.log_line());
        assert_eq!(
            named.record.principal,
            Some(("Workload".into(), "anonymous".into()))
        );
        let anonymous = Call::get("/v1/sys/health").decide(&config);
        assert_eq!(status(&anonymous), 200);
    }
}

#[test]
fn anonymous_needs_the_unauthenticated_type_in_the_schema() {
    let without_type = policy_file("schema.cedarschema")
        .replace("entity Unauthenticated;", "")
        .replace(", Unauthenticated]", "]");
    let mut config = config_json(header_identity(true), "");
    config["schema"] = json!(without_type);
    config["policies"] = json!(policy_file("policies.cedar"));
    let error = load(&config).unwrap_err().to_string();
    assert!(error.starts_with("identity: "), "{error}");
    assert!(error.contains("Unauthenticated"), "{error}");
    // Without the opt-in the same schema loads.
    config["identity"] = header_identity(false);
    load(&config).unwrap();

    // A bundle is held to it too.
    let mut with_bundle = config_json(header_identity(true), "");
    with_bundle["bundle"] = json!({"cluster": "bundles", "authority": "bundles.local"});
    let bundled = load(&with_bundle).unwrap();
    let bundle = secretgate::bundle::Bundle {
        schema: Some(without_type),
        policies: Some(policy_file("policies.cedar")),
        ..Default::default()
    };
    let error = bundled.with_bundle(bundle).unwrap_err().to_string();
    assert!(error.contains("Unauthenticated"), "{error}");
}

#[test]
fn unauthenticated_is_no_configurable_principal_type_and_is_never_approved() {
    let mut config = config_json(header_identity(false), "");
    config["identity"]["principal_type"] = json!("Unauthenticated");
    let error = load(&config).unwrap_err().to_string();
    assert!(error.contains("principal_type"), "{error}");

    let mut config = config_json(
        header_identity(true),
        r#"@id("approve-anonymous") @approval("secops")
           permit (principal is Unauthenticated, action == Action::"sys", resource == Endpoint::"sys/seal-status");"#,
    );
    config["approval"] = json!({"cluster": "approver", "authority": "approver.local"});
    let error = load(&config).unwrap_err().to_string();
    assert!(error.contains("approve-anonymous"), "{error}");
    assert!(error.contains("cannot be approved"), "{error}");
}

#[test]
fn anonymous_is_a_boolean() {
    let mut config = config_json(header_identity(true), "");
    config["identity"]["anonymous"] = json!("yes");
    assert!(matches!(load(&config), Err(ConfigError::Json(_))));
}

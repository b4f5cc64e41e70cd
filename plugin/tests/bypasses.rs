//! The bypasses of issue #14, decided natively end to end through
//! `Config::decide`: one operation gets one action, one resource and one
//! `context.namespace` however it is spelled, and a forbid on a resource
//! covers every route that touches it.

use secretgate::config::Config;
use secretgate::gate::{RequestFacts, Verdict, VerdictAction};
use secretgate::record::Outcome;
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

fn config(policies: &str) -> Config {
    config_with_schema(SCHEMA, policies)
}

fn config_with_schema(schema: &str, policies: &str) -> Config {
    let config = json!({
        "schema": schema,
        "policies": policies,
        "namespaces": ["nsx", "team/a"],
        "mounts": {
            "secret": "kv-v2",
            "nsx/secret": "kv-v2",
            "team/a/secret": "kv-v2",
            "pki": "pki",
            "transit": "transit",
            "nsx/transit": "transit",
        },
        "identity": {"source": "header"},
    });
    Config::from_json(config.to_string().as_bytes()).expect("configuration loads")
}

struct Call<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
}

fn call<'a>(method: &'a str, target: &'a str) -> Call<'a> {
    Call {
        method,
        target,
        headers: vec![
            (b"x-secretgate-principal", b"team"),
            (b"x-request-id", b"r-1"),
        ],
    }
}

impl<'a> Call<'a> {
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name.as_bytes(), value.as_bytes()));
        self
    }
    fn namespace(self, namespace: &'a str) -> Self {
        self.header("x-vault-namespace", namespace)
    }
    fn decide(&self, config: &Config) -> Verdict {
        config.decide(&RequestFacts {
            method: self.method,
            target: self.target,
            headers: &self.headers,
            source_address: Some("127.0.0.1:40000"),
            now_nanos: 1_700_000_100_000_000_000,
            jwt_payload: None,
            peer_uri_san: None,
        })
    }
}

fn status(verdict: &Verdict) -> u32 {
    match &verdict.action {
        VerdictAction::Forward(_) => 200,
        VerdictAction::Respond { status, .. } => *status,
        VerdictAction::AskApproval { .. } => 0,
    }
}

fn error(verdict: &Verdict) -> String {
    match &verdict.action {
        VerdictAction::Respond { body, .. } => {
            let body: Value = serde_json::from_str(body).expect("error body is JSON");
            body["errors"][0].as_str().unwrap_or_default().to_owned()
        }
        _ => String::new(),
    }
}

fn resource(verdict: &Verdict) -> String {
    verdict
        .record
        .resource
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Every spelling: the same decision, action, resource and namespace.
fn assert_one_meaning(config: &Config, calls: &[Call<'_>], status_want: u32, resource_want: &str) {
    for call in calls {
        let verdict = call.decide(config);
        let label = format!("{} {} {:?}", call.method, call.target, call.headers);
        assert_eq!(
            status(&verdict),
            status_want,
            "{label}: {}",
            verdict.record.log_line()
        );
        assert_eq!(resource(&verdict), resource_want, "{label}");
    }
}

#[test]
fn builtins_are_recognised_in_a_namespace_written_in_the_path() {
    let config = config(
        r#"
        @id("team-owns-nsx") permit (principal == Workload::"team", action, resource in Path::"nsx");
        @id("never-unwrap") forbid (principal, action == Action::"unwrap", resource);
        @id("never-sys") forbid (principal, action == Action::"sys", resource);
        "#,
    );
    assert_one_meaning(
        &config,
        &[
            call("POST", "/v1/nsx/sys/wrapping/unwrap"),
            call("POST", "/v1/sys/wrapping/unwrap").namespace("nsx"),
            call("PUT", "/v1/nsx//sys/wrapping/unwrap/"),
            call("GET", "/v1/nsx/cubbyhole/response"),
            call("GET", "/v1/cubbyhole/response").namespace("/nsx/"),
        ],
        403,
        "Endpoint::\"nsx/sys/wrapping/unwrap\"",
    );
    let verdict = call("POST", "/v1/nsx/sys/wrapping/unwrap").decide(&config);
    assert_eq!(verdict.record.policies, ["never-unwrap"]);
    assert_one_meaning(
        &config,
        &[
            call("PUT", "/v1/nsx/sys/policies/acl/escalate"),
            call("PUT", "/v1/sys/policies/acl/escalate").namespace("nsx"),
        ],
        403,
        "Endpoint::\"nsx/sys/policies/acl/escalate\"",
    );
}

#[test]
fn context_namespace_is_the_same_in_every_spelling() {
    let config = config(
        r#"
        @id("reads") permit (principal, action == Action::"read", resource);
        @id("not-in-nsx") forbid (principal, action, resource) when { context.namespace == "nsx" };
        @id("not-in-team-a") forbid (principal, action, resource) when { context.namespace == "team/a" };
        "#,
    );
    assert_one_meaning(
        &config,
        &[
            call("GET", "/v1/nsx/secret/data/prod/db"),
            call("GET", "/v1/secret/data/prod/db").namespace("nsx"),
            call("GET", "/v1/secret/data/prod/db").namespace("/nsx/"),
            call("GET", "/v1/nsx/secret/data/prod/db").namespace("root"),
        ],
        403,
        "Secret::\"nsx/secret/prod/db\"",
    );
    assert_one_meaning(
        &config,
        &[
            call("GET", "/v1/team/a/secret/data/app"),
            call("GET", "/v1/a/secret/data/app").namespace("team"),
            call("GET", "/v1/secret/data/app").namespace("team/a"),
        ],
        403,
        "Secret::\"team/a/secret/app\"",
    );
    let split = call("GET", "/v1/a/secret/data/app")
        .namespace("team")
        .decide(&config);
    assert_eq!(split.record.namespace, "team/a");
    assert_eq!(split.record.policies, ["not-in-team-a"]);
    // The root namespace is untouched by either forbid.
    let root = call("GET", "/v1/secret/data/prod/db").decide(&config);
    assert_eq!(status(&root), 200);
    assert_eq!(root.record.namespace, "");
}

#[test]
fn a_namespace_in_the_path_is_forwarded_in_the_header() {
    let config = config(r#"@id("all") permit (principal, action, resource);"#);
    let verdict = call("GET", "/v1/a/secret/data/app?version=2")
        .namespace("team")
        .decide(&config);
    let VerdictAction::Forward(edits) = &verdict.action else {
        panic!("not forwarded: {}", verdict.record.log_line());
    };
    assert_eq!(edits.namespace.as_deref(), Some("team/a"));
    assert_eq!(edits.path.as_deref(), Some("/v1/secret/data/app?version=2"));
    let canonical = call("GET", "/v1/secret/data/app")
        .namespace("team/a")
        .decide(&config);
    let VerdictAction::Forward(edits) = &canonical.action else {
        panic!("not forwarded");
    };
    assert_eq!(edits.namespace, None);
    assert_eq!(edits.path, None);
}

#[test]
fn an_undeclared_namespace_or_an_unmounted_path_is_refused() {
    let config = config(r#"@id("all") permit (principal, action, resource);"#);
    for (call, reason) in [
        (
            call("POST", "/v1/sys/wrapping/unwrap").namespace("nsy"),
            "undeclared namespace",
        ),
        (
            call("GET", "/v1/secret/data/x").namespace("team/b"),
            "undeclared namespace",
        ),
        (
            call("POST", "/v1/nsy/sys/wrapping/unwrap"),
            "path is under no configured mount",
        ),
        (
            call("GET", "/v1/nsx/kv/data/x"),
            "path is under no configured mount",
        ),
        (
            call("GET", "/v1/unknown/x"),
            "path is under no configured mount",
        ),
    ] {
        let verdict = call.decide(&config);
        assert_eq!(status(&verdict), 400, "{}", call.target);
        assert_eq!(verdict.record.outcome, Outcome::BadRequest);
        assert_eq!(error(&verdict), format!("invalid request path: {reason}"));
        assert_eq!(verdict.record.reason, reason);
        assert_eq!(verdict.record.action, None, "never classified as other");
    }
}

#[test]
fn a_forbidden_pki_role_is_forbidden_on_every_route_that_uses_it() {
    let config = config(
        r#"
        @id("pki") permit (principal, action, resource in Path::"pki");
        @id("not-admin") forbid (principal, action, resource == Secret::"pki/issue/admin");
        @id("not-the-ca") forbid (principal, action == Action::"issue", resource in Path::"pki/issuer");
        "#,
    );
    for target in [
        "/v1/pki/issue/admin",
        "/v1/pki/sign/admin",
        "/v1/pki/sign-verbatim/admin",
        "/v1/pki/issuer/default/issue/admin",
        "/v1/pki/issuer/7f1c/sign/admin",
        "/v1/pki/issuer/default/sign-verbatim/admin",
        "/v1/pki/roles/admin",
        "/v1/pki/roles/admin/acme/new-order",
    ] {
        let verdict = call("POST", target).decide(&config);
        assert_eq!(status(&verdict), 403, "{target}");
        assert_eq!(
            resource(&verdict),
            "Secret::\"pki/issue/admin\"",
            "{target}"
        );
    }
    for target in [
        "/v1/pki/root/sign-intermediate",
        "/v1/pki/root/sign-self-issued",
        "/v1/pki/issuer/default/sign-intermediate",
        "/v1/pki/root/generate/exported",
    ] {
        let verdict = call("POST", target).decide(&config);
        assert_eq!(status(&verdict), 403, "{target}");
        assert_eq!(verdict.record.policies, ["not-the-ca"], "{target}");
    }
    assert_eq!(
        status(&call("POST", "/v1/pki/issue/web").decide(&config)),
        200
    );
}

#[test]
fn login_names_are_compared_as_openbao_resolves_them() {
    let config = config(
        r#"
        @id("logins") permit (principal, action == Action::"login", resource);
        @id("not-admin") forbid (principal, action == Action::"login", resource == Endpoint::"auth/userpass/login/admin");
        "#,
    );
    for target in [
        "/v1/auth/userpass/login/admin",
        "/v1/auth/userpass/login/ADMIN",
        "/v1/auth/userpass/login/Admin",
        "/v1/auth/userpass/login/%41DMIN",
    ] {
        let verdict = call("POST", target).decide(&config);
        assert_eq!(status(&verdict), 403, "{target}");
    }
    assert_eq!(
        status(&call("POST", "/v1/auth/userpass/login/alice").decide(&config)),
        200
    );
}

#[test]
fn inline_authentication_is_refused_and_never_forwarded() {
    let config = config(r#"@id("all") permit (principal, action, resource);"#);
    for (name, value) in [
        ("x-vault-inline-auth-path", "auth/userpass/login/admin"),
        (
            "X-Vault-Inline-Auth-Parameter-password",
            "eyJrZXkiOiJwYXNzd29yZCJ9",
        ),
        ("x-vault-inline-auth-namespace", "nsx"),
        ("x-vault-inline-auth-operation", "update"),
    ] {
        let verdict = call("GET", "/v1/secret/data/app")
            .header(name, value)
            .decide(&config);
        assert_eq!(status(&verdict), 400, "{name}");
        assert_eq!(error(&verdict), "inline authentication is not supported");
        let rendered = format!("{verdict:?}");
        assert!(
            !rendered.contains(value),
            "the header's value must not be recorded"
        );
    }
}

#[test]
fn a_forbid_on_a_transit_key_covers_every_route_that_touches_it() {
    let config = config(
        r#"
        @id("transit") permit (principal, action, resource in Path::"transit");
        @id("not-prod") forbid (principal, action, resource == Secret::"transit/keys/prod");
        "#,
    );
    for (method, target) in [
        ("GET", "/v1/transit/byok-export/mine/prod"),
        ("GET", "/v1/transit/byok-export/mine/prod/1"),
        ("POST", "/v1/transit/keys/prod/config"),
        ("GET", "/v1/transit/export/encryption-key/prod"),
        ("GET", "/v1/transit/backup/prod"),
        ("POST", "/v1/transit/restore/prod"),
        ("POST", "/v1/transit/decrypt/prod"),
        ("POST", "/v1/transit/encrypt/prod"),
        ("POST", "/v1/transit/rewrap/prod"),
        ("POST", "/v1/transit/datakey/plaintext/prod"),
        ("POST", "/v1/transit/datakey/wrapped/prod"),
        ("POST", "/v1/transit/hmac/prod/sha2-256"),
        ("POST", "/v1/transit/sign/prod"),
        ("POST", "/v1/transit/verify/prod"),
        ("POST", "/v1/transit/derive-key/prod"),
        ("DELETE", "/v1/transit/keys/prod/soft-delete"),
        ("POST", "/v1/transit/keys/prod/rotate"),
    ] {
        let verdict = call(method, target).decide(&config);
        assert_eq!(status(&verdict), 403, "{method} {target}");
        assert_eq!(verdict.record.policies, ["not-prod"], "{method} {target}");
    }
    assert_eq!(
        status(&call("GET", "/v1/transit/byok-export/prod/mine").decide(&config)),
        200,
        "the destination key is not exported"
    );
}

#[test]
fn listing_detailed_metadata_reads_the_folder() {
    let config = config(
        r#"
        @id("list-prod") permit (principal, action == Action::"list", resource in Path::"secret/prod");
        "#,
    );
    let detailed = call("LIST", "/v1/secret/detailed-metadata/prod").decide(&config);
    assert_eq!(status(&detailed), 403);
    assert_eq!(detailed.record.action.map(|a| a.as_str()), Some("read"));
    assert_eq!(resource(&detailed), "Path::\"secret/prod\"");
    let names = call("LIST", "/v1/secret/metadata/prod").decide(&config);
    assert_eq!(status(&names), 200);
}

#[test]
fn a_folder_covers_the_secret_of_the_same_name() {
    let config = config(
        r#"
        @id("reads") permit (principal, action, resource in Path::"secret");
        @id("not-prod") forbid (principal, action, resource in Path::"secret/prod");
        "#,
    );
    for target in [
        "/v1/secret/data/prod",
        "/v1/secret/data/prod/",
        "/v1/secret/metadata/prod",
        "/v1/secret/data/prod/db",
    ] {
        let verdict = call("GET", target).decide(&config);
        assert_eq!(status(&verdict), 403, "{target}");
    }
    assert_eq!(
        status(&call("GET", "/v1/secret/data/production").decide(&config)),
        200
    );
}

#[test]
fn query_flags_follow_openbao() {
    let config = config(
        r#"@id("list") permit (principal, action == Action::"list", resource in Path::"secret");"#,
    );
    for target in [
        "/v1/secret/metadata/ci?list=true&list=false",
        "/v1/secret/metadata/ci?scan=true",
    ] {
        let verdict = call("GET", target).decide(&config);
        assert_eq!(status(&verdict), 200, "{target}");
        assert_eq!(verdict.record.action.map(|a| a.as_str()), Some("list"));
    }
    let read = call("GET", "/v1/secret/metadata/ci?list=false&list=true").decide(&config);
    assert_eq!(status(&read), 403, "a read, which list does not permit");
}

#[test]
fn a_schema_without_the_use_action_loads_and_denies_key_use() {
    let old_schema = SCHEMA.replace("decrypt, use, unwrap", "decrypt, unwrap");
    assert_ne!(old_schema, SCHEMA);
    let config = config_with_schema(
        &old_schema,
        r#"@id("transit") permit (principal, action, resource in Path::"transit");"#,
    );
    let encrypt = call("POST", "/v1/transit/encrypt/app").decide(&config);
    assert_eq!(status(&encrypt), 403);
    assert_eq!(encrypt.record.outcome, Outcome::EvaluationError);
    assert!(
        encrypt.record.errors.iter().any(|e| e.contains("\"use\"")),
        "{:?}",
        encrypt.record.errors
    );
    assert_eq!(
        status(&call("POST", "/v1/transit/decrypt/app").decide(&config)),
        200
    );
    let current = config_with_schema(
        SCHEMA,
        r#"@id("transit") permit (principal, action, resource in Path::"transit");"#,
    );
    assert_eq!(
        status(&call("POST", "/v1/transit/encrypt/app").decide(&current)),
        200
    );
}

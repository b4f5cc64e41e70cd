//! Issue #15's leaks, decided natively through `Config::decide`: a token in
//! a query string never reaches the record, the token HMAC names the token
//! OpenBao uses, and a LIST's record counts the names its answer holds.

use secretgate::config::Config;
use secretgate::gate::{RequestFacts, Verdict};
use serde_json::json;

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const KEY: &str = "an-audit-key-of-some-length";

fn config(mode: &str) -> Config {
    let audit = match mode {
        "hmac-sha256" => json!({"mode": "hmac-sha256", "hmac_key": KEY}),
        _ => json!({"mode": "redact"}),
    };
    let config = json!({
        "schema": SCHEMA,
        "policies": r#"@id("lists") permit (principal, action == Action::"list", resource);"#,
        "mounts": {"secret": "kv-v2"},
        "identity": {"source": "header"},
        "audit": audit,
    });
    Config::from_json(config.to_string().as_bytes()).expect("configuration loads")
}

fn decide(config: &Config, method: &str, target: &str, extra: &[(&str, &str)]) -> Verdict {
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"x-secretgate-principal", b"ci")];
    headers.extend(extra.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    config.decide(&RequestFacts {
        method,
        target,
        headers: &headers,
        source_address: Some("127.0.0.1:40000"),
        now_nanos: 1_700_000_100_000_000_000,
        jwt_payload: None,
        peer_uri_san: None,
    })
}

#[test]
fn query_values_are_masked_in_the_record_and_flags_stay_readable() {
    let keyed = config("hmac-sha256");
    let token = "hvs.query-token-canary";
    for target in [
        format!("/v1/auth/token/lookup?token={token}"),
        format!("/v1/sys/wrapping/lookup?token={token}"),
        "/v1/auth/token/lookup?x=1&token=hvs.query%2Dtoken%2Dcanary".to_string(),
    ] {
        let verdict = decide(&keyed, "GET", &target, &[]);
        let record = &verdict.record;
        assert!(!record.path.contains("canary"), "{}", record.path);
        assert!(!format!("{verdict:?}").contains("canary"));
        // The HMAC of the decoded value, so `secretgate hmac` finds it.
        let hmac = keyed.audit.hmac_hex(token.as_bytes()).expect("hmac mode");
        assert!(
            record.path.contains(&format!("token={hmac}")),
            "{}",
            record.path
        );
    }
    let redacted = decide(
        &config("redact"),
        "GET",
        "/v1/auth/token/lookup?token=hvs.query-token-canary&flag",
        &[],
    );
    assert_eq!(
        redacted.record.path,
        "/v1/auth/token/lookup?token=redacted&flag"
    );
    let flags = decide(
        &keyed,
        "GET",
        "/v1/secret/metadata/ci?list=true&version=2&scan=",
        &[],
    );
    assert_eq!(
        flags.record.path,
        "/v1/secret/metadata/ci?list=true&version=2&scan="
    );
    let not_flags = decide(
        &config("redact"),
        "GET",
        "/v1/secret/metadata/ci?list=hvs.x&version=v2",
        &[],
    );
    assert_eq!(
        not_flags.record.path,
        "/v1/secret/metadata/ci?list=redacted&version=redacted"
    );
}

#[test]
fn the_token_hmac_names_the_token_openbao_uses() {
    let keyed = config("hmac-sha256");
    let hmac = |token: &str| keyed.audit.hmac_hex(token.as_bytes());
    let target = "/v1/secret/metadata/ci?list=true";
    for (headers, used) in [
        (vec![("x-vault-token", "hvs.A")], "hvs.A"),
        (
            vec![("x-vault-token", ""), ("authorization", "Bearer hvs.B")],
            "hvs.B",
        ),
        (vec![("authorization", "Bearer  hvs.B ")], "hvs.B"),
        (vec![("authorization", "Bearer \u{a0}hvs.B")], "hvs.B"),
        (
            vec![
                ("x-vault-token", "hvs.A"),
                ("authorization", "Bearer hvs.B"),
            ],
            "hvs.A",
        ),
        (
            vec![
                ("authorization", "Basic dXNlcjpwdw=="),
                ("authorization", "Bearer hvs.B"),
            ],
            "hvs.B",
        ),
    ] {
        let verdict = decide(&keyed, "GET", target, &headers);
        assert_eq!(verdict.record.token_hmac, hmac(used), "{headers:?}");
    }
    for headers in [
        vec![("authorization", "bearer hvs.B")],
        vec![("authorization", "Bearer   ")],
        vec![("x-vault-token", "")],
    ] {
        let verdict = decide(&keyed, "GET", target, &headers);
        assert_eq!(verdict.record.token_hmac, None, "{headers:?}");
    }
}

#[test]
fn a_listing_is_marked_whatever_its_action() {
    let keyed = config("hmac-sha256");
    let detailed = decide(&keyed, "LIST", "/v1/secret/detailed-metadata/prod", &[]);
    assert!(detailed.record.listing);
    let scan = decide(&keyed, "GET", "/v1/secret/metadata/prod?scan=true", &[]);
    assert!(scan.record.listing);
    let read = decide(&keyed, "GET", "/v1/secret/data/prod", &[]);
    assert!(!read.record.listing);
}

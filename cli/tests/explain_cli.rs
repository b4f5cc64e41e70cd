//! `secretgate explain` as an operator runs it, on the repository's demo
//! policy set (`policies/`, mounts from `policies/config.json`).

use std::process::{Command, Output};

use serde_json::{json, Value};

const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/config.json");
const SECRET: &str = "/v1/secret/data/ci/acme/api/db";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secretgate"))
        .arg("explain")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run secretgate: {e}"))
}

/// Explains a GET on the demo policies; returns stdout, asserting exit 0.
fn explain(path: &str, principal: &str, claims: &str) -> String {
    let output = run(&[
        "--policies",
        POLICIES,
        "--config",
        CONFIG,
        "--method",
        "GET",
        "--path",
        path,
        "--principal",
        principal,
        "--claims",
        claims,
        "--time",
        "2025-01-31T10:30:00+01:00",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn assert_lines(text: &str, lines: &[&str]) {
    let found: Vec<&str> = text.lines().collect();
    for line in lines {
        assert!(found.contains(line), "{line:?} not in\n{text}");
    }
}

/// The policies listed under "policies whose scope matches", in order.
fn matched(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|line| !line.starts_with("policies whose scope matches"))
        .skip(1)
        .filter(|line| line.starts_with("  "))
        .map(str::trim)
        .collect()
}

const CI_SECRET_CLASSIFICATION: [&str; 5] = [
    "mount: secret (kv-v2)",
    "action: read",
    r#"resource: Secret::"secret/ci/acme/api/db""#,
    r#"parents: Path::"secret/ci/acme/api/db", Path::"secret/ci/acme/api", Path::"secret/ci/acme", Path::"secret/ci", Path::"secret""#,
    r#"  repository = "acme/api" (on Secret::"secret/ci/acme/api/db", Path::"secret/ci/acme/api/db", Path::"secret/ci/acme/api")"#,
];

#[test]
fn an_allowed_request() {
    let text = explain(
        SECRET,
        "repo:acme/api:ref:refs/heads/main",
        r#"{"repository": "acme/api", "ref_protected": "true"}"#,
    );
    assert_lines(&text, &CI_SECRET_CLASSIFICATION);
    assert_lines(
        &text,
        &[
            r#"principal: Workload::"repo:acme/api:ref:refs/heads/main""#,
            "time: 2025-01-31T09:30:00.000Z (context.now = 1738315800)",
            "recent_reads: not in the context (the schema does not declare it)",
            "decision: allow",
            "determining policies: ci-reads-own-repository",
            "errors: none",
        ],
    );
    assert_eq!(
        matched(&text),
        [
            "ci-reads-own-repository (permit): applies (determining)",
            "ci-protected-branches-only (forbid): condition was false",
        ]
    );
}

#[test]
fn a_request_denied_by_a_forbid() {
    // vendor-sync is in `release` and `contractors`: the release permit's
    // scope matches (its condition wants an environment claim), and the
    // contractors' forbid applies.
    let text = explain(
        "/v1/secret/data/prod/db",
        "repo:acme/vendor-sync:ref:refs/heads/main",
        r#"{"repository": "acme/vendor-sync"}"#,
    );
    assert_lines(
        &text,
        &[
            "mount: secret (kv-v2)",
            "action: read",
            r#"resource: Secret::"secret/prod/db""#,
            r#"parents: Path::"secret/prod/db", Path::"secret/prod", Path::"secret""#,
            "template attributes: none",
            "decision: deny",
            "determining policies: contractors-never-production",
        ],
    );
    assert_eq!(
        matched(&text),
        [
            "release-reads-production (permit): condition was false",
            "contractors-never-production (forbid): applies (determining)",
        ]
    );
}

#[test]
fn a_default_deny() {
    // acme/web's job reads acme/api's secret: the permit's condition
    // compares repositories and is false; the branch is protected, so the
    // forbid's is false too. No permit applies.
    let text = explain(
        SECRET,
        "repo:acme/web:ref:refs/heads/main",
        r#"{"repository": "acme/web", "ref_protected": "true"}"#,
    );
    assert_lines(&text, &CI_SECRET_CLASSIFICATION);
    assert_lines(
        &text,
        &[
            "decision: deny",
            "determining policies: none (no permit applies: Cedar denies by default)",
        ],
    );
    assert_eq!(
        matched(&text),
        [
            "ci-reads-own-repository (permit): condition was false",
            "ci-protected-branches-only (forbid): condition was false",
        ]
    );
}

#[test]
fn json_output_says_the_same() {
    let output = run(&[
        "--policies",
        POLICIES,
        "--config",
        CONFIG,
        "--method",
        "GET",
        "--path",
        SECRET,
        "--principal",
        "repo:acme/api:ref:refs/heads/feature-x",
        "--claims",
        r#"{"repository": "acme/api", "ref_protected": "false"}"#,
        "--source-ip",
        "10.0.0.7",
        "--time",
        "2025-01-31T09:30:00Z",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let explained: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(explained["decision"], json!("deny"));
    assert_eq!(
        explained["determining_policies"],
        json!(["ci-protected-branches-only"])
    );
    assert_eq!(
        explained["policies"],
        json!([
            {"id": "ci-reads-own-repository", "effect": "permit", "outcome": "overruled"},
            {"id": "ci-protected-branches-only", "effect": "forbid", "outcome": "determining"},
        ])
    );
    assert_eq!(
        explained["context"],
        json!({
            "method": "GET",
            "claims": {"repository": "acme/api", "ref_protected": "false"},
            "source_ip": {"__extn": {"fn": "ip", "arg": "10.0.0.7"}},
            "now": 1_738_315_800,
            "namespace": "",
        })
    );
}

#[test]
fn what_the_filter_would_refuse_exits_2() {
    let base = [
        "--policies",
        POLICIES,
        "--config",
        CONFIG,
        "--method",
        "GET",
        "--path",
        SECRET,
    ];
    for (extra, message) in [
        // The demo configuration has no identity.anonymous: a request
        // without identity is answered 401.
        (&[][..], "identity.anonymous"),
        (
            &["--principal", "w", "--claims", r#"{"iat": "x"}"#][..],
            "iat",
        ),
        (
            &["--principal", "w", "--time", "2025-02-29T00:00:00Z"][..],
            "--time",
        ),
        (
            &["--principal", "w", "--source-ip", "localhost"][..],
            "--source-ip",
        ),
        (
            &["--principal", "w", "--recent-reads", "1"][..],
            "recent_reads",
        ),
        (
            &["--principal", "w", "--bundle", "x.json"][..],
            "--policies or --bundle",
        ),
        (&["--principal", "w", "--principal", "v"][..], "twice"),
        (&["--principal", "w", "--verbose"][..], "unknown argument"),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{extra:?}");
    }
}

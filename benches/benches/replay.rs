//! `secretgate replay` and the shadow policy set, natively, on the
//! generated set of 1,000 policies (`secretgate_benches::policyset`):
//!
//! - `replay/records`: audit records the filter's gate wrote (10,000 of
//!   them: every team's workload reading its own secrets and the next
//!   team's) read from log lines and decided again under the same policies,
//!   as `secretgate replay` does; criterion reports records per second;
//! - `decide_shadow/{allow,deny}/{live_only,with_shadow}`: the filter's whole
//!   native decision without and with a shadow policy set (the same 1,000
//!   policies plus one forbid), what a shadow adds to every request.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use secretgate::audit::{self, ResponseFacts};
use secretgate::bundle::Bundle;
use secretgate::config::Config;
use secretgate::gate::RequestFacts;
use secretgate::replay::{Replayer, Summary};
use secretgate_benches::policyset::{BenchRequest, PolicySet};

const POLICIES: usize = 1_000;
const RECORDS: usize = 10_000;
const NOW_NANOS: u64 = 1_800_000_000_000_000_000;

fn facts<'a>(request: &'a BenchRequest, headers: &'a [(&'a [u8], &'a [u8])]) -> RequestFacts<'a> {
    RequestFacts {
        method: request.method,
        target: &request.path,
        headers,
        source_address: Some("127.0.0.1:53412"),
        now_nanos: NOW_NANOS,
        jwt_payload: None,
        peer_uri_san: None,
    }
}

/// One audit record per request, as the filter writes it.
fn record_line(config: &Config, request: &BenchRequest, id: usize) -> String {
    let id = format!("bench-{id}");
    let headers: [(&[u8], &[u8]); 3] = [
        (b"x-secretgate-principal", request.principal.as_bytes()),
        (b"x-request-id", id.as_bytes()),
        (b"x-vault-token", b"s.benchmark-token"),
    ];
    let verdict = config.decide(&facts(request, &headers));
    audit::render(&config.audit, &verdict.record, &ResponseFacts::default())
}

fn replay(c: &mut Criterion) {
    let set = PolicySet::generate(POLICIES);
    let live = Config::from_json(set.filter_config().to_string().as_bytes()).expect("live config");
    // Every team's first workload, reading its own secret and the next team's.
    let lines: Vec<String> = (0..RECORDS)
        .map(|i| {
            let team = (i / 2) % set.teams;
            let read = if i % 2 == 0 {
                team
            } else {
                (team + 1) % set.teams
            };
            let request = BenchRequest {
                principal: format!("svc-{team:05}-0-0"),
                method: "GET",
                path: format!("/v1/secret/data/teams/team-{read:05}/app-0/db"),
                secret_path: String::new(),
            };
            record_line(&live, &request, i)
        })
        .collect();
    let candidate = Config::for_tools(
        set.filter_config().to_string().as_bytes(),
        Bundle::default(),
    )
    .expect("candidate config");
    let replayer = Replayer::new(&candidate).expect("replayer");
    let check = replay_all(&replayer, &lines);
    assert_eq!(check.replayed, RECORDS, "{}", check.to_text());
    assert!(check.changes.is_empty(), "{}", check.to_text());

    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(BenchmarkId::new("records", POLICIES), |b| {
        b.iter(|| replay_all(&replayer, &lines))
    });
    group.finish();
}

fn replay_all(replayer: &Replayer<'_>, lines: &[String]) -> Summary {
    let mut summary = Summary::default();
    for line in lines {
        summary.add_line(replayer, line);
    }
    summary
}

fn shadow(c: &mut Criterion) {
    let set = PolicySet::generate(POLICIES);
    let live = Config::from_json(set.filter_config().to_string().as_bytes()).expect("live config");
    let mut shadowed_json = set.filter_config();
    shadowed_json["shadow"] = serde_json::json!({"cluster": "shadow", "authority": "shadow.local"});
    let stricter = format!(
        "{}\n@id(\"bench-shadow-forbid\")\nforbid (principal, action, resource in Path::\"secret/teams/team-00000\");\n",
        set.policies
    );
    let shadowed = Config::from_json(shadowed_json.to_string().as_bytes())
        .and_then(|config| {
            config.with_shadow(Bundle {
                policies: Some(stricter),
                ..Bundle::default()
            })
        })
        .expect("shadowed config");
    let mut group = c.benchmark_group("decide_shadow");
    group.measurement_time(Duration::from_secs(3));
    for (label, request) in [("allow", set.allow_request()), ("deny", set.deny_request())] {
        let headers: [(&[u8], &[u8]); 3] = [
            (b"x-secretgate-principal", request.principal.as_bytes()),
            (b"x-request-id", b"0f6f3c5e-2b1a-4c8e-9d7f-bench"),
            (b"x-vault-token", b"s.benchmark-token"),
        ];
        let with_shadow = shadowed.decide(&facts(&request, &headers));
        assert!(
            with_shadow.record.shadow.is_some(),
            "the shadow is evaluated"
        );
        for (variant, config) in [("live_only", &live), ("with_shadow", &shadowed)] {
            group.bench_function(BenchmarkId::new(label, variant), |b| {
                b.iter(|| config.decide(&facts(&request, &headers)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, replay, shadow);
criterion_main!(benches);

//! Cedar at 10, 100, 1,000 and 10,000 generated policies (see
//! `secretgate_benches::policyset`: per-team folder permits, claim- and
//! IP-guarded permits, forbids, workloads four groups deep):
//!
//! - `policy_evaluate`: one evaluation (request and entity-slice
//!   construction plus Cedar's authorizer) for the load benchmark's allow
//!   and deny requests;
//! - `decide`: the filter's whole per-request decision natively (identity,
//!   classification, evaluation, decision record);
//! - `policy_load`: parsing and strictly validating the whole configuration
//!   (schema, policies, entities), what Envoy does once at load.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use secretgate::config::Config;
use secretgate::gate::{RequestFacts, VerdictAction};
use secretgate::identity::Principal;
use secretgate::policy::AccessRequest;
use secretgate_benches::policyset::{BenchRequest, PolicySet};
use serde_json::Map;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const NOW_NANOS: u64 = 1_800_000_000_000_000_000;

fn load(set: &PolicySet) -> Config {
    Config::from_json(set.filter_config().to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{} policies: {e}", set.policy_count))
}

fn decide(config: &Config, request: &BenchRequest) -> bool {
    let headers: [(&[u8], &[u8]); 3] = [
        (b"x-secretgate-principal", request.principal.as_bytes()),
        (b"x-request-id", b"0f6f3c5e-2b1a-4c8e-9d7f-bench"),
        (b"x-vault-token", b"s.benchmark-token"),
    ];
    let verdict = config.decide(&RequestFacts {
        method: request.method,
        target: &request.path,
        headers: &headers,
        source_address: Some("127.0.0.1:53412"),
        now_nanos: NOW_NANOS,
        jwt_payload: None,
        peer_uri_san: None,
    });
    matches!(verdict.action, VerdictAction::Forward(_))
}

fn evaluate(c: &mut Criterion) {
    let mut evaluate = c.benchmark_group("policy_evaluate");
    evaluate.measurement_time(Duration::from_secs(3));
    let sets: Vec<(PolicySet, Config)> = SIZES
        .iter()
        .map(|&n| {
            let set = PolicySet::generate(n);
            let config = load(&set);
            (set, config)
        })
        .collect();
    for (set, config) in &sets {
        for (label, request, want) in [
            ("allow", set.allow_request(), true),
            ("deny", set.deny_request(), false),
        ] {
            assert_eq!(
                decide(config, &request),
                want,
                "{label} {}",
                set.policy_count
            );
            let classification = config
                .mounts
                .classify(&secretgate::classify::HttpRequest {
                    method: request.method,
                    target: &request.path,
                    namespace: None,
                })
                .unwrap_or_else(|e| panic!("{e:?}"));
            let principal = Principal {
                entity_type: "Workload".into(),
                id: request.principal.clone(),
                claims: Map::new(),
            };
            let access = AccessRequest {
                principal: &principal,
                action: classification.action,
                resource: &classification.resource,
                method: request.method,
                source_ip: "127.0.0.1",
                now_secs: 1_800_000_000,
                namespace: "",
                recent_reads: None,
            };
            let engine = config
                .engine
                .as_ref()
                .expect("inline policies load an engine");
            evaluate.bench_with_input(
                BenchmarkId::new(label, set.policy_count),
                &access,
                |b, access| b.iter(|| engine.evaluate(access)),
            );
        }
    }
    evaluate.finish();

    let mut whole = c.benchmark_group("decide");
    whole.measurement_time(Duration::from_secs(3));
    for (set, config) in &sets {
        for (label, request) in [("allow", set.allow_request()), ("deny", set.deny_request())] {
            whole.bench_with_input(
                BenchmarkId::new(label, set.policy_count),
                &request,
                |b, request| b.iter(|| decide(config, request)),
            );
        }
    }
    whole.finish();
}

fn load_and_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_load");
    // 10,000 policies take seconds per load: keep the sample count minimal.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let text = PolicySet::generate(n).filter_config().to_string();
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| {
                Config::from_json(text.as_bytes()).map(|c| c.engine.map(|e| e.policy_count()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate, load_and_validate);
criterion_main!(benches);

//! The whole filter's per-request cost inside wasmtime: the compiled
//! secretgate.wasm (the bytes Envoy loads), one configured instance serving
//! request after request, from request headers to the audit record. Build
//! the filter first (`bash envoy/setup.sh`).

use criterion::{criterion_group, criterion_main, Criterion};
use host_test::host::Filter;
use host_test::runner::{HostOptions, Session};
use host_test::scenario::Scenario;

fn scenario(file: &str, name: &str) -> Scenario {
    host_test::scenario::named(file, name).unwrap_or_else(|e| panic!("{e}"))
}

fn whole_filter(c: &mut Criterion) {
    let wasm = host_test::default_wasm();
    let filter = Filter::load(&wasm)
        .unwrap_or_else(|e| panic!("cannot load {}: {e:?} (run envoy/setup.sh)", wasm.display()));
    let cases = [
        (
            "allow_kv2_read",
            scenario(
                "demo-jwt.yaml",
                "own repository secret is readable and forwarded as is",
            ),
            200,
        ),
        (
            "deny_other_repository",
            scenario(
                "demo-jwt.yaml",
                "another repository's secret is 403 and never forwarded",
            ),
            403,
        ),
        (
            "allow_with_hmac_audit_of_the_body",
            scenario(
                "audit.yaml",
                "an allowed read records who, what, which policy and a masked body",
            ),
            200,
        ),
    ];
    let mut group = c.benchmark_group("whole_filter_per_request");
    for (label, scenario, want) in &cases {
        let mut session = Session::start(&filter, scenario, &HostOptions::default())
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        let status = session
            .request(scenario)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(status, Some(*want), "{label}");
        group.bench_function(*label, |b| b.iter(|| session.request(scenario)));
    }
    group.finish();
}

criterion_group!(benches, whole_filter);
criterion_main!(benches);

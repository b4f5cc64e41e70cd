//! The host calls one request costs the filter, counted in host-test:
//! counts are deterministic where timings are not, so this is where a
//! change that adds host work per request shows up. Each budget is what
//! the filter needs today; raising one is a decision, made here.

mod common;

use std::collections::BTreeMap;

use host_test::runner::{HostOptions, Session};
use host_test::scenario::Scenario;

fn scenario(file: &str, name: &str) -> Scenario {
    host_test::scenario::named(file, name).unwrap_or_else(|e| panic!("{e}"))
}

/// The host calls of a warm request: the second one a configured filter
/// serves, as on any busy Envoy worker.
fn warm_calls(scenario: &Scenario, status: u32) -> BTreeMap<String, u64> {
    // Envoy's default level: a production Envoy logs the plugin at info.
    let options = HostOptions {
        log_level: Some(2),
        ..HostOptions::default()
    };
    let mut session =
        Session::start(common::filter(), scenario, &options).unwrap_or_else(|e| panic!("{e:?}"));
    for _ in 0..2 {
        let answered = session
            .request(scenario)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(answered, Some(status));
    }
    session.host_calls()
}

fn check_budget(label: &str, calls: &BTreeMap<String, u64>, budget: &[(&str, u64)], total: u64) {
    let budget: BTreeMap<&str, u64> = budget.iter().copied().collect();
    for (name, count) in calls {
        let allowed = budget.get(name.as_str()).copied().unwrap_or(0);
        assert!(
            *count <= allowed,
            "{label}: {name} called {count} times, budget {allowed}; all calls: {calls:?}"
        );
    }
    let spent: u64 = calls.values().sum();
    assert!(
        spent <= total,
        "{label}: {spent} host calls, budget {total}; {calls:?}"
    );
}

#[test]
fn an_allowed_read_stays_within_its_host_call_budget() {
    let calls = warm_calls(
        &scenario(
            "audit.yaml",
            "an allowed read records who, what, which policy and a masked body",
        ),
        200,
    );
    println!("allowed read: {calls:?}");
    check_budget("allowed read", &calls, ALLOW_BUDGET, ALLOW_TOTAL);
}

#[test]
fn a_denied_read_stays_within_its_host_call_budget() {
    let calls = warm_calls(
        &scenario(
            "demo-jwt.yaml",
            "another repository's secret is 403 and never forwarded",
        ),
        403,
    );
    println!("denied read: {calls:?}");
    check_budget("denied read", &calls, DENY_BUDGET, DENY_TOTAL);
}

/// An allowed read (HMAC audit of the response body): headers, client
/// address and JWT claims, the clock, one header edit, the response body,
/// the record set twice (before forwarding, then with the response), the
/// log level (the decision line is at debug: not written at info), the
/// decision counter and the live-requests gauge.
const ALLOW_BUDGET: &[(&str, u64)] = &[
    ("proxy_get_buffer_bytes", 1),
    ("proxy_get_current_time_nanoseconds", 1),
    ("proxy_get_header_map_pairs", 1),
    ("proxy_get_header_map_value", 1),
    ("proxy_get_property", 2),
    ("proxy_get_log_level", 1),
    ("proxy_increment_metric", 3),
    ("proxy_set_property", 2),
];
const ALLOW_TOTAL: u64 = 12;

/// A denied read: the same facts, one record, the local answer.
const DENY_BUDGET: &[(&str, u64)] = &[
    ("proxy_get_current_time_nanoseconds", 1),
    ("proxy_get_header_map_pairs", 1),
    ("proxy_get_property", 2),
    ("proxy_get_log_level", 1),
    ("proxy_increment_metric", 3),
    ("proxy_send_local_response", 1),
    ("proxy_set_property", 1),
];
const DENY_TOTAL: u64 = 10;

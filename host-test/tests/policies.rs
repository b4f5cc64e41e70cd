//! Every scenario in policies/tests passes against the compiled filter.

mod common;

use host_test::runner::{run_all, HostOptions};
use host_test::scenario;

#[test]
fn the_policy_scenarios_pass() {
    let folder = host_test::repo_root().join("policies/tests");
    let files = scenario::collect(&[folder]).expect("policies/tests exists");
    let mut scenarios = Vec::new();
    for file in &files {
        scenarios.extend(scenario::load_file(file).unwrap_or_else(|e| panic!("{e}")));
    }
    let conformance = scenarios.iter().filter(|s| s.conformance).count();
    assert!(
        conformance >= 20,
        "only {conformance} conformance scenarios"
    );
    let reports = run_all(common::filter(), &scenarios, &HostOptions::default()).unwrap();
    assert_eq!(reports.len(), scenarios.len());
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{} ({}):\n  {}", r.name, r.file, r.failures.join("\n  ")))
        .collect();
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
}

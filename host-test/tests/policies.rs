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

/// Every policy pack's scenarios pass against the compiled filter, with the
/// pack's own configuration, and every rule of a pack is shown deciding.
#[test]
fn each_policy_pack_passes_its_scenarios() {
    let packs = host_test::repo_root().join("policies/packs");
    let mut names: Vec<_> = std::fs::read_dir(&packs)
        .expect("policies/packs exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    names.sort();
    let expected = ["github-actions", "gitlab-ci", "spiffe"];
    let found: Vec<String> = names
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(found, expected);
    for pack in &names {
        let files = scenario::collect(&[pack.join("tests")]).expect("a pack has tests/");
        assert!(!files.is_empty(), "{} has no scenarios", pack.display());
        let mut scenarios = Vec::new();
        for file in &files {
            scenarios.extend(scenario::load_file(file).unwrap_or_else(|e| panic!("{e}")));
        }
        let reports = run_all(common::filter(), &scenarios, &HostOptions::default()).unwrap();
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| !r.passed())
            .map(|r| format!("{} ({}):\n  {}", r.name, r.file, r.failures.join("\n  ")))
            .collect();
        assert!(
            failed.is_empty(),
            "{}: failed scenarios:\n{}",
            pack.display(),
            failed.join("\n")
        );
        // Each rule of the pack must be named as deciding by some scenario:
        // a rule no scenario exercises is an untested promise.
        let policies = std::fs::read_to_string(pack.join("policies.cedar")).unwrap();
        let scenario_text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        for id in policies
            .lines()
            .filter_map(|line| line.trim().strip_prefix("@id(\""))
            .filter_map(|rest| rest.split('"').next())
        {
            assert!(
                scenario_text.contains(id),
                "{}: no scenario shows rule {id} deciding",
                pack.display()
            );
        }
    }
}

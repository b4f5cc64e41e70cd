//! Every scenario in policies/tests and in each policy pack's tests
//! (policies/packs/*/tests) passes against the compiled filter.

mod common;

use host_test::runner::{run_all, HostOptions};
use host_test::scenario;

#[test]
fn the_policy_scenarios_pass() {
    let folder = host_test::repo_root().join("policies/tests");
    let mut folders = vec![folder];
    folders.extend(packs().into_iter().map(|pack| pack.join("tests")));
    let files = scenario::collect(&folders).expect("policies/tests exists");
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

fn packs() -> Vec<std::path::PathBuf> {
    let root = host_test::repo_root().join("policies/packs");
    let mut packs: Vec<_> = std::fs::read_dir(&root)
        .expect("policies/packs exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    packs.sort();
    packs
}

/// A pack's scenarios test the configuration the pack ships: the mounts
/// (with their templates) and identity of its `config.json`.
#[test]
fn each_pack_tests_the_configuration_it_ships() {
    let packs = packs();
    let names: Vec<_> = packs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["github-actions", "gitlab-ci", "spiffe"]);
    for pack in packs {
        let shipped: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(pack.join("config.json")).unwrap())
                .unwrap();
        let tests = scenario::collect(&[pack.join("tests")]).unwrap();
        assert!(!tests.is_empty(), "{} has no scenarios", pack.display());
        for file in tests {
            let yaml: serde_json::Value =
                serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            for key in ["mounts", "identity"] {
                assert_eq!(
                    yaml["config"][key],
                    shipped[key],
                    "{}: config.{key} differs from the pack's config.json",
                    file.display()
                );
            }
        }
        assert!(pack.join("README.md").is_file());
        assert!(pack.join("schema.cedarschema").is_file());
    }
}

//! The CLI: exit codes and `file:line` errors.

use std::process::Command;

fn host_test(args: &[&str]) -> (i32, String) {
    let wasm = host_test::default_wasm();
    assert!(
        wasm.is_file(),
        "the filter is not built at {}: run envoy/setup.sh first",
        wasm.display()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_host-test"))
        .arg("--wasm")
        .arg(&wasm)
        .args(args)
        .output()
        .expect("host-test runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn check_names_the_policy_file_and_line() {
    let dir = std::env::temp_dir().join(format!("host-test-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policies = host_test::repo_root().join("policies");
    for file in ["schema.cedarschema", "entities.json"] {
        std::fs::copy(policies.join(file), dir.join(file)).unwrap();
    }
    let demo = std::fs::read_to_string(policies.join("policies.cedar")).unwrap();
    // The demo text, an empty line, the @id, then the offending expression.
    let line = demo.lines().count() + 3;
    std::fs::write(
        dir.join("policies.cedar"),
        format!("{demo}\n@id(\"oops\")\npermit(principal, action, resource) when {{ context.nope == 1 }};\n"),
    )
    .unwrap();
    let (code, out) = host_test(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let wanted = format!(
        "policies.cedar:{line}: secretgate: configuration rejected: policies: policy \"oops\""
    );
    assert!(out.contains(&wanted), "{wanted:?} not in {out}");
}

#[test]
fn run_fails_with_a_failing_scenario_and_passes_the_policy_tests() {
    let dir = std::env::temp_dir().join(format!("host-test-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policies = host_test::repo_root().join("policies");
    let scenario = format!(
        "config: {{schema: {p}/schema.cedarschema, policies: {p}/policies.cedar, mounts: {{secret: kv-v2}}, identity: {{source: header}}}}\nscenarios:\n  - name: wrongly expects a pass\n    request: {{path: /v1/secret/data/x, headers: {{x-secretgate-principal: a}}}}\n    expect: {{forwarded: true}}\n",
        p = policies.display()
    );
    std::fs::write(dir.join("failing.yaml"), scenario).unwrap();
    let (code, out) = host_test(&[
        "run",
        dir.to_str().unwrap(),
        policies.join("tests").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  wrongly expects a pass"), "{out}");
    assert!(
        out.contains("expected forwarded=true, but it was answered locally 403"),
        "{out}"
    );
    assert!(out.contains(" passed, 1 failed"), "{out}");
}

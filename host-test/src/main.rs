//! `host-test run <files or folders>` / `host-test check <config or policy folder>`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use host_test::host::Filter;
use host_test::runner::{run_all, HostOptions, Report};
use host_test::scenario::{self, ConfigSpec, Scenario};

const USAGE: &str = "usage:
  host-test [--wasm FILE] [--json OUT] run <scenario files or folders>...
  host-test [--wasm FILE] check <plugin config .json | scenario .yaml | policy folder>

--json writes every scenario with its inputs and outcome (used by envoy/tests/test_conformance.py).
--wasm defaults to $SECRETGATE_WASM, else target/wasm32-wasip1/release/secretgate.wasm";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut wasm = host_test::default_wasm();
    if let Some(at) = args.iter().position(|a| a == "--wasm") {
        if at + 1 >= args.len() {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        wasm = PathBuf::from(args.remove(at + 1));
        args.remove(at);
    }
    let mut json_out = None;
    if let Some(at) = args.iter().position(|a| a == "--json") {
        if at + 1 >= args.len() {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        json_out = Some(PathBuf::from(args.remove(at + 1)));
        args.remove(at);
    }
    let Some(command) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let paths: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
    let result = match command.as_str() {
        "run" if !paths.is_empty() => run(&wasm, &paths, json_out.as_deref()),
        "check" if paths.len() == 1 => check(&wasm, &paths[0]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("host-test: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_filter(wasm: &Path) -> Result<Filter, String> {
    let start = Instant::now();
    let filter = Filter::load(wasm).map_err(|e| format!("{e:?}"))?;
    eprintln!(
        "loaded {} in {:.1}s",
        wasm.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(filter)
}

fn run(wasm: &Path, paths: &[PathBuf], json_out: Option<&Path>) -> Result<bool, String> {
    let files = scenario::collect(paths)?;
    let mut scenarios = Vec::new();
    let mut load_errors = Vec::new();
    for file in &files {
        match scenario::load_file(file) {
            Ok(mut loaded) => scenarios.append(&mut loaded),
            Err(e) => load_errors.push(e),
        }
    }
    for e in &load_errors {
        println!("ERROR {e}");
    }
    let filter = load_filter(wasm)?;
    let reports =
        run_all(&filter, &scenarios, &HostOptions::default()).map_err(|e| format!("{e:?}"))?;
    print_table(&reports);
    if let Some(out) = json_out {
        let results: Vec<serde_json::Value> = scenarios
            .iter()
            .zip(&reports)
            .map(|(s, r)| result_json(s, r))
            .collect();
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(load_errors.is_empty() && reports.iter().all(Report::passed))
}

fn print_table(reports: &[Report]) {
    let width = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .min(70);
    for report in reports {
        let mark = if report.passed() { "PASS" } else { "FAIL" };
        let file = Path::new(&report.file)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{mark}  {:<width$}  {:>6.0}ms  {file}",
            report.name,
            report.elapsed.as_secs_f64() * 1000.0
        );
        for failure in &report.failures {
            println!("      - {failure}");
        }
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!(
        "{} scenarios, {} passed, {failed} failed",
        reports.len(),
        reports.len() - failed
    );
}

/// Loads a configuration exactly as Envoy does: `proxy_on_configure` in the
/// wasm, reporting its log. Errors carry `file:line` when the filter names a
/// policy line.
fn check(wasm: &Path, path: &Path) -> Result<bool, String> {
    let configs: Vec<(String, Vec<u8>, Option<PathBuf>)> = if path.is_dir() {
        let identity = match std::fs::read_to_string(path.join("identity.json")) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| format!("{}: {e}", path.join("identity.json").display()))?,
            ),
            Err(_) => {
                Some(serde_json::json!({"source": "jwt", "payload_in_metadata": "ci_claims"}))
            }
        };
        let mounts = match std::fs::read_to_string(path.join("mounts.json")) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| format!("{}: {e}", path.join("mounts.json").display()))?,
            ),
            Err(_) => None,
        };
        let spec = ConfigSpec {
            schema: Some("schema.cedarschema".into()),
            policies: Some("policies.cedar".into()),
            entities: path
                .join("entities.json")
                .is_file()
                .then(|| "entities.json".into()),
            mounts,
            identity,
            ..ConfigSpec::default()
        };
        let (bytes, policies) = scenario::build_config(&spec, path)?;
        vec![(path.display().to_string(), bytes, policies)]
    } else if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for s in scenario::load_file(path)? {
            if !seen.contains(&s.plugin_configuration) {
                seen.push(s.plugin_configuration.clone());
                out.push((
                    format!("{} ({})", path.display(), s.name),
                    s.plugin_configuration,
                    s.policies_file,
                ));
            }
        }
        out
    } else {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        vec![(path.display().to_string(), bytes, None)]
    };
    let filter = load_filter(wasm)?;
    let mut all_ok = true;
    for (label, bytes, policies_file) in configs {
        let probe = Scenario {
            file: path.to_path_buf(),
            name: label.clone(),
            conformance: false,
            plugin_configuration: bytes,
            policies_file: policies_file.clone(),
            clock: scenario::DEFAULT_CLOCK,
            upstream: Default::default(),
            callouts: Default::default(),
            request: Default::default(),
            repeat: 1,
            expect: Default::default(),
        };
        let outcome = host_test::runner::run(&filter, &probe, &HostOptions::default())
            .map_err(|e| format!("{e:?}"))?;
        match &outcome.config_rejected {
            None => {
                let loaded = outcome
                    .logs
                    .iter()
                    .find(|l| l.message.contains("configuration loaded"))
                    .map(|l| l.message.clone())
                    .unwrap_or_else(|| "configuration loaded".into());
                println!("OK    {label}: {loaded}");
            }
            Some(reason) => {
                all_ok = false;
                for line in reason.lines() {
                    println!("ERROR {}", locate(line, &label, policies_file.as_deref()));
                }
            }
        }
    }
    Ok(all_ok)
}

/// `file:line: message` from the filter's `policies: ... (line N)` errors.
/// A line past the policies file is in the scenario's `policies_append`
/// (appended after one newline).
fn locate(message: &str, label: &str, policies_file: Option<&Path>) -> String {
    let line = message
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    match (policies_file, line, message.contains("policies: ")) {
        (Some(file), Some(line), true) => {
            let in_file = std::fs::read_to_string(file)
                .map(|text| text.matches('\n').count() + 1)
                .unwrap_or(usize::MAX);
            if line > in_file {
                format!(
                    "{label}: policies_append line {}: {message}",
                    line - in_file
                )
            } else {
                format!("{}:{line}: {message}", file.display())
            }
        }
        _ => format!("{label}: {message}"),
    }
}

/// A scenario's inputs and what the host observed, for the conformance test.
fn result_json(s: &Scenario, r: &Report) -> serde_json::Value {
    let outcome = r.outcome.as_ref();
    serde_json::json!({
        "file": s.file.display().to_string(),
        "name": s.name,
        "conformance": s.conformance,
        "passed": r.passed(),
        "failures": r.failures,
        "plugin_configuration": String::from_utf8_lossy(&s.plugin_configuration),
        "request": {
            "method": s.request.method,
            "target": s.request.target(),
            "headers": s.request.headers.pairs(),
            "body": s.request.body,
            "jwt_claims": s.request.jwt_claims,
            "peer_uri_san": s.request.peer_uri_san,
        },
        "outcome": outcome.map(|o| serde_json::json!({
            "config_rejected": o.config_rejected,
            "forwarded": o.forwarded.is_some(),
            "forwarded_path": o.forwarded_header(":path"),
            "status": o.status,
            "local_body": o.local_response.as_ref().map(|l| String::from_utf8_lossy(&l.body).into_owned()),
            "decision": o.decision(),
            "audit": o
                .filter_state
                .get("wasm.secretgate_audit")
                .and_then(|raw| serde_json::from_slice::<serde_json::Value>(raw).ok()),
        })),
    })
}

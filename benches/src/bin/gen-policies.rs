//! Writes a generated policy set (see `secretgate_benches::policyset`):
//!
//!     gen-policies <count> <out-dir>
//!
//! `<out-dir>` gets `schema.cedarschema`, `policies.cedar`, `entities.json`
//! (the layout of `policies/`, so `envoy/stack.py`'s `plugin_config` reads
//! it) and `requests.json` (the load benchmark's allow and deny requests).

use std::path::PathBuf;
use std::process::ExitCode;

use secretgate_benches::policyset::{BenchRequest, PolicySet};
use serde_json::json;

fn request_json(request: &BenchRequest) -> serde_json::Value {
    json!({
        "principal": request.principal,
        "method": request.method,
        "path": request.path,
        "secret_path": request.secret_path,
    })
}

fn run(args: &[String]) -> Result<(), String> {
    let [count, dir] = args else {
        return Err("usage: gen-policies <count> <out-dir>".into());
    };
    let count: usize = count.parse().map_err(|e| format!("count {count:?}: {e}"))?;
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let set = PolicySet::generate(count);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("schema.cedarschema", set.schema.clone())?;
    write("policies.cedar", set.policies.clone())?;
    write(
        "entities.json",
        serde_json::to_string_pretty(&set.entities).map_err(|e| e.to_string())?,
    )?;
    let requests = json!({
        "policy_count": set.policy_count,
        "teams": set.teams,
        "allow": request_json(&set.allow_request()),
        "deny": request_json(&set.deny_request()),
    });
    write(
        "requests.json",
        serde_json::to_string_pretty(&requests).map_err(|e| e.to_string())?,
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-policies: {e}");
            ExitCode::FAILURE
        }
    }
}

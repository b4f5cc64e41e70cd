//! Loads a generated configuration a fixed number of times, for profiles of
//! what Envoy pays once per VM and once per bundle swap: parsing, strict
//! validation, entities and the scope index.
//!
//!     profile-load <policies> <iterations>
//!     perf record -g target/profiling/profile-load 10000 3
//!
//! Prints the wall time of each load. Build with `cargo build --profile
//! profiling -p secretgate-benches --bins`.

use std::process::ExitCode;
use std::time::Instant;

use secretgate::config::Config;
use secretgate_benches::policyset::PolicySet;

fn run(args: &[String]) -> Result<(), String> {
    let [count, iterations] = args else {
        return Err("usage: profile-load <policies> <iterations>".into());
    };
    let count: usize = count.parse().map_err(|e| format!("{count:?}: {e}"))?;
    let iterations: usize = iterations
        .parse()
        .map_err(|e| format!("{iterations:?}: {e}"))?;
    let text = PolicySet::generate(count).filter_config().to_string();
    for _ in 0..iterations {
        let started = Instant::now();
        let config = Config::from_json(text.as_bytes()).map_err(|e| e.to_string())?;
        let policies = config.engine.map(|e| e.policy_count()).unwrap_or(0);
        println!("{policies} policies loaded in {:?}", started.elapsed());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profile-load: {e}");
            ExitCode::from(2)
        }
    }
}

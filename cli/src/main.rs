//! The operator's command line, next to the filter (native only):
//!
//! - `secretgate hmac --key-file FILE [VALUE]`: prints the `hmac-sha256:<hex>`
//!   an audit record in HMAC mode shows for VALUE (read from stdin when
//!   omitted), so an auditor can grep the access log for a known secret or
//!   token without the log ever holding it.
//! - `secretgate check-mounts --addr URL --config FILE`: compares the filter
//!   configuration's mount table with the store's (see `check_mounts`).
//! - `secretgate replay --log FILE (--policies DIR | --bundle FILE)`: decides
//!   recorded requests again under candidate policies (see `replay`).
//! - `secretgate explain ...`: why a policy set decides one request as it
//!   does (see `explain`).
//! - `secretgate report --log FILE --out report.html ...`: the access report
//!   an auditor reads, from the audit records (see `report`).
//! - `secretgate --version [--config FILE] [--bundle FILE]`: the filter
//!   version records name, and the revisions of a configuration and a
//!   bundle as records name them (see `version`).

// The filter's package owns the name `secretgate.wasm` in a wasm32 build.
// A WASI command module of this CLI under the same name would overwrite it,
// and an Envoy given that file would run the CLI's `_start` and log its
// usage at every start; refuse to build it at all.
#[cfg(target_arch = "wasm32")]
compile_error!(
    "the secretgate CLI is native only; the filter is built with `cargo build --release --target wasm32-wasip1` (package `secretgate`)"
);

use std::io::Read;
use std::process::ExitCode;

use secretgate::audit::{AuditConfig, RawAuditConfig};

mod candidate;
mod check_mounts;
mod explain;
mod replay;
mod report;
mod report_csv;
mod report_html;
mod version;

const USAGE: &str = "usage: secretgate hmac --key-file FILE [VALUE]
  FILE holds the audit hmac_key (one trailing newline is ignored);
  VALUE defaults to standard input (one trailing newline is ignored).";

fn trim_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

fn hmac(args: &[String]) -> Result<String, String> {
    let (key_file, value) = match args {
        [command, flag, file] if command == "hmac" && flag == "--key-file" => (file, None),
        [command, flag, file, value] if command == "hmac" && flag == "--key-file" => {
            (file, Some(value.clone()))
        }
        _ => return Err(USAGE.to_owned()),
    };
    let key = std::fs::read_to_string(key_file)
        .map(trim_newline)
        .map_err(|e| format!("cannot read {key_file}: {e}"))?;
    let value = match value {
        Some(v) => v,
        None => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            trim_newline(input)
        }
    };
    let raw: RawAuditConfig = serde_json::from_value(serde_json::json!({
        "mode": "hmac-sha256",
        "hmac_key": key,
    }))
    .map_err(|e| e.to_string())?;
    let config = AuditConfig::from_raw(raw)?;
    config
        .hmac_hex(value.as_bytes())
        .ok_or_else(|| "no HMAC key".to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check-mounts") => check_mounts::main(&args[1..]),
        Some("replay") => replay::main(&args[1..]),
        Some("explain") => explain::main(&args[1..]),
        Some("report") => report::main(&args[1..]),
        Some("--version") => version::main(&args[1..]),
        Some("hmac") => match hmac(&args) {
            Ok(digest) => {
                println!("{digest}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!(
                "{USAGE}\n{}\n{}\n{}\n{}\n{}",
                check_mounts::USAGE,
                replay::USAGE,
                explain::USAGE,
                report::USAGE,
                version::USAGE
            );
            ExitCode::from(2)
        }
    }
}

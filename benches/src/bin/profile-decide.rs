//! A fixed-count loop of the filter's native per-request work, for
//! instruction-level profiles (callgrind counts reproducibly): the decision,
//! its log line and its audit record, an allowed read's with the static
//! upstream's reply captured and masked, as the adapter does in Envoy.
//!
//!     profile-decide <policies> <allow|deny> <iterations>
//!     valgrind --tool=callgrind target/profiling/profile-decide 1000 allow 2000
//!
//! Build with `cargo build --profile profiling -p secretgate-benches --bins`
//! (release optimisations with symbols and line tables).

use std::process::ExitCode;

use secretgate::audit::{self, ResponseFacts};
use secretgate::config::Config;
use secretgate::gate::{RequestFacts, VerdictAction};
use secretgate_benches::policyset::PolicySet;
use secretgate_benches::KV2_READ_REPLY;

fn run(args: &[String]) -> Result<(), String> {
    let [count, which, iterations] = args else {
        return Err("usage: profile-decide <policies> <allow|deny> <iterations>".into());
    };
    let count: usize = count.parse().map_err(|e| format!("{count:?}: {e}"))?;
    let iterations: usize = iterations
        .parse()
        .map_err(|e| format!("{iterations:?}: {e}"))?;
    let set = PolicySet::generate(count);
    let request = match which.as_str() {
        "allow" => set.allow_request(),
        "deny" => set.deny_request(),
        other => return Err(format!("{other:?}: expected allow or deny")),
    };
    let config =
        Config::from_json(set.filter_config().to_string().as_bytes()).map_err(|e| e.to_string())?;
    let headers: [(&[u8], &[u8]); 3] = [
        (b"x-secretgate-principal", request.principal.as_bytes()),
        (b"x-request-id", b"0f6f3c5e-2b1a-4c8e-9d7f-profile"),
        (b"x-vault-token", b"s.profile-token"),
    ];
    let mut allowed = 0usize;
    let mut audit_bytes = 0usize;
    for _ in 0..iterations {
        let verdict = config.decide(&RequestFacts {
            method: request.method,
            target: &request.path,
            headers: &headers,
            source_address: Some("127.0.0.1:53412"),
            now_nanos: 1_800_000_000_000_000_000,
            jwt_payload: None,
            peer_uri_san: None,
        });
        let logged = verdict.record.log_line();
        let record = match verdict.action {
            VerdictAction::Forward(_) => {
                allowed += 1;
                let request_body = config.audit.capture();
                let mut response_body = config.audit.capture();
                response_body.feed(KV2_READ_REPLY.as_bytes());
                audit::render(
                    &config.audit,
                    &verdict.record,
                    &ResponseFacts {
                        status: Some(200),
                        request_body: Some(&request_body),
                        response_body: Some(&response_body),
                    },
                )
            }
            _ => audit::render(
                &config.audit,
                &verdict.record,
                &ResponseFacts {
                    status: Some(403),
                    request_body: None,
                    response_body: None,
                },
            ),
        };
        audit_bytes += logged.len() + record.len();
    }
    println!(
        "{allowed} of {iterations} allowed; {audit_bytes} bytes of log lines and audit records"
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profile-decide: {e}");
            ExitCode::FAILURE
        }
    }
}

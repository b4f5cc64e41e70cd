//! The load benchmark's baseline (4): the same Cedar decision out of
//! process, as an HTTP authorizer behind Envoy's `ext_authz`.
//!
//!     cedar-authz --listen 127.0.0.1:PORT --config FILE [--threads 1]
//!
//! `FILE` is the filter's own configuration JSON (what Envoy passes to
//! Secretgate). Each check request (Envoy forwards the client's method,
//! path and the allowed headers) runs the filter's pure core natively —
//! `secretgate::config::Config::decide`: identity, classification, Cedar
//! evaluation against the same entity slice — and answers 200 (allow, and
//! asks Envoy to drop the identity header) or the filter's own refusal
//! (status and Vault-shaped JSON body), which Envoy returns to the client.
//!
//! It does less than the filter: no audit record (ext_authz never sees the
//! response) and no per-request log line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use secretgate::config::Config;
use secretgate::gate::{RequestFacts, VerdictAction};
use secretgate_benches::serve::{arg, serve, Reply};

const HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

fn reply(status: u16, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

fn run(args: &[String]) -> Result<(), String> {
    let listen: SocketAddr = arg(args, "--listen")
        .ok_or("--listen is required")?
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let config_file = arg(args, "--config").ok_or("--config is required")?;
    let threads = arg(args, "--threads")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let bytes = std::fs::read(&config_file).map_err(|e| format!("{config_file}: {e}"))?;
    let config = Arc::new(Config::from_json(&bytes).map_err(|e| e.to_string())?);
    serve(listen, threads, move |request, peer| {
        let headers: Vec<(&[u8], &[u8])> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
            .collect();
        let peer = peer.to_string();
        let now_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let verdict = config.decide(&RequestFacts {
            method: request.method().as_str(),
            target,
            headers: &headers,
            source_address: Some(&peer),
            now_nanos,
            jwt_payload: None,
            peer_uri_san: None,
        });
        match verdict.action {
            VerdictAction::Forward(edits) => {
                let mut ok = reply(200, String::new());
                if let Some(Ok(value)) = edits
                    .remove_headers
                    .first()
                    .map(|name| HeaderValue::from_str(name))
                {
                    ok.headers_mut().insert(HEADERS_TO_REMOVE, value);
                }
                ok
            }
            VerdictAction::Respond { status, body } => {
                reply(u16::try_from(status).unwrap_or(403), body)
            }
            // The benchmark's policies have no @approval permits.
            VerdictAction::AskApproval { .. } => reply(403, String::new()),
        }
    })
    .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cedar-authz: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The load benchmark's fast static upstream: answers every request with a
//! fixed OpenBao-shaped KV v2 read response (JSON), so an allowed request
//! through Secretgate goes through the response and audit path too.
//!
//!     static-upstream --listen 127.0.0.1:PORT [--threads 1]

use std::net::SocketAddr;
use std::process::ExitCode;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Response;
use secretgate_benches::serve::{arg, serve};
use secretgate_benches::KV2_READ_REPLY;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(listen) = arg(&args, "--listen").and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: static-upstream --listen 127.0.0.1:PORT [--threads N]");
        return ExitCode::FAILURE;
    };
    let threads = arg(&args, "--threads")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let body = Bytes::from_static(KV2_READ_REPLY.as_bytes());
    let result = serve(listen, threads, move |_request, _peer| {
        let mut reply = Response::new(Full::new(body.clone()));
        reply.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        reply
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("static-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

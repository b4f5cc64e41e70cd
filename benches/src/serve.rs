//! A small hyper (HTTP/1.1, keep-alive) server for the load benchmark's
//! out-of-process pieces: the static upstream and the ext_authz authorizer.
//! Every response is computed synchronously from the request head; request
//! bodies are never read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type Reply = Response<Full<Bytes>>;

/// Serves `handler` on `addr` with `threads` worker threads until killed.
pub fn serve<F>(addr: SocketAddr, threads: usize, handler: F) -> std::io::Result<()>
where
    F: Fn(&Request<Incoming>, SocketAddr) -> Reply + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_io()
        .build()?;
    let handler = Arc::new(handler);
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let reply = handler(&request, peer);
                    async move { Ok::<_, Infallible>(reply) }
                });
                // A client closing its connection is not an error worth reporting.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// `--name value` from argv, or the default.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

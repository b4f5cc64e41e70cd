//! `approver serve` runs the service; `list`, `approve`, `deny` and `revoke`
//! act through its HTTP API with an approver's bearer token.

use approver::{app, config::Config, server, store::Store};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "approver", about = "Secretgate approval service")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Client {
    /// Base URL of the running service.
    #[arg(long, env = "APPROVER_URL", default_value = "http://127.0.0.1:8300")]
    url: String,
    /// Approver bearer token (prefer the environment variable).
    #[arg(long, env = "APPROVER_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List approvals visible to you (default: pending).
    List {
        #[command(flatten)]
        client: Client,
        /// pending | approved | denied | expired | all
        #[arg(long, default_value = "pending")]
        status: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending approval.
    Approve {
        #[command(flatten)]
        client: Client,
        id: String,
    },
    /// Deny a pending approval.
    Deny {
        #[command(flatten)]
        client: Client,
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Revoke a grant before it expires.
    Revoke {
        #[command(flatten)]
        client: Client,
        grant_id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Serve { config } => serve(config).await,
        Cmd::List {
            client,
            status,
            json,
        } => list(client, &status, json).await,
        Cmd::Approve { client, id } => {
            call(&client, &format!("/v1/approvals/{id}/approve"), None).await
        }
        Cmd::Deny { client, id, reason } => {
            let body = serde_json::json!({ "reason": reason });
            call(&client, &format!("/v1/approvals/{id}/deny"), Some(body)).await
        }
        Cmd::Revoke { client, grant_id } => {
            call(&client, &format!("/v1/grants/{grant_id}/revoke"), None).await
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approver: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> Result<(), String> {
    let mut cfg = Config::load(&path)?;
    let store = Store::open(&cfg.database)
        .map_err(|e| format!("opening {}: {e}", cfg.database.display()))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests (and scripts) read this line to learn the port when listen uses port 0.
    println!("approver listening on http://{addr}");
    if cfg.public_url.is_none() {
        // With port 0 in `listen`, approval URLs must name the port actually bound.
        cfg.public_url = Some(format!("http://{addr}"));
    }
    let app = app::App::new(cfg, store);
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    };
    server::serve(app, listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

async fn request(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let url = format!("{}{path}", c.url.trim_end_matches('/'));
    let mut rb = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&c.token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = r.status();
    let v: serde_json::Value = r
        .json()
        .await
        .map_err(|e| format!("{url}: bad reply: {e}"))?;
    if !status.is_success() {
        let msg = v["error"].as_str().unwrap_or("error");
        return Err(format!("{status}: {msg}"));
    }
    Ok(v)
}

async fn call(c: &Client, path: &str, body: Option<serde_json::Value>) -> Result<(), String> {
    let v = request(c, reqwest::Method::POST, path, body).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn list(c: Client, status: &str, json: bool) -> Result<(), String> {
    let v = request(
        &c,
        reqwest::Method::GET,
        &format!("/v1/approvals?status={status}"),
        None,
    )
    .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let empty = Vec::new();
    let list = v["approvals"].as_array().unwrap_or(&empty);
    if list.is_empty() {
        println!("no {status} approvals");
    }
    for a in list {
        println!(
            "{id}  {status}  {ptype}:{pid}  {action} {resource}  group={group}  reason={reason:?}  since={since}",
            id = a["id"].as_str().unwrap_or(""),
            status = a["status"].as_str().unwrap_or(""),
            ptype = a["principal_type"].as_str().unwrap_or(""),
            pid = a["principal_id"].as_str().unwrap_or(""),
            action = a["action"].as_str().unwrap_or(""),
            resource = a["resource"].as_str().unwrap_or(""),
            group = a["approvers"].as_str().unwrap_or(""),
            reason = a["reason"].as_str().unwrap_or(""),
            since = approver::util::rfc3339(a["created_at"].as_i64().unwrap_or(0)),
        );
    }
    Ok(())
}

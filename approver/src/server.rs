//! HTTP API: the callout endpoint for the filter, and the approver API.

use crate::app::{ApiError, ApiResult, App, Shared};
use crate::config::Approver;
use crate::protocol::{CalloutReply, CalloutRequest};
use crate::util::{ct_eq, rfc3339};
use crate::web;
use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn approver_from_headers<'a>(app: &'a App, headers: &HeaderMap) -> ApiResult<&'a Approver> {
    bearer(headers)
        .and_then(|t| app.cfg.approver_by_token(t))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or unknown bearer token".into(),
            )
        })
}

async fn callout_handler(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<CalloutReply>> {
    match bearer(&headers) {
        Some(t) if ct_eq(t, &app.cfg.callout_token) => {}
        _ => {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong callout token".into(),
            ))
        }
    }
    let req = CalloutRequest::parse(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad callout: {e}")))?;
    Ok(Json(app.callout(req).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_handler(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    // The approvers' page polls this with its session cookie (read-only:
    // every state change still needs a bearer token or a CSRF-checked form).
    let who = match approver_from_headers(&app, &headers) {
        Ok(who) => who.clone(),
        Err(refused) => match app.sessions.signed_in(&app.cfg, &headers) {
            Some(signed_in) => signed_in.approver,
            None => return Err(refused),
        },
    };
    let who = &who;
    let status = match q.status.as_deref() {
        None | Some("pending") => Some("pending"),
        Some("all") => None,
        Some(s @ ("approved" | "denied" | "expired")) => Some(s),
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown status {other:?}"),
            ))
        }
    };
    let list = app.visible(who, status)?;
    Ok(Json(json!({ "approvals": list })))
}

async fn approve_handler(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = approver_from_headers(&app, &headers)?;
    let g = app.approve(who, &id)?;
    Ok(Json(json!({
        "status": "approved",
        "approval_id": id,
        "grant_id": g.id,
        "approver": g.approver,
        "expires_at": rfc3339(g.expires_at),
    })))
}

#[derive(Deserialize, Default)]
struct DenyBody {
    #[serde(default)]
    reason: String,
}

async fn deny_handler(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let who = approver_from_headers(&app, &headers)?;
    let body: DenyBody = if body.iter().all(u8::is_ascii_whitespace) {
        DenyBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad body: {e}")))?
    };
    let a = app.deny(who, &id, &body.reason)?;
    Ok(Json(json!({
        "status": "denied",
        "approval_id": a.id,
        "approver": who.id,
        "reason": body.reason,
    })))
}

async fn revoke_handler(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = approver_from_headers(&app, &headers)?;
    let g = app.revoke(who, &id)?;
    Ok(Json(
        json!({"status": "revoked", "grant_id": g.id, "revoked_by": who.id}),
    ))
}

pub fn router(app: Shared) -> Router {
    let callout_path = app.cfg.callout_path.clone();
    let api = Router::new()
        .route("/v1/approvals", get(list_handler))
        .route("/v1/approvals/{id}/approve", post(approve_handler))
        .route("/v1/approvals/{id}/deny", post(deny_handler))
        .route("/v1/grants/{id}/revoke", post(revoke_handler))
        .route("/healthz", get(|| async { "ok" }));
    let api = if callout_path == "/v1/approvals" {
        api.route("/v1/approvals", post(callout_handler))
    } else {
        api.route(&callout_path, post(callout_handler))
    };
    api.merge(web::routes()).with_state(app)
}

/// Serve until `shutdown` resolves. Also runs the expiry sweeper.
pub async fn serve(
    app: Shared,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Err(e) = app.sweep() {
                    tracing::warn!(error = %e.1, "sweep failed");
                }
                app.sessions.sweep();
            }
        })
    };
    let res = axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    res
}

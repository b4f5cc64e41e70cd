//! Server-rendered page for approvers. Login: a form that takes the approver's
//! bearer token and sets an HttpOnly, SameSite=Strict session cookie. Every
//! state-changing form carries the session's CSRF token (synchronizer token).

use crate::app::{ApiError, Session, Shared};
use crate::config::Approver;
use crate::util::{ct_eq, html_escape as esc, now_ms, random_id, rfc3339};
use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use serde::Deserialize;

pub const COOKIE: &str = "sg_session";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/ui/approvals/{id}/approve", post(ui_approve))
        .route("/ui/approvals/{id}/deny", post(ui_deny))
}

pub fn sweep_sessions(app: &Shared) {
    let now = now_ms();
    if let Ok(mut s) = app.sessions.lock() {
        s.retain(|_, v| v.expires_at > now);
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session and its approver, if the cookie names a live session.
fn session(app: &Shared, headers: &HeaderMap) -> Option<(String, Session, Approver)> {
    let sid = cookie_value(headers, COOKIE)?;
    let s = app.sessions.lock().ok()?.get(sid).cloned()?;
    if s.expires_at <= now_ms() {
        return None;
    }
    let who = app
        .cfg
        .approvers
        .iter()
        .find(|a| a.id == s.approver_id)?
        .clone();
    Some((sid.to_string(), s, who))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:.4em;text-align:left;vertical-align:top}}\
.err{{color:#a00}}form{{display:inline}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=\"err\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        status,
        "Secretgate approvals: sign in",
        &format!(
            "{err}<form method=\"post\" action=\"/login\">\
<label>Approver token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\"></label> \
<button type=\"submit\" id=\"login\">Sign in</button></form>"
        ),
    )
}

fn ago(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        _ => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
    }
}

async fn index(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some((_, sess, who)) = session(&app, &headers) else {
        return login_page(StatusCode::OK, None);
    };
    let list = match app.visible(&who, Some("pending")) {
        Ok(l) => l,
        Err(ApiError(code, msg)) => return page(code, "Error", &esc(&msg)),
    };
    let now = now_ms();
    let csrf = esc(&sess.csrf);
    let mut rows = String::new();
    for a in &list {
        let own = crate::rules::may_decide(&who, a).is_err();
        let id = esc(&a.id);
        let actions = if own {
            "<em>your own request: someone else must decide</em>".to_string()
        } else {
            format!(
                "<form method=\"post\" action=\"/ui/approvals/{id}/approve\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" class=\"approve\" id=\"approve-{id}\">Approve</button></form> \
<form method=\"post\" action=\"/ui/approvals/{id}/deny\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"text\" name=\"reason\" placeholder=\"reason\" required> \
<button type=\"submit\" class=\"deny\" id=\"deny-{id}\">Deny</button></form>"
            )
        };
        let reason = if a.reason.is_empty() {
            "<em>none given</em>".to_string()
        } else {
            esc(&a.reason)
        };
        rows.push_str(&format!(
            "<tr id=\"{id}\"><td>{ptype} <b>{pid}</b></td><td>{action} <code>{resource}</code></td>\
<td>{reason}</td><td title=\"{since}\">{ago}</td><td>{group}</td><td>{actions}</td></tr>",
            ptype = esc(&a.scope.principal_type),
            pid = esc(&a.scope.principal_id),
            action = esc(&a.scope.action),
            resource = esc(&a.scope.resource),
            since = rfc3339(a.created_at),
            ago = ago(a.created_at, now),
            group = esc(&a.approvers),
        ));
    }
    let table = if list.is_empty() {
        "<p id=\"empty\">No pending requests.</p>".to_string()
    } else {
        format!(
            "<table id=\"pending\"><tr><th>Who</th><th>What</th><th>Why</th><th>Since</th>\
<th>Group</th><th>Decision</th></tr>{rows}</table>"
        )
    };
    page(
        StatusCode::OK,
        "Secretgate approvals",
        &format!(
            "<div>Signed in as <b id=\"me\">{me}</b> \
<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\">Sign out</button></form></div>{table}",
            me = esc(&who.id)
        ),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(app): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    let Some(who) = app.cfg.approver_by_token(f.token.trim()) else {
        return login_page(StatusCode::UNAUTHORIZED, Some("Unknown token."));
    };
    let (Ok(sid), Ok(csrf)) = (random_id(""), random_id("")) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "random source failed",
        );
    };
    let ttl_ms = i64::try_from(app.cfg.session_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let s = Session {
        approver_id: who.id.clone(),
        csrf,
        expires_at: now_ms().saturating_add(ttl_ms),
    };
    match app.sessions.lock() {
        Ok(mut m) => {
            m.insert(sid.clone(), s);
        }
        Err(_) => return page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "lock poisoned"),
    }
    let cookie = format!(
        "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        app.cfg.session_ttl_s
    );
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// Session + CSRF check for every state-changing form.
fn checked(
    app: &Shared,
    headers: &HeaderMap,
    f: &CsrfForm,
) -> Result<(String, Approver), Box<Response>> {
    let Some((sid, sess, who)) = session(app, headers) else {
        return Err(Box::new(login_page(
            StatusCode::UNAUTHORIZED,
            Some("Please sign in."),
        )));
    };
    if !ct_eq(&f.csrf, &sess.csrf) {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "CSRF token mismatch.",
        )));
    }
    Ok((sid, who))
}

async fn logout(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (sid, _) = match checked(&app, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Ok(mut m) = app.sessions.lock() {
        m.remove(&sid);
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sg_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

async fn ui_approve(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (_, who) = match checked(&app, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match app.approve(&who, &id) {
        Ok(_) => Redirect::to("/").into_response(),
        Err(ApiError(code, msg)) => page(code, "Not approved", &esc(&msg)),
    }
}

async fn ui_deny(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (_, who) = match checked(&app, &headers, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match app.deny(&who, &id, f.reason.trim()) {
        Ok(_) => Redirect::to("/").into_response(),
        Err(ApiError(code, msg)) => page(code, "Not denied", &esc(&msg)),
    }
}

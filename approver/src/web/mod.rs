//! The approvers' page: pending requests with their context, the history of
//! decisions, and the grants in force. Login: a form that takes the
//! approver's bearer token and sets an HttpOnly, SameSite=Strict session
//! cookie (`session`). Every state-changing form carries the session's CSRF
//! token (synchronizer token). Script and style are served by the approver
//! itself, so the CSP allows no inline code and no other origin.

mod views;

use crate::app::{ApiError, Shared, TRACK_RECORD_DAYS};
use crate::config::Approver;
use crate::rules::may_decide;
use crate::session::{Session, SignedIn, COOKIE};
use crate::store::{HistoryFilter, DECIDED_OUTCOMES};
use crate::util::{ct_eq, html_escape as esc, now_ms, random_id};
use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use serde::Deserialize;
use views::{PendingItem, View};

/// Script: live countdowns, and the pending list kept current by polling
/// `GET /v1/approvals`.
const SCRIPT: &str = include_str!("approvals.js");
const STYLE: &str = include_str!("approvals.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(pending))
        .route("/history", get(history))
        .route("/grants", get(grants))
        .route("/static/approvals.js", get(script))
        .route("/static/approvals.css", get(style))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/ui/approvals/{id}/approve", post(ui_approve))
        .route("/ui/approvals/{id}/deny", post(ui_deny))
        .route("/ui/grants/{id}/revoke", post(ui_revoke))
}

fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    secured((status, Html(views::document(title, now_ms(), body))).into_response())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    secured(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        "Secretgate approvals: sign in",
        &views::login_form(error),
    )
}

fn error_page(ApiError(code, message): ApiError) -> Response {
    page(
        code,
        "Error",
        &format!("<p class=\"err\">{}</p>", esc(&message)),
    )
}

fn view_page(view: View, signed_in: &SignedIn, content: &str) -> Response {
    page(
        StatusCode::OK,
        "Secretgate approvals",
        &views::frame(
            view,
            &signed_in.approver.id,
            &signed_in.session.csrf,
            content,
        ),
    )
}

async fn pending(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(signed_in) = app.sessions.signed_in(&app.cfg, &headers) else {
        return login_page(StatusCode::OK, None);
    };
    let who = &signed_in.approver;
    let list = match app.visible(who, Some("pending")) {
        Ok(list) => list,
        Err(e) => return error_page(e),
    };
    let mut items = Vec::with_capacity(list.len());
    for approval in &list {
        let record = match app.track_record(approval) {
            Ok(record) => record,
            Err(e) => return error_page(e),
        };
        items.push(PendingItem {
            approval,
            own: may_decide(who, approval).is_err(),
            held_until: app.held_until(&approval.id),
            record,
            record_days: TRACK_RECORD_DAYS,
        });
    }
    let content = views::pending_view(&items, &signed_in.session.csrf, now_ms());
    view_page(View::Pending, &signed_in, &content)
}

#[derive(Deserialize, Default)]
struct HistoryQuery {
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    principal: String,
    #[serde(default)]
    resource: String,
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

async fn history(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let Some(signed_in) = app.sessions.signed_in(&app.cfg, &headers) else {
        return login_page(StatusCode::OK, None);
    };
    let outcome = non_empty(&query.outcome);
    if let Some(unknown) = outcome.as_deref().filter(|o| !DECIDED_OUTCOMES.contains(o)) {
        return error_page(ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown outcome {unknown:?}"),
        ));
    }
    let filter = HistoryFilter {
        outcome,
        principal: non_empty(&query.principal),
        resource: non_empty(&query.resource),
    };
    match app.history(&signed_in.approver, &filter) {
        Ok(list) => view_page(
            View::History,
            &signed_in,
            &views::history_view(&list, &filter),
        ),
        Err(e) => error_page(e),
    }
}

async fn grants(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(signed_in) = app.sessions.signed_in(&app.cfg, &headers) else {
        return login_page(StatusCode::OK, None);
    };
    match app.live_grants(&signed_in.approver) {
        Ok(list) => {
            let content = views::grants_view(&list, &signed_in.session.csrf, now_ms());
            view_page(View::Grants, &signed_in, &content)
        }
        Err(e) => error_page(e),
    }
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
    let session = Session {
        approver_id: who.id.clone(),
        csrf,
        expires_at: now_ms().saturating_add(ttl_ms),
    };
    if !app.sessions.insert(sid.clone(), session) {
        return page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "lock poisoned");
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
    let Some(signed_in) = app.sessions.signed_in(&app.cfg, headers) else {
        return Err(Box::new(login_page(
            StatusCode::UNAUTHORIZED,
            Some("Please sign in."),
        )));
    };
    if !ct_eq(&f.csrf, &signed_in.session.csrf) {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "CSRF token mismatch.",
        )));
    }
    Ok((signed_in.id, signed_in.approver))
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
    app.sessions.remove(&sid);
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sg_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

/// A state-changing form: checked session and CSRF token, then `act` as
/// the signed-in approver; back to `back` when it succeeded.
fn acted<T>(
    app: &Shared,
    headers: &HeaderMap,
    form: &CsrfForm,
    refused: &str,
    back: &str,
    act: impl FnOnce(&Approver) -> Result<T, ApiError>,
) -> Response {
    let (_, who) = match checked(app, headers, form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match act(&who) {
        Ok(_) => Redirect::to(back).into_response(),
        Err(ApiError(code, msg)) => page(code, refused, &esc(&msg)),
    }
}

async fn ui_approve(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    acted(&app, &headers, &f, "Not approved", "/", |who| {
        app.approve(who, &id)
    })
}

async fn ui_deny(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    acted(&app, &headers, &f, "Not denied", "/", |who| {
        app.deny(who, &id, f.reason.trim())
    })
}

async fn ui_revoke(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    acted(&app, &headers, &f, "Not revoked", "/grants", |who| {
        app.revoke(who, &id)
    })
}

//! The approval service's state and its decisions (create, approve, deny,
//! expire, answer a callout), shared by the HTTP API (`server`) and the
//! approvers' page (`web`), which both build on it.

use crate::config::{Approver, Config};
use crate::protocol::{CalloutReply, CalloutRequest, Mode, DEFAULT_GRANT_TTL_S};
use crate::rules::{in_group, may_decide};
use crate::session::Sessions;
use crate::store::{Approval, Decided, HistoryFilter, Scope, Store, StoreError, TrackRecord};
use crate::util::{now_ms, rfc3339};
use crate::webhook;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::sync::Notify;

pub struct App {
    pub cfg: Config,
    store: Mutex<Store>,
    /// Woken whenever any approval changes state (decision or expiry).
    pub changed: Notify,
    http: reqwest::Client,
    pub sessions: Sessions,
    /// Until when hold-mode callouts keep their clients waiting, per
    /// pending approval: the page shows the approver how long the CI job
    /// is still held.
    holds: Mutex<HashMap<String, Vec<i64>>>,
}

pub type Shared = Arc<App>;

/// An API error: status code plus `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError(StatusCode::NOT_FOUND, "not found".into()),
            StoreError::NotPending(s) => {
                ApiError(StatusCode::CONFLICT, format!("not pending (status {s})"))
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl App {
    pub fn new(cfg: Config, store: Store) -> Shared {
        Arc::new(App {
            cfg,
            store: Mutex::new(store),
            changed: Notify::new(),
            http: reqwest::Client::new(),
            sessions: Sessions::default(),
            holds: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> ApiResult<MutexGuard<'_, Store>> {
        self.store.lock().map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "state lock poisoned".into(),
            )
        })
    }

    pub fn approval_url(&self, id: &str) -> String {
        format!("{}/#{}", self.cfg.public_url(), id)
    }

    fn pending_ttl_ms(&self) -> i64 {
        i64::try_from(self.cfg.pending_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Expire overdue pending approvals; wake hold-mode waiters if any changed.
    pub fn sweep(&self) -> ApiResult<()> {
        let n = self.store()?.expire_pending(now_ms())?;
        if n > 0 {
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// The approve action shared by the API and the web page.
    pub fn approve(&self, who: &Approver, id: &str) -> ApiResult<crate::store::Grant> {
        let now = now_ms();
        let grant = {
            let mut st = self.store()?;
            st.expire_pending(now)?;
            let a = st.get_approval(id)?.ok_or(StoreError::NotFound)?;
            may_decide(who, &a).map_err(|r| ApiError(StatusCode::FORBIDDEN, r.to_string()))?;
            st.approve(id, &who.id, now)?
        };
        tracing::info!(approval_id = id, approver = %who.id, grant_id = %grant.id, "approved");
        self.changed.notify_waiters();
        Ok(grant)
    }

    /// The deny action shared by the API and the web page.
    pub fn deny(&self, who: &Approver, id: &str, reason: &str) -> ApiResult<Approval> {
        let now = now_ms();
        let a = {
            let mut st = self.store()?;
            st.expire_pending(now)?;
            let a = st.get_approval(id)?.ok_or(StoreError::NotFound)?;
            may_decide(who, &a).map_err(|r| ApiError(StatusCode::FORBIDDEN, r.to_string()))?;
            st.deny(id, &who.id, reason, now)?
        };
        tracing::info!(approval_id = id, approver = %who.id, reason, "denied");
        self.changed.notify_waiters();
        Ok(a)
    }

    /// Revokes a grant of an approval in one of `who`'s groups.
    pub fn revoke(&self, who: &Approver, id: &str) -> ApiResult<crate::store::Grant> {
        let grant = {
            let mut st = self.store()?;
            let grant = st.get_grant(id)?.ok_or(StoreError::NotFound)?;
            let approval = st
                .get_approval(&grant.approval_id)?
                .ok_or(StoreError::NotFound)?;
            if !in_group(who, &approval) {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "not a member of the approver group".into(),
                ));
            }
            st.revoke_grant(id, &who.id, now_ms())?
        };
        tracing::info!(grant_id = %id, actor = %who.id, "grant revoked");
        Ok(grant)
    }

    /// Pending approvals `who` may see (their groups), newest first.
    pub fn visible(&self, who: &Approver, status: Option<&str>) -> ApiResult<Vec<Approval>> {
        self.sweep()?;
        let all = self.store()?.list(status)?;
        Ok(all.into_iter().filter(|a| in_group(who, a)).collect())
    }

    /// Decided approvals in `who`'s groups, newest first.
    pub fn history(&self, who: &Approver, filter: &HistoryFilter) -> ApiResult<Vec<Decided>> {
        self.sweep()?;
        let all = self.store()?.history(filter, HISTORY_LIMIT)?;
        Ok(all
            .into_iter()
            .filter(|d| in_group(who, &d.approval))
            .collect())
    }

    /// Grants in force for approvals in `who`'s groups.
    pub fn live_grants(&self, who: &Approver) -> ApiResult<Vec<Decided>> {
        let all = self.store()?.live_grants(now_ms())?;
        Ok(all
            .into_iter()
            .filter(|d| in_group(who, &d.approval))
            .collect())
    }

    /// How the approval's principal fared with its resource in the last
    /// [`TRACK_RECORD_DAYS`] days.
    pub fn track_record(&self, a: &Approval) -> ApiResult<TrackRecord> {
        let since = now_ms().saturating_sub(TRACK_RECORD_DAYS * 86_400_000);
        Ok(self.store()?.track_record(
            &a.scope.principal_type,
            &a.scope.principal_id,
            &a.scope.resource,
            since,
        )?)
    }

    /// Until when a hold-mode callout keeps a client waiting on this
    /// approval (the latest of them), if one does.
    pub fn held_until(&self, approval_id: &str) -> Option<i64> {
        let holds = self.holds.lock().ok()?;
        holds.get(approval_id)?.iter().copied().max()
    }

    fn hold(&self, approval_id: &str, until: i64) -> Hold<'_> {
        if let Ok(mut holds) = self.holds.lock() {
            holds.entry(approval_id.to_owned()).or_default().push(until);
        }
        Hold {
            app: self,
            approval_id: approval_id.to_owned(),
            until,
        }
    }

    /// Create-or-check: the answer to a callout before any hold-mode wait.
    /// Returns either a final reply, or the pending approval to wait on.
    fn check_or_create(&self, req: &CalloutRequest) -> ApiResult<Result<CalloutReply, Approval>> {
        let now = now_ms();
        let scope = Scope::of(req);
        let created = {
            let mut st = self.store()?;
            if st.expire_pending(now)? > 0 {
                self.changed.notify_waiters();
            }
            if let Some(g) = st.live_grant(&scope, now)? {
                return Ok(Ok(CalloutReply::Approved {
                    grant_id: g.id,
                    approver: g.approver,
                    expires_at: rfc3339(g.expires_at),
                }));
            }
            if let Some(a) = st.pending_for(&scope, now)? {
                return Ok(Err(a));
            }
            // A denial (or expiry) decided since the last ask is reported once;
            // the next ask after that opens a new approval.
            if let Some(d) = st.unreported_denial(&scope, now - self.pending_ttl_ms())? {
                st.mark_reported(&d.id)?;
                return Ok(Ok(denied_reply(&d)));
            }
            let ttl = req
                .ttl_s
                .unwrap_or(DEFAULT_GRANT_TTL_S)
                .min(self.cfg.max_grant_ttl_s);
            st.create_approval(req, ttl, self.pending_ttl_ms(), now)?
        };
        tracing::info!(approval_id = %created.id, principal = %req.principal.id,
            action = %req.action, resource = %req.resource, "approval requested");
        if let Some(hook) = self.cfg.webhook.clone() {
            tokio::spawn(webhook::send(
                self.http.clone(),
                hook,
                created.clone(),
                self.approval_url(&created.id),
            ));
        }
        Ok(Err(created))
    }

    /// The reply for an approval's current state.
    fn reply_for(&self, id: &str) -> ApiResult<CalloutReply> {
        let now = now_ms();
        let st = self.store()?;
        let a = st.get_approval(id)?.ok_or(StoreError::NotFound)?;
        match a.status.as_str() {
            "pending" => Ok(CalloutReply::Pending {
                approval_url: self.approval_url(&a.id),
                approval_id: a.id,
            }),
            "approved" => {
                let g = match &a.grant_id {
                    Some(gid) => st.get_grant(gid)?,
                    None => None,
                };
                match g {
                    Some(g) if g.revoked_at.is_none() && g.expires_at > now => {
                        Ok(CalloutReply::Approved {
                            grant_id: g.id,
                            approver: g.approver,
                            expires_at: rfc3339(g.expires_at),
                        })
                    }
                    Some(g) => Ok(CalloutReply::Denied {
                        approver: g.revoked_by.unwrap_or(g.approver),
                        reason: "grant no longer valid".into(),
                    }),
                    None => Err(ApiError(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "approved without grant".into(),
                    )),
                }
            }
            _ => {
                st.mark_reported(&a.id)?;
                Ok(denied_reply(&a))
            }
        }
    }

    pub async fn callout(&self, req: CalloutRequest) -> ApiResult<CalloutReply> {
        let pending = match self.check_or_create(&req)? {
            Ok(reply) => return Ok(reply),
            Err(a) => a,
        };
        if req.mode == Mode::Hold && req.wait_ms > 0 {
            let wait = Duration::from_millis(u64::from(req.wait_ms.min(self.cfg.max_wait_ms)));
            let deadline = tokio::time::Instant::now() + wait;
            let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            let _hold = self.hold(&pending.id, now_ms().saturating_add(wait_ms));
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let now = now_ms();
                let still_pending = {
                    let st = self.store()?;
                    let a = st.get_approval(&pending.id)?.ok_or(StoreError::NotFound)?;
                    a.status == "pending" && a.expires_at > now
                };
                if !still_pending || tokio::time::Instant::now() >= deadline {
                    break;
                }
                // Wake on any state change, and at least every second so that
                // expiry is seen without the sweeper.
                let slice = (deadline - tokio::time::Instant::now()).min(Duration::from_secs(1));
                let _ = tokio::time::timeout(slice, notified).await;
            }
            self.sweep()?;
        }
        self.reply_for(&pending.id)
    }
}

/// The history view lists at most this many decided approvals.
const HISTORY_LIMIT: u32 = 500;

/// The window of a request's track record.
pub const TRACK_RECORD_DAYS: i64 = 30;

/// One hold-mode callout's wait, forgotten when the callout answers or
/// its connection goes away.
struct Hold<'a> {
    app: &'a App,
    approval_id: String,
    until: i64,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Ok(mut holds) = self.app.holds.lock() {
            if let Some(list) = holds.get_mut(&self.approval_id) {
                if let Some(at) = list.iter().position(|u| *u == self.until) {
                    list.swap_remove(at);
                }
                if list.is_empty() {
                    holds.remove(&self.approval_id);
                }
            }
        }
    }
}

fn denied_reply(a: &Approval) -> CalloutReply {
    CalloutReply::Denied {
        approver: a.decided_by.clone().unwrap_or_else(|| "system".into()),
        reason: a.decision_reason.clone().unwrap_or_default(),
    }
}

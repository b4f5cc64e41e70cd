//! Approvers' page sessions: the HttpOnly, SameSite=Strict cookie the login
//! form sets, and the CSRF token each session's forms carry. The page and
//! the read-only API (the page's poll) both find the signed-in approver here.

use crate::config::{Approver, Config};
use crate::util::now_ms;
use axum::http::{header, HeaderMap};
use std::{collections::HashMap, sync::Mutex};

pub const COOKIE: &str = "sg_session";

/// A signed-in approver's page session.
#[derive(Debug, Clone)]
pub struct Session {
    pub approver_id: String,
    pub csrf: String,
    pub expires_at: i64,
}

/// The live sessions by id. A poisoned lock reads as "no session": the
/// approver signs in again rather than the service failing open.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

/// A session found by its cookie, with its id and its approver.
pub struct SignedIn {
    pub id: String,
    pub session: Session,
    pub approver: Approver,
}

impl Sessions {
    pub fn insert(&self, id: String, session: Session) -> bool {
        match self.0.lock() {
            Ok(mut map) => {
                map.insert(id, session);
                true
            }
            Err(_) => false,
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(id);
        }
    }

    /// Forget sessions past their lifetime.
    pub fn sweep(&self) {
        let now = now_ms();
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, s| s.expires_at > now);
        }
    }

    /// The live session the request's cookie names, if its approver is
    /// still configured.
    pub fn signed_in(&self, cfg: &Config, headers: &HeaderMap) -> Option<SignedIn> {
        let id = cookie_value(headers, COOKIE)?;
        let session = self.0.lock().ok()?.get(id).cloned()?;
        if session.expires_at <= now_ms() {
            return None;
        }
        let approver = cfg
            .approvers
            .iter()
            .find(|a| a.id == session.approver_id)?
            .clone();
        Some(SignedIn {
            id: id.to_owned(),
            session,
            approver,
        })
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

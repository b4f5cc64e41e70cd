//! SQLite state: approvals, grants and the decision log. All times are epoch ms,
//! passed in by the caller so that expiry is testable without sleeping.

use crate::protocol::CalloutRequest;
use crate::util::random_id;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug)]
pub enum StoreError {
    Db(rusqlite::Error),
    Rng(getrandom::Error),
    NotFound,
    /// The approval is no longer pending (already decided or expired).
    NotPending(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Db(e) => write!(f, "database: {e}"),
            StoreError::Rng(e) => write!(f, "random: {e}"),
            StoreError::NotFound => write!(f, "not found"),
            StoreError::NotPending(s) => write!(f, "not pending (status {s})"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e)
    }
}
impl From<getrandom::Error> for StoreError {
    fn from(e: getrandom::Error) -> Self {
        StoreError::Rng(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The scope of an approval and of the grant it creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scope {
    pub principal_type: String,
    pub principal_id: String,
    pub action: String,
    pub resource: String,
}

impl Scope {
    pub fn of(req: &CalloutRequest) -> Self {
        Scope {
            principal_type: req.principal.kind.clone(),
            principal_id: req.principal.id.clone(),
            action: req.action.clone(),
            resource: req.resource.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub id: String,
    pub request_id: String,
    #[serde(flatten)]
    pub scope: Scope,
    pub approvers: String,
    pub reason: String,
    pub claims: Map<String, Value>,
    pub policies: Vec<String>,
    pub ttl_s: u64,
    pub created_at: i64,
    pub expires_at: i64,
    /// pending | approved | denied | expired
    pub status: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub decision_reason: Option<String>,
    pub grant_id: Option<String>,
}

impl Approval {
    /// Identities that count as the requester (principal id, `actor`, `email` claims).
    pub fn requester_identities(&self) -> Vec<String> {
        let mut ids = vec![self.scope.principal_id.clone()];
        for claim in ["actor", "email"] {
            if let Some(Value::String(s)) = self.claims.get(claim) {
                if !s.is_empty() {
                    ids.push(s.clone());
                }
            }
        }
        ids
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub id: String,
    pub approval_id: String,
    #[serde(flatten)]
    pub scope: Scope,
    pub approver: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

/// A decided approval as the history view lists it, with its grant.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    #[serde(flatten)]
    pub approval: Approval,
    pub grant: Option<Grant>,
}

impl Decided {
    /// `approved`, `denied`, `expired`, or `revoked` (approved, then its
    /// grant revoked).
    pub fn outcome(&self) -> &str {
        match &self.grant {
            Some(g) if g.revoked_at.is_some() => "revoked",
            _ => &self.approval.status,
        }
    }
}

/// The outcomes the history view can be narrowed to.
pub const DECIDED_OUTCOMES: [&str; 4] = ["approved", "denied", "expired", "revoked"];

/// What the history view is narrowed to; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// One of [`DECIDED_OUTCOMES`].
    pub outcome: Option<String>,
    /// Part of the principal's id.
    pub principal: Option<String>,
    /// Part of the resource.
    pub resource: Option<String>,
}

/// How a principal fared with one resource: what an approver weighs before
/// deciding again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrackRecord {
    pub approved: u32,
    pub denied: u32,
    pub expired: u32,
    /// The newest decision by a person (expiry is not one): who, when, what.
    pub last: Option<LastDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastDecision {
    pub outcome: String,
    pub by: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub approval_id: String,
    pub grant_id: Option<String>,
    pub kind: String,
    pub actor: String,
    pub reason: String,
    pub at: i64,
}

pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    principal_type TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    approvers TEXT NOT NULL,
    reason TEXT NOT NULL,
    claims TEXT NOT NULL,
    policies TEXT NOT NULL,
    ttl_s INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at INTEGER,
    decision_reason TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS approvals_scope
    ON approvals (principal_type, principal_id, action, resource, status);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    approval_id TEXT NOT NULL REFERENCES approvals(id),
    principal_type TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    approver TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_by TEXT
);
CREATE INDEX IF NOT EXISTS grants_scope
    ON grants (principal_type, principal_id, action, resource);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    approval_id TEXT NOT NULL,
    grant_id TEXT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
"#;

const APPROVAL_COLS: &str = "a.id, a.request_id, a.principal_type, a.principal_id, a.action, \
    a.resource, a.approvers, a.reason, a.claims, a.policies, a.ttl_s, a.created_at, \
    a.expires_at, a.status, a.decided_by, a.decided_at, a.decision_reason, \
    (SELECT g.id FROM grants g WHERE g.approval_id = a.id)";

const GRANT_COLS: &str = "id, approval_id, principal_type, principal_id, action, resource, \
    approver, created_at, expires_at, revoked_at, revoked_by";

/// [`GRANT_COLS`] of a `grants g` joined after [`APPROVAL_COLS`].
const JOINED_GRANT_COLS: &str = "g.id, g.approval_id, g.principal_type, g.principal_id, \
    g.action, g.resource, g.approver, g.created_at, g.expires_at, g.revoked_at, g.revoked_by";

/// The grant of a LEFT JOIN whose columns start at `at`: none when the
/// approval has no grant.
fn joined_grant_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<Grant>> {
    let Some(id) = r.get::<_, Option<String>>(at)? else {
        return Ok(None);
    };
    Ok(Some(Grant {
        id,
        approval_id: r.get(at + 1)?,
        scope: Scope {
            principal_type: r.get(at + 2)?,
            principal_id: r.get(at + 3)?,
            action: r.get(at + 4)?,
            resource: r.get(at + 5)?,
        },
        approver: r.get(at + 6)?,
        created_at: r.get(at + 7)?,
        expires_at: r.get(at + 8)?,
        revoked_at: r.get(at + 9)?,
        revoked_by: r.get(at + 10)?,
    }))
}

fn approval_from_row(r: &Row<'_>) -> rusqlite::Result<Approval> {
    let claims: String = r.get(8)?;
    let policies: String = r.get(9)?;
    let ttl: i64 = r.get(10)?;
    Ok(Approval {
        id: r.get(0)?,
        request_id: r.get(1)?,
        scope: Scope {
            principal_type: r.get(2)?,
            principal_id: r.get(3)?,
            action: r.get(4)?,
            resource: r.get(5)?,
        },
        approvers: r.get(6)?,
        reason: r.get(7)?,
        claims: serde_json::from_str(&claims).unwrap_or_default(),
        policies: serde_json::from_str(&policies).unwrap_or_default(),
        ttl_s: u64::try_from(ttl).unwrap_or(0),
        created_at: r.get(11)?,
        expires_at: r.get(12)?,
        status: r.get(13)?,
        decided_by: r.get(14)?,
        decided_at: r.get(15)?,
        decision_reason: r.get(16)?,
        grant_id: r.get(17)?,
    })
}

fn grant_from_row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: r.get(0)?,
        approval_id: r.get(1)?,
        scope: Scope {
            principal_type: r.get(2)?,
            principal_id: r.get(3)?,
            action: r.get(4)?,
            resource: r.get(5)?,
        },
        approver: r.get(6)?,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        revoked_by: r.get(10)?,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    fn log(
        tx: &Connection,
        approval_id: &str,
        grant_id: Option<&str>,
        kind: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        tx.execute(
            "INSERT INTO decisions (approval_id, grant_id, kind, actor, reason, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![approval_id, grant_id, kind, actor, reason, now],
        )?;
        Ok(())
    }

    /// Turn pending approvals past their deadline into `expired` (a denial).
    pub fn expire_pending(&mut self, now: i64) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let ids: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= ?1",
            )?;
            let rows = st.query_map(params![now], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for id in &ids {
            tx.execute(
                "UPDATE approvals SET status = 'expired', decided_by = 'system', \
                 decided_at = ?2, decision_reason = 'expired' WHERE id = ?1",
                params![id, now],
            )?;
            Self::log(&tx, id, None, "expired", "system", "expired", now)?;
        }
        tx.commit()?;
        Ok(ids.len())
    }

    /// A grant for exactly this scope that is neither expired nor revoked.
    pub fn live_grant(&self, scope: &Scope, now: i64) -> Result<Option<Grant>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {GRANT_COLS} FROM grants WHERE principal_type = ?1 \
                     AND principal_id = ?2 AND action = ?3 AND resource = ?4 \
                     AND revoked_at IS NULL AND expires_at > ?5 \
                     ORDER BY expires_at DESC LIMIT 1"
                ),
                params![
                    scope.principal_type,
                    scope.principal_id,
                    scope.action,
                    scope.resource,
                    now
                ],
                grant_from_row,
            )
            .optional()?)
    }

    /// The pending (not yet expired) approval for this scope, if any.
    pub fn pending_for(&self, scope: &Scope, now: i64) -> Result<Option<Approval>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals a WHERE a.principal_type = ?1 \
                     AND a.principal_id = ?2 AND a.action = ?3 AND a.resource = ?4 \
                     AND a.status = 'pending' AND a.expires_at > ?5 \
                     ORDER BY a.created_at LIMIT 1"
                ),
                params![
                    scope.principal_type,
                    scope.principal_id,
                    scope.action,
                    scope.resource,
                    now
                ],
                approval_from_row,
            )
            .optional()?)
    }

    /// The newest denial/expiry for this scope that the requester has not been told
    /// about yet and that was decided after `since`.
    pub fn unreported_denial(&self, scope: &Scope, since: i64) -> Result<Option<Approval>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {APPROVAL_COLS} FROM approvals a WHERE a.principal_type = ?1 \
                     AND a.principal_id = ?2 AND a.action = ?3 AND a.resource = ?4 \
                     AND a.status IN ('denied', 'expired') AND a.reported = 0 \
                     AND a.decided_at > ?5 ORDER BY a.decided_at DESC LIMIT 1"
                ),
                params![
                    scope.principal_type,
                    scope.principal_id,
                    scope.action,
                    scope.resource,
                    since
                ],
                approval_from_row,
            )
            .optional()?)
    }

    /// Record that the requester has been answered with this approval's denial.
    pub fn mark_reported(&self, approval_id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE approvals SET reported = 1 WHERE id = ?1",
            params![approval_id],
        )?;
        Ok(())
    }

    pub fn create_approval(
        &self,
        req: &CalloutRequest,
        ttl_s: u64,
        pending_ttl_ms: i64,
        now: i64,
    ) -> Result<Approval> {
        let id = random_id("ap_")?;
        let claims = serde_json::to_string(&req.claims).unwrap_or_else(|_| "{}".into());
        let policies = serde_json::to_string(&req.policies).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "INSERT INTO approvals (id, request_id, principal_type, principal_id, action, \
             resource, approvers, reason, claims, policies, ttl_s, created_at, expires_at, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending')",
            params![
                id,
                req.request_id,
                req.principal.kind,
                req.principal.id,
                req.action,
                req.resource,
                req.approvers,
                req.reason,
                claims,
                policies,
                to_i64(ttl_s),
                now,
                now.saturating_add(pending_ttl_ms)
            ],
        )?;
        Self::log(
            &self.conn,
            &id,
            None,
            "requested",
            &req.principal.id,
            &req.reason,
            now,
        )?;
        self.get_approval(&id)?.ok_or(StoreError::NotFound)
    }

    pub fn get_approval(&self, id: &str) -> Result<Option<Approval>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {APPROVAL_COLS} FROM approvals a WHERE a.id = ?1"),
                params![id],
                approval_from_row,
            )
            .optional()?)
    }

    /// Approvals with the given status (`None` = all), newest first.
    pub fn list(&self, status: Option<&str>) -> Result<Vec<Approval>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {APPROVAL_COLS} FROM approvals a \
             WHERE (?1 IS NULL OR a.status = ?1) ORDER BY a.created_at DESC LIMIT 1000"
        ))?;
        let rows = st.query_map(params![status], approval_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn check_pending(tx: &Connection, id: &str, now: i64) -> Result<Approval> {
        let a = tx
            .query_row(
                &format!("SELECT {APPROVAL_COLS} FROM approvals a WHERE a.id = ?1"),
                params![id],
                approval_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound)?;
        if a.status != "pending" {
            return Err(StoreError::NotPending(a.status));
        }
        if a.expires_at <= now {
            return Err(StoreError::NotPending("expired".into()));
        }
        Ok(a)
    }

    /// Approve a pending approval, creating its grant. Authorisation is the caller's job.
    pub fn approve(&mut self, id: &str, approver: &str, now: i64) -> Result<Grant> {
        let tx = self.conn.transaction()?;
        let a = Self::check_pending(&tx, id, now)?;
        let grant_id = random_id("gr_")?;
        let expires = now.saturating_add(to_i64(a.ttl_s).saturating_mul(1000));
        tx.execute(
            "UPDATE approvals SET status = 'approved', decided_by = ?2, decided_at = ?3 \
             WHERE id = ?1",
            params![id, approver, now],
        )?;
        tx.execute(
            &format!(
                "INSERT INTO grants ({GRANT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL)"
            ),
            params![
                grant_id,
                id,
                a.scope.principal_type,
                a.scope.principal_id,
                a.scope.action,
                a.scope.resource,
                approver,
                now,
                expires
            ],
        )?;
        Self::log(&tx, id, Some(&grant_id), "approved", approver, "", now)?;
        tx.commit()?;
        self.get_grant(&grant_id)?.ok_or(StoreError::NotFound)
    }

    pub fn deny(&mut self, id: &str, approver: &str, reason: &str, now: i64) -> Result<Approval> {
        let tx = self.conn.transaction()?;
        Self::check_pending(&tx, id, now)?;
        tx.execute(
            "UPDATE approvals SET status = 'denied', decided_by = ?2, decided_at = ?3, \
             decision_reason = ?4 WHERE id = ?1",
            params![id, approver, now, reason],
        )?;
        Self::log(&tx, id, None, "denied", approver, reason, now)?;
        tx.commit()?;
        self.get_approval(id)?.ok_or(StoreError::NotFound)
    }

    pub fn get_grant(&self, id: &str) -> Result<Option<Grant>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {GRANT_COLS} FROM grants WHERE id = ?1"),
                params![id],
                grant_from_row,
            )
            .optional()?)
    }

    pub fn revoke_grant(&mut self, id: &str, actor: &str, now: i64) -> Result<Grant> {
        let tx = self.conn.transaction()?;
        let g = tx
            .query_row(
                &format!("SELECT {GRANT_COLS} FROM grants WHERE id = ?1"),
                params![id],
                grant_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound)?;
        if g.revoked_at.is_some() {
            return Err(StoreError::NotPending("revoked".into()));
        }
        tx.execute(
            "UPDATE grants SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1",
            params![id, now, actor],
        )?;
        Self::log(&tx, &g.approval_id, Some(id), "revoked", actor, "", now)?;
        tx.commit()?;
        self.get_grant(id)?.ok_or(StoreError::NotFound)
    }

    /// Decided approvals, newest decision first (at most `limit`).
    pub fn history(&self, filter: &HistoryFilter, limit: u32) -> Result<Vec<Decided>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {APPROVAL_COLS}, {JOINED_GRANT_COLS} FROM approvals a \
             LEFT JOIN grants g ON g.approval_id = a.id \
             WHERE a.status != 'pending' \
             AND (?1 IS NULL OR (CASE WHEN g.revoked_at IS NOT NULL THEN 'revoked' \
                                 ELSE a.status END) = ?1) \
             AND (?2 IS NULL OR instr(a.principal_id, ?2) > 0) \
             AND (?3 IS NULL OR instr(a.resource, ?3) > 0) \
             ORDER BY COALESCE(g.revoked_at, a.decided_at) DESC, a.id LIMIT ?4"
        ))?;
        let rows = st.query_map(
            params![filter.outcome, filter.principal, filter.resource, limit],
            |r| {
                Ok(Decided {
                    approval: approval_from_row(r)?,
                    grant: joined_grant_from_row(r, 18)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Grants in force at `now` (neither expired nor revoked), with their
    /// approvals, soonest to expire first.
    pub fn live_grants(&self, now: i64) -> Result<Vec<Decided>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {APPROVAL_COLS}, {JOINED_GRANT_COLS} FROM grants g \
             JOIN approvals a ON a.id = g.approval_id \
             WHERE g.revoked_at IS NULL AND g.expires_at > ?1 \
             ORDER BY g.expires_at, g.id LIMIT 1000"
        ))?;
        let rows = st.query_map(params![now], |r| {
            Ok(Decided {
                approval: approval_from_row(r)?,
                grant: joined_grant_from_row(r, 18)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How `principal` fared with `resource` (any action) in approvals
    /// decided since `since`.
    pub fn track_record(
        &self,
        principal_type: &str,
        principal_id: &str,
        resource: &str,
        since: i64,
    ) -> Result<TrackRecord> {
        let mut record = TrackRecord::default();
        let mut st = self.conn.prepare(
            "SELECT a.status, a.decided_by, a.decided_at FROM approvals a \
             WHERE a.principal_type = ?1 AND a.principal_id = ?2 AND a.resource = ?3 \
             AND a.status IN ('approved', 'denied', 'expired') AND a.decided_at >= ?4 \
             ORDER BY a.decided_at DESC, a.id",
        )?;
        let rows = st.query_map(
            params![principal_type, principal_id, resource, since],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            },
        )?;
        for row in rows {
            let (status, by, at) = row?;
            match status.as_str() {
                "approved" => record.approved += 1,
                "denied" => record.denied += 1,
                _ => record.expired += 1,
            }
            if record.last.is_none() && status != "expired" {
                if let (Some(by), Some(at)) = (by, at) {
                    record.last = Some(LastDecision {
                        outcome: status,
                        by,
                        at,
                    });
                }
            }
        }
        Ok(record)
    }

    pub fn decisions(&self, approval_id: &str) -> Result<Vec<Decision>> {
        let mut st = self.conn.prepare(
            "SELECT approval_id, grant_id, kind, actor, reason, at FROM decisions \
             WHERE approval_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map(params![approval_id], |r| {
            Ok(Decision {
                approval_id: r.get(0)?,
                grant_id: r.get(1)?,
                kind: r.get(2)?,
                actor: r.get(3)?,
                reason: r.get(4)?,
                at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Mode, Principal};

    fn req(pid: &str, action: &str, resource: &str) -> CalloutRequest {
        CalloutRequest {
            request_id: "r".into(),
            principal: Principal {
                kind: "User".into(),
                id: pid.into(),
            },
            claims: Map::new(),
            action: action.into(),
            resource: resource.into(),
            policies: vec![],
            approvers: "secops".into(),
            reason: "why".into(),
            mode: Mode::Retry,
            wait_ms: 0,
            ttl_s: None,
        }
    }

    /// bob: approved on secret/a (then revoked), denied on secret/a,
    /// expired on secret/a, approved on secret/b; carol: denied on secret/a.
    fn decided_history() -> (Store, [String; 5]) {
        let mut s = Store::open_in_memory().unwrap();
        let revoked = s
            .create_approval(&req("bob", "read", "secret/a"), 60, 3_600_000, 0)
            .unwrap();
        let g = s.approve(&revoked.id, "alice", 10).unwrap();
        s.revoke_grant(&g.id, "dave", 20).unwrap();
        let denied = s
            .create_approval(&req("bob", "read", "secret/a"), 60, 3_600_000, 30)
            .unwrap();
        s.deny(&denied.id, "dave", "not in a change window", 40)
            .unwrap();
        let expired = s
            .create_approval(&req("bob", "list", "secret/a"), 60, 10, 50)
            .unwrap();
        s.expire_pending(70).unwrap();
        let approved = s
            .create_approval(&req("bob", "read", "secret/b"), 60, 3_600_000, 80)
            .unwrap();
        s.approve(&approved.id, "alice", 90).unwrap();
        let carol = s
            .create_approval(&req("carol", "read", "secret/a"), 60, 3_600_000, 100)
            .unwrap();
        s.deny(&carol.id, "alice", "no", 110).unwrap();
        s.create_approval(&req("bob", "read", "secret/c"), 60, 3_600_000, 120)
            .unwrap();
        (
            s,
            [revoked.id, denied.id, expired.id, approved.id, carol.id],
        )
    }

    fn ids(list: &[Decided]) -> Vec<&str> {
        list.iter().map(|d| d.approval.id.as_str()).collect()
    }

    #[test]
    fn history_lists_decided_approvals_newest_first_with_their_outcome() {
        let (s, [revoked, denied, expired, approved, carol]) = decided_history();
        let all = s.history(&HistoryFilter::default(), 100).unwrap();
        // Ordered by the latest decision: carol's denial at 110, ... the revocation at 20.
        assert_eq!(ids(&all), [&carol, &approved, &expired, &denied, &revoked]);
        let outcomes: Vec<_> = all.iter().map(Decided::outcome).collect();
        assert_eq!(
            outcomes,
            ["denied", "approved", "expired", "denied", "revoked"]
        );
        let revoked_entry = &all[4];
        let grant = revoked_entry.grant.as_ref().unwrap();
        assert_eq!(grant.revoked_by.as_deref(), Some("dave"));
        assert_eq!(revoked_entry.approval.decided_by.as_deref(), Some("alice"));
        assert_eq!(
            all[3].approval.decision_reason.as_deref(),
            Some("not in a change window")
        );
        assert_eq!(s.history(&HistoryFilter::default(), 2).unwrap().len(), 2);
    }

    #[test]
    fn history_filters_by_outcome_principal_and_resource() {
        let (s, [revoked, denied, expired, approved, carol]) = decided_history();
        let by = |outcome: Option<&str>, principal: Option<&str>, resource: Option<&str>| {
            let filter = HistoryFilter {
                outcome: outcome.map(str::to_owned),
                principal: principal.map(str::to_owned),
                resource: resource.map(str::to_owned),
            };
            ids(&s.history(&filter, 100).unwrap())
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(by(Some("revoked"), None, None), [revoked.as_str()]);
        assert_eq!(by(Some("approved"), None, None), [approved.as_str()]);
        assert_eq!(by(Some("expired"), None, None), [expired.as_str()]);
        assert_eq!(
            by(Some("denied"), None, None),
            [carol.as_str(), denied.as_str()]
        );
        assert_eq!(by(Some("denied"), Some("bo"), None), [denied.as_str()]);
        assert_eq!(by(None, Some("carol"), Some("secret/a")), [carol]);
        assert_eq!(by(None, Some("bob"), Some("secret/b")), [approved]);
        assert!(by(Some("pending"), None, None).is_empty());
    }

    #[test]
    fn live_grants_leave_out_revoked_and_expired_ones() {
        let (s, [_, _, _, approved, _]) = decided_history();
        // secret/b's grant: approved at 90 with ttl 60 s.
        assert_eq!(ids(&s.live_grants(100).unwrap()), [approved.as_str()]);
        assert!(s.live_grants(90 + 60_000).unwrap().is_empty());
    }

    #[test]
    fn track_record_counts_one_principal_on_one_resource_since_a_time() {
        let (s, _) = decided_history();
        let record = s.track_record("User", "bob", "secret/a", 0).unwrap();
        assert_eq!((record.approved, record.denied, record.expired), (1, 1, 1));
        // The newest decision by a person: dave's denial at 40 (the expiry at 70 is nobody's).
        assert_eq!(
            record.last,
            Some(LastDecision {
                outcome: "denied".into(),
                by: "dave".into(),
                at: 40
            })
        );
        let recent = s.track_record("User", "bob", "secret/a", 35).unwrap();
        assert_eq!((recent.approved, recent.denied, recent.expired), (0, 1, 1));
        assert_eq!(
            s.track_record("User", "nobody", "secret/a", 0).unwrap(),
            TrackRecord::default()
        );
    }

    #[test]
    fn grant_is_scoped_to_principal_action_and_resource() {
        let mut s = Store::open_in_memory().unwrap();
        let r = req("bob", "read", "secret/a");
        let a = s.create_approval(&r, 900, 3_600_000, 1000).unwrap();
        let g = s.approve(&a.id, "alice", 2000).unwrap();
        assert_eq!(g.expires_at, 2000 + 900_000);
        let scope = Scope::of(&r);
        assert_eq!(s.live_grant(&scope, 3000).unwrap().unwrap().id, g.id);
        for other in [
            req("carol", "read", "secret/a"),
            req("bob", "write", "secret/a"),
            req("bob", "read", "secret/b"),
        ] {
            assert!(s.live_grant(&Scope::of(&other), 3000).unwrap().is_none());
        }
        let mut svc = scope.clone();
        svc.principal_type = "Service".into();
        assert!(s.live_grant(&svc, 3000).unwrap().is_none());
    }

    #[test]
    fn grant_expires_and_revocation_ends_it() {
        let mut s = Store::open_in_memory().unwrap();
        let r = req("bob", "read", "secret/a");
        let a = s.create_approval(&r, 10, 3_600_000, 0).unwrap();
        let g = s.approve(&a.id, "alice", 0).unwrap();
        let scope = Scope::of(&r);
        assert!(s.live_grant(&scope, 9_999).unwrap().is_some());
        assert!(s.live_grant(&scope, 10_000).unwrap().is_none());
        s.revoke_grant(&g.id, "alice", 5).unwrap();
        assert!(s.live_grant(&scope, 6).unwrap().is_none());
        let kinds: Vec<_> = s
            .decisions(&a.id)
            .unwrap()
            .into_iter()
            .map(|d| d.kind)
            .collect();
        assert_eq!(kinds, vec!["requested", "approved", "revoked"]);
    }

    #[test]
    fn pending_expires_into_a_denial() {
        let mut s = Store::open_in_memory().unwrap();
        let r = req("bob", "read", "secret/a");
        let scope = Scope::of(&r);
        let a = s.create_approval(&r, 900, 1000, 0).unwrap();
        assert!(s.pending_for(&scope, 999).unwrap().is_some());
        assert!(s.pending_for(&scope, 1000).unwrap().is_none());
        assert!(matches!(
            s.approve(&a.id, "alice", 1000),
            Err(StoreError::NotPending(_))
        ));
        assert_eq!(s.expire_pending(1000).unwrap(), 1);
        let a = s.get_approval(&a.id).unwrap().unwrap();
        assert_eq!(a.status, "expired");
        assert_eq!(a.decision_reason.as_deref(), Some("expired"));
        let d = s.unreported_denial(&scope, 0).unwrap().unwrap();
        assert_eq!(d.id, a.id);
        s.mark_reported(&a.id).unwrap();
        assert!(s.unreported_denial(&scope, 0).unwrap().is_none());
    }

    #[test]
    fn decided_approvals_cannot_be_decided_again() {
        let mut s = Store::open_in_memory().unwrap();
        let a = s
            .create_approval(&req("bob", "read", "x"), 900, 3_600_000, 0)
            .unwrap();
        s.deny(&a.id, "alice", "no", 1).unwrap();
        assert!(matches!(
            s.approve(&a.id, "alice", 2),
            Err(StoreError::NotPending(_))
        ));
        assert!(matches!(
            s.approve("ap_missing", "alice", 2),
            Err(StoreError::NotFound)
        ));
    }
}

//! `approver.toml`: see README.md for the reference.

use serde::Deserialize;
use std::{collections::HashSet, net::SocketAddr, path::PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Must be a loopback address unless `allow_non_loopback`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub allow_non_loopback: bool,
    /// SQLite database file (created if missing).
    pub database: PathBuf,
    /// Base URL used to build `approval_url` (default `http://<listen>`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Path the filter POSTs callouts to.
    #[serde(default = "default_callout_path")]
    pub callout_path: String,
    /// Shared bearer token the filter sends on callouts.
    pub callout_token: String,
    /// Upper bound on a hold-mode wait, whatever `wait_ms` asks for; the
    /// protocol's type for a wait, so the cap cannot exceed what it caps.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u32,
    /// How long a pending approval lives before it counts as denied ("expired").
    #[serde(default = "default_pending_ttl_s")]
    pub pending_ttl_s: u64,
    /// Upper bound on a grant's lifetime, whatever `ttl_s` asks for.
    #[serde(default = "default_max_grant_ttl_s")]
    pub max_grant_ttl_s: u64,
    /// Lifetime of a web-page login session.
    #[serde(default = "default_session_ttl_s")]
    pub session_ttl_s: u64,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub approvers: Vec<Approver>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// Identity recorded on decisions and compared for self-approval.
    pub id: String,
    /// Bearer token for the API, CLI and web login.
    pub token: String,
    /// Approver groups (the callout's `approvers` value) this identity may decide for.
    #[serde(default)]
    pub groups: Vec<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8300))
}
fn default_callout_path() -> String {
    "/v1/approvals".into()
}
fn default_max_wait_ms() -> u32 {
    30_000
}
fn default_pending_ttl_s() -> u64 {
    3600
}
fn default_max_grant_ttl_s() -> u64 {
    86_400
}
fn default_session_ttl_s() -> u64 {
    8 * 3600
}
fn default_webhook_timeout_ms() -> u64 {
    3000
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(format!(
                "listen {} is not a loopback address (set allow_non_loopback = true to override)",
                self.listen
            ));
        }
        if self.callout_token.len() < 16 {
            return Err("callout_token must be at least 16 characters".into());
        }
        if !self.callout_path.starts_with('/') {
            return Err("callout_path must start with '/'".into());
        }
        let mut tokens = HashSet::new();
        let mut ids = HashSet::new();
        for a in &self.approvers {
            if a.id.is_empty() {
                return Err("approver id must not be empty".into());
            }
            if a.token.len() < 16 {
                return Err(format!(
                    "approver {}: token must be at least 16 characters",
                    a.id
                ));
            }
            if a.token == self.callout_token || !tokens.insert(a.token.as_str()) {
                return Err(format!("approver {}: token is not unique", a.id));
            }
            if !ids.insert(a.id.as_str()) {
                return Err(format!("approver {} is listed twice", a.id));
            }
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    pub fn approver_by_token(&self, token: &str) -> Option<&Approver> {
        self.approvers
            .iter()
            .find(|a| crate::util::ct_eq(&a.token, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
database = "/tmp/x.db"
callout_token = "0123456789abcdef"
[[approvers]]
id = "alice@example.com"
token = "alice-token-0123456789"
groups = ["secops"]
"#;

    #[test]
    fn defaults_apply() {
        let c = Config::parse(OK).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8300");
        assert_eq!(c.callout_path, "/v1/approvals");
        assert_eq!(c.pending_ttl_s, 3600);
        assert_eq!(c.public_url(), "http://127.0.0.1:8300");
        assert_eq!(
            c.approver_by_token("alice-token-0123456789").unwrap().id,
            "alice@example.com"
        );
        assert!(c.approver_by_token("nope").is_none());
    }

    #[test]
    fn refuses_non_loopback_and_short_tokens() {
        let t = format!("listen = \"0.0.0.0:8300\"\n{OK}");
        assert!(Config::parse(&t).unwrap_err().contains("loopback"));
        let t = OK.replace("0123456789abcdef", "short");
        assert!(Config::parse(&t).is_err());
        let t = OK.replace("alice-token-0123456789", "0123456789abcdef");
        assert!(Config::parse(&t).unwrap_err().contains("unique"));
    }
}

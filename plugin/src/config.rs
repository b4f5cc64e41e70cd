//! The plugin configuration: Envoy's `configuration` string, parsed and
//! validated once. Any problem rejects the whole configuration, so Envoy
//! never serves with a half-loaded policy set.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::approval::ApprovalConfig;
use crate::audit::{AuditConfig, RawAuditConfig};
use crate::bundle::{Bundle, BundleConfig};
use crate::classify::{MountError, MountSpecs, MountTable};
use crate::identity::{can_name_principal, IdentityConfig, IdentitySource, ANONYMOUS_TYPE};
use crate::policy::{PolicyEngine, PolicyError};
use crate::templates::TemplateTable;

/// The configuration as operators write it (see README: Configuration).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    policies: Option<String>,
    #[serde(default = "no_entities")]
    entities: Value,
    #[serde(default)]
    mounts: BTreeMap<String, Value>,
    #[serde(default)]
    namespaces: Vec<String>,
    identity: RawIdentity,
    #[serde(default)]
    audit: Option<RawAuditConfig>,
    #[serde(default)]
    approval: Option<ApprovalConfig>,
    #[serde(default)]
    bundle: Option<BundleConfig>,
    #[serde(default)]
    recent_reads: Option<RecentReadsConfig>,
}

/// `recent_reads`: the window of `context.recent_reads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentReadsConfig {
    window_s: u64,
}

const DEFAULT_RECENT_READS_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
enum RawIdentity {
    Header {
        #[serde(default = "default_header")]
        header: String,
        #[serde(default = "default_principal_type")]
        principal_type: String,
        #[serde(default)]
        anonymous: bool,
    },
    Jwt {
        payload_in_metadata: String,
        #[serde(default = "default_principal_claim")]
        principal_claim: String,
        #[serde(default = "default_principal_type")]
        principal_type: String,
        #[serde(default)]
        anonymous: bool,
    },
    Mtls {
        #[serde(default = "default_principal_type")]
        principal_type: String,
        #[serde(default)]
        anonymous: bool,
    },
}

fn no_entities() -> Value {
    Value::Array(Vec::new())
}

fn default_header() -> String {
    "x-secretgate-principal".into()
}

fn default_principal_type() -> String {
    "Workload".into()
}

fn default_principal_claim() -> String {
    "sub".into()
}

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Json(String),
    Mounts(MountError),
    Templates(String),
    Identity(String),
    Audit(String),
    Approval(String),
    Bundle(String),
    Policy(PolicyError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Json(e) => write!(f, "configuration: {e}"),
            ConfigError::Mounts(e) => write!(f, "mounts: {e}"),
            ConfigError::Templates(e) => write!(f, "mounts: {e}"),
            ConfigError::Identity(e) => write!(f, "identity: {e}"),
            ConfigError::Audit(e) => write!(f, "audit: {e}"),
            ConfigError::Approval(e) => write!(f, "approval: {e}"),
            ConfigError::Bundle(e) => write!(f, "bundle: {e}"),
            ConfigError::Policy(e) => write!(f, "policies: {e}"),
        }
    }
}

/// A validated configuration, ready to serve requests.
#[derive(Debug)]
pub struct Config {
    /// `None` while a configured bundle has never loaded: every request is
    /// then denied.
    pub engine: Option<PolicyEngine>,
    pub mounts: MountTable,
    pub identity: IdentityConfig,
    pub audit: AuditConfig,
    pub approval: Option<ApprovalConfig>,
    pub bundle: Option<BundleConfig>,
    /// The sliding window `context.recent_reads` counts over.
    pub recent_reads_window: Duration,
    /// The inline schema, policies and entities: what a bundle leaves out.
    inline: PolicySources,
}

/// Where policy text comes from: inline configuration or a bundle.
#[derive(Debug, Clone)]
struct PolicySources {
    schema: Option<String>,
    policies: Option<String>,
    entities: Value,
    /// Path templates by mount.
    templates: BTreeMap<String, Vec<String>>,
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Config {
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        let specs = MountSpecs::from_raw(&raw.mounts).map_err(ConfigError::Mounts)?;
        let mounts =
            MountTable::from_config(&specs.types, &raw.namespaces).map_err(ConfigError::Mounts)?;
        let audit = match raw.audit {
            Some(raw_audit) => AuditConfig::from_raw(raw_audit).map_err(ConfigError::Audit)?,
            None => AuditConfig::default(),
        };
        let (source, principal_type, anonymous) = match raw.identity {
            RawIdentity::Header {
                header,
                principal_type,
                anonymous,
            } => {
                if !is_header_name(&header) {
                    return Err(ConfigError::Identity(format!(
                        "header {header:?} must be a lower-case header name"
                    )));
                }
                (IdentitySource::Header { header }, principal_type, anonymous)
            }
            RawIdentity::Jwt {
                payload_in_metadata,
                principal_claim,
                principal_type,
                anonymous,
            } => {
                if payload_in_metadata.is_empty() || principal_claim.is_empty() {
                    return Err(ConfigError::Identity(
                        "payload_in_metadata and principal_claim must not be empty".into(),
                    ));
                }
                (
                    IdentitySource::Jwt {
                        payload_in_metadata,
                        principal_claim,
                    },
                    principal_type,
                    anonymous,
                )
            }
            RawIdentity::Mtls {
                principal_type,
                anonymous,
            } => (IdentitySource::Mtls, principal_type, anonymous),
        };
        if principal_type == ANONYMOUS_TYPE {
            return Err(ConfigError::Identity(format!(
                "principal_type must not be {ANONYMOUS_TYPE:?}: that type names callers without identity (identity.anonymous)"
            )));
        }
        if let Some(approval) = &raw.approval {
            approval.validate().map_err(ConfigError::Approval)?;
        }
        if let Some(bundle) = &raw.bundle {
            bundle.validate().map_err(ConfigError::Bundle)?;
        }
        let recent_reads_window = match raw.recent_reads {
            None => DEFAULT_RECENT_READS_WINDOW,
            Some(RecentReadsConfig { window_s }) if (10..=86_400).contains(&window_s) => {
                Duration::from_secs(window_s)
            }
            Some(_) => {
                return Err(ConfigError::Json(
                    "recent_reads.window_s must be between 10 and 86400".into(),
                ))
            }
        };
        let mut config = Config {
            engine: None,
            mounts,
            identity: IdentityConfig {
                source,
                principal_type,
                anonymous,
            },
            audit,
            approval: raw.approval,
            bundle: raw.bundle,
            recent_reads_window,
            inline: PolicySources {
                schema: raw.schema,
                policies: raw.policies,
                entities: raw.entities,
                templates: specs.templates,
            },
        };
        match (
            &config.bundle,
            &config.inline.schema,
            &config.inline.policies,
        ) {
            (None, Some(schema), Some(policies)) => {
                config.engine = Some(config.build_engine(
                    schema,
                    policies,
                    &config.inline.entities,
                    &config.inline.templates,
                )?);
            }
            (None, _, _) => {
                return Err(ConfigError::Json(
                    "schema and policies are required (or a bundle that provides them)".into(),
                ))
            }
            // Checked now so a typo fails at start, but not served: with a
            // bundle configured, nothing is allowed before a bundle loads.
            (Some(_), Some(schema), Some(policies)) => {
                config.build_engine(
                    schema,
                    policies,
                    &config.inline.entities,
                    &config.inline.templates,
                )?;
            }
            (Some(_), _, _) => {}
        }
        Ok(config)
    }

    /// The configuration with a fetched bundle's schema, policies and
    /// entities in place of the inline ones it provides, fully validated.
    pub fn with_bundle(&self, bundle: Bundle) -> Result<Config, ConfigError> {
        let schema = bundle.schema.as_ref().or(self.inline.schema.as_ref());
        let policies = bundle.policies.as_ref().or(self.inline.policies.as_ref());
        let (Some(schema), Some(policies)) = (schema, policies) else {
            return Err(ConfigError::Bundle(
                "neither the bundle nor the inline configuration has a schema and policies".into(),
            ));
        };
        let entities = bundle.entities.as_ref().unwrap_or(&self.inline.entities);
        let templates = bundle.templates.as_ref().unwrap_or(&self.inline.templates);
        let engine = self.build_engine(schema, policies, entities, templates)?;
        Ok(Config {
            engine: Some(engine),
            mounts: self.mounts.clone(),
            identity: self.identity.clone(),
            audit: self.audit.clone(),
            approval: self.approval.clone(),
            bundle: self.bundle.clone(),
            recent_reads_window: self.recent_reads_window,
            inline: self.inline.clone(),
        })
    }

    /// Loads a policy set and checks it against the rest of the configuration.
    fn build_engine(
        &self,
        schema: &str,
        policies: &str,
        entities: &Value,
        templates: &BTreeMap<String, Vec<String>>,
    ) -> Result<PolicyEngine, ConfigError> {
        if !entities.is_array() {
            return Err(ConfigError::Json("entities must be a JSON array".into()));
        }
        let templates = TemplateTable::new(self.mounts.paths(), templates)
            .map_err(|e| ConfigError::Templates(e.to_string()))?;
        let engine = PolicyEngine::load(
            schema,
            policies,
            entities,
            &self.identity.principal_type,
            &templates,
        )
        .map_err(ConfigError::Policy)?;
        if let IdentitySource::Jwt {
            principal_claim, ..
        } = &self.identity.source
        {
            if !can_name_principal(engine.claims_shape().claim_type(principal_claim)) {
                return Err(ConfigError::Identity(format!(
                    "principal_claim {principal_claim:?} is declared in the schema as a type that cannot name a principal"
                )));
            }
        }
        if self.identity.anonymous && !engine.admits_anonymous() {
            return Err(ConfigError::Identity(format!(
                "anonymous is true but the schema does not declare entity type {ANONYMOUS_TYPE}, the principal of callers without identity"
            )));
        }
        if self.approval.is_none() && !engine.approvals().is_empty() {
            return Err(ConfigError::Approval(
                "policies use @approval but no approval service is configured".into(),
            ));
        }
        Ok(engine)
    }
}

//! The plugin configuration: Envoy's `configuration` string, parsed and
//! validated once. Any problem rejects the whole configuration, so Envoy
//! never serves with a half-loaded policy set.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::approval::ApprovalConfig;
use crate::audit::{AuditConfig, RawAuditConfig};
use crate::bundle::{Bundle, BundleConfig};
use crate::classify::{MountError, MountSpecs, MountTable};
use crate::identity::{can_name_principal, IdentityConfig, IdentitySource, ANONYMOUS_TYPE};
use crate::policy::{PolicyEngine, PolicyError};
use crate::templates::TemplateTable;
use crate::version::{is_plain_revision, Revisions, MAX_REVISION_LEN};

/// The configuration as operators write it (see README: Configuration).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    policies: Option<String>,
    /// Kept as its JSON text: Cedar parses the text, and a JSON tree of
    /// 10,000 entities would hold tens of MiB of a VM's memory for nothing.
    #[serde(default)]
    entities: Option<Box<RawValue>>,
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
    shadow: Option<BundleConfig>,
    #[serde(default)]
    recent_reads: Option<RecentReadsConfig>,
    #[serde(default)]
    decision_log: DecisionLog,
    /// The operator's name for this configuration (a deployment's commit,
    /// say), carried into every record; its digest when left out.
    #[serde(default)]
    revision: Option<String>,
}

/// `decision_log`: the one-line summary of each decision in Envoy's log,
/// beside the audit record (which is the record of truth). Off the hot
/// path by default: written at debug level, and only formatted when
/// Envoy's log level for the plugin admits debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionLog {
    Off,
    #[default]
    Debug,
    Info,
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

const NO_ENTITIES: &str = "[]";

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
    Shadow(String),
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
            ConfigError::Shadow(e) => write!(f, "shadow: {e}"),
            ConfigError::Policy(e) => write!(f, "policies: {e}"),
        }
    }
}

/// A validated configuration, ready to serve requests. Cloning it is
/// cheap: the policy sets are shared, so a bundle swaps one in without
/// copying the other.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` while a configured bundle has never loaded: every request is
    /// then denied.
    pub engine: Option<Arc<PolicyEngine>>,
    pub mounts: MountTable,
    pub identity: IdentityConfig,
    pub audit: AuditConfig,
    pub approval: Option<ApprovalConfig>,
    pub bundle: Option<BundleConfig>,
    /// Where the shadow policy set is fetched from, when one is configured.
    pub shadow: Option<BundleConfig>,
    /// The candidate policy set evaluated beside the live one (see
    /// [`ShadowPolicies`]); it never changes an outcome.
    pub shadow_policies: ShadowPolicies,
    /// The sliding window `context.recent_reads` counts over.
    pub recent_reads_window: Duration,
    pub decision_log: DecisionLog,
    /// The configuration's and the live bundle's revisions, for records.
    pub revisions: Revisions,
    /// The inline schema, policies and entities: what a bundle leaves out.
    inline: PolicySources,
}

/// The shadow policy set: evaluated on every request next to the live one,
/// recorded in the audit record, never deciding anything.
#[derive(Debug, Clone)]
pub enum ShadowPolicies {
    /// No `shadow` is configured.
    Off,
    /// Configured, but no shadow bundle has loaded: why.
    Absent(String),
    Loaded(Arc<PolicyEngine>),
}

/// Where policy text comes from: inline configuration or a bundle.
#[derive(Debug, Clone)]
struct PolicySources {
    schema: Option<String>,
    policies: Option<String>,
    /// Cedar's entities JSON, as text.
    entities: String,
    /// Path templates by mount.
    templates: BTreeMap<String, Vec<String>>,
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The revisions a filter given the configuration `bytes` names in its
/// records, before any bundle loads, without validating the rest of it
/// (`secretgate --version --config`).
pub fn config_revisions(bytes: &[u8]) -> Result<Revisions, ConfigError> {
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        revision: Option<String>,
    }
    let named: Named =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
    Ok(Revisions::of_config(named.revision.as_deref(), bytes))
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
        if let Some(shadow) = &raw.shadow {
            shadow.validate().map_err(ConfigError::Shadow)?;
        }
        let shadow_policies = match raw.shadow {
            Some(_) => ShadowPolicies::Absent("no shadow bundle has loaded yet".into()),
            None => ShadowPolicies::Off,
        };
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
        if let Some(revision) = raw.revision.as_deref() {
            if !is_plain_revision(revision) {
                return Err(ConfigError::Json(format!(
                    "revision must be 1 to {MAX_REVISION_LEN} printable ASCII characters without spaces, quotes or backslashes"
                )));
            }
        }
        let mut config = Config {
            engine: None,
            revisions: Revisions::of_config(raw.revision.as_deref(), bytes),
            mounts,
            identity: IdentityConfig {
                source,
                principal_type,
                anonymous,
            },
            audit,
            approval: raw.approval,
            bundle: raw.bundle,
            shadow: raw.shadow,
            shadow_policies,
            recent_reads_window,
            decision_log: raw.decision_log,
            inline: PolicySources {
                schema: raw.schema,
                policies: raw.policies,
                entities: raw
                    .entities
                    .map_or_else(|| NO_ENTITIES.to_owned(), |text| text.get().to_owned()),
                templates: specs.templates,
            },
        };
        match (
            &config.bundle,
            &config.inline.schema,
            &config.inline.policies,
        ) {
            (None, Some(schema), Some(policies)) => {
                config.engine = Some(Arc::new(config.build_engine(
                    schema,
                    policies,
                    &config.inline.entities,
                    &config.inline.templates,
                )?));
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

    /// The configuration the operator tools (`secretgate replay`,
    /// `explain`) decide with: the filter configuration `config_json` with
    /// the policy set `candidate` in place of whatever it names inline or
    /// fetches, validated exactly as the filter validates it. The tools
    /// never fetch, so `bundle` and `shadow` are dropped; a configuration
    /// without `identity` (a pack's `config.json` may hold only its mounts)
    /// gets the header source's defaults, since the tools take the
    /// principal from a record or the command line.
    pub fn for_tools(config_json: &[u8], candidate: Bundle) -> Result<Config, ConfigError> {
        let mut raw: Value =
            serde_json::from_slice(config_json).map_err(|e| ConfigError::Json(e.to_string()))?;
        let Some(fields) = raw.as_object_mut() else {
            return Err(ConfigError::Json(
                "the configuration must be a JSON object".into(),
            ));
        };
        fields.remove("bundle");
        fields.remove("shadow");
        fields
            .entry("identity")
            .or_insert_with(|| serde_json::json!({"source": "header"}));
        let sources = [
            ("schema", candidate.schema.map(Value::String)),
            ("policies", candidate.policies.map(Value::String)),
            ("entities", candidate.entities),
        ];
        for (key, value) in sources {
            if let Some(value) = value {
                fields.insert(key.to_owned(), value);
            }
        }
        if let Some(templates) = candidate.templates {
            let mounts = fields
                .entry("mounts")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            // A policy set's templates replace every inline one, as a
            // bundle's do.
            for spec in mounts
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                if let Some(spec) = spec.as_object_mut() {
                    spec.remove("templates");
                }
            }
            for (mount, list) in templates {
                let Some(spec) = mounts.get_mut(&mount) else {
                    return Err(ConfigError::Templates(format!(
                        "the policy set has templates for {mount:?}, which is not a configured mount"
                    )));
                };
                if let Value::String(kind) = spec {
                    *spec = serde_json::json!({"type": kind.clone()});
                }
                if let Some(spec) = spec.as_object_mut() {
                    spec.insert("templates".into(), serde_json::json!(list));
                }
            }
        }
        let bytes = serde_json::to_vec(&raw).map_err(|e| ConfigError::Json(e.to_string()))?;
        Config::from_json(&bytes)
    }

    /// The configuration with a fetched bundle's schema, policies and
    /// entities in place of the inline ones it provides, fully validated.
    pub fn with_bundle(&self, bundle: Bundle) -> Result<Config, ConfigError> {
        let revisions = self
            .revisions
            .with_bundle(bundle.revision.as_deref(), &bundle.digest);
        let engine = self.engine_of(bundle)?;
        Ok(Config {
            engine: Some(Arc::new(engine)),
            revisions,
            ..self.clone()
        })
    }

    /// The configuration with a fetched shadow bundle as its shadow policy
    /// set, validated as a live bundle would be.
    pub fn with_shadow(&self, bundle: Bundle) -> Result<Config, ConfigError> {
        let engine = self.engine_of(bundle)?;
        Ok(Config {
            shadow_policies: ShadowPolicies::Loaded(Arc::new(engine)),
            ..self.clone()
        })
    }

    /// The configuration after a shadow bundle failed to load: a loaded
    /// shadow stays, as a live bundle does; otherwise the records say why
    /// there is none. `None` when nothing changes.
    pub fn with_shadow_failure(&self, reason: &str) -> Option<Config> {
        match &self.shadow_policies {
            ShadowPolicies::Absent(_) => Some(Config {
                shadow_policies: ShadowPolicies::Absent(reason.to_owned()),
                ..self.clone()
            }),
            ShadowPolicies::Off | ShadowPolicies::Loaded(_) => None,
        }
    }

    /// The policy set a bundle makes, with the inline values for the keys
    /// it leaves out.
    fn engine_of(&self, bundle: Bundle) -> Result<PolicyEngine, ConfigError> {
        let schema = bundle.schema.as_ref().or(self.inline.schema.as_ref());
        let policies = bundle.policies.as_ref().or(self.inline.policies.as_ref());
        let (Some(schema), Some(policies)) = (schema, policies) else {
            return Err(ConfigError::Bundle(
                "neither the bundle nor the inline configuration has a schema and policies".into(),
            ));
        };
        let bundled = bundle.entities.as_ref().map(Value::to_string);
        let entities = bundled.as_deref().unwrap_or(&self.inline.entities);
        let templates = bundle.templates.as_ref().unwrap_or(&self.inline.templates);
        self.build_engine(schema, policies, entities, templates)
    }

    /// Loads a policy set and checks it against the rest of the configuration.
    fn build_engine(
        &self,
        schema: &str,
        policies: &str,
        entities: &str,
        templates: &BTreeMap<String, Vec<String>>,
    ) -> Result<PolicyEngine, ConfigError> {
        // Valid JSON (checked when it was read) that opens with `[`.
        if !entities.trim_start().starts_with('[') {
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

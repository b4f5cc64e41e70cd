//! `secretgate check-mounts`, the pure part: the filter configuration's
//! mount table and namespaces against the store's real ones, as read from
//! OpenBao's `sys/mounts`, `sys/auth` and `sys/namespaces` answers.
//!
//! The filter trusts its `mounts` table: a KV v2 mount configured as
//! `kv-v1` classifies `secret/data/prod/db` as `Secret::"secret/data/prod/db"`,
//! which a forbid on `Path::"secret/prod"` misses. This module finds every
//! such difference; the binary fetches the answers and prints them.
//!
//! What is compared, per namespace (the root one, and each declared one the
//! store has):
//! - every secrets-engine mount must be configured with the type its engine
//!   maps to (`kv` version 1 or 2, `database`, `aws`, `pki`, `transit`,
//!   `ssh`; any other engine is `other`). The built-ins `sys/`, `cubbyhole/`
//!   and `identity/` need not be listed; `sys/` may be listed as `sys`, the
//!   other two not at all;
//! - an auth method mounted at `auth/<name>/` with a one-segment name need
//!   not be listed (the filter knows `auth/<name>/` without it); one with a
//!   longer name (`auth/team/jwt/`) must be, as `auth`, or its logins are
//!   not classified as logins. A listed `auth/...` mount must exist and be
//!   `auth`;
//! - every configured mount must exist in the store.
//!
//! Namespaces: every namespace the store has must be declared, and every
//! declared one must exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::classify::{MountSpecs, MountTable, MountType};

/// The part of the filter configuration the check reads; every other key
/// is the filter's business and is ignored here.
#[derive(Debug, Deserialize)]
struct RawMountConfig {
    #[serde(default)]
    mounts: BTreeMap<String, Value>,
    #[serde(default)]
    namespaces: Vec<String>,
}

/// The configuration's mount table and namespaces, validated as the filter
/// validates them.
#[derive(Debug, Clone)]
pub struct ConfiguredMounts {
    /// Namespace, mount path inside it, and type.
    mounts: Vec<(String, String, MountType)>,
    /// Every declared namespace, parents included: `team/a` declares `team`.
    namespaces: BTreeSet<String>,
}

impl ConfiguredMounts {
    /// Reads `mounts` and `namespaces` from the filter's configuration JSON.
    pub fn from_json(bytes: &[u8]) -> Result<ConfiguredMounts, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("configuration: {e}"))?;
        if !value.is_object() {
            return Err("configuration: expected a JSON object".into());
        }
        let raw: RawMountConfig =
            serde_json::from_value(value).map_err(|e| format!("configuration: {e}"))?;
        // The object form's templates are the filter's business too.
        let specs = MountSpecs::from_raw(&raw.mounts).map_err(|e| format!("mounts: {e}"))?;
        let table = MountTable::from_config(&specs.types, &raw.namespaces)
            .map_err(|e| format!("mounts: {e}"))?;
        Ok(ConfiguredMounts {
            mounts: table.mounts().collect(),
            namespaces: table.namespaces().collect(),
        })
    }

    /// The declared namespaces, parents included.
    pub fn namespaces(&self) -> &BTreeSet<String> {
        &self.namespaces
    }

    /// Whose mounts must be read: the root namespace (`""`) and every
    /// declared namespace the store has.
    pub fn namespaces_to_read(&self, in_store: &BTreeSet<String>) -> Vec<String> {
        std::iter::once(String::new())
            .chain(self.namespaces.intersection(in_store).cloned())
            .collect()
    }
}

/// One of the store's answers: the HTTP status and the body.
#[derive(Debug, Clone)]
pub struct StoreAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The store's answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is mounted at a path in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// A secrets engine: its `type`, and `options.version` when set.
    Secrets {
        engine_type: String,
        version: Option<String>,
    },
    /// An auth method: its `type`.
    Auth { method: String },
}

impl Engine {
    /// The Secretgate type this mount must be configured as; `None` when it
    /// must not be configured at all.
    pub fn expected_type(&self) -> Option<MountType> {
        let Engine::Secrets {
            engine_type,
            version,
        } = self
        else {
            return Some(MountType::Auth);
        };
        Some(match engine_type.as_str() {
            // `generic` is KV v1's old name; OpenBao still lists it so.
            "kv" | "generic" => match version.as_deref() {
                None | Some("" | "1") => MountType::KvV1,
                Some("2") => MountType::KvV2,
                Some(_) => MountType::Other,
            },
            "database" => MountType::Database,
            "aws" => MountType::Aws,
            "pki" => MountType::Pki,
            "transit" => MountType::Transit,
            "ssh" => MountType::Ssh,
            // Namespaces other than root list their built-ins as `ns_*`.
            "system" | "ns_system" => MountType::Sys,
            // The filter's own handling of `cubbyhole/` (the legacy unwrap
            // route `cubbyhole/response`) and of `identity/` (OIDC tokens
            // issued under a role) is no configurable type: a configured
            // entry would replace it.
            "cubbyhole" | "ns_cubbyhole" | "identity" | "ns_identity" => return None,
            _ => MountType::Other,
        })
    }

    /// Known to the filter without being configured.
    fn is_built_in(&self, path: &str) -> bool {
        match self {
            Engine::Secrets { engine_type, .. } => matches!(
                engine_type.as_str(),
                "system" | "ns_system" | "cubbyhole" | "ns_cubbyhole" | "identity" | "ns_identity"
            ),
            // `auth/<name>/`, one segment: the filter resolves it as an auth mount.
            Engine::Auth { .. } => path.matches('/').count() == 1,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Secrets {
                engine_type,
                version: Some(version),
            } if !version.is_empty() => write!(f, "engine {engine_type} version {version}"),
            Engine::Secrets { engine_type, .. } => write!(f, "engine {engine_type}"),
            Engine::Auth { method } => write!(f, "auth method {method}"),
        }
    }
}

/// A mount as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreMount {
    /// Relative to its namespace, without the trailing `/`; auth methods
    /// as `auth/<path>`, the way requests name them.
    pub path: String,
    pub engine: Engine,
}

/// The store's mount tables, as far as they were read.
#[derive(Debug, Clone, Default)]
pub struct StoreMounts {
    /// Every namespace the store has, root excluded (`team`, `team/a`).
    pub namespaces: BTreeSet<String>,
    /// Mounts by namespace (`""` for root), for the namespaces read.
    pub mounts: BTreeMap<String, Vec<StoreMount>>,
}

/// The `data` object of a successful answer, or the store's own errors.
fn answer_data(answer: &StoreAnswer, what: &str) -> Result<Option<Value>, StoreError> {
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let errors = || {
        json.as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    };
    match answer.status {
        200 => {}
        // An empty LIST is a 404 with no errors.
        404 if errors().is_empty() => return Ok(None),
        status => {
            return Err(StoreError(format!(
                "{what}: the store answered {status}{}",
                match errors() {
                    e if e.is_empty() => String::new(),
                    e => format!(": {e}"),
                }
            )))
        }
    }
    let data = json
        .and_then(|mut v| v.get_mut("data").map(Value::take))
        .ok_or_else(|| StoreError(format!("{what}: the answer has no data object")))?;
    Ok(Some(data))
}

/// `GET sys/namespaces?list=true` in namespace `parent`: the children's
/// full paths.
pub fn parse_namespace_list(answer: &StoreAnswer, parent: &str) -> Result<Vec<String>, StoreError> {
    let what = format!("listing the namespaces in {}", namespace_name(parent));
    let Some(data) = answer_data(answer, &what)? else {
        return Ok(Vec::new());
    };
    let keys = data
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| StoreError(format!("{what}: no keys in the answer")))?;
    keys.iter()
        .map(|key| {
            let key = key.as_str().unwrap_or_default().trim_end_matches('/');
            if key.is_empty() || key.contains('/') {
                return Err(StoreError(format!("{what}: unexpected key {key:?}")));
            }
            Ok(if parent.is_empty() {
                key.to_owned()
            } else {
                format!("{parent}/{key}")
            })
        })
        .collect()
}

/// `GET sys/mounts` (secrets engines) or, with `auth`, `GET sys/auth`.
pub fn parse_mounts(
    answer: &StoreAnswer,
    namespace: &str,
    auth: bool,
) -> Result<Vec<StoreMount>, StoreError> {
    let what = format!(
        "reading {} in {}",
        if auth { "sys/auth" } else { "sys/mounts" },
        namespace_name(namespace)
    );
    let data = answer_data(answer, &what)?.unwrap_or_default();
    let Value::Object(entries) = data else {
        return Err(StoreError(format!("{what}: data is not an object")));
    };
    let mut mounts = Vec::with_capacity(entries.len());
    for (path, entry) in entries {
        let engine_type = entry
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError(format!("{what}: mount {path:?} has no type")))?
            .to_owned();
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err(StoreError(format!("{what}: a mount with an empty path")));
        }
        mounts.push(if auth {
            StoreMount {
                path: format!("auth/{path}"),
                engine: Engine::Auth {
                    method: engine_type,
                },
            }
        } else {
            let version = entry
                .get("options")
                .and_then(|o| o.get("version"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            StoreMount {
                path: path.to_owned(),
                engine: Engine::Secrets {
                    engine_type,
                    version,
                },
            }
        });
    }
    mounts.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(mounts)
}

fn namespace_name(namespace: &str) -> String {
    if namespace.is_empty() {
        "the root namespace".to_owned()
    } else {
        format!("namespace {namespace:?}")
    }
}

/// One way the configuration and the store disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The store has the namespace; the configuration does not declare it,
    /// so the filter refuses its requests.
    UndeclaredNamespace { namespace: String },
    /// Declared, but the store has no such namespace.
    MissingNamespace { namespace: String },
    /// The store has the mount; the configuration does not list it.
    Unconfigured {
        path: String,
        engine: Engine,
        expected: MountType,
    },
    /// Configured, but the store has no mount there.
    NotInStore { path: String, configured: MountType },
    /// Both have it, with different types; `expected: None` when the
    /// store's mount must not be configured at all.
    TypeMismatch {
        path: String,
        configured: MountType,
        engine: Engine,
        expected: Option<MountType>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::UndeclaredNamespace { namespace } => write!(
                f,
                "namespace {namespace:?}: in the store but not declared in \"namespaces\" (the filter refuses its requests)"
            ),
            Difference::MissingNamespace { namespace } => write!(
                f,
                "namespace {namespace:?}: declared in \"namespaces\" but not in the store"
            ),
            Difference::Unconfigured {
                path,
                engine,
                expected,
            } => {
                write!(
                    f,
                    "mount {path:?}: the store has {engine} there but the configuration does not list it; add {path:?}: {:?}",
                    expected.name()
                )?;
                if matches!(engine, Engine::Auth { .. }) {
                    f.write_str(" (only a one-segment auth/<name> is known without listing)")?;
                }
                Ok(())
            }
            Difference::NotInStore { path, configured } => write!(
                f,
                "mount {path:?}: configured as {:?} but the store has no mount there",
                configured.name()
            ),
            Difference::TypeMismatch {
                path,
                configured,
                engine,
                expected,
            } => {
                write!(
                    f,
                    "mount {path:?}: configured as {:?} but the store has {engine} there; ",
                    configured.name()
                )?;
                match expected {
                    Some(expected) => write!(f, "configure it as {:?}", expected.name()),
                    None => f.write_str("remove it (the filter knows this built-in itself)"),
                }
            }
        }
    }
}

/// Every difference between the configuration and the store, namespaces
/// first, then mounts by path.
pub fn compare(config: &ConfiguredMounts, store: &StoreMounts) -> Vec<Difference> {
    let mut differences = Vec::new();
    for namespace in store.namespaces.difference(&config.namespaces) {
        differences.push(Difference::UndeclaredNamespace {
            namespace: namespace.clone(),
        });
    }
    for namespace in config.namespaces.difference(&store.namespaces) {
        differences.push(Difference::MissingNamespace {
            namespace: namespace.clone(),
        });
    }

    // Configured mounts by namespace, then by path inside it.
    let mut configured: BTreeMap<&str, BTreeMap<&str, MountType>> = BTreeMap::new();
    for (namespace, local, mount_type) in &config.mounts {
        configured
            .entry(namespace)
            .or_default()
            .insert(local, *mount_type);
    }

    let mut mount_differences = Vec::new();
    for (namespace, mounts) in &store.mounts {
        let full = |local: &str| {
            if namespace.is_empty() {
                local.to_owned()
            } else {
                format!("{namespace}/{local}")
            }
        };
        let wanted = configured.remove(namespace.as_str()).unwrap_or_default();
        let mut seen = BTreeSet::new();
        for mount in mounts {
            let expected = mount.engine.expected_type();
            match wanted.get(mount.path.as_str()) {
                Some(&configured) => {
                    seen.insert(mount.path.as_str());
                    if expected != Some(configured) {
                        mount_differences.push(Difference::TypeMismatch {
                            path: full(&mount.path),
                            configured,
                            engine: mount.engine.clone(),
                            expected,
                        });
                    }
                }
                None if mount.engine.is_built_in(&mount.path) => {}
                None => mount_differences.push(Difference::Unconfigured {
                    path: full(&mount.path),
                    engine: mount.engine.clone(),
                    expected: expected.unwrap_or(MountType::Other),
                }),
            }
        }
        for (local, &configured) in &wanted {
            if !seen.contains(local) {
                mount_differences.push(Difference::NotInStore {
                    path: full(local),
                    configured,
                });
            }
        }
    }
    // What is left lies in namespaces that were not read: declared ones the
    // store lacks, already reported above as one line each.
    mount_differences.sort_by(|a, b| a.path().cmp(b.path()));
    differences.extend(mount_differences);
    differences
}

impl Difference {
    fn path(&self) -> &str {
        match self {
            Difference::UndeclaredNamespace { namespace }
            | Difference::MissingNamespace { namespace } => namespace,
            Difference::Unconfigured { path, .. }
            | Difference::NotInStore { path, .. }
            | Difference::TypeMismatch { path, .. } => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> ConfiguredMounts {
        ConfiguredMounts::from_json(value.to_string().as_bytes()).unwrap()
    }

    fn ok(body: Value) -> StoreAnswer {
        StoreAnswer {
            status: 200,
            body: body.to_string().into_bytes(),
        }
    }

    fn secrets(path: &str, engine_type: &str, version: Option<&str>) -> StoreMount {
        StoreMount {
            path: path.into(),
            engine: Engine::Secrets {
                engine_type: engine_type.into(),
                version: version.map(Into::into),
            },
        }
    }

    fn auth(path: &str, method: &str) -> StoreMount {
        StoreMount {
            path: format!("auth/{path}"),
            engine: Engine::Auth {
                method: method.into(),
            },
        }
    }

    /// A dev server's root namespace: its built-ins, `secret/` (KV v2) and
    /// the token auth method.
    fn dev_root() -> Vec<StoreMount> {
        vec![
            secrets("cubbyhole", "cubbyhole", None),
            secrets("identity", "identity", None),
            secrets("sys", "system", None),
            secrets("secret", "kv", Some("2")),
            auth("token", "token"),
        ]
    }

    fn store(namespaces: &[&str], mounts: Vec<(&str, Vec<StoreMount>)>) -> StoreMounts {
        StoreMounts {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            mounts: mounts
                .into_iter()
                .map(|(n, m)| (n.to_string(), m))
                .collect(),
        }
    }

    fn lines(differences: &[Difference]) -> Vec<String> {
        differences.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_matching_table_has_no_difference() {
        let config = config(json!({
            "mounts": {"secret": "kv-v2", "kv": "kv-v1", "totp": "other", "ssh": "ssh",
                       "team/db": "database", "sys": "sys", "auth/userpass": "auth"},
            "identity": {"source": "header"},
        }));
        let mut root = dev_root();
        root.extend([
            secrets("kv", "kv", Some("1")),
            secrets("totp", "totp", None),
            secrets("ssh", "ssh", None),
            secrets("team/db", "database", None),
            auth("userpass", "userpass"),
            // One segment: known as auth/<name>/ without being listed.
            auth("approle", "approle"),
        ]);
        assert_eq!(compare(&config, &store(&[], vec![("", root)])), []);
    }

    #[test]
    fn kv_v2_configured_as_kv_v1_is_a_type_mismatch() {
        let config = config(json!({"mounts": {"secret": "kv-v1"}}));
        let differences = compare(&config, &store(&[], vec![("", dev_root())]));
        assert_eq!(
            differences,
            [Difference::TypeMismatch {
                path: "secret".into(),
                configured: MountType::KvV1,
                engine: Engine::Secrets {
                    engine_type: "kv".into(),
                    version: Some("2".into())
                },
                expected: Some(MountType::KvV2),
            }]
        );
        assert_eq!(
            lines(&differences),
            [
                r#"mount "secret": configured as "kv-v1" but the store has engine kv version 2 there; configure it as "kv-v2""#
            ]
        );
    }

    #[test]
    fn kv_without_a_version_is_kv_v1_and_generic_is_kv() {
        for (engine_type, version, expected) in [
            ("kv", None, MountType::KvV1),
            ("kv", Some(""), MountType::KvV1),
            ("kv", Some("1"), MountType::KvV1),
            ("kv", Some("2"), MountType::KvV2),
            ("generic", None, MountType::KvV1),
            ("kv", Some("3"), MountType::Other),
        ] {
            let engine = Engine::Secrets {
                engine_type: engine_type.into(),
                version: version.map(Into::into),
            };
            assert_eq!(engine.expected_type(), Some(expected), "{engine}");
        }
    }

    #[test]
    fn a_store_mount_missing_from_the_configuration_is_reported_with_its_type() {
        let config = config(json!({"mounts": {"secret": "kv-v2"}}));
        let mut root = dev_root();
        root.push(secrets("transit", "transit", None));
        root.push(secrets("totp", "totp", None));
        let differences = compare(&config, &store(&[], vec![("", root)]));
        assert_eq!(
            lines(&differences),
            [
                r#"mount "totp": the store has engine totp there but the configuration does not list it; add "totp": "other""#,
                r#"mount "transit": the store has engine transit there but the configuration does not list it; add "transit": "transit""#,
            ]
        );
    }

    #[test]
    fn a_configured_mount_the_store_lacks_is_reported() {
        let config = config(
            json!({"mounts": {"secret": "kv-v2", "secret/prod": "kv-v1", "auth/ldap": "auth"}}),
        );
        let differences = compare(&config, &store(&[], vec![("", dev_root())]));
        assert_eq!(
            lines(&differences),
            [
                r#"mount "auth/ldap": configured as "auth" but the store has no mount there"#,
                r#"mount "secret/prod": configured as "kv-v1" but the store has no mount there"#,
            ]
        );
    }

    #[test]
    fn built_ins_need_no_entry_but_an_entry_must_match_them() {
        let fine =
            config(json!({"mounts": {"secret": "kv-v2", "sys": "sys", "auth/token": "auth"}}));
        assert_eq!(compare(&fine, &store(&[], vec![("", dev_root())])), []);

        let wrong = config(
            json!({"mounts": {"secret": "kv-v2", "sys": "other", "cubbyhole": "kv-v1", "identity": "other", "auth/token": "kv-v2"}}),
        );
        assert_eq!(
            lines(&compare(&wrong, &store(&[], vec![("", dev_root())]))),
            [
                r#"mount "auth/token": configured as "kv-v2" but the store has auth method token there; configure it as "auth""#,
                r#"mount "cubbyhole": configured as "kv-v1" but the store has engine cubbyhole there; remove it (the filter knows this built-in itself)"#,
                r#"mount "identity": configured as "other" but the store has engine identity there; remove it (the filter knows this built-in itself)"#,
                r#"mount "sys": configured as "other" but the store has engine system there; configure it as "sys""#,
            ]
        );
    }

    #[test]
    fn an_auth_method_with_a_nested_path_must_be_listed() {
        let mut root = dev_root();
        root.push(auth("team/jwt", "jwt"));
        let missing = config(json!({"mounts": {"secret": "kv-v2"}}));
        assert_eq!(
            lines(&compare(&missing, &store(&[], vec![("", root.clone())]))),
            [
                r#"mount "auth/team/jwt": the store has auth method jwt there but the configuration does not list it; add "auth/team/jwt": "auth" (only a one-segment auth/<name> is known without listing)"#
            ]
        );
        let listed = config(json!({"mounts": {"secret": "kv-v2", "auth/team/jwt": "auth"}}));
        assert_eq!(compare(&listed, &store(&[], vec![("", root)])), []);
    }

    fn ns_built_ins() -> Vec<StoreMount> {
        vec![
            secrets("cubbyhole", "ns_cubbyhole", None),
            secrets("identity", "ns_identity", None),
            secrets("sys", "ns_system", None),
            auth("token", "ns_token"),
        ]
    }

    #[test]
    fn mounts_in_a_namespace_carry_its_prefix() {
        let config = config(json!({
            "namespaces": ["nsx", "team/a"],
            "mounts": {"secret": "kv-v2", "nsx/secret": "kv-v2", "team/a/pki": "pki",
                       "team/kv": "kv-v1", "nsx/auth/approle": "auth"},
        }));
        assert_eq!(
            config.namespaces().iter().collect::<Vec<_>>(),
            ["nsx", "team", "team/a"]
        );
        let in_store: BTreeSet<String> = ["nsx", "team", "team/a"].map(String::from).into();
        assert_eq!(
            config.namespaces_to_read(&in_store),
            ["", "nsx", "team", "team/a"]
        );
        let mut nsx = ns_built_ins();
        nsx.push(secrets("secret", "kv", Some("2")));
        nsx.push(auth("approle", "approle"));
        let mut team = ns_built_ins();
        team.push(secrets("kv", "kv", Some("1")));
        let mut team_a = ns_built_ins();
        team_a.push(secrets("pki", "pki", None));
        let matching = store(
            &["nsx", "team", "team/a"],
            vec![
                ("", dev_root()),
                ("nsx", nsx.clone()),
                ("team", team.clone()),
                ("team/a", team_a),
            ],
        );
        assert_eq!(compare(&config, &matching), []);

        // The same mounts, each in the wrong namespace or of the wrong type.
        let mut team_a = ns_built_ins();
        team_a.push(secrets("pki", "transit", None));
        team_a.push(secrets("kv", "kv", Some("2")));
        let differing = store(
            &["nsx", "team", "team/a"],
            vec![
                ("", dev_root()),
                ("nsx", nsx),
                ("team", ns_built_ins()),
                ("team/a", team_a),
            ],
        );
        assert_eq!(
            lines(&compare(&config, &differing)),
            [
                r#"mount "team/a/kv": the store has engine kv version 2 there but the configuration does not list it; add "team/a/kv": "kv-v2""#,
                r#"mount "team/a/pki": configured as "pki" but the store has engine transit there; configure it as "transit""#,
                r#"mount "team/kv": configured as "kv-v1" but the store has no mount there"#,
            ]
        );
    }

    #[test]
    fn namespaces_are_compared_both_ways() {
        let config = config(json!({
            "namespaces": ["nsx", "gone"],
            "mounts": {"secret": "kv-v2", "gone/secret": "kv-v2"},
        }));
        let in_store: BTreeSet<String> = ["nsx", "org", "org/b"].map(String::from).into();
        // `gone` is not read: its mounts are covered by its own line.
        assert_eq!(config.namespaces_to_read(&in_store), ["", "nsx"]);
        let differences = compare(
            &config,
            &store(
                &["nsx", "org", "org/b"],
                vec![("", dev_root()), ("nsx", ns_built_ins())],
            ),
        );
        assert_eq!(
            lines(&differences),
            [
                r#"namespace "org": in the store but not declared in "namespaces" (the filter refuses its requests)"#,
                r#"namespace "org/b": in the store but not declared in "namespaces" (the filter refuses its requests)"#,
                r#"namespace "gone": declared in "namespaces" but not in the store"#,
            ]
        );
    }

    #[test]
    fn a_mount_is_in_the_longest_declared_namespace_and_never_one_itself() {
        let config =
            config(json!({"namespaces": ["nsx"], "mounts": {"nsx/a/b": "kv-v2", "kv": "kv-v1"}}));
        assert_eq!(
            config.mounts,
            [
                ("nsx".to_owned(), "a/b".to_owned(), MountType::KvV2),
                (String::new(), "kv".to_owned(), MountType::KvV1),
            ]
        );
        // OpenBao resolves `nsx/` as the namespace first, as the filter does.
        let clash = ConfiguredMounts::from_json(
            json!({"namespaces": ["nsx"], "mounts": {"nsx": "kv-v2"}})
                .to_string()
                .as_bytes(),
        );
        assert!(clash.is_err_and(|e| e.contains("is a declared namespace")));
    }

    #[test]
    fn a_mount_in_object_form_is_read_by_its_type() {
        let config = config(json!({"mounts": {
            "secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]},
            "kv": "kv-v1",
        }}));
        assert_eq!(
            config.mounts,
            [
                (String::new(), "kv".to_owned(), MountType::KvV1),
                (String::new(), "secret".to_owned(), MountType::KvV2),
            ]
        );
    }

    #[test]
    fn the_configuration_is_validated_as_the_filter_validates_it() {
        let err =
            |value: Value| ConfiguredMounts::from_json(value.to_string().as_bytes()).unwrap_err();
        assert!(err(json!({"mounts": {"secret": "kv-v3"}})).starts_with("mounts: "));
        assert!(err(json!({"mounts": {"a/../b": "kv-v2"}})).starts_with("mounts: "));
        assert!(err(json!({"mounts": {"secret": {"templates": []}}})).starts_with("mounts: "));
        assert!(err(json!({"mounts": {"secret": 2}})).starts_with("mounts: "));
        assert!(err(json!({"namespaces": ["root"]})).contains("\"root\""));
        assert!(err(json!({"namespaces": ["a/../b"]})).contains("namespace \"a/../b\""));
        assert!(err(json!({"namespaces": "nsx"})).starts_with("configuration: "));
        assert!(ConfiguredMounts::from_json(b"[]").is_err());
        // Every other key is the filter's: ignored here.
        assert!(ConfiguredMounts::from_json(br#"{"schema": 1, "policies": null}"#).is_ok());
    }

    /// The shapes OpenBao 2.7 answers (a dev server, `bao namespace create`).
    #[test]
    fn store_answers_are_parsed() {
        let mounts = ok(json!({
            "request_id": "x", "secret/": {"type": "kv"},
            "data": {
                "secret/": {"type": "kv", "options": {"version": "2"}, "accessor": "kv_1"},
                "kv/": {"type": "kv", "options": {"version": "1"}},
                "plain/": {"type": "kv", "options": null},
                "sys/": {"type": "ns_system", "options": null},
                "team/db/": {"type": "database"},
            }
        }));
        let parsed = parse_mounts(&mounts, "nsx", false).unwrap();
        assert_eq!(
            parsed,
            [
                secrets("kv", "kv", Some("1")),
                secrets("plain", "kv", None),
                secrets("secret", "kv", Some("2")),
                secrets("sys", "ns_system", None),
                secrets("team/db", "database", None),
            ]
        );
        let auths =
            ok(json!({"data": {"token/": {"type": "token"}, "team/jwt/": {"type": "jwt"}}}));
        assert_eq!(
            parse_mounts(&auths, "", true).unwrap(),
            [auth("team/jwt", "jwt"), auth("token", "token")]
        );

        let list = ok(json!({"data": {"keys": ["a/", "b/"], "key_info": {}}}));
        assert_eq!(
            parse_namespace_list(&list, "org").unwrap(),
            ["org/a", "org/b"]
        );
        assert_eq!(parse_namespace_list(&list, "").unwrap(), ["a", "b"]);
        let empty = StoreAnswer {
            status: 404,
            body: br#"{"errors":[]}"#.to_vec(),
        };
        assert_eq!(
            parse_namespace_list(&empty, "org/a").unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn store_errors_are_reported_with_the_stores_words() {
        let denied = StoreAnswer {
            status: 403,
            body: br#"{"errors":["permission denied"]}"#.to_vec(),
        };
        assert_eq!(
            parse_mounts(&denied, "", false).unwrap_err().0,
            "reading sys/mounts in the root namespace: the store answered 403: permission denied"
        );
        let gone = StoreAnswer {
            status: 404,
            body: br#"{"errors":["namespace not found"]}"#.to_vec(),
        };
        assert_eq!(
            parse_mounts(&gone, "nsx", true).unwrap_err().0,
            "reading sys/auth in namespace \"nsx\": the store answered 404: namespace not found"
        );
        let html = StoreAnswer {
            status: 502,
            body: b"<html>bad gateway</html>".to_vec(),
        };
        assert_eq!(
            parse_namespace_list(&html, "").unwrap_err().0,
            "listing the namespaces in the root namespace: the store answered 502"
        );
        assert!(parse_mounts(&ok(json!({"data": []})), "", false).is_err());
        assert!(parse_mounts(&ok(json!({"data": {"x/": {}}})), "", false).is_err());
        assert!(parse_namespace_list(&ok(json!({"data": {"keys": ["a/b/"]}})), "").is_err());
    }
}

//! Turns a Vault/OpenBao HTTP request into the Cedar action and resource it
//! touches. Mount types come from configuration; every route that can hand
//! out a secret maps to the logical secret it hands out, so that two API
//! paths for the same secret (KV v2 `data/` and `metadata/`, AWS `creds/` and
//! `sts/`) are one resource and one policy governs both.

use std::collections::BTreeMap;
use std::fmt;

use crate::path::{clean_path_segments, encode_segments, namespace_segments, ApiPath, PathError};

/// The Cedar actions of the Secretgate vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    List,
    Write,
    Delete,
    Issue,
    Decrypt,
    Unwrap,
    Login,
    Sys,
    Other,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Read,
        Action::List,
        Action::Write,
        Action::Delete,
        Action::Issue,
        Action::Decrypt,
        Action::Unwrap,
        Action::Login,
        Action::Sys,
        Action::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::List => "list",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Issue => "issue",
            Action::Decrypt => "decrypt",
            Action::Unwrap => "unwrap",
            Action::Login => "login",
            Action::Sys => "sys",
            Action::Other => "other",
        }
    }
}

/// The Cedar entity types a request can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// A logical secret: a KV entry, a dynamic credential role, a key.
    Secret,
    /// A folder; LIST targets the folder itself.
    Path,
    /// An API endpoint that is not a secret (`sys/`, logins, configuration).
    Endpoint,
}

impl ResourceKind {
    pub fn type_name(self) -> &'static str {
        match self {
            ResourceKind::Secret => "Secret",
            ResourceKind::Path => "Path",
            ResourceKind::Endpoint => "Endpoint",
        }
    }
}

/// The resource a request touches: `Kind::"id"`, where `id` is a slash
/// path whose every proper prefix is a `Path` ancestor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    pub kind: ResourceKind,
    pub id: String,
}

impl ResourceRef {
    /// `Path` ancestors, nearest first: `a/b/c` → `a/b`, `a`.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        let id = self.id.as_str();
        id.char_indices()
            .rev()
            .filter(|&(_, c)| c == '/')
            .map(move |(i, _)| &id[..i])
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{:?}", self.kind.type_name(), self.id)
    }
}

/// Secrets engines (and the two built-in backends) the classifier knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    KvV1,
    KvV2,
    Database,
    Aws,
    Pki,
    Transit,
    Auth,
    Sys,
    Ssh,
    /// An engine Secretgate does not understand: every request under it is
    /// action `other` on `Endpoint::"<full path>"`.
    Other,
    /// Built in, never configured: each token's private storage, and the
    /// legacy unwrap route `cubbyhole/response`.
    Cubbyhole,
}

impl MountType {
    pub fn parse(name: &str) -> Option<MountType> {
        Some(match name {
            "kv-v1" => MountType::KvV1,
            "kv-v2" => MountType::KvV2,
            "database" => MountType::Database,
            "aws" => MountType::Aws,
            "pki" => MountType::Pki,
            "transit" => MountType::Transit,
            "auth" => MountType::Auth,
            "sys" => MountType::Sys,
            "ssh" => MountType::Ssh,
            "other" => MountType::Other,
            _ => return None,
        })
    }

    pub const NAMES: &'static str =
        "kv-v1, kv-v2, database, aws, pki, transit, auth, sys, ssh, other";

    /// The configuration name (`cubbyhole` is built in and has no config name).
    pub fn name(self) -> &'static str {
        match self {
            MountType::KvV1 => "kv-v1",
            MountType::KvV2 => "kv-v2",
            MountType::Database => "database",
            MountType::Aws => "aws",
            MountType::Pki => "pki",
            MountType::Transit => "transit",
            MountType::Auth => "auth",
            MountType::Sys => "sys",
            MountType::Ssh => "ssh",
            MountType::Other => "other",
            MountType::Cubbyhole => "cubbyhole",
        }
    }
}

/// The HTTP verb as OpenBao maps it to a logical operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Read,
    List,
    Update,
    Delete,
    Options,
}

/// Why a request cannot be classified; each is a deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifyError {
    Path(PathError),
    MethodNotAllowed,
}

impl ClassifyError {
    pub fn status(self) -> u32 {
        match self {
            ClassifyError::Path(_) => 400,
            ClassifyError::MethodNotAllowed => 405,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ClassifyError::Path(e) => e.reason(),
            ClassifyError::MethodNotAllowed => "method not allowed",
        }
    }
}

impl From<PathError> for ClassifyError {
    fn from(e: PathError) -> Self {
        ClassifyError::Path(e)
    }
}

/// The facts of an HTTP request the classifier reads.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The raw `:path` pseudo-header, query included.
    pub target: &'a str,
    /// The `X-Vault-Namespace` value, if sent.
    pub namespace: Option<&'a [u8]>,
}

/// A classified request, plus the canonical form to forward so that OpenBao
/// receives exactly the path that was authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub action: Action,
    pub resource: ResourceRef,
    /// Canonical `:path` (query unchanged).
    pub canonical_target: String,
    /// Canonical namespace ("" for the root namespace).
    pub namespace: String,
    /// The mount's type, when the path is under a known mount.
    pub mount_type: Option<MountType>,
}

/// Mount paths (as segment lists) and their types, longest first.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    mounts: Vec<(Vec<String>, MountType)>,
}

/// A configuration error in the `mounts` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError(pub String);

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Mounted<'a> {
    mount_type: Option<MountType>,
    /// How many leading segments come from the namespace header.
    namespace_len: usize,
    /// How many of the full segments (namespace + path) the mount spans.
    mount_len: usize,
    segments: &'a [String],
}

impl MountTable {
    pub fn from_config(config: &BTreeMap<String, String>) -> Result<MountTable, MountError> {
        let mut mounts = Vec::with_capacity(config.len());
        for (path, type_name) in config {
            let mount_type = MountType::parse(type_name).ok_or_else(|| {
                MountError(format!(
                    "mount {path:?}: unknown type {type_name:?} (expected one of {})",
                    MountType::NAMES
                ))
            })?;
            let segments = clean_path_segments(path)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| MountError(format!("mount {path:?}: not a clean mount path")))?;
            if mounts.iter().any(|(existing, _)| existing == &segments) {
                return Err(MountError(format!("mount {path:?} is listed twice")));
            }
            mounts.push((segments, mount_type));
        }
        mounts.sort_by_key(|(segments, _)| std::cmp::Reverse(segments.len()));
        Ok(MountTable { mounts })
    }

    /// The configured mounts as clean `a/b` paths, longest first.
    pub fn entries(&self) -> impl Iterator<Item = (String, MountType)> + '_ {
        self.mounts
            .iter()
            .map(|(segments, mount_type)| (join(segments), *mount_type))
    }

    /// Longest configured mount prefix; otherwise OpenBao's built-in `sys/`
    /// and `auth/<name>/` right under the namespace.
    fn resolve<'a>(&self, full: &'a [String], namespace_len: usize) -> Mounted<'a> {
        for (mount, mount_type) in &self.mounts {
            if full.len() >= mount.len() && full[..mount.len()] == mount[..] {
                return Mounted {
                    mount_type: Some(*mount_type),
                    namespace_len,
                    mount_len: mount.len(),
                    segments: full,
                };
            }
        }
        let local = &full[namespace_len..];
        let builtin = match local.first().map(String::as_str) {
            Some("sys") => Some((MountType::Sys, 1)),
            Some("cubbyhole") => Some((MountType::Cubbyhole, 1)),
            Some("auth") if local.len() >= 2 => Some((MountType::Auth, 2)),
            _ => None,
        };
        match builtin {
            Some((mount_type, len)) => Mounted {
                mount_type: Some(mount_type),
                namespace_len,
                mount_len: namespace_len + len,
                segments: full,
            },
            None => Mounted {
                mount_type: None,
                namespace_len,
                mount_len: namespace_len,
                segments: full,
            },
        }
    }

    pub fn classify(&self, request: &HttpRequest<'_>) -> Result<Classification, ClassifyError> {
        let path = ApiPath::parse(request.target)?;
        let namespace = match request.namespace {
            Some(value) => namespace_segments(value)?,
            None => Vec::new(),
        };
        let operation = operation(request.method, path.list_flag)?;

        let mut full = namespace.clone();
        full.extend(path.segments.iter().cloned());
        let mounted = self.resolve(&full, namespace.len());

        // A `..` may move within the mount but never pop a mount segment.
        let mount_segments_in_path = mounted.mount_len.saturating_sub(namespace.len());
        if let Some(depth) = path.lowest_pop_depth {
            if depth < mount_segments_in_path.max(1) {
                return Err(PathError::EscapesMount.into());
            }
        }

        let (action, resource) = route(&mounted, operation);
        let mut canonical_target = encode_segments(&path.segments, path.trailing_slash);
        if let Some(query) = &path.raw_query {
            canonical_target.push('?');
            canonical_target.push_str(query);
        }
        Ok(Classification {
            action,
            resource,
            canonical_target,
            namespace: namespace.join("/"),
            mount_type: mounted.mount_type,
        })
    }
}

fn operation(method: &str, list_flag: bool) -> Result<Operation, ClassifyError> {
    Ok(match method {
        "GET" if list_flag => Operation::List,
        // HEAD runs the read handler; treat it as a read.
        "GET" | "HEAD" => Operation::Read,
        "LIST" => Operation::List,
        "POST" | "PUT" | "PATCH" => Operation::Update,
        "DELETE" => Operation::Delete,
        "OPTIONS" => Operation::Options,
        _ => return Err(ClassifyError::MethodNotAllowed),
    })
}

fn join(parts: &[String]) -> String {
    parts.join("/")
}

fn secret(id: String) -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Secret,
        id,
    }
}

fn folder(id: String) -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Path,
        id,
    }
}

fn endpoint(full: &[String]) -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Endpoint,
        id: join(full),
    }
}

fn route(mounted: &Mounted<'_>, op: Operation) -> (Action, ResourceRef) {
    let full = mounted.segments;
    let mount = join(&full[..mounted.mount_len]);
    let rest = &full[mounted.mount_len..];
    let other = (Action::Other, endpoint(full));
    let Some(mount_type) = mounted.mount_type else {
        return other;
    };
    let within = |parts: &[String]| -> String {
        if parts.is_empty() {
            mount.clone()
        } else {
            format!("{mount}/{}", join(parts))
        }
    };
    let list_here = || (Action::List, folder(within(rest)));
    let rest_str: Vec<&str> = rest.iter().map(String::as_str).collect();

    match mount_type {
        // No SSH routes are mapped yet: every request is `other`.
        MountType::Ssh | MountType::Other => other,
        MountType::Sys => match rest_str.as_slice() {
            ["wrapping", "unwrap"] => (Action::Unwrap, endpoint(full)),
            _ => (Action::Sys, endpoint(full)),
        },
        // Reading `cubbyhole/response` with a wrapping token unwraps it: the
        // same secret leaving by another route, so the same resource.
        MountType::Cubbyhole => match rest_str.as_slice() {
            ["response"] => {
                let mut unwrap = full[..mounted.namespace_len].to_vec();
                unwrap.extend(["sys", "wrapping", "unwrap"].map(String::from));
                (Action::Unwrap, endpoint(&unwrap))
            }
            _ => other,
        },
        MountType::Auth => match rest_str.first() {
            Some(&"login") => (Action::Login, endpoint(full)),
            _ => other,
        },
        MountType::KvV1 => match op {
            Operation::List => list_here(),
            Operation::Options => other,
            _ if rest.is_empty() => other,
            Operation::Read => (Action::Read, secret(within(rest))),
            Operation::Update => (Action::Write, secret(within(rest))),
            Operation::Delete => (Action::Delete, secret(within(rest))),
        },
        MountType::KvV2 => {
            let Some((verb, key)) = rest_str.split_first() else {
                return other;
            };
            let key_id = || within(&rest[1..]);
            match (*verb, op) {
                ("metadata" | "detailed-metadata", Operation::List) => {
                    (Action::List, folder(key_id()))
                }
                (_, Operation::List | Operation::Options) => other,
                _ if key.is_empty() => other,
                ("data", Operation::Read) => (Action::Read, secret(key_id())),
                ("data", Operation::Update) => (Action::Write, secret(key_id())),
                ("data", Operation::Delete) => (Action::Delete, secret(key_id())),
                ("metadata" | "detailed-metadata", Operation::Read) => {
                    (Action::Read, secret(key_id()))
                }
                ("metadata", Operation::Update) => (Action::Write, secret(key_id())),
                ("metadata", Operation::Delete) => (Action::Delete, secret(key_id())),
                ("subkeys", Operation::Read) => (Action::Read, secret(key_id())),
                ("delete" | "destroy", Operation::Update) => (Action::Delete, secret(key_id())),
                ("undelete", Operation::Update) => (Action::Write, secret(key_id())),
                _ => other,
            }
        }
        MountType::Database => match (rest_str.as_slice(), op) {
            (_, Operation::List) => list_here(),
            (_, Operation::Options) => other,
            ([kind @ ("creds" | "static-creds"), role], _) => {
                (Action::Read, secret(format!("{mount}/{kind}/{role}")))
            }
            _ => other,
        },
        MountType::Aws => match (rest_str.as_slice(), op) {
            (_, Operation::List) => list_here(),
            (_, Operation::Options) => other,
            // `sts/` issues credentials for the same role as `creds/`.
            (["creds" | "sts", role], _) => (Action::Read, secret(format!("{mount}/creds/{role}"))),
            _ => other,
        },
        MountType::Pki => match (rest_str.as_slice(), op) {
            (_, Operation::List) => list_here(),
            (_, Operation::Options) => other,
            // `sign/` certifies a caller's key under the same role as `issue/`.
            (["issue" | "sign", role], _) => {
                (Action::Issue, secret(format!("{mount}/issue/{role}")))
            }
            (["sign-verbatim"] | ["sign-verbatim", _], _) => {
                (Action::Issue, secret(format!("{mount}/sign-verbatim")))
            }
            _ => other,
        },
        MountType::Transit => match (rest_str.as_slice(), op) {
            (_, Operation::List) => list_here(),
            (_, Operation::Options) => other,
            (["decrypt", key] | ["datakey", "plaintext", key], _) => {
                (Action::Decrypt, secret(format!("{mount}/keys/{key}")))
            }
            // Exports and backups carry the key material itself.
            (["export", _, key] | ["export", _, key, _] | ["backup", key], _) => {
                (Action::Read, secret(format!("{mount}/keys/{key}")))
            }
            _ => other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_every_proper_prefix() {
        let r = secret("ns/secret/ci/app".into());
        assert_eq!(
            r.ancestors().collect::<Vec<_>>(),
            ["ns/secret/ci", "ns/secret", "ns"]
        );
        assert_eq!(secret("kv".into()).ancestors().count(), 0);
    }

    #[test]
    fn mount_table_rejects_bad_entries() {
        let bad = |k: &str, v: &str| {
            MountTable::from_config(&BTreeMap::from([(k.to_string(), v.to_string())])).is_err()
        };
        assert!(bad("secret", "kv-v3"));
        assert!(bad("", "kv-v2"));
        assert!(bad("a/../b", "kv-v2"));
        assert!(!bad("/team/secret/", "kv-v2"));
        assert!(!bad("ssh", "ssh"));
        assert!(!bad("totp", "other"));
    }

    #[test]
    fn entries_are_the_clean_paths_longest_first() {
        let table = MountTable::from_config(&BTreeMap::from([
            ("/team/secret/".to_string(), "kv-v2".to_string()),
            ("totp".to_string(), "other".to_string()),
        ]))
        .unwrap();
        assert_eq!(
            table.entries().collect::<Vec<_>>(),
            [
                ("team/secret".to_string(), MountType::KvV2),
                ("totp".to_string(), MountType::Other),
            ]
        );
    }

    #[test]
    fn every_request_under_an_other_mount_is_action_other_on_its_endpoint() {
        let table =
            MountTable::from_config(&BTreeMap::from([("totp".to_string(), "other".to_string())]))
                .unwrap();
        for (method, target) in [("GET", "/v1/totp/code/x"), ("LIST", "/v1/totp/keys")] {
            let c = table
                .classify(&HttpRequest {
                    method,
                    target,
                    namespace: None,
                })
                .unwrap();
            assert_eq!(c.action, Action::Other);
            assert_eq!(c.resource.kind, ResourceKind::Endpoint);
            assert_eq!(format!("/v1/{}", c.resource.id), target);
            assert_eq!(c.mount_type, Some(MountType::Other));
        }
    }
}

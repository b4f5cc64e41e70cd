//! Turns a Vault/OpenBao HTTP request into the Cedar action and resource it
//! touches. Mount types come from configuration; every route that can hand
//! out a secret maps to the logical secret it hands out, so that two API
//! paths for the same secret (KV v2 `data/` and `metadata/`, AWS `creds/` and
//! `sts/`) are one resource and one policy governs both.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

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
    /// An operation with a key that releases neither the key nor plaintext
    /// (transit `encrypt`, `rewrap`, `hmac`, `sign`, `verify`, wrapped data keys).
    Use,
    Unwrap,
    Login,
    Sys,
    Other,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Read,
        Action::List,
        Action::Write,
        Action::Delete,
        Action::Issue,
        Action::Decrypt,
        Action::Use,
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
            Action::Use => "use",
            Action::Unwrap => "unwrap",
            Action::Login => "login",
            Action::Sys => "sys",
            Action::Other => "other",
        }
    }

    /// Whether a schema must declare the action. `use` came later: a schema
    /// written before it still loads, and its `use` requests are denied.
    pub fn required_in_schema(self) -> bool {
        self != Action::Use
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

/// The resource a request touches: `Kind::"id"`, where `id` is a slash path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    pub kind: ResourceKind,
    pub id: String,
}

impl ResourceRef {
    /// The `Path` folders the resource is `in`, nearest first. Every proper
    /// prefix is one, and a `Secret` or `Endpoint` is also in the folder of
    /// its own name: Vault allows a secret `a/b` beside a folder `a/b/`, and
    /// `resource in Path::"a/b"` must cover both, as `a/b*` does in Vault.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        let id = self.id.as_str();
        let own = (self.kind != ResourceKind::Path).then_some(id);
        own.into_iter().chain(
            id.char_indices()
                .rev()
                .filter(|&(_, c)| c == '/')
                .map(move |(i, _)| &id[..i]),
        )
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{:?}", self.kind.type_name(), self.id)
    }
}

/// Secrets engines (and the built-in backends) the classifier knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    KvV1,
    KvV2,
    Database,
    Aws,
    Pki,
    Transit,
    Ssh,
    Auth,
    Sys,
    /// An engine Secretgate does not understand: every request is `other`.
    Other,
    /// Built in, never configured: each token's private storage, and the
    /// legacy unwrap route `cubbyhole/response`.
    Cubbyhole,
    /// Built in, never configured: entities, groups and OIDC tokens.
    Identity,
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
            "ssh" => MountType::Ssh,
            "auth" => MountType::Auth,
            "sys" => MountType::Sys,
            "other" => MountType::Other,
            _ => return None,
        })
    }

    pub const NAMES: &'static str =
        "kv-v1, kv-v2, database, aws, pki, transit, ssh, auth, sys, other";

    /// The configuration name (`cubbyhole` and `identity` are built in).
    pub fn name(self) -> &'static str {
        match self {
            MountType::KvV1 => "kv-v1",
            MountType::KvV2 => "kv-v2",
            MountType::Database => "database",
            MountType::Aws => "aws",
            MountType::Pki => "pki",
            MountType::Transit => "transit",
            MountType::Ssh => "ssh",
            MountType::Auth => "auth",
            MountType::Sys => "sys",
            MountType::Other => "other",
            MountType::Cubbyhole => "cubbyhole",
            MountType::Identity => "identity",
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
    /// Canonical `:path`, relative to the namespace (query unchanged).
    pub canonical_target: String,
    /// Canonical namespace ("" for the root namespace), however the request
    /// spelled it: header, path prefix, or split between the two.
    pub namespace: String,
    /// The mount's path inside the namespace (`secret`, `auth/jwt`, `sys`).
    pub mount: String,
    /// The mount's type.
    pub mount_type: Option<MountType>,
    /// OpenBao runs it as a LIST (or SCAN): its answer names children,
    /// whatever the action (`detailed-metadata` is a `read`).
    pub listing: bool,
}

/// The configured namespaces and mounts (as segment lists), longest first.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    /// Declared namespaces and their parents; the root namespace is implied.
    namespaces: Vec<Vec<String>>,
    /// Mount paths with their namespace prefix.
    mounts: Vec<(Vec<String>, MountType)>,
}

/// A configuration error in the `mounts` or `namespaces` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError(pub String);

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `mounts` table split into what the classifier needs (each mount's
/// type) and the path templates of the mounts written in object form:
/// `"secret": "kv-v2"` or `"secret": {"type": "kv-v2", "templates": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSpecs {
    pub types: BTreeMap<String, String>,
    pub templates: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountObject {
    #[serde(rename = "type")]
    mount_type: String,
    #[serde(default)]
    templates: Vec<String>,
}

impl MountSpecs {
    pub fn from_raw(raw: &BTreeMap<String, Value>) -> Result<MountSpecs, MountError> {
        let mut specs = MountSpecs::default();
        for (path, value) in raw {
            let (mount_type, templates) = match value {
                Value::String(mount_type) => (mount_type.clone(), Vec::new()),
                Value::Object(_) => {
                    let object = MountObject::deserialize(value)
                        .map_err(|e| MountError(format!("mount {path:?}: {e}")))?;
                    (object.mount_type, object.templates)
                }
                _ => {
                    return Err(MountError(format!(
                        "mount {path:?}: expected a type name or {{\"type\": ..., \"templates\": [...]}}"
                    )))
                }
            };
            specs.types.insert(path.clone(), mount_type);
            if !templates.is_empty() {
                specs.templates.insert(path.clone(), templates);
            }
        }
        Ok(specs)
    }
}

/// Where a request landed: its namespace and its mount.
struct Mounted<'a> {
    mount_type: MountType,
    /// How many leading segments name the namespace.
    namespace_len: usize,
    /// How many leading segments (namespace included) name the mount.
    mount_len: usize,
    segments: &'a [String],
}

/// The built-in mounts of every namespace, with how many segments name them.
fn builtin_mount(local: &[String]) -> Option<(MountType, usize)> {
    match local.first().map(String::as_str) {
        Some("sys") => Some((MountType::Sys, 1)),
        Some("cubbyhole") => Some((MountType::Cubbyhole, 1)),
        Some("identity") => Some((MountType::Identity, 1)),
        Some("auth") if local.len() >= 2 => Some((MountType::Auth, 2)),
        _ => None,
    }
}

impl MountTable {
    /// Builds the table from the `mounts` and `namespaces` configuration.
    /// A mount is in the longest declared namespace its path starts with,
    /// as OpenBao resolves it, so a mount may not be a namespace itself.
    pub fn from_config(
        config: &BTreeMap<String, String>,
        namespaces: &[String],
    ) -> Result<MountTable, MountError> {
        let mut declared: Vec<Vec<String>> = Vec::new();
        for name in namespaces {
            let segments = namespace_segments(name.as_bytes())
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| MountError(format!("namespace {name:?}: not a clean namespace")))?;
            // A namespace's parents are namespaces too.
            for len in 1..=segments.len() {
                if !declared.iter().any(|d| d[..] == segments[..len]) {
                    declared.push(segments[..len].to_vec());
                }
            }
        }
        declared.sort_by_key(|segments| std::cmp::Reverse(segments.len()));
        let mut table = MountTable {
            namespaces: declared,
            mounts: Vec::with_capacity(config.len()),
        };
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
            if table
                .mounts
                .iter()
                .any(|(existing, _)| existing == &segments)
            {
                return Err(MountError(format!("mount {path:?} is listed twice")));
            }
            if table.namespace_len(&segments) == segments.len() {
                return Err(MountError(format!(
                    "mount {path:?} is a declared namespace, not a mount inside one"
                )));
            }
            table.mounts.push((segments, mount_type));
        }
        table
            .mounts
            .sort_by_key(|(segments, _)| std::cmp::Reverse(segments.len()));
        Ok(table)
    }

    /// The configured mounts as (namespace, path inside it, type), the
    /// namespace resolved as requests resolve it (`""` for root).
    pub fn mounts(&self) -> impl Iterator<Item = (String, String, MountType)> + '_ {
        self.mounts.iter().map(|(segments, mount_type)| {
            let (namespace, local) = segments.split_at(self.namespace_len(segments));
            (namespace.join("/"), local.join("/"), *mount_type)
        })
    }

    /// The configured mounts' paths, namespace included, as resource ids
    /// under them start (`nsx/secret`).
    pub fn paths(&self) -> impl Iterator<Item = String> + '_ {
        self.mounts.iter().map(|(segments, _)| segments.join("/"))
    }

    /// The declared namespaces, their parents included.
    pub fn namespaces(&self) -> impl Iterator<Item = String> + '_ {
        self.namespaces.iter().map(|segments| segments.join("/"))
    }

    /// How many leading segments name a declared namespace (OpenBao takes
    /// the longest namespace that prefixes the header and path together).
    fn namespace_len(&self, full: &[String]) -> usize {
        self.namespaces
            .iter()
            .find(|ns| full.len() >= ns.len() && full[..ns.len()] == ns[..])
            .map_or(0, Vec::len)
    }

    /// The namespace, then the longest configured mount inside it, then the
    /// namespace's built-ins. Anything else is refused: an unknown engine
    /// and an undeclared namespace written in the path look alike.
    fn resolve<'a>(&self, full: &'a [String]) -> Result<Mounted<'a>, PathError> {
        let namespace_len = self.namespace_len(full);
        let configured = self.mounts.iter().find(|(mount, _)| {
            mount.len() > namespace_len
                && full.len() >= mount.len()
                && full[..mount.len()] == mount[..]
        });
        let (mount_type, mount_len) = match configured {
            Some((mount, mount_type)) => (*mount_type, mount.len()),
            None => {
                let (mount_type, len) =
                    builtin_mount(&full[namespace_len..]).ok_or(PathError::NoMount)?;
                (mount_type, namespace_len + len)
            }
        };
        Ok(Mounted {
            mount_type,
            namespace_len,
            mount_len,
            segments: full,
        })
    }

    pub fn classify(&self, request: &HttpRequest<'_>) -> Result<Classification, ClassifyError> {
        let path = ApiPath::parse(request.target)?;
        let header_namespace = match request.namespace {
            Some(value) => namespace_segments(value)?,
            None => Vec::new(),
        };
        // OpenBao answers "namespace not found" unless the whole header is one.
        if !header_namespace.is_empty() && !self.namespaces.contains(&header_namespace) {
            return Err(PathError::UndeclaredNamespace.into());
        }
        let operation = operation(request.method, path.lists)?;

        let mut full = header_namespace.clone();
        full.extend(path.segments.iter().cloned());
        let mounted = self.resolve(&full)?;

        // A `..` may move within the mount but never pop a mount segment.
        let mount_segments_in_path = mounted.mount_len.saturating_sub(header_namespace.len());
        if let Some(depth) = path.lowest_pop_depth {
            if depth < mount_segments_in_path.max(1) {
                return Err(PathError::EscapesMount.into());
            }
        }

        let (action, resource) = route(&mounted, operation);
        // Forwarded as the namespace header plus the path inside it, so
        // OpenBao resolves exactly the namespace that was decided on.
        let mut canonical_target =
            encode_segments(&full[mounted.namespace_len..], path.trailing_slash);
        if let Some(query) = &path.raw_query {
            canonical_target.push('?');
            canonical_target.push_str(query);
        }
        Ok(Classification {
            action,
            resource,
            canonical_target,
            namespace: full[..mounted.namespace_len].join("/"),
            mount: full[mounted.namespace_len..mounted.mount_len].join("/"),
            mount_type: Some(mounted.mount_type),
            listing: operation == Operation::List,
        })
    }
}

fn operation(method: &str, lists: bool) -> Result<Operation, ClassifyError> {
    Ok(match method {
        "GET" if lists => Operation::List,
        // HEAD runs the read handler; treat it as a read.
        "GET" | "HEAD" => Operation::Read,
        // SCAN is OpenBao's recursive LIST.
        "LIST" | "SCAN" => Operation::List,
        "POST" | "PUT" | "PATCH" => Operation::Update,
        "DELETE" => Operation::Delete,
        "OPTIONS" => Operation::Options,
        _ => return Err(ClassifyError::MethodNotAllowed),
    })
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

fn endpoint(id: String) -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Endpoint,
        id,
    }
}

/// `mount/a/b` for the parts `a`, `b`; the mount itself for none.
fn within(mount: &str, parts: &[&str]) -> String {
    if parts.is_empty() {
        mount.to_owned()
    } else {
        format!("{mount}/{}", parts.join("/"))
    }
}

/// Reading, writing or deleting a resource, as the HTTP operation says.
fn by_operation(op: Operation, resource: ResourceRef) -> Option<(Action, ResourceRef)> {
    match op {
        Operation::Read => Some((Action::Read, resource)),
        Operation::Update => Some((Action::Write, resource)),
        Operation::Delete => Some((Action::Delete, resource)),
        Operation::List | Operation::Options => None,
    }
}

fn route(mounted: &Mounted<'_>, op: Operation) -> (Action, ResourceRef) {
    let full = mounted.segments;
    let mount = full[..mounted.mount_len].join("/");
    let rest: Vec<&str> = full[mounted.mount_len..]
        .iter()
        .map(String::as_str)
        .collect();
    let namespace = &full[..mounted.namespace_len];
    let routed = match mounted.mount_type {
        MountType::Sys => Some(match rest.as_slice() {
            ["wrapping", "unwrap"] => (Action::Unwrap, endpoint(full.join("/"))),
            _ => (Action::Sys, endpoint(full.join("/"))),
        }),
        MountType::Auth => auth_route(&mount, &rest),
        MountType::Other => None,
        _ if op == Operation::Options => None,
        MountType::KvV2 => kv_v2_route(&mount, &rest, op),
        _ if op == Operation::List => Some((Action::List, folder(within(&mount, &rest)))),
        MountType::Cubbyhole => cubbyhole_route(namespace, &mount, &rest, op),
        MountType::KvV1 if !rest.is_empty() => by_operation(op, secret(within(&mount, &rest))),
        MountType::KvV1 => None,
        MountType::Database => database_route(&mount, &rest, op),
        MountType::Aws => aws_route(&mount, &rest, op),
        MountType::Pki => pki_route(&mount, &rest, op),
        MountType::Transit => transit_route(&mount, &rest, op),
        MountType::Ssh => ssh_route(&mount, &rest, op),
        MountType::Identity => identity_route(&mount, &rest, op),
    };
    routed.unwrap_or_else(|| (Action::Other, endpoint(full.join("/"))))
}

/// Logins name the user as OpenBao resolves it: userpass and LDAP compare
/// user names case-insensitively, so `login/ADMIN` is `login/admin`.
fn auth_route(mount: &str, rest: &[&str]) -> Option<(Action, ResourceRef)> {
    let (first, names) = rest.split_first()?;
    if *first != "login" {
        return None;
    }
    let mut id = format!("{mount}/login");
    for name in names {
        id.push('/');
        id.push_str(&name.to_lowercase());
    }
    Some((Action::Login, endpoint(id)))
}

/// Reading `cubbyhole/response` with a wrapping token unwraps it: the same
/// secret leaving by another route, so the same resource.
fn cubbyhole_route(
    namespace: &[String],
    mount: &str,
    rest: &[&str],
    op: Operation,
) -> Option<(Action, ResourceRef)> {
    match rest {
        ["response"] => {
            let mut unwrap = namespace.to_vec();
            unwrap.extend(["sys", "wrapping", "unwrap"].map(String::from));
            Some((Action::Unwrap, endpoint(unwrap.join("/"))))
        }
        [] => None,
        _ => by_operation(op, secret(within(mount, rest))),
    }
}

/// Every KV v2 verb names one logical secret; `detailed-metadata` LIST
/// returns the metadata of everything below the folder, so it reads it.
fn kv_v2_route(mount: &str, rest: &[&str], op: Operation) -> Option<(Action, ResourceRef)> {
    let (verb, key) = rest.split_first()?;
    let key_id = || within(mount, key);
    match (*verb, op) {
        ("metadata", Operation::List) => Some((Action::List, folder(key_id()))),
        ("detailed-metadata", Operation::List) => Some((Action::Read, folder(key_id()))),
        (_, Operation::List | Operation::Options) => None,
        _ if key.is_empty() => None,
        ("data" | "metadata", _) => by_operation(op, secret(key_id())),
        ("detailed-metadata" | "subkeys", Operation::Read) => {
            Some((Action::Read, secret(key_id())))
        }
        ("delete" | "destroy", Operation::Update) => Some((Action::Delete, secret(key_id()))),
        ("undelete", Operation::Update) => Some((Action::Write, secret(key_id()))),
        _ => None,
    }
}

/// A role's configuration is the role's resource: the credentials it issues.
fn database_route(mount: &str, rest: &[&str], op: Operation) -> Option<(Action, ResourceRef)> {
    let creds = |kind: &str, role: &str| secret(format!("{mount}/{kind}/{role}"));
    match rest {
        [kind @ ("creds" | "static-creds"), role] => Some((Action::Read, creds(kind, role))),
        ["roles", role] => by_operation(op, creds("creds", role)),
        ["static-roles", role] => by_operation(op, creds("static-creds", role)),
        ["rotate-role", role] => Some((Action::Write, creds("static-creds", role))),
        // A connection holds the database's root credentials.
        ["config", connection] => by_operation(op, creds("config", connection)),
        ["rotate-root" | "reset", connection] => Some((Action::Write, creds("config", connection))),
        _ => None,
    }
}

fn aws_route(mount: &str, rest: &[&str], op: Operation) -> Option<(Action, ResourceRef)> {
    let role = |kind: &str, name: &str| secret(format!("{mount}/{kind}/{name}"));
    match rest {
        // `sts/` issues credentials for the same role as `creds/`.
        ["creds" | "sts", name] => Some((Action::Read, role("creds", name))),
        ["roles", name] => by_operation(op, role("creds", name)),
        ["static-creds", name] => Some((Action::Read, role("static-creds", name))),
        ["static-roles", name] => by_operation(op, role("static-creds", name)),
        ["config", "root"] => by_operation(op, role("config", "root")),
        ["config", "rotate-root"] => Some((Action::Write, role("config", "root"))),
        _ => None,
    }
}

/// Every route that issues or signs is `issue`; a route naming a role acts
/// on `issue/<role>` and one naming an issuer on `issuer/<ref>`, so a rule
/// about a role or an issuer covers every route that uses it.
fn pki_route(mount: &str, rest: &[&str], op: Operation) -> Option<(Action, ResourceRef)> {
    let role = |name: &str| secret(format!("{mount}/issue/{name}"));
    let issuer = |name: &str| secret(format!("{mount}/issuer/{name}"));
    let issue = |resource| Some((Action::Issue, resource));
    // Issuer-scoped aliases route to the same handlers as the plain ones.
    let (issuer_ref, route) = match rest {
        ["issuer", name, route @ ..] if !route.is_empty() => (Some(*name), route),
        _ => (None, rest),
    };
    match route {
        ["issue" | "sign" | "sign-verbatim", name] => issue(role(name)),
        ["sign-verbatim"] => issue(secret(format!("{mount}/sign-verbatim"))),
        ["roles", name, "acme", ..] => issue(role(name)),
        ["acme", ..] => issue(secret(format!("{mount}/acme"))),
        ["sign-intermediate" | "sign-self-issued" | "sign-revocation-list" | "resign-crls"] => {
            issue(issuer(issuer_ref?))
        }
        ["revoke"] if issuer_ref.is_some() => Some((Action::Write, issuer(issuer_ref?))),
        // The issuer's public certificate and CRLs: no secret.
        _ if issuer_ref.is_some() => None,
        ["roles", name] => by_operation(op, role(name)),
        ["cel", "issue" | "sign", name] => issue(secret(format!("{mount}/cel/issue/{name}"))),
        ["cel", "roles", name] => by_operation(op, secret(format!("{mount}/cel/issue/{name}"))),
        ["eab", ..] => by_operation(op, secret(format!("{mount}/acme"))),
        ["root", "sign-intermediate" | "sign-self-issued"] => issue(issuer("default")),
        ["issuer", name] => by_operation(op, issuer(name)),
        // New CA keys, returned to the caller when `exported`.
        ["root", "generate" | "rotate", _]
        | ["intermediate", "generate", _]
        | ["intermediate", "cross-sign"]
        | ["issuers", "generate", _, _] => issue(folder(format!("{mount}/issuer"))),
        // Importing an issuer or choosing the default one decides who signs.
        ["issuers", "import", _]
        | ["intermediate", "set-signed"]
        | ["config", "ca"]
        | ["root", "replace"] => Some((Action::Write, folder(format!("{mount}/issuer")))),
        ["config", "issuers"] => by_operation(op, folder(format!("{mount}/issuer"))),
        ["root"] => by_operation(op, folder(format!("{mount}/issuer"))),
        ["key", name] => by_operation(op, secret(format!("{mount}/key/{name}"))),
        ["keys", "generate", _] => issue(folder(format!("{mount}/key"))),
        ["keys", "import"] => Some((Action::Write, folder(format!("{mount}/key")))),
        ["config", "keys"] => by_operation(op, folder(format!("{mount}/key"))),
        _ => None,
    }
}

/// Every route that names a transit key acts on `keys/<key>`.
fn transit_route(mount: &str, rest: &[&str], op: Operation) -> Option<(Action, ResourceRef)> {
    let key = |name: &str| secret(format!("{mount}/keys/{name}"));
    match rest {
        ["keys", name] => by_operation(op, key(name)),
        ["keys", name, "soft-delete"] => Some((Action::Delete, key(name))),
        ["keys", name, _] => Some((Action::Write, key(name))),
        ["restore", name] => Some((Action::Write, key(name))),
        ["restore"] => Some((Action::Write, folder(format!("{mount}/keys")))),
        ["datakey", "wrapped", name] => Some((Action::Use, key(name))),
        ["decrypt", name] | ["datakey", _, name] => Some((Action::Decrypt, key(name))),
        ["encrypt" | "rewrap", name] | ["hmac" | "sign" | "verify", name, ..] => {
            Some((Action::Use, key(name)))
        }
        // Exports, backups and derived keys carry key material. A BYOK
        // export releases its source key, wrapped for the destination's.
        ["export", _, name, ..]
        | ["byok-export", _, name, ..]
        | ["backup" | "derive-key", name] => Some((Action::Read, key(name))),
        _ => None,
    }
}

fn ssh_route(mount: &str, rest: &[&str], op: Operation) -> Option<(Action, ResourceRef)> {
    let role = |name: &str| secret(format!("{mount}/issue/{name}"));
    match rest {
        ["issue" | "sign" | "creds", name] => Some((Action::Issue, role(name))),
        ["roles", name] => by_operation(op, role(name)),
        // The CA's private key is written here.
        ["config", "ca"] => by_operation(op, secret(format!("{mount}/config/ca"))),
        ["issuer", name] => by_operation(op, secret(format!("{mount}/issuer/{name}"))),
        ["issuers", "import", ..] => Some((Action::Write, folder(format!("{mount}/issuer")))),
        // The default issuer decides who signs.
        ["config", "issuers"] => by_operation(op, folder(format!("{mount}/issuer"))),
        _ => None,
    }
}

/// OIDC tokens are credentials issued under a role.
fn identity_route(mount: &str, rest: &[&str], op: Operation) -> Option<(Action, ResourceRef)> {
    let role = |name: &str| secret(format!("{mount}/oidc/token/{name}"));
    match rest {
        ["oidc", "token", name] => Some((Action::Issue, role(name))),
        ["oidc", "role", name] => by_operation(op, role(name)),
        ["oidc", "key", name] => by_operation(op, secret(format!("{mount}/oidc/key/{name}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_in_its_own_folder_and_every_proper_prefix() {
        let r = secret("ns/secret/ci/app".into());
        assert_eq!(
            r.ancestors().collect::<Vec<_>>(),
            ["ns/secret/ci/app", "ns/secret/ci", "ns/secret", "ns"]
        );
        assert_eq!(
            folder("ns/secret/ci".into())
                .ancestors()
                .collect::<Vec<_>>(),
            ["ns/secret", "ns"]
        );
        assert_eq!(
            endpoint("sys/wrapping/unwrap".into())
                .ancestors()
                .collect::<Vec<_>>(),
            ["sys/wrapping/unwrap", "sys/wrapping", "sys"]
        );
        assert_eq!(folder("kv".into()).ancestors().count(), 0);
    }

    #[test]
    fn mount_table_rejects_bad_entries() {
        let bad = |k: &str, v: &str| {
            MountTable::from_config(&BTreeMap::from([(k.to_string(), v.to_string())]), &[]).is_err()
        };
        assert!(bad("secret", "kv-v3"));
        assert!(bad("", "kv-v2"));
        assert!(bad("a/../b", "kv-v2"));
        assert!(!bad("/team/secret/", "kv-v2"));
    }

    #[test]
    fn namespaces_are_clean_and_no_mount_is_one() {
        let table = |mounts: &[(&str, &str)], namespaces: &[&str]| {
            MountTable::from_config(
                &mounts
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                &namespaces.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
        };
        assert!(table(&[("nsx/secret", "kv-v2")], &["nsx"]).is_ok());
        assert!(table(&[("team", "kv-v2")], &["team/a"]).is_err());
        assert!(table(&[("team/a", "kv-v2")], &["team/a"]).is_err());
        assert!(table(&[], &["a//b"]).is_err());
        assert!(table(&[], &["root"]).is_err());
        assert!(table(&[], &[""]).is_err());
        let declared = table(&[], &["team/a", "nsx"]).unwrap();
        let mut names: Vec<String> = declared.namespaces().collect();
        names.sort();
        assert_eq!(names, ["nsx", "team", "team/a"]);
    }
}

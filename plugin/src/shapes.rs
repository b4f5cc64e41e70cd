//! The known shapes of OpenBao's request and response bodies: which places
//! in a body hold values OpenBao writes itself (lease times, versions,
//! serial numbers), which may stay readable in the audit record.
//!
//! Readability belongs to a place, never to a key name. A secret's own data
//! can use any key (`type`, `version`, `ttl`): what a KV v2 read returns at
//! `data.data.version` is the secret's, what it returns at
//! `data.metadata.version` is OpenBao's. So every place not named here is
//! masked, and a secret's data is masked whatever its keys, at any depth.

use crate::classify::MountType;

/// What a place in a body holds, and so how its values are written.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    /// Data a caller chose (a secret, custom metadata, a wrapped answer):
    /// every string and number below is masked.
    Secret,
    /// A value OpenBao writes itself: scalars stay readable, and so do the
    /// items of an array of them. An object found here is masked whole,
    /// because OpenBao never puts one here.
    Kept,
    /// An object whose listed members have known shapes; any other member
    /// is masked, unless `configurable` and the audit configuration lists
    /// its key in `readable_keys` for the mount type.
    Object {
        members: &'static [(&'static str, Shape)],
        configurable: bool,
    },
    /// An object whose members, whatever their names, share one shape
    /// (KV v2 metadata's `versions`, keyed by version number).
    EachMember(&'static Shape),
    /// An array whose items share one shape.
    EachItem(&'static Shape),
    /// The names a LIST returns: counted unless the configuration shows them.
    Names,
    /// An object whose member names are LIST names (`detailed-metadata`'s
    /// `key_info`): counted unless shown; then the object has this shape.
    NamedMembers(&'static Shape),
}

/// Which body is being masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// What decides a body's shape: whose body, on which mount, and whether
/// OpenBao answers it as a LIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyKind {
    pub direction: Direction,
    pub mount_type: Option<MountType>,
    pub listing: bool,
}

impl BodyKind {
    pub fn request(mount_type: Option<MountType>) -> BodyKind {
        BodyKind {
            direction: Direction::Request,
            mount_type,
            listing: false,
        }
    }

    pub fn response(mount_type: Option<MountType>, listing: bool) -> BodyKind {
        BodyKind {
            direction: Direction::Response,
            mount_type,
            listing,
        }
    }

    /// The shape of the whole body.
    pub fn shape(self) -> &'static Shape {
        match self.direction {
            Direction::Request => request_shape(self.mount_type),
            Direction::Response if self.listing => &LIST_RESPONSE,
            Direction::Response => response_shape(self.mount_type),
        }
    }
}

const fn object(members: &'static [(&'static str, Shape)]) -> Shape {
    Shape::Object {
        members,
        configurable: false,
    }
}

/// An engine's own fields, to which `readable_keys` may add.
const fn fields(members: &'static [(&'static str, Shape)]) -> Shape {
    Shape::Object {
        members,
        configurable: true,
    }
}

/// `wrap_info`: the wrapping token and accessors are credentials.
const WRAP_INFO: Shape = object(&[
    ("ttl", Shape::Kept),
    ("creation_time", Shape::Kept),
    ("creation_path", Shape::Kept),
    ("format", Shape::Kept),
]);

/// `auth`, on a login or a token creation: the token, its accessor and the
/// auth method's metadata (user-chosen) stay masked.
const AUTH: Shape = object(&[
    ("policies", Shape::Kept),
    ("token_policies", Shape::Kept),
    ("identity_policies", Shape::Kept),
    ("lease_duration", Shape::Kept),
    ("renewable", Shape::Kept),
    ("token_type", Shape::Kept),
    ("orphan", Shape::Kept),
    ("num_uses", Shape::Kept),
]);

/// The envelope every answer shares, around an engine's `data`.
macro_rules! envelope {
    ($data:expr) => {
        object(&[
            ("request_id", Shape::Kept),
            ("lease_id", Shape::Kept),
            ("lease_duration", Shape::Kept),
            ("renewable", Shape::Kept),
            ("mount_type", Shape::Kept),
            ("warnings", Shape::Kept),
            ("errors", Shape::Kept),
            ("wrap_info", WRAP_INFO),
            ("auth", AUTH),
            ("data", $data),
        ])
    };
}

/// One version's metadata, in a KV v2 read, write or `versions` map.
const KV_V2_VERSION: Shape = object(&[
    ("created_time", Shape::Kept),
    ("deletion_time", Shape::Kept),
    ("destroyed", Shape::Kept),
    ("version", Shape::Kept),
]);

/// A KV v2 secret's metadata (`metadata/<key>`, a `detailed-metadata` child).
const KV_V2_METADATA: Shape = fields(&[
    ("cas_required", Shape::Kept),
    ("created_time", Shape::Kept),
    ("current_version", Shape::Kept),
    ("delete_version_after", Shape::Kept),
    ("max_versions", Shape::Kept),
    ("oldest_version", Shape::Kept),
    ("updated_time", Shape::Kept),
    ("versions", Shape::EachMember(&KV_V2_VERSION)),
]);

/// A KV v2 answer's `data`, on every route: a read holds the secret in
/// `data` and the version in `metadata`; a write holds the version's
/// fields; a metadata read the secret's metadata. The secret itself only
/// ever sits in `data` and `subkeys`, so one shape serves them all.
const KV_V2_DATA: Shape = fields(&[
    ("data", Shape::Secret),
    ("metadata", KV_V2_VERSION),
    ("custom_metadata", Shape::Secret),
    ("subkeys", Shape::Secret),
    ("version", Shape::Kept),
    ("created_time", Shape::Kept),
    ("deletion_time", Shape::Kept),
    ("destroyed", Shape::Kept),
    ("cas_required", Shape::Kept),
    ("current_version", Shape::Kept),
    ("delete_version_after", Shape::Kept),
    ("max_versions", Shape::Kept),
    ("oldest_version", Shape::Kept),
    ("updated_time", Shape::Kept),
    ("versions", Shape::EachMember(&KV_V2_VERSION)),
]);

/// Database credentials and roles: the username and password are the
/// credential; the lease's and the role's durations are OpenBao's.
const DATABASE_DATA: Shape = fields(&[
    ("ttl", Shape::Kept),
    ("default_ttl", Shape::Kept),
    ("max_ttl", Shape::Kept),
    ("rotation_period", Shape::Kept),
    ("last_vault_rotation", Shape::Kept),
]);

const AWS_DATA: Shape = fields(&[("ttl", Shape::Kept)]);

/// An issued certificate: the private key is the credential.
const PKI_DATA: Shape = fields(&[
    ("serial_number", Shape::Kept),
    ("expiration", Shape::Kept),
    ("private_key_type", Shape::Kept),
]);

const TRANSIT_BATCH_ITEM: Shape = object(&[("key_version", Shape::Kept)]);

/// Plaintext and ciphertext are masked; which key version was used is not secret.
const TRANSIT_DATA: Shape = fields(&[
    ("key_version", Shape::Kept),
    ("batch_results", Shape::EachItem(&TRANSIT_BATCH_ITEM)),
]);

const SSH_DATA: Shape = fields(&[
    ("serial_number", Shape::Kept),
    ("private_key_type", Shape::Kept),
]);

/// A token's lookup: its id and accessor are credentials, its metadata is
/// the auth method's (user-chosen).
const AUTH_DATA: Shape = fields(&[
    ("policies", Shape::Kept),
    ("ttl", Shape::Kept),
    ("creation_time", Shape::Kept),
    ("creation_ttl", Shape::Kept),
    ("expire_time", Shape::Kept),
    ("explicit_max_ttl", Shape::Kept),
    ("issue_time", Shape::Kept),
    ("num_uses", Shape::Kept),
    ("orphan", Shape::Kept),
    ("renewable", Shape::Kept),
    ("type", Shape::Kept),
]);

const IDENTITY_DATA: Shape = fields(&[
    ("policies", Shape::Kept),
    ("creation_time", Shape::Kept),
    ("last_update_time", Shape::Kept),
    ("ttl", Shape::Kept),
]);

/// An answer whose data Secretgate knows no shape of: an unknown engine, or
/// one whose data is the secret (KV v1, cubbyhole, and `sys/`, where
/// `sys/wrapping/unwrap` answers with another mount's secret).
const SECRET_DATA_RESPONSE: Shape = envelope!(Shape::Secret);
const KV_V2_RESPONSE: Shape = envelope!(KV_V2_DATA);
const DATABASE_RESPONSE: Shape = envelope!(DATABASE_DATA);
const AWS_RESPONSE: Shape = envelope!(AWS_DATA);
const PKI_RESPONSE: Shape = envelope!(PKI_DATA);
const TRANSIT_RESPONSE: Shape = envelope!(TRANSIT_DATA);
const SSH_RESPONSE: Shape = envelope!(SSH_DATA);
const AUTH_RESPONSE: Shape = envelope!(AUTH_DATA);
const IDENTITY_RESPONSE: Shape = envelope!(IDENTITY_DATA);

/// A `detailed-metadata` LIST's `key_info`: each child's metadata.
const KV_V2_KEY_INFO: Shape = Shape::EachMember(&KV_V2_METADATA);

/// A LIST answer, on any mount: `data.keys` are names, and so are the
/// member names of a KV v2 `detailed-metadata` LIST's `data.key_info`.
const LIST_RESPONSE: Shape = envelope!(object(&[
    ("keys", Shape::Names),
    ("key_info", Shape::NamedMembers(&KV_V2_KEY_INFO)),
]));

fn response_shape(mount_type: Option<MountType>) -> &'static Shape {
    match mount_type {
        Some(MountType::KvV2) => &KV_V2_RESPONSE,
        Some(MountType::Database) => &DATABASE_RESPONSE,
        Some(MountType::Aws) => &AWS_RESPONSE,
        Some(MountType::Pki) => &PKI_RESPONSE,
        Some(MountType::Transit) => &TRANSIT_RESPONSE,
        Some(MountType::Ssh) => &SSH_RESPONSE,
        Some(MountType::Auth) => &AUTH_RESPONSE,
        Some(MountType::Identity) => &IDENTITY_RESPONSE,
        Some(MountType::KvV1 | MountType::Cubbyhole | MountType::Sys | MountType::Other) | None => {
            &SECRET_DATA_RESPONSE
        }
    }
}

/// A KV v2 write: the secret in `data`, check-and-set in `options`; a
/// metadata write's settings; a delete's or destroy's version numbers.
const KV_V2_REQUEST: Shape = fields(&[
    ("data", Shape::Secret),
    ("options", object(&[("cas", Shape::Kept)])),
    ("custom_metadata", Shape::Secret),
    ("max_versions", Shape::Kept),
    ("cas_required", Shape::Kept),
    ("delete_version_after", Shape::Kept),
    ("versions", Shape::Kept),
]);

const LEASE_REQUEST: Shape = fields(&[("ttl", Shape::Kept)]);

const PKI_REQUEST: Shape = fields(&[
    ("ttl", Shape::Kept),
    ("format", Shape::Kept),
    ("private_key_format", Shape::Kept),
]);

const TRANSIT_REQUEST: Shape = fields(&[
    ("key_version", Shape::Kept),
    ("batch_input", Shape::EachItem(&TRANSIT_BATCH_ITEM)),
]);

const SSH_REQUEST: Shape = fields(&[
    ("ttl", Shape::Kept),
    ("cert_type", Shape::Kept),
    ("key_type", Shape::Kept),
]);

/// Token creation and role settings; a login's credentials stay masked.
const AUTH_REQUEST: Shape = fields(&[
    ("policies", Shape::Kept),
    ("token_policies", Shape::Kept),
    ("ttl", Shape::Kept),
    ("token_ttl", Shape::Kept),
    ("token_max_ttl", Shape::Kept),
    ("explicit_max_ttl", Shape::Kept),
    ("num_uses", Shape::Kept),
    ("renewable", Shape::Kept),
    ("type", Shape::Kept),
    ("period", Shape::Kept),
]);

fn request_shape(mount_type: Option<MountType>) -> &'static Shape {
    match mount_type {
        Some(MountType::KvV2) => &KV_V2_REQUEST,
        Some(MountType::Database | MountType::Aws) => &LEASE_REQUEST,
        Some(MountType::Pki) => &PKI_REQUEST,
        Some(MountType::Transit) => &TRANSIT_REQUEST,
        Some(MountType::Ssh) => &SSH_REQUEST,
        Some(MountType::Auth) => &AUTH_REQUEST,
        // A KV v1 or cubbyhole write is the secret itself, and a `sys/`
        // body may be data to wrap.
        Some(
            MountType::KvV1
            | MountType::Cubbyhole
            | MountType::Sys
            | MountType::Identity
            | MountType::Other,
        )
        | None => &Shape::Secret,
    }
}

impl Shape {
    /// The shape of member `key` of an object of this shape, and whether
    /// `readable_keys` may make it readable.
    pub fn member(&'static self, key: &str) -> (&'static Shape, bool) {
        match self {
            Shape::Object {
                members,
                configurable,
            } => match members.iter().find(|(name, _)| *name == key) {
                Some((_, shape)) => (shape, false),
                None => (&Shape::Secret, *configurable),
            },
            Shape::EachMember(shape) => (shape, false),
            Shape::Secret
            | Shape::Kept
            | Shape::EachItem(_)
            | Shape::Names
            | Shape::NamedMembers(_) => (&Shape::Secret, false),
        }
    }

    /// The shape of an item of an array of this shape.
    pub fn item(&'static self) -> &'static Shape {
        match self {
            Shape::Kept => &Shape::Kept,
            Shape::EachItem(shape) => shape,
            Shape::Secret
            | Shape::Object { .. }
            | Shape::EachMember(_)
            | Shape::Names
            | Shape::NamedMembers(_) => &Shape::Secret,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_sits_in_a_readable_place() {
        // The places where each engine puts what a caller stored.
        let kv2 = BodyKind::response(Some(MountType::KvV2), false).shape();
        let data = kv2.member("data").0;
        assert_eq!(data.member("data").0, &Shape::Secret);
        assert_eq!(data.member("data").0.member("version").0, &Shape::Secret);
        assert_eq!(data.member("custom_metadata").0, &Shape::Secret);
        assert_eq!(data.member("metadata").0.member("version").0, &Shape::Kept);
        for mount in [MountType::KvV1, MountType::Cubbyhole, MountType::Sys] {
            let body = BodyKind::response(Some(mount), false).shape();
            assert_eq!(body.member("data").0, &Shape::Secret, "{mount:?}");
            assert_eq!(BodyKind::request(Some(mount)).shape(), &Shape::Secret);
        }
        let write = BodyKind::request(Some(MountType::KvV2)).shape();
        assert_eq!(write.member("data").0, &Shape::Secret);
        assert_eq!(write.member("options").0.member("cas").0, &Shape::Kept);
        // An envelope field is OpenBao's only at the top of an answer.
        assert_eq!(kv2.member("lease_duration").0, &Shape::Kept);
        assert_eq!(write.member("lease_duration"), (&Shape::Secret, true));
    }

    #[test]
    fn configured_keys_apply_only_to_an_engines_own_fields() {
        let database = BodyKind::response(Some(MountType::Database), false).shape();
        assert_eq!(
            database.member("data").0.member("username"),
            (&Shape::Secret, true)
        );
        assert_eq!(database.member("username"), (&Shape::Secret, false));
        let kv2 = BodyKind::response(Some(MountType::KvV2), false).shape();
        let secret = kv2.member("data").0.member("data").0;
        assert_eq!(secret.member("username"), (&Shape::Secret, false));
    }
}

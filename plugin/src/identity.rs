//! Who is calling. The Vault token is never the identity: the caller is
//! whoever Envoy authenticated (a `jwt_authn`-verified token, an mTLS peer)
//! or, in development only, whoever a trusted header names.

use std::fmt;

use serde_json::{Map, Value};

use crate::claims::{ClaimType, ClaimsError, ClaimsShape};
use crate::pairs;

/// Where the caller's identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A header set by something trusted in front of Envoy. Development only.
    Header { header: String },
    /// Claims `jwt_authn` verified and stored under `payload_in_metadata`.
    Jwt {
        payload_in_metadata: String,
        principal_claim: String,
    },
    /// The URI SAN (SPIFFE ID) of the verified client certificate.
    Mtls,
}

/// How a request's caller becomes a Cedar principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    pub source: IdentitySource,
    /// Cedar entity type of the principal, e.g. `Workload` or `User`.
    pub principal_type: String,
    /// A request with no identity at all is evaluated as
    /// [`Principal::anonymous`] instead of being refused outright.
    pub anonymous: bool,
}

/// The entity type of the principal of a request that carries no identity.
pub const ANONYMOUS_TYPE: &str = "Unauthenticated";
/// The id of the one principal of that type.
pub const ANONYMOUS_ID: &str = "anonymous";

/// What the host observed about the caller. The adapter fills in only what
/// the configured source needs.
#[derive(Debug, Clone, Default)]
pub struct IdentityEvidence<'a> {
    /// Every value of the configured identity header.
    pub header_values: Vec<&'a [u8]>,
    /// The pairs-encoded `jwt_authn` payload from dynamic metadata.
    pub jwt_payload: Option<&'a [u8]>,
    /// `connection.uri_san_peer_certificate`.
    pub peer_uri_san: Option<&'a [u8]>,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub entity_type: String,
    pub id: String,
    /// Claims declared by the schema, typed; empty for non-JWT sources.
    pub claims: Map<String, Value>,
}

impl Principal {
    /// `Unauthenticated::"anonymous"`, with no claims: a request that
    /// carries no identity at all, when `identity.anonymous` is on.
    pub fn anonymous() -> Principal {
        Principal {
            entity_type: ANONYMOUS_TYPE.to_owned(),
            id: ANONYMOUS_ID.to_owned(),
            claims: Map::new(),
        }
    }

    /// Whether this is the principal of a request without identity. No
    /// configured `principal_type` may be `Unauthenticated`, so the type
    /// alone tells.
    pub fn is_anonymous(&self) -> bool {
        self.entity_type == ANONYMOUS_TYPE
    }
}

/// Why no principal could be established; every one is a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    Missing,
    /// The identity header was sent more than once.
    Ambiguous,
    /// The principal claim is absent from a verified token.
    MissingPrincipalClaim,
    /// The identity is empty, too long, not UTF-8, has control characters,
    /// or (mTLS) is not a SPIFFE ID.
    Malformed,
    Claims(ClaimsError),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Missing => f.write_str("no client identity"),
            IdentityError::Ambiguous => f.write_str("identity header sent more than once"),
            IdentityError::MissingPrincipalClaim => f.write_str("token lacks the principal claim"),
            IdentityError::Malformed => f.write_str("malformed client identity"),
            IdentityError::Claims(e) => e.fmt(f),
        }
    }
}

const MAX_PRINCIPAL_LEN: usize = 1024;

fn principal_id(raw: &[u8]) -> Result<String, IdentityError> {
    let text = std::str::from_utf8(raw).map_err(|_| IdentityError::Malformed)?;
    if text.is_empty() || text.len() > MAX_PRINCIPAL_LEN || text.chars().any(char::is_control) {
        return Err(IdentityError::Malformed);
    }
    Ok(text.to_owned())
}

impl IdentityConfig {
    /// The caller: the identity the source names, or, when the request
    /// carries none at all and `anonymous` is on, [`Principal::anonymous`].
    /// An identity that is present but invalid (sent twice, malformed, a
    /// token without the principal claim, a claim of the wrong type) is
    /// always an error, never anonymous.
    pub fn caller(
        &self,
        evidence: &IdentityEvidence<'_>,
        shape: &ClaimsShape,
    ) -> Result<Principal, IdentityError> {
        match self.principal(evidence, shape) {
            Err(IdentityError::Missing) if self.anonymous => Ok(Principal::anonymous()),
            other => other,
        }
    }

    pub fn principal(
        &self,
        evidence: &IdentityEvidence<'_>,
        shape: &ClaimsShape,
    ) -> Result<Principal, IdentityError> {
        let (id, claims) = match &self.source {
            IdentitySource::Header { .. } => match evidence.header_values.as_slice() {
                [] => return Err(IdentityError::Missing),
                [value] => (principal_id(value)?, Map::new()),
                _ => return Err(IdentityError::Ambiguous),
            },
            IdentitySource::Mtls => {
                let san = evidence.peer_uri_san.ok_or(IdentityError::Missing)?;
                let id = principal_id(san)?;
                let claims = spiffe_claims(&id, shape).ok_or(IdentityError::Malformed)?;
                (id, claims)
            }
            IdentitySource::Jwt {
                principal_claim, ..
            } => {
                let payload = evidence.jwt_payload.ok_or(IdentityError::Missing)?;
                let entries =
                    pairs::decode(payload).ok_or(IdentityError::Claims(ClaimsError::Malformed))?;
                let claims = shape.decode(&entries).map_err(IdentityError::Claims)?;
                let id = match claims.get(principal_claim) {
                    // A schema-typed claim is already decoded correctly.
                    Some(Value::String(s)) => principal_id(s.as_bytes())?,
                    Some(Value::Number(n)) => n.to_string(),
                    Some(_) => return Err(IdentityError::Malformed),
                    None => {
                        let raw = entries
                            .iter()
                            .find(|(name, _)| *name == principal_claim.as_bytes())
                            .map(|(_, value)| *value)
                            .ok_or(IdentityError::MissingPrincipalClaim)?;
                        principal_id(raw)?
                    }
                };
                (id, claims)
            }
        };
        Ok(Principal {
            entity_type: self.principal_type.clone(),
            id,
            claims,
        })
    }
}

/// The claims an mTLS caller's SPIFFE ID carries, so one policy can compare
/// them with a path's attributes instead of naming every workload:
/// `spiffe_id`, `trust_domain`, `workload_path` (the ID's path, from its
/// first `/`) and, for the Kubernetes shape `/ns/<namespace>/sa/<account>`,
/// `k8s_namespace` and `k8s_service_account`. Only those the schema declares
/// as `String` claims reach Cedar. `None`: not a SPIFFE ID.
fn spiffe_claims(id: &str, shape: &ClaimsShape) -> Option<Map<String, Value>> {
    let rest = id.strip_prefix("spiffe://")?;
    let (trust_domain, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if trust_domain.is_empty() {
        return None;
    }
    let mut found = vec![
        ("spiffe_id", id),
        ("trust_domain", trust_domain),
        ("workload_path", path),
    ];
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    if let ["ns", namespace, "sa", account] = segments.as_slice() {
        found.push(("k8s_namespace", namespace));
        found.push(("k8s_service_account", account));
    }
    Some(
        found
            .into_iter()
            .filter(|(name, value)| {
                !value.is_empty() && shape.claim_type(name) == Some(ClaimType::String)
            })
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect(),
    )
}

/// Whether a claim type can name a principal.
pub fn can_name_principal(claim_type: Option<ClaimType>) -> bool {
    matches!(claim_type, None | Some(ClaimType::String | ClaimType::Long))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(source: IdentitySource) -> IdentityConfig {
        IdentityConfig {
            source,
            principal_type: "Workload".into(),
            anonymous: false,
        }
    }

    fn jwt() -> IdentityConfig {
        config(IdentitySource::Jwt {
            payload_in_metadata: "ci_claims".into(),
            principal_claim: "sub".into(),
        })
    }

    fn shape() -> ClaimsShape {
        let schema = r#"entity Workload;
            action read appliesTo { principal: Workload, resource: Workload,
              context: { claims: { repository?: String, run_number?: Long } } };"#;
        let (json, _) = cedar_policy::schema_str_to_json_with_resolved_types(schema).unwrap();
        ClaimsShape::from_schema_json(&json).unwrap()
    }

    #[test]
    fn a_spiffe_id_carries_its_parts_as_declared_claims() {
        let schema = r#"entity Workload;
            action read appliesTo { principal: Workload, resource: Workload,
              context: { claims: { trust_domain?: String, k8s_namespace?: String,
                                   k8s_service_account?: String, workload_path?: String } } };"#;
        let (json, _) = cedar_policy::schema_str_to_json_with_resolved_types(schema).unwrap();
        let shape = ClaimsShape::from_schema_json(&json).unwrap();
        let mtls = config(IdentitySource::Mtls);
        let with = |san: &'static [u8]| {
            mtls.principal(
                &IdentityEvidence {
                    peer_uri_san: Some(san),
                    ..Default::default()
                },
                &shape,
            )
        };
        let k8s = with(b"spiffe://prod.acme.test/ns/payments/sa/api").unwrap();
        assert_eq!(k8s.id, "spiffe://prod.acme.test/ns/payments/sa/api");
        assert_eq!(
            Value::Object(k8s.claims),
            serde_json::json!({"trust_domain": "prod.acme.test", "workload_path": "/ns/payments/sa/api",
                               "k8s_namespace": "payments", "k8s_service_account": "api"})
        );
        // Not the Kubernetes shape: no namespace or account, and an
        // undeclared claim (`spiffe_id`) never reaches Cedar.
        let other = with(b"spiffe://prod.acme.test/ci/api").unwrap();
        assert_eq!(
            Value::Object(other.claims),
            serde_json::json!({"trust_domain": "prod.acme.test", "workload_path": "/ci/api"})
        );
        assert_eq!(with(b"spiffe:///ns/a/sa/b"), Err(IdentityError::Malformed));
        assert_eq!(with(b"https://acme.test/x"), Err(IdentityError::Malformed));
    }

    #[test]
    fn header_identity_needs_exactly_one_clean_value() {
        let header = config(IdentitySource::Header {
            header: "x-secretgate-principal".into(),
        });
        let with = |values: Vec<&'static [u8]>| {
            header.principal(
                &IdentityEvidence {
                    header_values: values,
                    ..Default::default()
                },
                &ClaimsShape::default(),
            )
        };
        assert_eq!(with(vec![b"ci-bot"]).unwrap().id, "ci-bot");
        assert_eq!(with(vec![]), Err(IdentityError::Missing));
        assert_eq!(with(vec![b"a", b"b"]), Err(IdentityError::Ambiguous));
        assert_eq!(with(vec![b""]), Err(IdentityError::Malformed));
        assert_eq!(with(vec![b"a\nb"]), Err(IdentityError::Malformed));
        assert_eq!(with(vec![b"\xff"]), Err(IdentityError::Malformed));
    }

    #[test]
    fn mtls_identity_is_a_spiffe_id() {
        let mtls = config(IdentitySource::Mtls);
        let with = |san: Option<&'static [u8]>| {
            mtls.principal(
                &IdentityEvidence {
                    peer_uri_san: san,
                    ..Default::default()
                },
                &ClaimsShape::default(),
            )
        };
        assert_eq!(
            with(Some(b"spiffe://acme.test/ci/api")).unwrap().id,
            "spiffe://acme.test/ci/api"
        );
        assert_eq!(with(None), Err(IdentityError::Missing));
        assert_eq!(
            with(Some(b"https://acme.test")),
            Err(IdentityError::Malformed)
        );
    }

    #[test]
    fn jwt_identity_takes_the_principal_claim_and_typed_claims() {
        let run = 42f64.to_le_bytes();
        let payload = pairs::encode(&[
            (b"sub", b"repo:acme/api:ref:refs/heads/main"),
            (b"repository", b"acme/api"),
            (b"run_number", &run),
        ]);
        let principal = jwt()
            .principal(
                &IdentityEvidence {
                    jwt_payload: Some(&payload),
                    ..Default::default()
                },
                &shape(),
            )
            .unwrap();
        assert_eq!(principal.id, "repo:acme/api:ref:refs/heads/main");
        assert_eq!(principal.entity_type, "Workload");
        assert_eq!(
            Value::Object(principal.claims),
            serde_json::json!({"repository": "acme/api", "run_number": 42})
        );
    }

    #[test]
    fn jwt_identity_fails_closed() {
        let no_sub = pairs::encode(&[(b"repository", b"acme/api")]);
        let bad_type = pairs::encode(&[(b"sub", b"x"), (b"run_number", b"42")]);
        for (payload, expected) in [
            (None, IdentityError::Missing),
            (Some(&no_sub[..]), IdentityError::MissingPrincipalClaim),
            (
                Some(&b"garbage"[..]),
                IdentityError::Claims(ClaimsError::Malformed),
            ),
            (
                Some(&bad_type[..]),
                IdentityError::Claims(ClaimsError::WrongType("run_number".into())),
            ),
        ] {
            let result = jwt().principal(
                &IdentityEvidence {
                    jwt_payload: payload,
                    ..Default::default()
                },
                &shape(),
            );
            assert_eq!(result, Err(expected));
        }
    }

    #[test]
    fn only_a_request_without_any_identity_is_anonymous() {
        let evidence =
            |values: Vec<&'static [u8]>, jwt: Option<&'static [u8]>, san| IdentityEvidence {
                header_values: values,
                jwt_payload: jwt,
                peer_uri_san: san,
            };
        let header = IdentityConfig {
            anonymous: true,
            ..config(IdentitySource::Header {
                header: "x-secretgate-principal".into(),
            })
        };
        let empty = ClaimsShape::default();
        let anonymous = Ok(Principal::anonymous());
        assert_eq!(
            header.caller(&evidence(vec![], None, None), &empty),
            anonymous
        );
        assert_eq!(
            header.caller(&evidence(vec![b"a", b"b"], None, None), &empty),
            Err(IdentityError::Ambiguous)
        );
        assert_eq!(
            header.caller(&evidence(vec![b""], None, None), &empty),
            Err(IdentityError::Malformed)
        );
        let long = vec![b'a'; MAX_PRINCIPAL_LEN + 1].leak();
        assert_eq!(
            header.caller(&evidence(vec![long], None, None), &empty),
            Err(IdentityError::Malformed)
        );
        assert_eq!(
            header
                .caller(&evidence(vec![b"ci-bot"], None, None), &empty)
                .map(|p| p.id),
            Ok("ci-bot".to_owned())
        );
        // Off (the default): no identity stays an error.
        let off = IdentityConfig {
            anonymous: false,
            ..header.clone()
        };
        assert_eq!(
            off.caller(&evidence(vec![], None, None), &empty),
            Err(IdentityError::Missing)
        );

        let jwt = IdentityConfig {
            anonymous: true,
            ..jwt()
        };
        let no_sub = pairs::encode(&[(b"repository", b"acme/api")]).leak();
        let bad_type = pairs::encode(&[(b"sub", b"x"), (b"run_number", b"42")]).leak();
        assert_eq!(
            jwt.caller(&evidence(vec![], None, None), &shape()),
            anonymous
        );
        assert_eq!(
            jwt.caller(&evidence(vec![], Some(no_sub), None), &shape()),
            Err(IdentityError::MissingPrincipalClaim)
        );
        assert_eq!(
            jwt.caller(&evidence(vec![], Some(b"garbage"), None), &shape()),
            Err(IdentityError::Claims(ClaimsError::Malformed))
        );
        assert_eq!(
            jwt.caller(&evidence(vec![], Some(bad_type), None), &shape()),
            Err(IdentityError::Claims(ClaimsError::WrongType(
                "run_number".into()
            )))
        );

        let mtls = IdentityConfig {
            anonymous: true,
            ..config(IdentitySource::Mtls)
        };
        assert_eq!(
            mtls.caller(&evidence(vec![], None, None), &empty),
            anonymous
        );
        assert_eq!(
            mtls.caller(&evidence(vec![], None, Some(b"https://acme.test")), &empty),
            Err(IdentityError::Malformed)
        );
        assert!(Principal::anonymous().is_anonymous());
        assert!(Principal::anonymous().claims.is_empty());
    }
}

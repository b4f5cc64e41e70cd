//! JWT claims, typed by the Cedar schema.
//!
//! Envoy hands the verified `jwt_authn` payload over as a pairs-encoded map
//! whose values carry no type tag: a string is its bytes, a number an 8-byte
//! double, a boolean one byte, a list a pairs map of its items. The schema's
//! `context.claims` record says what each claim is, so it decides how each
//! value decodes. Claims the schema does not declare are not passed to Cedar
//! (strict request validation would reject them); a declared claim whose
//! value does not decode as declared fails the request closed, because
//! dropping it could silently disarm a `forbid`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::pairs;

/// The claim types a policy can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimType {
    String,
    Long,
    Bool,
    StringSet,
}

/// Which claims the schema declares, and as what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimsShape {
    types: BTreeMap<String, ClaimType>,
}

/// A claim that cannot be decoded as the schema declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsError {
    /// The metadata is not a pairs map.
    Malformed,
    /// The named claim's value does not have the declared type.
    WrongType(String),
}

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimsError::Malformed => f.write_str("JWT payload metadata is malformed"),
            ClaimsError::WrongType(name) => {
                write!(f, "claim {name:?} does not match its schema type")
            }
        }
    }
}

impl ClaimsShape {
    /// Reads `context.claims` from every root-namespace action of a schema in
    /// Cedar's JSON form (as `schema_str_to_json_with_resolved_types` gives).
    /// Actions that agree are merged; a claim declared with two different
    /// types is a configuration error.
    pub fn from_schema_json(schema: &Value) -> Result<ClaimsShape, String> {
        let root = schema.get("").unwrap_or(&Value::Null);
        let common = root.get("commonTypes").and_then(Value::as_object);
        let actions = root.get("actions").and_then(Value::as_object);
        let mut types: BTreeMap<String, ClaimType> = BTreeMap::new();
        for (action, definition) in actions.into_iter().flatten() {
            let Some(context) = definition.pointer("/appliesTo/context") else {
                continue;
            };
            let Some(claims) = resolve_type(context, common)
                .and_then(|ctx| ctx.pointer("/attributes/claims"))
                .and_then(|claims| resolve_type(claims, common))
            else {
                continue;
            };
            let attributes = claims
                .get("attributes")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("action {action:?}: context.claims must be a record"))?;
            for (name, declared) in attributes {
                let claim_type = declared_type(declared, common).ok_or_else(|| {
                    format!(
                        "action {action:?}: claim {name:?} must be String, Long, Bool or Set<String>"
                    )
                })?;
                match types.insert(name.clone(), claim_type) {
                    Some(previous) if previous != claim_type => {
                        return Err(format!(
                            "claim {name:?} is declared with different types across actions"
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(ClaimsShape { types })
    }

    pub fn claim_type(&self, name: &str) -> Option<ClaimType> {
        self.types.get(name).copied()
    }

    /// Turns Envoy's untyped payload pairs into a typed claims record.
    pub fn decode(&self, payload: &[(&[u8], &[u8])]) -> Result<Map<String, Value>, ClaimsError> {
        let mut claims = Map::new();
        for (raw_name, raw_value) in payload {
            let Ok(name) = std::str::from_utf8(raw_name) else {
                continue;
            };
            let Some(claim_type) = self.types.get(name) else {
                continue;
            };
            let value = decode_value(*claim_type, raw_value)
                .ok_or_else(|| ClaimsError::WrongType(name.to_owned()))?;
            claims.insert(name.to_owned(), value);
        }
        Ok(claims)
    }
}

impl ClaimsShape {
    /// The declared claims' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Types claims given as JSON (an audit record's `inputs.claims`,
    /// `secretgate explain --claims`) as [`ClaimsShape::decode`] types
    /// Envoy's payload: undeclared claims are dropped, `null` means absent,
    /// and a value of another type fails as the filter would fail it.
    pub fn from_json(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ClaimsError> {
        let mut typed = Map::new();
        for (name, value) in claims {
            let Some(claim_type) = self.types.get(name) else {
                continue;
            };
            let fits = match (claim_type, value) {
                (_, Value::Null) => continue,
                (ClaimType::String, Value::String(_)) | (ClaimType::Bool, Value::Bool(_)) => true,
                (ClaimType::Long, Value::Number(n)) => n.is_i64(),
                (ClaimType::StringSet, Value::Array(items)) => items.iter().all(Value::is_string),
                _ => false,
            };
            if !fits {
                return Err(ClaimsError::WrongType(name.clone()));
            }
            typed.insert(name.clone(), value.clone());
        }
        Ok(typed)
    }
}

/// Follows a common-type reference (`{"type": "Claims"}`) to its definition,
/// in a schema's JSON form with resolved types.
pub(crate) fn resolve_type<'a>(
    ty: &'a Value,
    common: Option<&'a Map<String, Value>>,
) -> Option<&'a Value> {
    let mut current = ty;
    // Common types cannot be recursive, but bound the walk anyway.
    for _ in 0..16 {
        let name = current.get("type")?.as_str()?;
        match common.and_then(|c| c.get(name)) {
            Some(definition) => current = definition,
            None => return Some(current),
        }
    }
    None
}

/// The type a schema declares (for a claim, or an attribute), if it is one
/// a claim can have.
pub(crate) fn declared_type(
    declared: &Value,
    common: Option<&Map<String, Value>>,
) -> Option<ClaimType> {
    let resolved = resolve_type(declared, common)?;
    match resolved.get("type")?.as_str()? {
        "String" => Some(ClaimType::String),
        "Long" => Some(ClaimType::Long),
        "Bool" | "Boolean" => Some(ClaimType::Bool),
        "Set" => {
            let element = resolve_type(resolved.get("element")?, common)?;
            (element.get("type")?.as_str()? == "String").then_some(ClaimType::StringSet)
        }
        _ => None,
    }
}

fn decode_value(claim_type: ClaimType, raw: &[u8]) -> Option<Value> {
    match claim_type {
        ClaimType::String => std::str::from_utf8(raw).ok().map(Value::from),
        ClaimType::Long => {
            let number = f64::from_le_bytes(raw.try_into().ok()?);
            // Envoy turns every JSON number into a double; only exact integers are Longs.
            let in_range = number.is_finite()
                && number.fract() == 0.0
                && number.abs() <= 9_007_199_254_740_992.0;
            #[allow(clippy::cast_possible_truncation)]
            in_range.then(|| Value::from(number as i64))
        }
        ClaimType::Bool => match raw {
            [0] => Some(Value::Bool(false)),
            [1] => Some(Value::Bool(true)),
            _ => None,
        },
        ClaimType::StringSet => pairs::decode(raw)?
            .into_iter()
            .map(|(item, _)| std::str::from_utf8(item).ok().map(Value::from))
            .collect::<Option<Vec<Value>>>()
            .map(Value::Array),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape() -> ClaimsShape {
        let schema = r#"
            entity Workload;
            type Claims = { sub?: String, iat?: Long, admin?: Bool, groups?: Set<String> };
            action read appliesTo { principal: Workload, resource: Workload,
                context: { claims: Claims } };
        "#;
        let (json, _) = cedar_policy::schema_str_to_json_with_resolved_types(schema).unwrap();
        ClaimsShape::from_schema_json(&json).unwrap()
    }

    #[test]
    fn decodes_each_declared_type_and_drops_undeclared_claims() {
        let groups = pairs::encode(&[(b"ops", b""), (b"ci", b"")]);
        let iat = 1_700_000_000f64.to_le_bytes();
        let payload: Vec<(&[u8], &[u8])> = vec![
            (b"sub", b"repo:acme/api:ref:refs/heads/main"),
            (b"iat", &iat),
            (b"admin", &[1]),
            (b"groups", &groups),
            (b"undeclared", b"whatever"),
        ];
        let claims = shape().decode(&payload).unwrap();
        assert_eq!(
            Value::Object(claims),
            json!({"sub": "repo:acme/api:ref:refs/heads/main", "iat": 1_700_000_000i64,
                   "admin": true, "groups": ["ops", "ci"]})
        );
    }

    #[test]
    fn a_declared_claim_of_the_wrong_shape_fails_closed() {
        let half = 1.5f64.to_le_bytes();
        for payload in [
            vec![(&b"iat"[..], &b"12345678"[..2])],
            vec![(&b"iat"[..], &half[..])],
            vec![(&b"admin"[..], &b"true"[..])],
            vec![(&b"sub"[..], &b"\xff"[..])],
            vec![(&b"groups"[..], &b"not pairs"[..])],
        ] {
            assert!(matches!(
                shape().decode(&payload),
                Err(ClaimsError::WrongType(_))
            ));
        }
    }

    #[test]
    fn conflicting_or_unsupported_claim_types_are_rejected() {
        let conflicting = r#"
            entity W;
            action read appliesTo { principal: W, resource: W, context: { claims: { a?: String } } };
            action list appliesTo { principal: W, resource: W, context: { claims: { a?: Long } } };
        "#;
        let (json, _) = cedar_policy::schema_str_to_json_with_resolved_types(conflicting).unwrap();
        assert!(ClaimsShape::from_schema_json(&json)
            .unwrap_err()
            .contains("different types"));
        let nested = r#"
            entity W;
            action read appliesTo { principal: W, resource: W, context: { claims: { a?: { b: String } } } };
        "#;
        let (json, _) = cedar_policy::schema_str_to_json_with_resolved_types(nested).unwrap();
        assert!(ClaimsShape::from_schema_json(&json).is_err());
    }
}

//! The Cedar policy engine: schema, policies and entities, loaded and
//! strictly validated once; one evaluation per request.
//!
//! Each request is evaluated against a small slice of entities (the
//! principal and its groups, the action, the resource and its folders)
//! rather than a copy of the whole store, so the per-request cost does not
//! grow with the number of configured entities.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, Request, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::{json, Map, Value};

use crate::approval::{ApprovalRule, ApprovalRules};
use crate::claims::ClaimsShape;
use crate::classify::{Action, ResourceKind, ResourceRef};
use crate::identity::Principal;
use crate::policy_text::{self, StatementSpans};

/// A configuration problem, located where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The `@id` (or Cedar's positional id) of the offending policy.
    pub policy_id: Option<String>,
    /// 1-based line in the policy text.
    pub line: Option<usize>,
    pub message: String,
}

impl PolicyError {
    fn general(message: impl Into<String>) -> Self {
        PolicyError {
            policy_id: None,
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.policy_id, self.line) {
            (Some(id), Some(line)) => write!(f, "policy {id:?} (line {line}): {}", self.message),
            (Some(id), None) => write!(f, "policy {id:?}: {}", self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Everything about the request that policies can see.
#[derive(Debug, Clone)]
pub struct AccessRequest<'a> {
    pub principal: &'a Principal,
    pub action: Action,
    pub resource: &'a ResourceRef,
    pub method: &'a str,
    pub source_ip: &'a str,
    pub now_secs: i64,
    pub namespace: &'a str,
    /// `context.recent_reads`, supplied only when the schema declares it.
    pub recent_reads: Option<i64>,
}

/// The outcome of one evaluation. `allowed` is true only for an explicit
/// permit with no forbid and no error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub allowed: bool,
    /// Policies that determined the decision (permits if allowed, forbids if
    /// a forbid applied).
    pub policies: Vec<String>,
    /// Anything that went wrong; any error makes the decision a deny.
    pub errors: Vec<String>,
}

impl Evaluation {
    fn failed(error: String) -> Self {
        Evaluation {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error],
        }
    }
}

pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    entities: Entities,
    claims_shape: ClaimsShape,
    principal_type: EntityTypeName,
    actions: HashMap<Action, EntityUid>,
    resource_types: HashMap<ResourceKind, EntityTypeName>,
    authorizer: Authorizer,
    approvals: ApprovalRules,
    /// The schema declares `context.recent_reads`: the filter counts reads.
    recent_reads: bool,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.policies.policies().count())
            .field("entities", &self.entities.len())
            .finish_non_exhaustive()
    }
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name)
        .map_err(|e| PolicyError::general(format!("invalid entity type {name:?}: {e}")))
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

/// Byte offset of a diagnostic's first label, if Cedar gave one.
fn first_offset(diagnostic: &dyn Diagnostic) -> Option<usize> {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
}

impl PolicyEngine {
    /// Parses and strictly validates a configuration. `entities` is Cedar's
    /// entities JSON; resource-type entities there may carry attributes and
    /// get their folder parents added.
    pub fn load(
        schema_src: &str,
        policies_src: &str,
        entities: &Value,
        principal_type: &str,
    ) -> Result<PolicyEngine, PolicyError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema_src)
            .map_err(|e| PolicyError::general(format!("schema: {e}")))?;
        let (schema_json, _) = cedar_policy::schema_str_to_json_with_resolved_types(schema_src)
            .map_err(|e| PolicyError::general(format!("schema: {e}")))?;
        let claims_shape = ClaimsShape::from_schema_json(&schema_json)
            .map_err(|e| PolicyError::general(format!("schema: {e}")))?;

        let principal_type = type_name(principal_type)?;
        let mut resource_types = HashMap::new();
        for kind in [
            ResourceKind::Secret,
            ResourceKind::Path,
            ResourceKind::Endpoint,
        ] {
            resource_types.insert(kind, type_name(kind.type_name())?);
        }
        let declared: HashSet<&EntityTypeName> = schema.entity_types().collect();
        for required in resource_types.values().chain([&principal_type]) {
            if !declared.contains(required) {
                return Err(PolicyError::general(format!(
                    "schema: entity type {required} is not declared"
                )));
            }
        }
        let action_type = type_name("Action")?;
        let mut actions = HashMap::new();
        let declared_actions: HashSet<&EntityUid> = schema.actions().collect();
        for action in Action::ALL {
            let action_uid = uid(&action_type, action.as_str());
            if !declared_actions.contains(&action_uid) {
                return Err(PolicyError::general(format!(
                    "schema: action {action_uid} is not declared"
                )));
            }
            actions.insert(action, action_uid);
        }

        let (policies, approvals) = parse_policies(policies_src)?;
        validate_policies(&schema, &policies, policies_src)?;
        let entities = load_entities(entities, &schema, &resource_types)?;

        let mut engine = PolicyEngine {
            schema,
            policies,
            entities,
            claims_shape,
            principal_type,
            actions,
            resource_types,
            authorizer: Authorizer::new(),
            approvals,
            recent_reads: false,
        };
        engine.recent_reads = engine.declares_recent_reads();
        engine.check_request_shape()?;
        Ok(engine)
    }

    pub fn claims_shape(&self) -> &ClaimsShape {
        &self.claims_shape
    }

    /// Which permits require a human's approval.
    pub fn approvals(&self) -> &ApprovalRules {
        &self.approvals
    }

    /// Whether requests carry `context.recent_reads` (the schema declares it).
    pub fn uses_recent_reads(&self) -> bool {
        self.recent_reads
    }

    /// A schema either declares `recent_reads` in every action's context or
    /// in none; `check_request_shape` then holds it to that.
    fn declares_recent_reads(&self) -> bool {
        let principal = Principal {
            entity_type: self.principal_type.to_string(),
            id: "schema-check".into(),
            claims: Map::new(),
        };
        let resource = ResourceRef {
            kind: ResourceKind::Secret,
            id: "schema-check".into(),
        };
        self.cedar_request(&AccessRequest {
            principal: &principal,
            action: Action::Read,
            resource: &resource,
            method: "GET",
            source_ip: "127.0.0.1",
            now_secs: 0,
            namespace: "",
            recent_reads: Some(0),
        })
        .is_ok()
    }

    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// Every action must accept the requests the filter builds, or every
    /// request would fail at run time; find that out at load time instead.
    fn check_request_shape(&self) -> Result<(), PolicyError> {
        let principal = Principal {
            entity_type: self.principal_type.to_string(),
            id: "schema-check".into(),
            claims: Map::new(),
        };
        for action in Action::ALL {
            for kind in [
                ResourceKind::Secret,
                ResourceKind::Path,
                ResourceKind::Endpoint,
            ] {
                let resource = ResourceRef {
                    kind,
                    id: "schema-check".into(),
                };
                let request = AccessRequest {
                    principal: &principal,
                    action,
                    resource: &resource,
                    method: "GET",
                    source_ip: "127.0.0.1",
                    now_secs: 0,
                    namespace: "",
                    recent_reads: self.recent_reads.then_some(0),
                };
                self.cedar_request(&request).map_err(|e| {
                    PolicyError::general(format!(
                        "schema does not accept Secretgate's {} request on {}: {e}",
                        action.as_str(),
                        kind.type_name()
                    ))
                })?;
            }
        }
        Ok(())
    }

    fn cedar_request(&self, request: &AccessRequest<'_>) -> Result<Request, String> {
        let principal = uid(&self.principal_type, &request.principal.id);
        let action = self
            .actions
            .get(&request.action)
            .ok_or("action missing from schema")?
            .clone();
        let resource_type = self
            .resource_types
            .get(&request.resource.kind)
            .ok_or("resource type missing from schema")?;
        let resource = uid(resource_type, &request.resource.id);
        let mut context_json = json!({
            "method": request.method,
            "claims": Value::Object(request.principal.claims.clone()),
            "source_ip": {"__extn": {"fn": "ip", "arg": request.source_ip}},
            "now": request.now_secs,
            "namespace": request.namespace,
        });
        if let (Some(reads), Some(fields)) = (request.recent_reads, context_json.as_object_mut()) {
            fields.insert("recent_reads".into(), json!(reads));
        }
        let context = Context::from_json_value(context_json, Some((&self.schema, &action)))
            .map_err(|e| format!("context: {e}"))?;
        Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|e| format!("request: {e}"))
    }

    /// The entities this request can reach: principal and its ancestors,
    /// action and its groups, resource and its folders.
    fn entity_slice(&self, request: &AccessRequest<'_>) -> Result<Entities, String> {
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let mut slice: Vec<Entity> = Vec::new();
        let mut take = |uid: &EntityUid, fallback_parent: Option<EntityUid>| {
            if !seen.insert(uid.clone()) {
                return;
            }
            let entity = match self.entities.get(uid) {
                Some(stored) => stored.clone(),
                None => Entity::new_no_attrs(uid.clone(), fallback_parent.into_iter().collect()),
            };
            slice.push(entity);
        };

        let principal = uid(&self.principal_type, &request.principal.id);
        take(&principal, None);
        for ancestor in self.entities.ancestors(&principal).into_iter().flatten() {
            take(ancestor, None);
        }
        if let Some(action) = self.actions.get(&request.action) {
            take(action, None);
            for ancestor in self.entities.ancestors(action).into_iter().flatten() {
                take(ancestor, None);
            }
        }
        let folder_type = self
            .resource_types
            .get(&ResourceKind::Path)
            .ok_or("Path type missing")?;
        let resource_type = self
            .resource_types
            .get(&request.resource.kind)
            .ok_or("resource type missing")?;
        let mut current = uid(resource_type, &request.resource.id);
        for folder in request.resource.ancestors() {
            let parent = uid(folder_type, folder);
            take(&current, Some(parent.clone()));
            current = parent;
        }
        take(&current, None);
        Entities::from_entities(slice, None).map_err(|e| format!("entities: {e}"))
    }

    pub fn evaluate(&self, request: &AccessRequest<'_>) -> Evaluation {
        let cedar_request = match self.cedar_request(request) {
            Ok(r) => r,
            Err(e) => return Evaluation::failed(e),
        };
        let entities = match self.entity_slice(request) {
            Ok(e) => e,
            Err(e) => return Evaluation::failed(e),
        };
        let response = self
            .authorizer
            .is_authorized(&cedar_request, &self.policies, &entities);
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        policies.sort();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        Evaluation {
            allowed: response.decision() == Decision::Allow && errors.is_empty(),
            policies,
            errors,
        }
    }
}

/// Parses the policy text, giving each policy its `@id` annotation as id.
fn parse_policies(src: &str) -> Result<(PolicySet, ApprovalRules), PolicyError> {
    let spans = StatementSpans::scan(src);
    policy_text::check_limits(src, &spans)?;
    let parsed = PolicySet::from_str(src).map_err(|e| {
        let offset = first_offset(&e);
        PolicyError {
            policy_id: offset.and_then(|o| spans.policy_id_at(src, o)),
            line: offset.map(|o| policy_text::line_of(src, o)),
            message: e.to_string(),
        }
    })?;
    if parsed.templates().next().is_some() {
        return Err(PolicyError::general(
            "policy templates are not supported; write concrete policies",
        ));
    }
    let mut renamed = PolicySet::new();
    let mut approvals = ApprovalRules::default();
    let mut ids: HashSet<String> = HashSet::new();
    for policy in parsed.policies() {
        let id = policy
            .annotation("id")
            .map_or_else(|| policy.id().to_string(), str::to_owned);
        if !ids.insert(id.clone()) {
            return Err(PolicyError {
                policy_id: Some(id),
                line: None,
                message: "duplicate @id".into(),
            });
        }
        let is_permit = policy.effect() == Effect::Permit;
        let rule = ApprovalRule::from_annotations(
            |key| policy.annotation(key).map(str::to_owned),
            is_permit,
        )
        .map_err(|message| PolicyError {
            policy_id: Some(id.clone()),
            line: None,
            message,
        })?;
        if let Some(rule) = rule {
            approvals.insert(id.clone(), rule);
        }
        let policy: Policy = policy.new_id(PolicyId::new(&id));
        renamed.add(policy).map_err(|e| PolicyError {
            policy_id: Some(id.clone()),
            line: None,
            message: e.to_string(),
        })?;
    }
    Ok((renamed, approvals))
}

fn validate_policies(schema: &Schema, policies: &PolicySet, src: &str) -> Result<(), PolicyError> {
    let validator = Validator::new(schema.clone());
    let result = validator.validate(policies, ValidationMode::Strict);
    let first_error = result.validation_errors().next().map(|error| PolicyError {
        policy_id: Some(error.policy_id().to_string()),
        line: first_offset(error).map(|o| policy_text::line_of(src, o)),
        message: error.to_string(),
    });
    first_error.map_or(Ok(()), Err)
}

/// Loads configured entities against the schema. Secret/Path/Endpoint
/// entities get their folder parents, so attributes declared on a folder
/// are seen by every request under it.
fn load_entities(
    entities: &Value,
    schema: &Schema,
    resource_types: &HashMap<ResourceKind, EntityTypeName>,
) -> Result<Entities, PolicyError> {
    let loaded = Entities::from_json_value(entities.clone(), Some(schema))
        .map_err(|e| PolicyError::general(format!("entities: {e}")))?;
    let folder_type = resource_types
        .get(&ResourceKind::Path)
        .ok_or_else(|| PolicyError::general("Path type missing"))?;
    let resource_type_set: HashSet<&EntityTypeName> = resource_types.values().collect();
    let mut rebuilt = Vec::with_capacity(loaded.len());
    for entity in loaded.iter() {
        let entity_uid = entity.uid();
        if !resource_type_set.contains(entity_uid.type_name()) {
            rebuilt.push(entity.clone());
            continue;
        }
        let (entity_uid, attrs, mut parents) = entity.clone().into_inner();
        let id = entity_uid.id().unescaped().to_owned();
        if let Some((folder, _)) = id.rsplit_once('/') {
            parents.insert(uid(folder_type, folder));
        }
        let entity = Entity::new(entity_uid, attrs, parents)
            .map_err(|e| PolicyError::general(format!("entities: {e}")))?;
        rebuilt.push(entity);
    }
    Entities::from_entities(rebuilt, Some(schema))
        .map_err(|e| PolicyError::general(format!("entities: {e}")))
}

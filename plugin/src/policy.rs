//! The Cedar policy engine: schema, policies and entities, loaded and
//! strictly validated once; one evaluation per request.
//!
//! Each request is evaluated against a small slice of entities (the
//! principal and its groups, the action, the resource and its folders)
//! rather than a copy of the whole store, so the per-request cost does not
//! grow with the number of configured entities.
//!
//! Nor with the number of policies: Cedar's authorizer evaluates every policy
//! it is given, so policies are indexed by the entity their resource scope
//! names (`resource in Path::"a/b"`, `resource == Secret::"a/b/c"`) and a
//! request is evaluated only against the buckets of its resource and the
//! resource's ancestors, plus the policies with no resource entity in scope.
//! A policy in any other bucket has a scope that is false for the request,
//! so Cedar would find it not satisfied, without error; the decision is a
//! function of the satisfied permits and forbids, so combining the buckets'
//! answers gives exactly the decision over the whole set (see `evaluate`).
//!
//! Cedar computes the transitive closure of the entities it is given, so
//! building a slice costs about half a decision. A slice, and so the union
//! of the buckets its resource can match, is a function of the principal,
//! the action and the resource alone (never of the claims or the rest of
//! the context), so both are memoised per loaded configuration and a
//! request makes one call to Cedar; so is the `ip` value of a source
//! address, whose constructor parses the extension's name each time.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    EvalResult, Policy, PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::{json, Map, Value};

use crate::approval::{ApprovalRule, ApprovalRules};
use crate::claims::{self, ClaimType, ClaimsShape};
use crate::classify::{Action, ResourceKind, ResourceRef};
use crate::identity::{Principal, ANONYMOUS_TYPE};
use crate::memo::Memo;
use crate::policy_shape;
pub use crate::policy_text::PolicyError;
use crate::policy_text::{self, StatementSpans};
use crate::reads::ContextReads;
use crate::templates::{Capture, TemplateTable};

/// How many request scopes and source addresses a loaded configuration
/// keeps: a few hundred KiB at most.
const MEMO_CAPACITY: usize = 1024;

/// How many whole decisions a loaded configuration keeps (each a few
/// hundred bytes); the memo empties itself when full.
const DECISION_MEMO_CAPACITY: usize = 4096;

/// What a request's [`Scope`] is a function of: whether the principal is
/// anonymous, principal id, action, resource.
type ScopeKey = (bool, String, Action, ResourceKind, String);

fn scope_key(request: &AccessRequest<'_>) -> ScopeKey {
    (
        request.principal.is_anonymous(),
        request.principal.id.clone(),
        request.action,
        request.resource.kind,
        request.resource.id.clone(),
    )
}

/// The key of a whole decision: everything it is a function of. Cedar
/// decides over the principal, action and resource (with the entities,
/// fixed per loaded configuration), and the context; of the context, only
/// the attributes `reads` names can change what the scope's policies do
/// (`now` and `recent_reads` never get here, see [`Scope`]). Request
/// validation depends on the context's shape, so [`request_shape`] is part
/// of the key too. Every part is length-prefixed, so no value can imitate
/// another's.
fn decision_key(request: &AccessRequest<'_>, reads: &ContextReads, omit: Option<&str>) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(128);
    let mut part = |label: &str, value: &str| {
        if omit != Some(label) {
            let _ = write!(key, "{}:{label}={};", value.len(), value);
        }
    };
    let (anonymous, principal, action, kind, resource) = scope_key(request);
    part("principal", &format!("{}{principal}", u8::from(anonymous)));
    part("action", action.as_str());
    part("resource", &format!("{}{resource}", kind.type_name()));
    part("shape", &request_shape(request));
    for (attribute, value) in [
        ("method", request.method),
        ("source_ip", request.source_ip),
        ("namespace", request.namespace),
    ] {
        if reads.reads_attribute(attribute) {
            part(attribute, value);
        }
    }
    for (name, value) in &request.principal.claims {
        if reads.reads_claim(name) {
            part(&format!("claims.{name}"), &value.to_string());
        }
    }
    key
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

/// How one policy whose scope (principal, action, resource) matches a
/// request fares on it: what `secretgate explain` reports besides the
/// decision (see [`PolicyEngine::explain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCheck {
    pub id: String,
    /// A permit, or else a forbid.
    pub permit: bool,
    /// The filter evaluates it for this request. False only for a permit
    /// that does not name `Unauthenticated`, when the caller has no identity.
    pub evaluated: bool,
    /// The policy evaluated alone, conditions included, over the request
    /// and entities the filter evaluates.
    pub alone: Evaluation,
}

/// One request as the filter evaluates it, in plain data: the decision and
/// everything that went into it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationTrace {
    /// Exactly what [`PolicyEngine::evaluate`] decides.
    pub evaluation: Evaluation,
    /// The Cedar context as built, in Cedar's JSON form (`__extn` for the
    /// source address), or why it could not be built.
    pub context: Result<Value, String>,
    /// What the path templates capture for the resource.
    pub captures: Vec<Capture>,
    /// The resource and its `Path` folders (nearest first), each with the
    /// names of the captures it carries as attributes.
    pub attributed: Vec<(ResourceRef, Vec<String>)>,
    /// The caller has no identity and the schema does not accept
    /// `Unauthenticated` for the action: denied without evaluating anything.
    pub anonymous_refused: bool,
    /// Every policy of the set whose scope matches the request (empty when
    /// the request could not be evaluated at all).
    pub policies: Vec<PolicyCheck>,
}

/// The policy set split by resource scope (see the module documentation).
/// Buckets are plain lists: each policy shares its parsed form with the
/// engine's policy set, and a Cedar `PolicySet` per bucket (five maps each,
/// thousands of buckets) would cost more than the policies themselves.
struct ScopeIndex {
    /// Policies whose resource scope names an entity (`in`, `==`, `is .. in`), by that entity.
    by_resource: HashMap<EntityUid, Vec<Policy>>,
    /// Policies whose resource scope names no entity (`resource`, `resource is T`).
    unscoped: Vec<Policy>,
}

impl ScopeIndex {
    fn build<'a>(policies: impl Iterator<Item = &'a Policy>) -> ScopeIndex {
        let mut by_resource: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        let mut unscoped = Vec::new();
        for policy in policies {
            let bucket = match policy.resource_constraint() {
                ResourceConstraint::In(entity)
                | ResourceConstraint::Eq(entity)
                | ResourceConstraint::IsIn(_, entity) => by_resource.entry(entity).or_default(),
                ResourceConstraint::Any | ResourceConstraint::Is(_) => &mut unscoped,
            };
            bucket.push(policy.clone());
        }
        by_resource.values_mut().for_each(Vec::shrink_to_fit);
        unscoped.shrink_to_fit();
        by_resource.shrink_to_fit();
        ScopeIndex {
            by_resource,
            unscoped,
        }
    }

    /// The policies of every bucket that can hold a policy whose scope
    /// matches `resource`, whose ancestors (as Cedar will see them) are
    /// those in `entities`. Each policy is in exactly one bucket.
    fn union_for(&self, resource: &EntityUid, entities: &Entities) -> Result<PolicySet, String> {
        let mut union = PolicySet::new();
        let ancestors = entities.ancestors(resource).into_iter().flatten();
        let buckets = std::iter::once(resource)
            .chain(ancestors)
            .filter_map(|entity| self.by_resource.get(entity));
        for bucket in std::iter::once(&self.unscoped).chain(buckets) {
            for policy in bucket {
                union
                    .add(policy.clone())
                    .map_err(|e| format!("policies: {e}"))?;
            }
        }
        Ok(union)
    }
}

/// What one request is evaluated over: the entities it can reach and the
/// policies whose resource scope can match it.
struct Scope {
    entities: Entities,
    policies: PolicySet,
    /// What the scope's policies read of the context, when a decision over
    /// the scope is a function of exactly that (see [`decision_key`]);
    /// `None` when they read `now`, `recent_reads` or the whole context,
    /// which change from request to request: those are evaluated every time.
    memo_reads: Option<ContextReads>,
}

/// How requests without identity (`Unauthenticated::"anonymous"`) are
/// evaluated, when the schema declares the type. Such a request is
/// evaluated only against the permits whose principal scope names
/// `Unauthenticated` (`principal is Unauthenticated`,
/// `principal == Unauthenticated::"anonymous"`, ...) and against every
/// forbid: a permit written for any principal (`permit (principal, ...)`)
/// never admits a caller without identity, while a forbid still applies.
struct AnonymousScope {
    principal_type: EntityTypeName,
    index: ScopeIndex,
    /// Actions whose `appliesTo` accepts `Unauthenticated` as principal;
    /// an anonymous request for any other action is denied without Cedar.
    actions: HashSet<Action>,
}

/// Whether a policy's principal scope names the type of callers without
/// identity: only such a permit can admit one.
fn names_anonymous(policy: &Policy) -> bool {
    let is_anonymous = |name: &EntityTypeName| name.to_string() == ANONYMOUS_TYPE;
    match policy.principal_constraint() {
        PrincipalConstraint::Any => false,
        PrincipalConstraint::In(entity) | PrincipalConstraint::Eq(entity) => {
            is_anonymous(entity.type_name())
        }
        PrincipalConstraint::Is(name) | PrincipalConstraint::IsIn(name, _) => is_anonymous(&name),
    }
}

pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    index: ScopeIndex,
    anonymous: Option<AnonymousScope>,
    entities: Entities,
    claims_shape: ClaimsShape,
    principal_type: EntityTypeName,
    actions: HashMap<Action, EntityUid>,
    resource_types: HashMap<ResourceKind, EntityTypeName>,
    authorizer: Authorizer,
    approvals: ApprovalRules,
    /// Attributes resources get from their paths.
    templates: TemplateTable,
    /// The schema declares `context.recent_reads`: the filter counts reads.
    recent_reads: bool,
    scopes: Memo<ScopeKey, Arc<Scope>>,
    /// Whole outcomes by [`decision_key`].
    decisions: Memo<String, Evaluation>,
    /// Test hook: an attribute [`decision_key`] leaves out, so the
    /// differential test can show it would catch the omission.
    memo_key_omits: Option<&'static str>,
    source_ips: Memo<String, RestrictedExpression>,
    /// Request shapes (see [`request_shape`]) Cedar has validated against
    /// the schema; `None` when the schema has enumerated entity types, whose
    /// validity depends on entity ids, not on the shape.
    valid_shapes: Option<Memo<String, ()>>,
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
    /// Parses and strictly validates a configuration. `entities_json` is Cedar's
    /// entities JSON; resource-type entities there may carry attributes and
    /// get their folder parents added. `templates` give resources attributes
    /// from their paths; the schema must declare each, and `entities` may not
    /// also set one.
    pub fn load(
        schema_src: &str,
        policies_src: &str,
        entities_json: &str,
        principal_type: &str,
        templates: &TemplateTable,
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
            if declared_actions.contains(&action_uid) {
                actions.insert(action, action_uid);
            } else if action.required_in_schema() {
                return Err(PolicyError::general(format!(
                    "schema: action {action_uid} is not declared"
                )));
            }
        }

        check_template_attributes(&schema_json, templates)?;
        let (policies, approvals) = parse_policies(policies_src)?;
        let enumerated = declares_enumerated_types(&schema_json);
        validate_policies(&schema, &policies, policies_src, enumerated)?;
        let entities = load_entities(entities_json, &schema, &resource_types, templates)?;
        let index = ScopeIndex::build(policies.policies());
        let anonymous = match type_name(ANONYMOUS_TYPE) {
            Ok(anonymous_type) if declared.contains(&anonymous_type) => {
                let admitted = policies
                    .policies()
                    .filter(|policy| policy.effect() == Effect::Forbid || names_anonymous(policy));
                let accepting = actions
                    .iter()
                    .filter(|(_, action_uid)| {
                        schema
                            .principals_for_action(action_uid)
                            .into_iter()
                            .flatten()
                            .any(|principal| principal == &anonymous_type)
                    })
                    .map(|(action, _)| *action)
                    .collect();
                Some(AnonymousScope {
                    index: ScopeIndex::build(admitted),
                    principal_type: anonymous_type,
                    actions: accepting,
                })
            }
            _ => None,
        };

        let mut engine = PolicyEngine {
            schema,
            policies,
            index,
            anonymous,
            entities,
            claims_shape,
            principal_type,
            actions,
            resource_types,
            authorizer: Authorizer::new(),
            approvals,
            templates: templates.clone(),
            recent_reads: false,
            scopes: Memo::new(MEMO_CAPACITY),
            decisions: Memo::new(DECISION_MEMO_CAPACITY),
            memo_key_omits: None,
            source_ips: Memo::new(MEMO_CAPACITY),
            valid_shapes: (!enumerated).then(|| Memo::new(MEMO_CAPACITY)),
        };
        engine.recent_reads = engine.declares_recent_reads();
        engine.check_request_shape()?;
        Ok(engine)
    }

    pub fn claims_shape(&self) -> &ClaimsShape {
        &self.claims_shape
    }

    /// Whether the schema declares `Unauthenticated`, so requests without
    /// identity can be evaluated (`identity.anonymous` requires it).
    pub fn admits_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    /// The Cedar entity of a request's principal: the configured type, or
    /// `Unauthenticated` for a caller without identity.
    fn principal_uid(&self, principal: &Principal) -> Result<EntityUid, String> {
        if !principal.is_anonymous() {
            return Ok(uid(&self.principal_type, &principal.id));
        }
        self.anonymous
            .as_ref()
            .map(|anonymous| uid(&anonymous.principal_type, &principal.id))
            .ok_or_else(|| format!("the schema does not declare entity type {ANONYMOUS_TYPE}"))
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

    /// What the policies read of the request context (see [`ContextReads`]).
    pub fn context_reads(&self) -> Result<ContextReads, String> {
        ContextReads::of(self.policies.policies())
    }

    /// Test hook: make [`decision_key`] leave `attribute` out (`method`,
    /// `source_ip`, `namespace`, `shape`, `claims.<name>`). Only the
    /// differential test calls it, to prove it would catch the omission.
    #[doc(hidden)]
    pub fn omit_from_decision_key(&mut self, attribute: &'static str) {
        self.memo_key_omits = Some(attribute);
    }

    /// How many whole decisions the memo holds.
    #[doc(hidden)]
    pub fn memoised_decisions(&self) -> usize {
        self.decisions.len()
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
        for action in Action::ALL
            .into_iter()
            .filter(|action| self.actions.contains_key(action))
        {
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
        let principal = self.principal_uid(request.principal)?;
        let action = self
            .actions
            .get(&request.action)
            .ok_or_else(|| {
                format!(
                    "the schema does not declare action {:?}",
                    request.action.as_str()
                )
            })?
            .clone();
        let resource_type = self
            .resource_types
            .get(&request.resource.kind)
            .ok_or("resource type missing from schema")?;
        let resource = uid(resource_type, &request.resource.id);
        // Fast path: the context built as Cedar values, checked against the
        // schema by Request::new once per request shape. Parsing it from
        // JSON (below) cost 40% of a decision, mostly in serde errors from
        // Cedar's untagged value parser. Any failure takes the JSON path, so
        // errors read as before.
        let source_ip = self
            .source_ips
            .get_or_insert(request.source_ip.to_owned(), || {
                RestrictedExpression::new_ip(request.source_ip)
            });
        if let Some(context) = direct_context(request, source_ip) {
            let built = self.request_of_shape(
                request,
                principal.clone(),
                action.clone(),
                resource.clone(),
                context,
            );
            if let Some(request) = built {
                return Ok(request);
            }
        }
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

    /// A request over a context the filter built, validated against the
    /// schema unless Cedar already validated one of the same shape.
    fn request_of_shape(
        &self,
        facts: &AccessRequest<'_>,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Context,
    ) -> Option<Request> {
        let Some(valid_shapes) = &self.valid_shapes else {
            return Request::new(principal, action, resource, context, Some(&self.schema)).ok();
        };
        let mut validated = None;
        let shape_is_valid = valid_shapes.get_or_try_insert(request_shape(facts), || {
            let request = Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context.clone(),
                Some(&self.schema),
            )
            .map_err(|_| ())?;
            validated = Some(request);
            Ok(())
        });
        match (shape_is_valid, validated) {
            (Err(()), _) => None,
            (Ok(()), Some(request)) => Some(request),
            // Validating again (18% of a decision) cannot change the outcome.
            (Ok(()), None) => Request::new(principal, action, resource, context, None).ok(),
        }
    }

    /// The entities this request can reach: principal and its ancestors,
    /// action and its groups, resource and its folders.
    fn entity_slice(&self, request: &AccessRequest<'_>) -> Result<Entities, String> {
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let mut slice: Vec<Entity> = Vec::new();
        let captures = self.templates.captures(request.resource);
        let mut take = |uid: &EntityUid,
                        fallback_parent: Option<EntityUid>|
         -> Result<(), String> {
            if !seen.insert(uid.clone()) {
                return Ok(());
            }
            let entity = match self.entities.get(uid) {
                Some(stored) => stored.clone(),
                None => Entity::new_no_attrs(uid.clone(), fallback_parent.into_iter().collect()),
            };
            let is_resource = self.resource_types.values().any(|t| t == uid.type_name());
            let captured: Vec<&Capture> = if is_resource {
                let id = uid.id().unescaped();
                self.templates.attributes_of(&captures, id).collect()
            } else {
                Vec::new()
            };
            slice.push(with_captures(entity, &captured)?);
            Ok(())
        };

        let principal = self.principal_uid(request.principal)?;
        take(&principal, None)?;
        for ancestor in self.entities.ancestors(&principal).into_iter().flatten() {
            take(ancestor, None)?;
        }
        if let Some(action) = self.actions.get(&request.action) {
            take(action, None)?;
            for ancestor in self.entities.ancestors(action).into_iter().flatten() {
                take(ancestor, None)?;
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
            take(&current, Some(parent.clone()))?;
            current = parent;
        }
        take(&current, None)?;
        Entities::from_entities(slice, None).map_err(|e| format!("entities: {e}"))
    }

    /// What a request is evaluated over, built once per principal, action
    /// and resource (see the module documentation).
    fn scope(&self, request: &AccessRequest<'_>) -> Result<Arc<Scope>, String> {
        let entities = self.entity_slice(request)?;
        let resource_type = self
            .resource_types
            .get(&request.resource.kind)
            .ok_or("resource type missing")?;
        let resource = uid(resource_type, &request.resource.id);
        let index = if request.principal.is_anonymous() {
            &self
                .anonymous
                .as_ref()
                .ok_or_else(|| format!("the schema does not declare entity type {ANONYMOUS_TYPE}"))?
                .index
        } else {
            &self.index
        };
        let policies = index.union_for(&resource, &entities)?;
        let memo_reads = ContextReads::of(policies.policies()).ok().filter(|reads| {
            !reads.whole_context
                && !reads.reads_attribute("now")
                && !reads.reads_attribute("recent_reads")
        });
        Ok(Arc::new(Scope {
            entities,
            policies,
            memo_reads,
        }))
    }

    pub fn evaluate(&self, request: &AccessRequest<'_>) -> Evaluation {
        self.evaluate_with(request, true)
    }

    /// [`PolicyEngine::evaluate`] without the decision memo: what the memo
    /// must agree with (the differential test compares the two).
    pub fn evaluate_every_time(&self, request: &AccessRequest<'_>) -> Evaluation {
        self.evaluate_with(request, false)
    }

    fn evaluate_with(&self, request: &AccessRequest<'_>, memo: bool) -> Evaluation {
        if request.principal.is_anonymous()
            && !self
                .anonymous
                .as_ref()
                .is_some_and(|scope| scope.actions.contains(&request.action))
        {
            // The schema does not let this action have a caller without
            // identity: nothing could permit it.
            return Evaluation {
                allowed: false,
                policies: Vec::new(),
                errors: Vec::new(),
            };
        }
        if memo {
            if let Some(evaluation) = self.memoised(request) {
                return evaluation;
            }
        }
        self.evaluate_now(request)
    }

    /// The decision memo: the whole outcome of a request whose scope reads
    /// only attributes that [`decision_key`] names, kept under that key.
    /// `None` when the request cannot use it; the caller then evaluates.
    fn memoised(&self, request: &AccessRequest<'_>) -> Option<Evaluation> {
        let scope = self
            .scopes
            .get_or_try_insert(scope_key(request), || self.scope(request))
            .ok()?;
        let reads = scope.memo_reads.as_ref()?;
        let key = decision_key(request, reads, self.memo_key_omits);
        Some(
            self.decisions
                .get_or_insert(key, || self.evaluate_now(request)),
        )
    }

    /// One evaluation by Cedar: the request, its scope's entities and
    /// policies (the scope itself memoised).
    fn evaluate_now(&self, request: &AccessRequest<'_>) -> Evaluation {
        let cedar_request = match self.cedar_request(request) {
            Ok(r) => r,
            Err(e) => return Evaluation::failed(e),
        };
        let scope = match self
            .scopes
            .get_or_try_insert(scope_key(request), || self.scope(request))
        {
            Ok(scope) => scope,
            Err(e) => return Evaluation::failed(e),
        };
        // Cedar over the union of the buckets the resource can match decides
        // as over the whole set (module documentation).
        self.authorize(&cedar_request, &scope.policies, &scope.entities)
    }

    /// The evaluation of one request, explained: the decision
    /// [`evaluate`](Self::evaluate) makes, the context and entities it is
    /// made over, and for every policy of the set whose scope matches the
    /// request how it fared alone. Scope is decided by Cedar itself: a
    /// policy matches when Cedar satisfies a copy of it without conditions.
    /// For the operator tools; it costs a Cedar call per policy.
    pub fn explain(&self, request: &AccessRequest<'_>) -> EvaluationTrace {
        let evaluation = self.evaluate(request);
        let captures = self.templates.captures(request.resource);
        let folders = request.resource.ancestors().map(|id| ResourceRef {
            kind: ResourceKind::Path,
            id: id.to_owned(),
        });
        let attributed = std::iter::once(request.resource.clone())
            .chain(folders)
            .filter_map(|entity| {
                let names: Vec<String> = self
                    .templates
                    .attributes_of(&captures, &entity.id)
                    .map(|capture| capture.name.clone())
                    .collect();
                (!names.is_empty()).then_some((entity, names))
            })
            .collect();
        let anonymous_refused = request.principal.is_anonymous()
            && !self
                .anonymous
                .as_ref()
                .is_some_and(|scope| scope.actions.contains(&request.action));
        let mut trace = EvaluationTrace {
            evaluation,
            context: Err(String::new()),
            captures,
            attributed,
            anonymous_refused,
            policies: Vec::new(),
        };
        let cedar_request = match self.cedar_request(request) {
            Ok(built) => built,
            Err(e) => {
                trace.context = Err(e);
                return trace;
            }
        };
        trace.context = cedar_request
            .context()
            .map(context_json)
            .ok_or_else(|| "no context".to_owned());
        if anonymous_refused {
            return trace;
        }
        // A scope that cannot be built failed the evaluation too: the
        // error is in `evaluation.errors`.
        let Ok(scope) = self.scope(request) else {
            return trace;
        };
        for policy in self.policies.policies() {
            let id = policy.id().to_string();
            let alone = match without_conditions(policy) {
                Some(bare) => {
                    let scope_matches = self
                        .authorize_alone(&cedar_request, bare, &scope.entities)
                        .policies
                        .contains(&id);
                    if !scope_matches {
                        continue;
                    }
                    self.authorize_alone(&cedar_request, policy.clone(), &scope.entities)
                }
                // Never for a policy Cedar parsed; listed rather than hidden.
                None => Evaluation::failed(
                    "cannot separate the policy's scope from its conditions".into(),
                ),
            };
            trace.policies.push(PolicyCheck {
                permit: policy.effect() == Effect::Permit,
                evaluated: scope.policies.policy(policy.id()).is_some(),
                alone,
                id,
            });
        }
        trace
    }

    /// Cedar over one policy alone.
    fn authorize_alone(
        &self,
        request: &Request,
        policy: Policy,
        entities: &Entities,
    ) -> Evaluation {
        match PolicySet::from_policies([policy]) {
            Ok(set) => self.authorize(request, &set, entities),
            Err(e) => Evaluation::failed(format!("policies: {e}")),
        }
    }

    /// Cedar's decision: deny if any forbid is satisfied (the forbids are
    /// the reason), else allow if any permit is (the permits are), else
    /// deny with no reason; any error denies.
    fn authorize(
        &self,
        request: &Request,
        policies: &PolicySet,
        entities: &Entities,
    ) -> Evaluation {
        let response = self.authorizer.is_authorized(request, policies, entities);
        let reasons = sorted_text(response.diagnostics().reason());
        let errors = sorted_text(response.diagnostics().errors());
        Evaluation {
            allowed: response.decision() == Decision::Allow && errors.is_empty(),
            policies: reasons,
            errors,
        }
    }
}

/// Diagnostics as text, sorted so a decision reads the same however Cedar
/// happened to order them.
fn sorted_text<T: ToString>(items: impl Iterator<Item = T>) -> Vec<String> {
    let mut texts: Vec<String> = items.map(|item| item.to_string()).collect();
    texts.sort();
    texts
}

/// A copy of a policy with its `when`/`unless` conditions removed: its
/// scope alone. `None` if Cedar cannot rebuild it.
fn without_conditions(policy: &Policy) -> Option<Policy> {
    let mut json = policy.to_json().ok()?;
    json.as_object_mut()?
        .insert("conditions".into(), Value::Array(Vec::new()));
    Policy::from_json(Some(policy.id().clone()), json).ok()
}

/// A request context in Cedar's JSON form.
fn context_json(context: &Context) -> Value {
    let names: Vec<String> = context.clone().into_iter().map(|(name, _)| name).collect();
    let fields = names
        .into_iter()
        .filter_map(|name| {
            let value = context.get(&name)?;
            Some((name, cedar_value_json(&value)))
        })
        .collect();
    Value::Object(fields)
}

/// A Cedar value in Cedar's JSON form: `__entity` and `__extn` escapes for
/// entities and extension values (`ip("10.0.0.1")` becomes
/// `{"__extn": {"fn": "ip", "arg": "10.0.0.1"}}`).
fn cedar_value_json(value: &EvalResult) -> Value {
    match value {
        EvalResult::Bool(b) => json!(b),
        EvalResult::Long(n) => json!(n),
        EvalResult::String(s) => json!(s),
        EvalResult::EntityUid(entity) => json!({"__entity": {
            "type": entity.type_name().to_string(),
            "id": entity.id().unescaped(),
        }}),
        EvalResult::Set(items) => Value::Array(items.iter().map(cedar_value_json).collect()),
        EvalResult::Record(record) => Value::Object(
            record
                .iter()
                .map(|(name, value)| (name.clone(), cedar_value_json(value)))
                .collect(),
        ),
        EvalResult::ExtensionValue(text) => {
            let call = text
                .strip_suffix("\")")
                .and_then(|call| call.split_once("(\""));
            match call {
                Some((function, arg)) if !arg.contains(['"', '\\']) => {
                    json!({"__extn": {"fn": function, "arg": arg}})
                }
                _ => json!({ "__extn": text }),
            }
        }
    }
}

/// The request context as Cedar values: the same record the JSON form
/// below yields under the schema. `None` for a claim value outside the
/// shapes `ClaimsShape` produces (string, long, bool, set of strings).
fn direct_context(request: &AccessRequest<'_>, source_ip: RestrictedExpression) -> Option<Context> {
    let claims = request
        .principal
        .claims
        .iter()
        .map(|(name, value)| Some((name.clone(), claim_value(value)?)))
        .collect::<Option<Vec<_>>>()?;
    let recent_reads = request.recent_reads.map(|reads| {
        (
            "recent_reads".to_owned(),
            RestrictedExpression::new_long(reads),
        )
    });
    Context::from_pairs(
        [
            (
                "method".to_owned(),
                RestrictedExpression::new_string(request.method.to_owned()),
            ),
            (
                "claims".to_owned(),
                RestrictedExpression::new_record(claims).ok()?,
            ),
            ("source_ip".to_owned(), source_ip),
            (
                "now".to_owned(),
                RestrictedExpression::new_long(request.now_secs),
            ),
            (
                "namespace".to_owned(),
                RestrictedExpression::new_string(request.namespace.to_owned()),
            ),
        ]
        .into_iter()
        .chain(recent_reads),
    )
    .ok()
}

/// Everything Cedar's request validation looks at in a request the filter
/// builds, except entity ids: the principal type (the configured one, or
/// `Unauthenticated`), the action, the resource type, and each context
/// attribute's name and type. The context never holds entity references, and every
/// value's type follows from how [`direct_context`] builds it. So two
/// requests of one shape are both valid or both invalid, as long as no
/// entity type is enumerated (then ids matter too, and nothing is memoised).
/// A set's emptiness is part of its type here: an empty set passes as a set
/// of anything.
fn request_shape(request: &AccessRequest<'_>) -> String {
    use std::fmt::Write;
    let mut shape = format!(
        "{}|{}|{}|{}|",
        u8::from(request.principal.is_anonymous()),
        request.action.as_str(),
        request.resource.kind.type_name(),
        u8::from(request.recent_reads.is_some()),
    );
    for (name, value) in &request.principal.claims {
        let kind = match value {
            Value::String(_) => "s",
            Value::Bool(_) => "b",
            Value::Number(_) => "l",
            Value::Array(items) if items.is_empty() => "S0",
            Value::Array(_) => "S",
            Value::Null => "n",
            Value::Object(_) => "r",
        };
        // Length-prefixed, so no claim name can imitate another shape.
        let _ = write!(shape, "{}:{name}{kind};", name.len());
    }
    shape
}

/// Whether any entity type in the schema (Cedar's JSON form) is an enum.
fn declares_enumerated_types(schema_json: &Value) -> bool {
    schema_json
        .as_object()
        .into_iter()
        .flatten()
        .any(|(_, namespace)| {
            namespace
                .get("entityTypes")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .any(|(_, entity_type)| entity_type.get("enum").is_some())
        })
}

fn claim_value(value: &Value) -> Option<RestrictedExpression> {
    match value {
        Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(RestrictedExpression::new_set),
        Value::Null | Value::Object(_) => None,
    }
}

/// Parses the policy text, giving each policy its `@id` annotation as id.
fn parse_policies(src: &str) -> Result<(PolicySet, ApprovalRules), PolicyError> {
    let spans = StatementSpans::scan(src);
    policy_text::check_limits(src, &spans)?;
    let parsed = match parse_in_chunks(src, &spans) {
        Some(parsed) => parsed,
        None => parse_whole(src, &spans)?,
    };
    let mut renamed = PolicySet::new();
    let mut approvals = ApprovalRules::default();
    let mut ids: HashSet<String> = HashSet::new();
    for (position, policy) in &parsed {
        // `Policy::annotation` parses its key with Cedar's grammar on every
        // call (a twentieth of a large set's load); the pairs are plain.
        let annotations: Vec<(&str, &str)> = policy.annotations().collect();
        let annotation = |key: &str| {
            annotations
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| *value)
        };
        let id = annotation("id").map_or_else(|| format!("policy{position}"), str::to_owned);
        if !ids.insert(id.clone()) {
            return Err(PolicyError {
                policy_id: Some(id),
                line: None,
                message: "duplicate @id".into(),
            });
        }
        let is_permit = policy.effect() == Effect::Permit;
        let rule =
            ApprovalRule::from_annotations(|key| annotation(key).map(str::to_owned), is_permit)
                .map_err(|message| PolicyError {
                    policy_id: Some(id.clone()),
                    line: None,
                    message,
                })?;
        if let Some(rule) = rule {
            if names_anonymous(policy) {
                return Err(PolicyError {
                    policy_id: Some(id),
                    line: None,
                    message: format!(
                        "@approval on a permit for {ANONYMOUS_TYPE}: a caller without identity cannot be approved"
                    ),
                });
            }
            approvals.insert(id.clone(), rule);
        }
        let policy = policy.new_id(PolicyId::new(&id));
        renamed.add(policy).map_err(|e| PolicyError {
            policy_id: Some(id.clone()),
            line: None,
            message: e.to_string(),
        })?;
    }
    Ok((renamed, approvals))
}

/// Statements parsed per call to Cedar's parser (see [`parse_in_chunks`]).
const STATEMENTS_PER_PARSE: usize = 256;

/// The policies, a run of statements at a time, each with its position in
/// the text. Cedar's syntax tree of a whole text is far larger than the
/// policies it yields (about 140 MiB natively for 10,000 generated
/// policies, against 37 MiB), and a Wasm VM's memory never shrinks, so
/// only one run's tree is alive at a time. `None` when a run fails to
/// parse, holds a template, or does not hold exactly one policy per
/// statement: then [`parse_whole`] parses the text as one, which reports
/// any error with its position.
fn parse_in_chunks(src: &str, spans: &StatementSpans) -> Option<Vec<(usize, Policy)>> {
    let mut parsed = Vec::new();
    for (text, statements) in spans.chunks(src, STATEMENTS_PER_PARSE) {
        let run = PolicySet::from_str(text).ok()?;
        if run.templates().next().is_some() || run.policies().count() != statements {
            return None;
        }
        parsed.extend(positioned(&run, parsed.len())?);
    }
    // Every statement yielded its policy, or the runs missed some text.
    (parsed.len() == spans.count()).then_some(parsed)
}

fn parse_whole(src: &str, spans: &StatementSpans) -> Result<Vec<(usize, Policy)>, PolicyError> {
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
    positioned(&parsed, 0)
        .ok_or_else(|| PolicyError::general("Cedar gave a policy an unexpected id"))
}

/// Each policy with its position in the text: `base` plus the `N` of the
/// `policyN` id Cedar gives the N-th statement it parsed. Policies keep
/// their parsed form only, not a copy of their text: the text would be
/// copied into every policy set they join and parsed again whenever their
/// JSON form is asked for.
fn positioned(policies: &PolicySet, base: usize) -> Option<Vec<(usize, Policy)>> {
    policies
        .policies()
        .map(|policy| {
            let id = policy.id().to_string();
            let n: usize = id.strip_prefix("policy")?.parse().ok()?;
            Some((base + n, policy_shape::without_text(policy)))
        })
        .collect()
}

/// Strict validation. Without enumerated entity types (whose ids matter to
/// the validator) Cedar typechecks one policy per shape
/// ([`policy_shape`]), which validates the rest; a failure is always
/// reported from the whole set, so it names the first failing policy.
fn validate_policies(
    schema: &Schema,
    policies: &PolicySet,
    src: &str,
    enumerated: bool,
) -> Result<(), PolicyError> {
    let validator = Validator::new(schema.clone());
    let representatives = (!enumerated)
        .then(|| policy_shape::representatives(policies))
        .flatten();
    if let Some(representatives) = representatives {
        if validator
            .validate(&representatives, ValidationMode::Strict)
            .validation_passed()
        {
            return Ok(());
        }
    }
    let result = validator.validate(policies, ValidationMode::Strict);
    let first_error = result.validation_errors().next().map(|error| PolicyError {
        policy_id: Some(error.policy_id().to_string()),
        line: first_offset(error).map(|o| policy_text::line_of(src, o)),
        message: error.to_string(),
    });
    first_error.map_or(Ok(()), Err)
}

/// An entity with the attributes a path template captured added.
fn with_captures(entity: Entity, captures: &[&Capture]) -> Result<Entity, String> {
    if captures.is_empty() {
        return Ok(entity);
    }
    let (entity_uid, mut attrs, parents) = entity.into_inner();
    for capture in captures {
        attrs.insert(
            capture.name.clone(),
            RestrictedExpression::new_string(capture.value.clone()),
        );
    }
    Entity::new(entity_uid, attrs, parents).map_err(|e| format!("entities: {e}"))
}

/// Every attribute a template captures must be an optional `String` of
/// both `Secret` and `Path`: a request's resource and its folders get it,
/// and only some of them do.
fn check_template_attributes(
    schema_json: &Value,
    templates: &TemplateTable,
) -> Result<(), PolicyError> {
    let root = schema_json.get("").unwrap_or(&Value::Null);
    let common = root.get("commonTypes").and_then(Value::as_object);
    for (mount, template) in templates.templates() {
        for name in template.names() {
            for entity_type in [ResourceKind::Secret, ResourceKind::Path] {
                let type_name = entity_type.type_name();
                let declared = root
                    .pointer(&format!("/entityTypes/{type_name}/shape"))
                    .and_then(|shape| claims::resolve_type(shape, common))
                    .and_then(|shape| shape.get("attributes"))
                    .and_then(|attributes| attributes.get(name));
                let optional_string = declared.is_some_and(|attribute| {
                    attribute.get("required").and_then(Value::as_bool) == Some(false)
                        && claims::declared_type(attribute, common) == Some(ClaimType::String)
                });
                if !optional_string {
                    return Err(PolicyError::general(format!(
                        "mount {mount:?}, template {:?}: the schema must declare `{name}?: String` on {type_name}",
                        template.text()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Loads configured entities against the schema. Secret/Path/Endpoint
/// entities get their folder parents, so attributes declared on a folder
/// are seen by every request under it. An attribute a path template also
/// gives the entity is refused: two sources for one fact.
fn load_entities(
    entities_json: &str,
    schema: &Schema,
    resource_types: &HashMap<ResourceKind, EntityTypeName>,
    templates: &TemplateTable,
) -> Result<Entities, PolicyError> {
    let loaded = Entities::from_json_str(entities_json, Some(schema))
        .map_err(|e| PolicyError::general(format!("entities: {e}")))?;
    let folder_type = resource_types
        .get(&ResourceKind::Path)
        .ok_or_else(|| PolicyError::general("Path type missing"))?;
    let mut rebuilt = Vec::with_capacity(loaded.len());
    for entity in loaded {
        let entity_uid = entity.uid();
        let Some(kind) = resource_types
            .iter()
            .find_map(|(kind, name)| (name == entity_uid.type_name()).then_some(*kind))
        else {
            rebuilt.push(entity);
            continue;
        };
        let (entity_uid, attrs, mut parents) = entity.into_inner();
        let resource = ResourceRef {
            kind,
            id: entity_uid.id().unescaped().to_owned(),
        };
        if let Some(folder) = resource.ancestors().next() {
            parents.insert(uid(folder_type, folder));
        }
        for (name, template) in templates.possible_attributes(kind, &resource.id) {
            if attrs.contains_key(&name) {
                return Err(PolicyError::general(format!(
                    "entities: {resource} sets attribute {name:?}, which template {template:?} also sets"
                )));
            }
        }
        let entity = Entity::new(entity_uid, attrs, parents)
            .map_err(|e| PolicyError::general(format!("entities: {e}")))?;
        rebuilt.push(entity);
    }
    Entities::from_entities(rebuilt, Some(schema))
        .map_err(|e| PolicyError::general(format!("entities: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

    /// 600 statements: some named by `@id`, the rest by position, with a
    /// `;` inside a string and a comment to trip a naive splitter.
    fn many_statements() -> String {
        (0..600)
            .map(|i| {
                let id = if i % 7 == 0 { format!("@id(\"named-{i}\")\n") } else { String::new() };
                format!("// statement {i}; not the end\n{id}permit (principal == Workload::\"w;{i}\", action, resource);\n")
            })
            .collect()
    }

    fn ids(set: &PolicySet) -> Vec<String> {
        let mut ids: Vec<String> = set.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn policies_parsed_in_runs_are_named_as_in_one_parse() {
        let src = many_statements();
        let spans = StatementSpans::scan(&src);
        let in_runs = parse_in_chunks(&src, &spans).expect("every run parses");
        let whole = parse_whole(&src, &spans).expect("the text parses");
        let key = |parsed: &[(usize, Policy)]| {
            let mut key: Vec<(usize, String)> = parsed
                .iter()
                .map(|(position, policy)| (*position, policy.to_string()))
                .collect();
            key.sort();
            key
        };
        assert_eq!(key(&in_runs), key(&whole));
        let (set, _) = parse_policies(&src).expect("loads");
        let names = ids(&set);
        assert_eq!(names.len(), 600);
        assert!(
            names.contains(&"policy599".to_string()) && names.contains(&"named-595".to_string())
        );
        assert!(!names.contains(&"policy595".to_string()));
        // A trailing comment is a statement without a policy: the runs are
        // refused and the whole text is parsed, to the same policies.
        let trailing = format!("{src}// the end\n");
        assert!(parse_in_chunks(&trailing, &StatementSpans::scan(&trailing)).is_none());
        assert_eq!(ids(&parse_policies(&trailing).expect("loads").0), names);
    }

    #[test]
    fn an_error_in_a_later_run_is_reported_from_the_whole_text() {
        let mut src = many_statements();
        src.push_str("@id(\"broken\")\npermit (principal, action, resource) when { context. };\n");
        let error = parse_policies(&src).expect_err("must not load");
        assert_eq!(error.policy_id.as_deref(), Some("broken"));
        assert_eq!(error.line, Some(600 * 2 + 600 / 7 + 1 + 2));
    }

    /// Policies of every resource-scope form, forbids, an erroring
    /// condition, and stored entities with extra parents.
    const POLICIES: &str = r#"
        @id("folder") permit (principal in Group::"ci", action, resource in Path::"secret/ci");
        @id("exact") permit (principal, action == Action::"read", resource == Secret::"secret/prod/db");
        @id("typed-in") permit (principal, action, resource is Secret in Path::"kv/a");
        @id("typed") permit (principal == Workload::"w2", action, resource is Endpoint);
        @id("anything") permit (principal == Workload::"w3", action, resource);
        @id("deep-forbid") forbid (principal, action == Action::"write", resource in Path::"secret/ci/locked");
        @id("extra-parent") permit (principal, action, resource in Path::"shared");
        @id("overflow-error") forbid (principal == Workload::"w4", action, resource)
            when { context.now * 9223372036854775807 > 1 };
        @id("guarded") permit (principal in Group::"ci", action, resource in Path::"kv")
            when { context.claims has repository && context.claims.repository == "acme/api" };
    "#;

    fn engine() -> PolicyEngine {
        let entities = json!([
            {"uid": {"type": "Group", "id": "ci"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Workload", "id": "w1"}, "attrs": {}, "parents": [{"type": "Group", "id": "ci"}]},
            {"uid": {"type": "Secret", "id": "kv/b/linked"}, "attrs": {}, "parents": [{"type": "Path", "id": "shared"}]},
        ]);
        PolicyEngine::load(
            SCHEMA,
            POLICIES,
            &entities.to_string(),
            "Workload",
            &TemplateTable::default(),
        )
        .unwrap()
    }

    /// Cedar over the whole policy set, as `evaluate` did before the index.
    fn unindexed(engine: &PolicyEngine, request: &AccessRequest<'_>) -> Evaluation {
        let cedar_request = engine.cedar_request(request).unwrap();
        let entities = engine.entity_slice(request).unwrap();
        engine.authorize(&cedar_request, &engine.policies, &entities)
    }

    #[test]
    fn the_scope_index_decides_exactly_as_the_whole_set() {
        let engine = engine();
        let resources = [
            (ResourceKind::Secret, "secret/ci/app/db"),
            (ResourceKind::Secret, "secret/ci/locked/key"),
            (ResourceKind::Path, "secret/ci"),
            (ResourceKind::Secret, "secret/prod/db"),
            (ResourceKind::Secret, "secret/prod/other"),
            (ResourceKind::Secret, "kv/a/x"),
            (ResourceKind::Path, "kv/a/x"),
            (ResourceKind::Secret, "kv/b/linked"),
            (ResourceKind::Endpoint, "sys/health"),
            (ResourceKind::Secret, "kv/c"),
        ];
        let mut claims = Map::new();
        claims.insert("repository".into(), json!("acme/api"));
        let (mut checked, mut allowed, mut forbidden, mut errored) = (0, 0, 0, 0);
        // Each request comes twice, with and without claims: the second
        // evaluation takes its entity slice from the memo, and must still
        // decide on its own claims.
        for id in ["w1", "w2", "w3", "w4", "nobody"] {
            for claims in [Map::new(), claims.clone()] {
                let principal = Principal {
                    entity_type: "Workload".into(),
                    id: id.into(),
                    claims,
                };
                for action in [Action::Read, Action::Write, Action::List] {
                    for (kind, resource_id) in resources {
                        let resource = ResourceRef {
                            kind,
                            id: resource_id.into(),
                        };
                        let request = AccessRequest {
                            principal: &principal,
                            action,
                            resource: &resource,
                            method: "GET",
                            source_ip: "127.0.0.1",
                            now_secs: 2,
                            namespace: "",
                            recent_reads: None,
                        };
                        let indexed = engine.evaluate(&request);
                        assert_eq!(
                            indexed,
                            unindexed(&engine, &request),
                            "{id} {action:?} {resource}"
                        );
                        checked += 1;
                        allowed += usize::from(indexed.allowed);
                        forbidden += usize::from(!indexed.allowed && !indexed.policies.is_empty());
                        errored += usize::from(!indexed.errors.is_empty());
                    }
                }
            }
        }
        assert_eq!(checked, 300);
        // Every kind of outcome is covered.
        assert!(
            allowed > 0 && forbidden > 0 && errored > 0,
            "{allowed} {forbidden} {errored}"
        );
    }

    #[test]
    fn an_anonymous_request_is_decided_by_forbids_and_the_permits_naming_it_alone() {
        let policies = r#"
            @id("anyone") permit (principal, action, resource);
            @id("anon-health") permit (principal == Unauthenticated::"anonymous", action == Action::"sys", resource == Endpoint::"sys/health");
            @id("anon-is") permit (principal is Unauthenticated, action == Action::"other", resource in Path::"pki");
            @id("no-crl") forbid (principal, action, resource in Path::"pki/crl");
        "#;
        let engine = PolicyEngine::load(
            SCHEMA,
            policies,
            "[]",
            "Workload",
            &TemplateTable::default(),
        )
        .unwrap();
        assert!(engine.admits_anonymous());
        let admitted = PolicySet::from_policies(
            engine
                .policies
                .policies()
                .filter(|p| p.id().to_string() != "anyone")
                .cloned(),
        )
        .unwrap();
        let anonymous = Principal::anonymous();
        let mut decided = Vec::new();
        for (action, kind, id) in [
            (Action::Sys, ResourceKind::Endpoint, "sys/health"),
            (Action::Sys, ResourceKind::Endpoint, "sys/seal-status"),
            (Action::Other, ResourceKind::Endpoint, "pki/ca"),
            (Action::Other, ResourceKind::Endpoint, "pki/crl/pem"),
            (Action::Read, ResourceKind::Secret, "secret/app"),
        ] {
            let resource = ResourceRef {
                kind,
                id: id.into(),
            };
            let request = request_with(&anonymous, action, &resource);
            let indexed = engine.evaluate(&request);
            if action != Action::Read {
                let cedar_request = engine.cedar_request(&request).unwrap();
                let entities = engine.entity_slice(&request).unwrap();
                assert_eq!(
                    indexed,
                    engine.authorize(&cedar_request, &admitted, &entities),
                    "{id}"
                );
            }
            decided.push((id, indexed.allowed, indexed.policies));
        }
        let no = Vec::<String>::new;
        assert_eq!(
            decided,
            [
                ("sys/health", true, vec!["anon-health".to_owned()]),
                ("sys/seal-status", false, no()),
                ("pki/ca", true, vec!["anon-is".to_owned()]),
                ("pki/crl/pem", false, vec!["no-crl".to_owned()]),
                // `read` does not accept Unauthenticated: nothing is evaluated.
                ("secret/app", false, no()),
            ]
        );
        // A workload is judged by the whole set.
        let workload = Principal {
            entity_type: "Workload".into(),
            id: "anonymous".into(),
            claims: Map::new(),
        };
        let resource = ResourceRef {
            kind: ResourceKind::Endpoint,
            id: "sys/seal-status".into(),
        };
        assert!(
            engine
                .evaluate(&request_with(&workload, Action::Sys, &resource))
                .allowed
        );
    }

    /// `environment` is declared for `read` only, so a request carrying it
    /// is valid for `read` and invalid for every other action.
    fn per_action_claims_schema() -> String {
        let scope = "principal: [Workload, User], resource: [Secret, Path, Endpoint]";
        let context = |claims: &str| {
            format!("context: {{method: String, claims: {claims}, source_ip: ipaddr, now: Long, namespace: String}}")
        };
        format!(
            "entity Group in [Group]; entity Workload in [Group]; entity User in [Group];\n\
             entity Path in [Path]; entity Secret in [Path]; entity Endpoint in [Path];\n\
             action read appliesTo {{ {scope}, {} }};\n\
             action list, write, delete, issue, decrypt, unwrap, login, sys, other appliesTo {{ {scope}, {} }};",
            context("{repository?: String, environment?: String}"),
            context("{repository?: String}"),
        )
    }

    fn request_with<'a>(
        principal: &'a Principal,
        action: Action,
        resource: &'a ResourceRef,
    ) -> AccessRequest<'a> {
        AccessRequest {
            principal,
            action,
            resource,
            method: "GET",
            source_ip: "127.0.0.1",
            now_secs: 2,
            namespace: "",
            recent_reads: None,
        }
    }

    #[test]
    fn a_request_shape_cedar_rejected_is_never_let_through_unvalidated() {
        let schema = per_action_claims_schema();
        let policies = r#"@id("all") permit (principal, action, resource);"#;
        let engine = PolicyEngine::load(
            &schema,
            policies,
            "[]",
            "Workload",
            &TemplateTable::default(),
        )
        .unwrap();
        let mut always_validating = PolicyEngine::load(
            &schema,
            policies,
            "[]",
            "Workload",
            &TemplateTable::default(),
        )
        .unwrap();
        always_validating.valid_shapes = None;

        let mut claims = Map::new();
        claims.insert("environment".into(), json!("prod"));
        let with_environment = Principal {
            entity_type: "Workload".into(),
            id: "w1".into(),
            claims,
        };
        let without = Principal {
            claims: Map::new(),
            ..with_environment.clone()
        };
        let secret = ResourceRef {
            kind: ResourceKind::Secret,
            id: "secret/app".into(),
        };
        // Twice over: the second round is served from the memo of shapes.
        for round in 0..2 {
            for (principal, action, valid) in [
                (&with_environment, Action::Read, true),
                (&with_environment, Action::Write, false),
                (&without, Action::Write, true),
                (&without, Action::Read, true),
            ] {
                let request = request_with(principal, action, &secret);
                let decided = engine.evaluate(&request);
                assert_eq!(
                    decided,
                    always_validating.evaluate(&request),
                    "round {round}: {action:?}"
                );
                assert_eq!(decided.allowed, valid, "round {round}: {action:?}");
                assert_eq!(
                    decided.errors.is_empty(),
                    valid,
                    "round {round}: {action:?}"
                );
            }
        }
    }

    #[test]
    fn request_shapes_tell_apart_everything_validation_looks_at() {
        let principal = |claims: Value| Principal {
            entity_type: "Workload".into(),
            id: "w1".into(),
            claims: claims.as_object().unwrap().clone(),
        };
        let secret = ResourceRef {
            kind: ResourceKind::Secret,
            id: "secret/app".into(),
        };
        let path = ResourceRef {
            kind: ResourceKind::Path,
            id: "secret/app".into(),
        };
        let shape = |principal: &Principal, action, resource, reads: Option<i64>| {
            request_shape(&AccessRequest {
                recent_reads: reads,
                ..request_with(principal, action, resource)
            })
        };
        let none = principal(json!({}));
        let base = shape(&none, Action::Read, &secret, None);
        let variants = [
            // Validation looks at the principal's type too.
            shape(&Principal::anonymous(), Action::Read, &secret, None),
            shape(&none, Action::Write, &secret, None),
            shape(&none, Action::Read, &path, None),
            shape(&none, Action::Read, &secret, Some(0)),
            shape(&principal(json!({"ab": "x"})), Action::Read, &secret, None),
            shape(&principal(json!({"ab": 1})), Action::Read, &secret, None),
            shape(&principal(json!({"ab": true})), Action::Read, &secret, None),
            shape(&principal(json!({"ab": []})), Action::Read, &secret, None),
            shape(
                &principal(json!({"ab": ["x"]})),
                Action::Read,
                &secret,
                None,
            ),
            shape(
                &principal(json!({"a": "x", "b": "y"})),
                Action::Read,
                &secret,
                None,
            ),
            shape(
                &principal(json!({"a": "s1:bs"})),
                Action::Read,
                &secret,
                None,
            ),
        ];
        let mut all: HashSet<&String> = variants.iter().collect();
        assert!(all.insert(&base));
        assert_eq!(all.len(), variants.len() + 1, "{variants:#?}");
        // Values never matter, only their types.
        assert_eq!(
            shape(&principal(json!({"ab": "x"})), Action::Read, &secret, None),
            shape(&principal(json!({"ab": "y"})), Action::Read, &secret, None)
        );
    }

    #[test]
    fn enumerated_entity_types_turn_the_shape_memo_off() {
        let plain =
            PolicyEngine::load(SCHEMA, "", "[]", "Workload", &TemplateTable::default()).unwrap();
        assert!(plain.valid_shapes.is_some());
        let with_enum = format!("{SCHEMA}\nentity Tier enum [\"gold\", \"silver\"];");
        let engine =
            PolicyEngine::load(&with_enum, "", "[]", "Workload", &TemplateTable::default())
                .unwrap();
        assert!(engine.valid_shapes.is_none());
    }
}

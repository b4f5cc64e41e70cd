//! The decision memo, differentially: 10,000 generated requests in which
//! claims, source addresses, methods, namespaces and times vary for the
//! same principals, actions and resources are decided with the memo and
//! without it, and must come out identical (decision, determining policies,
//! errors). Then each context attribute is left out of the memo key in
//! turn, and the same comparison must find the difference, which shows the
//! test would catch that mistake.

use secretgate::classify::{Action, ResourceKind, ResourceRef};
use secretgate::config::Config;
use secretgate::identity::Principal;
use secretgate::policy::{AccessRequest, PolicyEngine};
use serde_json::{json, Map, Value};

const REQUESTS: usize = 10_000;

/// Policies reading each context attribute, one erroring (an overflow) for
/// some claim values, and one reading `now` (its scopes are never memoised).
const POLICIES: &str = r#"
@id("ci-reads-own")
permit (principal in Group::"ci", action in [Action::"read", Action::"list"], resource in Path::"secret/ci")
when { resource has repository && context.claims has repository && resource.repository == context.claims.repository };

@id("protected-only")
forbid (principal, action, resource in Path::"secret/ci")
unless { context.claims has ref_protected && context.claims.ref_protected == "true" };

@id("prod-from-the-office")
forbid (principal, action, resource in Path::"secret/prod")
unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("release-reads-prod")
permit (principal in Group::"release", action == Action::"read", resource in Path::"secret/prod")
when {
  context.claims has environment && context.claims.environment == "production" &&
  context.claims has iat && context.claims.iat * 2 > 0
};

@id("team-namespace")
permit (principal, action == Action::"read", resource in Path::"team/secret")
when { context.namespace == "team" };

@id("get-only-pub")
permit (principal, action, resource in Path::"secret/pub")
when { context.method == "GET" };

@id("oncall-window")
permit (principal in Group::"ci", action == Action::"read", resource in Path::"secret/oncall")
when { context.now < 1800000000 };
"#;

fn policies_file(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../policies/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("policy file")
}

fn config() -> Config {
    let config = json!({
        "schema": policies_file("schema.cedarschema"),
        "policies": POLICIES,
        "entities": serde_json::from_str::<Value>(&policies_file("entities.json")).unwrap(),
        "mounts": {
            "secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]},
            "team/secret": "kv-v2",
        },
        "namespaces": ["team"],
        "identity": {"source": "jwt", "payload_in_metadata": "ci_claims"},
    });
    Config::from_json(config.to_string().as_bytes()).expect("config loads")
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

struct Generated {
    principal: Principal,
    action: Action,
    resource: ResourceRef,
    method: &'static str,
    source_ip: &'static str,
    now_secs: i64,
    namespace: &'static str,
}

impl Generated {
    fn access(&self) -> AccessRequest<'_> {
        AccessRequest {
            principal: &self.principal,
            action: self.action,
            resource: &self.resource,
            method: self.method,
            source_ip: self.source_ip,
            now_secs: self.now_secs,
            namespace: self.namespace,
            recent_reads: None,
        }
    }
}

fn generate(seed: u64) -> Vec<Generated> {
    let mut g = Generator(seed);
    let principals = [
        "repo:acme/api:ref:refs/heads/main",
        "repo:acme/web:ref:refs/heads/main",
        "repo:acme/vendor-sync:ref:refs/heads/main",
    ];
    let resources = [
        (Action::Read, ResourceKind::Secret, "secret/ci/acme/api/db"),
        (Action::Read, ResourceKind::Secret, "secret/ci/acme/web/db"),
        (Action::List, ResourceKind::Path, "secret/ci/acme/api"),
        (Action::Read, ResourceKind::Secret, "secret/prod/payments"),
        (Action::Read, ResourceKind::Secret, "secret/pub/banner"),
        (Action::Write, ResourceKind::Secret, "secret/pub/banner"),
        (Action::Read, ResourceKind::Secret, "secret/oncall/pager"),
        (Action::Read, ResourceKind::Secret, "team/secret/app/key"),
    ];
    let claim_values: [(&str, &[Option<&str>]); 5] = [
        ("repository", &[Some("acme/api"), Some("acme/web"), None]),
        ("ref_protected", &[Some("true"), Some("false"), None]),
        ("environment", &[Some("production"), Some("staging"), None]),
        ("iat", &[Some("100"), Some("5000000000000000000"), None]),
        // Read by no policy: it must not split the memo's answers.
        ("actor", &[Some("alice"), Some("bob"), Some("carol"), None]),
    ];
    (0..REQUESTS)
        .map(|_| {
            let mut claims = Map::new();
            for (name, values) in claim_values {
                if let Some(value) = g.pick(values) {
                    let value = match value.parse::<i64>() {
                        Ok(number) if name == "iat" => Value::from(number),
                        _ => Value::from(value),
                    };
                    claims.insert(name.to_owned(), value);
                }
            }
            let (action, kind, id) = g.pick(&resources);
            Generated {
                principal: Principal {
                    entity_type: "Workload".into(),
                    id: g.pick(&principals).to_owned(),
                    claims,
                },
                action,
                resource: ResourceRef {
                    kind,
                    id: id.to_owned(),
                },
                method: g.pick(&["GET", "POST", "LIST"]),
                source_ip: g.pick(&["10.1.2.3", "10.200.0.9", "127.0.0.1", "192.168.1.7"]),
                now_secs: g.pick(&[1_700_000_000, 1_900_000_000]),
                namespace: g.pick(&["", "team"]),
            }
        })
        .collect()
}

/// How many generated requests the memo answers differently from a fresh
/// evaluation.
fn disagreements(engine: &PolicyEngine, requests: &[Generated]) -> (usize, Option<String>) {
    let mut count = 0;
    let mut first = None;
    for request in requests {
        let access = request.access();
        let memoised = engine.evaluate(&access);
        let fresh = engine.evaluate_every_time(&access);
        if memoised != fresh {
            count += 1;
            first.get_or_insert_with(|| {
                format!("{access:?}\n memo: {memoised:?}\n fresh: {fresh:?}")
            });
        }
    }
    (count, first)
}

#[test]
fn the_memo_decides_exactly_as_a_fresh_evaluation() {
    let config = config();
    let engine = config.engine.as_deref().expect("inline policies");
    let requests = generate(0x5EC2_E76A_7E00_0017);
    let (count, first) = disagreements(engine, &requests);
    assert_eq!(
        count,
        0,
        "first disagreement: {}",
        first.unwrap_or_default()
    );

    // The comparison is not vacuous: the memo answered, the mix has every
    // outcome, and scopes reading `now` stayed out of it.
    let held = engine.memoised_decisions();
    assert!(held > 50 && held < REQUESTS / 2, "memo holds {held}");
    let outcomes: Vec<_> = requests
        .iter()
        .map(|r| engine.evaluate(&r.access()))
        .collect();
    assert!(outcomes.iter().any(|e| e.allowed));
    assert!(outcomes
        .iter()
        .any(|e| !e.allowed && e.errors.is_empty() && !e.policies.is_empty()));
    assert!(outcomes
        .iter()
        .any(|e| !e.allowed && e.policies.is_empty() && e.errors.is_empty()));
    assert!(
        outcomes.iter().any(|e| !e.errors.is_empty()),
        "release-reads-prod overflows on a huge iat"
    );
    let oncall: Vec<bool> = requests
        .iter()
        .filter(|r| r.resource.id == "secret/oncall/pager")
        .map(|r| engine.evaluate(&r.access()).allowed)
        .collect();
    assert!(
        oncall.contains(&true) && oncall.contains(&false),
        "now decides the on-call reads"
    );
}

#[test]
fn leaving_any_read_attribute_out_of_the_key_is_caught() {
    let requests = generate(0x5EC2_E76A_7E00_0018);
    for attribute in [
        "method",
        "source_ip",
        "namespace",
        "claims.repository",
        "claims.ref_protected",
        "claims.environment",
        "claims.iat",
        "principal",
        "resource",
        // Not "action": the request shape in the key names it too.
    ] {
        let mut config = config();
        let engine = std::sync::Arc::get_mut(config.engine.as_mut().unwrap()).unwrap();
        engine.omit_from_decision_key(attribute);
        let (count, _) = disagreements(engine, &requests);
        assert!(
            count > 0,
            "leaving {attribute} out of the memo key went unnoticed"
        );
    }
}

#[test]
fn an_unread_claim_does_not_split_the_memo() {
    let config = config();
    let engine = config.engine.as_deref().unwrap();
    let request = |actor: &str| Generated {
        principal: Principal {
            entity_type: "Workload".into(),
            id: "repo:acme/api:ref:refs/heads/main".into(),
            claims: json!({"repository": "acme/api", "ref_protected": "true", "actor": actor})
                .as_object()
                .unwrap()
                .clone(),
        },
        action: Action::Read,
        resource: ResourceRef {
            kind: ResourceKind::Secret,
            id: "secret/ci/acme/api/db".into(),
        },
        method: "GET",
        source_ip: "127.0.0.1",
        now_secs: 1_700_000_000,
        namespace: "",
    };
    for actor in ["alice", "bob", "carol", "dave"] {
        assert!(engine.evaluate(&request(actor).access()).allowed);
    }
    assert_eq!(engine.memoised_decisions(), 1);
}

//! Realistic generated Cedar policy sets of any size, valid against
//! `policies/schema.cedarschema`.
//!
//! The organisation: departments of ten teams each, every team with three
//! squads of two workloads. Membership is four groups deep: a workload is in
//! its squad, the squad in its team, the team in its department, the
//! department in `Group::"org"`. Some workloads are contractors, each
//! department has an on-call group.
//!
//! Every team owns ten policies (permits on its folders, one on a database
//! role and one on a PKI role, claim-guarded CI permits, two forbids, an IP-
//! and time-guarded break-glass permit), so a set of `n` policies has
//! `n / 10` teams (and the same number of entities as policies, roughly).
//!
//! The load requests: [`PolicySet::allow_request`] (a workload reading its
//! own team's KV v2 secret: permitted by the team's folder permit, all
//! policies evaluated) and [`PolicySet::deny_request`] (the same workload
//! reading the next team's secret: no permit applies).

use std::fmt::Write as _;

use serde_json::{json, Value};

/// The reference schema, shared with the demo policies.
pub const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

/// Policies per team.
pub const PER_TEAM: usize = 10;
/// Teams per department.
const TEAMS_PER_DEPT: usize = 10;
const SQUADS_PER_TEAM: usize = 3;
const WORKLOADS_PER_SQUAD: usize = 2;

/// A request the load and micro benchmarks send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchRequest {
    /// `Workload` id, sent in the dev identity header.
    pub principal: String,
    pub method: &'static str,
    /// The HTTP path (`/v1/...`).
    pub path: String,
    /// KV v2 mount-relative secret path, for seeding OpenBao (allow only).
    pub secret_path: String,
}

/// A generated configuration: schema, policies and entities.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub policy_count: usize,
    pub teams: usize,
    pub schema: String,
    pub policies: String,
    pub entities: Value,
}

fn team_name(team: usize) -> String {
    format!("team-{team:05}")
}

fn dept_of(team: usize) -> usize {
    team / TEAMS_PER_DEPT
}

fn workload_name(team: usize, squad: usize, index: usize) -> String {
    format!("svc-{team:05}-{squad}-{index}")
}

fn group(id: &str) -> Value {
    json!({"type": "Group", "id": id})
}

/// Policy `k` (0..PER_TEAM) of team `t`.
fn team_policy(out: &mut String, t: usize, k: usize) {
    let team = team_name(t);
    let dept = format!("dept-{:04}", dept_of(t));
    let squad0 = format!("{team}-squad-0");
    let repo = format!("acme/{team}-service");
    let text = match k {
        0 => format!(
            "@id(\"{team}-reads-own-folder\")\n\
             permit (principal in Group::\"{team}\", action in [Action::\"read\", Action::\"list\"], \
             resource in Path::\"secret/teams/{team}\");\n"
        ),
        1 => format!(
            "@id(\"{team}-squad-0-writes-app\")\n\
             permit (principal in Group::\"{squad0}\", action in [Action::\"write\", Action::\"delete\"], \
             resource in Path::\"secret/teams/{team}/app-0\");\n"
        ),
        2 => format!(
            "@id(\"{team}-reads-legacy-kv\")\n\
             permit (principal in Group::\"{team}\", action == Action::\"read\", \
             resource in Path::\"kv/teams/{team}\");\n"
        ),
        3 => format!(
            "@id(\"{team}-ci-reads-deploy-keys\")\n\
             permit (principal in Group::\"ci\", action == Action::\"read\", \
             resource in Path::\"secret/teams/{team}/deploy\")\n\
             when {{ context.claims has repository && context.claims.repository == \"{repo}\" \
             && context.claims has ref_protected && context.claims.ref_protected == \"true\" }};\n"
        ),
        4 => format!(
            "@id(\"{team}-database-readonly\")\n\
             permit (principal in Group::\"{team}\", action == Action::\"read\", \
             resource == Secret::\"database/creds/{team}-ro\");\n"
        ),
        5 => format!(
            "@id(\"{team}-contractors-never-write\")\n\
             forbid (principal in Group::\"contractors\", action in [Action::\"write\", Action::\"delete\"], \
             resource in Path::\"secret/teams/{team}\");\n"
        ),
        6 => format!(
            "@id(\"{team}-department-lists-shared\")\n\
             permit (principal in Group::\"{dept}\", action == Action::\"list\", \
             resource in Path::\"secret/teams/{team}/shared\");\n"
        ),
        7 => format!(
            "@id(\"{team}-quarantine\")\n\
             forbid (principal, action, resource in Path::\"secret/teams/{team}/quarantine\")\n\
             unless {{ context.claims has environment && context.claims.environment == \"incident\" }};\n"
        ),
        8 => format!(
            "@id(\"{team}-oncall-break-glass\")\n\
             permit (principal in Group::\"oncall-{dept}\", action == Action::\"read\", \
             resource in Path::\"secret/teams/{team}/break-glass\")\n\
             when {{ context.source_ip.isInRange(ip(\"10.0.0.0/8\")) && context.now < 4102444800 }};\n"
        ),
        _ => format!(
            "@id(\"{team}-issues-certificates\")\n\
             permit (principal in Group::\"{team}\", action == Action::\"issue\", \
             resource == Secret::\"pki/issue/{team}\")\n\
             when {{ [\"POST\", \"PUT\"].contains(context.method) }};\n"
        ),
    };
    out.push_str(&text);
}

impl PolicySet {
    /// A set of exactly `policy_count` policies (at least 1).
    pub fn generate(policy_count: usize) -> PolicySet {
        let policy_count = policy_count.max(1);
        let teams = policy_count.div_ceil(PER_TEAM);
        let mut policies = String::with_capacity(policy_count * 220);
        let _ = writeln!(
            policies,
            "// Generated by secretgate-benches (gen-policies): {policy_count} policies, {teams} teams.\n"
        );
        let mut written = 0;
        'teams: for t in 0..teams {
            for k in 0..PER_TEAM {
                if written == policy_count {
                    break 'teams;
                }
                team_policy(&mut policies, t, k);
                written += 1;
            }
        }

        let mut entities = vec![
            json!({"uid": group("org"), "attrs": {}, "parents": []}),
            json!({"uid": group("ci"), "attrs": {}, "parents": []}),
            json!({"uid": group("contractors"), "attrs": {}, "parents": []}),
        ];
        for d in 0..=dept_of(teams - 1) {
            let dept = format!("dept-{d:04}");
            entities.push(json!({"uid": group(&dept), "attrs": {}, "parents": [group("org")]}));
            entities
                .push(json!({"uid": group(&format!("oncall-{dept}")), "attrs": {}, "parents": []}));
        }
        for t in 0..teams {
            let team = team_name(t);
            let dept = format!("dept-{:04}", dept_of(t));
            entities.push(json!({"uid": group(&team), "attrs": {}, "parents": [group(&dept)]}));
            for s in 0..SQUADS_PER_TEAM {
                let squad = format!("{team}-squad-{s}");
                entities
                    .push(json!({"uid": group(&squad), "attrs": {}, "parents": [group(&team)]}));
                for w in 0..WORKLOADS_PER_SQUAD {
                    let mut parents = vec![group(&squad), group("ci")];
                    if s == SQUADS_PER_TEAM - 1 && w == 1 {
                        parents.push(group("contractors"));
                    }
                    if s == 0 && w == 1 {
                        parents.push(group(&format!("oncall-{dept}")));
                    }
                    entities.push(json!({
                        "uid": {"type": "Workload", "id": workload_name(t, s, w)},
                        "attrs": {},
                        "parents": parents,
                    }));
                }
            }
        }

        PolicySet {
            policy_count,
            teams,
            schema: SCHEMA.to_owned(),
            policies,
            entities: Value::Array(entities),
        }
    }

    /// The team the load requests come from: in the middle of the set.
    fn load_team(&self) -> usize {
        self.teams / 2
    }

    /// A workload reading its own team's secret: permitted by
    /// `<team>-reads-own-folder`.
    pub fn allow_request(&self) -> BenchRequest {
        let t = self.load_team();
        let secret_path = format!("teams/{}/app-0/db", team_name(t));
        BenchRequest {
            principal: workload_name(t, 0, 0),
            method: "GET",
            path: format!("/v1/secret/data/{secret_path}"),
            secret_path,
        }
    }

    /// The same workload reading the next team's secret: no permit applies.
    pub fn deny_request(&self) -> BenchRequest {
        let t = self.load_team();
        let secret_path = format!("teams/{}/app-0/db", team_name(t + 1));
        BenchRequest {
            principal: workload_name(t, 0, 0),
            method: "GET",
            path: format!("/v1/secret/data/{secret_path}"),
            secret_path,
        }
    }

    /// The filter configuration (what Envoy passes as `configuration`), with
    /// the dev header identity and HMAC audit, as `envoy/stack.py` builds it.
    pub fn filter_config(&self) -> Value {
        json!({
            "schema": self.schema,
            "policies": self.policies,
            "entities": self.entities,
            "mounts": {"secret": "kv-v2", "kv": "kv-v1"},
            "identity": {"source": "header", "header": "x-secretgate-principal", "principal_type": "Workload"},
            "audit": {"mode": "hmac-sha256", "hmac_key": "secretgate-dev-audit-key-not-for-production"},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretgate::config::Config;
    use secretgate::gate::{RequestFacts, VerdictAction};

    fn decide(set: &PolicySet, request: &BenchRequest) -> (bool, Vec<String>) {
        let config = Config::from_json(set.filter_config().to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{} policies: {e}", set.policy_count));
        let engine = config
            .engine
            .as_ref()
            .expect("inline policies load an engine");
        assert_eq!(engine.policy_count(), set.policy_count);
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b"x-secretgate-principal", request.principal.as_bytes()),
            (b"x-request-id", b"bench"),
        ];
        let verdict = config.decide(&RequestFacts {
            method: request.method,
            target: &request.path,
            headers: &headers,
            source_address: Some("127.0.0.1:5000"),
            now_nanos: 1_800_000_000_000_000_000,
            jwt_payload: None,
            peer_uri_san: None,
        });
        (
            matches!(verdict.action, VerdictAction::Forward(_)),
            verdict.record.policies,
        )
    }

    #[test]
    fn generated_sets_validate_and_the_load_requests_decide_as_named() {
        for n in [1, 10, 25, 100, 1000] {
            let set = PolicySet::generate(n);
            let (allowed, policies) = decide(&set, &set.allow_request());
            assert!(allowed, "{n}: allow request denied");
            assert_eq!(
                policies,
                vec![format!("{}-reads-own-folder", team_name(set.teams / 2))]
            );
            let (allowed, policies) = decide(&set, &set.deny_request());
            assert!(!allowed, "{n}: deny request allowed");
            assert!(policies.is_empty(), "{n}: {policies:?}");
        }
    }
}

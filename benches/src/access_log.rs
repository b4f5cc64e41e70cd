//! Access-log lines as the shipped stack writes them, for `secretgate
//! report`'s benchmarks: the filter's own audit records (decided by
//! `Config::decide` under a generated policy set, an allowed read's KV v2
//! answer masked in `hmac-sha256` mode) embedded as the `audit` string of a
//! JSON access-log line.

use secretgate::audit::{self, ResponseFacts};
use secretgate::config::Config;
use secretgate::gate::RequestFacts;
use serde_json::json;

use crate::policyset::PolicySet;
use crate::KV2_READ_REPLY;

/// 2026-11-01T00:00:00Z: records are spread over the 30 days after it.
const START_NANOS: u64 = 1_793_491_200_000_000_000;
const THIRTY_DAYS_NANOS: u64 = 30 * 86_400 * 1_000_000_000;

/// Writes access-log lines: workloads of every team reading their own
/// secrets (allowed) and, one request in four, the next team's (refused).
pub struct AccessLog {
    set: PolicySet,
    config: Config,
}

impl AccessLog {
    pub fn new(policies: usize) -> AccessLog {
        let set = PolicySet::generate(policies);
        let config = Config::from_json(set.filter_config().to_string().as_bytes())
            .expect("the generated configuration loads");
        AccessLog { set, config }
    }

    /// The `index`-th line of a log of `total`.
    pub fn line(&self, index: usize, total: usize) -> String {
        let team = (index / 4) % self.set.teams;
        let refused = index % 4 == 3;
        let read = if refused {
            (team + 1) % self.set.teams
        } else {
            team
        };
        let principal = format!("svc-{team:05}-{}-{}", index % 3, (index / 3) % 2);
        let target = format!("/v1/secret/data/teams/team-{read:05}/app-{}/db", index % 5);
        let request_id = format!("bench-{index}");
        let headers: [(&[u8], &[u8]); 3] = [
            (b"x-secretgate-principal", principal.as_bytes()),
            (b"x-request-id", request_id.as_bytes()),
            (b"x-vault-token", b"s.benchmark-token"),
        ];
        let offset = THIRTY_DAYS_NANOS / total.max(1) as u64 * index as u64;
        let verdict = self.config.decide(&RequestFacts {
            method: "GET",
            target: &target,
            headers: &headers,
            source_address: Some("127.0.0.1:53412"),
            now_nanos: START_NANOS + offset,
            jwt_payload: None,
            peer_uri_san: None,
        });
        let allowed = verdict.record.outcome.as_str() == "allow";
        let mut reply = self.config.audit.capture();
        reply.feed(KV2_READ_REPLY.as_bytes());
        let record = audit::render(
            &self.config.audit,
            &verdict.record,
            &ResponseFacts {
                status: Some(if allowed { 200 } else { 403 }),
                request_body: None,
                response_body: allowed.then_some(&reply),
            },
        );
        json!({
            "start_time": audit::rfc3339(START_NANOS + offset),
            "method": "GET",
            "path": target,
            "response_code": if allowed { 200 } else { 403 },
            "audit": record,
        })
        .to_string()
    }
}

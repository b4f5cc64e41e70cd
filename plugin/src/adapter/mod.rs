//! The thin host adapter: gathers request facts from proxy-wasm, hands them
//! to the pure core, and carries out its verdict. Every host failure is a
//! deny, never a pass-through.

mod abi;
mod metrics;

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use std::time::Duration;

use proxy_wasm::hostcalls;

use crate::approval::{parse_reply, CalloutReply, ReplyError};
use crate::audit::{
    self, AuditConfig, BodyCapture, Delivery, RecordSink, ResponseFacts, Stage, AUDIT_UNAVAILABLE,
};
use crate::bundle::{
    self, BundleConfig, BundleError, FetchCycle, FetchReply, FetchRequest, FetchSchedule, FetchStep,
};
use crate::config::{Config, DecisionLog, ShadowPolicies};
use crate::gate::{self, error_body, ForwardEdits, RequestFacts, Verdict, VerdictAction};
use crate::identity::IdentitySource;
use crate::pairs;
use crate::record::{DecisionRecord, Outcome, ShadowOutcome};
use crate::usage::{HashKey, ReadCounter, SharedCounter, SharedStore, StoreError};
use crate::version::{bundle_revision, FILTER_VERSION};
use abi::HostError;

const JWT_AUTHN_METADATA: &str = "envoy.filters.http.jwt_authn";
/// Public contract: Envoy exposes it as filter state `wasm.secretgate_audit`.
const AUDIT_FILTER_STATE: &str = "secretgate_audit";
/// An approval reply is a few hundred bytes; never copy more than this.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Until the first bundle loads, fetch often: requests are denied meanwhile.
const FIRST_BUNDLE_RETRY_MS: u32 = 250;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(SecretgateRoot::default())
    });
}}

#[derive(Default)]
struct SecretgateRoot {
    /// What new requests are served with; swapped whole when a bundle loads,
    /// while requests in flight keep the configuration they started with.
    config: Option<Rc<Config>>,
    live: Fetcher,
    shadow: Fetcher,
    /// The tick period last asked of the host (0: none).
    tick_ms: u32,
}

/// The two policy sets fetched over HTTP: `bundle` and `shadow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicySet {
    Live,
    Shadow,
}

impl PolicySet {
    /// The metric group and log name.
    fn name(self) -> &'static str {
        match self {
            PolicySet::Live => "bundle",
            PolicySet::Shadow => "shadow",
        }
    }

    fn source(self, config: &Config) -> Option<&BundleConfig> {
        match self {
            PolicySet::Live => config.bundle.as_ref(),
            PolicySet::Shadow => config.shadow.as_ref(),
        }
    }

    /// Until the live set first loads every request is denied, so it is
    /// fetched again quickly; a shadow decides nothing, so a broken one is
    /// fetched at its `refresh_s` like any other.
    fn retries_fast(self, config: &Config) -> bool {
        self == PolicySet::Live && !self.loaded(config)
    }

    fn loaded(self, config: &Config) -> bool {
        match self {
            PolicySet::Live => config.engine.is_some(),
            PolicySet::Shadow => matches!(config.shadow_policies, ShadowPolicies::Loaded(_)),
        }
    }
}

/// One policy set's fetches: the cycle, the callout in flight, and when
/// the next cycle is due.
#[derive(Default)]
struct Fetcher {
    cycle: FetchCycle,
    token: Option<u32>,
    schedule: FetchSchedule,
}

impl SecretgateRoot {
    fn fetcher(&mut self, set: PolicySet) -> &mut Fetcher {
        match set {
            PolicySet::Live => &mut self.live,
            PolicySet::Shadow => &mut self.shadow,
        }
    }

    /// Ticks often until every configured set has loaded, then at the
    /// shortest refresh period; each set keeps its own schedule.
    fn retune_tick(&mut self, config: &Config) {
        let sets = [PolicySet::Live, PolicySet::Shadow];
        let configured = sets
            .iter()
            .filter_map(|set| Some((*set, set.source(config)?)));
        let mut period: Option<u32> = None;
        for (set, source) in configured {
            let wanted = if set.retries_fast(config) {
                FIRST_BUNDLE_RETRY_MS
            } else {
                source.refresh_s.saturating_mul(1000)
            };
            period = Some(period.map_or(wanted, |p| p.min(wanted)));
        }
        let period = period.unwrap_or(0);
        if period != 0 && period != self.tick_ms {
            set_tick(period);
            self.tick_ms = period;
        }
    }

    /// A fetched bundle passed its checks: validate it as `set` and swap it in.
    fn load_candidate(
        &mut self,
        set: PolicySet,
        config: &Config,
        body: &[u8],
        etag: Option<String>,
    ) {
        let loaded = bundle::parse(body).and_then(|candidate| {
            let revision = bundle_revision(candidate.revision.as_deref(), &candidate.digest);
            let next = match set {
                PolicySet::Live => config.with_bundle(candidate),
                PolicySet::Shadow => config.with_shadow(candidate),
            };
            next.map(|next| (next, revision))
                .map_err(|e| BundleError::Invalid(e.to_string()))
        });
        match loaded {
            Ok((next, revision)) => {
                let policies = match (set, &next.engine, &next.shadow_policies) {
                    (PolicySet::Live, Some(engine), _) => engine.policy_count(),
                    (PolicySet::Shadow, _, ShadowPolicies::Loaded(engine)) => engine.policy_count(),
                    _ => 0,
                };
                abi::log(
                    abi::LOG_INFO,
                    &format!(
                        "secretgate: {} loaded (revision {revision}, {policies} policies)",
                        set.name(),
                    ),
                );
                self.config = Some(Rc::new(next));
                self.fetcher(set).cycle.accepted(etag);
                metrics::count(set.name(), "loads");
            }
            Err(e) => self.fetch_failed(set, config, &e),
        }
    }

    /// A bad or unreachable bundle changes nothing: the last good one keeps
    /// serving (or, before any, every request stays denied). A shadow that
    /// never loaded is reported absent in every record, with the reason.
    fn fetch_failed(&mut self, set: PolicySet, config: &Config, error: &BundleError) {
        let keeping = match (set, set.loaded(config)) {
            (PolicySet::Live, true) => "keeping the previous policy",
            (PolicySet::Live, false) => "no policy loaded yet: denying every request",
            (PolicySet::Shadow, true) => "keeping the previous shadow policy",
            (PolicySet::Shadow, false) => {
                "no shadow policy: records say it is absent; serving is unaffected"
            }
        };
        abi::log(
            abi::LOG_WARN,
            &format!("secretgate: {} rejected: {error}; {keeping}", set.name()),
        );
        metrics::count(set.name(), "failures");
        if set == PolicySet::Shadow {
            let reason = format!("shadow bundle not loaded: {error}");
            if let Some(next) = config.with_shadow_failure(&reason) {
                self.config = Some(Rc::new(next));
            }
        }
    }

    fn send_fetch(&mut self, set: PolicySet, config: &Config, request: &FetchRequest) {
        let Some(source) = set.source(config) else {
            return;
        };
        let mut headers = vec![
            (":method", "GET"),
            (":path", request.path.as_str()),
            (":authority", source.authority.as_str()),
        ];
        if let Some(etag) = &request.if_none_match {
            headers.push(("if-none-match", etag.as_str()));
        }
        match hostcalls::dispatch_http_call(
            &source.cluster,
            headers,
            None,
            Vec::new(),
            Duration::from_millis(u64::from(source.timeout_ms)),
        ) {
            Ok(token) => self.fetcher(set).token = Some(token),
            Err(status) => {
                self.fetcher(set).cycle.abandon();
                let error = BundleError::Fetch(format!(
                    "cluster {:?} refused the request ({status:?})",
                    source.cluster
                ));
                self.fetch_failed(set, config, &error);
            }
        }
    }
}

impl Context for SecretgateRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let set = if self.live.token == Some(token_id) {
            PolicySet::Live
        } else if self.shadow.token == Some(token_id) {
            PolicySet::Shadow
        } else {
            abi::log(
                abi::LOG_ERROR,
                "secretgate: bundle reply with an unknown token",
            );
            return;
        };
        let Some(source) = set.source(&config) else {
            return;
        };
        self.fetcher(set).token = None;
        let (status, etag) = if num_headers == 0 && body_size == 0 {
            (None, None)
        } else {
            callout_status_and_etag()
        };
        let body = abi::buffer_range(
            abi::BUFFER_CALLOUT_RESPONSE_BODY,
            0,
            body_size.min(bundle::MAX_BUNDLE_BYTES + 1),
        )
        .unwrap_or_default();
        let step = self.fetcher(set).cycle.on_reply(
            source,
            FetchReply {
                status,
                etag: etag.as_deref(),
                body: &body,
            },
        );
        match step {
            FetchStep::Send(request) => {
                self.send_fetch(set, &config, &request);
                return;
            }
            FetchStep::Unchanged => {}
            FetchStep::Candidate { body, etag } => self.load_candidate(set, &config, &body, etag),
            FetchStep::Failed(e) => self.fetch_failed(set, &config, &e),
        }
        let current = self.config.clone().unwrap_or(config);
        self.retune_tick(&current);
    }
}

fn callout_status_and_etag() -> (Option<u32>, Option<String>) {
    let Some(headers) = abi::header_pairs(abi::MAP_CALLOUT_RESPONSE_HEADERS).ok() else {
        return (None, None);
    };
    let Some(headers) = pairs::decode(&headers) else {
        return (None, None);
    };
    let value = |name: &[u8]| {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let status = value(b":status").and_then(|s| s.parse().ok());
    (status, value(b"etag"))
}

fn set_tick(period_ms: u32) {
    if let Err(e) = abi::set_tick_period(period_ms) {
        abi::log(abi::LOG_ERROR, &format!("secretgate: bundle refresh: {e}"));
    }
}

impl RootContext for SecretgateRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let loaded = abi::buffer(abi::BUFFER_PLUGIN_CONFIGURATION)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Config::from_json(&bytes).map_err(|e| e.to_string()));
        match loaded {
            Ok(config) => {
                let loaded = match (&config.engine, &config.bundle) {
                    (Some(engine), _) => format!("{} policies", engine.policy_count()),
                    (None, Some(bundle)) => format!(
                        "policies from the bundle at {}{}, denying every request until it loads",
                        bundle.cluster, bundle.path
                    ),
                    (None, None) => "no policies".to_owned(),
                };
                abi::log(
                    abi::LOG_INFO,
                    &format!(
                        "secretgate {FILTER_VERSION}: configuration loaded ({loaded}), revision {}",
                        config.revisions.config
                    ),
                );
                self.live = Fetcher::default();
                self.shadow = Fetcher::default();
                self.tick_ms = 0;
                self.retune_tick(&config);
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                // Returning false makes Envoy reject the configuration: never
                // serve with a half-loaded policy set.
                abi::log(
                    abi::LOG_ERROR,
                    &format!("secretgate: configuration rejected: {e}"),
                );
                self.config = None;
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let now_ms = abi::now_nanos().unwrap_or(0) / 1_000_000;
        for set in [PolicySet::Live, PolicySet::Shadow] {
            let Some(source) = set.source(&config) else {
                continue;
            };
            let wait_ms = if set.retries_fast(&config) {
                u64::from(FIRST_BUNDLE_RETRY_MS)
            } else {
                u64::from(source.refresh_s) * 1000
            };
            let fetcher = self.fetcher(set);
            if fetcher.cycle.busy() || !fetcher.schedule.due(now_ms) {
                continue;
            }
            fetcher.schedule.started(now_ms, wait_ms);
            let request = fetcher.cycle.start(source);
            self.send_fetch(set, &config, &request);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(SecretgateHttp {
            config: self.config.clone(),
            pending: None,
            awaiting: None,
            _live: metrics::Live::hold("requests"),
        }))
    }
}

struct SecretgateHttp {
    config: Option<Rc<Config>>,
    /// The record of a forwarded request, completed when the response ends.
    pending: Option<PendingAudit>,
    /// A request paused while the approval service decides.
    awaiting: Option<AwaitingApproval>,
    /// Counts this request in `secretgate.live.requests` until it is dropped.
    _live: metrics::Live,
}

impl Drop for SecretgateHttp {
    fn drop(&mut self) {
        // The end of a request is when its allocations are freed, so the
        // memory the VM still holds afterwards is what it keeps.
        metrics::report_memory();
    }
}

/// A paused request and the callout it waits for. Taken exactly once, so
/// the request is resumed or refused exactly once.
struct AwaitingApproval {
    token: u32,
    record: DecisionRecord,
    edits: ForwardEdits,
    /// The request body Envoy holds for the paused request, for the record
    /// (see `on_http_request_body`), and how many of its bytes were captured.
    held_body: BodyCapture,
    held_bytes: usize,
    /// Counts the callout in `secretgate.live.approval_callouts` until it ends.
    _live: metrics::Live,
}

/// What the audit record of a forwarded request still waits for.
struct PendingAudit {
    record: DecisionRecord,
    request_body: BodyCapture,
    response_body: BodyCapture,
    status: Option<u32>,
}

impl Context for SecretgateHttp {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (Some(config), Some(awaiting)) = (self.config.clone(), self.awaiting.take()) else {
            abi::log(
                abi::LOG_ERROR,
                "secretgate: callout reply with no request waiting",
            );
            return;
        };
        let reply = if awaiting.token != token_id {
            Err(ReplyError::Malformed("unknown callout token"))
        } else if num_headers == 0 && body_size == 0 {
            // Envoy reports a failed callout (connect error, reset, timeout) as (token, 0, 0, 0).
            Err(ReplyError::Unreachable)
        } else {
            read_callout_reply(body_size)
        };
        if reply.is_err() {
            metrics::count("approvals", "callout_failures");
        }
        let verdict = config.conclude_approval(awaiting.record, awaiting.edits, reply);
        let action = self.carry_out(&config, verdict);
        if let Some(pending) = self.pending.as_mut() {
            // A body Envoy handed over while the request waited goes on with
            // it, and is not shown to this filter again.
            if awaiting.held_bytes > 0 {
                pending.request_body = awaiting.held_body;
            }
        }
        if action == Action::Continue {
            if let Err(e) = abi::resume_request() {
                abi::log(abi::LOG_ERROR, &format!("secretgate: host error: {e}"));
            }
        }
    }
}

impl HttpContext for SecretgateHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return answer_unconfigured();
        };
        let verdict = with_request_facts(Some(&config.identity.source), |facts| {
            with_read_counter(|reads| config.decide_with(facts, reads))
        });
        match verdict {
            Ok(verdict) => self.carry_out(&config, verdict),
            Err(e) => refuse(&config.audit, host_failure(&e), 500, "internal error"),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if let Some(awaiting) = self.awaiting.as_mut() {
            // The headers are paused on the approval callout. By default Envoy
            // holds the body of a paused request and never calls this; with the
            // Wasm filter's `allow_on_headers_stop_iteration` it does, and
            // Continue here would forward the request before the decision.
            // Pause makes Envoy buffer the body until the filter resumes or
            // refuses; each call then sees everything buffered so far.
            let start = awaiting.held_bytes.min(body_size);
            capture_chunk(
                &mut awaiting.held_body,
                abi::BUFFER_REQUEST_BODY,
                start,
                body_size,
            );
            awaiting.held_bytes = body_size;
            return Action::Pause;
        }
        if let Some(pending) = self.pending.as_mut() {
            capture_chunk(
                &mut pending.request_body,
                abi::BUFFER_REQUEST_BODY,
                0,
                body_size,
            );
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(pending) = self.pending.as_mut() {
            pending.status = abi::header_value(abi::MAP_RESPONSE_HEADERS, ":status")
                .ok()
                .flatten()
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
        }
        if end_of_stream {
            self.finish_audit();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(pending) = self.pending.as_mut() {
            capture_chunk(
                &mut pending.response_body,
                abi::BUFFER_RESPONSE_BODY,
                0,
                body_size,
            );
        }
        if end_of_stream {
            self.finish_audit();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // Only reached when the response never completed (reset, disconnect),
        // or the client left while the approval service was deciding.
        if let (Some(config), Some(awaiting)) = (self.config.clone(), self.awaiting.take()) {
            let mut record = awaiting.record;
            record.reason = "client left while waiting for approval".to_owned();
            write_audit(
                &config.audit,
                &record,
                &ResponseFacts::default(),
                Stage::AnswerStarted,
            );
            count_decision(&record);
        }
        self.finish_audit();
    }
}

impl SecretgateHttp {
    /// Carries out a verdict: forward (and audit when the response ends),
    /// answer locally, or pause and ask the approval service.
    fn carry_out(&mut self, config: &Rc<Config>, verdict: Verdict) -> Action {
        log_decision(config.decision_log, &verdict.record);
        let record = verdict.record;
        match verdict.action {
            VerdictAction::Forward(edits) => {
                // The record is written before anything is forwarded, so a
                // request that cannot be audited never reaches OpenBao; the
                // response's details overwrite it when the response ends.
                let written = write_audit(
                    &config.audit,
                    &record,
                    &ResponseFacts::default(),
                    Stage::BeforeAnswer,
                );
                if written == Delivery::Refused {
                    return refused_for_audit(&record);
                }
                match apply_edits(&edits) {
                    Ok(()) => {
                        self.pending = Some(PendingAudit {
                            record,
                            request_body: config.audit.capture(),
                            response_body: config.audit.capture(),
                            status: None,
                        });
                        Action::Continue
                    }
                    Err(e) => {
                        let mut record = record;
                        record.fail(format!("host error: {e}"));
                        refuse(&config.audit, record, 500, "internal error")
                    }
                }
            }
            VerdictAction::Respond { status, body } => {
                answer_locally(&config.audit, &record, status, &body)
            }
            VerdictAction::AskApproval { body, edits } => match dispatch_callout(config, &body) {
                Ok(token) => {
                    self.awaiting = Some(AwaitingApproval {
                        token,
                        record,
                        edits,
                        held_body: config.audit.capture(),
                        held_bytes: 0,
                        _live: metrics::Live::hold("approval_callouts"),
                    });
                    Action::Pause
                }
                Err(reason) => {
                    metrics::count("approvals", "callout_failures");
                    let verdict = config.conclude_approval(record, edits, Err(reason));
                    self.carry_out(config, verdict)
                }
            },
        }
    }

    fn finish_audit(&mut self) {
        let (Some(config), Some(pending)) = (self.config.as_ref(), self.pending.take()) else {
            return;
        };
        write_audit(
            &config.audit,
            &pending.record,
            &ResponseFacts {
                status: pending.status,
                request_body: Some(&pending.request_body),
                response_body: Some(&pending.response_body),
            },
            Stage::AnswerStarted,
        );
        count_decision(&pending.record);
    }
}

/// Sends the callout to the approval service's cluster.
fn dispatch_callout(config: &Config, body: &str) -> Result<u32, ReplyError> {
    let service = config
        .approval
        .as_ref()
        .ok_or(ReplyError::Malformed("no approval service configured"))?;
    let bearer = service
        .token
        .as_ref()
        .map(|token| format!("Bearer {token}"));
    let mut headers = vec![
        (":method", "POST"),
        (":path", service.path.as_str()),
        (":authority", service.authority.as_str()),
        ("content-type", "application/json"),
    ];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    // The SDK's dispatch registers the token so the reply reaches this context.
    hostcalls::dispatch_http_call(
        &service.cluster,
        headers,
        Some(body.as_bytes()),
        Vec::new(),
        Duration::from_millis(u64::from(service.timeout_ms)),
    )
    .map_err(|_| ReplyError::CalloutRejected)
}

/// Reads the callout's status and body.
fn read_callout_reply(body_size: usize) -> Result<CalloutReply, ReplyError> {
    let unreadable = ReplyError::Malformed("unreadable reply");
    let raw_headers =
        abi::header_pairs(abi::MAP_CALLOUT_RESPONSE_HEADERS).map_err(|_| unreadable.clone())?;
    let headers = pairs::decode(&raw_headers).ok_or(unreadable.clone())?;
    let status = headers
        .iter()
        .find(|(name, _)| *name == b":status")
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok());
    let body = abi::buffer_range(
        abi::BUFFER_CALLOUT_RESPONSE_BODY,
        0,
        body_size.min(MAX_REPLY_BYTES),
    )
    .map_err(|_| unreadable)?;
    parse_reply(status, &body)
}

/// Copies bytes `start..end` of a body buffer into the bounded capture; the
/// body itself always flows on unchanged.
fn capture_chunk(capture: &mut BodyCapture, buffer_type: u32, start: usize, end: usize) {
    if end <= start || !capture.wants_more() {
        return;
    }
    match abi::buffer_range(buffer_type, start, end - start) {
        Ok(chunk) => capture.feed(&chunk),
        Err(e) => {
            capture.mark_unreadable();
            abi::log(abi::LOG_ERROR, &format!("secretgate: host error: {e}"));
        }
    }
}

/// Envoy's filter state `wasm.secretgate_audit`, which its access log
/// writes with `%FILTER_STATE(wasm.secretgate_audit:PLAIN)%`. Setting it
/// again replaces the value: the access log sees the last record.
struct FilterState;

impl RecordSink for FilterState {
    fn put(&mut self, record: &str) -> Result<(), String> {
        abi::set_property(AUDIT_FILTER_STATE, record.as_bytes()).map_err(|e| e.to_string())
    }
}

/// Writes the record (see [`audit::deliver`]) and counts a failure.
fn write_audit(
    audit: &AuditConfig,
    record: &DecisionRecord,
    response: &ResponseFacts<'_>,
    stage: Stage,
) -> Delivery {
    let delivery = audit::deliver(audit, record, response, stage, &mut FilterState);
    let failure = match delivery {
        Delivery::Written => return delivery,
        Delivery::Refused => "refused",
        Delivery::Lost => "lost",
    };
    metrics::count("audit", failure);
    abi::log(
        abi::LOG_ERROR,
        &format!(
            "secretgate: audit record of request_id={:?} not written in full ({failure})",
            record.request_id
        ),
    );
    delivery
}

/// The decision's summary line, as `decision_log` says: at debug level
/// only when Envoy would keep it, so the line is not even formatted on a
/// production Envoy logging at info.
fn log_decision(mode: DecisionLog, record: &DecisionRecord) {
    let level = match mode {
        DecisionLog::Off => return,
        DecisionLog::Info => abi::LOG_INFO,
        DecisionLog::Debug => match abi::log_level() {
            Ok(level) if level <= abi::LOG_DEBUG => abi::LOG_DEBUG,
            _ => return,
        },
    };
    abi::log(level, &record.log_line());
}

/// Counts a request's final decision (and approval outcome), once.
fn count_decision(record: &DecisionRecord) {
    metrics::count("decisions", record.outcome.as_str());
    if let Some(ShadowOutcome::Evaluated { agrees, .. }) = &record.shadow {
        metrics::count("shadow", if *agrees { "agree" } else { "disagree" });
    }
    if let Some(outcome) = record
        .approval
        .as_ref()
        .and_then(|a| a.get("outcome"))
        .and_then(|o| o.as_str())
    {
        metrics::count("approvals", outcome);
    }
}

/// Answers locally once the record is written: the request never reaches
/// OpenBao. With `on_failure: deny`, a record that cannot be written turns
/// the answer into 503 `audit unavailable`.
fn answer_locally(audit: &AuditConfig, record: &DecisionRecord, status: u32, body: &str) -> Action {
    let response = ResponseFacts {
        status: Some(status),
        ..ResponseFacts::default()
    };
    if write_audit(audit, record, &response, Stage::BeforeAnswer) == Delivery::Refused {
        return refused_for_audit(record);
    }
    count_decision(record);
    respond(status, body)
}

/// The answer to a request whose record could not be written (`deny`).
fn refused_for_audit(record: &DecisionRecord) -> Action {
    metrics::count("decisions", Outcome::AuditUnavailable.as_str());
    respond(503, &error_body(AUDIT_UNAVAILABLE, &record.request_id))
}

/// Denies a request the host failed, with an audit record.
fn refuse(audit: &AuditConfig, record: DecisionRecord, status: u32, message: &str) -> Action {
    abi::log(abi::LOG_ERROR, &record.log_line());
    answer_locally(
        audit,
        &record,
        status,
        &error_body(message, &record.request_id),
    )
}

fn host_failure(error: &HostError) -> DecisionRecord {
    DecisionRecord::host_failure(
        format!("host error: {error}"),
        abi::now_nanos().unwrap_or(0),
    )
}

/// The fail-closed answer of a filter without configuration, recorded with
/// the default audit settings (redaction).
fn answer_unconfigured() -> Action {
    let audit = AuditConfig::default();
    let verdict = with_request_facts(None, |facts| gate::unconfigured(&audit, facts));
    let (record, status, body) = match verdict {
        Ok(Verdict {
            record,
            action: VerdictAction::Respond { status, body },
        }) => (record, status, body),
        Ok(Verdict { mut record, .. }) => {
            record.fail("secretgate is not configured".to_owned());
            let body = error_body("secretgate is not configured", &record.request_id);
            (record, 500, body)
        }
        Err(e) => {
            let record = host_failure(&e);
            let body = error_body("secretgate is not configured", &record.request_id);
            (record, 500, body)
        }
    };
    abi::log(abi::LOG_ERROR, &record.log_line());
    answer_locally(&audit, &record, status, &body)
}

fn property_text(path: &[&str]) -> Result<Option<String>, HostError> {
    Ok(abi::property(path)?.and_then(|bytes| String::from_utf8(bytes).ok()))
}

/// Gathers what the host knows about the request (the JWT payload or the
/// peer certificate as `identity` says) and hands it to `decide`.
fn with_request_facts<T>(
    identity: Option<&IdentitySource>,
    decide: impl FnOnce(&RequestFacts<'_>) -> T,
) -> Result<T, HostError> {
    let raw_headers = abi::header_pairs(abi::MAP_REQUEST_HEADERS)?;
    let malformed = HostError {
        call: "proxy_get_header_map_pairs (decode)",
        status: 0,
    };
    let headers = pairs::decode(&raw_headers).ok_or(malformed)?;
    let pseudo = |name: &[u8]| -> Option<&str> {
        let mut values = headers.iter().filter(|(k, _)| *k == name);
        let (_, value) = values.next()?;
        // A repeated pseudo-header is malformed; refuse rather than pick one.
        if values.next().is_some() {
            return None;
        }
        std::str::from_utf8(value).ok()
    };
    let method = pseudo(b":method").unwrap_or("");
    let target = pseudo(b":path").unwrap_or("");
    let source_address = property_text(&["source", "address"])?;
    let jwt_payload = match identity {
        Some(IdentitySource::Jwt {
            payload_in_metadata,
            ..
        }) => abi::property(&[
            "metadata",
            "filter_metadata",
            JWT_AUTHN_METADATA,
            payload_in_metadata,
        ])?,
        _ => None,
    };
    let peer_uri_san = match identity {
        Some(IdentitySource::Mtls) => abi::property(&["connection", "uri_san_peer_certificate"])?,
        _ => None,
    };
    let now_nanos = abi::now_nanos()?;
    Ok(decide(&RequestFacts {
        method,
        target,
        headers: &headers,
        source_address: source_address.as_deref(),
        now_nanos,
        jwt_payload: jwt_payload.as_deref(),
        peer_uri_san: peer_uri_san.as_deref(),
    }))
}

/// Envoy's shared data (one store for every VM with this `vm_id`).
struct HostStore;

impl SharedStore for HostStore {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        abi::shared_data(key).map_err(|e| StoreError::Host(e.to_string()))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        abi::set_shared_data(key, value, cas).map_err(|e| match e.status {
            abi::STATUS_CAS_MISMATCH => StoreError::CasMismatch,
            _ => StoreError::Host(e.to_string()),
        })
    }
}

thread_local! {
    /// The process's slot key once this VM has read it: it never changes
    /// after it is made, so one lookup per VM is enough.
    static SLOT_KEY: Cell<Option<HashKey>> = const { Cell::new(None) };
}

fn random_slot_key() -> Result<HashKey, String> {
    let mut key = [0u8; 32];
    abi::random_bytes(&mut key).map_err(|e| e.to_string())?;
    Ok(key)
}

/// Counts `context.recent_reads` in shared data; see `usage`.
fn with_read_counter<T>(f: impl FnOnce(&mut dyn ReadCounter) -> T) -> T {
    let cached = SLOT_KEY.with(Cell::get);
    let mut counter = SharedCounter::new(HostStore, random_slot_key, cached);
    let result = f(&mut counter);
    if cached.is_none() {
        SLOT_KEY.with(|key| key.set(counter.hash_key()));
    }
    result
}

fn apply_edits(edits: &ForwardEdits) -> Result<(), HostError> {
    let map = abi::MAP_REQUEST_HEADERS;
    if let Some(path) = &edits.path {
        abi::replace_header(map, ":path", path)?;
    }
    match edits.namespace.as_deref() {
        Some("") => abi::remove_header(map, "x-vault-namespace")?,
        Some(namespace) => abi::replace_header(map, "x-vault-namespace", namespace)?,
        None => {}
    }
    for name in &edits.remove_headers {
        abi::remove_header(map, name)?;
    }
    Ok(())
}

/// Answers locally and stops the request: it never reaches OpenBao.
fn respond(status: u32, body: &str) -> Action {
    let headers: [(&[u8], &[u8]); 1] = [(b"content-type", b"application/json")];
    if let Err(e) = abi::send_local_response(status, &headers, body.as_bytes()) {
        abi::log(abi::LOG_ERROR, &format!("secretgate: host error: {e}"));
    }
    Action::Pause
}

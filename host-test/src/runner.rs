//! Drives one scenario through the filter (Envoy's call order) and checks
//! its expectations.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::{format_err, Result};

use crate::host::{
    CalloutReply, Filter, HostState, LocalResponse, LogLine, Vm, ACTION_CONTINUE, HTTP_ID, ROOT_ID,
    THREAD_STACK,
};
use crate::scenario::{encode_claims, Headers, Scenario, UpstreamSpec};

/// What happened to the request.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The reason logged when `proxy_on_configure` returned false.
    pub config_rejected: Option<String>,
    /// The request headers as forwarded to the upstream (None: not forwarded).
    pub forwarded: Option<Vec<(String, String)>>,
    pub local_response: Option<LocalResponse>,
    /// The status the client receives (None: the stream stalled).
    pub status: Option<u32>,
    pub client_body: Vec<u8>,
    /// The filter paused and never resumed.
    pub stalled: bool,
    pub logs: Vec<LogLine>,
    pub stdio: String,
    pub filter_state: std::collections::BTreeMap<String, Vec<u8>>,
    pub events: Vec<String>,
    pub http_calls: Vec<crate::host::HttpCall>,
    pub metrics: std::collections::BTreeMap<String, i64>,
}

impl Outcome {
    pub fn forwarded_header(&self, name: &str) -> Option<&str> {
        self.forwarded
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `allow`/`deny` from the `secretgate decision=` log line.
    pub fn decision(&self) -> Option<String> {
        self.logs.iter().find_map(|l| {
            let rest = l.message.strip_prefix("secretgate decision=")?;
            Some(rest.split(' ').next().unwrap_or("").to_string())
        })
    }
}

/// Options for the host itself (used by the host's own tests).
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Host functions to treat as unimplemented.
    pub disabled: HashSet<String>,
    /// Host functions that answer with this error status.
    pub failing: HashMap<String, i32>,
    /// Serve the request even when the configuration was rejected (Envoy
    /// never does; this checks the filter's fail-closed answer if it did).
    pub serve_unconfigured: bool,
    /// The log level the host reports (`proxy_get_log_level`); `None` is
    /// trace, so every line a filter writes is captured.
    pub log_level: Option<u32>,
}

fn lower(headers: &Headers) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .pairs()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v.into_bytes()))
        .collect()
}

fn reply(spec: &UpstreamSpec) -> CalloutReply {
    let mut headers = vec![(":status".to_string(), spec.status.to_string())];
    headers.extend(spec.headers.pairs());
    CalloutReply {
        headers,
        body: spec.body.clone().into_bytes(),
    }
}

fn initial_state(scenario: &Scenario, options: &HostOptions) -> HostState {
    let request = &scenario.request;
    let target = request.target();
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":authority".to_vec(), b"localhost".to_vec()),
        (b":path".to_vec(), target.clone().into_bytes()),
        (b":method".to_vec(), request.method.clone().into_bytes()),
        (b":scheme".to_vec(), b"http".to_vec()),
    ];
    let user = lower(&request.headers);
    let request_id = user
        .iter()
        .find(|(k, _)| k == b"x-request-id")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "host-test-request-id".into());
    headers.extend(user.iter().cloned());
    if !user.iter().any(|(k, _)| k == b"x-request-id") {
        headers.push((b"x-request-id".to_vec(), request_id.clone().into_bytes()));
    }
    headers.push((b"x-forwarded-proto".to_vec(), b"http".to_vec()));

    let mut properties: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut set = |path: &[&str], value: Vec<u8>| {
        properties.insert(path.join("\0").into_bytes(), value);
    };
    let source = request
        .source_address
        .clone()
        .unwrap_or_else(|| crate::scenario::DEFAULT_SOURCE_ADDRESS.into());
    set(&["source", "address"], source.into_bytes());
    set(&["destination", "address"], b"127.0.0.1:10000".to_vec());
    let (url_path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    set(&["request", "path"], target.clone().into_bytes());
    set(&["request", "url_path"], url_path.into_bytes());
    set(&["request", "query"], query.into_bytes());
    set(&["request", "method"], request.method.clone().into_bytes());
    set(&["request", "host"], b"localhost".to_vec());
    set(&["request", "scheme"], b"http".to_vec());
    set(&["request", "protocol"], b"HTTP/1.1".to_vec());
    set(&["request", "id"], request_id.into_bytes());
    set(&["plugin_name"], b"secretgate".to_vec());
    set(&["plugin_root_id"], b"secretgate".to_vec());
    set(&["plugin_vm_id"], b"secretgate".to_vec());
    if let Some(san) = &request.peer_uri_san {
        set(
            &["connection", "uri_san_peer_certificate"],
            san.clone().into_bytes(),
        );
        set(&["connection", "mtls"], vec![1]);
    }
    if let Some(claims) = &request.jwt_claims {
        let key = scenario.jwt_metadata_key();
        set(
            &[
                "metadata",
                "filter_metadata",
                "envoy.filters.http.jwt_authn",
                &key,
            ],
            encode_claims(claims),
        );
    }

    let mut upstreams = HashMap::new();
    for (name, spec) in &scenario.callouts {
        upstreams.insert(name.clone(), spec.as_ref().map(reply));
    }

    HostState {
        plugin_configuration: scenario.plugin_configuration.clone(),
        request_headers: headers,
        request_body: request.body.clone().into_bytes(),
        properties,
        now_nanos: u64::try_from(scenario.clock).unwrap_or(0) * 1_000_000_000,
        upstreams,
        disabled: options.disabled.clone(),
        failing: options.failing.clone(),
        log_level: options.log_level.unwrap_or(0),
        ..HostState::default()
    }
}

enum Step {
    Continue,
    Paused,
    Local(LocalResponse),
}

/// Calls a stream callback, then does what Envoy does after it returns:
/// sends a deferred local response, delivers callout replies.
fn stream_callback(vm: &mut Vm, name: &str, args: &[i32]) -> Result<Step> {
    vm.state_mut().continued = false;
    let action = vm.call(name, args)?.unwrap_or(ACTION_CONTINUE);
    if let Some(local) = vm.state_mut().pending_local_response.take() {
        vm.state_mut()
            .events
            .push(format!("local response {} sent", local.status));
        return Ok(Step::Local(local));
    }
    let mut queue: VecDeque<u32> = vm.state_mut().pending_callouts.drain(..).collect();
    while let Some(token) = queue.pop_front() {
        let upstream = vm
            .state()
            .http_calls
            .iter()
            .find(|c| c.token == token)
            .map(|c| c.upstream.clone())
            .unwrap_or_default();
        let reply = vm.state().upstreams.get(&upstream).cloned().flatten();
        let args = match &reply {
            Some(r) => [
                HTTP_ID,
                token as i32,
                r.headers.len() as i32,
                r.body.len() as i32,
                0,
            ],
            None => [HTTP_ID, token as i32, 0, 0, 0],
        };
        vm.state_mut().current_callout = Some((token, reply));
        vm.call("proxy_on_http_call_response", &args)?;
        vm.state_mut().current_callout = None;
        if let Some(local) = vm.state_mut().pending_local_response.take() {
            vm.state_mut()
                .events
                .push(format!("local response {} sent", local.status));
            return Ok(Step::Local(local));
        }
        queue.extend(vm.state_mut().pending_callouts.drain(..));
    }
    if action == ACTION_CONTINUE || vm.state().continued {
        Ok(Step::Continue)
    } else {
        Ok(Step::Paused)
    }
}

/// Runs one scenario in a fresh instance.
pub fn run(filter: &Filter, scenario: &Scenario, options: &HostOptions) -> Result<Outcome> {
    let mut vm = Vm::new(filter, initial_state(scenario, options))?;
    let mut outcome = Outcome::default();
    let result = drive(&mut vm, scenario, options, &mut outcome);
    let state = vm.into_state();
    outcome.logs = state.logs;
    outcome.stdio = String::from_utf8_lossy(&state.stdio).into_owned();
    outcome.filter_state = state.filter_state;
    outcome.metrics = state.metrics;
    outcome.events = state.events;
    outcome.http_calls = state.http_calls;
    result.map(|()| outcome)
}

fn drive(
    vm: &mut Vm,
    scenario: &Scenario,
    options: &HostOptions,
    outcome: &mut Outcome,
) -> Result<()> {
    configure(vm, scenario, outcome)?;
    if outcome.config_rejected.is_some() && !options.serve_unconfigured {
        return Ok(());
    }
    let request_headers = vm.state().request_headers.clone();
    let request_body = vm.state().request_body.clone();
    for _ in 1..scenario.repeat {
        exchange(vm, scenario, &mut Outcome::default())?;
        next_request(vm, &request_headers, &request_body);
    }
    exchange(vm, scenario, outcome)
}

/// Puts the request back and clears what the last one left, keeping what
/// lives longer than a request (shared data, counters).
fn next_request(vm: &mut Vm, request_headers: &[(Vec<u8>, Vec<u8>)], request_body: &[u8]) {
    let state = vm.state_mut();
    state.request_headers = request_headers.to_vec();
    state.request_body = request_body.to_vec();
    state.logs.clear();
    state.events.clear();
    state.filter_state.clear();
    state.http_calls.clear();
    state.host_calls.borrow_mut().clear();
}

/// A configured filter instance serving many requests, as one Envoy worker
/// does; used to measure the per-request cost without the start-up.
pub struct Session {
    vm: Vm,
    request_headers: Vec<(Vec<u8>, Vec<u8>)>,
    request_body: Vec<u8>,
}

impl Session {
    pub fn start(filter: &Filter, scenario: &Scenario, options: &HostOptions) -> Result<Session> {
        let state = initial_state(scenario, options);
        let request_headers = state.request_headers.clone();
        let request_body = state.request_body.clone();
        let mut vm = Vm::new(filter, state)?;
        let mut outcome = Outcome::default();
        configure(&mut vm, scenario, &mut outcome)?;
        if let Some(reason) = outcome.config_rejected {
            return Err(format_err!("configuration rejected: {reason}"));
        }
        Ok(Session {
            vm,
            request_headers,
            request_body,
        })
    }

    /// The `env` host functions the last request called, and how often.
    pub fn host_calls(&self) -> BTreeMap<String, u64> {
        self.vm.state().host_calls.borrow().clone()
    }

    /// Runs the scenario's request once more, from headers to audit record;
    /// returns the status the client got.
    pub fn request(&mut self, scenario: &Scenario) -> Result<Option<u32>> {
        next_request(&mut self.vm, &self.request_headers, &self.request_body);
        let mut outcome = Outcome::default();
        exchange(&mut self.vm, scenario, &mut outcome)?;
        Ok(outcome.status)
    }
}

/// Envoy's start-up: VM start and `on_configure`.
fn configure(vm: &mut Vm, scenario: &Scenario, outcome: &mut Outcome) -> Result<()> {
    vm.call("_initialize", &[])?;
    let config_len = scenario.plugin_configuration.len() as i32;
    // Envoy (proxy-wasm-cpp-host) creates the root context, then starts the VM.
    vm.call("proxy_on_context_create", &[ROOT_ID, 0])?;
    if vm.call("proxy_on_vm_start", &[ROOT_ID, 0])? == Some(0) {
        outcome.config_rejected = Some("proxy_on_vm_start returned false".into());
        return Ok(());
    }
    if vm.call("proxy_on_configure", &[ROOT_ID, config_len])? == Some(0) {
        let reason = vm
            .state()
            .logs
            .iter()
            .filter(|l| l.level >= 3)
            .map(|l| l.message.clone())
            .collect::<Vec<_>>()
            .join("\n");
        outcome.config_rejected = Some(reason);
    }
    Ok(())
}

/// One request's whole life in an HTTP context, upstream reply included.
fn exchange(vm: &mut Vm, scenario: &Scenario, outcome: &mut Outcome) -> Result<()> {
    vm.call("proxy_on_context_create", &[HTTP_ID, ROOT_ID])?;

    let body_len = vm.state().request_body.len() as i32;
    let headers_len = vm.state().request_headers.len() as i32;
    let step = headers_then_body(vm, "request", headers_len, body_len)?;
    match stopped(step, outcome) {
        Some(()) => {}
        None => {
            let forwarded: Vec<(String, String)> = vm
                .state()
                .request_headers
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            outcome.forwarded = Some(forwarded);
            vm.state_mut().events.push("forwarded upstream".into());
            respond_upstream(vm, &scenario.upstream, outcome)?;
        }
    }
    vm.call("proxy_on_log", &[HTTP_ID])?;
    vm.call("proxy_on_done", &[HTTP_ID])?;
    vm.call("proxy_on_delete", &[HTTP_ID])?;
    Ok(())
}

fn respond_upstream(vm: &mut Vm, upstream: &UpstreamSpec, outcome: &mut Outcome) -> Result<()> {
    let mut headers = vec![(
        b":status".to_vec(),
        upstream.status.to_string().into_bytes(),
    )];
    headers.extend(lower(&upstream.headers));
    let body = upstream.body.clone().into_bytes();
    let (headers_len, body_len) = (headers.len() as i32, body.len() as i32);
    vm.state_mut().response_headers = headers;
    vm.state_mut().response_body = body;
    let step = headers_then_body(vm, "response", headers_len, body_len)?;
    match stopped(step, outcome) {
        Some(()) => {}
        None => {
            let state = vm.state();
            let status = state
                .response_headers
                .iter()
                .find(|(k, _)| k == b":status")
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(upstream.status);
            outcome.status = Some(status);
            outcome.client_body = state.response_body.clone();
        }
    }
    Ok(())
}

/// Envoy's order for one direction: headers, then the body if headers continued.
fn headers_then_body(
    vm: &mut Vm,
    direction: &str,
    headers_len: i32,
    body_len: i32,
) -> Result<Step> {
    let headers = format!("proxy_on_{direction}_headers");
    let step = stream_callback(
        vm,
        &headers,
        &[HTTP_ID, headers_len, i32::from(body_len == 0)],
    )?;
    if matches!(step, Step::Continue) && body_len > 0 {
        let body = format!("proxy_on_{direction}_body");
        return stream_callback(vm, &body, &[HTTP_ID, body_len, 1]);
    }
    Ok(step)
}

/// Records a local response or a stall; `None` when the stream continued.
fn stopped(step: Step, outcome: &mut Outcome) -> Option<()> {
    match step {
        Step::Local(local) => {
            outcome.status = Some(local.status);
            outcome.client_body = local.body.clone();
            outcome.local_response = Some(local);
            Some(())
        }
        Step::Paused => {
            outcome.stalled = true;
            Some(())
        }
        Step::Continue => None,
    }
}

/// Checks an outcome against the scenario's expectations; returns the failures.
pub fn check(scenario: &Scenario, outcome: &Outcome) -> Vec<String> {
    let expect = &scenario.expect;
    let mut failures = Vec::new();
    let mut fail = |message: String| failures.push(message);

    match (&expect.config_rejected, &outcome.config_rejected) {
        (Some(wanted), Some(reason)) => {
            if !reason.contains(wanted.as_str()) {
                fail(format!(
                    "configuration rejected, but the reason lacks {wanted:?}: {reason}"
                ));
            }
        }
        (Some(_), None) => fail("configuration was accepted, expected a rejection".into()),
        (None, Some(reason)) => fail(format!("configuration rejected: {reason}")),
        (None, None) => {}
    }

    let forwarded = outcome.forwarded.is_some();
    let want_forwarded = expect.forwarded.or(expect.path.as_ref().map(|_| true));
    if let Some(want) = want_forwarded {
        if want != forwarded {
            let what = match &outcome.local_response {
                Some(local) => format!(
                    "answered locally {} {}",
                    local.status,
                    String::from_utf8_lossy(&local.body)
                ),
                None if outcome.stalled => "the stream stalled (paused, never resumed)".into(),
                None if outcome.config_rejected.is_some() => {
                    "never ran (configuration rejected)".into()
                }
                None => "forwarded".into(),
            };
            fail(format!("expected forwarded={want}, but it was {what}"));
        }
    }
    if let (Some(path), true) = (&expect.path, forwarded) {
        let got = outcome.forwarded_header(":path").unwrap_or("");
        if got != path {
            fail(format!("forwarded :path is {got:?}, expected {path:?}"));
        }
    }
    for (name, wanted) in &expect.forwarded_headers {
        if !forwarded {
            break;
        }
        let got = outcome.forwarded_header(&name.to_ascii_lowercase());
        if got != wanted.as_deref() {
            fail(format!(
                "forwarded header {name} is {got:?}, expected {wanted:?}"
            ));
        }
    }
    if let Some(status) = expect.status {
        if outcome.status != Some(status) {
            fail(format!("status {:?}, expected {status}", outcome.status));
        }
    }
    if !expect.body.is_empty() {
        match serde_json::from_slice::<Value>(&outcome.client_body) {
            Ok(Value::Object(body)) => {
                for (key, wanted) in &expect.body {
                    if body.get(key) != Some(wanted) {
                        fail(format!(
                            "body field {key} is {}, expected {wanted}",
                            body.get(key).map_or("absent".into(), Value::to_string)
                        ));
                    }
                }
            }
            _ => fail(format!(
                "body is not a JSON object: {}",
                String::from_utf8_lossy(&outcome.client_body)
            )),
        }
    }
    if let Some(decision) = &expect.decision {
        let got = outcome.decision();
        if got.as_deref() != Some(decision.as_str()) {
            fail(format!("decision {got:?}, expected {decision:?}"));
        }
    }
    for needle in &expect.logs_contain {
        if !outcome
            .logs
            .iter()
            .any(|l| l.message.contains(needle.as_str()))
        {
            fail(format!("no log line contains {needle:?}"));
        }
    }
    for needle in &expect.logs_not_contain {
        if let Some(line) = outcome
            .logs
            .iter()
            .find(|l| l.message.contains(needle.as_str()))
        {
            fail(format!("a log line contains {needle:?}: {}", line.message));
        }
    }
    for needle in &expect.never_contains {
        for place in leaks(outcome, needle) {
            fail(format!("{needle:?} leaked into {place}"));
        }
    }
    if !expect.audit.is_empty() {
        let record = outcome
            .filter_state
            .get(AUDIT_FILTER_STATE)
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(raw).ok());
        match record {
            None => fail(format!("no JSON audit record in {AUDIT_FILTER_STATE}")),
            Some(record) => {
                for mismatch in subset_mismatches(&expect.audit, &record, "audit") {
                    fail(mismatch);
                }
            }
        }
    }
    for (cluster, wanted) in &expect.callouts_made {
        let made = outcome
            .http_calls
            .iter()
            .filter(|call| &call.upstream == cluster)
            .filter_map(|call| serde_json::from_slice::<serde_json::Value>(&call.body).ok())
            .collect::<Vec<_>>();
        if !made
            .iter()
            .any(|body| subset_mismatches(wanted, body, "callout").is_empty())
        {
            fail(format!(
                "no callout to {cluster} with body fields {wanted:?} (made: {made:?})"
            ));
        }
    }
    for (name, wanted) in &expect.metrics {
        let got = outcome.metrics.get(name);
        if got != Some(wanted) {
            fail(format!("metric {name}: expected {wanted}, got {got:?}"));
        }
    }
    for (key, wanted) in &expect.filter_state {
        let got = outcome
            .filter_state
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if got.as_deref() != Some(wanted.as_str()) {
            fail(format!(
                "filter state {key} is {got:?}, expected {wanted:?}"
            ));
        }
    }
    failures
}

/// Where a string appears among the things a token must never reach.
/// The filter state key of the audit record (public contract).
const AUDIT_FILTER_STATE: &str = "wasm.secretgate_audit";

/// Where `got` differs from the fields `wanted` lists (objects recursively).
fn subset_mismatches(
    wanted: &serde_json::Map<String, serde_json::Value>,
    got: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    let mut mismatches = Vec::new();
    for (key, want) in wanted {
        let here = format!("{at}.{key}");
        match (want, got.get(key)) {
            (serde_json::Value::Object(inner), Some(value @ serde_json::Value::Object(_))) => {
                mismatches.extend(subset_mismatches(inner, value, &here));
            }
            (want, Some(value)) if want == value => {}
            (want, value) => mismatches.push(format!("{here} is {value:?}, expected {want}")),
        }
    }
    mismatches
}

pub fn leaks(outcome: &Outcome, needle: &str) -> Vec<String> {
    let mut places = Vec::new();
    for line in &outcome.logs {
        if line.message.contains(needle) {
            places.push(format!("log line {:?}", line.message));
        }
    }
    if outcome.stdio.contains(needle) {
        places.push("stdout/stderr".into());
    }
    if let Some(local) = &outcome.local_response {
        let headers = local
            .headers
            .iter()
            .any(|(k, v)| k.contains(needle) || v.contains(needle));
        if String::from_utf8_lossy(&local.body).contains(needle)
            || local.details.contains(needle)
            || headers
        {
            places.push("the local response".into());
        }
    }
    if let Some(reason) = &outcome.config_rejected {
        if reason.contains(needle) {
            places.push("the configuration rejection".into());
        }
    }
    for (key, value) in &outcome.filter_state {
        if key.contains(needle) || String::from_utf8_lossy(value).contains(needle) {
            places.push(format!("filter state {key}"));
        }
    }
    places
}

/// One scenario's result.
#[derive(Debug)]
pub struct Report {
    pub file: String,
    pub name: String,
    pub conformance: bool,
    pub elapsed: Duration,
    /// Empty: passed.
    pub failures: Vec<String>,
    pub outcome: Option<Outcome>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

pub fn run_and_check(filter: &Filter, scenario: &Scenario, options: &HostOptions) -> Report {
    let start = Instant::now();
    let (failures, outcome) = match run(filter, scenario, options) {
        Ok(outcome) => (check(scenario, &outcome), Some(outcome)),
        Err(e) => (vec![format!("host error: {e:?}")], None),
    };
    Report {
        file: scenario.file.display().to_string(),
        name: scenario.name.clone(),
        conformance: scenario.conformance,
        elapsed: start.elapsed(),
        failures,
        outcome,
    }
}

/// Runs scenarios in parallel (one instance each), on threads with the
/// native stack the Wasm stack limit needs. Reports keep the input order.
pub fn run_all(
    filter: &Filter,
    scenarios: &[Scenario],
    options: &HostOptions,
) -> Result<Vec<Report>> {
    let workers = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(scenarios.len().max(1));
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Report>>> =
        Mutex::new((0..scenarios.len()).map(|_| None).collect());
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let handle = std::thread::Builder::new()
                .stack_size(THREAD_STACK)
                .spawn_scoped(scope, || loop {
                    let index = {
                        let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                        let index = *next;
                        *next += 1;
                        index
                    };
                    let Some(scenario) = scenarios.get(index) else {
                        break;
                    };
                    let report = run_and_check(filter, scenario, options);
                    results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(report);
                })
                .map_err(|e| format_err!("cannot spawn a scenario thread: {e}"))?;
            handles.push(handle);
        }
        for handle in handles {
            handle
                .join()
                .map_err(|_| format_err!("a scenario thread panicked"))?;
        }
        Ok(())
    })?;
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

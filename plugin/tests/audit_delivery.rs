//! Issue #15 item 2: a record that cannot be handed to the host (refused,
//! or over `max_record_bytes`) is never silently lost. With `on_failure:
//! deny` a request not yet answered is refused; otherwise the loss is
//! reported, and a compact record still says what happened.

use secretgate::audit::{
    deliver, AuditConfig, Delivery, OnFailure, RawAuditConfig, RecordSink, ResponseFacts, Stage,
};
use secretgate::record::{DecisionRecord, Outcome};
use serde_json::{json, Map, Value};

/// Keeps what it is given; refuses everything, or records over a size.
#[derive(Default)]
struct Sink {
    refuse_all: bool,
    refuse_over: Option<usize>,
    written: Vec<String>,
}

impl RecordSink for Sink {
    fn put(&mut self, record: &str) -> Result<(), String> {
        if self.refuse_all || self.refuse_over.is_some_and(|limit| record.len() > limit) {
            return Err("filter state refused (status 2)".into());
        }
        self.written.push(record.to_owned());
        Ok(())
    }
}

fn audit(extra: Value) -> AuditConfig {
    let mut raw = json!({"mode": "hmac-sha256", "hmac_key": "delivery-test-key-0123"});
    if let (Some(target), Some(fields)) = (raw.as_object_mut(), extra.as_object()) {
        target.extend(fields.clone());
    }
    AuditConfig::from_raw(serde_json::from_value::<RawAuditConfig>(raw).unwrap()).unwrap()
}

fn allowed(principal_id: &str) -> DecisionRecord {
    let mut record = DecisionRecord::new(
        "req-1".into(),
        "GET",
        "/v1/secret/data/app/db",
        Some("10.0.0.1:5000"),
        1_700_000_000_000_000_000,
    );
    record.outcome = Outcome::Allowed;
    record.reason = "permitted".into();
    record.principal = Some(("Workload".into(), principal_id.into()));
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(principal_id));
    record.claims = claims;
    record
}

fn only_record(sink: &Sink) -> Value {
    assert_eq!(sink.written.len(), 1, "{:?}", sink.written);
    serde_json::from_str(&sink.written[0]).unwrap()
}

#[test]
fn a_record_that_fits_is_written_whole() {
    let mut sink = Sink::default();
    let record = allowed("repo:acme/api");
    let delivered = deliver(
        &audit(json!({})),
        &record,
        &ResponseFacts::default(),
        Stage::BeforeAnswer,
        &mut sink,
    );
    assert_eq!(delivered, Delivery::Written);
    let written = only_record(&sink);
    assert_eq!(written["decision"], "allow");
    assert!(written.get("audit_error").is_none());
}

#[test]
fn deny_mode_refuses_a_request_whose_record_is_too_large() {
    let config = audit(json!({"max_record_bytes": 4096}));
    assert_eq!(config.on_failure, OnFailure::Deny);
    let long_id = "p".repeat(5000);
    let mut sink = Sink::default();
    let delivered = deliver(
        &config,
        &allowed(&long_id),
        &ResponseFacts::default(),
        Stage::BeforeAnswer,
        &mut sink,
    );
    assert_eq!(delivered, Delivery::Refused);
    let written = only_record(&sink);
    assert_eq!(written["decision"], "audit_unavailable");
    assert_eq!(written["reason"], "audit unavailable");
    assert_eq!(written["response_status"], 503);
    assert_eq!(written["claims"], json!({}));
    assert_eq!(written["principal"]["id"].as_str().unwrap().len(), 256);
    let error = written["audit_error"].as_str().unwrap();
    assert!(error.contains("over max_record_bytes (4096)"), "{error}");
    assert!(sink.written[0].len() <= 4096);
}

#[test]
fn a_refused_record_in_deny_mode_still_leaves_a_compact_one_if_the_host_takes_it() {
    // The host refuses anything as large as the full record, but takes the compact one.
    let config = audit(json!({}));
    let record = allowed(&"q".repeat(3000));
    let mut sink = Sink {
        refuse_over: Some(2000),
        ..Sink::default()
    };
    assert_eq!(
        deliver(
            &config,
            &record,
            &ResponseFacts::default(),
            Stage::BeforeAnswer,
            &mut sink
        ),
        Delivery::Refused
    );
    let written = only_record(&sink);
    assert_eq!(written["decision"], "audit_unavailable");
    assert!(written["audit_error"]
        .as_str()
        .unwrap()
        .contains("the host refused the record"));
}

#[test]
fn after_the_answer_started_a_failure_is_a_loss_never_a_refusal() {
    let config = audit(json!({"max_record_bytes": 4096}));
    let mut body = config.capture();
    let secret: Map<String, Value> = (0..80)
        .map(|i| (format!("k{i}"), json!(format!("v{i}"))))
        .collect();
    body.feed(json!({"data": {"data": secret}}).to_string().as_bytes());
    let response = ResponseFacts {
        status: Some(200),
        request_body: None,
        response_body: Some(&body),
    };
    let mut sink = Sink::default();
    let delivered = deliver(
        &config,
        &allowed("repo:acme/api"),
        &response,
        Stage::AnswerStarted,
        &mut sink,
    );
    assert_eq!(delivered, Delivery::Lost);
    let written = only_record(&sink);
    assert_eq!(
        written["decision"], "allow",
        "the answer went out: the record says so"
    );
    assert_eq!(written["response_status"], 200);
    assert_eq!(written["response_body"], Value::Null);
    assert!(written["audit_error"]
        .as_str()
        .unwrap()
        .contains("max_record_bytes"));
}

#[test]
fn log_mode_goes_on_and_reports_the_loss() {
    let config = audit(json!({"on_failure": "log"}));
    let mut sink = Sink {
        refuse_all: true,
        ..Sink::default()
    };
    let delivered = deliver(
        &config,
        &allowed("a"),
        &ResponseFacts::default(),
        Stage::BeforeAnswer,
        &mut sink,
    );
    assert_eq!(delivered, Delivery::Lost);
    assert!(sink.written.is_empty());
}

#[test]
fn on_failure_and_max_record_bytes_are_validated() {
    let load = |v: Value| {
        serde_json::from_value::<RawAuditConfig>(v)
            .map_err(|e| e.to_string())
            .and_then(AuditConfig::from_raw)
    };
    assert_eq!(load(json!({})).unwrap().on_failure, OnFailure::Deny);
    assert_eq!(
        load(json!({"on_failure": "log"})).unwrap().on_failure,
        OnFailure::Log
    );
    assert!(load(json!({"on_failure": "ignore"}))
        .unwrap_err()
        .contains("on_failure"));
    assert!(load(json!({"max_record_bytes": 100}))
        .unwrap_err()
        .contains("max_record_bytes"));
    assert_eq!(load(json!({})).unwrap().max_record_bytes, 1024 * 1024);
}

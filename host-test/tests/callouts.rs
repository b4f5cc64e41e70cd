//! proxy_http_call / on_http_call_response, pause and continue, set_property:
//! the filter uses none of them yet, so a small hand-written module does.

use std::path::Path;

use host_test::host::{Filter, HostState, Vm};
use host_test::runner::{run_and_check, HostOptions};
use host_test::scenario;

fn data(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// On request headers: calls the `authz` cluster and pauses. On the reply:
/// a failed callout (no headers) answers 503 locally; a reply with an empty
/// body is ignored (the stream stays paused); any other reply sets filter
/// state `wasm.callout` and continues the stream. If the host refuses the
/// call, answers 500.
fn module() -> Filter {
    let headers = host_test::pairs::encode(&[
        (b":method".to_vec(), b"GET".to_vec()),
        (b":path".to_vec(), b"/check".to_vec()),
        (b":authority".to_vec(), b"authz".to_vec()),
    ]);
    let empty = host_test::pairs::encode(&[]);
    let wat = format!(
        r#"(module
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 1024) "{headers}")
  (data (i32.const 2048) "authz")
  (data (i32.const 2100) "callout")
  (data (i32.const 2200) "ok")
  (data (i32.const 2300) "{empty}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne
          (call $http_call (i32.const 2048) (i32.const 5) (i32.const 1024) (i32.const {headers_len})
                           (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 4000))
          (i32.const 0))
      (then
        (drop (call $local (i32.const 500) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                           (i32.const 2300) (i32.const {empty_len}) (i32.const -1)))
        (return (i32.const 1))))
    (i32.const 1))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (if (i32.eqz (local.get 2))
      (then
        (drop (call $local (i32.const 503) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                           (i32.const 2300) (i32.const {empty_len}) (i32.const -1))))
      (else
        (if (i32.eqz (local.get 3)) (then (return)))
        (drop (call $set_property (i32.const 2100) (i32.const 7) (i32.const 2200) (i32.const 2)))
        (drop (call $continue (i32.const 0))))))
  (func (export "call_unimplemented") (result i32)
    (call $enqueue (i32.const 0) (i32.const 0) (i32.const 0)))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))"#,
        headers = data(&headers),
        headers_len = headers.len(),
        empty = data(&empty),
        empty_len = empty.len(),
    );
    Filter::from_bytes(wat.as_bytes()).expect("the test module compiles")
}

const SCENARIOS: &str = r#"
config: {inline: "{}"}
scenarios:
  - name: a reply resumes the paused stream
    callouts: {authz: {status: 200, body: ok}}
    expect: {forwarded: true, status: 200, filter_state: {wasm.callout: ok}}
  - name: a failed callout is delivered as (token, 0, 0, 0)
    callouts: {authz: null}
    expect: {forwarded: false, status: 503}
  - name: an unknown cluster is refused at the call
    expect: {forwarded: false, status: 500}
  - name: a paused stream that never resumes stalls
    callouts: {authz: {status: 200, body: ""}}
    expect: {forwarded: false}
"#;

#[test]
fn callouts_pause_and_continue() {
    let dir = std::env::temp_dir().join(format!("host-test-callouts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("callouts.yaml");
    std::fs::write(&file, SCENARIOS).unwrap();
    let scenarios = scenario::load_file(Path::new(&file)).unwrap();
    let filter = module();
    let reports: Vec<_> = scenarios
        .iter()
        .map(|s| run_and_check(&filter, s, &HostOptions::default()))
        .collect();
    for report in &reports {
        assert!(report.passed(), "{}: {:?}", report.name, report.failures);
    }
    let outcome = reports[0].outcome.as_ref().unwrap();
    assert_eq!(outcome.http_calls.len(), 1);
    assert_eq!(outcome.http_calls[0].upstream, "authz");
    assert!(outcome.events.iter().any(|e| e == "proxy_continue_stream"));
    // The call to an unknown cluster was refused (BadArgument), not made.
    assert!(reports[2].outcome.as_ref().unwrap().http_calls.is_empty());
    let stalled = reports[3].outcome.as_ref().unwrap();
    assert!(stalled.stalled && stalled.status.is_none() && stalled.forwarded.is_none());
}

#[test]
fn an_import_the_host_does_not_implement_links_and_fails_naming_itself() {
    let mut vm = Vm::new(&module(), HostState::default()).expect("every import links");
    let error = vm.call("call_unimplemented", &[]).unwrap_err();
    let message = format!("{error:?}");
    assert!(
        message.contains(
            "unimplemented host function env::proxy_enqueue_shared_queue called by the filter"
        ),
        "{message}"
    );
}

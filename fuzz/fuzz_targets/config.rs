//! Plugin configuration parsing: the JSON Envoy hands the filter at start,
//! with its Cedar schema, policies and entities. Property: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secretgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let _ = Config::from_json(data);
});

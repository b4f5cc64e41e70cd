//! Counters through proxy-wasm metrics, visible in Envoy's `/stats` as
//! `wasmcustom.secretgate.*`. Counting must never fail a request: a counter
//! the host refuses is logged once and then skipped.

use std::cell::RefCell;
use std::collections::HashMap;

use super::abi;

thread_local! {
    /// One VM runs on one thread; ids are per VM.
    static COUNTERS: RefCell<HashMap<String, Option<u32>>> = RefCell::new(HashMap::new());
}

/// Adds one to the counter `secretgate.<name>`, defining it on first use.
pub fn count(name: &str) {
    COUNTERS.with(|counters| {
        let mut counters = counters.borrow_mut();
        let id = match counters.get(name) {
            Some(id) => *id,
            None => {
                let full = format!("secretgate.{name}");
                let id = match abi::define_counter(&full) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        abi::log(abi::LOG_ERROR, &format!("secretgate: metric {full}: {e}"));
                        None
                    }
                };
                counters.insert(name.to_owned(), id);
                id
            }
        };
        if let Some(id) = id {
            if let Err(e) = abi::increment_counter(id, 1) {
                abi::log(abi::LOG_ERROR, &format!("secretgate: metric {name}: {e}"));
            }
        }
    });
}

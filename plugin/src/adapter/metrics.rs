//! Counters through proxy-wasm metrics, visible in Envoy's `/stats` as
//! `wasmcustom.secretgate.<group>.<name>`. Counting must never fail a
//! request: a counter the host refuses is logged once and then skipped.

use std::cell::RefCell;

use super::abi;

/// A defined counter: its group and name, and the host's id (`None`: refused).
struct Counter {
    group: &'static str,
    name: String,
    id: Option<u32>,
}

thread_local! {
    /// One VM runs on one thread; ids are per VM. A few dozen counters at
    /// most, so a list is searched without building a key per request.
    static COUNTERS: RefCell<Vec<Counter>> = const { RefCell::new(Vec::new()) };
}

/// Adds one to the counter `secretgate.<group>.<name>`, defining it on first use.
pub fn count(group: &'static str, name: &str) {
    COUNTERS.with(|counters| {
        let mut counters = counters.borrow_mut();
        let known = counters
            .iter()
            .find(|c| c.group == group && c.name == name)
            .map(|c| c.id);
        let id = match known {
            Some(id) => id,
            None => {
                let full = format!("secretgate.{group}.{name}");
                let id = match abi::define_counter(&full) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        abi::log(abi::LOG_ERROR, &format!("secretgate: metric {full}: {e}"));
                        None
                    }
                };
                counters.push(Counter {
                    group,
                    name: name.to_owned(),
                    id,
                });
                id
            }
        };
        if let Some(id) = id {
            if let Err(e) = abi::increment_counter(id, 1) {
                abi::log(
                    abi::LOG_ERROR,
                    &format!("secretgate: metric {group}.{name}: {e}"),
                );
            }
        }
    });
}

//! Counters and gauges through proxy-wasm metrics, visible in Envoy's
//! `/stats` as `wasmcustom.secretgate.<group>.<name>`. Measuring must never
//! fail a request: a metric the host refuses is logged once and then skipped.
//!
//! Gauges are only ever moved by deltas, never set: every worker thread runs
//! its own VM, all of them share one host gauge per name, and only deltas add
//! up across VMs to a total for the whole Envoy.

use std::cell::{Cell, RefCell};

use super::abi;

/// A defined metric: its group and name, and the host's id (`None`: refused).
struct Metric {
    group: &'static str,
    name: String,
    id: Option<u32>,
}

thread_local! {
    /// One VM runs on one thread; ids are per VM. A few dozen metrics at
    /// most, so a list is searched without building a key per request.
    static METRICS: RefCell<Vec<Metric>> = const { RefCell::new(Vec::new()) };
    /// The linear memory size this VM last added to `vm.memory_bytes`.
    static REPORTED_MEMORY: Cell<i64> = const { Cell::new(0) };
}

/// Adds one to the counter `secretgate.<group>.<name>`, defining it on first use.
pub fn count(group: &'static str, name: &str) {
    step(abi::METRIC_COUNTER, group, name, 1);
}

/// Moves `secretgate.<group>.<name>`, a gauge, by `delta`.
fn adjust(group: &'static str, name: &str, delta: i64) {
    step(abi::METRIC_GAUGE, group, name, delta);
}

fn step(metric_type: u32, group: &'static str, name: &str, delta: i64) {
    METRICS.with(|metrics| {
        let mut metrics = metrics.borrow_mut();
        let known = metrics
            .iter()
            .find(|m| m.group == group && m.name == name)
            .map(|m| m.id);
        let id = match known {
            Some(id) => id,
            None => {
                let full = format!("secretgate.{group}.{name}");
                let id = match abi::define_metric(metric_type, &full) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        abi::log(abi::LOG_ERROR, &format!("secretgate: metric {full}: {e}"));
                        None
                    }
                };
                metrics.push(Metric {
                    group,
                    name: name.to_owned(),
                    id,
                });
                id
            }
        };
        if let Some(id) = id {
            if let Err(e) = abi::increment_metric(id, delta) {
                abi::log(
                    abi::LOG_ERROR,
                    &format!("secretgate: metric {group}.{name}: {e}"),
                );
            }
        }
    });
}

/// Holds one unit of the gauge `secretgate.live.<name>` for as long as it
/// lives: what is created must be dropped, so a gauge that does not return
/// to zero when Envoy is idle is a leak.
pub struct Live(&'static str);

impl Live {
    pub fn hold(name: &'static str) -> Live {
        adjust("live", name, 1);
        Live(name)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        adjust("live", self.0, -1);
    }
}

/// Brings `secretgate.vm.memory_bytes` up to date with this VM's linear
/// memory, which only grows: the gauge is the sum over all VMs, and a leak
/// shows as a gauge that keeps climbing under a steady load.
pub fn report_memory() {
    let now = linear_memory_bytes();
    let before = REPORTED_MEMORY.with(|reported| reported.replace(now));
    if now != before {
        adjust("vm", "memory_bytes", now - before);
    }
}

fn linear_memory_bytes() -> i64 {
    const WASM_PAGE_BYTES: i64 = 64 * 1024;
    i64::try_from(core::arch::wasm32::memory_size(0)).unwrap_or(i64::MAX / WASM_PAGE_BYTES)
        * WASM_PAGE_BYTES
}

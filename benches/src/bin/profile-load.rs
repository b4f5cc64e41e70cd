//! Loads a generated configuration a fixed number of times, for profiles of
//! what Envoy pays once per VM and once per bundle swap: parsing, strict
//! validation, entities and the scope index.
//!
//!     profile-load <policies> <iterations>
//!     perf record -g target/profiling/profile-load 10000 3
//!
//! Prints the wall time of each load, the heap it keeps (what a Wasm VM
//! holds for the configuration) and the heap's peak while loading (what a
//! Wasm VM's linear memory grows to, since it never shrinks). Natively, on a
//! 64-bit machine: pointers take twice the room they take in `wasm32`.
//! Build with `cargo build --profile profiling -p secretgate-benches --bins`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use secretgate::config::Config;
use secretgate_benches::policyset::PolicySet;

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `step` once and prints its time, the heap it kept and its peak.
fn measure<T>(what: &str, step: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let value = step()?;
    println!(
        "{what}: {:?}; heap kept {:.1} MiB, peak {:.1} MiB",
        started.elapsed(),
        mib(LIVE.load(Ordering::Relaxed).saturating_sub(before)),
        mib(PEAK.load(Ordering::Relaxed) - before)
    );
    Ok(value)
}

fn run(args: &[String]) -> Result<(), String> {
    let [count, iterations] = args else {
        return Err("usage: profile-load <policies> <iterations>".into());
    };
    let count: usize = count.parse().map_err(|e| format!("{count:?}: {e}"))?;
    let iterations: usize = iterations
        .parse()
        .map_err(|e| format!("{iterations:?}: {e}"))?;
    let set = PolicySet::generate(count);
    measure("Cedar's parse of the policy text alone", || {
        cedar_policy::PolicySet::from_str(&set.policies).map_err(|e| e.to_string())
    })?;
    measure("Cedar's entities alone (without schema)", || {
        cedar_policy::Entities::from_json_value(set.entities.clone(), None)
            .map_err(|e| e.to_string())
    })?;
    let text = set.filter_config().to_string();
    for _ in 0..iterations {
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let started = Instant::now();
        let config = Config::from_json(text.as_bytes()).map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let kept = LIVE.load(Ordering::Relaxed) - before;
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let policies = config.engine.as_ref().map_or(0, |e| e.policy_count());
        println!(
            "{policies} policies loaded in {elapsed:?}; heap kept {:.1} MiB, peak while loading {:.1} MiB (beyond the {:.1} MiB configuration text)",
            mib(kept),
            mib(peak),
            mib(text.len())
        );
        if std::env::var_os("PROFILE_LOAD_KEEP").is_some() {
            std::mem::forget(config);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profile-load: {e}");
            ExitCode::from(2)
        }
    }
}

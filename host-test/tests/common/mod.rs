//! Shared by the integration tests: the filter, compiled once per test binary.

use std::sync::OnceLock;

use host_test::host::Filter;

pub fn filter() -> &'static Filter {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    FILTER.get_or_init(|| {
        let wasm = host_test::default_wasm();
        assert!(
            wasm.is_file(),
            "the filter is not built at {}: run `bash envoy/setup.sh` (or `cargo build --release --target wasm32-wasip1 -p secretgate`) first, or set SECRETGATE_WASM",
            wasm.display()
        );
        Filter::load(&wasm).unwrap_or_else(|e| panic!("cannot load {}: {e:?}", wasm.display()))
    })
}

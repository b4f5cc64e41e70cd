//! An HTTP filter that does nothing: built with the same SDK, target and
//! profile as Secretgate, so the load benchmark can tell what Envoy charges
//! for running any Wasm filter (a context per request, its callbacks across
//! the V8 boundary) from what Secretgate's own work costs.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }
}

struct NoopHttp;

impl Context for NoopHttp {}

/// Every callback keeps the SDK's default: continue, touch nothing.
impl HttpContext for NoopHttp {}

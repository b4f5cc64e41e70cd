//! The few proxy-wasm host calls the filter makes, with every status mapped
//! to a typed error. The SDK's `hostcalls` panic on an unexpected status
//! (and its map readers on non-UTF-8 values); a panic traps the VM and
//! takes every request down, so the filter calls the ABI through here.

use std::fmt;
use std::ptr::null_mut;

// Values from the proxy-wasm ABI 0.2.1 specification.
const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;
pub const STATUS_CAS_MISMATCH: u32 = 8;

pub const LOG_DEBUG: u32 = 1;
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const BUFFER_REQUEST_BODY: u32 = 0;
pub const BUFFER_RESPONSE_BODY: u32 = 1;
pub const BUFFER_CALLOUT_RESPONSE_BODY: u32 = 4;
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const MAP_RESPONSE_HEADERS: u32 = 2;
pub const MAP_CALLOUT_RESPONSE_HEADERS: u32 = 6;
const STREAM_HTTP_REQUEST: u32 = 0;
/// proxy-wasm's metric types.
pub const METRIC_COUNTER: u32 = 0;
pub const METRIC_GAUGE: u32 = 1;

/// A host call that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub call: &'static str,
    pub status: u32,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with status {}", self.call, self.status)
    }
}

// The SDK declares the same imports with its own enum types; the wasm
// signatures are identical (u32 in, u32 out).
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

// std imports it too, for its hash seeds; Envoy answers it with BoringSSL's
// RAND_bytes.
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, buf_len: usize) -> u16;
}

fn check(call: &'static str, status: u32) -> Result<(), HostError> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostError { call, status })
    }
}

/// Takes ownership of a buffer the host allocated through the module's
/// `proxy_on_memory_allocate`.
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated `size` bytes at `data` with the SDK's
    // allocator (a Vec<u8> of that capacity) and hands ownership over.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// Logging must never fail the request; a failed log is dropped.
pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length describe a live &str.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The level Envoy logs the plugin's messages at and above.
pub fn log_level() -> Result<u32, HostError> {
    let mut level = 0u32;
    // SAFETY: the host writes one u32 into a local.
    check("proxy_get_log_level", unsafe {
        proxy_get_log_level(&mut level)
    })?;
    Ok(level)
}

pub fn now_nanos() -> Result<u64, HostError> {
    let mut nanos = 0u64;
    // SAFETY: the host writes one u64 into a local.
    check("proxy_get_current_time_nanoseconds", unsafe {
        proxy_get_current_time_nanoseconds(&mut nanos)
    })?;
    Ok(nanos)
}

pub fn buffer(buffer_type: u32) -> Result<Vec<u8>, HostError> {
    buffer_range(buffer_type, 0, usize::MAX)
}

pub fn buffer_range(buffer_type: u32, start: usize, max_size: usize) -> Result<Vec<u8>, HostError> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: out-pointers to locals; the result is taken over by `owned`.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(owned(data, size)),
        STATUS_NOT_FOUND => Ok(Vec::new()),
        status => Err(HostError {
            call: "proxy_get_buffer_bytes",
            status,
        }),
    }
}

/// The raw pairs encoding of a header map (decode with `pairs::decode`).
pub fn header_pairs(map_type: u32) -> Result<Vec<u8>, HostError> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: out-pointers to locals; the result is taken over by `owned`.
    check("proxy_get_header_map_pairs", unsafe {
        proxy_get_header_map_pairs(map_type, &mut data, &mut size)
    })?;
    Ok(owned(data, size))
}

/// One header's value; `None` when absent.
pub fn header_value(map_type: u32, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: the name is a live &str; out-pointers to locals.
    let status = unsafe {
        proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match status {
        STATUS_OK => Ok(Some(owned(data, size))),
        STATUS_NOT_FOUND => Ok(None),
        status => Err(HostError {
            call: "proxy_get_header_map_value",
            status,
        }),
    }
}

/// Resumes a request paused in `on_http_request_headers`.
pub fn resume_request() -> Result<(), HostError> {
    // SAFETY: no pointers.
    check("proxy_continue_stream", unsafe {
        proxy_continue_stream(STREAM_HTTP_REQUEST)
    })
}

/// Sets filter state; Envoy stores `name` as `wasm.<name>`.
pub fn set_property(name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live buffers.
    check("proxy_set_property", unsafe {
        proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn replace_header(map_type: u32, name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live &strs.
    check("proxy_replace_header_map_value", unsafe {
        proxy_replace_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map_type: u32, name: &str) -> Result<(), HostError> {
    // SAFETY: pointer and length describe a live &str.
    check("proxy_remove_header_map_value", unsafe {
        proxy_remove_header_map_value(map_type, name.as_ptr(), name.len())
    })
}

/// A property by path; `None` when the host has no such property.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let serialized = path.join("\0");
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: the path is a live buffer; out-pointers to locals.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(Some(owned(data, size))),
        STATUS_NOT_FOUND => Ok(None),
        status => Err(HostError {
            call: "proxy_get_property",
            status,
        }),
    }
}

pub fn send_local_response(
    status_code: u32,
    headers: &[(&[u8], &[u8])],
    body: &[u8],
) -> Result<(), HostError> {
    let serialized = crate::pairs::encode(headers);
    let details = "secretgate";
    // SAFETY: all pointers and lengths describe live buffers.
    check("proxy_send_local_response", unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// Asks the host to call the root context's `on_tick` every `period_ms`.
pub fn set_tick_period(period_ms: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check("proxy_set_tick_period_milliseconds", unsafe {
        proxy_set_tick_period_milliseconds(period_ms)
    })
}

/// Defines a counter or gauge (Envoy shows it in `/stats` as
/// `wasmcustom.<name>`). Every VM that defines the same name gets the same
/// host metric, so increments from all VMs add up.
pub fn define_metric(metric_type: u32, name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: the name is a live &str; the host writes one u32 into a local.
    check("proxy_define_metric", unsafe {
        proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Adds `by` to a metric; a gauge also takes negative steps.
pub fn increment_metric(id: u32, by: i64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check("proxy_increment_metric", unsafe {
        proxy_increment_metric(id, by)
    })
}

/// A shared-data value (shared by every VM of the plugin) and its CAS
/// token; `(None, 0)` when the key was never set.
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
    let mut data = null_mut();
    let mut size = 0usize;
    let mut cas = 0u32;
    // SAFETY: the key is a live &str; out-pointers to locals, the value is
    // taken over by `owned`.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        STATUS_OK => Ok((Some(owned(data, size)), cas)),
        STATUS_NOT_FOUND => Ok((None, 0)),
        status => Err(HostError {
            call: "proxy_get_shared_data",
            status,
        }),
    }
}

/// Sets a shared-data value if its CAS token is still `cas` (0: always).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live buffers.
    check("proxy_set_shared_data", unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Fills `out` with random bytes from the host (WASI `random_get`).
pub fn random_bytes(out: &mut [u8]) -> Result<(), HostError> {
    // SAFETY: pointer and length describe a live, writable buffer.
    let errno = unsafe { random_get(out.as_mut_ptr(), out.len()) };
    check("random_get", u32::from(errno))
}

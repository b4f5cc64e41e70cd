//! A proxy-wasm (ABI 0.2.1) host on wasmtime: loads the compiled filter and
//! drives one HTTP stream through it, recording everything it does.
//!
//! Every import of the module is linked: the host functions the filter uses
//! are implemented with Envoy's semantics; any other import is linked to a
//! stub that traps with "unimplemented host function <module>::<name>", so a
//! filter that starts using a new host call fails its scenarios loudly
//! instead of silently getting a default.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use wasmtime::{
    bail, format_err, Caller, Config, Engine, Extern, ExternType, Func, Instance, Linker, Module,
    OptLevel, Result, Store, Val,
};

use crate::pairs;

pub const ENV: &str = "env";
pub const WASI: &str = "wasi_snapshot_preview1";

// Values from the proxy-wasm ABI 0.2.1 specification.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const CAS_MISMATCH: i32 = 8;

const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_REQUEST_TRAILERS: i32 = 1;
const MAP_RESPONSE_HEADERS: i32 = 2;
const MAP_RESPONSE_TRAILERS: i32 = 3;
const MAP_HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
const MAP_HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;

const BUFFER_REQUEST_BODY: i32 = 0;
const BUFFER_RESPONSE_BODY: i32 = 1;
const BUFFER_HTTP_CALL_RESPONSE_BODY: i32 = 4;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;

pub const ACTION_CONTINUE: i32 = 0;

const ROOT_CONTEXT_ID: i32 = 1;
const HTTP_CONTEXT_ID: i32 = 2;

/// The compiled filter, shareable between threads: compile once, run many
/// scenarios (each in its own `Store`, so no state is shared).
#[derive(Clone)]
pub struct Filter {
    engine: Engine,
    module: Module,
    linker: Linker<HostState>,
}

impl Filter {
    pub fn load(path: &Path) -> Result<Filter> {
        let bytes = std::fs::read(path).map_err(|e| {
            format_err!(
                "cannot read the filter at {}: {e} (build it with `cargo build --release --target wasm32-wasip1 -p secretgate` or run envoy/setup.sh)",
                path.display()
            )
        })?;
        let engine = Filter::engine()?;
        let module = match cache_file(&engine, &bytes) {
            Some(cached) => Filter::cached_module(&engine, &bytes, &cached)?,
            None => Module::new(&engine, &bytes)?,
        };
        Filter::with_module(engine, module)
    }

    /// Compiling takes seconds; the compiled code is kept next to the build
    /// output, keyed by the module's bytes and the engine's settings.
    fn cached_module(engine: &Engine, bytes: &[u8], cached: &Path) -> Result<Module> {
        if cached.is_file() {
            // SAFETY: the file was written by `Module::serialize` below for
            // exactly these bytes and engine settings (its name is their
            // hash) in the build directory; wasmtime checks its version and
            // configuration header and refuses a mismatch.
            if let Ok(module) = unsafe { Module::deserialize_file(engine, cached) } {
                return Ok(module);
            }
        }
        let module = Module::new(engine, bytes)?;
        if let (Ok(serialized), Some(dir)) = (module.serialize(), cached.parent()) {
            let partial = cached.with_extension(format!("{}.partial", std::process::id()));
            // Best effort: a failed write only costs the next run a compile.
            if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&partial, serialized).is_ok()
            {
                // Keep one compiled module: older builds' entries are 13 MB each.
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "cwasm") {
                        let _ = std::fs::remove_file(path);
                    }
                }
                let _ = std::fs::rename(&partial, cached);
            }
        }
        Ok(module)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Filter> {
        let engine = Filter::engine()?;
        let module = Module::new(&engine, bytes)?;
        Filter::with_module(engine, module)
    }

    fn engine() -> Result<Engine> {
        let mut config = Config::new();
        // Compile speed matters more than run speed for a test host.
        config.cranelift_opt_level(OptLevel::None);
        // Cedar recurses on expression depth. The filter's own (shadow) stack
        // is 8 MiB of linear memory; this bounds the native frames, and
        // wasmtime caps it at its (unused) async stack size, 2 MiB.
        config.max_wasm_stack(2 << 20);
        Engine::new(&config)
    }

    fn with_module(engine: Engine, module: Module) -> Result<Filter> {
        let exports: HashSet<&str> = module.exports().map(|e| e.name()).collect();
        if !exports.contains("proxy_abi_version_0_2_1") {
            bail!(
                "the module does not export proxy_abi_version_0_2_1: not a proxy-wasm 0.2.1 filter"
            );
        }
        let mut linker = Linker::new(&engine);
        define_env(&mut linker)?;
        define_wasi(&mut linker)?;
        define_unimplemented(&mut linker, &module)?;
        Ok(Filter {
            engine,
            module,
            linker,
        })
    }

    /// `(module, name)` of every import.
    pub fn imports(&self) -> Vec<(String, String)> {
        self.module
            .imports()
            .map(|i| (i.module().to_string(), i.name().to_string()))
            .collect()
    }
}

/// `<target>/host-test-cache/<hash>.cwasm`, unless `HOST_TEST_NO_CACHE` is set.
fn cache_file(engine: &Engine, bytes: &[u8]) -> Option<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    if std::env::var_os("HOST_TEST_NO_CACHE").is_some() {
        return None;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    Some(
        crate::target_dir()
            .join("host-test-cache")
            .join(format!("{:016x}.cwasm", hasher.finish())),
    )
}

/// The native stack a scenario thread needs for `max_wasm_stack` above.
pub const THREAD_STACK: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

/// A reply to a callout, by upstream cluster name. `None`: the callout fails
/// (delivered as `on_http_call_response(token, 0, 0, 0)`, as Envoy does).
#[derive(Debug, Clone, Default)]
pub struct CalloutReply {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Everything the host knows about the stream and records about the filter.
#[derive(Default)]
pub struct HostState {
    pub plugin_configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub request_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub request_trailers: Vec<(Vec<u8>, Vec<u8>)>,
    pub response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub response_trailers: Vec<(Vec<u8>, Vec<u8>)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// Properties by their `\0`-joined path.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub now_nanos: u64,
    /// Callout replies by upstream cluster; a cluster absent here is unknown
    /// to the host (`proxy_http_call` answers BadArgument, as Envoy does).
    pub upstreams: HashMap<String, Option<CalloutReply>>,
    /// Host functions to treat as unimplemented (tests of the host itself).
    pub disabled: HashSet<String>,
    /// Host functions that fail with this status instead of doing their
    /// work, as Envoy's may (`proxy_set_property`, `proxy_get_header_map_pairs`).
    pub failing: HashMap<String, i32>,

    /// How often the filter called each `env` host function (a Cell, since
    /// host functions see the state through a shared borrow first).
    pub host_calls: std::cell::RefCell<BTreeMap<String, u64>>,
    /// What `proxy_get_log_level` answers (0, trace, captures everything).
    pub log_level: u32,
    pub logs: Vec<LogLine>,
    pub stdio: Vec<u8>,
    pub filter_state: BTreeMap<String, Vec<u8>>,
    pub events: Vec<String>,
    pub pending_local_response: Option<LocalResponse>,
    pub http_calls: Vec<HttpCall>,
    pub pending_callouts: Vec<u32>,
    pub current_callout: Option<(u32, Option<CalloutReply>)>,
    pub continued: bool,
    pub effective_context: i32,
    pub tick_period_ms: u32,
    /// Counters the filter defined, by name (Envoy's stats would show them).
    pub metrics: BTreeMap<String, i64>,
    /// Defined metrics by id: name and the ABI's type (0 counter, 1 gauge, 2 histogram).
    pub(crate) metric_names: Vec<(String, i32)>,
    /// Shared data (Envoy shares it between the VMs of one plugin), with CAS tokens.
    pub shared_data: BTreeMap<String, (Vec<u8>, u32)>,
    /// The last shared-data CAS token issued (0: none yet).
    pub last_cas: u32,
    pub(crate) next_token: u32,
    pub(crate) random_state: u64,
}

fn memory(caller: &mut Caller<'_, HostState>) -> Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => bail!("the module exports no memory"),
    }
}

fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller)?;
    let mut out = vec![0u8; len as u32 as usize];
    memory
        .read(&*caller, ptr as u32 as usize, &mut out)
        .map_err(|_| format_err!("guest pointer {ptr:#x}+{len} is out of bounds"))?;
    Ok(out)
}

fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| format_err!("guest pointer {ptr:#x}+{} is out of bounds", bytes.len()))
}

fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into memory the module allocates with its exported
/// `proxy_on_memory_allocate` and hands pointer and size back, as Envoy does.
fn give(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> Result<()> {
    let ptr = if bytes.is_empty() {
        0
    } else {
        let allocate = caller
            .get_export("proxy_on_memory_allocate")
            .and_then(Extern::into_func)
            .ok_or_else(|| format_err!("the module exports no proxy_on_memory_allocate"))?
            .typed::<i32, i32>(&*caller)?;
        let ptr = allocate.call(&mut *caller, bytes.len() as i32)?;
        if ptr == 0 {
            bail!("proxy_on_memory_allocate({}) returned null", bytes.len());
        }
        write(caller, ptr, bytes)?;
        ptr
    };
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_size, bytes.len() as u32)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn to_strings(map: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (text(k), text(v))).collect()
}

impl HostState {
    fn map(&mut self, map_type: i32) -> Option<&mut Vec<(Vec<u8>, Vec<u8>)>> {
        match map_type {
            MAP_REQUEST_HEADERS => Some(&mut self.request_headers),
            MAP_REQUEST_TRAILERS => Some(&mut self.request_trailers),
            MAP_RESPONSE_HEADERS => Some(&mut self.response_headers),
            MAP_RESPONSE_TRAILERS => Some(&mut self.response_trailers),
            MAP_HTTP_CALL_RESPONSE_HEADERS | MAP_HTTP_CALL_RESPONSE_TRAILERS => None,
            _ => None,
        }
    }

    fn callout_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match &self.current_callout {
            Some((_, Some(reply))) => reply
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v.clone().into_bytes()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A copy of a header map, or None for a map the stream does not have.
    fn map_snapshot(&mut self, map_type: i32) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        match map_type {
            MAP_HTTP_CALL_RESPONSE_HEADERS => self
                .current_callout
                .is_some()
                .then(|| self.callout_headers()),
            MAP_HTTP_CALL_RESPONSE_TRAILERS => self.current_callout.is_some().then(Vec::new),
            _ => self.map(map_type).map(|m| m.clone()),
        }
    }

    fn buffer(&self, buffer_type: i32) -> Option<&[u8]> {
        match buffer_type {
            BUFFER_REQUEST_BODY => Some(&self.request_body),
            BUFFER_RESPONSE_BODY => Some(&self.response_body),
            BUFFER_VM_CONFIGURATION => Some(&self.vm_configuration),
            BUFFER_PLUGIN_CONFIGURATION => Some(&self.plugin_configuration),
            BUFFER_HTTP_CALL_RESPONSE_BODY => match &self.current_callout {
                Some((_, Some(reply))) => Some(&reply.body),
                Some((_, None)) => Some(&[]),
                None => None,
            },
            _ => None,
        }
    }

    /// Envoy: a property path is `\0`-joined; a single segment that is not a
    /// known property falls back to filter state `wasm.<name>`.
    fn property(&self, path: &[u8]) -> Option<Vec<u8>> {
        if let Some(value) = self.properties.get(path) {
            return Some(value.clone());
        }
        if !path.contains(&0) {
            let key = format!("wasm.{}", text(path));
            return self.filter_state.get(&key).cloned();
        }
        None
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per scenario, which is all WASI random
        // needs here (the filter does not use randomness for decisions).
        self.random_state = self.random_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

macro_rules! host {
    ($linker:expr, $module:expr, $name:literal, $func:expr) => {
        $linker.func_wrap($module, $name, $func)?;
    };
}

/// The status a host function was told to fail with, if any.
fn injected_failure(caller: &Caller<'_, HostState>, name: &str) -> Option<i32> {
    caller.data().failing.get(name).copied()
}

/// Every `env` host function starts here: it counts the call (the budget
/// test reads `host_calls`), and fails it if the test disabled it.
fn check_enabled(caller: &Caller<'_, HostState>, name: &str) -> Result<()> {
    *caller
        .data()
        .host_calls
        .borrow_mut()
        .entry(name.to_owned())
        .or_default() += 1;
    if caller.data().disabled.contains(name) {
        bail!("unimplemented host function {ENV}::{name} called by the filter");
    }
    Ok(())
}

/// Defines the host functions the filter uses.
fn define_env(linker: &mut Linker<HostState>) -> Result<()> {
    host!(linker, ENV, "proxy_log", |mut c: Caller<'_, HostState>,
                                     level: i32,
                                     ptr: i32,
                                     len: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_log")?;
        let message = text(&read(&mut c, ptr, len)?);
        c.data_mut().logs.push(LogLine {
            level: level as u32,
            message,
        });
        Ok(OK)
    });
    host!(linker, ENV, "proxy_get_log_level", |mut c: Caller<
        '_,
        HostState,
    >,
                                               ret: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_get_log_level")?;
        let level = c.data().log_level;
        write_u32(&mut c, ret, level)?;
        Ok(OK)
    });
    host!(
        linker,
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, HostState>, ret: i32| -> Result<i32> {
            check_enabled(&c, "proxy_get_current_time_nanoseconds")?;
            let now = c.data().now_nanos;
            write(&mut c, ret, &now.to_le_bytes())?;
            Ok(OK)
        }
    );
    host!(
        linker,
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, HostState>, period: i32| -> Result<i32> {
            check_enabled(&c, "proxy_set_tick_period_milliseconds")?;
            c.data_mut().tick_period_ms = period as u32;
            Ok(OK)
        }
    );
    host!(linker, ENV, "proxy_get_shared_data", |mut c: Caller<
        '_,
        HostState,
    >,
                                                 key_ptr: i32,
                                                 key_len: i32,
                                                 ret_ptr: i32,
                                                 ret_size: i32,
                                                 ret_cas: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_get_shared_data")?;
        let key = text(&read(&mut c, key_ptr, key_len)?);
        let Some((value, cas)) = c.data().shared_data.get(&key).cloned() else {
            return Ok(NOT_FOUND);
        };
        give(&mut c, &value, ret_ptr, ret_size)?;
        write_u32(&mut c, ret_cas, cas)?;
        Ok(OK)
    });
    host!(linker, ENV, "proxy_set_shared_data", |mut c: Caller<
        '_,
        HostState,
    >,
                                                 key_ptr: i32,
                                                 key_len: i32,
                                                 value_ptr: i32,
                                                 value_len: i32,
                                                 cas: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_set_shared_data")?;
        let key = text(&read(&mut c, key_ptr, key_len)?);
        let value = read(&mut c, value_ptr, value_len)?;
        // As Envoy (proxy-wasm-cpp-host `SharedData::set`): a non-zero CAS
        // must match an existing key's token, but an absent key is created
        // whatever the CAS; tokens come from one counter for every key,
        // starting at 1 and skipping 0 when it wraps.
        let state = c.data_mut();
        if let Some((_, current)) = state.shared_data.get(&key) {
            if cas != 0 && cas as u32 != *current {
                return Ok(CAS_MISMATCH);
            }
        }
        state.last_cas = state.last_cas.wrapping_add(1).max(1);
        let token = state.last_cas;
        state.shared_data.insert(key, (value, token));
        Ok(OK)
    });
    host!(linker, ENV, "proxy_define_metric", |mut c: Caller<
        '_,
        HostState,
    >,
                                               metric_type: i32,
                                               name_ptr: i32,
                                               name_len: i32,
                                               ret_id: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_define_metric")?;
        // 0 counter, 1 gauge, 2 histogram (the ABI's MetricType).
        if !(0..=2).contains(&metric_type) {
            return Ok(BAD_ARGUMENT);
        }
        let name = text(&read(&mut c, name_ptr, name_len)?);
        let state = c.data_mut();
        state.metrics.entry(name.clone()).or_insert(0);
        let id = match state.metric_names.iter().position(|(n, _)| *n == name) {
            Some(index) => index,
            None => {
                state.metric_names.push((name, metric_type));
                state.metric_names.len() - 1
            }
        };
        write(&mut c, ret_id, &(id as u32).to_le_bytes())?;
        Ok(OK)
    });
    host!(linker, ENV, "proxy_increment_metric", |mut c: Caller<
        '_,
        HostState,
    >,
                                                  id: i32,
                                                  offset: i64|
     -> Result<i32> {
        check_enabled(&c, "proxy_increment_metric")?;
        let state = c.data_mut();
        let Some((name, metric_type)) = usize::try_from(id)
            .ok()
            .and_then(|id| state.metric_names.get(id))
            .cloned()
        else {
            return Ok(NOT_FOUND);
        };
        // As in Envoy: only a gauge goes down.
        if offset < 0 && metric_type != 1 {
            return Ok(BAD_ARGUMENT);
        }
        *state.metrics.entry(name).or_insert(0) += offset;
        Ok(OK)
    });
    host!(
        linker,
        ENV,
        "proxy_set_effective_context",
        |mut c: Caller<'_, HostState>, context: i32| -> Result<i32> {
            check_enabled(&c, "proxy_set_effective_context")?;
            if context != ROOT_CONTEXT_ID && context != HTTP_CONTEXT_ID {
                return Ok(BAD_ARGUMENT);
            }
            c.data_mut().effective_context = context;
            Ok(OK)
        }
    );
    host!(linker, ENV, "proxy_get_buffer_bytes", |mut c: Caller<
        '_,
        HostState,
    >,
                                                  buffer_type: i32,
                                                  start: i32,
                                                  max: i32,
                                                  ret_ptr: i32,
                                                  ret_size: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_get_buffer_bytes")?;
        let Some(buffer) = c.data().buffer(buffer_type).map(<[u8]>::to_vec) else {
            return Ok(NOT_FOUND);
        };
        let start = start as u32 as usize;
        if start > buffer.len() {
            return Ok(BAD_ARGUMENT);
        }
        let end = start.saturating_add(max as u32 as usize).min(buffer.len());
        give(&mut c, &buffer[start..end], ret_ptr, ret_size)?;
        Ok(OK)
    });
    host!(
        linker,
        ENV,
        "proxy_get_buffer_status",
        |mut c: Caller<'_, HostState>,
         buffer_type: i32,
         ret_len: i32,
         ret_flags: i32|
         -> Result<i32> {
            check_enabled(&c, "proxy_get_buffer_status")?;
            let Some(len) = c.data().buffer(buffer_type).map(<[u8]>::len) else {
                return Ok(NOT_FOUND);
            };
            write_u32(&mut c, ret_len, len as u32)?;
            write_u32(&mut c, ret_flags, 0)?;
            Ok(OK)
        }
    );
    host!(linker, ENV, "proxy_set_buffer_bytes", |mut c: Caller<
        '_,
        HostState,
    >,
                                                  buffer_type: i32,
                                                  start: i32,
                                                  size: i32,
                                                  ptr: i32,
                                                  len: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_set_buffer_bytes")?;
        let data = read(&mut c, ptr, len)?;
        let state = c.data_mut();
        let buffer = match buffer_type {
            BUFFER_REQUEST_BODY => &mut state.request_body,
            BUFFER_RESPONSE_BODY => &mut state.response_body,
            _ => return Ok(BAD_ARGUMENT),
        };
        let start = (start as u32 as usize).min(buffer.len());
        let end = start.saturating_add(size as u32 as usize).min(buffer.len());
        buffer.splice(start..end, data);
        Ok(OK)
    });
    host!(
        linker,
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, HostState>, map_type: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            check_enabled(&c, "proxy_get_header_map_pairs")?;
            if let Some(status) = injected_failure(&c, "proxy_get_header_map_pairs") {
                return Ok(status);
            }
            let Some(map) = c.data_mut().map_snapshot(map_type) else {
                return Ok(NOT_FOUND);
            };
            let encoded = pairs::encode(&map);
            give(&mut c, &encoded, ret_ptr, ret_size)?;
            Ok(OK)
        }
    );
    host!(
        linker,
        ENV,
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, HostState>, map_type: i32, ptr: i32, len: i32| -> Result<i32> {
            check_enabled(&c, "proxy_set_header_map_pairs")?;
            let bytes = read(&mut c, ptr, len)?;
            let Some(decoded) = pairs::decode(&bytes) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(map) = c.data_mut().map(map_type) else {
                return Ok(NOT_FOUND);
            };
            *map = decoded
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            Ok(OK)
        }
    );
    host!(linker, ENV, "proxy_get_header_map_size", |mut c: Caller<
        '_,
        HostState,
    >,
                                                     map_type: i32,
                                                     ret: i32|
     -> Result<
        i32,
    > {
        check_enabled(&c, "proxy_get_header_map_size")?;
        let Some(map) = c.data_mut().map_snapshot(map_type) else {
            return Ok(NOT_FOUND);
        };
        write_u32(&mut c, ret, pairs::encode(&map).len() as u32)?;
        Ok(OK)
    });
    host!(
        linker,
        ENV,
        "proxy_get_header_map_value",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         key_ptr: i32,
         key_len: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            check_enabled(&c, "proxy_get_header_map_value")?;
            let key = read(&mut c, key_ptr, key_len)?.to_ascii_lowercase();
            let Some(map) = c.data_mut().map_snapshot(map_type) else {
                return Ok(NOT_FOUND);
            };
            // Envoy joins repeated headers with ","
            let values: Vec<&[u8]> = map
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.as_slice())
                .collect();
            if values.is_empty() {
                return Ok(NOT_FOUND);
            }
            let joined = values.join(&b","[..]);
            give(&mut c, &joined, ret_ptr, ret_size)?;
            Ok(OK)
        }
    );
    host!(
        linker,
        ENV,
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            check_enabled(&c, "proxy_replace_header_map_value")?;
            let key = read(&mut c, key_ptr, key_len)?.to_ascii_lowercase();
            let value = read(&mut c, value_ptr, value_len)?;
            let Some(map) = c.data_mut().map(map_type) else {
                return Ok(NOT_FOUND);
            };
            // Envoy's setCopy: the first occurrence is replaced, the rest removed;
            // absent, it is added.
            match map.iter().position(|(k, _)| *k == key) {
                Some(first) => {
                    map[first].1 = value;
                    let mut index = 0;
                    map.retain(|(k, _)| {
                        let keep = index <= first || *k != key;
                        index += 1;
                        keep
                    });
                }
                None => map.push((key, value)),
            }
            Ok(OK)
        }
    );
    host!(
        linker,
        ENV,
        "proxy_add_header_map_value",
        |mut c: Caller<'_, HostState>,
         map_type: i32,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> Result<i32> {
            check_enabled(&c, "proxy_add_header_map_value")?;
            let key = read(&mut c, key_ptr, key_len)?.to_ascii_lowercase();
            let value = read(&mut c, value_ptr, value_len)?;
            let Some(map) = c.data_mut().map(map_type) else {
                return Ok(NOT_FOUND);
            };
            map.push((key, value));
            Ok(OK)
        }
    );
    host!(
        linker,
        ENV,
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, HostState>, map_type: i32, key_ptr: i32, key_len: i32| -> Result<i32> {
            check_enabled(&c, "proxy_remove_header_map_value")?;
            let key = read(&mut c, key_ptr, key_len)?.to_ascii_lowercase();
            let Some(map) = c.data_mut().map(map_type) else {
                return Ok(NOT_FOUND);
            };
            map.retain(|(k, _)| *k != key);
            Ok(OK)
        }
    );
    host!(linker, ENV, "proxy_get_property", |mut c: Caller<
        '_,
        HostState,
    >,
                                              path_ptr: i32,
                                              path_len: i32,
                                              ret_ptr: i32,
                                              ret_size: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_get_property")?;
        let path = read(&mut c, path_ptr, path_len)?;
        let Some(value) = c.data().property(&path) else {
            return Ok(NOT_FOUND);
        };
        give(&mut c, &value, ret_ptr, ret_size)?;
        Ok(OK)
    });
    host!(linker, ENV, "proxy_set_property", |mut c: Caller<
        '_,
        HostState,
    >,
                                              path_ptr: i32,
                                              path_len: i32,
                                              value_ptr: i32,
                                              value_len: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_set_property")?;
        if let Some(status) = injected_failure(&c, "proxy_set_property") {
            c.data_mut().events.push("set_property refused".into());
            return Ok(status);
        }
        let path = read(&mut c, path_ptr, path_len)?;
        let value = read(&mut c, value_ptr, value_len)?;
        // Envoy stores it as filter state "wasm.<path>".
        let key = format!("wasm.{}", text(&path).replace('\0', "."));
        c.data_mut().events.push(format!("set_property {key}"));
        c.data_mut().filter_state.insert(key, value);
        Ok(OK)
    });
    host!(
        linker,
        ENV,
        "proxy_send_local_response",
        |mut c: Caller<'_, HostState>,
         status: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> Result<i32> {
            check_enabled(&c, "proxy_send_local_response")?;
            let details = text(&read(&mut c, details_ptr, details_len)?);
            let body = read(&mut c, body_ptr, body_len)?;
            let raw_headers = read(&mut c, headers_ptr, headers_len)?;
            let Some(headers) = pairs::decode(&raw_headers) else {
                return Ok(BAD_ARGUMENT);
            };
            // Envoy defers the reply until the callback returns.
            let state = c.data_mut();
            state
                .events
                .push(format!("send_local_response {status} (deferred)"));
            state.pending_local_response = Some(LocalResponse {
                status: status as u32,
                details,
                headers: to_strings(&headers),
                body,
            });
            Ok(OK)
        }
    );
    for name in ["proxy_continue_stream", "proxy_close_stream"] {
        linker.func_wrap(
            ENV,
            name,
            move |mut c: Caller<'_, HostState>, _stream: i32| -> Result<i32> {
                check_enabled(&c, name)?;
                c.data_mut().events.push(name.to_string());
                if name == "proxy_continue_stream" {
                    c.data_mut().continued = true;
                }
                Ok(OK)
            },
        )?;
    }
    for name in ["proxy_continue_request", "proxy_continue_response"] {
        linker.func_wrap(
            ENV,
            name,
            move |mut c: Caller<'_, HostState>| -> Result<i32> {
                check_enabled(&c, name)?;
                c.data_mut().events.push(name.to_string());
                c.data_mut().continued = true;
                Ok(OK)
            },
        )?;
    }
    host!(linker, ENV, "proxy_clear_route_cache", |c: Caller<
        '_,
        HostState,
    >|
     -> Result<i32> {
        check_enabled(&c, "proxy_clear_route_cache")?;
        Ok(OK)
    });
    host!(
        linker,
        ENV,
        "proxy_done",
        |c: Caller<'_, HostState>| -> Result<i32> {
            check_enabled(&c, "proxy_done")?;
            Ok(OK)
        }
    );
    host!(linker, ENV, "proxy_http_call", |mut c: Caller<
        '_,
        HostState,
    >,
                                           upstream_ptr: i32,
                                           upstream_len: i32,
                                           headers_ptr: i32,
                                           headers_len: i32,
                                           body_ptr: i32,
                                           body_len: i32,
                                           _trailers_ptr: i32,
                                           _trailers_len: i32,
                                           timeout_ms: i32,
                                           ret_token: i32|
     -> Result<i32> {
        check_enabled(&c, "proxy_http_call")?;
        let upstream = text(&read(&mut c, upstream_ptr, upstream_len)?);
        let raw_headers = read(&mut c, headers_ptr, headers_len)?;
        let body = read(&mut c, body_ptr, body_len)?;
        let Some(headers) = pairs::decode(&raw_headers) else {
            return Ok(BAD_ARGUMENT);
        };
        let headers = to_strings(&headers);
        // Envoy: the cluster must exist and the call needs these pseudo-headers.
        let has = |name: &str| headers.iter().any(|(k, v)| k == name && !v.is_empty());
        if !c.data().upstreams.contains_key(&upstream)
            || !has(":method")
            || !has(":path")
            || !has(":authority")
        {
            return Ok(BAD_ARGUMENT);
        }
        let state = c.data_mut();
        state.next_token += 1;
        let token = state.next_token;
        state
            .events
            .push(format!("http_call {upstream} token={token}"));
        state.http_calls.push(HttpCall {
            token,
            upstream,
            headers,
            body,
            timeout_ms: timeout_ms as u32,
        });
        state.pending_callouts.push(token);
        write_u32(&mut c, ret_token, token)?;
        Ok(OK)
    });
    Ok(())
}

/// The WASI preview1 functions the Rust standard library imports.
fn define_wasi(linker: &mut Linker<HostState>) -> Result<()> {
    host!(linker, WASI, "fd_write", |mut c: Caller<'_, HostState>,
                                     fd: i32,
                                     iovs: i32,
                                     iovs_len: i32,
                                     ret_written: i32|
     -> Result<i32> {
        if fd != 1 && fd != 2 {
            return Ok(8); // EBADF
        }
        let mut written = 0u32;
        for i in 0..iovs_len {
            let iov = read(&mut c, iovs + i * 8, 8)?;
            let ptr = i32::from_le_bytes(iov[0..4].try_into().unwrap_or_default());
            let len = i32::from_le_bytes(iov[4..8].try_into().unwrap_or_default());
            let data = read(&mut c, ptr, len)?;
            written += data.len() as u32;
            c.data_mut().stdio.extend_from_slice(&data);
        }
        write_u32(&mut c, ret_written, written)?;
        Ok(0)
    });
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            WASI,
            name,
            |mut c: Caller<'_, HostState>, count: i32, size: i32| -> Result<i32> {
                write_u32(&mut c, count, 0)?;
                write_u32(&mut c, size, 0)?;
                Ok(0)
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(
            WASI,
            name,
            |_c: Caller<'_, HostState>, _a: i32, _b: i32| -> Result<i32> { Ok(0) },
        )?;
    }
    host!(linker, WASI, "clock_time_get", |mut c: Caller<
        '_,
        HostState,
    >,
                                           _clock: i32,
                                           _precision: i64,
                                           ret: i32|
     -> Result<i32> {
        let now = c.data().now_nanos;
        write(&mut c, ret, &now.to_le_bytes())?;
        Ok(0)
    });
    host!(linker, WASI, "random_get", |mut c: Caller<
        '_,
        HostState,
    >,
                                       ptr: i32,
                                       len: i32|
     -> Result<i32> {
        let mut bytes = Vec::with_capacity(len as u32 as usize);
        while bytes.len() < len as u32 as usize {
            let next = c.data_mut().next_random();
            bytes.extend_from_slice(&next.to_le_bytes());
        }
        bytes.truncate(len as u32 as usize);
        write(&mut c, ptr, &bytes)?;
        Ok(0)
    });
    host!(
        linker,
        WASI,
        "sched_yield",
        |_c: Caller<'_, HostState>| -> Result<i32> { Ok(0) }
    );
    host!(linker, WASI, "proc_exit", |_c: Caller<'_, HostState>,
                                      code: i32|
     -> Result<()> {
        bail!("the filter called proc_exit({code})")
    });
    Ok(())
}

/// Links every import the implementations above do not cover to a function
/// that traps, naming itself.
fn define_unimplemented(linker: &mut Linker<HostState>, module: &Module) -> Result<()> {
    let mut store = Store::new(module.engine(), HostState::default());
    let defined: HashSet<(String, String)> = linker
        .iter(&mut store)
        .map(|(m, n, _)| (m.to_string(), n.to_string()))
        .collect();
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            bail!(
                "the module imports a non-function {}::{}",
                import.module(),
                import.name()
            );
        };
        if defined.contains(&(import.module().to_string(), import.name().to_string())) {
            continue;
        }
        let full = format!("{}::{}", import.module(), import.name());
        linker.func_new(
            import.module(),
            import.name(),
            ty,
            move |_c: Caller<'_, HostState>, _params: &[Val], _results: &mut [Val]| {
                bail!("unimplemented host function {full} called by the filter")
            },
        )?;
    }
    Ok(())
}

/// One instance of the filter with its host state: one scenario.
pub struct Vm {
    store: Store<HostState>,
    instance: Instance,
}

impl Vm {
    pub fn new(filter: &Filter, state: HostState) -> Result<Vm> {
        let mut store = Store::new(&filter.engine, state);
        let instance = filter.linker.instantiate(&mut store, &filter.module)?;
        Ok(Vm { store, instance })
    }

    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    pub fn into_state(self) -> HostState {
        self.store.into_data()
    }

    fn export(&mut self, name: &str) -> Option<Func> {
        self.instance.get_func(&mut self.store, name)
    }

    /// Calls an export with i32 arguments; `None` if the module lacks it.
    pub fn call(&mut self, name: &str, args: &[i32]) -> Result<Option<i32>> {
        let Some(func) = self.export(name) else {
            return Ok(None);
        };
        let params: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        let results_len = func.ty(&self.store).results().len();
        let mut results = vec![Val::I32(0); results_len];
        self.store.data_mut().events.push(format!("-> {name}"));
        func.call(&mut self.store, &params, &mut results)
            .map_err(|e| format_err!("{name} trapped: {e:?}"))?;
        self.store.data_mut().events.push(format!("<- {name}"));
        Ok(Some(results.first().and_then(Val::i32).unwrap_or(0)))
    }
}

pub const ROOT_ID: i32 = ROOT_CONTEXT_ID;
pub const HTTP_ID: i32 = HTTP_CONTEXT_ID;

//! Scenario files (YAML; JSON is YAML too): see host-test/README.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Seconds since the epoch when a scenario sets no clock.
pub const DEFAULT_CLOCK: i64 = 1_750_000_000;
pub const DEFAULT_SOURCE_ADDRESS: &str = "127.0.0.1:40000";
pub const DEFAULT_JWT_METADATA_KEY: &str = "ci_claims";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    #[serde(default)]
    pub config: Option<ConfigSpec>,
    #[serde(default)]
    pub clock: Option<i64>,
    #[serde(default)]
    pub upstream: Option<UpstreamSpec>,
    pub scenarios: Vec<ScenarioSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    pub name: String,
    #[serde(default)]
    pub conformance: bool,
    #[serde(default)]
    pub config: Option<ConfigSpec>,
    #[serde(default)]
    pub clock: Option<i64>,
    #[serde(default)]
    pub upstream: Option<UpstreamSpec>,
    /// Replies for `proxy_http_call`, by upstream cluster; `null` = the callout fails.
    #[serde(default)]
    pub callouts: BTreeMap<String, Option<UpstreamSpec>>,
    #[serde(default)]
    pub request: RequestSpec,
    /// Send the request this many times to one filter instance (as one Envoy
    /// worker would see them); the expectations apply to the last.
    #[serde(default = "one")]
    pub repeat: u32,
    #[serde(default)]
    pub expect: Expect,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// The whole plugin configuration as Envoy passes it: a JSON object, or a
    /// string passed verbatim. Excludes the other keys.
    #[serde(default)]
    pub inline: Option<Value>,
    /// A plugin configuration file (a JSON object, relative to the scenario
    /// file) that the other keys add to: a policy pack's `config.json`, so its
    /// scenarios test the mounts and identity the pack ships.
    #[serde(default)]
    pub base: Option<String>,
    /// File paths, relative to the scenario file.
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub policies: Option<String>,
    #[serde(default)]
    pub entities: Option<String>,
    /// Policy text appended to the policies file (e.g. a broken policy).
    #[serde(default)]
    pub policies_append: Option<String>,
    #[serde(default)]
    pub mounts: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub identity: Option<Value>,
    /// Passed through as the configuration's `audit` and `approval` keys.
    #[serde(default)]
    pub audit: Option<Value>,
    #[serde(default)]
    pub approval: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Headers {
    Map(BTreeMap<String, String>),
    List(Vec<(String, String)>),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::List(Vec::new())
    }
}

impl Headers {
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            Headers::Map(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Headers::List(list) => list.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub body: String,
    /// The verified JWT payload (what jwt_authn puts in dynamic metadata).
    #[serde(default)]
    pub jwt_claims: Option<Map<String, Value>>,
    #[serde(default)]
    pub peer_uri_san: Option<String>,
    #[serde(default)]
    pub source_address: Option<String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: default_method(),
            path: default_path(),
            query: None,
            headers: Headers::default(),
            body: String::new(),
            jwt_claims: None,
            peer_uri_san: None,
            source_address: None,
        }
    }
}

impl RequestSpec {
    /// `:path` as the client sends it.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{}", self.path, query),
            None => self.path.clone(),
        }
    }
}

fn default_method() -> String {
    "GET".into()
}

fn default_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    #[serde(default = "default_status")]
    pub status: u32,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub body: String,
}

impl Default for UpstreamSpec {
    fn default() -> Self {
        UpstreamSpec {
            status: default_status(),
            headers: Headers::default(),
            body: "{}".into(),
        }
    }
}

fn default_status() -> u32 {
    200
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub forwarded: Option<bool>,
    /// The `:path` OpenBao receives (implies forwarded).
    #[serde(default)]
    pub path: Option<String>,
    /// Forwarded request headers: name → value, `null` = must be absent.
    #[serde(default)]
    pub forwarded_headers: BTreeMap<String, Option<String>>,
    /// The status the client gets (local response, or the upstream's).
    #[serde(default)]
    pub status: Option<u32>,
    /// Fields of the local response's JSON body that must be equal.
    #[serde(default)]
    pub body: Map<String, Value>,
    /// `allow` or `deny`: the `secretgate decision=` log line.
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub logs_contain: Vec<String>,
    #[serde(default)]
    pub logs_not_contain: Vec<String>,
    /// In no log line, local response or filter state.
    #[serde(default)]
    pub never_contains: Vec<String>,
    /// The configuration is refused; the reason contains this ("" = any).
    #[serde(default)]
    pub config_rejected: Option<String>,
    /// Filter state entries (`wasm.<key>`) that must be set to these values.
    #[serde(default)]
    pub filter_state: BTreeMap<String, String>,
    /// Fields of the audit record (`wasm.secretgate_audit`, parsed as JSON)
    /// that must be equal; nested objects match field by field.
    #[serde(default)]
    pub audit: Map<String, Value>,
    /// Callouts the filter must have made: cluster name → JSON body fields.
    #[serde(default)]
    pub callouts_made: BTreeMap<String, Map<String, Value>>,
    /// Counters the filter must have reached (`secretgate.decisions.allow`, ...).
    #[serde(default)]
    pub metrics: BTreeMap<String, i64>,
}

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: PathBuf,
    pub name: String,
    pub conformance: bool,
    /// The plugin configuration bytes Envoy would pass.
    pub plugin_configuration: Vec<u8>,
    /// Where the policies came from, for `file:line` in errors.
    pub policies_file: Option<PathBuf>,
    pub clock: i64,
    pub upstream: UpstreamSpec,
    pub callouts: BTreeMap<String, Option<UpstreamSpec>>,
    pub request: RequestSpec,
    pub repeat: u32,
    pub expect: Expect,
}

impl Scenario {
    /// `payload_in_metadata` of a jwt identity in the configuration.
    pub fn jwt_metadata_key(&self) -> String {
        serde_json::from_slice::<Value>(&self.plugin_configuration)
            .ok()
            .and_then(|c| {
                c.pointer("/identity/payload_in_metadata")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| DEFAULT_JWT_METADATA_KEY.into())
    }
}

fn read_text(base: &Path, relative: &str) -> Result<(PathBuf, String), String> {
    let path = base.join(relative);
    std::fs::read_to_string(&path)
        .map(|text| (path.clone(), text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds the plugin configuration; returns it with the policies file path.
pub fn build_config(spec: &ConfigSpec, base: &Path) -> Result<(Vec<u8>, Option<PathBuf>), String> {
    if let Some(inline) = &spec.inline {
        if spec.schema.is_some()
            || spec.policies.is_some()
            || spec.entities.is_some()
            || spec.base.is_some()
        {
            return Err("config: `inline` excludes base/schema/policies/entities".into());
        }
        return Ok(match inline {
            Value::String(raw) => (raw.clone().into_bytes(), None),
            other => (other.to_string().into_bytes(), None),
        });
    }
    let schema = spec
        .schema
        .as_deref()
        .ok_or("config: `schema` is required")?;
    let policies = spec
        .policies
        .as_deref()
        .ok_or("config: `policies` is required")?;
    let (_, schema) = read_text(base, schema)?;
    let (policies_path, mut policies) = read_text(base, policies)?;
    if let Some(extra) = &spec.policies_append {
        policies.push('\n');
        policies.push_str(extra);
    }
    let entities = match &spec.entities {
        Some(file) => {
            let (path, text) = read_text(base, file)?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("{}:{}: {e}", path.display(), e.line()))?
        }
        None => json!([]),
    };
    let mut config = match &spec.base {
        Some(file) => {
            let (path, text) = read_text(base, file)?;
            match serde_json::from_str::<Value>(&text) {
                Ok(object @ Value::Object(_)) => object,
                Ok(_) => return Err(format!("{}: not a JSON object", path.display())),
                Err(e) => return Err(format!("{}:{}: {e}", path.display(), e.line())),
            }
        }
        None => json!({}),
    };
    config["schema"] = json!(schema);
    config["policies"] = json!(policies);
    config["entities"] = entities;
    if let Some(mounts) = &spec.mounts {
        config["mounts"] = json!(mounts);
    } else if config.get("mounts").is_none() {
        config["mounts"] = json!({});
    }
    for (key, value) in [
        ("identity", &spec.identity),
        ("audit", &spec.audit),
        ("approval", &spec.approval),
    ] {
        if let Some(value) = value {
            config[key] = value.clone();
        }
    }
    Ok((config.to_string().into_bytes(), Some(policies_path)))
}

/// Loads every scenario of a file.
/// The scenario called `name` in `policies/tests/<file>`: what the
/// benchmarks and the host-call budget test run.
pub fn named(file: &str, name: &str) -> Result<Scenario, String> {
    let path = crate::repo_root().join("policies/tests").join(file);
    load_file(&path)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no scenario {name:?} in {}", path.display()))
}

pub fn load_file(path: &Path) -> Result<Vec<Scenario>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        format!("{}:{line}: {e}", path.display())
    })?;
    // `<<: *anchor` merge keys, so claims and headers can be shared.
    value
        .apply_merge()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Top-level `x-...` keys hold anchors only.
    if let serde_yaml::Value::Mapping(map) = &mut value {
        map.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
    }
    let file: ScenarioFile =
        serde_yaml::from_value(value).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    file.scenarios
        .iter()
        .map(|spec| {
            let config = spec
                .config
                .as_ref()
                .or(file.config.as_ref())
                .ok_or_else(|| {
                    format!("{}: scenario {:?} has no config", path.display(), spec.name)
                })?;
            let (plugin_configuration, policies_file) = build_config(config, base)
                .map_err(|e| format!("{}: scenario {:?}: {e}", path.display(), spec.name))?;
            Ok(Scenario {
                file: path.to_path_buf(),
                name: spec.name.clone(),
                conformance: spec.conformance,
                plugin_configuration,
                policies_file,
                clock: spec.clock.or(file.clock).unwrap_or(DEFAULT_CLOCK),
                upstream: spec
                    .upstream
                    .clone()
                    .or_else(|| file.upstream.clone())
                    .unwrap_or_default(),
                callouts: spec.callouts.clone(),
                repeat: spec.repeat.max(1),
                request: spec.request.clone(),
                expect: spec.expect.clone(),
            })
        })
        .collect()
}

/// Scenario files under the given files and folders (`*.yaml`, `*.yml`, sorted).
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found).map_err(|e| format!("{}: {e}", path.display()))?;
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or folder", path.display()));
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Envoy's encoding of a `jwt_authn` payload Struct as a property: a pairs
/// map of claim → value; strings raw, numbers 8-byte little-endian doubles,
/// booleans one byte, lists a pairs map with the items as keys, objects a
/// nested pairs map. Nulls are left out.
pub fn encode_claims(claims: &Map<String, Value>) -> Vec<u8> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = claims
        .iter()
        .filter_map(|(k, v)| encode_value(v).map(|v| (k.clone().into_bytes(), v)))
        .collect();
    crate::pairs::encode(&pairs)
}

fn encode_value(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone().into_bytes()),
        Value::Number(n) => Some(n.as_f64().unwrap_or(f64::NAN).to_le_bytes().to_vec()),
        Value::Bool(b) => Some(vec![u8::from(*b)]),
        Value::Array(items) => Some(crate::pairs::encode(
            &items
                .iter()
                .filter_map(encode_value)
                .map(|item| (item, Vec::new()))
                .collect::<Vec<_>>(),
        )),
        Value::Object(map) => Some(encode_claims(map)),
    }
}

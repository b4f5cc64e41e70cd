//! The policy set and configuration `secretgate replay` and `explain`
//! decide with: `--policies DIR` or `--bundle FILE`, and `--config FILE`,
//! loaded through the same validation as the filter (`Config::for_tools`).

use std::path::Path;

use secretgate::bundle::{self, Bundle};
use secretgate::config::Config;

/// Where the candidate policy set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A directory like `policies/`: `schema.cedarschema`, `policies.cedar`
    /// and optionally `entities.json` (what `envoy/bundle_server.py` serves).
    Directory(String),
    /// A bundle JSON file, as the bundle server serves it.
    BundleFile(String),
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl PolicySource {
    pub fn load(&self) -> Result<Bundle, String> {
        match self {
            PolicySource::Directory(dir) => {
                let dir = Path::new(dir);
                let entities_path = dir.join("entities.json");
                let entities = if entities_path.exists() {
                    let text = read_text(&entities_path)?;
                    Some(
                        serde_json::from_str(&text)
                            .map_err(|e| format!("{}: {e}", entities_path.display()))?,
                    )
                } else {
                    None
                };
                Ok(Bundle {
                    schema: Some(read_text(&dir.join("schema.cedarschema"))?),
                    policies: Some(read_text(&dir.join("policies.cedar"))?),
                    entities,
                    templates: None,
                    revision: None,
                    digest: String::new(),
                })
            }
            PolicySource::BundleFile(file) => {
                let body = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
                bundle::parse(&body).map_err(|e| format!("{file}: {e}"))
            }
        }
    }
}

/// The configuration with the candidate policy set in place, or why not.
pub fn load(source: &PolicySource, config_file: &str) -> Result<Config, String> {
    let candidate = source.load()?;
    let config_json =
        std::fs::read(config_file).map_err(|e| format!("cannot read {config_file}: {e}"))?;
    Config::for_tools(&config_json, candidate).map_err(|e| format!("{config_file}: {e}"))
}

/// The default `--config`: mounts only, every other key at its default
/// (`policies/config.json` beside a policy directory, when there is one).
pub fn default_config_for(source: &PolicySource) -> Option<String> {
    match source {
        PolicySource::Directory(dir) => {
            let beside = Path::new(dir).join("config.json");
            beside
                .exists()
                .then(|| beside.to_string_lossy().into_owned())
        }
        PolicySource::BundleFile(_) => None,
    }
}

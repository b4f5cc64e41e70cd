//! `secretgate check-mounts`: reads the store's mount tables over its HTTP
//! API and hands them to `secretgate::mount_check`, which compares.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use secretgate::mount_check::{
    compare, parse_mounts, parse_namespace_list, ConfiguredMounts, Difference, StoreAnswer,
    StoreMounts,
};
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

pub const USAGE: &str = "usage: secretgate check-mounts --addr URL --config FILE [--ca-cert FILE]
  compares the filter configuration's \"mounts\" and \"namespaces\" (FILE: the
  JSON the filter takes as Envoy's configuration) with the store at URL
  (http:// or https://; --ca-cert: the PEM CA that signs the store's
  certificate, otherwise the Mozilla roots). The token is read from
  BAO_TOKEN, else VAULT_TOKEN; it needs read on sys/mounts, sys/auth and
  list on sys/namespaces in every namespace.
  Exit 0: no difference; 1: one line per difference on stdout; 2: the store
  could not be read (or bad usage); 3: the configuration file is unreadable
  or its mounts or namespaces are invalid (the filter would refuse it too).";

/// A store answer larger than this is not a mount table.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;
/// Namespaces read at most: a bound on the walk, far above real trees.
const MAX_NAMESPACES: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    addr: String,
    config: String,
    ca_cert: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut addr, mut config, mut ca_cert) = (None, None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match flag.as_str() {
            "--addr" => &mut addr,
            "--config" => &mut config,
            "--ca-cert" => &mut ca_cert,
            _ => return Err(USAGE.to_owned()),
        };
        match rest.next() {
            Some(value) if slot.is_none() => *slot = Some(value.clone()),
            _ => return Err(USAGE.to_owned()),
        }
    }
    match (addr, config) {
        (Some(addr), Some(config)) => Ok(Args {
            addr,
            config,
            ca_cert,
        }),
        _ => Err(USAGE.to_owned()),
    }
}

/// The operator token: `BAO_TOKEN`, else `VAULT_TOKEN`. Never printed.
fn token() -> Result<String, String> {
    ["BAO_TOKEN", "VAULT_TOKEN"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|t| !t.trim().is_empty()))
        .map(|token| token.trim().to_owned())
        .ok_or_else(|| {
            "set BAO_TOKEN (or VAULT_TOKEN) to a token that can read the store's mount tables"
                .to_owned()
        })
}

struct Store {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Store {
    fn new(addr: &str, ca_cert: Option<&str>, token: String) -> Result<Store, String> {
        let base = addr.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--addr {addr:?}: expected an http:// or https:// URL"
            ));
        }
        let mut tls = TlsConfig::builder();
        if let Some(file) = ca_cert {
            let pem = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let certs: Vec<_> = parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("{file}: no PEM certificate"));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            // Read the store's own errors (403, 404) rather than failing blind.
            .http_status_as_error(false)
            // The token travels in X-Vault-Token, which a redirect would
            // carry to wherever it points: never follow one.
            .max_redirects(0)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Ok(Store { agent, base, token })
    }

    /// `GET /v1/<path>` in `namespace` (`""`: root).
    fn get(&self, path: &str, namespace: &str) -> Result<StoreAnswer, String> {
        let url = format!("{}/v1/{path}", self.base);
        let mut request = self.agent.get(&url).header("X-Vault-Token", &self.token);
        if !namespace.is_empty() {
            request = request.header("X-Vault-Namespace", namespace);
        }
        // ureq's errors name the URL and the cause, never the headers.
        let mut response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            return Err(format!(
                "GET {url}: the store redirects ({status}); point --addr at the active node"
            ));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| format!("GET {url}: {e}"))?;
        Ok(StoreAnswer { status, body })
    }

    /// Every namespace below root, each listed in its parent.
    fn namespaces(&self) -> Result<BTreeSet<String>, String> {
        let mut found = BTreeSet::new();
        let mut queue = vec![String::new()];
        while let Some(parent) = queue.pop() {
            let answer = self.get("sys/namespaces?list=true", &parent)?;
            for child in parse_namespace_list(&answer, &parent).map_err(|e| e.to_string())? {
                if found.len() >= MAX_NAMESPACES {
                    return Err(format!("more than {MAX_NAMESPACES} namespaces"));
                }
                if found.insert(child.clone()) {
                    queue.push(child);
                }
            }
        }
        Ok(found)
    }

    fn mounts(&self, config: &ConfiguredMounts) -> Result<StoreMounts, String> {
        let namespaces = self.namespaces()?;
        let mut store = StoreMounts {
            namespaces,
            ..StoreMounts::default()
        };
        for namespace in config.namespaces_to_read(&store.namespaces) {
            let mut mounts = Vec::new();
            for (path, auth) in [("sys/mounts", false), ("sys/auth", true)] {
                let answer = self.get(path, &namespace)?;
                mounts.extend(parse_mounts(&answer, &namespace, auth).map_err(|e| e.to_string())?);
            }
            store.mounts.insert(namespace, mounts);
        }
        Ok(store)
    }
}

/// What the check found: no difference (with what was compared), or the
/// differences.
pub enum Outcome {
    Matches { mounts: usize, namespaces: usize },
    Differs(Vec<Difference>),
}

/// Why the check could not be made.
pub enum Failure {
    /// Bad usage, or the store could not be read: exit 2.
    Store(String),
    /// The configuration file is unreadable or invalid: exit 3.
    Config(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Store(message)
    }
}

pub fn run(args: &[String]) -> Result<Outcome, Failure> {
    let args = parse_args(args)?;
    let text = std::fs::read(&args.config)
        .map_err(|e| Failure::Config(format!("cannot read {}: {e}", args.config)))?;
    let config = ConfiguredMounts::from_json(&text)
        .map_err(|e| Failure::Config(format!("{}: {e}", args.config)))?;
    let store = Store::new(&args.addr, args.ca_cert.as_deref(), token()?)?;
    let mounts = store.mounts(&config)?;
    let differences = compare(&config, &mounts);
    if differences.is_empty() {
        Ok(Outcome::Matches {
            mounts: mounts.mounts.values().map(Vec::len).sum(),
            namespaces: mounts.mounts.len(),
        })
    } else {
        Ok(Outcome::Differs(differences))
    }
}

/// Runs the check and prints its outcome: the exit code.
pub fn main(args: &[String]) -> ExitCode {
    let plural = |n: usize, word: &str| match n {
        1 => format!("1 {word}"),
        n => format!("{n} {word}s"),
    };
    match run(args) {
        Ok(Outcome::Matches { mounts, namespaces }) => {
            println!(
                "the mount table matches the store ({} in {})",
                plural(mounts, "mount"),
                plural(namespaces, "namespace")
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::Differs(differences)) => {
            for difference in &differences {
                println!("{difference}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Store(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        Err(Failure::Config(message)) => {
            eprintln!("{message}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_are_read_in_any_order_once_each() {
        let parsed = parse_args(&args(&["--config", "c.json", "--addr", "http://x"])).unwrap();
        assert_eq!(
            (parsed.addr.as_str(), parsed.config.as_str()),
            ("http://x", "c.json")
        );
        assert_eq!(parsed.ca_cert, None);
        for bad in [
            &["--addr", "http://x"][..],
            &["--addr", "http://x", "--config"],
            &["--addr", "a", "--addr", "b", "--config", "c"],
            &["--addr", "a", "--config", "c", "--token", "t"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_http_and_https_addresses() {
        assert!(Store::new("ftp://x", None, "t".into()).is_err());
        assert!(Store::new("127.0.0.1:8200", None, "t".into()).is_err());
        assert!(Store::new("https://x/", None, "t".into()).is_ok());
    }
}

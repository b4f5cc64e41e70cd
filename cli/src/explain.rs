//! `secretgate explain`: why the filter decides one request as it does.
//! Parses the flags, loads the policy set and configuration through
//! `candidate`, and prints what `secretgate::explain` makes of the request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use secretgate::audit::parse_rfc3339;
use secretgate::explain::{self, ExplainRequest};
use serde_json::{Map, Value};

use crate::candidate::{self, PolicySource};

pub const USAGE: &str = "usage: secretgate explain (--policies DIR | --bundle FILE) --config FILE
         --method METHOD --path /v1/... [--namespace NS] [--principal ID]
         [--claims JSON] [--source-ip IP] [--time RFC3339] [--recent-reads N] [--json]
  explains the filter's decision on one request: its classification (mount,
  action, resource, Path parents, template attributes), the Cedar context,
  the decision (allow, approval, deny, error) with the policies that
  determined it, and every policy whose scope matches but whose condition
  was false. DIR holds schema.cedarschema, policies.cedar and optionally
  entities.json; FILE a bundle. --config is the filter configuration (its
  mounts and identity; default: DIR/config.json). --namespace is the
  X-Vault-Namespace header; without --principal the caller has no identity
  (the configuration must set identity.anonymous). --claims is a JSON object
  of JWT claims. Defaults: --source-ip 127.0.0.1, --time now, --recent-reads
  0 (used only when the schema declares context.recent_reads).
  Exit 0: explained, whatever the decision; 2: bad usage, or a configuration
  or principal the filter would refuse.";

const VALUE_FLAGS: [&str; 11] = [
    "--policies",
    "--bundle",
    "--config",
    "--method",
    "--path",
    "--namespace",
    "--principal",
    "--claims",
    "--source-ip",
    "--time",
    "--recent-reads",
];

struct Args {
    values: HashMap<&'static str, String>,
    json: bool,
}

impl Args {
    fn get(&self, flag: &str) -> Option<&str> {
        self.values.get(flag).map(String::as_str)
    }

    fn required(&self, flag: &str) -> Result<&str, String> {
        self.get(flag)
            .ok_or_else(|| format!("{flag} is required\n{USAGE}"))
    }
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut values = HashMap::new();
    let mut json = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--json" {
            if json {
                return Err(format!("--json given twice\n{USAGE}"));
            }
            json = true;
            continue;
        }
        let Some(name) = VALUE_FLAGS.iter().find(|name| **name == flag) else {
            return Err(format!("unknown argument {flag:?}\n{USAGE}"));
        };
        let Some(value) = rest.next() else {
            return Err(format!("{flag} needs a value\n{USAGE}"));
        };
        if values.insert(*name, value.clone()).is_some() {
            return Err(format!("{flag} given twice\n{USAGE}"));
        }
    }
    Ok(Args { values, json })
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

fn run(args: &[String]) -> Result<String, String> {
    let args = parse_args(args)?;
    let source = match (args.get("--policies"), args.get("--bundle")) {
        (Some(dir), None) => PolicySource::Directory(dir.to_owned()),
        (None, Some(file)) => PolicySource::BundleFile(file.to_owned()),
        _ => return Err(format!("give one of --policies or --bundle\n{USAGE}")),
    };
    let config_file = match args.get("--config") {
        Some(file) => file.to_owned(),
        None => candidate::default_config_for(&source)
            .ok_or_else(|| format!("--config is required\n{USAGE}"))?,
    };
    let method = args.required("--method")?;
    let target = args.required("--path")?;
    let claims: Option<Map<String, Value>> = args
        .get("--claims")
        .map(|text| match serde_json::from_str(text) {
            Ok(Value::Object(claims)) => Ok(claims),
            Ok(_) => Err("--claims must be a JSON object".to_owned()),
            Err(e) => Err(format!("--claims: {e}")),
        })
        .transpose()?;
    let source_ip: IpAddr = args
        .get("--source-ip")
        .unwrap_or("127.0.0.1")
        .parse()
        .map_err(|_| "--source-ip must be an IPv4 or IPv6 address".to_owned())?;
    let now_secs = match args.get("--time") {
        Some(text) => parse_rfc3339(text).ok_or_else(|| {
            format!("--time {text:?}: expected RFC 3339, e.g. 2025-01-31T09:30:00Z")
        })?,
        None => now_secs(),
    };
    let recent_reads = args
        .get("--recent-reads")
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("--recent-reads {text:?}: expected a count"))
        })
        .transpose()?;

    let config = candidate::load(&source, &config_file)?;
    let explanation = explain::explain(
        &config,
        &ExplainRequest {
            method,
            target,
            namespace: args.get("--namespace"),
            principal: args.get("--principal"),
            claims: claims.as_ref(),
            source_ip,
            now_secs,
            recent_reads,
        },
    )?;
    if args.json {
        serde_json::to_string_pretty(&explanation.to_json()).map_err(|e| e.to_string())
    } else {
        Ok(explanation.to_text())
    }
}

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("secretgate explain: {message}");
            ExitCode::from(2)
        }
    }
}

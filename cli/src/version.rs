//! `secretgate --version`: the version the filter built from this source
//! reports, and, given a configuration or a bundle, the revisions the
//! filter's records will name them by, so an operator can match a record to
//! what was deployed.

use std::process::ExitCode;

use secretgate::bundle;
use secretgate::config::config_revisions;
use secretgate::version::{bundle_revision, FILTER_VERSION};

pub const USAGE: &str = "usage: secretgate --version [--config FILE] [--bundle FILE]
  prints `secretgate <version>`, the version every audit record names in filter_version;
  --config FILE: also `config_revision <revision>`, the filter configuration's revision as records name it;
  --bundle FILE: also `bundle_revision <revision>`, a policy bundle's revision as records name it.";

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let mut out = format!("secretgate {FILTER_VERSION}\n");
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let file = rest.next().ok_or_else(|| USAGE.to_owned())?;
        let body = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        match flag.as_str() {
            "--config" => {
                let revisions = config_revisions(&body).map_err(|e| format!("{file}: {e}"))?;
                out.push_str(&format!("config_revision {}\n", revisions.config));
            }
            "--bundle" => {
                let parsed = bundle::parse(&body).map_err(|e| format!("{file}: {e}"))?;
                let revision = bundle_revision(parsed.revision.as_deref(), &parsed.digest);
                out.push_str(&format!("bundle_revision {revision}\n"));
            }
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn prints_the_filter_version_alone_or_with_revisions() {
        assert_eq!(run(&[]).unwrap(), format!("secretgate {FILTER_VERSION}\n"));
        let dir = std::env::temp_dir().join(format!("secretgate-version-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        std::fs::write(
            &config,
            br#"{"revision": "deploy-7", "identity": {"source": "header"}}"#,
        )
        .unwrap();
        let bundle = dir.join("bundle.json");
        std::fs::write(&bundle, br#"{"policies": ""}"#).unwrap();
        let out = run(&args(&[
            "--config",
            config.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
        ]))
        .unwrap();
        let digest = secretgate::version::content_revision(br#"{"policies": ""}"#);
        assert_eq!(
            out,
            format!(
                "secretgate {FILTER_VERSION}\nconfig_revision deploy-7\nbundle_revision {digest}\n"
            )
        );
        assert!(run(&args(&["--config"])).is_err());
        assert!(run(&args(&["--nope", "x"])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

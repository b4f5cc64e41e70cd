//! `secretgate replay`: reads access logs line by line and hands each line
//! to `secretgate::replay`, which decides the record again under the
//! candidate policies.

use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use secretgate::replay::{Replayer, Summary};

use crate::candidate::{self, PolicySource};

pub const USAGE: &str = "usage: secretgate replay --log FILE [--log FILE ...] (--policies DIR | --bundle FILE) [--config FILE] [--json]
  decides every audit record in the logs (audit records, or JSON access-log
  lines with the record in \"audit\") again under the candidate policies and
  compares with the recorded decision. --config is the filter configuration
  (mounts, templates, identity); it defaults to config.json beside --policies.
  Exit 0: no decision changed; 1: some decision changed; 2: an error, or
  no record could be replayed at all.";

struct Args {
    logs: Vec<String>,
    source: PolicySource,
    config: String,
    json: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut logs, mut source, mut config, mut json) = (Vec::new(), None, None, false);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--json" {
            json = true;
            continue;
        }
        let Some(value) = rest.next() else {
            return Err(USAGE.to_owned());
        };
        match flag.as_str() {
            "--log" => logs.push(value.clone()),
            "--policies" if source.is_none() => {
                source = Some(PolicySource::Directory(value.clone()))
            }
            "--bundle" if source.is_none() => {
                source = Some(PolicySource::BundleFile(value.clone()))
            }
            "--config" if config.is_none() => config = Some(value.clone()),
            _ => return Err(USAGE.to_owned()),
        }
    }
    let Some(source) = source else {
        return Err(USAGE.to_owned());
    };
    if logs.is_empty() {
        return Err(USAGE.to_owned());
    }
    let Some(config) = config.or_else(|| candidate::default_config_for(&source)) else {
        return Err(format!(
            "--config is needed: the mounts in it decide how each recorded path is classified\n{USAGE}"
        ));
    };
    Ok(Args {
        logs,
        source,
        config,
        json,
    })
}

fn run(args: &[String]) -> Result<Summary, String> {
    let args = parse_args(args)?;
    let config = candidate::load(&args.source, &args.config)?;
    let replayer = Replayer::new(&config)?;
    let mut summary = Summary::default();
    for log in &args.logs {
        let file = std::fs::File::open(log).map_err(|e| format!("cannot read {log}: {e}"))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("cannot read {log}: {e}"))?;
            if read == 0 {
                break;
            }
            // A line that is not UTF-8 is not a record; it is skipped, not fatal.
            summary.add_line(&replayer, &String::from_utf8_lossy(&line));
        }
    }
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(summary)
}

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        // A gate that decided nothing has shown nothing: never a pass.
        Ok(summary) if summary.replayed == 0 => {
            eprintln!(
                "nothing was replayed: {} records, none of them replayable under the candidate",
                summary.records
            );
            ExitCode::from(2)
        }
        Ok(summary) if summary.changes.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

//! `secretgate report`: reads access logs line by line into
//! `secretgate::report` and writes the access report an auditor reads (HTML),
//! its tables as CSV and its figures as JSON.

use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use secretgate::report::{
    format_millis, may_matter_again, parse_line, parse_time_millis, ParsedLine, Period,
    ReportBuilder,
};

use crate::{report_csv, report_html};

pub const USAGE: &str = "usage: secretgate report --log FILE [--log FILE ...] [--since RFC3339] [--until RFC3339] --out report.html [--csv DIR] [--json FILE]
  an access report from audit records (audit records, or JSON access-log
  lines with the record in \"audit\"): who read which secret, who was
  refused, approvals, principals cut off, charts. --since is inclusive,
  --until exclusive. --csv writes one CSV per table into DIR, --json the
  same figures as data. Unreadable lines are counted, never fatal.
  Exit 0: written; 2: an error (bad arguments, unreadable file).";

struct Args {
    logs: Vec<String>,
    period: Period,
    out: PathBuf,
    csv: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut logs, mut period, mut out, mut csv, mut json) =
        (Vec::new(), Period::default(), None, None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let Some(value) = rest.next() else {
            return Err(USAGE.to_owned());
        };
        let time = || {
            parse_time_millis(value)
                .ok_or_else(|| format!("{flag}: not an RFC 3339 time: {value:?}\n{USAGE}"))
        };
        match flag.as_str() {
            "--log" => logs.push(value.clone()),
            "--since" if period.since.is_none() => period.since = Some(time()?),
            "--until" if period.until.is_none() => period.until = Some(time()?),
            "--out" if out.is_none() => out = Some(PathBuf::from(value)),
            "--csv" if csv.is_none() => csv = Some(PathBuf::from(value)),
            "--json" if json.is_none() => json = Some(PathBuf::from(value)),
            _ => return Err(USAGE.to_owned()),
        }
    }
    let Some(out) = out else {
        return Err(USAGE.to_owned());
    };
    if logs.is_empty() {
        return Err(USAGE.to_owned());
    }
    Ok(Args {
        logs,
        period,
        out,
        csv,
        json,
    })
}

/// Lines are read in chunks of about this many bytes, each parsed whole
/// by one worker.
const CHUNK_BYTES: usize = 1 << 20;

/// Which pass a line is parsed for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    First,
    Again,
}

/// Reads every line of every log, streaming, parses the lines on as many
/// threads as the machine has cores (a record's JSON is most of the work)
/// and hands each parsed line to `each` on this thread. Order does not
/// matter to the report, so lines are handed over as chunks finish.
fn each_line(logs: &[String], pass: Pass, mut each: impl FnMut(&ParsedLine)) -> Result<(), String> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Vec<u8>>(workers * 2);
    let chunk_rx = Mutex::new(chunk_rx);
    let (parsed_tx, parsed_rx) = mpsc::sync_channel::<Vec<ParsedLine>>(workers * 2);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (chunk_rx, parsed_tx) = (&chunk_rx, parsed_tx.clone());
            scope.spawn(move || loop {
                let chunk = match chunk_rx.lock() {
                    Ok(receiver) => receiver.recv(),
                    Err(_) => return,
                };
                let Ok(chunk) = chunk else { return };
                let parsed = chunk
                    .split(|byte| *byte == b'\n')
                    .map(|line| {
                        // A line that is not UTF-8 holds no record: counted, not fatal.
                        let text = match std::str::from_utf8(line) {
                            Ok(text) => Cow::Borrowed(text),
                            Err(_) => String::from_utf8_lossy(line),
                        };
                        match pass {
                            Pass::Again if !may_matter_again(&text) => parse_line(""),
                            _ => parse_line(&text),
                        }
                    })
                    .collect();
                if parsed_tx.send(parsed).is_err() {
                    return;
                }
            });
        }
        drop(parsed_tx);
        let reader = scope.spawn(move || -> Result<(), String> {
            for log in logs {
                let file =
                    std::fs::File::open(log).map_err(|e| format!("cannot read {log}: {e}"))?;
                let mut reader = BufReader::with_capacity(CHUNK_BYTES, file);
                let mut chunk = Vec::with_capacity(CHUNK_BYTES * 2);
                loop {
                    let read = reader
                        .read_until(b'\n', &mut chunk)
                        .map_err(|e| format!("cannot read {log}: {e}"))?;
                    if read == 0 || chunk.len() >= CHUNK_BYTES {
                        let full =
                            std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES * 2));
                        if !full.is_empty() && chunk_tx.send(full).is_err() {
                            return Err("the parsing threads stopped".to_owned());
                        }
                    }
                    if read == 0 {
                        break;
                    }
                }
            }
            Ok(())
        });
        for parsed in parsed_rx {
            parsed.iter().for_each(&mut each);
        }
        reader
            .join()
            .unwrap_or_else(|_| Err("the log reader failed".to_owned()))
    })
}

fn run(args: &[String]) -> Result<(), String> {
    let args = parse_args(args)?;
    let mut builder = ReportBuilder::new(args.period);
    each_line(&args.logs, Pass::First, |line| builder.add(line))?;
    if builder.wants_second_pass() {
        each_line(&args.logs, Pass::Again, |line| builder.add_again(line))?;
    }
    let report = builder.finish();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let html = report_html::render(&report, &args.logs, &format_millis(now));
    std::fs::write(&args.out, html)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    if let Some(dir) = &args.csv {
        report_csv::write(&report, dir)?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let summary = &report.summary;
    println!(
        "{} records ({} unreadable lines, {} outside the period): {} allowed, {} refused, {} approvals approved, {} principal(s) on the off-boarding watch",
        summary.records,
        summary.unreadable_lines,
        summary.outside_period,
        summary.allowed,
        summary.refused,
        summary.approvals.approved,
        report.offboarding.len()
    );
    println!("report: {}", args.out.display());
    Ok(())
}

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

//! Writes a generated access log for `secretgate report`'s speed target
//! (1,000,000 records in 10 s):
//!
//!     report-log <records> <file>
//!     time target/release/secretgate report --log <file> --out /tmp/report.html
//!
//! The lines are the filter's own records (`secretgate_benches::access_log`).

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use secretgate_benches::access_log::AccessLog;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(count), Some(path)) = (
        args.first().and_then(|n| n.parse::<usize>().ok()),
        args.get(1),
    ) else {
        eprintln!("usage: report-log <records> <file>");
        return ExitCode::from(2);
    };
    let log = AccessLog::new(1_000);
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(std::fs::File::create(path)?);
        for index in 0..count {
            writeln!(out, "{}", log.line(index, count))?;
        }
        out.flush()
    };
    match write() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write {path}: {e}");
            ExitCode::from(2)
        }
    }
}

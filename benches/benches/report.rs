//! `secretgate report`'s aggregation, natively: access-log lines holding
//! the filter's own records (`secretgate_benches::access_log`, 1,000
//! generated policies) read into a report, both passes, as the CLI streams
//! them. Criterion reports lines per second; the target is 1,000,000
//! records in 10 s (100,000 per second) for the whole CLI, measured with
//! `report-log` (benches/README.md).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use secretgate::report::{report_of_lines, Period};
use secretgate_benches::access_log::AccessLog;

const LINES: usize = 20_000;

fn report(c: &mut Criterion) {
    let log = AccessLog::new(1_000);
    let lines: Vec<String> = (0..LINES).map(|i| log.line(i, LINES)).collect();
    let check = report_of_lines(lines.iter().map(String::as_str), Period::default());
    assert_eq!(check.summary.records, LINES as u64);
    assert_eq!(check.summary.refused, LINES as u64 / 4);
    let mut group = c.benchmark_group("report");
    group.throughput(Throughput::Elements(LINES as u64));
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(10);
    group.bench_function("access_log_lines", |b| {
        b.iter(|| report_of_lines(lines.iter().map(String::as_str), Period::default()))
    });
    group.finish();
}

criterion_group!(benches, report);
criterion_main!(benches);

//! Masking throughput: what the audit does to a Vault response body once
//! the response ends (parse, mask every value, serialise). Target: at least
//! 100 MB/s natively on 1 KiB, 64 KiB and 1 MiB bodies.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use secretgate::audit::{AuditConfig, RawAuditConfig};
use serde_json::{json, Map, Value};

/// A KV v2 read response of roughly `target` bytes: many string secrets
/// plus the usual metadata.
fn vault_body(target: usize) -> Vec<u8> {
    let mut data = Map::new();
    let mut index = 0usize;
    loop {
        let body = json!({
            "request_id": "8c4de05e-7d95-c7d4-5d9d-64877af12acf",
            "lease_id": "", "renewable": false, "lease_duration": 0,
            "data": {"data": Value::Object(data.clone()),
                     "metadata": {"created_time": "2026-11-28T12:41:48.082100271Z",
                                  "custom_metadata": null, "deletion_time": "",
                                  "destroyed": false, "version": 7}},
            "wrap_info": null, "warnings": null, "auth": null
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        if bytes.len() >= target {
            return bytes;
        }
        data.insert(
            format!("secret_{index}"),
            json!(format!("s3cr3t-{index:08}-Zx9!qL2@pW7#nM4$vB6%yT1^rE8&")),
        );
        if index.is_multiple_of(5) {
            data.insert(format!("port_{index}"), json!(5432 + index));
        }
        index += 1;
    }
}

fn hmac_config(max_body_bytes: usize) -> AuditConfig {
    let raw: RawAuditConfig = serde_json::from_value(json!({
        "mode": "hmac-sha256",
        "hmac_key": "bench-audit-key-0123456789abcdef",
        "max_body_bytes": max_body_bytes,
    }))
    .unwrap();
    AuditConfig::from_raw(raw).unwrap()
}

fn redact_config(max_body_bytes: usize) -> AuditConfig {
    let raw: RawAuditConfig = serde_json::from_value(json!({
        "mode": "redact",
        "max_body_bytes": max_body_bytes,
    }))
    .unwrap();
    AuditConfig::from_raw(raw).unwrap()
}

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask_response_body");
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024), ("1MiB", 1024 * 1024)] {
        let body = vault_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (mode, config) in [
            ("hmac-sha256", hmac_config(2 * 1024 * 1024)),
            ("redact", redact_config(2 * 1024 * 1024)),
        ] {
            group.bench_with_input(BenchmarkId::new(mode, label), &body, |b, body| {
                b.iter(|| {
                    let mut capture = config.capture();
                    capture.feed(body);
                    capture.render(&config, false, Some("kv-v2"))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);

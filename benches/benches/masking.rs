//! Masking throughput: what the audit does to a Vault response body once
//! the response ends (parse, mask every value, serialise). Target: at least
//! 100 MB/s natively on 1 KiB, 64 KiB and 1 MiB bodies.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use secretgate::audit::{AuditConfig, RawAuditConfig};
use secretgate::classify::MountType;
use secretgate::shapes::BodyKind;
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

/// The throughput rows mask whole bodies of up to 1 MiB, far past the
/// default masking bounds, so they lift them.
fn hmac_config(max_body_bytes: usize) -> AuditConfig {
    let raw: RawAuditConfig = serde_json::from_value(json!({
        "mode": "hmac-sha256",
        "hmac_key": "bench-audit-key-0123456789abcdef",
        "max_body_bytes": max_body_bytes,
        "max_masked_values": 1 << 20,
        "max_masked_body_bytes": 64 << 20,
    }))
    .unwrap();
    AuditConfig::from_raw(raw).unwrap()
}

fn redact_config(max_body_bytes: usize) -> AuditConfig {
    let raw: RawAuditConfig = serde_json::from_value(json!({
        "mode": "redact",
        "max_body_bytes": max_body_bytes,
        "max_masked_values": 1 << 20,
        "max_masked_body_bytes": 64 << 20,
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
                    capture.render(&config, kv_v2_answer())
                })
            });
        }
    }
    group.finish();
}

fn kv_v2_answer() -> BodyKind {
    BodyKind::response(Some(MountType::KvV2), false)
}

/// The worst body per byte: `[1,1,1,...]` stored as a secret, 64 KiB of
/// two-byte values, each of which would become a 78-byte HMAC. The masking
/// bound (`max_masked_values`, 1,024 by default) stops it early; the row
/// "unbounded" shows what it would cost without one.
fn many_tiny_values(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask_many_tiny_values");
    let body = format!(
        "{{\"data\":{{\"data\":{{\"v\":[{}1]}}}}}}",
        "1,".repeat(32_700)
    )
    .into_bytes();
    group.throughput(Throughput::Bytes(body.len() as u64));
    let defaults: RawAuditConfig = serde_json::from_value(json!({
        "mode": "hmac-sha256",
        "hmac_key": "bench-audit-key-0123456789abcdef",
    }))
    .unwrap();
    for (label, config) in [
        ("default-bounds", AuditConfig::from_raw(defaults).unwrap()),
        ("unbounded", hmac_config(64 * 1024)),
    ] {
        group.bench_with_input(BenchmarkId::new("hmac-sha256", label), &body, |b, body| {
            b.iter(|| {
                let mut capture = config.capture();
                capture.feed(body);
                capture.render(&config, kv_v2_answer())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, masking, many_tiny_values);
criterion_main!(benches);

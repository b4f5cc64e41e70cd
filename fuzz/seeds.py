#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the repository's
own test data (classification cases, policies/) and Vault-shaped bodies.
The committed corpora started from these seeds and were then grown by
fuzzing and minimised with `cargo fuzz cmin`; rerunning this only adds files."""
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target: str, data: bytes) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


def classify() -> None:
    table = json.loads((ROOT / "plugin/tests/classification_cases.json").read_text())
    for case in table["cases"]:
        data = case["method"].encode() + b"\0" + case["target"].encode()
        if "namespace" in case:
            data += b"\0" + case["namespace"].encode()
        write("classify", data)
    mounts = "\n".join(f"{p}={t}" for p, t in table["mounts"].items()).encode()
    write("classify", b"GET\0/v1/team/kv/app/db\0\0" + mounts)


BODIES = [
    {"request_id": "7c1c", "lease_id": "", "renewable": False, "lease_duration": 0,
     "data": {"data": {"password": "hunter2", "user": "app", "port": 5432},
              "metadata": {"created_time": "2024-01-01T00:00:00Z", "version": 3, "destroyed": False}},
     "wrap_info": None, "warnings": None, "auth": None},
    {"data": {"keys": ["app/", "db", "ci/"]}},
    {"lease_id": "database/creds/ro/abc", "lease_duration": 3600,
     "data": {"username": "v-ro-x", "password": "A1a-pass"}},
    {"auth": {"client_token": "hvs.CAES", "accessor": "acc", "policies": ["default"],
              "metadata": {"role": "ci"}, "lease_duration": 600}},
    {"errors": ["permission denied"]},
    {"data": {"certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
              "serial_number": "3a:9f", "name": "owner"}},
]
RAW_BODIES = [
    b'{"a":"\\u00e9\\ud83d\\ude00\\n","n":-1.5e-3,"big":1e400,"t":true,"z":null}',
    b'[[[[{"k":[1,2,{"keys":["x"]}]}]]]]',
    b' \n{"data":{"keys":[]}} ',
    b'"just a string"',
    b"{\"a\":1,}",
]


def mask() -> None:
    bodies = [json.dumps(b).encode() for b in BODIES] + RAW_BODIES
    for i, body in enumerate(bodies):
        # selector: config (bit 0), action (bits 1-2), mount (bits 3-4), chunking (bits 5-7)
        for selector in (0b00001010, 0b00001101, 0b10100011 if i % 2 else 0b01000100):
            write("mask", bytes([selector]) + body)


def config() -> None:
    policies = ROOT / "policies"
    base = {
        "schema": (policies / "schema.cedarschema").read_text(),
        "policies": (policies / "policies.cedar").read_text(),
        "entities": json.loads((policies / "entities.json").read_text()),
        "mounts": {"secret": "kv-v2", "kv": "kv-v1"},
        "identity": {"source": "jwt", "payload_in_metadata": "ci_claims",
                     "principal_claim": "sub", "principal_type": "Workload"},
        "audit": {"mode": "hmac-sha256", "hmac_key": "secretgate-dev-audit-key-not-for-production"},
    }
    write("config", json.dumps(base).encode())
    write("config", json.dumps({**base, "identity": {"source": "header", "header": "x-secretgate-principal"},
                                "approval": {"cluster": "approver", "authority": "approver.local",
                                             "timeout_ms": 30000, "wait_ms": 25000, "token": "t"},
                                "recent_reads": {"window_s": 60}}).encode())
    write("config", json.dumps({k: v for k, v in base.items() if k not in ("schema", "policies", "entities")}
                               | {"bundle": {"cluster": "bundles", "authority": "bundles.local",
                                             "path": "/bundle.json", "refresh_s": 5,
                                             "digest_path": "/bundle.json.sha256"},
                                  "identity": {"source": "mtls"}}).encode())
    write("config", b'{"identity":{"source":"header"},"audit":{"mode":"redact","max_body_bytes":1024,'
                    b'"claims":["sub"],"readable_keys":{"kv-v2":["owner"]},"list_keys":true}}')


def approval_reply() -> None:
    replies = [
        {"status": "approved", "grant_id": "g-1", "approver": "alice", "expires_at": "2026-01-01T00:00:00Z"},
        {"status": "denied", "approver": "bob", "reason": "not during a freeze"},
        {"status": "pending", "approval_id": "a-1", "approval_url": "https://approver.local/a/a-1"},
        {"status": "approved", "grant_id": "", "approver": "alice", "expires_at": "x"},
        ["status", "approved"],
    ]
    for reply in replies:
        write("approval_reply", b"\x02" + json.dumps(reply).encode())
    write("approval_reply", b"\x01" + json.dumps(replies[0]).encode())
    write("approval_reply", b"\x00")


def bundle() -> None:
    policies = ROOT / "policies"
    body = json.dumps({
        "schema": (policies / "schema.cedarschema").read_text(),
        "policies": (policies / "policies.cedar").read_text(),
        "entities": json.loads((policies / "entities.json").read_text()),
        "revision": "r1",
    }).encode()
    digest = hashlib.sha256(body).hexdigest().encode()
    # flags bit 0: digest configured; bit 1: build the configuration.
    write("bundle", b"\x03" + body + b"\0\x01\x01" + body + b"\0\x01\x00" + digest + b"  bundle.json\n")
    write("bundle", b"\x00" + body + b"\0\x01\x01" + body + b"\0\x02\x01\0\x03\x00not found")
    write("bundle", b"\x02" + b'{"revision":"r2","entities":[]}')
    write("bundle", b"\x02" + b'{"policies":"permit(principal, action, resource);"}')
    write("bundle", b"\x01" + b'{"entities":{}}' + b"\0\x01\x00{}\0\x01\x00" + b"0" * 64)


if __name__ == "__main__":
    classify()
    mask()
    config()
    approval_reply()
    bundle()

"""Issue #15 item 2 through real Envoy and OpenBao: a request whose audit
record cannot be handed to Envoy is never silently lost.

`audit.max_record_bytes` makes a record too large to write on purpose: a JWT
with a 6,000-byte `workflow` claim (copied into the record) before the
request is forwarded, or a secret with many values (masked into the
response's record) after the answer started.

- `on_failure: deny` (the default): the request is answered 503
  `audit unavailable` and never reaches OpenBao; a compact record says so.
- A response that already started cannot be taken back: it is delivered and
  counted as `secretgate.audit.lost`, with a compact record.
- `on_failure: log`: the request goes on, and the loss is counted."""

from __future__ import annotations

import json
import uuid

import pytest

import stack as stack_module
from conftest import RawClient

MAX_RECORD_BYTES = 4096
WRITE_POLICY = """
@id("ci-acme-api-writes-own-secrets")
permit (principal in Group::"ci", action == Action::"write", resource in Path::"secret/ci/acme/api")
when { context.claims has repository && context.claims.repository == "acme/api" };
"""
LOST = "wasmcustom.secretgate.audit.lost"
REFUSED = "wasmcustom.secretgate.audit.refused"


def audited_stack(tmp_path_factory, on_failure: str):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["policies"] += WRITE_POLICY
    config["audit"] = dict(stack_module.DEV_AUDIT, max_record_bytes=MAX_RECORD_BYTES, on_failure=on_failure)
    return stack_module.Stack(tmp_path_factory.mktemp(f"audit-{on_failure}"), plugin_config=config)


@pytest.fixture(scope="module")
def deny_stack(tmp_path_factory):
    with audited_stack(tmp_path_factory, "deny") as running:
        yield running


@pytest.fixture(scope="module")
def log_stack(tmp_path_factory):
    with audited_stack(tmp_path_factory, "log") as running:
        yield running


def records_for(stack, path: str) -> list[dict]:
    lines = [line for line in stack.access_log_lines() if line.get("audit")]
    records = [json.loads(line["audit"]) for line in lines]
    return [r for r in records if r["path"] == f"/v1/secret/data/{path}"]


def the_record(stack, path: str) -> dict:
    """Waits for the access log line of the one request to ``path`` (each test
    uses a fresh one; Envoy sets its own request ids) and returns its record."""
    for _ in range(50):
        found = records_for(stack, path)
        if found:
            assert len(found) == 1, found
            return found[0]
        stack.access_log_lines(at_least=len(stack.access_log_lines()) + 1, timeout=0.2)
    raise AssertionError(f"no record for {path}")


def long_claim_jwt(stack) -> str:
    return stack.mint_jwt({"workflow": "w" * 6000})


def write(stack, path: str, jwt: str, value: str):
    envoy = RawClient(stack.envoy_url, vault_token=stack.root_token)
    return envoy.request("POST", f"/v1/secret/data/{path}", jwt=jwt, body={"data": {"value": value}})


def stored(stack, path: str):
    direct = RawClient(stack.bao_url, vault_token=stack.root_token)
    return direct.get(f"/v1/secret/data/{path}")


def test_deny_mode_refuses_a_request_it_cannot_audit_and_forwards_nothing(deny_stack):
    stack = deny_stack
    path = f"ci/acme/api/refused-{uuid.uuid4().hex}"
    refused_before = sum(stack.counters(REFUSED).values())
    answer = write(stack, path, long_claim_jwt(stack), "never-stored")
    assert answer.status == 503, answer.text
    assert answer.json()["errors"] == ["audit unavailable"]
    assert stored(stack, path).status == 404, "OpenBao never saw the write"
    stack.wait_stat(REFUSED, lambda n: n == refused_before + 1, "the refusal was counted")
    record = the_record(stack, path)
    assert record["decision"] == "audit_unavailable"
    assert record["response_status"] == 503
    assert record["claims"] == {}
    assert "max_record_bytes" in record["audit_error"]
    assert record["action"] == "write" and record["resource"] == f'Secret::"secret/{path}"'


def test_a_response_that_already_started_is_delivered_and_its_loss_counted(deny_stack):
    stack = deny_stack
    path = f"ci/acme/api/wide-{uuid.uuid4().hex}"
    secret = {f"key-{i:03}": f"value-{i:03}" for i in range(80)}
    direct = RawClient(stack.bao_url, vault_token=stack.root_token)
    assert direct.request("POST", f"/v1/secret/data/{path}", body={"data": secret}).status == 200
    lost_before = sum(stack.counters(LOST).values())
    envoy = RawClient(stack.envoy_url, vault_token=stack.root_token)
    answer = envoy.get(f"/v1/secret/data/{path}", jwt=stack.mint_jwt({}))
    assert answer.status == 200 and answer.json()["data"]["data"] == secret
    stack.wait_stat(LOST, lambda n: n == lost_before + 1, "the lost record was counted")
    record = the_record(stack, path)
    assert record["decision"] == "allow", "the record says what happened: the secret went out"
    assert record["response_status"] == 200
    assert record["response_body"] is None
    assert "max_record_bytes" in record["audit_error"]


def test_log_mode_forwards_and_counts_the_loss(log_stack):
    stack = log_stack
    path = f"ci/acme/api/logged-{uuid.uuid4().hex}"
    lost_before = sum(stack.counters(LOST).values())
    answer = write(stack, path, long_claim_jwt(stack), "stored-anyway")
    assert answer.status == 200, answer.text
    assert stored(stack, path).json()["data"]["data"] == {"value": "stored-anyway"}
    # Lost twice: before forwarding, and again when the response ended.
    stack.wait_stat(LOST, lambda n: n == lost_before + 2, "both losses were counted")
    record = the_record(stack, path)
    assert record["decision"] == "allow" and record["response_status"] == 200
    assert record["claims"] == {}
    assert "max_record_bytes" in record["audit_error"]
    assert sum(stack.counters(REFUSED).values()) == 0

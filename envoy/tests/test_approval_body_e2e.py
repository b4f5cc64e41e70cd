"""A write with a body on an @approval route, end to end: real Envoy running
secretgate.wasm, real OpenBao and the real approval service (approver/).

While the approval callout is out, the filter has paused the request headers.
By default Envoy then holds the body too; with the Wasm filter's
``allow_on_headers_stop_iteration`` it hands the body to the paused filter,
which must pause it as well (it used to continue, and the write went to
OpenBao before any decision). These tests send KV v2 writes whose JSON bodies
arrive while the request waits (up to 300 KiB, in several reads), under both
settings, and check OpenBao's own view, read straight from OpenBao with the root token:
approved, the value stored is byte for byte the value sent, and OpenBao got
the request only after the approver approved; denied (or refused pending a
grant in ``retry`` mode), OpenBao never saw the write and has no such secret.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import select
import socket
import time
import uuid

import pytest

import stack as stack_module
from approval_support import (  # noqa: F401 (approver is a pytest fixture)
    ALICE,
    approval_config,
    approval_id,
    approver,
    as_approver,
    audit_record,
    pending_for,
)
from conftest import RawClient, RawResponse, assert_no_secret_in_files

HOLD_FOLDER = "secret/deploy/acme/web"
RETRY_FOLDER = "secret/deploy-retry/acme/web"
WRITE_POLICIES = f"""
@id("deploy-writes-need-secops")
@approval("secops")
permit (principal in Group::"ci", action == Action::"write", resource in Path::"{HOLD_FOLDER}")
when {{ context.claims has repository && context.claims.repository == "acme/web" }};

@id("deploy-retry-writes-need-secops")
@approval("secops")
@approval_mode("retry")
permit (principal in Group::"ci", action == Action::"write", resource in Path::"{RETRY_FOLDER}")
when {{ context.claims has repository && context.claims.repository == "acme/web" }};
"""
LARGE = 300 * 1024  # well past the audit capture (64 KiB) and several of Envoy's reads
RX_BYTES = "^http\\.secretgate\\.downstream_cx_rx_bytes_total$"
UPSTREAM_REQUESTS = "^cluster\\.openbao\\.upstream_rq_total$"
CALLOUTS_WAITING = "^wasmcustom\\.secretgate\\.live\\.approval_callouts$"

canaries: list[str] = []


@pytest.fixture(scope="module", params=["default", "allow_on_headers_stop_iteration"])
def writes(request, tmp_path_factory, approver):
    """The stack, twice: with Envoy's default, under which a filter that pauses the
    headers is not given the body until it resumes, and with the Wasm filter's
    ``allow_on_headers_stop_iteration: true``, under which the body is delivered to
    the paused filter, which must then hold it itself."""
    config = approval_config(approver["port"])
    config["policies"] += WRITE_POLICIES
    running = stack_module.Stack(tmp_path_factory.mktemp("approval-body"), plugin_config=config)
    running.extra_clusters["approver"] = approver["port"]
    if request.param != "default":
        running.wasm_plugin_options = {request.param: True}
    with running:
        yield running
    # The values written went to OpenBao, not into any log.
    assert_no_secret_in_files(running, extra=canaries)


def unique(name: str) -> str:
    """A secret name of its own: the approver (and its grants) outlive each stack."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def secret_body(name: str, size: int) -> tuple[dict, bytes]:
    """KV v2 write data of about ``size`` bytes: a marker (a canary for the logs) and random hex."""
    marker = f"FAKE-approval-body-{name}-{uuid.uuid4().hex}"
    canaries.append(marker)
    data = {"marker": marker, "blob": os.urandom(max(size - 120, 0) // 2).hex()}
    return data, json.dumps({"data": data}).encode()


def audit_hmac(value: str) -> str:
    """How the audit record masks a string (the stack's development HMAC key)."""
    digest = hmac.new(stack_module.DEV_AUDIT_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


def stat(running, pattern: str) -> int:
    return sum(running.counters(pattern).values())


class RawWrite:
    """A POST to Envoy over a plain socket, so the test decides when the body goes out."""

    def __init__(self, running, path: str, body: bytes):
        self.running = running
        self.path = path
        self.body = body
        jwt = running.mint_jwt({"repository": "acme/web"})
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Vault-Token: {running.root_token}\r\n"
            f"{stack_module.JWT_HEADER}: {jwt}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.rx_before = stat(running, RX_BYTES)
        self.sock = socket.create_connection((stack_module.LOOPBACK, running.listen_port), timeout=30)
        self.sent = 0

    def send(self, data: bytes) -> None:
        """Sends ``data`` and waits until Envoy has read it (its received-bytes counter)."""
        self.sock.sendall(data)
        self.sent += len(data)
        self.running.wait_stat(
            RX_BYTES, lambda rx: rx - self.rx_before >= self.sent, f"Envoy read the first {self.sent} bytes of the write"
        )

    def send_all_at_once(self) -> None:
        self.send(self.head + self.body)

    def send_head_then_body_in_pieces(self, upto: int | None = None) -> None:
        """Headers, then (once the filter has paused the request on its callout) the body
        up to ``upto`` in pieces (a quarter of it, at most 64 KiB), each one read by Envoy
        before the next is sent: several reads, several chunks."""
        self.send(self.head)
        self.running.wait_stat(CALLOUTS_WAITING, lambda waiting: waiting == 1, "the write paused on its approval callout")
        self.send_rest(upto)

    def send_rest(self, upto: int | None = None) -> None:
        """The body from where it stopped up to ``upto`` (default: all of it), in pieces."""
        sent_body = self.sent - len(self.head)
        end = len(self.body) if upto is None else upto
        piece = min(64 * 1024, max(len(self.body) // 4, 1))
        for start in range(sent_body, end, piece):
            self.send(self.body[start : min(start + piece, end)])

    def replied(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def response(self) -> RawResponse:
        reply = http.client.HTTPResponse(self.sock, method="POST")
        try:
            reply.begin()
            return RawResponse(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            reply.close()
            self.sock.close()


def worker_barrier(running) -> None:
    """Envoy runs one worker (``--concurrency 1``): once it has answered a request sent
    now, it has finished handling every byte it had read before (a read is dispatched
    through the codec and the filters in the same event)."""
    denied = RawClient(running.envoy_url, vault_token=running.root_token).get(
        "/v1/secret/data/ci/acme/web/token", jwt=running.mint_jwt()
    )
    assert denied.status == 403, denied.text


def assert_held(running, write: RawWrite, upstream_before: int, mark: int) -> None:
    """Everything the client sent is in Envoy and handled, and none of it went on."""
    worker_barrier(running)
    assert stat(running, UPSTREAM_REQUESTS) == upstream_before, "Envoy sent a request to OpenBao before the decision"
    assert not openbao_requests(running, write.path, mark), "OpenBao saw the write before the decision"
    assert not write.replied(), "the client got an answer before the decision"
    assert stat(running, CALLOUTS_WAITING) == 1


def openbao_requests(running, path: str, mark: int) -> list[dict]:
    """OpenBao's audit entries of writes to ``path`` since ``mark`` (request side; the
    tests' own reads straight from OpenBao are not writes)."""
    api_path = path.removeprefix("/v1/")
    return [
        entry
        for entry in running.bao_audit_entries(since=mark)
        if entry.get("type") == "request"
        and entry.get("request", {}).get("path") == api_path
        and entry["request"].get("operation") in ("create", "update")
    ]


def audit_time(entry: dict) -> float:
    """An OpenBao audit entry's time (RFC 3339 with nanoseconds) as epoch seconds."""
    stamp = entry["time"].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    parsed = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp() + float(f"0.{fraction or '0'}")


def stored(running, folder: str, name: str) -> tuple[RawResponse, RawResponse]:
    """The secret's current value and its metadata, straight from OpenBao (root token)."""
    bao = RawClient(running.bao_url, vault_token=running.root_token)
    rest = f"{folder.removeprefix('secret/')}/{name}"
    return bao.get(f"/v1/secret/data/{rest}"), bao.get(f"/v1/secret/metadata/{rest}")


def assert_stored_exactly(running, folder: str, name: str, data: dict) -> None:
    value, metadata = stored(running, folder, name)
    assert value.status == 200, value.text
    assert value.json()["data"]["data"] == data, "OpenBao stores something other than what the client sent"
    versions = metadata.json()["data"]["versions"]
    assert list(versions) == ["1"], f"one write reached OpenBao, not {sorted(versions)}"


def assert_never_stored(running, folder: str, name: str) -> None:
    value, metadata = stored(running, folder, name)
    assert value.status == 404, f"OpenBao has the secret: {value.status}"
    assert metadata.status == 404, f"OpenBao has metadata for the secret: {metadata.status}"


def audit_records(running, name: str, count: int, timeout: float = 10.0) -> list[dict]:
    """The filter's first ``count`` audit records for the secret, in order; Envoy writes
    the access log in the background, so wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        records = [json.loads(line["audit"]) for line in running.access_log_lines() if line.get("audit") and name in line["path"]]
        if len(records) >= count:
            return records[:count]
        assert time.monotonic() < deadline, f"{len(records)} of {count} audit records for {name} within {timeout}s"
        time.sleep(0.1)


def decide(approver, item: dict, verb: str, **body) -> None:
    decided = as_approver(approver, ALICE).request("POST", f"/v1/approvals/{approval_id(item)}/{verb}", body=body)
    assert decided.status == 200, decided.text


@pytest.mark.parametrize(
    "size, delivery",
    [(2048, "together"), (48 * 1024, "in-pieces"), (LARGE, "together"), (LARGE, "in-pieces"), (LARGE, "split")],
    ids=[
        "2KiB-with-the-headers",
        "48KiB-in-pieces-while-paused",
        "300KiB-with-the-headers",
        "300KiB-in-pieces-while-paused",
        "300KiB-half-before-half-after-the-approval",
    ],
)
def test_a_held_write_reaches_openbao_intact_only_after_approval(writes, approver, size, delivery):
    name = unique(f"hold-{size}-{delivery}")
    path = f"/v1/secret/data/{HOLD_FOLDER.removeprefix('secret/')}/{name}"
    data, body = secret_body(name, size)
    upstream_before, mark = stat(writes, UPSTREAM_REQUESTS), writes.bao_audit_mark()
    write = RawWrite(writes, path, body)
    if delivery == "together":
        write.send_all_at_once()
    else:
        write.send_head_then_body_in_pieces(upto=len(body) // 2 if delivery == "split" else None)
    item = pending_for(approver, f"{HOLD_FOLDER}/{name}")
    assert item["action"] == "write"
    assert_held(writes, write, upstream_before, mark)

    approved_at = time.time()
    decide(approver, item, "approve")
    write.send_rest()  # nothing left, except in the split case
    response = write.response()
    assert response.status == 200, response.text
    assert response.json()["data"]["version"] == 1

    assert_stored_exactly(writes, HOLD_FOLDER, name, data)
    (seen,) = openbao_requests(writes, path, mark)
    assert audit_time(seen) >= approved_at - 0.01, "OpenBao got the write before the approver approved it"
    record = audit_record(writes, name)
    assert record["decision"] == "allow"
    assert record["approval"]["outcome"] == "approved" and record["approval"]["mode"] == "hold"
    # The filter saw the body once, whole, after the approval: the record's capture says so.
    if size <= 64 * 1024:
        assert record["request_body"]["size"] == len(body), record["request_body"]
        masked = {key: audit_hmac(value) for key, value in data.items()}
        assert record["request_body"]["json"] == {"data": masked}, "the record masks another body than the one sent"
    else:
        assert record["request_body"]["not_logged"] == "over_max_body_bytes", record["request_body"]
        assert record["request_body_truncated"] is True
    assert stat(writes, CALLOUTS_WAITING) == 0


def test_a_held_write_never_reaches_openbao_when_denied(writes, approver):
    name = unique("hold-denied")
    path = f"/v1/secret/data/{HOLD_FOLDER.removeprefix('secret/')}/{name}"
    data, body = secret_body(name, LARGE)
    upstream_before, mark = stat(writes, UPSTREAM_REQUESTS), writes.bao_audit_mark()
    write = RawWrite(writes, path, body)
    write.send_head_then_body_in_pieces()
    item = pending_for(approver, f"{HOLD_FOLDER}/{name}")
    assert_held(writes, write, upstream_before, mark)

    decide(approver, item, "deny", reason="not during the freeze")
    response = write.response()
    assert response.status == 403
    assert response.json()["errors"] == ["approval denied"]
    assert data["marker"].encode() not in response.body

    assert not openbao_requests(writes, path, mark), "a denied write reached OpenBao"
    assert stat(writes, UPSTREAM_REQUESTS) == upstream_before
    assert_never_stored(writes, HOLD_FOLDER, name)
    assert audit_record(writes, name)["decision"] == "approval_denied"


def retry_write(running, name: str, body: bytes) -> RawResponse:
    """One retry-mode write, headers and body in one send, as an ordinary client does."""
    path = f"/v1/secret/data/{RETRY_FOLDER.removeprefix('secret/')}/{name}"
    write = RawWrite(running, path, body)
    write.send_all_at_once()
    return write.response()


def test_retry_mode_refuses_a_write_until_approved_then_forwards_the_retry_intact(writes, approver):
    name = unique("retry-approved")
    path = f"/v1/secret/data/{RETRY_FOLDER.removeprefix('secret/')}/{name}"
    data, body = secret_body(name, LARGE)
    mark = writes.bao_audit_mark()
    first = retry_write(writes, name, body)
    assert first.status == 403, first.text
    assert first.json()["errors"] == ["approval required"]
    assert not openbao_requests(writes, path, mark), "the refused first attempt reached OpenBao"
    assert_never_stored(writes, RETRY_FOLDER, name)

    decide(approver, {"id": first.json()["approval_id"]}, "approve")
    retried = retry_write(writes, name, body)
    assert retried.status == 200, retried.text
    assert_stored_exactly(writes, RETRY_FOLDER, name, data)
    assert len(openbao_requests(writes, path, mark)) == 1
    refused, record = audit_records(writes, name, 2)
    assert refused["decision"] == "approval_required"
    assert record["decision"] == "allow"
    assert record["approval"]["outcome"] == "approved" and record["approval"]["mode"] == "retry"


def test_retry_mode_never_forwards_a_denied_write(writes, approver):
    name = unique("retry-denied")
    path = f"/v1/secret/data/{RETRY_FOLDER.removeprefix('secret/')}/{name}"
    _, body = secret_body(name, LARGE)
    mark = writes.bao_audit_mark()
    first = retry_write(writes, name, body)
    assert first.status == 403 and first.json()["errors"] == ["approval required"], first.text

    decide(approver, {"id": first.json()["approval_id"]}, "deny", reason="wrong target")
    retried = retry_write(writes, name, body)
    assert retried.status == 403, retried.text
    assert retried.json()["errors"] == ["approval denied"]
    assert not openbao_requests(writes, path, mark), "a denied write reached OpenBao"
    assert_never_stored(writes, RETRY_FOLDER, name)

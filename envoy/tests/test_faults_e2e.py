"""Bad days, with real Envoy: OpenBao down, slow or answering garbage; a client
that leaves while its request waits for approval; oversized headers;
malformed bodies; a policy that errors at evaluation. Each ends in a deny or a clean upstream error, with an
audit record saying what happened, no secret leaked, and the filter still
serving the next request (part of #8)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

import stack as stack_module
from approval_support import approval_config, start_http
from conftest import RawClient, assert_no_secret_in_files

CANARY = "FAKE-upstream-canary-value-6d2c"


class FakeOpenBao(http.server.BaseHTTPRequestHandler):
    """Stands where OpenBao was: answers by `mode`."""

    mode = "garbage-json"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.mode == "bad-http":
            self.wfile.write(b"\x00\x01 this is not HTTP\r\n\r\n")
            return
        if self.mode == "slow":
            time.sleep(2)
            body = json.dumps({"data": {"data": {"password": CANARY}, "metadata": {"version": 1}}}).encode()
        else:
            body = b"<html>not json, but mentions " + CANARY.encode() + b"</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def audit_records(running, path_part: str, at_least: int = 1) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        records = [
            json.loads(line["audit"])
            for line in running.access_log_lines()
            if line.get("audit") and path_part in line["path"]
        ]
        if len(records) >= at_least or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def next_record(running, path_part: str, request) -> dict:
    """Sends ``request()`` and returns (its reply, the audit record it added)."""
    before = len(audit_records(running, path_part, at_least=0))
    reply = request()
    records = audit_records(running, path_part, at_least=before + 1)
    assert len(records) > before, f"no new audit record for {path_part}"
    return reply, records[-1]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """One stack whose OpenBao is replaced by FakeOpenBao on the same port,
    shared by the tests below in file order (OpenBao-down comes last)."""
    running = stack_module.Stack(tmp_path_factory.mktemp("faulty"), plugin_config=stack_module.default_plugin_config())
    with running:
        running.stop_bao()
        fake = http.server.ThreadingHTTPServer((stack_module.LOOPBACK, running.bao_port), FakeOpenBao)
        thread = threading.Thread(target=fake.serve_forever, daemon=True)
        thread.start()
        try:
            yield running, fake
        finally:
            fake.shutdown()
            fake.server_close()
    leaks = [p for p in running.run_dir.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert not leaks, f"the upstream's value leaked into {leaks}"
    assert_no_secret_in_files(running)


def still_serving(running):
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    denied = client.get("/v1/secret/data/ci/acme/web/token", jwt=running.mint_jwt())
    assert denied.status == 403 and denied.json()["errors"] == ["permission denied"]


def test_openbao_answering_garbage_passes_through_unlogged(faulty):
    running, _ = faulty
    FakeOpenBao.mode = "garbage-json"
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    reply, record = next_record(
        running, "ci/acme/api/db", lambda: client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt())
    )
    assert reply.status == 200  # the client gets what the upstream said
    assert record["decision"] == "allow" and record["response_status"] == 200
    assert record["response_body"]["not_logged"] == "not_json"
    assert record["response_body"]["hmac"].startswith("hmac-sha256:")
    still_serving(running)


def test_openbao_answering_broken_http_is_a_clean_upstream_error(faulty):
    running, _ = faulty
    FakeOpenBao.mode = "bad-http"
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    reply, record = next_record(
        running, "ci/acme/api/db", lambda: client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt())
    )
    assert reply.status in (502, 503), reply.status
    assert record["decision"] == "allow" and record["response_status"] in (502, 503)
    still_serving(running)


def test_a_slow_openbao_does_not_hold_up_other_requests(faulty):
    running, _ = faulty
    FakeOpenBao.mode = "slow"
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    result = {}
    before = len(audit_records(running, "ci/acme/api/db", at_least=0))
    slow = threading.Thread(
        target=lambda: result.update(reply=client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt()))
    )
    slow.start()
    running.wait_stat(
        "^cluster\\.openbao\\.upstream_rq_active$", lambda active: active == 1, "the slow read reached the upstream"
    )
    started = time.monotonic()
    still_serving(running)
    assert time.monotonic() - started < 1.5, "a deny waited for the slow upstream"
    slow.join(timeout=10)
    assert result["reply"].status == 200
    record = audit_records(running, "ci/acme/api/db", at_least=before + 1)[-1]
    assert record["response_body"]["json"]["data"]["data"]["password"].startswith("hmac-sha256:")


def test_oversized_headers_are_refused_by_envoy_and_the_filter_keeps_serving(faulty):
    running, _ = faulty
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    reply = client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt(), headers={"X-Big": "x" * 100_000})
    assert reply.status == 431
    still_serving(running)


def test_a_malformed_json_write_body_is_never_logged(faulty):
    running, _ = faulty
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    body = '{"data": {"password": "' + CANARY + '"'  # unterminated
    reply, record = next_record(
        running,
        "ci/acme/api/db",
        lambda: client.request("POST", "/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt(), body=body),
    )
    assert reply.status == 403  # the demo policies permit no writes
    assert record["decision"] == "deny"
    assert CANARY not in json.dumps(record)
    still_serving(running)


def test_openbao_down_is_a_clean_upstream_error(faulty):
    running, fake = faulty
    fake.shutdown()
    fake.server_close()  # the fixture's second close is harmless
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    reply, record = next_record(
        running, "ci/acme/api/db", lambda: client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt())
    )
    assert reply.status == 503
    assert record["response_status"] == 503
    still_serving(running)


class SilentApprover(http.server.BaseHTTPRequestHandler):
    """An approval service that never decides in time: it holds each callout
    until the test releases it (or for at most 30 s)."""

    release = threading.Event()

    def do_POST(self):  # noqa: N802
        SilentApprover.release.wait(timeout=30)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_client_that_leaves_while_waiting_for_approval_is_recorded(tmp_path):
    silent = start_http(SilentApprover)
    config = approval_config(silent.server_address[1], timeout_ms=10000, wait_ms=9000)
    running = stack_module.Stack(tmp_path / "stack", plugin_config=config)
    running.extra_clusters["approver"] = silent.server_address[1]
    try:
        with running:
            jwt = running.mint_jwt({"repository": "acme/web", "environment": "production"})
            request = (
                f"GET /v1/secret/data/prod/acme/web/db HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"X-Vault-Token: {running.root_token}\r\n{stack_module.JWT_HEADER}: {jwt}\r\n\r\n"
            )
            with socket.create_connection((stack_module.LOOPBACK, running.listen_port)) as client:
                client.sendall(request.encode())
                running.wait_stat(
                    "^wasmcustom\\.secretgate\\.live\\.approval_callouts$",
                    lambda waiting: waiting == 1,
                    "the filter paused the read on its approval callout",
                )
            records = audit_records(running, "prod/acme/web/db")
            assert records, "no audit record for the abandoned request"
            assert records[-1]["reason"] == "client left while waiting for approval"
            # Envoy cancelled the callout with the request: nothing stays alive
            # (the gauges drop when Envoy deletes the request's context, just after its record).
            alive = "^(wasmcustom\\.secretgate\\.live\\.(approval_callouts|requests)|cluster\\.approver\\.upstream_rq_active)$"
            running.wait_stat(alive, lambda live: live == 0, "nothing left alive after the client left")
            assert running.counters(alive) == {
                "wasmcustom.secretgate.live.approval_callouts": 0,
                "wasmcustom.secretgate.live.requests": 0,
                "cluster.approver.upstream_rq_active": 0,
            }
            # The filter serves the next request.
            client = RawClient(running.envoy_url, vault_token=running.root_token)
            assert client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt()).status == 200
    finally:
        SilentApprover.release.set()
        silent.shutdown()
        silent.server_close()


# Cedar skips a policy whose condition errors (here an overflow), and a
# skipped forbid would let the permits through: the filter denies instead.
ERRORING_FORBID = """
@id("overflowing-forbid")
forbid (principal, action, resource in Path::"secret/ci/acme/api")
when { context.now * 9223372036854775807 > 0 };
"""


def test_a_policy_that_errors_at_evaluation_is_a_deny_and_the_filter_keeps_serving(tmp_path):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["policies"] += ERRORING_FORBID
    running = stack_module.Stack(tmp_path / "stack", plugin_config=config)
    with running:
        client = RawClient(running.envoy_url, vault_token=running.root_token)
        jwt = running.mint_jwt()
        mark = running.bao_audit_mark()
        reply, record = next_record(running, "ci/acme/api/db", lambda: client.get("/v1/secret/data/ci/acme/api/db", jwt=jwt))
        assert reply.status == 403, reply.text
        assert reply.json()["errors"] == ["permission denied"]
        assert record["decision"] == "error"
        assert any("overflowing-forbid" in error for error in record["errors"]), record
        assert "secret/data/ci/acme/api/db" not in running.bao_audit_paths(mark), "an erroring policy let the read through"
        assert running.counters("^wasmcustom\\.secretgate\\.decisions\\.error$") == {
            "wasmcustom.secretgate.decisions.error": 1
        }
        # Outside the erroring policy's scope the same caller is served as before.
        legacy = client.get("/v1/kv/ci/acme/api/legacy", jwt=jwt)
        assert legacy.status == 200, legacy.text
    assert_no_secret_in_files(running)

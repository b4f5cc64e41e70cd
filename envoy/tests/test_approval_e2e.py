"""Approval end to end: real Envoy running secretgate.wasm, real OpenBao, and
the real approval service (approver/), wired through an Envoy cluster."""

from __future__ import annotations

import http.server
import json
import threading
import time

import stack as stack_module
from approval_support import (  # noqa: F401 (approver and gated are pytest fixtures)
    audit_record,
    ALICE,
    BOT,
    OUTSIDER,
    SECRETS,
    WebhookReceiver,
    approval_config,
    approval_id,
    approver,
    as_approver,
    gated,
    in_background,
    pending_for,
    start_http,
)
from conftest import RawClient


def test_a_held_request_is_released_when_an_approver_approves(gated, approver):
    jwt = gated.mint_jwt({"repository": "acme/web", "environment": "production"})
    envoy = RawClient(gated.envoy_url, vault_token=gated.root_token)
    mark = gated.bao_audit_mark()
    notified = len(WebhookReceiver.received)  # other modules' approvers post to the same list
    thread, result = in_background(
        lambda: envoy.get("/v1/secret/data/prod/acme/web/db", jwt=jwt, headers={"X-Secretgate-Reason": "INC-42"}, timeout=30)
    )
    item = pending_for(approver, "secret/prod/acme/web/db")
    assert "secret/data/prod/acme/web/db" not in gated.bao_audit_paths(since=mark), "held, not forwarded"
    # The approver posts the webhook in the background, after the approval is listed.
    deadline = time.monotonic() + 10
    while len(WebhookReceiver.received) == notified and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(WebhookReceiver.received) > notified, "approvers were notified within 10 s"
    assert "text" in WebhookReceiver.received[-1]

    approved = as_approver(approver, ALICE).request("POST", f"/v1/approvals/{approval_id(item)}/approve", body={})
    assert approved.status == 200, approved.text
    thread.join(timeout=30)
    response = result["response"]
    assert response.status == 200, response.text
    assert response.json()["data"]["data"] == SECRETS["secret/prod/acme/web/db"]

    record = audit_record(gated, "prod/acme/web/db")
    assert record["decision"] == "allow"
    assert record["approval"]["outcome"] == "approved"
    assert record["approval"]["approver"] == ALICE[0]
    assert record["approval"]["grant_id"]
    # Envoy's /stats counts the approval outcome.
    counters = gated.counters("secretgate.approvals.approved")
    assert counters and all(value >= 1 for value in counters.values()), counters


def test_deny_returns_403_and_the_requester_cannot_approve_themselves(gated, approver):
    jwt = gated.mint_jwt({"repository": "acme/web", "environment": "production"})
    envoy = RawClient(gated.envoy_url, vault_token=gated.root_token)
    thread, result = in_background(lambda: envoy.get("/v1/secret/data/prod/acme/web/other", jwt=jwt, timeout=30))
    item = pending_for(approver, "secret/prod/acme/web/other")

    selfish = as_approver(approver, BOT).request("POST", f"/v1/approvals/{approval_id(item)}/approve", body={})
    assert selfish.status == 403, "the requester (actor claim) may not approve their own request"
    outsider = as_approver(approver, OUTSIDER).request("POST", f"/v1/approvals/{approval_id(item)}/approve", body={})
    assert outsider.status in (403, 404), "not in the approver group"

    denied = as_approver(approver, ALICE).request(
        "POST", f"/v1/approvals/{approval_id(item)}/deny", body={"reason": "not during the freeze"}
    )
    assert denied.status == 200, denied.text
    thread.join(timeout=30)
    response = result["response"]
    assert response.status == 403
    assert response.json()["errors"] == ["approval denied"]
    assert b"FAKE-prod-web-other" not in response.body


def test_retry_mode_returns_the_approval_id_then_the_secret_until_the_grant_expires(gated, approver):
    jwt = gated.mint_jwt({"repository": "acme/web"})
    envoy = RawClient(gated.envoy_url, vault_token=gated.root_token)
    first = envoy.get("/v1/secret/data/staging/acme/web/db", jwt=jwt)
    assert first.status == 403
    body = first.json()
    assert body["errors"] == ["approval required"]
    assert body["approval_id"] and body["approval_url"]

    approved = as_approver(approver, ALICE).request("POST", f"/v1/approvals/{body['approval_id']}/approve", body={})
    assert approved.status == 200, approved.text
    retried = envoy.get("/v1/secret/data/staging/acme/web/db", jwt=jwt)
    assert retried.status == 200, retried.text
    assert retried.json()["data"]["data"] == SECRETS["secret/staging/acme/web/db"]

    # @approval_ttl("3s"): a grant ends by the clock, and nothing counts its end, so wait it out.
    time.sleep(4)
    expired = envoy.get("/v1/secret/data/staging/acme/web/db", jwt=jwt)
    assert expired.status == 403
    assert expired.json()["errors"] == ["approval required"]


class BrokenApprover(http.server.BaseHTTPRequestHandler):
    mode = "garbage"
    late_sent = threading.Event()

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        if BrokenApprover.mode == "late":
            time.sleep(3)  # the fault itself: an approval that arrives after the filter's 1.5 s timeout
        status, body = {
            "garbage": (200, b"this is not json"),
            "error": (500, b'{"error": "boom"}'),
            "wrong-shape": (200, b'{"status": "approved"}'),
            "late": (200, b'{"status":"approved","grant_id":"g","approver":"a","expires_at":"t"}'),
        }[BrokenApprover.mode]
        try:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # Envoy may have closed the timed-out callout's connection already
        finally:
            if BrokenApprover.mode == "late":
                BrokenApprover.late_sent.set()

    def log_message(self, *args):
        pass


def test_a_broken_slow_or_absent_approval_service_is_a_deny(tmp_path_factory):
    """Fault injection: these stand in for a failing approval service; the real
    one is used above. Every failure must be a 403, never the secret."""
    broken = start_http(BrokenApprover)
    config = approval_config(broken.server_address[1], timeout_ms=1500, wait_ms=500)
    running = stack_module.Stack(tmp_path_factory.mktemp("broken-approver"), plugin_config=config)
    running.extra_clusters["approver"] = broken.server_address[1]
    try:
        with running:
            direct = RawClient(running.bao_url, vault_token=running.root_token)
            assert direct.request("POST", "/v1/secret/data/prod/acme/web/db", body={"data": SECRETS["secret/prod/acme/web/db"]}).status == 200
            envoy = RawClient(running.envoy_url, vault_token=running.root_token)
            jwt = running.mint_jwt({"repository": "acme/web", "environment": "production"})
            mark = running.bao_audit_mark()
            for mode in ["garbage", "error", "wrong-shape", "late"]:
                BrokenApprover.mode = mode
                response = envoy.get("/v1/secret/data/prod/acme/web/db", jwt=jwt, timeout=20)
                assert response.status == 403, (mode, response.text)
                assert response.json()["errors"] == ["approval unavailable"], mode
                assert b"FAKE-prod-web-db" not in response.body
            # The late approval has been sent, and Envoy holds no callout it could release.
            assert BrokenApprover.late_sent.wait(timeout=10), "the late approval was never sent"
            running.wait_stat(
                "^cluster\\.approver\\.upstream_rq_active$", lambda active: active == 0, "no callout left in flight"
            )
            assert "secret/data/prod/acme/web/db" not in running.bao_audit_paths(mark), "a late approval released the read"
            broken.shutdown()
            broken.server_close()
            down = envoy.get("/v1/secret/data/prod/acme/web/db", jwt=jwt, timeout=20)
            assert down.status == 403 and down.json()["errors"] == ["approval unavailable"]
            reasons = [
                json.loads(l["audit"])["reason"]
                for l in running.access_log_lines(at_least=5)
                if l.get("audit") and json.loads(l["audit"])["decision"] == "approval_error"
            ]
            assert len(reasons) == 5
            assert any("malformed" in r for r in reasons) and any("HTTP 500" in r for r in reasons)
            # Envoy answers a timed-out callout with its own 504 and a refused
            # connection with 503 (a reset arrives as a failed callout).
            assert reasons[3] in ("approval service answered HTTP 504", "approval service unreachable or timed out"), reasons
            assert reasons[4] in ("approval service answered HTTP 503", "approval service unreachable or timed out"), reasons
            # The filter still serves the next request.
            assert envoy.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt({})).status == 200
            # Envoy's /stats counts each failed callout.
            failures = sum(running.counters("secretgate.approvals.callout_failures").values())
            assert failures == 5, failures
    finally:
        broken.server_close()

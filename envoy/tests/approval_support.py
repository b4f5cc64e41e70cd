"""The approval stack shared by the approval end-to-end tests: the real approval
service (approver/, target/debug/approver) with its approvers and groups, a
webhook receiver, and a Stack (real Envoy + OpenBao) whose filter calls the
approver for the @approval policies below.

The fixtures ``approver`` and ``gated`` are module scoped: each test module that
imports them gets its own approver, database and stack.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time

import pytest

import stack as stack_module
from conftest import RawClient

CALLOUT_TOKEN = "e2e-callout-token-0123456789abcdef"
ALICE = ("alice@acme.test", "e2e-alice-token-0123456789abcdef")
BOT = ("acme-bot", "e2e-acmebot-token-0123456789abcdef")  # the JWTs' actor claim: may not self-approve
OUTSIDER = ("mallory@acme.test", "e2e-mallory-token-0123456789abcd")

APPROVAL_POLICIES = """
@id("prod-web-needs-secops")
@approval("secops")
permit (principal in Group::"ci", action == Action::"read", resource in Path::"secret/prod/acme/web")
when { context.claims has environment && context.claims.environment == "production" };

@id("staging-web-retry")
@approval("secops")
@approval_mode("retry")
@approval_ttl("3s")
permit (principal in Group::"ci", action == Action::"read", resource in Path::"secret/staging/acme/web")
when { context.claims has repository && context.claims.repository == "acme/web" };
"""
SECRETS = {
    "secret/prod/acme/web/db": {"password": "FAKE-prod-web-db-pw-approval"},
    "secret/prod/acme/web/other": {"password": "FAKE-prod-web-other-pw-approval"},
    "secret/staging/acme/web/db": {"password": "FAKE-staging-web-db-pw-approval"},
}


class WebhookReceiver(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", 0))
        WebhookReceiver.received.append(json.loads(self.rfile.read(length) or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def start_http(handler) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def approver(tmp_path_factory):
    subprocess.run(["cargo", "build", "-q", "-p", "approver"], cwd=stack_module.REPO_ROOT, check=True, timeout=1200)
    work = tmp_path_factory.mktemp("approver")
    webhook = start_http(WebhookReceiver)
    port = stack_module.free_ports(1)[0]
    people = "\n".join(
        f'[[approvers]]\nid = "{who}"\ntoken = "{token}"\ngroups = {json.dumps(groups)}\n'
        for (who, token), groups in [(ALICE, ["secops"]), (BOT, ["secops"]), (OUTSIDER, ["dba"])]
    )
    (work / "approver.toml").write_text(
        f'listen = "127.0.0.1:{port}"\ndatabase = "{work / "approver.db"}"\n'
        f'callout_token = "{CALLOUT_TOKEN}"\nmax_wait_ms = 30000\n\n'
        f'[webhook]\nurl = "http://127.0.0.1:{webhook.server_address[1]}/hook"\ntimeout_ms = 2000\n\n{people}'
    )
    binary = stack_module.REPO_ROOT / "target" / "debug" / "approver"
    with open(work / "approver.log", "wb") as log:
        process = subprocess.Popen(
            [str(binary), "serve", "--config", str(work / "approver.toml")], stdout=log, stderr=subprocess.STDOUT
        )
    client = RawClient(f"http://127.0.0.1:{port}")
    for _ in range(100):
        try:
            if client.get("/healthz").status == 200:
                break
        except OSError:
            time.sleep(0.1)
    yield {"port": port, "url": f"http://127.0.0.1:{port}", "process": process}
    process.terminate()
    process.wait(timeout=10)
    webhook.shutdown()


def approval_config(cluster_port: int, timeout_ms: int = 20000, wait_ms: int | None = None) -> dict:
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["policies"] += APPROVAL_POLICIES
    config["approval"] = {
        "cluster": "approver",
        "authority": "approver.local",
        "timeout_ms": timeout_ms,
        "token": CALLOUT_TOKEN,
        **({"wait_ms": wait_ms} if wait_ms is not None else {}),
    }
    return config


@pytest.fixture(scope="module")
def gated(tmp_path_factory, approver):
    running = stack_module.Stack(tmp_path_factory.mktemp("approval-stack"), plugin_config=approval_config(approver["port"]))
    running.extra_clusters["approver"] = approver["port"]
    with running:
        direct = RawClient(running.bao_url, vault_token=running.root_token)
        for path, data in SECRETS.items():
            mount, rest = path.split("/", 1)
            assert direct.request("POST", f"/v1/{mount}/data/{rest}", body={"data": data}).status == 200
        yield running


def as_approver(approver, who_token) -> RawClient:
    return RawClient(approver["url"], default_headers={"Authorization": f"Bearer {who_token[1]}"})


def pending_for(approver, resource: str, timeout: float = 10.0) -> dict:
    alice = as_approver(approver, ALICE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = alice.get("/v1/approvals?status=pending").json()
        items = listed if isinstance(listed, list) else listed.get("approvals", [])
        for item in items:
            if resource in json.dumps(item):
                return item
        time.sleep(0.1)
    raise AssertionError(f"no pending approval for {resource}")


def approval_id(item: dict) -> str:
    return item.get("approval_id") or item["id"]


def in_background(call):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("response", call()))
    thread.start()
    return thread, result


def audit_record(gated, path_part: str, timeout: float = 10.0) -> dict:
    """The filter's audit record for the request, polled: Envoy writes the access log in the background."""
    deadline = time.monotonic() + timeout
    while True:
        records = [
            json.loads(line["audit"])
            for line in gated.access_log_lines()
            if line.get("audit") and path_part in line["path"]
        ]
        if records:
            return records[-1]
        assert time.monotonic() < deadline, f"no audit record for {path_part} within {timeout}s"
        time.sleep(0.1)

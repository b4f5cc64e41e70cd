"""Soak (part of #8): at least 100,000 requests, mixed allow / deny /
approval, through real Envoy, OpenBao and the approval service, bounded in
count and in time. Every reply is checked against what that kind of request
must get: zero wrong decisions. Memory must stay flat after warm-up (Envoy's
RSS and the filter's Wasm linear memory grow under 10%), and once the load
stops nothing the filter created may still be alive: no request contexts, no
approval callouts, no active streams in Envoy.

SECRETGATE_SOAK_REQUESTS lowers the count for a quick local run; the test
command runs the full 100,000.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import stack as stack_module
from approval_support import ALICE, approver, approval_config, as_approver, pending_for  # noqa: F401 (fixture)
from conftest import RawClient, assert_no_secret_in_files

REQUESTS = int(os.environ.get("SECRETGATE_SOAK_REQUESTS", "100000"))
# A bound, not a speed target: the run stops here even if it has not reached REQUESTS.
TIME_LIMIT_S = 1500.0
CONNECTIONS = 4
WARM_UP = REQUESTS // 10
MAX_GROWTH = 0.10

SOAK_POLICIES = """
@id("soak-web-needs-secops")
@approval("secops")
@approval_mode("retry")
@approval_ttl("1h")
permit (principal in Group::"ci", action == Action::"read", resource in Path::"secret/soak/web")
when { context.claims has repository && context.claims.repository == "acme/web" };
"""
APPROVED = "secret/soak/web/granted"
HELD = "secret/soak/web/held"
SOAK_SECRETS = {
    APPROVED: {"password": "FAKE-soak-granted-pw-3f1d"},
    HELD: {"password": "FAKE-soak-held-pw-9a27"},
}


def data_path(secret: str) -> str:
    mount, rest = secret.split("/", 1)
    return f"/v1/{mount}/data/{rest}"


class Kind:
    """One kind of request in the mix and the only reply it may get."""

    def __init__(self, name: str, path: str, jwt: str, status: int, expect):
        self.name, self.path, self.jwt, self.status, self.expect = name, path, jwt, status, expect

    def wrong(self, status: int, body: bytes) -> str | None:
        if status != self.status:
            return f"{self.name}: HTTP {status}: {body[:200]!r}"
        try:
            reply = json.loads(body)
        except ValueError:
            return f"{self.name}: not JSON: {body[:200]!r}"
        return None if self.expect(reply) else f"{self.name}: wrong body {reply}"


def envoy_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for Envoy")


def gauge(running, name: str) -> int:
    escaped = name.replace(".", "\\.")
    found = running.counters(f"^wasmcustom\\.secretgate\\.{escaped}$")
    assert found, f"Envoy has no gauge secretgate.{name}"
    return sum(found.values())


def soak_stack(tmp_path_factory, approver):  # noqa: F811 (the fixture's value)
    config = approval_config(approver["port"])
    config["policies"] += SOAK_POLICIES
    running = stack_module.Stack(tmp_path_factory.mktemp("soak"), plugin_config=config)
    running.extra_clusters["approver"] = approver["port"]
    return running


def test_soak_mixed_requests_decide_right_and_leak_nothing(tmp_path_factory, approver):  # noqa: F811
    running = soak_stack(tmp_path_factory, approver)
    with running:
        direct = RawClient(running.bao_url, vault_token=running.root_token)
        for secret, data in SOAK_SECRETS.items():
            assert direct.request("POST", data_path(secret), body={"data": data}).status == 200
        allowed_value = direct.get("/v1/secret/data/ci/acme/api/db").json()["data"]["data"]

        web = running.mint_jwt({"repository": "acme/web"}, ttl=3600)
        api = running.mint_jwt({}, ttl=3600)
        envoy = RawClient(running.envoy_url, vault_token=running.root_token)
        # One approval, granted for an hour: every later read of APPROVED
        # still asks the approval service, which answers with the grant.
        first = envoy.get(data_path(APPROVED), jwt=web)
        assert first.status == 403 and first.json()["errors"] == ["approval required"], first.text
        granted = as_approver(approver, ALICE).request("POST", f"/v1/approvals/{first.json()['approval_id']}/approve", body={})
        assert granted.status == 200, granted.text
        held = envoy.get(data_path(HELD), jwt=web)
        assert held.status == 403 and held.json()["errors"] == ["approval required"], held.text
        held_id = held.json()["approval_id"]
        assert pending_for(approver, HELD)["id"] == held_id

        kinds = [
            Kind("allow", "/v1/secret/data/ci/acme/api/db", api, 200, lambda r: r["data"]["data"] == allowed_value),
            Kind("deny", "/v1/secret/data/ci/acme/web/token", api, 403, lambda r: r["errors"] == ["permission denied"]),
            Kind("approved", data_path(APPROVED), web, 200, lambda r: r["data"]["data"] == SOAK_SECRETS[APPROVED]),
            Kind("held", data_path(HELD), web, 403,
                 lambda r: r["errors"] == ["approval required"] and r["approval_id"] == held_id),  # fmt: skip
        ]
        # Four in ten allowed, three denied, two approved, one held: every
        # connection sends every kind, interleaved.
        schedule = [kinds[k] for k in (0, 1, 2, 0, 1, 3, 0, 2, 1, 0)]

        envoy_pid = running.state()["envoy"]["pid"]
        decisions_before = running.counters("^wasmcustom\\.secretgate\\.decisions\\.")
        # The two requests above are the only ones Envoy has served so far.
        log_lines_before = len(running.access_log_lines(at_least=2))
        assert log_lines_before == 2

        sent = Counter()
        wrong: list[str] = []
        samples: list[tuple[int, int, int]] = []  # (requests done, Envoy RSS KiB, Wasm memory bytes)
        next_index = iter(range(REQUESTS))
        lock = threading.Lock()
        deadline = time.monotonic() + TIME_LIMIT_S
        host, port = stack_module.LOOPBACK, running.listen_port

        def worker():
            connection = http.client.HTTPConnection(host, port, timeout=30)
            while time.monotonic() < deadline:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    break
                kind = schedule[index % len(schedule)]
                headers = {"X-Vault-Token": running.root_token, stack_module.JWT_HEADER: kind.jwt}
                try:
                    connection.request("GET", kind.path, headers=headers)
                    response = connection.getresponse()
                    problem = kind.wrong(response.status, response.read())
                except (OSError, http.client.HTTPException) as error:
                    problem = f"{kind.name}: {type(error).__name__}: {error}"
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=30)
                with lock:
                    sent[kind.name] += 1
                    if problem:
                        wrong.append(problem)
                    done = sum(sent.values())
                if done % WARM_UP == 0:
                    samples.append((done, envoy_rss_kib(envoy_pid), gauge(running, "vm.memory_bytes")))
            connection.close()

        started = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        total = sum(sent.values())
        print(f"soak: {total} requests in {elapsed:.0f}s ({total / elapsed:.0f}/s), {dict(sent)}; samples {samples}")

        assert total == REQUESTS, f"only {total} of {REQUESTS} requests within {TIME_LIMIT_S}s"
        assert not wrong, f"{len(wrong)} wrong decisions, first: {wrong[:5]}"

        # Nothing left alive once Envoy is idle.
        idle_deadline = time.monotonic() + 10
        while time.monotonic() < idle_deadline and gauge(running, "live.requests") != 0:
            time.sleep(0.1)
        assert gauge(running, "live.requests") == 0
        assert gauge(running, "live.approval_callouts") == 0
        assert sum(running.counters("^http\\.secretgate\\.downstream_rq_active$").values()) == 0
        assert sum(running.counters("^cluster\\.approver\\.upstream_rq_active$").values()) == 0

        # Flat memory after warm-up: the first sample is taken after WARM_UP requests.
        samples.sort()
        (_, rss_warm, wasm_warm), (_, rss_end, wasm_end) = samples[0], samples[-1]
        assert len(samples) >= 9, samples
        assert rss_end <= rss_warm * (1 + MAX_GROWTH), f"Envoy's RSS grew from {rss_warm} to {rss_end} KiB"
        assert wasm_end <= wasm_warm * (1 + MAX_GROWTH), f"Wasm memory grew from {wasm_warm} to {wasm_end} bytes"

        # The filter decided each request once, as the mix says, and wrote one
        # audit record per request.
        decisions = running.counters("^wasmcustom\\.secretgate\\.decisions\\.")
        made = {name.rsplit(".", 1)[1]: value - decisions_before.get(name, 0) for name, value in decisions.items()}
        assert made.get("allow") == sent["allow"] + sent["approved"], made
        assert made.get("deny") == sent["deny"], made
        assert made.get("approval_required") == sent["held"], made
        lines = running.access_log_lines(at_least=log_lines_before + total, timeout=10)[log_lines_before:]
        audited = Counter(json.loads(line["audit"])["decision"] for line in lines if line.get("audit"))
        assert audited == Counter(
            {"allow": sent["allow"] + sent["approved"], "deny": sent["deny"], "approval_required": sent["held"]}
        ), audited
    values = [value for data in SOAK_SECRETS.values() for value in data.values()]
    leaks = [p for p in running.run_dir.rglob("*") if p.is_file() and any(v.encode() in p.read_bytes() for v in values)]
    assert not leaks, f"soak secrets leaked into {leaks}"
    assert_no_secret_in_files(running)

"""Conformance: host-test against the real stack.

Every scenario in policies/tests marked ``conformance: true`` is run twice:
by host-test (the compiled filter under wasmtime, see host-test/README.md) and
through real Envoy + OpenBao with the scenario's plugin configuration and
request (its ``jwt_claims`` minted into a JWT Envoy verifies, or its identity
header). Both must agree on the status, on whether the request was forwarded
to OpenBao, and on the filter's decision. A difference is a bug in the host or
a place where the filter behaves differently in Envoy.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

import stack as stack_module

REPO = stack_module.REPO_ROOT
SCENARIOS = REPO / "policies" / "tests"
# Claims the stack's minted JWTs need (issuer, audience, lifetime); every other
# default claim is dropped unless the scenario sets it, so Envoy hands the
# filter the scenario's claims.
KEPT_DEFAULT_CLAIMS = {"iss", "aud", "iat", "nbf", "exp", "jti"}


def conformance_ids() -> list[tuple[str, str]]:
    ids = []
    for file in sorted(SCENARIOS.glob("*.yaml")):
        for scenario in yaml.safe_load(file.read_text())["scenarios"]:
            if scenario.get("conformance"):
                ids.append((file.name, scenario["name"]))
    return ids


CONFORMANCE = conformance_ids()


def test_there_are_at_least_20_conformance_scenarios():
    assert len(CONFORMANCE) >= 20


@pytest.fixture(scope="module")
def host_results(tmp_path_factory) -> dict[tuple[str, str], dict]:
    out = tmp_path_factory.mktemp("host-test") / "results.json"
    wasm = stack_module.wasm_path()
    # `make e2e` builds every test binary first (`cargo test --workspace --no-run`), which
    # leaves host-test built with the workspace's features; `cargo run -p host-test`
    # would resolve features for host-test alone and compile Cranelift again.
    built = REPO / "target" / "debug" / "host-test"
    runner = [str(built)] if built.is_file() else ["cargo", "run", "-q", "-p", "host-test", "--"]
    argv = [*runner, "--wasm", str(wasm), "--json", str(out), "run", str(SCENARIOS)]
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert out.exists(), f"host-test produced no results:\n{run.stdout}\n{run.stderr}"
    return {(Path(r["file"]).name, r["name"]): r for r in json.loads(out.read_text())}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """One running stack per distinct plugin configuration, started on first use."""
    running: dict[str, stack_module.Stack] = {}

    def get(configuration: str) -> stack_module.Stack:
        if configuration not in running:
            stack = stack_module.Stack(tmp_path_factory.mktemp("conformance"), plugin_config=configuration)
            running[configuration] = stack
            stack.start()
        return running[configuration]

    yield get
    for stack in running.values():
        stack.stop()


def envoy_request(stack: stack_module.Stack, request: dict) -> tuple[int, bool, str | None]:
    """Sends the scenario's request through Envoy; returns (status, forwarded, decision, audit record)."""
    # A list, not a dict: scenarios may repeat a header (e.g. the identity header twice).
    headers: list[tuple[str, str]] = []
    for name, value in request["headers"]:
        # The scenario's Vault token stands for the stack's real one.
        headers.append((name, stack.root_token if name.lower() == "x-vault-token" else value))
    if request.get("jwt_claims") is not None:
        claims = {name: None for name in stack_module.default_claims() if name not in KEPT_DEFAULT_CLAIMS}
        claims.update(request["jwt_claims"])
        headers.append((stack_module.JWT_HEADER, stack.mint_jwt(claims)))
    if not any(name.lower() == "x-request-id" for name, _ in headers):
        headers.append(("x-request-id", str(uuid.uuid4())))
    body = (request.get("body") or "").encode()
    if body:
        headers.append(("content-length", str(len(body))))
    before = len(stack.access_log_lines())
    log_offset = stack.path("envoy.log").stat().st_size if stack.path("envoy.log").exists() else 0

    port = int(stack.envoy_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        # putrequest/putheader send the target and every header exactly as given.
        connection.putrequest(request["method"], request["target"], skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders(body or None)
        status = connection.getresponse().status
    finally:
        connection.close()

    lines = stack.access_log_lines(at_least=before + 1)
    assert len(lines) > before, "Envoy wrote no access-log line"
    upstream = lines[-1].get("upstream_host")
    forwarded = upstream not in (None, "", "-")
    audit = json.loads(lines[-1]["audit"]) if lines[-1].get("audit") else None
    decision = None
    deadline = time.monotonic() + 3.0
    while decision is None and time.monotonic() < deadline:
        with open(stack.path("envoy.log"), "rb") as log:
            log.seek(log_offset)
            for line in log.read().decode(errors="replace").splitlines():
                if "secretgate decision=" in line:
                    decision = line.split("secretgate decision=", 1)[1].split(" ", 1)[0]
        if decision is None:
            time.sleep(0.05)
    return status, forwarded, decision, audit


# Audit fields that depend only on the filter and the request, not on the
# environment (OpenBao's real reply, ports, times, request ids).
COMPARED_AUDIT_FIELDS = ("decision", "reason", "principal", "claims", "method", "namespace", "action", "resource", "policies", "errors")


@pytest.mark.parametrize("file,name", CONFORMANCE, ids=[f"{f}::{n}" for f, n in CONFORMANCE])
def test_host_test_and_envoy_agree(host_results, stacks, make_stack, file, name):
    result = host_results[(file, name)]
    assert result["outcome"] is not None, f"host-test could not run it: {result['failures']}"
    host = result["outcome"]
    configuration = result["plugin_configuration"]

    if host["config_rejected"] is not None:
        private = make_stack(plugin_config=configuration)
        with pytest.raises(stack_module.ProcessStartupError) as refused:
            private.start()
        assert refused.value.returncode not in (None, 0), "Envoy must exit, not hang"
        assert "configuration rejected" in refused.value.log_tail
        reason = host["config_rejected"].split("configuration rejected: ", 1)[-1]
        assert reason.splitlines()[0][:60] in refused.value.log_tail
        return

    status, forwarded, decision, audit = envoy_request(stacks(configuration), result["request"])
    assert (status, forwarded, decision) == (host["status"], host["forwarded"], host["decision"]), (
        f"Envoy: status={status} forwarded={forwarded} decision={decision}; "
        f"host-test: status={host['status']} forwarded={host['forwarded']} decision={host['decision']}"
    )
    assert host["audit"] is not None and audit is not None, "both write an audit record"
    differing = {
        field: (audit.get(field), host["audit"].get(field))
        for field in COMPARED_AUDIT_FIELDS
        if audit.get(field) != host["audit"].get(field)
    }
    assert not differing, f"audit fields differ (Envoy, host-test): {differing}"

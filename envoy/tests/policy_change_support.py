"""Helpers for the policy-change tests (shadow bundles, replay): editable copies
of policies/, the real clients CI jobs use, and the audit records in Envoy's
JSON access log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import hvac

import stack as stack_module

POLICY_FILES = ("schema.cedarschema", "entities.json", "policies.cedar")


def policies_copy(destination: Path, extra_policies: str = "") -> Path:
    """A copy of the demo policy set (policies/ without its tests, packs and examples), with
    ``extra_policies`` appended to policies.cedar."""
    shutil.copytree(
        stack_module.POLICIES_DIR, destination, ignore=shutil.ignore_patterns("tests", "packs", "examples")
    )
    if extra_policies:
        with open(destination / "policies.cedar", "a") as policies:
            policies.write("\n" + extra_policies)
    return destination


def eventually(check, timeout: float, what: str):
    """Polls ``check`` until it returns a truthy value, which it returns; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.1)


# ------------------------------------------------------------------ clients


def bao_cli(stack, jwt: str | None, *args: str) -> subprocess.CompletedProcess:
    """The real bao CLI pointed at Envoy, with the root Vault token; the CI token travels as -header."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=stack.envoy_url, BAO_TOKEN=stack.root_token, HOME=str(stack.run_dir))
    command, *rest = args
    header = [f"-header={stack_module.JWT_HEADER}={jwt}"] if jwt else []
    argv = [stack_module.bao_binary(), *command.split(), *header, *rest]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def curl(stack, path: str, jwt: str | None = None, method: str = "GET", headers: dict[str, str] | None = None):
    """curl through Envoy with the root Vault token, the path sent as written. Returns (status, body,
    the x-request-id Envoy answered with: the request_id of the request's audit record)."""
    headers = {"X-Vault-Token": stack.root_token, **(headers or {})}
    if jwt:
        headers[stack_module.JWT_HEADER] = jwt
    args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    result = subprocess.run(
        ["curl", "-sS", "--path-as-is", "-X", method, "-o", "-", "-w", "\n%{http_code} %header{x-request-id}",
         *args, f"{stack.envoy_url}{path}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, trailer = result.stdout.rpartition("\n")
    status, _, request_id = trailer.partition(" ")
    return int(status), body, request_id.strip()


def hvac_client(stack, jwt: str | None, request_ids: list[str] | None = None) -> hvac.Client:
    """hvac through Envoy with the root Vault token; every answer's x-request-id is appended to
    ``request_ids``."""
    client = hvac.Client(url=stack.envoy_url, token=stack.root_token)
    if jwt:
        client.session.headers[stack_module.JWT_HEADER] = jwt
    if request_ids is not None:
        client.session.hooks["response"].append(lambda r, *a, **k: request_ids.append(r.headers["x-request-id"]))
    return client


# ------------------------------------------------------------------ records


def audit_records(stack, log: Path | None = None) -> list[dict]:
    """The audit records in an access log (default: the stack's), in order."""
    path = log or stack.path("access.log")
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [json.loads(line["audit"]) for line in lines if line.get("audit")]


def wait_records(stack, count: int, timeout: float = 10.0) -> list[dict]:
    """The stack's audit records, once there are at least ``count`` (Envoy flushes every 100 ms)."""
    return eventually(lambda: len(records := audit_records(stack)) >= count and records, timeout, f"{count} records")


def record_with_id(stack, request_id: str, timeout: float = 10.0) -> dict:
    """The one record of ``request_id``, once Envoy has written it."""

    def find():
        found = [r for r in audit_records(stack) if r["request_id"] == request_id]
        assert len(found) <= 1, f"{len(found)} records of {request_id}"
        return found[0] if found else None

    return eventually(find, timeout, f"the record of {request_id}")

"""Fixtures for tests against the real stack: OpenBao (dev) behind Envoy + the secretgate filter.

Run with ``<repo>/.venv/bin/python -m pytest envoy/tests`` after ``envoy/setup.sh``.
Set SECRETGATE_WASM to test another build of the filter.
"""

from __future__ import annotations

import http.client
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stack as stack_module  # noqa: E402  (needs the sys.path entry above)


def seed_values() -> list[str]:
    """Every seeded secret value: canaries that must never reach a log."""
    seed = json.loads(stack_module.SEED_FILE.read_text())
    return [value for secret in seed["secrets"] for value in secret["data"].values()]


def files_containing(run_dir: Path, needles) -> dict[str, list[str]]:
    """Which files under a run dir contain which of the needles."""
    needles = [n for n in needles if n]
    found: dict[str, list[str]] = {}
    for path in sorted(Path(run_dir).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_bytes().decode(errors="replace")
        hits = [n for n in needles if n in text]
        if hits:
            found[str(path.relative_to(run_dir))] = hits
    return found


def assert_no_secret_in_files(running: stack_module.Stack, extra: Iterable[str] = ()) -> None:
    """After a whole run against a stack: no seeded value, and none of a test's ``extra`` canaries,
    in anything Envoy or OpenBao wrote."""
    leaks = files_containing(running.run_dir, [*seed_values(), *extra])
    assert not leaks, f"secret values leaked into {leaks}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The shared stack: OpenBao seeded from seed.json, Envoy with the policies/ configuration and JWT identity.
    When the session ends, no seeded secret value may appear in any file the stack wrote."""
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    with stack_module.Stack(tmp_path_factory.mktemp("stack"), plugin_config=config) as running:
        yield running
    assert_no_secret_in_files(running)


@pytest.fixture
def make_stack(tmp_path_factory):
    """Factory for a private, not yet started stack (e.g. to restart Envoy with another plugin
    configuration); everything it started is stopped at teardown."""
    created: list[stack_module.Stack] = []

    def make(plugin_config=None, **kwargs) -> stack_module.Stack:
        private = stack_module.Stack(tmp_path_factory.mktemp("private-stack"), plugin_config=plugin_config, **kwargs)
        created.append(private)
        return private

    yield make
    for private in created:
        private.stop()
    for private in created:
        assert_no_secret_in_files(private)


@pytest.fixture
def mint_jwt(stack):
    """``mint_jwt(repository="acme/web", ref_protected=None)``: a CI token; None drops a claim."""

    def mint(ttl: int = 600, **claims) -> str:
        return stack.mint_jwt(claims, ttl=ttl)

    return mint


# ---------------------------------------------------------------- raw HTTP


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


@dataclass
class RawClient:
    """HTTP/1.1 client that sends the path exactly as written (no dot-segment or slash normalisation).

    ``requests``/``urllib`` rewrite paths like ``/v1/secret/data/a/../b``;
    http.client sends them verbatim, which is what path-confusion tests need.
    """

    base_url: str
    vault_token: str | None = None
    default_headers: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        *,
        jwt: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | str | dict | None = None,
        vault_token: str | None = None,
        timeout: float = 10.0,
    ) -> RawResponse:
        all_headers = dict(self.default_headers)
        token = vault_token if vault_token is not None else self.vault_token
        if token:
            all_headers["X-Vault-Token"] = token
        if jwt is not None:
            all_headers[stack_module.JWT_HEADER] = jwt
        if isinstance(body, dict):
            body = json.dumps(body)
            all_headers.setdefault("Content-Type", "application/json")
        all_headers.update(headers or {})
        return raw_request(self.base_url, method, path, all_headers, body, timeout)

    def get(self, path: str, **kwargs) -> RawResponse:
        return self.request("GET", path, **kwargs)

    def list(self, path: str, **kwargs) -> RawResponse:
        return self.request("LIST", path, **kwargs)


def raw_request(
    base_url: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = 10.0,
) -> RawResponse:
    """One request on a fresh connection, ``path`` sent byte for byte as given."""
    url = urlsplit(base_url)
    assert url.hostname == "127.0.0.1", "tests only ever talk to loopback"
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


@pytest.fixture
def envoy(stack) -> RawClient:
    """Raw client for Envoy (the filter's front door), carrying the dev root token as the Vault token."""
    return RawClient(stack.envoy_url, vault_token=stack.root_token)


@pytest.fixture
def bao(stack) -> RawClient:
    """Raw client straight to OpenBao, bypassing Envoy (for setup and comparisons)."""
    return RawClient(stack.bao_url, vault_token=stack.root_token)


@pytest.fixture(scope="session")
def seeded(stack) -> dict[str, dict]:
    """Seeded secret data by '<mount>/<path>', e.g. seeded['secret/ci/acme/api/db']['password']."""
    return {f"{s['mount']}/{s['path']}": s["data"] for s in stack.seed()}

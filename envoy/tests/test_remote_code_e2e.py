"""Loading the filter remotely (``vm_config.code.remote`` with a ``sha256``) in real Envoy.

Envoy fetches ``secretgate.wasm`` from a loopback file server before its
listener serves. With the module's digest it serves requests through the
filter as with a local file. When the bytes do not match the digest, or the
server cannot be reached, Envoy 1.40 does not exit: it retries
(``retry_policy``), gives up, starts its listener anyway and, as the filter is
``FAIL_CLOSED``, answers every request 503 with an empty body
(``wasm_fail_stream``); nothing reaches OpenBao. The same bytes as a local
file make Envoy exit at startup instead. See README, "Remote loading with a
digest".
"""

from __future__ import annotations

import pytest
import yaml

import stack as stack_module
from conftest import RawClient

MODULE = "secretgate.wasm"
OWN_SECRET = "/v1/secret/data/ci/acme/api/db"
OTHER_REPOSITORY_SECRET = "/v1/secret/data/ci/acme/web/db"
# One fetch, then FILTER_CODE_RETRIES more when the answer is refused.
ATTEMPTS = 1 + stack_module.FILTER_CODE_RETRIES


@pytest.fixture
def code_server(tmp_path):
    """A loopback file server for the filter's code, stopped by its PID at teardown."""
    server = stack_module.CodeServer(tmp_path / "code", tmp_path / "code-server.log")
    with server:
        yield server


def jwt_config() -> dict:
    return stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)


def test_filter_fetched_with_its_digest_serves_requests_through_the_filter(make_stack, code_server):
    url = code_server.publish(stack_module.wasm_path())
    running = make_stack(jwt_config(), code_url=url, code_sha256=stack_module.sha256_hex(stack_module.wasm_path()))
    running.start()

    assert loaded_code(running) == stack_module.remote_wasm_code(url, stack_module.sha256_hex(stack_module.wasm_path()))
    assert code_server.fetches(MODULE) == 1
    assert running.counters("wasm.remote_load_fetch_successes") == {"wasm.remote_load_fetch_successes": 1}

    client = RawClient(running.envoy_url, vault_token=running.root_token)
    token = running.mint_jwt({"repository": "acme/api"})
    seeded = {f"{s['mount']}/{s['path']}": s["data"] for s in running.seed()}
    mark = running.bao_audit_mark()

    allowed = client.get(OWN_SECRET, jwt=token)
    denied = client.get(OTHER_REPOSITORY_SECRET, jwt=token)

    assert allowed.status == 200
    assert allowed.json()["data"]["data"] == seeded["secret/ci/acme/api/db"]
    assert denied.status == 403
    assert denied.json()["errors"] == ["permission denied"]
    assert running.bao_audit_paths(since=mark) == {"secret/data/ci/acme/api/db"}
    records = [line for line in running.access_log_lines(at_least=2) if line["audit"]]
    decisions = {(line["path"], line["response_code"]): line["audit"] for line in records}
    assert '"decision":"allow"' in decisions[(OWN_SECRET, 200)]
    assert '"decision":"deny"' in decisions[(OTHER_REPOSITORY_SECRET, 403)]


def test_a_module_that_does_not_match_the_digest_is_never_run_and_every_request_is_refused(make_stack, code_server):
    # The server hands out other bytes than the pinned build (a tampered or stale copy).
    pinned = stack_module.sha256_hex(stack_module.wasm_path())
    tampered = code_server.directory / MODULE
    tampered.write_bytes(stack_module.wasm_path().read_bytes() + b"\0")
    running = make_stack(jwt_config(), code_url=code_server.url(MODULE), code_sha256=pinned)

    # Envoy does not exit: it becomes ready with its listener bound (start() waits for both).
    running.start()

    assert code_server.fetches(MODULE) == ATTEMPTS
    assert running.counters("wasm.remote_load_fetch_failures") == {"wasm.remote_load_fetch_failures": 1}
    envoy_log = running.path("envoy.log").read_text()
    assert "Retry limit exceeded for fetching data from remote data source" in envoy_log
    assert "Plugin configured to fail closed failed to load" in envoy_log
    assert_every_request_refused_before_openbao(running)
    # Nothing fetches the module again: the proxy stays closed until it is restarted or reconfigured.
    assert code_server.fetches(MODULE) == ATTEMPTS


def test_an_unreachable_code_server_fails_closed_too(make_stack, code_server):
    url = code_server.publish(stack_module.wasm_path())
    code_server.stop()
    running = make_stack(jwt_config(), code_url=url, code_sha256=stack_module.sha256_hex(stack_module.wasm_path()))

    running.start()

    assert code_server.fetches(MODULE) == 0
    assert running.counters("wasm.remote_load_fetch_failures") == {"wasm.remote_load_fetch_failures": 1}
    assert_every_request_refused_before_openbao(running)


def loaded_code(running) -> dict:
    """The secretgate filter's ``vm_config.code`` in the bootstrap Envoy was started with."""
    bootstrap = yaml.safe_load(running.path("envoy.yaml").read_text())
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return wasm["typed_config"]["config"]["vm_config"]["code"]


def assert_every_request_refused_before_openbao(running) -> None:
    """Allowed, denied and unauthenticated requests alike: 503, empty body, no audit record, nothing at OpenBao."""
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    token = running.mint_jwt({"repository": "acme/api"})
    mark = running.bao_audit_mark()
    before = len(running.access_log_lines())

    answers = [
        client.get(OWN_SECRET, jwt=token),
        client.get(OTHER_REPOSITORY_SECRET, jwt=token),
        client.get(OWN_SECRET),
        client.list("/v1/secret/metadata/ci/acme/", jwt=token),
    ]

    assert [(answer.status, answer.body) for answer in answers] == [(503, b"")] * len(answers)
    lines = running.access_log_lines(at_least=before + len(answers))[before:]
    assert [(line["response_code_details"], line["audit"], line["upstream_host"]) for line in lines] == [
        ("wasm_fail_stream", None, None)
    ] * len(answers)
    assert running.bao_audit_entries(since=mark) == []


def test_the_same_bytes_as_a_local_file_make_envoy_exit_instead(make_stack, tmp_path):
    # The contrast the README draws: a local module that does not load stops Envoy at startup,
    # where a remote one that fails its digest leaves Envoy up and refusing everything.
    corrupted = tmp_path / MODULE
    corrupted.write_bytes(stack_module.wasm_path().read_bytes() + b"\0")
    running = make_stack(jwt_config(), wasm=corrupted)

    with pytest.raises(stack_module.ProcessStartupError) as failed:
        running.start()

    assert failed.value.returncode == 1
    assert "Unable to create Wasm plugin secretgate" in failed.value.log_tail
    assert not running.envoy_running()

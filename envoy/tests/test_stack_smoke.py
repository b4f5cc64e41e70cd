"""Tests of the stack itself, independent of the filter's policy decisions."""

from __future__ import annotations

import argparse
import subprocess
import sys

import hvac
import jwt
import requests
import yaml

import stack as stack_module

STACK_PY = [sys.executable, str(stack_module.ENVOY_DIR / "stack.py")]


def test_openbao_serves_seeded_secrets_directly(stack, seeded):
    client = _hvac_client(stack)

    v2 = client.secrets.kv.v2.read_secret_version(path="ci/acme/api/db", mount_point="secret", raise_on_deleted_version=True)
    v1 = client.secrets.kv.v1.read_secret(path="ci/acme/api/legacy", mount_point="kv")

    assert v2["data"]["data"] == seeded["secret/ci/acme/api/db"]
    assert v1["data"] == seeded["kv/ci/acme/api/legacy"]


def test_seeded_values_are_unique_so_tests_can_tell_them_apart(seeded):
    values = [value for data in seeded.values() for value in data.values()]
    assert len(values) == len(set(values))


def test_audit_paths_show_a_direct_read_and_not_the_setup(stack):
    mark = stack.bao_audit_mark()
    client = _hvac_client(stack)
    client.secrets.kv.v2.read_secret_version(path="ci/acme/api/db", mount_point="secret", raise_on_deleted_version=True)

    assert "secret/data/ci/acme/api/db" in stack.bao_audit_paths(since=mark)
    # Seeding wrote every secret, but that happened before the baseline.
    assert "secret/data/prod/acme/api/db" not in stack.bao_audit_paths(since=mark)
    assert "sys/mounts/kv" not in stack.bao_audit_paths()


def test_minted_jwt_verifies_against_the_jwks_envoy_fetches(stack):
    token = stack.mint_jwt({"repository": "acme/web"})

    envoy_config = yaml.safe_load((stack.run_dir / "envoy.yaml").read_text())
    remote = _jwt_provider(envoy_config)["remote_jwks"]
    assert remote["http_uri"]["cluster"] == "jwks"
    assert remote["http_uri"]["uri"].endswith(stack_module.JWKS_PATH)
    # What Envoy fetched: the JWKS server's answer, over the cluster's endpoint.
    assert stack.jwks_server.fetches() >= 1
    status, jwks = stack_module._http("GET", stack.jwks_server.url)
    assert status == 200
    key = jwt.PyJWKSet.from_json(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key, algorithms=["RS256"], audience="secretgate", issuer="https://ci.secretgate.local")

    assert claims["repository"] == "acme/web"
    assert claims["sub"] == "repo:acme/web:ref:refs/heads/main"  # derived from the overridden repository
    assert claims["repository_owner"] == "acme"
    assert claims["ref_protected"] == "true"  # a string, as GitHub sends it
    assert claims["exp"] - claims["iat"] == 600


def test_invalid_jwt_is_rejected_by_envoy_before_openbao(stack, envoy):
    mark = stack.bao_audit_mark()
    lines_before = len(stack.access_log_lines())

    # LIST also proves the HTTP codec accepts the custom method: a 400 would come first.
    response = envoy.list("/v1/secret/metadata/ci/acme/", jwt="not.a.jwt")

    assert response.status == 401
    assert stack.bao_audit_paths(since=mark) == set()
    entry = stack.access_log_lines(at_least=lines_before + 1)[-1]
    assert entry["method"] == "LIST"
    assert entry["path"] == "/v1/secret/metadata/ci/acme/"
    assert entry["response_code_details"].startswith("jwt_authn_access_denied")
    assert {"start_time", "request_id", "audit"} <= entry.keys()


def test_cli_up_and_down_leave_no_process_behind(tmp_path):
    run_dir = tmp_path / "cli-run"
    up = subprocess.run([*STACK_PY, "up", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    pids = stack_module.running_pids(run_dir)
    assert set(pids) == {"envoy", "bao", "jwks", "keeper"}

    token = subprocess.run(
        [*STACK_PY, "mint-jwt", "--run-dir", str(run_dir), "--claim", "repository=acme/web"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert jwt.decode(token, options={"verify_signature": False})["repository"] == "acme/web"

    for _ in range(2):  # down must be safe to repeat
        down = subprocess.run([*STACK_PY, "down", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
    assert not any(stack_module.pid_is_running(pid) for pid in pids.values())
    assert stack_module.running_pids(run_dir) == {}


def test_cli_approver_options_give_the_filter_an_approval_section_and_envoy_the_cluster(tmp_path):
    """``up``/``serve --approver-port P --approval-token-file F`` (what make demo starts), checked
    without starting anything: the keeper builds its Stack with _stack_from_args."""
    from stacklib.cli import _stack_from_args

    token_file = tmp_path / "callout.token"
    token_file.write_text("demo-callout-token-0123456789\n")
    args = argparse.Namespace(
        run_dir=str(tmp_path / "run"), policies=str(stack_module.POLICIES_DIR / "packs" / "github-actions"),
        identity="jwt", wasm=None, bundle=True, approver_port=18300, approval_token_file=str(token_file),
    )  # fmt: skip

    stack = _stack_from_args(args)

    assert stack.extra_clusters == {"approver": 18300}
    assert stack.plugin_configuration["approval"] == {
        "cluster": "approver", "authority": "approver.local", "timeout_ms": 30000,
        "token": "demo-callout-token-0123456789",
    }  # fmt: skip
    assert "bundle" in stack.plugin_configuration and "policies" not in stack.plugin_configuration
    assert stack.bundle_dir is not None


def test_cli_approver_port_needs_the_token_file(tmp_path):
    up = subprocess.run(
        [*STACK_PY, "up", "--run-dir", str(tmp_path / "run"), "--approver-port", "18300"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert up.returncode == 2
    assert "--approval-token-file" in up.stderr
    assert not (tmp_path / "run").exists()  # refused before anything started


def _hvac_client(stack) -> hvac.Client:
    session = requests.Session()
    session.trust_env = False  # no *_proxy detour: loopback only
    return hvac.Client(url=stack.bao_url, token=stack.root_token, session=session)


def _jwt_provider(envoy_config: dict) -> dict:
    listener = envoy_config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    jwt_filter = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn")
    return jwt_filter["typed_config"]["providers"]["ci"]

"""Audit end to end: every request leaves one masked record in Envoy's access
log (filter state wasm.secretgate_audit), and no secret value or Vault token
reaches any file Envoy or OpenBao wrote.

Unique canaries go into every kind of secret the stack can hold: KV v1, KV v2,
a secret written through the gate, a large write past the capture limit, and
a Vault token sent as a header."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import uuid

import hvac
import pytest

import stack as stack_module
from conftest import RawClient, files_containing

REPO_ROOT = stack_module.REPO_ROOT
MAX_BODY_BYTES = 512
EXTRA_POLICIES = """
@id("ci-acme-api-writes-own-secrets")
permit (principal in Group::"ci", action == Action::"write", resource in Path::"secret/ci/acme/api")
when { context.claims has repository && context.claims.repository == "acme/api" };
"""
VAULT_POLICY = """
path "secret/*" { capabilities = ["create", "read", "update", "list"] }
path "kv/*" { capabilities = ["read", "list"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"""


def keyed(value: str) -> str:
    digest = hmac.new(stack_module.DEV_AUDIT_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


def canary(kind: str) -> str:
    return f"CANARY-{kind}-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A private stack with a small capture limit, a write policy, canaries and a canary token."""
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["policies"] += EXTRA_POLICIES
    config["audit"] = dict(stack_module.DEV_AUDIT, max_body_bytes=MAX_BODY_BYTES)
    with stack_module.Stack(tmp_path_factory.mktemp("audit-stack"), plugin_config=config) as running:
        canaries = {
            "kv1": canary("kv1"),
            "kv2": canary("kv2"),
            "denied": canary("denied"),
            "written": canary("written"),
            "large": canary("large"),
        }
        direct = RawClient(running.bao_url, vault_token=running.root_token)
        assert direct.request("POST", "/v1/kv/ci/acme/api/canary", body={"value": canaries["kv1"]}).status == 204
        assert direct.request("POST", "/v1/secret/data/ci/acme/api/canary", body={"data": {"value": canaries["kv2"]}}).status == 200
        assert direct.request("POST", "/v1/secret/data/ci/acme/web/canary", body={"data": {"value": canaries["denied"]}}).status == 200
        assert direct.request("PUT", "/v1/sys/policies/acl/canary-reader", body={"policy": VAULT_POLICY}).status == 204
        created = direct.request("POST", "/v1/auth/token/create", body={"policies": ["canary-reader"], "ttl": "1h"})
        assert created.status == 200
        canaries["token"] = created.json()["auth"]["client_token"]
        yield running, canaries
        leaks = files_containing(running.run_dir, canaries.values())
        assert not leaks, f"canaries leaked into {leaks}"


def audit_records(stack) -> list[dict]:
    return [json.loads(line["audit"]) for line in stack.access_log_lines() if line.get("audit")]


def record_for(stack, method: str, path: str, authenticated: bool = True) -> dict:
    matching = [
        r
        for r in audit_records(stack)
        if r["method"] == method and r["path"] == path and (r["principal"] is not None) == authenticated
    ]
    assert len(matching) == 1, f"want one record for {method} {path}, got {len(matching)}"
    return matching[0]


def wait_for_records(stack, count: int) -> None:
    stack.access_log_lines(at_least=count)


def test_every_kind_of_request_leaves_one_masked_record(audited):
    stack, canaries = audited
    envoy = RawClient(stack.envoy_url, vault_token=canaries["token"])
    jwt = stack.mint_jwt({})
    before = len(stack.access_log_lines())

    kv2 = envoy.get("/v1/secret/data/ci/acme/api/canary", jwt=jwt)
    assert kv2.status == 200 and kv2.json()["data"]["data"]["value"] == canaries["kv2"]
    kv1 = envoy.get("/v1/kv/ci/acme/api/canary", jwt=jwt)
    assert kv1.status == 200 and kv1.json()["data"]["value"] == canaries["kv1"]
    written = envoy.request("POST", "/v1/secret/data/ci/acme/api/written", jwt=jwt, body={"data": {"value": canaries["written"]}})
    assert written.status == 200, written.text
    large_body = {"data": {"value": canaries["large"], "padding": "x" * (2 * MAX_BODY_BYTES)}}
    large = envoy.request("POST", "/v1/secret/data/ci/acme/api/large", jwt=jwt, body=large_body)
    assert large.status == 200, large.text
    denied = envoy.get("/v1/secret/data/ci/acme/web/canary", jwt=jwt)
    assert denied.status == 403
    refused = envoy.get("/v1/secret/data/ci%2Facme/api/canary", jwt=jwt)
    assert refused.status == 400
    anonymous = envoy.get("/v1/secret/data/ci/acme/api/canary")
    assert anonymous.status == 401
    listed = envoy.list("/v1/secret/metadata/ci/acme/api", jwt=jwt)
    assert listed.status == 200
    wait_for_records(stack, before + 8)

    token_hmac = keyed(canaries["token"])
    read = record_for(stack, "GET", "/v1/secret/data/ci/acme/api/canary")
    assert read["decision"] == "allow"
    assert read["principal"] == {"type": "Workload", "id": "repo:acme/api:ref:refs/heads/main"}
    assert read["claims"]["repository"] == "acme/api"
    assert read["resource"] == 'Secret::"secret/ci/acme/api/canary"'
    assert read["policies"] == ["ci-reads-own-repository"]
    assert read["response_status"] == 200
    assert read["response_body"]["json"]["data"]["data"]["value"] == keyed(canaries["kv2"])
    assert read["response_body"]["json"]["data"]["metadata"]["version"] == 1
    assert read["token_hmac"] == token_hmac

    assert record_for(stack, "GET", "/v1/kv/ci/acme/api/canary")["response_body"]["json"]["data"]["value"] == keyed(canaries["kv1"])

    write = record_for(stack, "POST", "/v1/secret/data/ci/acme/api/written")
    assert write["action"] == "write" and write["decision"] == "allow"
    assert write["request_body"]["json"]["data"]["value"] == keyed(canaries["written"])

    big = record_for(stack, "POST", "/v1/secret/data/ci/acme/api/large")
    assert big["request_body_truncated"] is True
    assert big["request_body"]["not_logged"] == "over_max_body_bytes"
    assert big["request_body"]["size"] == len(json.dumps(large_body))
    assert big["request_body"]["hmac"] == keyed(json.dumps(large_body))
    # The client's full body still reached OpenBao.
    direct = RawClient(stack.bao_url, vault_token=stack.root_token)
    stored = direct.get("/v1/secret/data/ci/acme/api/large").json()["data"]["data"]
    assert stored == large_body["data"]

    deny = record_for(stack, "GET", "/v1/secret/data/ci/acme/web/canary")
    assert deny["decision"] == "deny"
    assert deny["response_status"] == 403
    assert deny["reason"] == "no policy permits the request"
    assert deny["token_hmac"] == token_hmac

    bad = record_for(stack, "GET", "/v1/secret/data/ci%2Facme/api/canary")
    assert bad["decision"] == "bad_request" and bad["reason"] == "encoded slash in path"
    assert bad["response_status"] == 400

    unauthenticated = record_for(stack, "GET", "/v1/secret/data/ci/acme/api/canary", authenticated=False)
    assert unauthenticated["decision"] == "unauthenticated" and unauthenticated["response_status"] == 401

    listing = record_for(stack, "LIST", "/v1/secret/metadata/ci/acme/api")
    assert listing["response_body"]["json"]["data"]["keys"] == {"count": len(listed.json()["data"]["keys"])}


def test_real_clients_are_audited_too(audited):
    stack, canaries = audited
    jwt = stack.mint_jwt({})
    client = hvac.Client(url=stack.envoy_url, token=canaries["token"])
    client.session.headers[stack_module.JWT_HEADER] = jwt
    value = client.secrets.kv.v2.read_secret_version(path="ci/acme/api/canary", mount_point="secret", raise_on_deleted_version=True)
    assert value["data"]["data"]["value"] == canaries["kv2"]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=stack.envoy_url, BAO_TOKEN=canaries["token"], HOME=str(stack.run_dir))
    cli = subprocess.run(
        [stack_module.bao_binary(), "kv", "get", f"-header={stack_module.JWT_HEADER}={jwt}", "-format=json", "-mount=kv", "ci/acme/api/canary"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    masked = [
        r for r in audit_records(stack)
        if r["response_body"] and keyed(canaries["kv2"]) in json.dumps(r["response_body"])
    ]
    assert masked, "the hvac read has a record with the canary's HMAC"
    assert all(r["token_hmac"] == keyed(canaries["token"]) for r in masked)


def test_the_hmac_command_finds_a_value_in_the_log(audited, tmp_path):
    stack, canaries = audited
    key_file = tmp_path / "audit.key"
    key_file.write_text(stack_module.DEV_AUDIT_KEY + "\n")
    subprocess.run(["cargo", "build", "-q", "-p", "secretgate-cli"], cwd=REPO_ROOT, check=True, timeout=600)
    command = [str(REPO_ROOT / "target" / "debug" / "secretgate"), "hmac", "--key-file", str(key_file)]
    by_argument = subprocess.run([*command, canaries["kv2"]], capture_output=True, text=True, check=True).stdout.strip()
    by_stdin = subprocess.run(command, input=canaries["kv2"] + "\n", capture_output=True, text=True, check=True).stdout.strip()
    assert by_argument == by_stdin == keyed(canaries["kv2"])
    assert by_argument in stack.path("access.log").read_text()


def test_a_token_in_a_query_string_never_reaches_the_record(audited):
    """OpenBao takes tokens as `?token=`; the record keeps the name and the value's HMAC only."""
    stack, canaries = audited
    envoy = RawClient(stack.envoy_url, vault_token=canaries["token"])
    jwt = stack.mint_jwt({})
    for path in ("/v1/auth/token/lookup", "/v1/sys/wrapping/lookup"):
        target = f"{path}?token={canaries['token']}"
        before = len(audit_records(stack))
        response = envoy.get(target, jwt=jwt)
        wait_for_records(stack, before + 1)
        assert response.status == 403, response.text
        assert canaries["token"] not in response.text
        record = record_for(stack, "GET", f"{path}?token={keyed(canaries['token'])}")
        assert record["decision"] == "deny"
    # The teardown scan proves the token is in no file Envoy or OpenBao wrote.


def test_the_token_hmac_is_of_the_token_openbao_used(audited):
    """An empty X-Vault-Token and a Bearer token with extra spaces: OpenBao uses the trimmed Bearer token."""
    stack, canaries = audited
    jwt = stack.mint_jwt({})
    envoy = RawClient(stack.envoy_url)
    path = "/v1/secret/data/ci/acme/api/canary"
    for headers in (
        {"X-Vault-Token": "", "Authorization": f"Bearer {canaries['token']}"},
        {"Authorization": f"Bearer  {canaries['token']}"},
    ):
        before = len(audit_records(stack))
        response = envoy.get(path, jwt=jwt, headers=headers)
        assert response.status == 200, f"OpenBao used the token: {response.text}"
        assert response.json()["data"]["data"]["value"] == canaries["kv2"]
        wait_for_records(stack, before + 1)
        record = [r for r in audit_records(stack)[before:] if r["path"] == path][-1]
        assert record["token_hmac"] == keyed(canaries["token"]), headers


def test_a_detailed_metadata_list_records_how_many_children_not_their_names(make_stack):
    """`LIST detailed-metadata/<folder>` answers with every child's name as a `key_info` member."""
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["audit"] = dict(stack_module.DEV_AUDIT)
    running = make_stack(config).start()
    children = sorted(f"child-{uuid.uuid4().hex}" for _ in range(3))
    direct = RawClient(running.bao_url, vault_token=running.root_token)
    for child in children:
        written = direct.request("POST", f"/v1/secret/data/ci/acme/api/{child}", body={"data": {"v": "x"}})
        assert written.status == 200, written.text
    envoy = RawClient(running.envoy_url, vault_token=running.root_token)
    folder = "/v1/secret/detailed-metadata/ci/acme/api"
    listed = envoy.list(folder, jwt=running.mint_jwt({}))
    assert listed.status == 200, listed.text
    assert set(children) <= set(listed.json()["data"]["key_info"]), "OpenBao names the children"
    running.access_log_lines(at_least=1)
    (record,) = [r for r in audit_records(running) if r["method"] == "LIST" and r["path"] == folder]
    assert record["action"] == "read" and record["decision"] == "allow"
    data = record["response_body"]["json"]["data"]
    count = len(listed.json()["data"]["keys"])
    assert data["keys"] == {"count": count} and data["key_info"] == {"count": count}
    assert not any(child in json.dumps(record) for child in children)

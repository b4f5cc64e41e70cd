"""Callers without identity, by policy (``identity.anonymous``), through real
Envoy and OpenBao: health probes, OpenBao fetching its own OIDC discovery
document and keys through the gate for a JWT auth mount, PKI CA and CRL
downloads; and without the opt-in or without the example permits, the 401
every such request got before.

The plugin configuration is the demo one (JWT identity) plus
``policies/examples/anonymous.cedar`` and one permit that lets an operator's
CI job write ``auth/jwt/config`` through the gate."""

from __future__ import annotations

import json
import subprocess
import time

import hvac
import pytest
import requests

import stack as stack_module
from conftest import assert_no_secret_in_files

EXAMPLES = stack_module.POLICIES_DIR / "examples" / "anonymous.cedar"
OPS_REPOSITORY = "acme/ops"
OPS_PRINCIPAL = f"repo:{OPS_REPOSITORY}:ref:refs/heads/main"
OPS_PERMIT = f"""
@id("e2e-ops-configures-auth-mounts")
permit (principal == Workload::"{OPS_PRINCIPAL}", action == Action::"other", resource is Endpoint in Path::"auth");
"""
DISCOVERY = "identity/oidc/.well-known/openid-configuration"
KEYS = "identity/oidc/.well-known/keys"
MISSING = {"errors": ["missing client identity"]}


def anonymous_config(anonymous: bool = True, examples: bool = True) -> dict:
    identity = {**stack_module.JWT_IDENTITY}
    if anonymous is not None:
        identity["anonymous"] = anonymous
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, identity)
    config["policies"] += "\n" + (EXAMPLES.read_text() if examples else "") + OPS_PERMIT
    config["mounts"]["pki"] = "pki"
    return config


@pytest.fixture(scope="module")
def anon(tmp_path_factory):
    """OpenBao with a PKI CA, a JWT auth mount and an identity token issuer whose
    address is Envoy's, behind Envoy with the anonymous permits."""
    running = stack_module.Stack(tmp_path_factory.mktemp("anonymous"), plugin_config=anonymous_config())
    try:
        running.start_bao()
        must = running._bao_must
        must("POST", "sys/mounts/pki", {"type": "pki"})
        must("POST", "pki/root/generate/internal", {"common_name": "anonymous-e2e.test", "ttl": "24h"})
        must("POST", "sys/auth/jwt", {"type": "jwt"})
        # The issuer OpenBao names in its discovery document and tokens: through the gate.
        must("POST", "identity/oidc/config", {"issuer": running.envoy_url})
        running.require_matching_mounts()
        running.start_envoy()
        yield running
    finally:
        running.stop()
    assert_no_secret_in_files(running)


def restart_envoy(running: stack_module.Stack, config: dict) -> None:
    running.stop_envoy()
    running.start_envoy(config)


def records(running: stack_module.Stack, path: str) -> list[dict]:
    """The audit records of requests whose path (without query) is ``/v1/<path>``."""
    return [
        json.loads(line["audit"])
        for line in running.access_log_lines()
        if line.get("audit") and line.get("path") == f"/v1/{path}"
    ]


def wait_records(running: stack_module.Stack, path: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while len(found := records(running, path)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def curl(url: str, *args: str) -> tuple[int, str]:
    result = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args, url], capture_output=True, text=True, timeout=30
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def ops_client(running: stack_module.Stack) -> hvac.Client:
    """hvac through the gate as the operator's CI job, with the root token."""
    client = hvac.Client(url=running.envoy_url, token=running.root_token)
    client.session.headers[stack_module.JWT_HEADER] = running.mint_jwt({"repository": OPS_REPOSITORY})
    return client


def configure_jwt_auth(running: stack_module.Stack, mount: str = "jwt") -> None:
    ops_client(running).auth.jwt.configure(oidc_discovery_url=f"{running.envoy_url}/v1/identity/oidc", path=mount)


def jwt_auth_config(running: stack_module.Stack, mount: str = "jwt") -> dict:
    status, reply = running.bao_request("GET", f"auth/{mount}/config")
    return reply.get("data") or {} if status == 200 else {}


# ------------------------------------------------------------ with the opt-in and the permits


def test_health_probes_pass_without_identity(anon):
    status, body = curl(f"{anon.envoy_url}/v1/sys/health")
    assert status == 200, body
    assert json.loads(body)["initialized"] is True
    status, _ = curl(f"{anon.envoy_url}/v1/sys/health", "-I")
    assert status == 200
    reply = requests.get(f"{anon.envoy_url}/v1/sys/health", params={"standbyok": "true"}, timeout=10)
    assert reply.status_code == 200
    (record, *_) = wait_records(anon, "sys/health", 3)
    assert record["principal"] == {"type": "Unauthenticated", "id": "anonymous"}
    assert record["claims"] == {}
    assert record["decision"] == "allow"
    assert record["policies"] == ["anonymous-health-checks"]


def test_openbao_configures_a_jwt_mount_whose_discovery_goes_through_the_gate(anon):
    """OpenBao fetches its own discovery document through Envoy while it handles the
    configuration write that also came through Envoy."""
    before = len(records(anon, DISCOVERY))
    configure_jwt_auth(anon)
    assert jwt_auth_config(anon)["oidc_discovery_url"] == f"{anon.envoy_url}/v1/identity/oidc"
    fetched = wait_records(anon, DISCOVERY, before + 1)[before:]
    assert fetched, "OpenBao did not fetch the discovery document through the gate"
    assert all(r["decision"] == "allow" and r["principal"]["type"] == "Unauthenticated" for r in fetched)
    (write,) = wait_records(anon, "auth/jwt/config", 1)[-1:]
    assert write["principal"] == {"type": "Workload", "id": OPS_PRINCIPAL}
    assert write["decision"] == "allow"


def test_openbao_verifies_its_own_token_with_keys_fetched_through_the_gate(anon):
    """A login at the JWT mount with a token OpenBao's identity issuer signed: OpenBao
    fetches the issuer's keys (jwks_uri, through Envoy) to verify it."""
    configure_jwt_auth(anon)
    must = anon._bao_must
    must("POST", "identity/oidc/key/e2e", {"allowed_client_ids": ["*"], "algorithm": "RS256"})
    must("POST", "identity/oidc/role/e2e", {"key": "e2e", "ttl": "5m"})
    client_id = must("GET", "identity/oidc/role/e2e")["data"]["client_id"]
    must("POST", "sys/policies/acl/e2e-oidc-token", {"policy": 'path "identity/oidc/token/e2e" { capabilities = ["read"] }'})
    must("POST", "sys/auth/userpass", {"type": "userpass"})
    must("POST", "auth/userpass/users/e2e", {"password": "e2e-password", "token_policies": ["e2e-oidc-token"]})
    user_token = must("POST", "auth/userpass/login/e2e", {"password": "e2e-password"})["auth"]["client_token"]
    identity_token = requests.get(
        f"{anon.bao_url}/v1/identity/oidc/token/e2e", headers={"X-Vault-Token": user_token}, timeout=10
    ).json()["data"]["token"]
    must("POST", "auth/jwt/role/e2e", {"role_type": "jwt", "user_claim": "sub", "bound_audiences": [client_id]})

    before = len(records(anon, KEYS))
    login = requests.post(f"{anon.bao_url}/v1/auth/jwt/login", json={"role": "e2e", "jwt": identity_token}, timeout=30)
    assert login.status_code == 200, login.text
    assert login.json()["auth"]["client_token"]
    fetched = wait_records(anon, KEYS, before + 1)[before:]
    assert fetched and all(r["decision"] == "allow" for r in fetched), fetched


def test_pki_ca_and_crl_download_without_identity(anon):
    for path, marker in [("pki/ca/pem", "BEGIN CERTIFICATE"), ("pki/crl/pem", "BEGIN X509 CRL")]:
        status, body = curl(f"{anon.envoy_url}/v1/{path}")
        assert status == 200, (path, body)
        assert marker in body
    der = requests.get(f"{anon.envoy_url}/v1/pki/ca", timeout=10)
    assert der.status_code == 200
    assert der.content == requests.get(f"{anon.bao_url}/v1/pki/ca", timeout=10).content


def test_everything_else_stays_401_missing_identity_and_never_reaches_openbao(anon):
    mark = anon.bao_audit_mark()
    token = {"X-Vault-Token": anon.root_token}
    for method, path in [
        ("GET", "v1/secret/data/ci/acme/api/db"),
        # Permitted for any principal by the demo set; not for callers without identity.
        ("GET", "v1/sys/internal/ui/mounts/secret"),
        ("POST", "v1/sys/health"),
        # Under the CRL's folder, and it rotates the CRL: not one of the permitted endpoints.
        ("GET", "v1/pki/crl/rotate"),
        ("POST", f"v1/{DISCOVERY}"),
        # Refused before Cedar: an anonymous caller learns nothing about mounts.
        ("GET", "v1/nowhere/x"),
    ]:
        reply = requests.request(method, f"{anon.envoy_url}/{path}", headers=token, timeout=10)
        assert reply.status_code == 401, (method, path, reply.text)
        assert {k: v for k, v in reply.json().items() if k != "request_id"} == MISSING, (method, path)
    assert not anon.bao_audit_paths(since=mark), anon.bao_audit_paths(since=mark)
    (record,) = wait_records(anon, "nowhere/x", 1)[-1:]
    assert record["decision"] == "unauthenticated"
    assert record["reason"] == "no client identity; path is under no configured mount"


def test_an_invalid_identity_is_never_anonymous(anon):
    """A token jwt_authn cannot verify is refused by Envoy; one that lacks the principal
    claim is refused by the filter; neither is judged as anonymous."""
    garbage = requests.get(
        f"{anon.envoy_url}/v1/sys/health", headers={stack_module.JWT_HEADER: "not.a.jwt"}, timeout=10
    )
    assert garbage.status_code == 401
    no_sub = anon.mint_jwt({"sub": None})
    reply = requests.get(f"{anon.envoy_url}/v1/sys/health", headers={stack_module.JWT_HEADER: no_sub}, timeout=10)
    assert reply.status_code == 401
    assert reply.json()["errors"] == ["invalid client identity"]


# ------------------------------------------------------------ without the opt-in, or without the permits


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(anonymous_config(anonymous=None), id="no-opt-in"),
        pytest.param(anonymous_config(anonymous=False), id="opt-in-false"),
        pytest.param(anonymous_config(anonymous=True, examples=False), id="no-permits"),
    ],
)
def test_without_the_opt_in_or_the_permits_it_is_401_and_the_discovery_fails(anon, config, request):
    mount = "jwt-" + request.node.callspec.id
    anon._bao_must("POST", f"sys/auth/{mount}", {"type": "jwt"})
    restart_envoy(anon, config)
    try:
        for path in ["sys/health", DISCOVERY, "pki/ca/pem"]:
            reply = requests.get(f"{anon.envoy_url}/v1/{path}", timeout=10)
            assert reply.status_code == 401, (path, reply.text)
            assert {k: v for k, v in reply.json().items() if k != "request_id"} == MISSING
        before = len(records(anon, DISCOVERY))
        with pytest.raises(hvac.exceptions.VaultError) as refused:
            configure_jwt_auth(anon, mount)
        assert "discovery" in str(refused.value).lower() or "oidc" in str(refused.value).lower(), refused.value
        assert not jwt_auth_config(anon, mount).get("oidc_discovery_url")
        refusals = wait_records(anon, DISCOVERY, before + 1)[before:]
        assert refusals and all(r["decision"] == "unauthenticated" for r in refusals), refusals
    finally:
        restart_envoy(anon, anonymous_config())

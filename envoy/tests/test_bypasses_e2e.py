"""Issue #14's bypasses end to end: real Envoy running secretgate.wasm in
front of a real OpenBao that has namespaces, PKI, transit and userpass.

The same items as plugin/tests/bypasses.rs, sent over the wire with curl,
hvac, the bao CLI and raw HTTP for the odd spellings. Every test checks what
must not happen: the canary is absent from the reply, and OpenBao never saw
the request (its audit log has nothing after the mark), or its state shows
the operation was not performed (a wrapping token still unwraps, a policy
does not exist, no new certificate, a transit key still not exportable).
Where a route is only dangerous if OpenBao really serves it, a control sends
the same request straight to OpenBao and shows that it does.

One private stack serves the module; each item has its own principal (header
identity), so the items' policies do not interact.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import stack as stack_module
from conftest import RawClient, RawResponse, assert_no_secret_in_files, files_containing

PRINCIPAL_HEADER = stack_module.PRINCIPAL_HEADER

POLICIES = """
// The bao CLI looks up the mount before every kv command.
@id("cli-mount-lookup")
permit (principal, action == Action::"sys", resource in Path::"sys/internal/ui/mounts");

// 1. The team owns its namespace, but may never unwrap or touch sys/.
@id("team-owns-nsx")
permit (principal == Workload::"team", action, resource in Path::"nsx");
@id("team-never-unwraps")
forbid (principal == Workload::"team", action == Action::"unwrap", resource);
@id("team-never-sys")
forbid (principal == Workload::"team", action == Action::"sys", resource);

// 2. and 5. Reads anywhere, except in namespaces nsx and team/a.
@id("reader-reads")
permit (principal == Workload::"reader", action == Action::"read", resource);
@id("reader-not-in-nsx")
forbid (principal == Workload::"reader", action, resource) when { context.namespace == "nsx" };
@id("reader-not-in-team-a")
forbid (principal == Workload::"reader", action, resource) when { context.namespace == "team/a" };

// 3. PKI, but not the admin role, not sign-verbatim and not the CA itself.
@id("pki-user")
permit (principal == Workload::"pki-user", action, resource in Path::"pki");
@id("no-admin-certs")
forbid (principal, action, resource == Secret::"pki/issue/admin");
@id("no-verbatim")
forbid (principal, action, resource == Secret::"pki/sign-verbatim");
@id("not-the-ca")
forbid (principal, action == Action::"issue", resource in Path::"pki/issuer");

// 4. Userpass logins, but never as admin.
@id("logins")
permit (principal == Workload::"login-user", action == Action::"login", resource in Path::"auth/userpass/login");
@id("no-admin-login")
forbid (principal, action == Action::"login", resource == Endpoint::"auth/userpass/login/admin");

// 6. Transit, but not the prod key.
@id("transit-user")
permit (principal == Workload::"transit-user", action, resource in Path::"transit");
@id("not-the-prod-key")
forbid (principal, action, resource == Secret::"transit/keys/prod");

// 8. and 11. Names under secret/prod, nothing else.
@id("lister")
permit (principal == Workload::"lister", action == Action::"list", resource in Path::"secret/prod");

// 10. A deny-list: all of secret/ except secret/prod.
@id("broad")
permit (principal == Workload::"broad", action, resource in Path::"secret");
@id("broad-not-prod")
forbid (principal == Workload::"broad", action, resource in Path::"secret/prod");
"""

MOUNTS = {
    "secret": "kv-v2",
    "kv": "kv-v1",
    "nsx/secret": "kv-v2",
    "team/a/secret": "kv-v2",
    "pki": "pki",
    "transit": "transit",
}

ESCALATE = 'path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }'


def canary(kind: str) -> str:
    return f"CANARY-{kind}-{uuid.uuid4().hex}"


def inline_auth_parameter(key: str, value: str) -> str:
    """OpenBao's X-Vault-Inline-Auth-Parameter-* value: raw URL-safe base64 of {"key","value"}."""
    raw = json.dumps({"key": key, "value": value}).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ------------------------------------------------------------------ the stack


@dataclass
class World:
    stack: stack_module.Stack
    canaries: dict[str, str]
    issuer_id: str
    prod_ciphertext: str

    def gate(
        self,
        principal: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict | str | None = None,
    ) -> RawResponse:
        """Through Envoy as ``principal``; the Vault token is the root token unless ``token``
        says otherwise ("" sends none), so the gate is the only thing in the way."""
        client = RawClient(self.stack.envoy_url, self.stack.root_token, {PRINCIPAL_HEADER: principal})
        return client.request(method, path, vault_token=token, headers=headers, body=body)

    def bao(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict | str | None = None,
    ) -> RawResponse:
        """Straight to OpenBao with the root token (or ``token``), bypassing Envoy."""
        client = RawClient(self.stack.bao_url, self.stack.root_token)
        return client.request(method, path, vault_token=token, headers=headers, body=body)

    def must(self, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> RawResponse:
        response = self.bao(method, path, body=body, headers=headers)
        assert response.status in (200, 204), f"setup {method} {path}: {response.status} {response.text}"
        return response


def provision(stack: stack_module.Stack) -> World:
    """Namespaces nsx, nsy and team/a with KV v2 mounts, PKI, transit and userpass,
    each holding a unique canary."""
    names = [
        "nsx", "nsx-team", "nsy", "team-a", "leaf", "leaf-meta", "detailed-meta", "prod-db",
        "production", "transit", "admin-password", "alice-password",
    ]  # fmt: skip
    canaries = {name: canary(name) for name in names}
    world = World(stack, canaries, issuer_id="", prod_ciphertext="")
    must = world.must

    for namespace in ("nsx", "nsy", "team"):
        must("POST", f"/v1/sys/namespaces/{namespace}")
    must("POST", "/v1/team/sys/namespaces/a")
    kv2 = {"type": "kv", "options": {"version": "2"}}
    must("POST", "/v1/sys/mounts/secret", kv2, headers={"X-Vault-Namespace": "nsx"})
    must("POST", "/v1/nsy/sys/mounts/secret", kv2)
    must("POST", "/v1/sys/mounts/secret", kv2, headers={"X-Vault-Namespace": "team/a"})
    must("POST", "/v1/nsx/secret/data/prod/db", {"data": {"password": canaries["nsx"]}})
    must("POST", "/v1/nsx/secret/data/team/app", {"data": {"value": canaries["nsx-team"]}})
    must("POST", "/v1/nsy/secret/data/prod/db", {"data": {"password": canaries["nsy"]}})
    must("POST", "/v1/team/a/secret/data/app", {"data": {"password": canaries["team-a"]}})

    # secret/prod is a folder (seeded secret/prod/acme/api/db) and, here, a secret too.
    must("POST", "/v1/secret/data/prod", {"data": {"value": canaries["leaf"]}})
    must("POST", "/v1/secret/metadata/prod", {"custom_metadata": {"owner": canaries["leaf-meta"]}})
    must("POST", "/v1/secret/data/prod/db", {"data": {"password": canaries["prod-db"]}})
    must("POST", "/v1/secret/metadata/prod/db", {"custom_metadata": {"owner": canaries["detailed-meta"]}})
    must("POST", "/v1/secret/data/production", {"data": {"value": canaries["production"]}})

    must("POST", "/v1/sys/auth/userpass", {"type": "userpass"})
    must("PUT", "/v1/sys/policies/acl/reads", {"policy": 'path "secret/*" { capabilities = ["read", "list"] }'})
    for user in ("admin", "alice"):
        body = {"password": canaries[f"{user}-password"], "token_policies": "reads"}
        must("POST", f"/v1/auth/userpass/users/{user}", body)

    must("POST", "/v1/sys/mounts/pki", {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
    root = {"common_name": "bypass test root", "key_type": "ec", "ttl": "8760h"}
    must("POST", "/v1/pki/root/generate/internal", root)
    for role in ("admin", "web"):
        must("POST", f"/v1/pki/roles/{role}", {"allow_any_name": True, "key_type": "ec", "ttl": "1h"})
    issuers = must("LIST", "/v1/pki/issuers").json()["data"]["keys"]
    assert len(issuers) == 1
    world.issuer_id = issuers[0]

    must("POST", "/v1/sys/mounts/transit", {"type": "transit"})
    must("POST", "/v1/transit/keys/prod", {"exportable": False})
    must("POST", "/v1/transit/keys/mine", {"type": "rsa-2048"})
    plaintext = base64.b64encode(canaries["transit"].encode()).decode()
    encrypted = must("POST", "/v1/transit/encrypt/prod", {"plaintext": plaintext})
    world.prod_ciphertext = encrypted.json()["data"]["ciphertext"]
    # The base64 form is what would travel if the key were used through the gate.
    canaries["transit-b64"] = plaintext
    canaries["admin-inline"] = inline_auth_parameter("password", canaries["admin-password"])
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The module's private stack, provisioned; at teardown no seeded value and no canary
    (secrets, passwords, tokens, the issued private key) may be in any file it wrote."""
    config = {
        "schema": (stack_module.POLICIES_DIR / "schema.cedarschema").read_text(),
        "policies": POLICIES,
        "entities": [],
        "namespaces": ["nsx", "team/a"],
        "mounts": MOUNTS,
        "identity": dict(stack_module.HEADER_IDENTITY),
        "audit": dict(stack_module.DEV_AUDIT),
    }
    running = stack_module.Stack(tmp_path_factory.mktemp("bypass-stack"), plugin_config=config)
    try:
        running.start_bao()
        world = provision(running)
        # The store has a namespace the configuration deliberately leaves out
        # (nsy), so the usual start-up check would refuse this stack: check
        # that it names exactly that difference, then start Envoy anyway.
        check = running.check_mounts()
        assert check.returncode == 1, check.stdout + check.stderr
        assert [line for line in check.stdout.splitlines() if line] == [
            'namespace "nsy": in the store but not declared in "namespaces" (the filter refuses its requests)'
        ], check.stdout
        running.start_envoy()
        yield world
    finally:
        running.stop()
    assert_no_secret_in_files(running, world.canaries.values())


@pytest.fixture(scope="module")
def seeded_prod_db(world) -> dict:
    """The seeded secret/prod/acme/api/db, which `reader` may read."""
    return next(s["data"] for s in world.stack.seed() if f"{s['mount']}/{s['path']}" == "secret/prod/acme/api/db")


# ------------------------------------------------------------------ checks


def assert_refused(response: RawResponse, status: int, error: str, *absent: str) -> None:
    """Vault's error shape plus Envoy's request id, and none of ``absent`` in the reply."""
    assert response.status == status, response.text
    body = response.json()
    assert body["errors"] == [error], body
    assert body["request_id"]
    for value in absent:
        assert value not in response.text


def openbao_saw(stack: stack_module.Stack, mark: int) -> list[tuple[str, str]]:
    """(namespace, path) of every request OpenBao audited since ``mark``."""
    return [
        (entry["request"].get("namespace", {}).get("path", ""), entry["request"].get("path"))
        for entry in stack.bao_audit_entries(since=mark)
        if entry.get("type") == "request"
    ]


def assert_openbao_saw_nothing(stack: stack_module.Stack, mark: int) -> None:
    """OpenBao audits every request it handles before answering: nothing since ``mark`` means
    none of the requests since then reached it."""
    seen = openbao_saw(stack, mark)
    assert not seen, f"OpenBao handled {seen}"


def envoy_request_id(response: RawResponse) -> str:
    """The id Envoy gave the request (it replaces any a client sends), from the response."""
    request_id = {name.lower(): value for name, value in response.headers.items()}.get("x-request-id", "")
    assert request_id, f"no x-request-id in the response: {response.headers}"
    return request_id


def audit_record(stack: stack_module.Stack, request_id: str, timeout: float = 5.0) -> dict:
    """The filter's audit record of one request (Envoy's access log, field ``audit``)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in stack.access_log_lines():
            if line.get("audit"):
                record = json.loads(line["audit"])
                if record["request_id"] == request_id:
                    return record
        assert time.monotonic() < deadline, f"no audit record for request {request_id}"
        time.sleep(0.05)


def record_of(world: World, response: RawResponse) -> dict:
    return audit_record(world.stack, response.json()["request_id"])


def curl(world: World, principal: str, method: str, path: str, headers: dict[str, str] | None = None,
         body: str | None = None) -> tuple[int, str]:  # fmt: skip
    """curl through Envoy with the root token, the path sent as written."""
    all_headers = {"X-Vault-Token": world.stack.root_token, PRINCIPAL_HEADER: principal, **(headers or {})}
    args = [arg for name, value in all_headers.items() for arg in ("-H", f"{name}: {value}")]
    if body is not None:
        args += ["--data-binary", body]
    result = subprocess.run(
        ["curl", "-sS", "--path-as-is", "-X", method, "-o", "-", "-w", "\n%{http_code}", *args,
         f"{world.stack.envoy_url}{path}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    text, _, status = result.stdout.rpartition("\n")
    return int(status), text


def bao_cli(world: World, principal: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The real bao CLI pointed at Envoy with the root token, the principal sent with -header."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=world.stack.envoy_url, BAO_TOKEN=world.stack.root_token, HOME=str(world.stack.run_dir))
    command, *rest = args
    argv = [stack_module.bao_binary(), *command.split(), f"-header={PRINCIPAL_HEADER}={principal}", *rest]
    return subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=30)


def hvac_client(world: World, principal: str, namespace: str | None = None, token: str | None = None) -> hvac.Client:
    """hvac through Envoy as ``principal``; the root token unless ``token`` ("" sends none)."""
    token = world.stack.root_token if token is None else (token or None)
    client = hvac.Client(url=world.stack.envoy_url, token=token, namespace=namespace)
    client.session.headers[PRINCIPAL_HEADER] = principal
    return client


def wrap(world: World, value: str) -> str:
    """A wrapping token in the ROOT namespace holding {"canary": value} (straight to OpenBao)."""
    wrapped = world.must("POST", "/v1/sys/wrapping/wrap", {"canary": value}, headers={"X-Vault-Wrap-TTL": "600"})
    return wrapped.json()["wrap_info"]["token"]


# ------------------------------------------------ 1. namespace in the path hides built-ins


def test_unwrap_in_a_namespace_is_unwrap_however_it_is_spelled(world):
    stack, canaries = world.stack, world.canaries
    wrapped_value = canary("wrapped")
    canaries["wrapped"] = wrapped_value
    wrapping_token = wrap(world, wrapped_value)
    canaries["wrapping-token"] = wrapping_token

    mark = stack.bao_audit_mark()
    as_header = {"X-Vault-Namespace": "nsx"}
    by_token = {"token": wrapping_token}
    attempts = [
        ("POST", "/v1/nsx/sys/wrapping/unwrap", wrapping_token, {}, None),
        ("POST", "/v1/nsx/sys/wrapping/unwrap", None, {}, by_token),
        ("PUT", "/v1/nsx//sys/wrapping/unwrap/", wrapping_token, {}, None),
        ("POST", "/v1/nsx/sys/wrapping/%75nwrap", wrapping_token, {}, None),
        ("GET", "/v1/nsx/cubbyhole/response", wrapping_token, {}, None),
        ("POST", "/v1/sys/wrapping/unwrap", wrapping_token, as_header, None),
        ("POST", "/v1/sys/wrapping/unwrap", None, {"X-Vault-Namespace": "/nsx/"}, by_token),
        ("GET", "/v1/cubbyhole/response", wrapping_token, as_header, None),
        ("POST", "/v1/nsx/sys/wrapping/unwrap", wrapping_token, {"X-Vault-Namespace": "root"}, None),
    ]
    for method, path, token, headers, body in attempts:
        response = world.gate("team", method, path, token=token, headers=headers, body=body)
        assert_refused(response, 403, "permission denied", wrapped_value)
        record = record_of(world, response)
        assert record["action"] == "unwrap", (method, path, headers)
        assert record["resource"] == 'Endpoint::"nsx/sys/wrapping/unwrap"', (method, path, headers)
        assert record["namespace"] == "nsx"
        assert record["policies"] == ["team-never-unwraps"]

    status, text = curl(world, "team", "POST", "/v1/nsx/sys/wrapping/unwrap", body=json.dumps(by_token))
    assert status == 403 and wrapped_value not in text
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac_client(world, "team", namespace="nsx").sys.unwrap(token=wrapping_token)
    cli = bao_cli(world, "team", "unwrap", "-namespace=nsx", "-format=json", wrapping_token)
    assert cli.returncode != 0 and "permission denied" in cli.stderr
    assert wrapped_value not in cli.stdout + cli.stderr
    assert_openbao_saw_nothing(stack, mark)

    # The unwrap never happened: the token still unwraps, once, straight on OpenBao.
    unwrapped = world.bao("POST", "/v1/sys/wrapping/unwrap", token=wrapping_token)
    assert unwrapped.status == 200, unwrapped.text
    assert unwrapped.json()["data"] == {"canary": wrapped_value}


def test_the_namespaced_unwrap_route_is_live_on_openbao(world):
    """Control: a ROOT wrapping token really is unwrapped by /v1/nsx/sys/wrapping/unwrap on
    OpenBao, so the route the gate refuses above would have released the canary."""
    value = canary("wrapped-control")
    world.canaries["wrapped-control"] = value
    token = wrap(world, value)
    world.canaries["wrapping-token-control"] = token
    direct = world.bao("POST", "/v1/nsx/sys/wrapping/unwrap", token=token)
    assert direct.status == 200 and direct.json()["data"] == {"canary": value}


def test_the_team_still_reads_its_namespace(world):
    """The permit works in every spelling, so the refusals above come from the forbids."""
    for path, headers in [
        ("/v1/nsx/secret/data/team/app", {}),
        ("/v1/secret/data/team/app", {"X-Vault-Namespace": "nsx"}),
    ]:
        mark = world.stack.bao_audit_mark()
        response = world.gate("team", "GET", path, headers=headers)
        assert response.status == 200, response.text
        assert response.json()["data"]["data"] == {"value": world.canaries["nsx-team"]}
        # Forwarded canonically (namespace in the header), and seen as such by OpenBao.
        assert openbao_saw(world.stack, mark) == [("nsx/", "secret/data/team/app")]


def test_writing_an_acl_policy_in_a_namespace_is_sys(world):
    stack = world.stack
    mark = stack.bao_audit_mark()
    body = {"policy": ESCALATE}
    for path, headers in [
        ("/v1/nsx/sys/policies/acl/escalate", {}),
        ("/v1/sys/policies/acl/escalate", {"X-Vault-Namespace": "nsx"}),
        ("/v1/nsx/sys//policies/acl/escalate", {}),
    ]:
        response = world.gate("team", "PUT", path, headers=headers, body=body)
        assert_refused(response, 403, "permission denied")
        record = record_of(world, response)
        assert (record["action"], record["resource"]) == ("sys", 'Endpoint::"nsx/sys/policies/acl/escalate"')
        assert record["policies"] == ["team-never-sys"]
    cli = bao_cli(world, "team", "policy write", "-namespace=nsx", "escalate", "-", stdin=ESCALATE)
    assert cli.returncode != 0
    assert_openbao_saw_nothing(stack, mark)

    for namespace in ("nsx", "root"):
        found = world.bao("GET", "/v1/sys/policies/acl/escalate", headers={"X-Vault-Namespace": namespace})
        assert found.status == 404, f"the policy must not exist in {namespace}"


# ------------------------------------------------ 2. context.namespace in every spelling


@pytest.mark.parametrize(
    "path, namespace_header, namespace, canary_name",
    [
        ("/v1/nsx/secret/data/prod/db", None, "nsx", "nsx"),
        ("/v1/secret/data/prod/db", "nsx", "nsx", "nsx"),
        ("/v1/secret/data/prod/db", "/nsx/", "nsx", "nsx"),
        ("/v1/nsx/secret/data/prod/db", "root", "nsx", "nsx"),
        ("/v1/team/a/secret/data/app", None, "team/a", "team-a"),
        ("/v1/secret/data/app", "team/a", "team/a", "team-a"),
        ("/v1/a/secret/data/app", "team", "team/a", "team-a"),
    ],
    ids=["path", "header", "header-slashes", "root-header-and-path", "nested-path", "nested-header", "split"],
)
def test_a_namespace_forbid_holds_in_every_spelling(world, path, namespace_header, namespace, canary_name):
    stack = world.stack
    secret = world.canaries[canary_name]
    headers = {"X-Vault-Namespace": namespace_header} if namespace_header is not None else {}
    mark = stack.bao_audit_mark()
    response = world.gate("reader", "GET", path, headers=headers)
    assert_refused(response, 403, "permission denied", secret)
    assert_openbao_saw_nothing(stack, mark)
    record = record_of(world, response)
    assert record["namespace"] == namespace
    assert record["action"] == "read"
    assert record["resource"].startswith(f'Secret::"{namespace}/secret/')
    assert record["policies"] == [f"reader-not-in-{namespace.replace('/', '-')}"]
    # Control: OpenBao serves that very spelling.
    direct = world.bao("GET", path, headers=headers)
    assert direct.status == 200 and secret in direct.text


def test_a_namespace_forbid_holds_for_real_clients(world):
    secret = world.canaries["nsx"]
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac_client(world, "reader", namespace="nsx").secrets.kv.v2.read_secret_version(
            path="prod/db", mount_point="secret", raise_on_deleted_version=True
        )
    # The CLI's mount lookup (nsx/sys/internal/ui/mounts/...) is already in nsx, so forbidden too.
    cli = bao_cli(world, "reader", "kv get", "-namespace=nsx", "-mount=secret", "prod/db")
    assert cli.returncode != 0 and "permission denied" in cli.stderr
    assert secret not in cli.stdout + cli.stderr


def test_the_root_namespace_is_untouched_by_the_namespace_forbids(world, seeded_prod_db):
    response = world.gate("reader", "GET", "/v1/secret/data/prod/acme/api/db")
    assert response.status == 200, response.text
    assert response.json()["data"]["data"] == seeded_prod_db
    assert audit_record(world.stack, envoy_request_id(response))["namespace"] == ""


# ------------------------------------------------ 3. PKI routes that name a role or an issuer


def csr_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def self_issued_ca_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pki_state(world: World) -> tuple[set[str], set[str]]:
    certs = world.must("LIST", "/v1/pki/certs").json()["data"]["keys"]
    issuers = world.must("LIST", "/v1/pki/issuers").json()["data"]["keys"]
    return set(certs), set(issuers)


def test_pki_routes_that_use_a_forbidden_role_or_the_ca_are_refused(world):
    stack = world.stack
    issuer = world.issuer_id
    leaf = {"common_name": "admin.example.test"}
    csr = {"csr": csr_pem("admin.example.test"), "common_name": "admin.example.test"}
    intermediate = {"csr": csr_pem("rogue intermediate"), "common_name": "rogue intermediate"}
    attempts = [
        ("/v1/pki/issue/admin", leaf, "no-admin-certs"),
        ("/v1/pki/issuer/default/issue/admin", leaf, "no-admin-certs"),
        (f"/v1/pki/issuer/{issuer}/issue/admin", leaf, "no-admin-certs"),
        ("/v1/pki/sign/admin", csr, "no-admin-certs"),
        ("/v1/pki/issuer/default/sign/admin", csr, "no-admin-certs"),
        ("/v1/pki/sign-verbatim/admin", csr, "no-admin-certs"),
        (f"/v1/pki/issuer/{issuer}/sign-verbatim/admin", csr, "no-admin-certs"),
        ("/v1/pki/sign-verbatim", csr, "no-verbatim"),
        ("/v1/pki/issuer/default/sign-verbatim", csr, "no-verbatim"),
        ("/v1/pki/root/sign-intermediate", intermediate, "not-the-ca"),
        ("/v1/pki/issuer/default/sign-intermediate", intermediate, "not-the-ca"),
        ("/v1/pki/root/sign-self-issued", {"certificate": self_issued_ca_pem("rogue self-issued")}, "not-the-ca"),
        ("/v1/pki/root/generate/exported", {"common_name": "rogue root", "key_type": "ec"}, "not-the-ca"),
        ("/v1/pki/roles/admin", {"allow_any_name": True, "ttl": "87600h"}, "no-admin-certs"),
    ]
    before = pki_state(world)
    mark = stack.bao_audit_mark()
    for path, body, policy in attempts:
        response = world.gate("pki-user", "POST", path, body=body)
        assert_refused(response, 403, "permission denied", "PRIVATE KEY", "private_key", "BEGIN CERTIFICATE")
        record = record_of(world, response)
        assert record["policies"] == [policy], path
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac_client(world, "pki-user").secrets.pki.generate_certificate(name="admin", common_name="admin.example.test")
    assert_openbao_saw_nothing(stack, mark)
    assert pki_state(world) == before, "no certificate was issued and no CA created"
    role = world.must("GET", "/v1/pki/roles/admin").json()["data"]
    assert role["ttl"] == 3600, "the admin role was not rewritten"


def test_a_permitted_role_issues_and_shows_up_in_the_certificate_list(world):
    """Control for the check above: an issue the policy allows creates a certificate
    (and its private key reaches the client, never a log)."""
    certs_before, _ = pki_state(world)
    issued = hvac_client(world, "pki-user").secrets.pki.generate_certificate(name="web", common_name="web.example.test")
    data = issued["data"]
    world.canaries["issued-private-key"] = data["private_key"]
    assert "PRIVATE KEY" in data["private_key"]
    certs_after, _ = pki_state(world)
    assert certs_after - certs_before == {data["serial_number"]}


# ------------------------------------------------ 4. login names are case-insensitive


def test_a_forbidden_login_is_refused_in_any_case(world):
    stack, password = world.stack, world.canaries["admin-password"]
    mark = stack.bao_audit_mark()
    for name in ("admin", "ADMIN", "Admin", "%41DMIN", "aDmIn"):
        login = f"/v1/auth/userpass/login/{name}"
        response = world.gate("login-user", "POST", login, token="", body={"password": password})
        assert_refused(response, 403, "permission denied", "client_token", "accessor")
        record = record_of(world, response)
        assert record["resource"] == 'Endpoint::"auth/userpass/login/admin"', name
        assert record["policies"] == ["no-admin-login"]
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac_client(world, "login-user", token="").auth.userpass.login(username="ADMIN", password=password)
    login_args = ["-method=userpass", "-no-store", "-format=json", "username=ADMIN", f"password={password}"]
    cli = bao_cli(world, "login-user", "login", *login_args)
    assert cli.returncode != 0 and "permission denied" in cli.stderr
    assert "client_token" not in cli.stdout
    assert_openbao_saw_nothing(stack, mark)

    # Control: OpenBao logs ADMIN in as admin, and the permit lets alice in through the gate.
    direct = world.bao("POST", "/v1/auth/userpass/login/ADMIN", token="", body={"password": password})
    assert direct.status == 200 and direct.json()["auth"]["metadata"]["username"] == "admin"
    world.canaries["admin-client-token"] = direct.json()["auth"]["client_token"]
    alice_password = {"password": world.canaries["alice-password"]}
    alice = world.gate("login-user", "POST", "/v1/auth/userpass/login/alice", token="", body=alice_password)
    assert alice.status == 200, alice.text
    world.canaries["alice-client-token"] = alice.json()["auth"]["client_token"]


# ------------------------------------------------ 5. inline authentication


def test_inline_authentication_is_refused_and_never_reaches_openbao(world, seeded_prod_db):
    stack, password = world.stack, world.canaries["admin-password"]
    parameter = world.canaries["admin-inline"]
    inline = {
        "X-Vault-Inline-Auth-Path": "auth/userpass/login/admin",
        "X-Vault-Inline-Auth-Parameter-password": parameter,
    }
    path = "/v1/secret/data/prod/acme/api/db"
    mark = stack.bao_audit_mark()
    for headers, token in [
        (inline, ""),
        ({"x-vault-inline-auth-path": "auth/userpass/login/admin", "X-VAULT-INLINE-AUTH-PARAMETER-P": parameter}, ""),
        ({"X-Vault-Inline-Auth-Parameter-password": parameter}, ""),
        (inline, None),  # with the root token as well
    ]:
        response = world.gate("reader", "GET", path, token=token, headers=headers)
        assert_refused(response, 400, "inline authentication is not supported", *seeded_prod_db.values())
        record = record_of(world, response)
        assert record["decision"] == "bad_request"
    status, text = curl(world, "reader", "GET", path, headers=inline)
    assert status == 400 and json.loads(text)["errors"] == ["inline authentication is not supported"]
    assert_openbao_saw_nothing(stack, mark)
    stack.access_log_lines(at_least=1)
    time.sleep(0.2)  # Envoy flushes its logs every 100 ms
    leaks = files_containing(stack.run_dir, [password, parameter])
    assert not leaks, f"the password reached {leaks}"

    # Control: straight to OpenBao the same headers log in as admin and read the secret.
    direct = world.bao("GET", path, token="", headers=inline)
    assert direct.status == 200, direct.text
    assert direct.json()["data"]["data"] == seeded_prod_db


# ------------------------------------------------ 6. transit key routes


def transit_key(world: World, name: str) -> dict:
    return world.must("GET", f"/v1/transit/keys/{name}").json()["data"]


def test_every_route_that_touches_a_forbidden_transit_key_is_refused(world):
    stack, secret = world.stack, world.canaries["transit"]
    plaintext = world.canaries["transit-b64"]
    attempts = [
        ("POST", "/v1/transit/keys/prod/config", {"exportable": True, "allow_plaintext_backup": True}),
        ("POST", "/v1/transit/keys/prod/rotate", None),
        ("GET", "/v1/transit/byok-export/mine/prod", None),
        ("GET", "/v1/transit/byok-export/mine/prod/1", None),
        ("GET", "/v1/transit/export/encryption-key/prod", None),
        ("GET", "/v1/transit/export/encryption-key/prod/latest", None),
        ("GET", "/v1/transit/backup/prod", None),
        ("POST", "/v1/transit/decrypt/prod", {"ciphertext": world.prod_ciphertext}),
        ("POST", "/v1/transit/datakey/plaintext/prod", {}),
        ("POST", "/v1/transit/encrypt/prod", {"plaintext": plaintext}),
        ("POST", "/v1/transit/rewrap/prod", {"ciphertext": world.prod_ciphertext}),
        ("POST", "/v1/transit/hmac/prod", {"input": plaintext}),
        ("DELETE", "/v1/transit/keys/prod", None),
    ]
    mark = stack.bao_audit_mark()
    for method, path, body in attempts:
        response = world.gate("transit-user", method, path, body=body)
        assert_refused(response, 403, "permission denied", secret, plaintext, '"keys"', "ciphertext")
        record = record_of(world, response)
        assert record["resource"] == 'Secret::"transit/keys/prod"', path
        assert record["policies"] == ["not-the-prod-key"], path
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac_client(world, "transit-user").secrets.transit.decrypt_data(name="prod", ciphertext=world.prod_ciphertext)
    assert_openbao_saw_nothing(stack, mark)

    key = transit_key(world, "prod")
    assert key["exportable"] is False and key["allow_plaintext_backup"] is False
    assert key["latest_version"] == 1


def test_another_transit_key_is_usable(world):
    """Control: the permit on the mount works, so the refusals above are the forbid on prod."""
    plaintext = base64.b64encode(b"not a secret").decode()
    encrypted = hvac_client(world, "transit-user").secrets.transit.encrypt_data(name="mine", plaintext=plaintext)
    assert encrypted["data"]["ciphertext"].startswith("vault:v1:")


# ------------------------------------------------ 8. detailed-metadata is a read


def test_listing_detailed_metadata_needs_read(world):
    stack, secret = world.stack, world.canaries["detailed-meta"]
    mark = stack.bao_audit_mark()
    for method, path in [
        ("LIST", "/v1/secret/detailed-metadata/prod"),
        ("GET", "/v1/secret/detailed-metadata/prod?list=true"),
        ("LIST", "/v1/secret/detailed-metadata/prod/"),
    ]:
        response = world.gate("lister", method, path)
        assert_refused(response, 403, "permission denied", secret, world.canaries["leaf-meta"])
        record = record_of(world, response)
        assert (record["action"], record["resource"]) == ("read", 'Path::"secret/prod"'), path
    assert_openbao_saw_nothing(stack, mark)

    # Control: straight to OpenBao the route does return the custom metadata.
    direct = world.bao("LIST", "/v1/secret/detailed-metadata/prod")
    assert direct.status == 200 and secret in direct.text


def test_listing_names_is_still_allowed(world):
    listed = world.gate("lister", "LIST", "/v1/secret/metadata/prod")
    assert listed.status == 200, listed.text
    assert sorted(listed.json()["data"]["keys"]) == ["acme/", "db"]
    assert world.canaries["detailed-meta"] not in listed.text
    names = hvac_client(world, "lister").secrets.kv.v2.list_secrets(path="prod", mount_point="secret")
    assert sorted(names["data"]["keys"]) == ["acme/", "db"]


# ------------------------------------------------ 10. a folder covers the secret of its name


def test_a_forbidden_folder_covers_the_secret_of_the_same_name(world):
    stack = world.stack
    secret, meta = world.canaries["leaf"], world.canaries["leaf-meta"]
    mark = stack.bao_audit_mark()
    for method, path, body in [
        ("GET", "/v1/secret/data/prod", None),
        ("GET", "/v1/secret/data/prod/", None),
        ("GET", "/v1/secret//data/prod", None),
        ("GET", "/v1/secret/metadata/prod", None),
        ("GET", "/v1/secret/subkeys/prod", None),
        ("GET", "/v1/secret/data/prod?version=1", None),
        ("POST", "/v1/secret/data/prod", {"data": {"value": "overwritten"}}),
        ("DELETE", "/v1/secret/metadata/prod", None),
        ("GET", "/v1/secret/data/prod/db", None),
    ]:
        response = world.gate("broad", method, path, body=body)
        assert_refused(response, 403, "permission denied", secret, meta, world.canaries["prod-db"])
        record = record_of(world, response)
        assert record["policies"] == ["broad-not-prod"], path
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac_client(world, "broad").secrets.kv.v2.read_secret_version(
            path="prod", mount_point="secret", raise_on_deleted_version=True
        )
    cli = bao_cli(world, "broad", "kv get", "-mount=secret", "prod")
    assert cli.returncode != 0 and "permission denied" in cli.stderr
    assert secret not in cli.stdout + cli.stderr
    assert "secret/data/prod" not in stack.bao_audit_paths(since=mark)
    assert "secret/metadata/prod" not in stack.bao_audit_paths(since=mark)

    # Neither written nor deleted: the leaf is still version 1 with its canary.
    stored = world.must("GET", "/v1/secret/data/prod").json()["data"]
    assert stored["data"] == {"value": secret} and stored["metadata"]["version"] == 1


def test_the_deny_list_leaves_the_rest_of_the_mount_readable(world):
    response = world.gate("broad", "GET", "/v1/secret/data/production")
    assert response.status == 200, response.text
    assert response.json()["data"]["data"] == {"value": world.canaries["production"]}


# ------------------------------------------------ 11. list and scan query flags


def test_the_first_list_value_wins_as_on_openbao(world):
    stack = world.stack
    path = "/v1/secret/metadata/prod?list=true&list=false"
    listed = world.gate("lister", "GET", path)
    assert listed.status == 200, listed.text
    direct = world.bao("GET", path)
    assert direct.status == 200
    assert listed.json()["data"]["keys"] == direct.json()["data"]["keys"]

    # Reversed, it is a read of secret/prod's metadata on OpenBao, which list does not permit.
    mark = stack.bao_audit_mark()
    reversed_path = "/v1/secret/metadata/prod?list=false&list=true"
    read = world.gate("lister", "GET", reversed_path)
    assert_refused(read, 403, "permission denied", world.canaries["leaf-meta"])
    assert record_of(world, read)["action"] == "read"
    assert_openbao_saw_nothing(stack, mark)
    control = world.bao("GET", reversed_path)
    assert control.status == 200 and world.canaries["leaf-meta"] in control.text


@pytest.mark.parametrize(
    "method, path", [("GET", "/v1/secret/metadata/prod?scan=true"), ("SCAN", "/v1/secret/metadata/prod")]
)
def test_scan_is_a_list_of_the_folder(world, method, path):
    scanned = world.gate("lister", method, path)
    request_id = envoy_request_id(scanned)
    assert scanned.status == 200, scanned.text
    direct = world.bao(method, path)
    assert scanned.json()["data"]["keys"] == direct.json()["data"]["keys"]
    record = audit_record(world.stack, request_id)
    assert (record["action"], record["resource"]) == ("list", 'Path::"secret/prod"')


def test_a_recursive_scan_of_a_folder_the_principal_may_not_list_is_refused(world):
    stack = world.stack
    mark = stack.bao_audit_mark()
    for method, path in [
        ("GET", "/v1/secret/metadata/?scan=true"),
        ("SCAN", "/v1/secret/metadata/"),
        ("SCAN", "/v1/secret/metadata"),
    ]:
        response = world.gate("lister", method, path)
        assert_refused(response, 403, "permission denied", "ci/acme", "production")
        assert record_of(world, response)["resource"] == 'Path::"secret"', path
    conflicting = world.gate("lister", "GET", "/v1/secret/metadata/prod?list=true&scan=true")
    assert conflicting.status == 400
    assert conflicting.json()["errors"][0].startswith("invalid request path: ")
    assert_openbao_saw_nothing(stack, mark)


# ------------------------------------------------ undeclared namespaces


@pytest.mark.parametrize(
    "method, path, namespace_header, reason",
    [
        ("GET", "/v1/secret/data/prod/db", "nsy", "undeclared namespace"),
        ("GET", "/v1/secret/data/prod/db", "/nsy/", "undeclared namespace"),
        ("GET", "/v1/secret/data/prod/db", "nsx/inner", "undeclared namespace"),
        ("GET", "/v1/nsy/secret/data/prod/db", None, "path is under no configured mount"),
        ("POST", "/v1/nsy/sys/wrapping/unwrap", None, "path is under no configured mount"),
        ("GET", "/v1/b/secret/data/prod/db", "team", "path is under no configured mount"),
    ],
)
def test_an_undeclared_namespace_is_refused_and_never_forwarded(world, method, path, namespace_header, reason):
    stack, secret = world.stack, world.canaries["nsy"]
    headers = {"X-Vault-Namespace": namespace_header} if namespace_header else {}
    mark = stack.bao_audit_mark()
    response = world.gate("reader", method, path, headers=headers)
    assert_refused(response, 400, f"invalid request path: {reason}", secret)
    record = record_of(world, response)
    assert record["decision"] == "bad_request"
    assert record["action"] is None
    assert_openbao_saw_nothing(stack, mark)


def test_the_undeclared_namespace_exists_on_openbao(world):
    """Control: nsy is real, so forwarding the requests above would have served its canary."""
    direct = world.bao("GET", "/v1/secret/data/prod/db", headers={"X-Vault-Namespace": "nsy"})
    assert direct.status == 200 and world.canaries["nsy"] in direct.text

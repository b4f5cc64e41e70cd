"""The gate end to end: real Envoy running secretgate.wasm in front of a real
OpenBao, driven by the clients CI jobs use (the bao CLI, curl, hvac), with the
demo policies in policies/."""

from __future__ import annotations

import json
import subprocess

import hvac
import pytest

import stack as stack_module
from policy_change_support import bao_cli

API_DB = "secret/ci/acme/api/db"
WEB_TOKEN = "secret/ci/acme/web/token"
PROD_DB = "secret/prod/acme/api/db"
LEGACY = "kv/ci/acme/api/legacy"


def secret_values(seeded: dict, name: str) -> list[str]:
    return list(seeded[name].values())


def assert_no_secret(body: bytes | str, seeded: dict, name: str) -> None:
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    for value in secret_values(seeded, name):
        assert value not in text, f"{name} leaked"


# ------------------------------------------------------------------ clients


def curl(stack, path: str, jwt: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """curl through Envoy with the root Vault token, the path sent as written."""
    all_headers = {"X-Vault-Token": stack.root_token, **(headers or {})}
    if jwt:
        all_headers[stack_module.JWT_HEADER] = jwt
    args = [arg for name, value in all_headers.items() for arg in ("-H", f"{name}: {value}")]
    result = subprocess.run(
        ["curl", "-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", *args, f"{stack.envoy_url}{path}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def hvac_client(stack, jwt: str | None) -> hvac.Client:
    client = hvac.Client(url=stack.envoy_url, token=stack.root_token)
    if jwt:
        client.session.headers[stack_module.JWT_HEADER] = jwt
    return client


# ------------------------------------------------------------ allowed reads


def test_an_allowed_kv_v2_read_returns_the_seeded_value_with_every_client(stack, mint_jwt, seeded):
    token = mint_jwt()

    cli = bao_cli(stack, token, "kv get", "-format=json", "-mount=secret", "ci/acme/api/db")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["data"]["data"] == seeded[API_DB]

    status, body = curl(stack, "/v1/secret/data/ci/acme/api/db", jwt=token)
    assert status == 200
    assert json.loads(body)["data"]["data"] == seeded[API_DB]

    read = hvac_client(stack, token).secrets.kv.v2.read_secret_version(
        path="ci/acme/api/db", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == seeded[API_DB]


def test_a_kv_v1_read(stack, mint_jwt, seeded):
    token = mint_jwt()
    cli = bao_cli(stack, token, "kv get", "-format=json", "-mount=kv", "ci/acme/api/legacy")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["data"] == seeded[LEGACY]
    read = hvac_client(stack, token).secrets.kv.v1.read_secret(path="ci/acme/api/legacy", mount_point="kv")
    assert read["data"] == seeded[LEGACY]


def test_list_with_the_list_method_and_with_list_true(stack, mint_jwt, envoy):
    token = mint_jwt()
    raw = envoy.list("/v1/secret/metadata/ci/acme/api", jwt=token)
    assert raw.status == 200
    assert raw.json()["data"]["keys"] == ["db"]

    cli = bao_cli(stack, token, "kv list", "-format=json", "-mount=secret", "ci/acme/api")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == ["db"]

    listed = hvac_client(stack, token).secrets.kv.v2.list_secrets(path="ci/acme/api", mount_point="secret")
    assert listed["data"]["keys"] == ["db"]

    # Listing another repository's folder is denied either way.
    assert envoy.list("/v1/secret/metadata/ci/acme/web", jwt=token).status == 403
    assert envoy.get("/v1/secret/metadata/ci/acme/web?list=true", jwt=token).status == 403
    assert envoy.get("/v1/secret/metadata/ci?list=1", jwt=token).status == 403


# ------------------------------------------------------------------ denials


def test_a_denied_read_is_403_and_never_reaches_openbao(stack, mint_jwt, seeded):
    token = mint_jwt()
    mark = stack.bao_audit_mark()

    cli = bao_cli(stack, token, "kv get", "-format=json", "-mount=secret", "ci/acme/web/token")
    assert cli.returncode != 0
    assert "permission denied" in cli.stderr
    assert_no_secret(cli.stdout + cli.stderr, seeded, WEB_TOKEN)

    with pytest.raises(hvac.exceptions.Forbidden) as denied:
        hvac_client(stack, token).secrets.kv.v2.read_secret_version(
            path="ci/acme/web/token", mount_point="secret", raise_on_deleted_version=True
        )
    assert "permission denied" in str(denied.value)

    status, body = curl(stack, "/v1/secret/data/ci/acme/web/token", jwt=token)
    assert status == 403
    assert json.loads(body)["errors"] == ["permission denied"]
    assert json.loads(body)["request_id"]

    audited = stack.bao_audit_paths(since=mark)
    assert "secret/data/ci/acme/web/token" not in audited
    # The mount lookup the CLI makes first was allowed and did reach OpenBao.
    assert any(path.startswith("sys/internal/ui/mounts") for path in audited)


def test_unprotected_branches_and_contractors_are_forbidden(stack, mint_jwt, envoy, seeded):
    feature = mint_jwt(ref="refs/heads/feature-x", ref_protected="false")
    assert envoy.get("/v1/secret/data/ci/acme/api/db", jwt=feature).status == 403

    release = mint_jwt(environment="production")
    allowed = envoy.get("/v1/secret/data/prod/acme/api/db", jwt=release)
    assert allowed.status == 200
    assert allowed.json()["data"]["data"] == seeded[PROD_DB]

    contractor = mint_jwt(repository="acme/vendor-sync", environment="production")
    denied = envoy.get("/v1/secret/data/prod/acme/api/db", jwt=contractor)
    assert denied.status == 403
    assert_no_secret(denied.body, seeded, PROD_DB)


def test_no_identity_is_401_and_never_reaches_openbao(stack, envoy, seeded):
    mark = stack.bao_audit_mark()
    response = envoy.get("/v1/secret/data/ci/acme/api/db")
    assert response.status == 401
    assert response.json()["errors"] == ["missing client identity"]
    assert_no_secret(response.body, seeded, API_DB)
    assert "secret/data/ci/acme/api/db" not in stack.bao_audit_paths(since=mark)

    cli = bao_cli(stack, None, "kv get", "-mount=secret", "ci/acme/api/db")
    assert cli.returncode != 0
    assert "missing client identity" in cli.stderr


def test_an_invalid_jwt_is_rejected_by_envoy_before_the_filter(stack, envoy, mint_jwt):
    forged = mint_jwt()[:-8] + "AAAAAAAA"
    assert envoy.get("/v1/secret/data/ci/acme/api/db", jwt=forged).status == 401


def test_unwrap_is_its_own_action_and_denied_by_the_demo_policies(stack, mint_jwt, envoy, bao):
    wrapped = bao.request(
        "POST",
        "/v1/sys/wrapping/wrap",
        body={"marker": "wrapped-marker"},
        headers={"X-Vault-Wrap-TTL": "300"},
    )
    assert wrapped.status == 200
    wrapping_token = wrapped.json()["wrap_info"]["token"]
    token = mint_jwt()
    for method, target in [
        ("POST", "/v1/sys/wrapping/unwrap"),
        ("POST", "/v1/sys//wrapping/unwrap"),
        ("POST", "/v1/sys/wrapping/%75nwrap"),
        # The legacy route: reading cubbyhole/response with the wrapping token unwraps.
        ("GET", "/v1/cubbyhole/response"),
        ("GET", "/v1/cubbyhole//response"),
    ]:
        response = envoy.request(method, target, jwt=token, vault_token=wrapping_token)
        assert response.status == 403, target
        assert b"wrapped-marker" not in response.body
    # Nothing above consumed the token: OpenBao never saw those requests.
    assert bao.request("POST", "/v1/sys/wrapping/unwrap", vault_token=wrapping_token).status == 200


@pytest.mark.parametrize("namespace", ["root", "/root/", ""])
def test_the_root_namespace_by_any_name_is_the_root_namespace(stack, mint_jwt, envoy, seeded, namespace):
    token = mint_jwt()
    headers = {"X-Vault-Namespace": namespace}
    denied = envoy.get("/v1/secret/data/ci/acme/web/token", jwt=token, headers=headers)
    assert denied.status == 403
    assert_no_secret(denied.body, seeded, WEB_TOKEN)
    allowed = envoy.get("/v1/secret/data/ci/acme/api/db", jwt=token, headers=headers)
    assert allowed.status == 200, allowed.text
    assert allowed.json()["data"]["data"] == seeded[API_DB]
    nested = envoy.get("/v1/secret/data/ci/acme/web/token", jwt=token, headers={"X-Vault-Namespace": "root/x"})
    assert nested.status == 400


# ------------------------------------------------------------ path variants

DENIED_VARIANTS = [
    "/v1/secret/data/ci/acme/web%2Ftoken",
    "/v1/secret/data/ci/acme/web%2ftoken",
    "/v1/secret//data/ci/acme/web/token",
    "/v1/secret/data//ci/acme/web/token",
    "/v1/secret/data/./ci/acme/web/token",
    "/v1/secret/data/ci/acme/api/../web/token",
    "/v1/secret/data/ci/acme/api/%2e%2e/web/token",
    "/v1/secret/data/ci/acme/api/%2E%2E/web/token",
    "/v1/secret/data/ci/acme/web/token/",
    "/v1/secret/data/ci/acme/web/./token/",
    "/v1/secret/%64ata/ci/acme/web/token",
    "/v1/secret/data/ci/acme/%77eb/token",
    "/v1/SECRET/data/ci/acme/web/token",
    "/v1/secret/DATA/ci/acme/web/token",
    "/V1/secret/data/ci/acme/web/token",
    "/v1/secret/data/ci/ACME/web/token",
    "/v1/secret/metadata/ci/acme/web/token",
    "/v1/secret/subkeys/ci/acme/web/token",
    "/v1/secret/data/ci/acme/web/token?list=true",
    "/v1//secret/data/ci/acme/web/token",
    "/v1/./secret/data/ci/acme/web/token",
    "/v1/kv/../secret/data/ci/acme/web/token",
]


@pytest.mark.parametrize("target", DENIED_VARIANTS)
def test_path_variants_never_return_a_denied_secret(stack, mint_jwt, envoy, seeded, target):
    """acme/api may not read acme/web's token, however the path is spelled."""
    token = mint_jwt()
    for method in ("GET", "LIST"):
        response = envoy.request(method, target, jwt=token)
        assert response.status in (400, 403, 404, 405), (method, target, response.status, response.text)
        assert_no_secret(response.body, seeded, WEB_TOKEN)
    # Following a redirect must not help either: OpenBao never sees these.
    response = envoy.get(target, jwt=token)
    assert "location" not in response.headers


@pytest.mark.parametrize(
    "target",
    [
        "/v1/secret//data/ci/acme/api/db",
        "/v1/secret/data/./ci/acme/api/db",
        "/v1/secret/data/ci/acme/web/../api/db",
        "/v1/secret/%64ata/ci/acme/api/%64b",
    ],
)
def test_variants_of_an_allowed_path_are_served_canonically(stack, mint_jwt, envoy, seeded, target):
    """The filter forwards the canonical path, so OpenBao serves the secret it authorised
    (not a redirect the client would have to follow)."""
    response = envoy.get(target, jwt=mint_jwt())
    assert response.status == 200, response.text
    assert response.json()["data"]["data"] == seeded[API_DB]


def test_a_trailing_slash_is_authorised_as_the_secret_and_forwarded_as_sent(stack, mint_jwt, envoy, seeded):
    """OpenBao treats `db/` as a different (absent) key; the filter authorises it
    as `db` (never a looser resource) and leaves OpenBao's answer alone."""
    allowed = envoy.get("/v1/secret/data/ci/acme/api/db/", jwt=mint_jwt())
    assert allowed.status not in (401, 403), allowed.text
    denied = envoy.get("/v1/secret/data/ci/acme/web/token/", jwt=mint_jwt())
    assert denied.status == 403
    assert_no_secret(denied.body, seeded, WEB_TOKEN)


def test_refused_paths_say_why_in_vault_shape(stack, mint_jwt, envoy):
    token = mint_jwt()
    response = envoy.get("/v1/secret/data/ci/acme/api%2Fdb", jwt=token)
    assert response.status == 400
    assert response.json()["errors"] == ["invalid request path: encoded slash in path"]
    override = envoy.get(
        "/v1/secret/data/ci/acme/api/db", jwt=token, headers={"X-HTTP-Method-Override": "DELETE"}
    )
    assert override.status == 400
    assert envoy.request("TRACE", "/v1/secret/data/ci/acme/api/db", jwt=token).status in (400, 405)


def test_writes_are_denied_unless_a_policy_permits_them(stack, mint_jwt, envoy, seeded):
    token = mint_jwt()
    mark = stack.bao_audit_mark()
    response = envoy.request(
        "POST", "/v1/secret/data/ci/acme/api/db", jwt=token, body={"data": {"password": "overwritten"}}
    )
    assert response.status == 403
    assert "secret/data/ci/acme/api/db" not in stack.bao_audit_paths(since=mark)


# ------------------------------------------------------------ configuration


def test_an_invalid_policy_makes_envoy_refuse_to_start(make_stack):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["policies"] += '\n@id("broken-policy")\npermit(principal, action resource);\n'
    private = make_stack(plugin_config=config)
    with pytest.raises(stack_module.ProcessStartupError) as refused:
        private.start()
    assert refused.value.returncode not in (None, 0), "Envoy must exit, not hang"
    assert "configuration rejected" in refused.value.log_tail
    assert 'policy "broken-policy"' in refused.value.log_tail


def test_a_policy_that_does_not_type_check_makes_envoy_refuse_to_start(make_stack):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["policies"] += '\n@id("typo")\npermit(principal, action, resource) when { context.claims.repo == "x" };\n'
    private = make_stack(plugin_config=config)
    with pytest.raises(stack_module.ProcessStartupError) as refused:
        private.start()
    assert 'policy "typo"' in refused.value.log_tail


def policy_at_the_load_limits() -> str:
    """A policy just inside the lexical limits (32 brackets deep, 256 operators):
    the deepest recursion Cedar can be asked for inside the Wasm VM."""
    nested = "(" * 31 + "context.now > 0" + ")" * 31
    # `||` is left-associative; with the match last, every level is evaluated.
    chain = " || ".join([f'context.method == "M{i}"' for i in range(119)] + ['context.method == "GET"'])
    return (
        '\n@id("at-the-limits")\npermit(principal == Workload::"dev-bot", action == Action::"read", '
        f'resource in Path::"secret/prod") when {{ {nested} && ({chain}) }};\n'
    )


def test_a_policy_at_the_nesting_limits_loads_and_evaluates_in_the_wasm_vm(make_stack, seeded):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.HEADER_IDENTITY)
    config["policies"] += policy_at_the_load_limits()
    private = make_stack(plugin_config=config)
    private.start()
    header = stack_module.HEADER_IDENTITY["header"]
    status, body = curl(private, "/v1/secret/data/prod/acme/api/db", headers={header: "dev-bot"})
    assert status == 200, body
    assert json.loads(body)["data"]["data"] == seeded[PROD_DB]


def test_a_policy_past_the_nesting_limits_is_refused_by_name(make_stack):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.HEADER_IDENTITY)
    too_deep = "(" * 40 + "true" + ")" * 40
    config["policies"] += f'\n@id("too-deep")\npermit(principal, action, resource) when {{ {too_deep} }};\n'
    private = make_stack(plugin_config=config)
    with pytest.raises(stack_module.ProcessStartupError) as refused:
        private.start()
    assert 'policy "too-deep"' in refused.value.log_tail
    assert "nesting depth" in refused.value.log_tail


def test_header_identity_for_development(make_stack, seeded):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.HEADER_IDENTITY)
    config["policies"] += (
        '\n@id("dev-bot-reads-prod")\npermit(principal == Workload::"dev-bot", action == Action::"read",'
        ' resource in Path::"secret/prod");\n'
    )
    private = make_stack(plugin_config=config)
    private.start()
    header = stack_module.HEADER_IDENTITY["header"]

    def read(principal: str | None) -> tuple[int, str]:
        headers = {header: principal} if principal else {}
        return curl(private, "/v1/secret/data/prod/acme/api/db", headers=headers)

    status, body = read("dev-bot")
    assert status == 200
    assert json.loads(body)["data"]["data"] == seeded[PROD_DB]
    assert read("someone-else")[0] == 403
    assert read(None)[0] == 401
    # Without claims, the CI folders stay closed even to a named principal:
    # the protected-branch forbid cannot be satisfied.
    ci = curl(private, "/v1/secret/data/ci/acme/api/db", headers={header: "repo:acme/api:ref:refs/heads/main"})
    assert ci[0] == 403


# ------------------------------------------------------------ no token leaks


def test_the_vault_token_never_reaches_envoys_logs(stack, mint_jwt, envoy):
    # Make sure at least one allowed, one denied and one refused request were logged.
    token = mint_jwt()
    envoy.get("/v1/secret/data/ci/acme/api/db", jwt=token)
    envoy.get("/v1/secret/data/ci/acme/web/token", jwt=token)
    envoy.get("/v1/secret/data/ci%2Fx", jwt=token)
    envoy.get("/v1/secret/data/ci/acme/api/db")
    stack.access_log_lines(at_least=4)
    decision_lines = [
        line for line in stack.path("envoy.log").read_text().splitlines() if "secretgate decision=" in line
    ]
    assert any("decision=deny" in line for line in decision_lines)
    assert any("decision=allow" in line for line in decision_lines)
    for name in ("envoy.log", "access.log", "envoy.stdout.log"):
        path = stack.path(name)
        if path.exists():
            assert stack.root_token not in path.read_text(errors="replace"), name

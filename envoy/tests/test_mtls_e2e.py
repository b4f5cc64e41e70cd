"""The mtls identity source end to end: Envoy terminates TLS, requires a client
certificate from the stack's development CA, and secretgate makes the
certificate's URI SAN (a SPIFFE ID) the Cedar principal. Driven with curl and
hvac presenting real client certificates."""

from __future__ import annotations

import json
import subprocess
import time
from urllib.parse import quote

import hvac
import pytest
import requests

import stack as stack_module

PROD_DB = "secret/prod/acme/api/db"
PROD_DB_URL_PATH = "/v1/secret/data/prod/acme/api/db"
ALLOWED_ID = "spiffe://acme.test/ci/api"
OTHER_ID = "spiffe://acme.test/ci/web"

# The demo policies forbid claim-less callers (mTLS has no claims) from secret/ci,
# so the SPIFFE ID is granted production instead.
SPIFFE_POLICY = f"""
@id("spiffe-ci-api-reads-production")
permit (
  principal == Workload::"{ALLOWED_ID}",
  action == Action::"read",
  resource in Path::"secret/prod"
);
"""


@pytest.fixture(scope="module")
def mtls_stack(tmp_path_factory):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.MTLS_IDENTITY)
    config["policies"] += SPIFFE_POLICY
    with stack_module.Stack(tmp_path_factory.mktemp("mtls-stack"), plugin_config=config, mtls=True) as running:
        yield running


@pytest.fixture(scope="module")
def seeded(mtls_stack) -> dict[str, dict]:
    return {f"{s['mount']}/{s['path']}": s["data"] for s in mtls_stack.seed()}


def curl(stack, cert: stack_module.CertFiles | None, url: str) -> subprocess.CompletedProcess:
    """curl verifying Envoy with the dev CA and presenting ``cert`` (None: no client certificate)."""
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", str(stack.ca_cert)]
    if cert is not None:
        argv += ["--cert", str(cert.cert), "--key", str(cert.key)]
    argv += ["-H", f"X-Vault-Token: {stack.root_token}", url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def curl_read(stack, cert: stack_module.CertFiles | None) -> tuple[int, str]:
    result = curl(stack, cert, stack.envoy_url + PROD_DB_URL_PATH)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def hvac_read(stack, cert: stack_module.CertFiles | None) -> dict:
    client = hvac.Client(
        url=stack.envoy_url,
        token=stack.root_token,
        verify=str(stack.ca_cert),
        cert=(str(cert.cert), str(cert.key)) if cert else None,
    )
    return client.secrets.kv.v2.read_secret_version(
        path="prod/acme/api/db", mount_point="secret", raise_on_deleted_version=True
    )


def decision_logged(stack, *parts: str, timeout: float = 10.0) -> list[str]:
    """Envoy's secretgate decision lines containing every one of ``parts``; waits for Envoy's log flush."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            line
            for line in stack.path("envoy.log").read_text().splitlines()
            if "secretgate decision=" in line and all(part in line for part in parts)
        ]
        if lines or time.monotonic() >= deadline:
            return lines
        time.sleep(0.1)


def envoy_stat(stack, pattern: str) -> int:
    """The one Envoy counter matching regex ``pattern`` (counters are live, unlike the flushed logs)."""
    stats = subprocess.run(
        ["curl", "-sS", f"{stack.admin_url}/stats?filter={quote(pattern + '$')}"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    values = [int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line.strip()]
    assert len(values) == 1, stats
    return values[0]


def test_the_permitted_spiffe_id_reads_the_secret_with_curl_and_hvac(mtls_stack, seeded):
    assert mtls_stack.envoy_url.startswith("https://127.0.0.1:")
    cert = mtls_stack.issue_client_cert("ci-api", ALLOWED_ID)

    status, body = curl_read(mtls_stack, cert)
    assert status == 200, body
    assert json.loads(body)["data"]["data"] == seeded[PROD_DB]

    assert hvac_read(mtls_stack, cert)["data"]["data"] == seeded[PROD_DB]

    # The principal Cedar saw is the certificate's SPIFFE ID.
    principal = f'principal=Workload::"{ALLOWED_ID}"'
    assert decision_logged(mtls_stack, "decision=allow", principal, 'policies=["spiffe-ci-api-reads-production"]')


def test_another_spiffe_id_is_403_and_never_reaches_openbao(mtls_stack, seeded):
    cert = mtls_stack.issue_client_cert("ci-web", OTHER_ID)
    mark = mtls_stack.bao_audit_mark()

    status, body = curl_read(mtls_stack, cert)
    assert status == 403
    assert json.loads(body)["errors"] == ["permission denied"]
    assert json.loads(body)["request_id"]
    assert seeded[PROD_DB]["password"] not in body

    with pytest.raises(hvac.exceptions.Forbidden) as denied:
        hvac_read(mtls_stack, cert)
    assert "permission denied" in str(denied.value)

    assert mtls_stack.bao_audit_entries(since=mark) == []
    assert decision_logged(mtls_stack, "decision=deny", f'principal=Workload::"{OTHER_ID}"')


@pytest.mark.parametrize(
    "name, uri_san, error",
    [
        # Trusted CA, but the URI SAN is not a SPIFFE ID.
        ("not-spiffe", "https://acme.test/x", "invalid client identity"),
        # Trusted CA, no URI SAN at all: Envoy has no uri_san_peer_certificate to give.
        ("no-uri-san", None, "missing client identity"),
    ],
)
def test_a_certificate_without_a_spiffe_id_is_401(mtls_stack, seeded, name, uri_san, error):
    cert = mtls_stack.issue_client_cert(name, uri_san)
    mark = mtls_stack.bao_audit_mark()

    status, body = curl_read(mtls_stack, cert)
    assert status == 401
    assert json.loads(body)["errors"] == [error]
    assert seeded[PROD_DB]["password"] not in body

    with pytest.raises(hvac.exceptions.Unauthorized):
        hvac_read(mtls_stack, cert)

    assert mtls_stack.bao_audit_entries(since=mark) == []


@pytest.mark.parametrize("client", ["no certificate", "certificate from another CA"])
def test_a_client_without_a_trusted_certificate_fails_the_tls_handshake(mtls_stack, tmp_path, client):
    if client == "no certificate":
        cert, refusal_stat = None, r"^listener\..*\.ssl\.fail_verify_no_cert"
    else:
        # The permitted SPIFFE ID, signed by a CA Envoy does not trust.
        cert = stack_module.DevPki.load_or_create(tmp_path).issue_client("forged", ALLOWED_ID)
        refusal_stat = r"^listener\..*\.ssl\.fail_verify_error"
    refusals = envoy_stat(mtls_stack, refusal_stat)
    http_requests = envoy_stat(mtls_stack, r"^http\.secretgate\.downstream_rq_total")
    mark = mtls_stack.bao_audit_mark()

    result = curl(mtls_stack, cert, mtls_stack.envoy_url + PROD_DB_URL_PATH)
    # TLS 1.3: the client may finish its side of the handshake and only see the
    # server's alert (or a reset) when it sends or reads: 35, 55 or 56.
    assert result.returncode in (35, 55, 56), (result.returncode, result.stderr)
    assert result.stdout.strip() == "000"

    with pytest.raises(requests.exceptions.ConnectionError):
        hvac_read(mtls_stack, cert)

    assert envoy_stat(mtls_stack, refusal_stat) == refusals + 2
    # Refused in the handshake: no HTTP request existed, so neither the filter nor OpenBao saw one.
    assert mtls_stack.bao_audit_entries(since=mark) == []
    assert envoy_stat(mtls_stack, r"^http\.secretgate\.downstream_rq_total") == http_requests

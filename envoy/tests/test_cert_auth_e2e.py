"""OpenBao's cert auth behind the gate, end to end: Envoy terminates mTLS and hands
the certificate it verified to OpenBao in a header only Envoy can set
(``Stack(mtls=True, forward_client_cert=True)``, see ``stacklib/forwarded_cert.py``),
so ``bao login -method=cert`` and hvac's cert login work through the gate, the
secretgate filter judges the login as action ``login`` by policy, and its audit
record names the workload without the token or the certificate. A header a client
forges, through Envoy or straight to OpenBao, logs nobody in as the forged identity.

Real Envoy, real OpenBao, the real bao CLI, hvac and requests with real client
certificates from the stack's development CA."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import stack as stack_module
from conftest import assert_no_secret_in_files
from stacklib.forwarded_cert import CLIENT_CERT_HEADER, ENVOY_SOURCE_ADDRESS

LOGIN_PATH = "/v1/auth/cert/login"
PROD_DB_URL_PATH = "/v1/secret/data/prod/acme/api/db"
PROD_DB = "secret/prod/acme/api/db"

API_ID = "spiffe://acme.test/ci/api"  # OpenBao role ci-api: may read the production database secret
WEB_ID = "spiffe://acme.test/ci/web"  # OpenBao role ci-web: default policy only
UNREGISTERED_ID = "spiffe://acme.test/ci/batch"  # trusted by Envoy, matches no OpenBao role
UNPERMITTED_ID = "spiffe://acme.test/ci/intruder"  # has an OpenBao role, but no permit to log in

LOGIN_PERMIT = "workloads-log-in-with-their-certificate"
POLICIES = f"""
@id("{LOGIN_PERMIT}")
permit (principal is Workload, action == Action::"login", resource == Endpoint::"auth/cert/login")
when {{ [Workload::"{API_ID}", Workload::"{WEB_ID}", Workload::"{UNREGISTERED_ID}"].contains(principal) }};

@id("spiffe-ci-api-reads-production")
permit (principal == Workload::"{API_ID}", action == Action::"read", resource in Path::"secret/prod");
"""
PROD_READER_POLICY = 'path "secret/data/prod/acme/api/db" { capabilities = ["read"] }'


class Issued:
    """What the run handed out that must never reach a log: tokens, and the certificates' bodies."""

    def __init__(self):
        self.tokens: list[str] = []

    def token(self, value: str) -> str:
        assert value.startswith("s."), value
        self.tokens.append(value)
        return value


@pytest.fixture(scope="module")
def issued() -> Issued:
    return Issued()


@pytest.fixture(scope="module")
def cert_stack(tmp_path_factory, issued):
    """mTLS stack forwarding the client certificate, with cert auth enabled in OpenBao: the dev CA is
    trusted by roles bound to one SPIFFE ID each (``allowed_uri_sans``)."""
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.MTLS_IDENTITY)
    config["policies"] += POLICIES
    run_dir = tmp_path_factory.mktemp("cert-auth-stack")
    with stack_module.Stack(run_dir, plugin_config=config, mtls=True, forward_client_cert=True) as running:
        must(running, "POST", "sys/auth/cert", {"type": "cert"})
        must(running, "PUT", "sys/policies/acl/prod-api-reader", {"policy": PROD_READER_POLICY})
        for role, spiffe_id, policies in (
            ("ci-api", API_ID, ["prod-api-reader"]),
            ("ci-web", WEB_ID, []),
            ("ci-intruder", UNPERMITTED_ID, ["prod-api-reader"]),
        ):
            must(running, "POST", f"auth/cert/certs/{role}", {
                "certificate": running.pki.ca_pem,
                "allowed_uri_sans": [spiffe_id],
                "token_policies": policies,
            })  # fmt: skip
        yield running
    assert_no_secret_in_files(running, issued.tokens)
    # The certificates' own files are in the run dir; what Envoy and OpenBao wrote must not hold them.
    for name in ("api", "web", "batch"):
        body = certificate_body(running.path(f"mtls-client-{name}.pem"))
        for log in ("access.log", "envoy.log", "bao.log", "bao-audit.log"):
            text = running.path(log).read_text()
            assert body not in text and quote(body, safe="") not in text, f"{name}'s certificate is in {log}"


@pytest.fixture(scope="module")
def certs(cert_stack) -> dict[str, stack_module.CertFiles]:
    return {
        "api": cert_stack.issue_client_cert("api", API_ID),
        "web": cert_stack.issue_client_cert("web", WEB_ID),
        "batch": cert_stack.issue_client_cert("batch", UNREGISTERED_ID),
        "intruder": cert_stack.issue_client_cert("intruder", UNPERMITTED_ID),
    }


def must(stack, method: str, path: str, body: dict | None = None) -> dict:
    status, reply = stack.bao_request(method, path, body)
    assert status < 300, (method, path, status, reply)
    return reply


def certificate_body(pem_file: Path) -> str:
    """The certificate's base64 body on one line: present in any copy of it, PEM or forwarded."""
    return "".join(line for line in pem_file.read_text().splitlines() if not line.startswith("-----"))[:60]


def forged_header(cert: stack_module.CertFiles) -> str:
    """``cert`` as Envoy would forward it: the URL-encoded PEM."""
    return quote(cert.cert.read_text(), safe="")


def envoy_login(stack, cert: stack_module.CertFiles, headers: dict | None = None) -> requests.Response:
    """POST auth/cert/login through Envoy, presenting ``cert`` in the TLS handshake."""
    return requests.post(
        stack.envoy_url + LOGIN_PATH,
        json={},
        headers=headers or {},
        cert=(str(cert.cert), str(cert.key)),
        verify=str(stack.ca_cert),
        timeout=30,
    )


def direct_login(port: int, source: str, headers: dict) -> tuple[int, dict]:
    """POST auth/cert/login straight to an OpenBao listener, from loopback address ``source``."""
    connection = http.client.HTTPConnection(stack_module.LOOPBACK, port, timeout=10, source_address=(source, 0))
    try:
        connection.request("POST", LOGIN_PATH, body="{}", headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def audit_records(stack, since: int = 0) -> list[dict]:
    return [json.loads(line["audit"]) for line in stack.access_log_lines()[since:] if line.get("audit")]


def records_where(stack, since: int, matches, timeout: float = 10.0) -> list[dict]:
    """The records since access-log line ``since`` that ``matches``; waits (Envoy flushes every 100 ms) for one."""
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in audit_records(stack, since) if matches(r)]
        if records or time.monotonic() >= deadline:
            return records
        time.sleep(0.1)


def login_records(stack, since: int, principal: str) -> list[dict]:
    """The records of cert logins by ``principal`` since access-log line ``since``."""
    return records_where(
        stack,
        since,
        # The bao CLI logs in with PUT, hvac and requests with POST.
        lambda r: r["method"] in ("POST", "PUT")
        and r["path"] == LOGIN_PATH
        and r["principal"] == {"type": "Workload", "id": principal},
    )


def keyed(value: str) -> str:
    """A value as the dev stack's audit records show it."""
    return "hmac-sha256:" + hmac.new(stack_module.DEV_AUDIT_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def read_prod_db(stack, cert: stack_module.CertFiles, token: str) -> dict:
    client = hvac.Client(
        url=stack.envoy_url, token=token, verify=str(stack.ca_cert), cert=(str(cert.cert), str(cert.key))
    )
    return client.secrets.kv.v2.read_secret_version(
        path="prod/acme/api/db", mount_point="secret", raise_on_deleted_version=True
    )


def test_bao_login_method_cert_through_the_gate_returns_a_token_that_works(cert_stack, certs, issued, tmp_path):
    seeded = {f"{s['mount']}/{s['path']}": s["data"] for s in cert_stack.seed()}
    before = len(cert_stack.access_log_lines())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=cert_stack.envoy_url, HOME=str(tmp_path))
    login = subprocess.run(
        [
            stack_module.bao_binary(), "login", "-method=cert", "-no-store", "-format=json",
            f"-ca-cert={cert_stack.ca_cert}", f"-client-cert={certs['api'].cert}", f"-client-key={certs['api'].key}",
            "name=ci-api",
        ],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    auth = json.loads(login.stdout)["auth"]
    token = issued.token(auth["client_token"])
    # OpenBao matched the certificate Envoy forwarded to the role bound to its SPIFFE ID.
    assert auth["metadata"]["cert_name"] == "ci-api"
    assert auth["metadata"]["common_name"] == "api"
    assert "prod-api-reader" in auth["token_policies"]
    assert not list(tmp_path.glob(".*token*")), "-no-store kept the token out of HOME"

    # The token is usable through the gate, for what its OpenBao policy and the Cedar policy allow.
    assert read_prod_db(cert_stack, certs["api"], token)["data"]["data"] == seeded[PROD_DB]

    [record] = login_records(cert_stack, before, API_ID)
    assert record["decision"] == "allow"
    assert record["action"] == "login"
    assert record["resource"] == 'Endpoint::"auth/cert/login"'
    assert record["policies"] == [LOGIN_PERMIT]
    assert record["response_status"] == 200
    assert record["response_body"]["json"]["auth"]["client_token"] == keyed(token)
    text = json.dumps(record)
    assert token not in text and auth["accessor"] not in text
    assert certificate_body(certs["api"].cert) not in text

    # The read that used the token is recorded with the token's HMAC only.
    [read] = records_where(cert_stack, before, lambda r: r["path"] == PROD_DB_URL_PATH)
    assert read["decision"] == "allow" and read["principal"] == {"type": "Workload", "id": API_ID}
    assert read["token_hmac"] == keyed(token)
    assert token not in json.dumps(read)


def test_hvac_cert_login_through_the_gate(cert_stack, certs, issued):
    client = hvac.Client(url=cert_stack.envoy_url, verify=str(cert_stack.ca_cert))
    # No cacert: hvac takes the client's verify= (its cacert must be PEM text, which requests cannot use).
    reply = client.auth.cert.login(name="ci-api", cert_pem=str(certs["api"].cert), key_pem=str(certs["api"].key))
    token = issued.token(reply["auth"]["client_token"])
    assert reply["auth"]["metadata"]["cert_name"] == "ci-api"
    assert client.token == token
    looked_up = hvac.Client(url=cert_stack.bao_url, token=token).auth.token.lookup_self()["data"]
    assert looked_up["path"] == "auth/cert/login"
    assert "prod-api-reader" in looked_up["policies"]


def test_a_certificate_header_the_client_sends_is_replaced_by_the_one_it_presented(cert_stack, certs, issued):
    """ci-web presents its own certificate and sends ci-api's as the header:
    Envoy drops the client's copy, so OpenBao sees ci-web's certificate."""
    before = len(cert_stack.access_log_lines())
    forged = {CLIENT_CERT_HEADER: forged_header(certs["api"])}
    login = envoy_login(cert_stack, certs["web"], forged)
    assert login.status_code == 200, login.text
    auth = login.json()["auth"]
    issued.token(auth["client_token"])
    assert auth["metadata"]["cert_name"] == "ci-web"
    assert auth["metadata"]["common_name"] == "web"
    assert "prod-api-reader" not in auth["token_policies"]
    # The gate judged the workload of the TLS handshake, not the header.
    [record] = login_records(cert_stack, before, WEB_ID)
    assert record["decision"] == "allow" and record["response_status"] == 200


def test_a_forged_header_without_a_client_certificate_never_becomes_a_request(cert_stack, certs):
    mark = cert_stack.bao_audit_mark()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(
            cert_stack.envoy_url + LOGIN_PATH,
            json={},
            headers={CLIENT_CERT_HEADER: forged_header(certs["api"])},
            verify=str(cert_stack.ca_cert),
            timeout=30,
        )
    # Envoy requires a client certificate: the handshake fails, so no request reached OpenBao.
    assert cert_stack.bao_audit_entries(since=mark) == []


def test_a_forged_header_from_a_certificate_no_role_accepts_logs_nobody_in(cert_stack, certs):
    login = envoy_login(cert_stack, certs["batch"], {CLIENT_CERT_HEADER: forged_header(certs["api"])})
    assert login.status_code == 400, login.text
    assert "auth" not in login.json() or not login.json()["auth"]
    assert login.json()["errors"] == ["no chain matching all constraints could be found for this login certificate"]


def test_the_gate_refuses_a_login_no_policy_permits_before_openbao_sees_it(cert_stack, certs):
    mark = cert_stack.bao_audit_mark()
    before = len(cert_stack.access_log_lines())
    login = envoy_login(cert_stack, certs["intruder"])
    assert login.status_code == 403
    assert login.json()["errors"] == ["permission denied"]
    assert cert_stack.bao_audit_entries(since=mark) == []
    [record] = login_records(cert_stack, before, UNPERMITTED_ID)
    assert record["decision"] == "deny" and record["action"] == "login"


NO_CERTIFICATE = "no client certificate found"
NOT_FORWARDED = "missing x-forwarded-for header and configured to reject when not present"
NOT_ENVOY = "client address not authorized for x-forwarded-for and configured to reject connection"


@pytest.mark.parametrize(
    "listener, source, forwarded_for, refusal",
    [
        # The control: OpenBao does take the header from Envoy's address, with X-Forwarded-For.
        ("forwarding", ENVOY_SOURCE_ADDRESS, True, None),
        # From Envoy's address but without X-Forwarded-For: refused (it would be dropped without reject_not_present).
        ("forwarding", ENVOY_SOURCE_ADDRESS, False, NOT_FORWARDED),
        # Anyone else on the machine reaching the forwarding listener: refused.
        ("forwarding", stack_module.LOOPBACK, True, NOT_ENVOY),
        ("forwarding", stack_module.LOOPBACK, False, NOT_FORWARDED),
        # The dev listener has no forwarded-certificate setting: the header means nothing there.
        ("dev", ENVOY_SOURCE_ADDRESS, True, NO_CERTIFICATE),
    ],
)
def test_straight_to_openbao_the_header_counts_only_from_envoys_address(
    cert_stack, certs, issued, listener, source, forwarded_for, refusal
):
    port = cert_stack.bao_forwarded_port if listener == "forwarding" else cert_stack.bao_port
    headers = {CLIENT_CERT_HEADER: forged_header(certs["api"])}
    if forwarded_for:
        headers["X-Forwarded-For"] = "198.51.100.7"
    status, reply = direct_login(port, source, headers)
    if refusal is None:
        assert status == 200, reply
        issued.token(reply["auth"]["client_token"])
        assert reply["auth"]["metadata"]["cert_name"] == "ci-api"
    else:
        assert status == 400, reply
        assert reply["errors"] == [refusal]


def test_openbao_cannot_read_envoys_x_forwarded_client_cert_value(cert_stack, certs):
    """Why the stack forwards %DOWNSTREAM_PEER_CERT% and not Envoy's XFCC header: the value Envoy's
    ``forward_client_cert_details: SANITIZE_SET`` with ``cert: true`` writes, sent from Envoy's
    address, is refused by OpenBao's URL+PEM decoders (the PEM does not start a line there)."""
    pem = certs["api"].cert.read_text()
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    xfcc = f'Hash={hashlib.sha256(der).hexdigest()};Cert="{quote(pem, safe="")}"'
    headers = {CLIENT_CERT_HEADER: xfcc, "X-Forwarded-For": "198.51.100.7"}
    status, reply = direct_login(cert_stack.bao_forwarded_port, ENVOY_SOURCE_ADDRESS, headers)
    assert status == 400, reply
    assert reply["errors"] == ["failed to decode PEM certificate"]

"""The client's address and request id end to end: headers a client writes
(X-Forwarded-For, X-Real-IP, Forwarded, X-Request-Id) must not become
Cedar's context.source_ip, nor the audit record's source_address or
request_id. Real Envoy and OpenBao, with the shipped HttpConnectionManager
options (envoy/stacklib/envoy_config.py CLIENT_ADDRESS_OPTIONS: use_remote_address)."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urlsplit

import pytest
import yaml

import stack as stack_module
import stacklib.envoy_config
from conftest import RawResponse, assert_no_secret_in_files

PRINCIPAL_HEADER = stack_module.HEADER_IDENTITY["header"]
PROD_DB = "/v1/secret/data/prod/acme/api/db"
PROD_DB_AUDITED = "secret/data/prod/acme/api/db"  # as OpenBao's audit log names it
# Two principals, one rule each: reads only from 10.0.0.0/8, or only from loopback.
ADDRESS_POLICIES = """
@id("net-bot-reads-from-10-8")
permit (principal == Workload::"net-bot", action == Action::"read", resource in Path::"secret/prod")
when { context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("loop-bot-reads-from-loopback")
permit (principal == Workload::"loop-bot", action == Action::"read", resource in Path::"secret/prod")
when { context.source_ip.isInRange(ip("127.0.0.1/32")) };
"""
CLIENT_ID = "client-chosen-id"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Ways a client claims another address. Lists, not dicts: a header may repeat.
FORGED_ADDRESSES = {
    "xff": [("X-Forwarded-For", "10.1.2.3")],
    "xff with several entries": [("X-Forwarded-For", "10.9.9.9, 10.1.2.3")],
    "xff over several headers": [("X-Forwarded-For", "10.9.9.9"), ("X-Forwarded-For", "10.1.2.3")],
    "xff with a port": [("X-Forwarded-For", "10.1.2.3:443")],
    "x-real-ip": [("X-Real-IP", "10.1.2.3")],
    "forwarded": [("Forwarded", "for=10.1.2.3")],
    "x-envoy-external-address": [("X-Envoy-External-Address", "10.1.2.3")],
    "all at once": [
        ("X-Forwarded-For", "10.1.2.3"),
        ("X-Real-IP", "10.1.2.3"),
        ("Forwarded", "for=10.1.2.3;proto=http"),
        ("X-Envoy-External-Address", "10.1.2.3"),
        ("X-Envoy-Internal", "true"),
    ],
}


def address_config() -> dict:
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.HEADER_IDENTITY)
    config["policies"] = ADDRESS_POLICIES
    return config


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A private stack with the shipped Envoy options, header identity and ADDRESS_POLICIES."""
    with stack_module.Stack(tmp_path_factory.mktemp("forwarded-stack"), plugin_config=address_config()) as running:
        yield running
    assert_no_secret_in_files(running)


def secret_values(stack: stack_module.Stack) -> list[str]:
    (prod,) = [s["data"] for s in stack.seed() if (s["mount"], s["path"]) == ("secret", "prod/acme/api/db")]
    return list(prod.values())


def send(stack: stack_module.Stack, principal: str | None, headers: list[tuple[str, str]]) -> tuple[RawResponse, dict, dict]:
    """GET the prod secret through Envoy with ``headers`` sent exactly as listed (repeats kept);
    returns the response, its access-log line and the filter's audit record."""
    before = len(stack.access_log_lines())
    url = urlsplit(stack.envoy_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.putrequest("GET", PROD_DB, skip_accept_encoding=True)
        connection.putheader("X-Vault-Token", stack.root_token)
        if principal is not None:
            connection.putheader(PRINCIPAL_HEADER, principal)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        response = RawResponse(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
    finally:
        connection.close()
    lines = stack.access_log_lines(at_least=before + 1)
    assert len(lines) == before + 1, "one access-log line per request"
    line = lines[-1]
    return response, line, json.loads(line["audit"])


def assert_from_loopback(record: dict) -> None:
    assert record["source_address"].startswith("127.0.0.1:"), record["source_address"]


def test_a_forged_client_address_does_not_satisfy_an_address_policy(gated):
    values = secret_values(gated)
    mark = gated.bao_audit_mark()
    for name, headers in FORGED_ADDRESSES.items():
        response, _, record = send(gated, "net-bot", headers)
        assert response.status == 403, f"{name}: {response.text}"
        assert response.json()["errors"] == ["permission denied"], name
        assert not any(value in response.text for value in values), f"{name}: the secret leaked"
        assert record["decision"] == "deny" and record["principal"]["id"] == "net-bot", name
        assert_from_loopback(record)
    entries = gated.bao_audit_entries(since=mark)
    assert PROD_DB_AUDITED not in gated.bao_audit_paths(since=mark), "a denied read reached OpenBao"
    assert not entries, f"OpenBao saw requests it should not have: {[e['request'].get('path') for e in entries]}"


def test_the_peer_address_still_decides_whatever_the_headers_say(gated):
    values = secret_values(gated)
    mark = gated.bao_audit_mark()
    for name, headers in FORGED_ADDRESSES.items():
        response, _, record = send(gated, "loop-bot", headers)
        assert response.status == 200, f"{name}: {response.text}"
        assert list(response.json()["data"]["data"].values()) == values, name
        assert record["decision"] == "allow" and record["policies"] == ["loop-bot-reads-from-loopback"], name
        assert_from_loopback(record)
    assert PROD_DB_AUDITED in gated.bao_audit_paths(since=mark), "the allowed reads reached OpenBao"


# Ways a client names its own request id, alone and next to a forged address.
CLIENT_REQUEST_IDS = {
    "x-request-id": [("X-Request-Id", CLIENT_ID)],
    "lower case": [("x-request-id", CLIENT_ID)],
    "twice": [("X-Request-Id", CLIENT_ID), ("X-Request-Id", CLIENT_ID)],
    "with x-envoy-internal": [("X-Request-Id", CLIENT_ID), ("X-Envoy-Internal", "true")],
    "with a forged xff": [("X-Request-Id", CLIENT_ID), ("X-Forwarded-For", "10.1.2.3")],
}


def test_a_client_sent_request_id_is_never_the_records_id(gated):
    seen = set()
    for principal, status in [("loop-bot", 200), ("net-bot", 403), (None, 401)]:
        for name, headers in CLIENT_REQUEST_IDS.items():
            case = f"{status} {name}"
            response, line, record = send(gated, principal, headers)
            assert response.status == status, f"{case}: {response.text}"
            assert record["request_id"] != CLIENT_ID, case
            assert UUID.match(record["request_id"]), f"{case}: {record['request_id']!r} is not Envoy's UUID"
            assert line["request_id"] == record["request_id"], f"{case}: Envoy and the filter disagree"
            if status != 200:
                assert response.json()["request_id"] == record["request_id"], case
            assert CLIENT_ID not in json.dumps(line) and CLIENT_ID not in response.text, case
            assert_from_loopback(record)
            seen.add(record["request_id"])
    assert len(seen) == 3 * len(CLIENT_REQUEST_IDS), "every request gets an id of its own"


def test_the_shipped_connection_manager_trusts_the_peer(gated):
    """The options behind the tests above, as Envoy loaded them. An empty
    internal_address_config would make loopback internal again (see the next test)."""
    config = yaml.safe_load(gated.path("envoy.yaml").read_text())
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    options = manager["typed_config"]
    assert options["use_remote_address"] is True
    assert options.get("xff_num_trusted_hops", 0) == 0
    assert options.get("preserve_external_request_id", False) is False
    assert "internal_address_config" not in options
    assert "original_ip_detection_extensions" not in options


@pytest.mark.parametrize(
    "options, forged_address_allowed, client_id_kept",
    [
        # Envoy's default, what the shipped configuration used to be.
        ({}, True, True),
        # use_remote_address with an explicitly empty internal_address_config:
        # Envoy falls back to its old list, in which loopback is internal.
        ({"use_remote_address": True, "internal_address_config": {}}, False, True),
        # A trusted hop (a load balancer) that the client bypasses: it writes the trusted entry.
        ({"use_remote_address": True, "xff_num_trusted_hops": 1}, True, False),
    ],
    ids=["without-use_remote_address", "with-an-empty-internal_address_config", "with-a-bypassed-trusted-hop"],
)
def test_without_the_shipped_options_the_client_chooses(make_stack, monkeypatch, options, forged_address_allowed, client_id_kept):
    """What the shipped options prevent, shown with the same Envoy: the attack is real."""
    # Where the Envoy configuration is built (stack.py only re-exports it).
    monkeypatch.setattr(stacklib.envoy_config, "CLIENT_ADDRESS_OPTIONS", options)
    private = make_stack(plugin_config=address_config())
    private.start()

    response, _, record = send(private, "net-bot", [("X-Forwarded-For", "10.1.2.3")])
    assert (response.status == 200) == forged_address_allowed, response.text
    assert (record["source_address"] == "10.1.2.3:0") == forged_address_allowed, record["source_address"]

    response, _, record = send(private, "loop-bot", [("X-Request-Id", CLIENT_ID)])
    assert response.status == 200
    assert (record["request_id"] == CLIENT_ID) == client_id_kept, record["request_id"]

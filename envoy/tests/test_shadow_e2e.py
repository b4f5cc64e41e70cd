"""Shadow policy sets with real Envoy and OpenBao: a candidate policy set is
fetched like the live bundle and evaluated on every request next to the live
set, its verdict written to the audit record, and it never changes what a
client gets. Promoting it is a file move on the bundle server."""

from __future__ import annotations

import json
import os

import pytest

import stack as stack_module
from bundle_server import bundle_bytes
from policy_change_support import (
    POLICY_FILES,
    audit_records,
    bao_cli,
    curl,
    eventually,
    hvac_client,
    policies_copy,
    record_with_id,
    wait_records,
)

FORBID_ID = "shadow-forbids-acme-api"
FORBID_API = f"""
@id("{FORBID_ID}")
forbid (principal, action, resource in Path::"secret/ci/acme/api");
"""
API_DB = "/v1/secret/data/ci/acme/api/db"
WEB_TOKEN = "/v1/secret/data/ci/acme/web/token"
BAD_PATH = "/v1/secret/data/ci%2Facme/api/db"
DEMO_POLICY_COUNT = 6
WEB = {"repository": "acme/web"}


def inline_config() -> dict:
    return stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)


def revision_of(directory) -> str:
    """The revision envoy/bundle_server.py gives the bundle it serves from ``directory``."""
    return json.loads(bundle_bytes(directory))["revision"]


def envoy_log(running) -> str:
    return running.path("envoy.log").read_text()


def held_by_openbao(running, path: str) -> dict:
    """What OpenBao itself holds at a KV v2 path (read directly, root token, bypassing Envoy)."""
    status, reply = running.bao_request("GET", path.removeprefix("/v1/"))
    assert status == 200, reply
    return reply["data"]["data"]


def test_a_shadow_that_denies_changes_nothing_for_clients_and_the_record_says_what_it_would_have_done(
    make_stack, tmp_path
):
    shadow = policies_copy(tmp_path / "shadow", FORBID_API)
    running = make_stack(stack_module.with_shadow(inline_config()), shadow_dir=shadow).start()
    running.wait_shadow_loaded()
    revision = revision_of(shadow)
    eventually(
        lambda: f"secretgate: shadow loaded (revision {revision}, {DEMO_POLICY_COUNT + 1} policies)" in envoy_log(running),
        10,
        "the shadow's log line",
    )
    held = held_by_openbao(running, API_DB)
    assert held == {"password": "FAKE-ci-acme-api-db-pw-3b1f"}
    openbao_mark = running.bao_audit_mark()
    jwt = running.mint_jwt()

    # Three real clients read the secret the shadow would refuse: all get it.
    cli = bao_cli(running, jwt, "kv get", "-format=json", "-mount=secret", "ci/acme/api/db")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["data"]["data"] == held
    status, body, curl_id = curl(running, API_DB, jwt)
    assert status == 200, body
    assert json.loads(body)["data"]["data"] == held
    hvac_ids: list[str] = []
    read = hvac_client(running, jwt, hvac_ids).secrets.kv.v2.read_secret_version(
        path="ci/acme/api/db", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == held
    # The shadow agrees on another repository's own read, and on a deny.
    status, _, web_id = curl(running, WEB_TOKEN, running.mint_jwt(WEB))
    assert status == 200
    status, body, denied_id = curl(running, WEB_TOKEN, jwt)
    assert status == 403 and json.loads(body)["errors"] == ["permission denied"]

    record = record_with_id(running, curl_id)
    assert record["decision"] == "allow" and record["response_status"] == 200
    assert record["policies"] == ["ci-reads-own-repository"]
    assert record["shadow"] == {"decision": "deny", "agrees": False, "policies": [FORBID_ID]}
    assert record_with_id(running, hvac_ids[-1])["shadow"] == record["shadow"]
    reads = [r for r in audit_records(running) if r["path"] == API_DB]
    assert len(reads) == 3, "bao, curl and hvac"
    assert all(r["response_status"] == 200 and r["shadow"]["agrees"] is False for r in reads)
    # The bao CLI's mount lookup is allowed by both.
    (lookup,) = [r for r in audit_records(running) if r["path"].startswith("/v1/sys/internal/ui/mounts/")]
    assert lookup["shadow"] == {"decision": "allow", "agrees": True, "policies": ["anyone-discovers-mount-types"]}
    assert record_with_id(running, web_id)["shadow"] == {
        "decision": "allow",
        "agrees": True,
        "policies": ["ci-reads-own-repository"],
    }
    assert record_with_id(running, denied_id)["shadow"] == {"decision": "deny", "agrees": True, "policies": []}
    # Every read the shadow would have refused reached OpenBao.
    reached = [e for e in running.bao_audit_entries(since=openbao_mark) if e.get("type") == "response"]
    assert sum(e["request"]["path"] == "secret/data/ci/acme/api/db" for e in reached) == 3


def comparable(status: int, body: str) -> tuple[int, object]:
    """A response without the one thing that differs on every request: Secretgate's or OpenBao's
    request id."""
    parsed = json.loads(body) if body.strip() else None
    if isinstance(parsed, dict):
        parsed.pop("request_id", None)
    return status, parsed


def client_view(running) -> dict[str, tuple[int, object]]:
    """An allowed read, a denied read, a request without identity and a bad path, as the client sees them."""
    jwt = running.mint_jwt()
    requests = {
        "allowed": (API_DB, jwt),
        "denied": (WEB_TOKEN, jwt),
        "no identity": (API_DB, None),
        "bad path": (BAD_PATH, jwt),
    }
    return {name: comparable(*curl(running, path, token)[:2]) for name, (path, token) in requests.items()}


@pytest.mark.parametrize("breakage", ["unparseable cedar", "digest mismatch"])
def test_a_broken_shadow_changes_nothing_for_clients(make_stack, tmp_path, breakage):
    shadow = policies_copy(tmp_path / "shadow", FORBID_API)
    if breakage == "unparseable cedar":
        with open(shadow / "policies.cedar", "a") as policies:
            policies.write("\nthis is not cedar\n")
        reason = "shadow bundle not loaded: invalid bundle: "
    else:
        (shadow / "bundle.json.sha256").write_text("0" * 64 + "  bundle.json\n")
        reason = "shadow bundle not loaded: digest check failed: "
    running = make_stack(inline_config()).start()
    without_shadow = client_view(running)
    assert [status for status, _ in without_shadow.values()] == [200, 403, 401, 400]
    records_before = baseline = len(wait_records(running, 4))

    running.stop_envoy()
    running.start_shadow_server(shadow)
    running.start_envoy(stack_module.with_shadow(inline_config()))

    def absent_with_reason():
        nonlocal records_before
        assert client_view(running) == without_shadow
        records = wait_records(running, records_before + 4)
        records_before = len(records)
        allowed, denied = records[-4], records[-3]
        return allowed["shadow"]["absent"].startswith(reason) and (allowed, denied, *records[-2:])

    allowed, denied, anonymous, bad = eventually(absent_with_reason, 15, "records naming the shadow's failure")
    assert allowed["decision"] == "allow" and allowed["response_status"] == 200
    assert denied["decision"] == "deny" and denied["shadow"] == allowed["shadow"]
    assert anonymous["decision"] == "unauthenticated" and "shadow" not in anonymous
    assert bad["decision"] == "bad_request" and "shadow" not in bad
    with_shadow = [r for r in audit_records(running)[baseline:] if r.get("inputs")]
    assert all("absent" in r["shadow"] for r in with_shadow), "every evaluated request says why there is no verdict"
    shadow_stats = running.counters("secretgate.shadow")
    assert sum(v for k, v in shadow_stats.items() if k.endswith(".failures")) > 0, shadow_stats
    assert not any(k.endswith(".loads") and v for k, v in shadow_stats.items()), shadow_stats
    eventually(
        lambda: f"secretgate: shadow rejected: {reason.removeprefix('shadow bundle not loaded: ')}" in envoy_log(running),
        10,
        "the rejection's log line",
    )
    assert "no shadow policy: records say it is absent; serving is unaffected" in envoy_log(running)


def test_the_agree_and_disagree_counters_match_the_records(make_stack, tmp_path):
    shadow = policies_copy(tmp_path / "shadow", FORBID_API)
    running = make_stack(stack_module.with_shadow(inline_config()), shadow_dir=shadow).start()
    running.wait_shadow_loaded()
    api, web = running.mint_jwt(), running.mint_jwt(WEB)
    traffic = [(API_DB, api)] * 2 + [(WEB_TOKEN, web)] * 3 + [(WEB_TOKEN, api)] * 2 + [(API_DB, None), (BAD_PATH, api)]
    statuses = [curl(running, path, jwt)[0] for path, jwt in traffic]
    assert statuses == [200] * 5 + [403] * 2 + [401, 400]
    records = wait_records(running, len(traffic))
    evaluated = [r["shadow"] for r in records if "decision" in r.get("shadow", {})]
    agree = sum(s["agrees"] for s in evaluated)
    assert (len(records), len(evaluated), agree) == (9, 7, 5)

    def counted() -> dict[str, int]:
        stats = running.counters("secretgate.shadow")
        return {name: sum(v for k, v in stats.items() if k.endswith(f".{name}")) for name in ("agree", "disagree")}

    eventually(lambda: sum(counted().values()) >= len(evaluated), 5, "the shadow counters")
    assert counted() == {"agree": agree, "disagree": len(evaluated) - agree}


def test_promoting_the_shadow_is_a_file_move_on_the_bundle_server(make_stack, tmp_path):
    live = policies_copy(tmp_path / "live")
    shadow = policies_copy(tmp_path / "shadow", FORBID_API)
    config = stack_module.with_shadow(stack_module.bundle_plugin_config(refresh_s=1, digest=True), refresh_s=1)
    running = make_stack(config, bundle_dir=live, shadow_dir=shadow).start()  # waits for the live bundle
    running.wait_shadow_loaded()
    jwt = running.mint_jwt()
    status, _, before_id = curl(running, API_DB, jwt)
    assert status == 200
    assert record_with_id(running, before_id)["shadow"] == {"decision": "deny", "agrees": False, "policies": [FORBID_ID]}
    envoy_pid = running.state()["envoy"]["pid"]
    bundle_loads = sum(running.counters("secretgate.bundle.loads").values())
    shadow_revision = revision_of(shadow)
    assert shadow_revision != revision_of(live)

    for name in POLICY_FILES:  # policies.cedar, the only file that differs, last
        os.replace(shadow / name, live / name)

    running.wait_bundle_loaded(after=bundle_loads)
    status, body, after_id = eventually(
        lambda: (reply := curl(running, API_DB, jwt))[0] == 403 and reply, 10, "the promoted deny"
    )
    assert json.loads(body)["errors"] == ["permission denied"]
    record = record_with_id(running, after_id)
    assert (record["decision"], record["policies"], record["reason"]) == ("deny", [FORBID_ID], "a forbid policy applies")
    # The shadow server now serves nothing: the shadow last loaded stays, and agrees with the live set.
    assert record["shadow"] == {"decision": "deny", "agrees": True, "policies": [FORBID_ID]}
    assert running.state()["envoy"]["pid"] == envoy_pid, "no Envoy restart"
    log = envoy_log(running)
    assert f"secretgate: bundle loaded (revision {shadow_revision}, {DEMO_POLICY_COUNT + 1} policies)" in log
    # The real CLI is refused too; the rest of the policy set is unchanged.
    cli = bao_cli(running, jwt, "kv get", "-mount=secret", "ci/acme/api/db")
    assert cli.returncode != 0 and "permission denied" in cli.stderr
    assert curl(running, WEB_TOKEN, running.mint_jwt(WEB))[0] == 200


PIN_WORKFLOW = """
@id("ci-pins-its-workflow")
forbid (principal, action, resource in Path::"secret/ci") unless { context.claims has job_workflow_sha };
"""


def shadow_with_another_claims_schema(directory, change: str):
    """A shadow whose schema declares one claim more, or one less, than the live one."""
    schema = (stack_module.POLICIES_DIR / "schema.cedarschema").read_text()
    if change == "declares a claim the live schema does not":
        policies_copy(directory, PIN_WORKFLOW)
        schema = schema.replace("  sha?: String,\n", "  sha?: String,\n  job_workflow_sha?: String,\n")
    else:
        policies_copy(directory)
        schema = schema.replace("  actor?: String,\n", "")
    assert schema != (stack_module.POLICIES_DIR / "schema.cedarschema").read_text()
    (directory / "schema.cedarschema").write_text(schema)
    return directory


@pytest.mark.parametrize(
    "change",
    [
        "declares a claim the live schema does not",
        "drops a claim the live schema declares",
    ],
)
def test_the_shadow_predicts_what_its_promotion_decides_when_the_claims_schema_changes(make_stack, tmp_path, change):
    """What the shadow records for a request is what the same request gets once the shadow is
    the live bundle: otherwise the shadow's evidence misleads the promotion."""
    live = policies_copy(tmp_path / "live")
    shadow = shadow_with_another_claims_schema(tmp_path / "shadow", change)
    config = stack_module.with_shadow(stack_module.bundle_plugin_config(refresh_s=1, digest=True), refresh_s=1)
    running = make_stack(config, bundle_dir=live, shadow_dir=shadow).start()
    running.wait_shadow_loaded()
    # GitHub's tokens carry job_workflow_sha; one without it too.
    tokens = {"pinned": running.mint_jwt(), "unpinned": running.mint_jwt({"job_workflow_sha": None})}

    def decide_all() -> dict[str, dict]:
        return {name: record_with_id(running, curl(running, API_DB, jwt)[2]) for name, jwt in tokens.items()}

    predicted = {name: record["shadow"]["decision"] for name, record in decide_all().items()}
    bundle_loads = sum(running.counters("secretgate.bundle.loads").values())
    for name in POLICY_FILES:
        os.replace(shadow / name, live / name)
    running.wait_bundle_loaded(after=bundle_loads)
    promoted = {name: record["decision"] for name, record in decide_all().items()}
    assert predicted == promoted

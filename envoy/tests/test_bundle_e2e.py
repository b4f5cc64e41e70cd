"""Live policy bundles with real Envoy and OpenBao: off-boarding takes effect
within the refresh interval, with no Envoy restart; a broken bundle or one
with a wrong digest is refused and the previous policy keeps serving; a
filter that never loaded a bundle denies everything."""

from __future__ import annotations

import json
import shutil
import time

import pytest

import stack as stack_module
from bundle_server import BundleServer
from conftest import RawClient
from policy_change_support import eventually

REFRESH_S = 2
CONTRACTOR = {"repository": "acme/vendor-sync"}
CONTRACTOR_SECRET = "/v1/secret/data/ci/acme/vendor-sync/key"


@pytest.fixture
def policies(tmp_path):
    """A copy of policies/ the test may edit while the stack runs."""
    directory = tmp_path / "served"
    shutil.copytree(stack_module.POLICIES_DIR, directory, ignore=shutil.ignore_patterns("tests"))
    return directory


def bundle_stack(tmp_path, policies, digest: bool):
    server = BundleServer(policies)
    config = stack_module.bundle_plugin_config(refresh_s=REFRESH_S, digest=digest)
    running = stack_module.Stack(tmp_path / "stack", plugin_config=config)
    running.extra_clusters["bundles"] = server.port
    return server, running


def contractor_read(running):
    client = RawClient(running.envoy_url, vault_token=running.root_token)
    return client.get(CONTRACTOR_SECRET, jwt=running.mint_jwt(CONTRACTOR))


def offboard(policies, workload: str):
    entities = json.loads((policies / "entities.json").read_text())
    for entity in entities:
        if entity["uid"]["id"] == workload:
            entity["parents"] = []
    (policies / "entities.json").write_text(json.dumps(entities))


def test_offboarding_takes_effect_within_the_refresh_interval(tmp_path, policies):
    server, running = bundle_stack(tmp_path, policies, digest=False)
    with server, running:
        eventually(lambda: contractor_read(running).status == 200, 10, "the first bundle load")
        loads_before = running.counters("secretgate.bundle.loads")
        envoy_pid = running.state()["envoy"]["pid"]

        offboard(policies, "repo:acme/vendor-sync:ref:refs/heads/main")
        changed = time.monotonic()
        denied = eventually(lambda: (r := contractor_read(running)).status == 403 and r, REFRESH_S + 5, "the deny")
        assert time.monotonic() - changed <= REFRESH_S + 2
        assert "permission denied" in denied.json()["errors"][0]
        assert running.state()["envoy"]["pid"] == envoy_pid, "no Envoy restart"
        assert sum(running.counters("secretgate.bundle.loads").values()) > sum(loads_before.values())
        # A repository that was not off-boarded keeps its access.
        client = RawClient(running.envoy_url, vault_token=running.root_token)
        assert client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt()).status == 200
        decisions = running.counters("secretgate.decisions")
        assert any(name.endswith("decisions.allow") and value > 0 for name, value in decisions.items()), decisions
        assert any(name.endswith("decisions.deny") and value > 0 for name, value in decisions.items()), decisions


def test_a_broken_bundle_is_refused_and_the_previous_policy_keeps_serving(tmp_path, policies):
    server, running = bundle_stack(tmp_path, policies, digest=False)
    with server, running:
        eventually(lambda: contractor_read(running).status == 200, 10, "the first bundle load")
        # Off-board, but in the same edit break the policy text: the whole bundle is refused.
        offboard(policies, "repo:acme/vendor-sync:ref:refs/heads/main")
        (policies / "policies.cedar").write_text("permit (principal, action, resource) when { context.nope };")
        eventually(
            lambda: sum(running.counters("secretgate.bundle.failures").values()) >= 2, REFRESH_S * 3 + 5, "two refusals"
        )
        assert contractor_read(running).status == 200, "the last good bundle still serves"
        # Envoy writes its log asynchronously: the line may trail the counter.
        log = eventually(
            lambda: (text := running.path("envoy.log").read_text()) and "bundle rejected: invalid bundle" in text and text,
            10,
            "the refusal's log line",
        )
        assert "keeping the previous policy" in log


def test_a_bundle_with_a_wrong_digest_is_refused(tmp_path, policies):
    server, running = bundle_stack(tmp_path, policies, digest=True)
    with server, running:
        eventually(lambda: contractor_read(running).status == 200, 10, "the first bundle load")
        (policies / "bundle.json.sha256").write_text("0" * 64 + "  bundle.json\n")
        offboard(policies, "repo:acme/vendor-sync:ref:refs/heads/main")
        eventually(
            lambda: "digest check failed" in running.path("envoy.log").read_text(), REFRESH_S * 2 + 5, "a refusal"
        )
        assert contractor_read(running).status == 200, "the tampered bundle was not used"
        # Once the right digest is announced again, the new bundle loads.
        (policies / "bundle.json.sha256").unlink()
        eventually(lambda: contractor_read(running).status == 403, REFRESH_S * 2 + 5, "the deny")


def test_a_filter_that_never_loaded_a_bundle_denies_everything(tmp_path, policies):
    (policies / "policies.cedar").write_text("this is not cedar")
    server, running = bundle_stack(tmp_path, policies, digest=False)
    with server, running:
        eventually(
            lambda: sum(running.counters("secretgate.bundle.failures").values()) >= 1, 10, "a refusal"
        )
        client = RawClient(running.envoy_url, vault_token=running.root_token)
        reply = client.get("/v1/secret/data/ci/acme/api/db", jwt=running.mint_jwt())
        assert reply.status == 503
        assert reply.json()["errors"] == ["no policy loaded"]
        record = eventually(
            lambda: [json.loads(l["audit"]) for l in running.access_log_lines() if l.get("audit")], 10, "the audit"
        )[-1]
        assert record["decision"] == "no_policy"
        assert "no valid policy bundle" in record["reason"]
        # Envoy writes its log asynchronously: the counter can be ahead of the line.
        eventually(
            lambda: "no policy loaded yet: denying every request" in running.path("envoy.log").read_text(),
            10,
            "the log line",
        )


def test_an_unreachable_bundle_server_keeps_the_last_good_bundle(tmp_path, policies):
    server, running = bundle_stack(tmp_path, policies, digest=False)
    with running:
        with server:
            eventually(lambda: contractor_read(running).status == 200, 10, "the first bundle load")
        # The server is gone: fetches fail, the policy in use stays.
        failures = eventually(
            lambda: sum(running.counters("secretgate.bundle.failures").values()), REFRESH_S * 2 + 5, "a failed fetch"
        )
        assert failures >= 1
        assert contractor_read(running).status == 200
        # Envoy writes its log asynchronously: the line may trail the counter.
        eventually(
            lambda: "bundle rejected: fetch failed" in running.path("envoy.log").read_text(), 10, "the log line"
        )

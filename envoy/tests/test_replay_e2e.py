"""`secretgate replay` on access logs a real Envoy wrote in front of a real
OpenBao: the demo policies reproduce every recorded decision, a tightened or
loosened candidate changes exactly the records it should, logs written under
two audit HMAC keys replay together, and errors exit 2."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import stack as stack_module
from bundle_server import bundle_bytes
from conftest import assert_no_secret_in_files
from policy_change_support import audit_records, bao_cli, curl, hvac_client, policies_copy, wait_records

API_DB = "/v1/secret/data/ci/acme/api/db"
ROTATED_AUDIT_KEY = "secretgate-dev-audit-key-rotated-not-for-production"
TIGHTEN_ID = "candidate-no-legacy-kv"
TIGHTEN = f"""
@id("{TIGHTEN_ID}")
forbid (principal, action, resource in Path::"kv/ci");
"""
LOOSEN_ID = "candidate-api-reads-web"
LOOSEN = f"""
@id("{LOOSEN_ID}")
permit (principal in Group::"ci", action == Action::"read", resource in Path::"secret/ci/acme/web")
when {{ context.claims has repository && context.claims.repository == "acme/api" }};
"""
API_PRINCIPAL = 'Workload::"repo:acme/api:ref:refs/heads/main"'


@dataclass
class Run:
    """One Envoy run's traffic: its access log, the plugin configuration it ran with (as a file),
    and the request ids of the requests sent with curl or hvac, by name."""

    log: Path
    config: Path
    ids: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> list[dict]:
        return audit_records(None, self.log)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]


def send_traffic(running, run: Run) -> None:
    """A varied day of CI traffic through Envoy, with the real clients."""
    api = running.mint_jwt()

    def send(name: str, path: str, jwt: str | None, method: str = "GET", headers: dict | None = None) -> None:
        status, _, request_id = curl(running, path, jwt, method=method, headers=headers)
        run.ids[name], run.statuses[name] = request_id, status

    # Own-repository reads with every client (bao adds a mount lookup, allowed too).
    held = running.bao_request("GET", API_DB.removeprefix("/v1/"))[1]["data"]["data"]
    cli = bao_cli(running, api, "kv get", "-format=json", "-mount=secret", "ci/acme/api/db")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["data"]["data"] == held
    hvac_ids: list[str] = []
    read = hvac_client(running, api, hvac_ids).secrets.kv.v2.read_secret_version(
        path="ci/acme/api/db", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == held  # hvac raises on any refusal
    run.ids["hvac-own"], run.statuses["hvac-own"] = hvac_ids[-1], 200
    send("curl-own", API_DB, api)
    send("other-repo", "/v1/secret/data/ci/acme/web/token", api)
    unprotected = running.mint_jwt({"ref": "refs/heads/feature-x", "ref_protected": "false"})
    send("unprotected", API_DB, unprotected)
    listed = bao_cli(running, api, "kv list", "-format=json", "-mount=secret", "ci/acme/api")
    assert listed.returncode == 0, listed.stderr
    send("list", "/v1/secret/metadata/ci/acme/api", api, method="LIST")
    send("list-query", "/v1/secret/metadata/ci/acme/api?list=true", api)  # a GET that lists
    send("versioned", f"{API_DB}?version=1", api)  # a query string
    send("undeclared-namespace", API_DB, api, headers={"X-Vault-Namespace": "team-a"})
    send("kv-v1", "/v1/kv/ci/acme/api/legacy", api)
    send("prod-with-env", "/v1/secret/data/prod/acme/api/db", running.mint_jwt({"environment": "production"}))
    send("prod-no-env", "/v1/secret/data/prod/acme/api/db", running.mint_jwt({"environment": None}))
    contractor = running.mint_jwt({"repository": "acme/vendor-sync", "environment": "production"})
    send("contractor-prod", "/v1/secret/data/prod/acme/api/db", contractor)
    send("write-own", "/v1/secret/data/ci/acme/api/db", api, method="POST")
    send("no-token", API_DB, None)
    send("bad-path", "/v1/secret/data/ci%2Facme/api/db", api)
    # Refused by jwt_authn before the filter runs: an access-log line without a record.
    send("expired-token", API_DB, running.mint_jwt(ttl=-120))


EXPECTED_STATUSES = {
    "hvac-own": 200,
    "curl-own": 200,
    "other-repo": 403,
    "unprotected": 403,
    "list": 200,
    "list-query": 200,
    "versioned": 200,
    "undeclared-namespace": 400,
    "kv-v1": 200,
    "prod-with-env": 200,
    "prod-no-env": 403,
    "contractor-prod": 403,
    "write-own": 403,
    "no-token": 401,
    "bad-path": 400,
    "expired-token": 401,
}
# bao kv get and bao kv list (a GET with list=true): a mount lookup and the request each; the rest one
# each, but the expired token.
RECORDS_PER_RUN = 4 + len(EXPECTED_STATUSES) - 1
REFUSED_BEFORE_EVALUATION = {"no-token", "bad-path", "undeclared-namespace"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two Envoy runs in front of one OpenBao, with the demo policies and the same traffic: the
    first with the development audit key, the second after rotating it."""
    work = tmp_path_factory.mktemp("replay")
    first = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    rotated = dict(first, audit=dict(stack_module.DEV_AUDIT, hmac_key=ROTATED_AUDIT_KEY))
    runs = []
    with stack_module.Stack(work / "stack", plugin_config=first) as running:
        for index, config in enumerate((first, rotated)):
            if index:
                running.start_envoy(config)
            # In the run dir: the teardown scan covers the logs too.
            run = Run(log=running.path(f"access-{index}.log"), config=running.path(f"config-{index}.json"))
            run.config.write_text(json.dumps(running.plugin_configuration))
            send_traffic(running, run)
            assert run.statuses == EXPECTED_STATUSES
            wait_records(running, RECORDS_PER_RUN)
            running.stop_envoy()
            running.path("access.log").rename(run.log)
            runs.append(run)
    assert_no_secret_in_files(running)
    return runs


def replay(*args: str | Path) -> tuple[int, dict | None, str]:
    """``secretgate replay ... --json``: (exit code, the JSON summary or None, stderr)."""
    argv = [str(stack_module.cli_path()), "replay", *map(str, args), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    summary = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, summary, done.stderr


def with_inputs(records: list[dict]) -> list[dict]:
    return [r for r in records if "inputs" in r]


def test_the_policies_that_decided_reproduce_every_decision(recorded):
    run = recorded[0]
    records = run.records
    assert len(records) == RECORDS_PER_RUN and len(run.lines) == RECORDS_PER_RUN + 1
    refused = {r["request_id"] for r in records if "inputs" not in r}
    assert refused == {run.ids[name] for name in REFUSED_BEFORE_EVALUATION}
    decisions = {r["decision"] for r in with_inputs(records)}
    assert decisions == {"allow", "deny"}, "the mix has both"

    code, summary, stderr = replay("--log", run.log, "--policies", stack_module.POLICIES_DIR, "--config", run.config)
    assert code == 0, stderr
    assert summary["records"] == len(records)
    assert summary["lines_skipped"] == 1, "the expired token's line has no record"
    assert summary["replayed"] == len(with_inputs(records)) == summary["unchanged"]
    assert (summary["changed"], summary["changes"], summary["policies_changed"]) == (0, [], 0)
    assert summary["not_replayable"] == len(refused)
    reasons = summary["not_replayable_reasons"]
    assert sum(reasons.values()) == len(refused)
    assert all(reason.startswith("no decision inputs") for reason in reasons), reasons


def changed_ids(summary: dict) -> set[str]:
    return {change["request_id"] for change in summary["changes"]}


def test_a_tightened_policy_set_changes_exactly_the_records_it_forbids(recorded, tmp_path):
    run = recorded[0]
    candidate = policies_copy(tmp_path / "tightened", TIGHTEN)
    code, summary, stderr = replay("--log", run.log, "--policies", candidate, "--config", run.config)
    assert code == 1, stderr
    assert changed_ids(summary) == {run.ids["kv-v1"]}
    (change,) = summary["changes"]
    assert change == {
        "request_id": run.ids["kv-v1"],
        "principal": API_PRINCIPAL,
        "action": "read",
        "resource": 'Secret::"kv/ci/acme/api/legacy"',
        "before": "allow",
        "after": "deny",
        "before_policies": ["ci-reads-own-legacy-kv"],
        "after_policies": [TIGHTEN_ID],
    }
    assert summary["unchanged"] == summary["replayed"] - 1
    # The same candidate as a bundle file, as the bundle server would serve it.
    bundle = tmp_path / "tightened.json"
    bundle.write_bytes(bundle_bytes(candidate))
    code, from_bundle, stderr = replay("--log", run.log, "--bundle", bundle, "--config", run.config)
    assert code == 1, stderr
    assert from_bundle == summary


def test_a_forbid_on_listing_changes_every_list_however_it_was_sent(recorded, tmp_path):
    """LIST, and GET with list=true (as bao kv list sends it): the record keeps the flag, so the
    replay classifies the request as the filter did."""
    run = recorded[0]
    no_lists = '@id("candidate-no-lists")\nforbid (principal, action == Action::"list", resource);\n'
    candidate = policies_copy(tmp_path / "no-lists", no_lists)
    code, summary, stderr = replay("--log", run.log, "--policies", candidate, "--config", run.config)
    assert code == 1, stderr
    lists = {r["request_id"] for r in run.records if r["action"] == "list"}
    assert len(lists) == 3 and {run.ids["list"], run.ids["list-query"]} < lists, "LIST, curl's and bao's list=true"
    assert changed_ids(summary) == lists
    assert {(c["before"], c["after"], tuple(c["after_policies"])) for c in summary["changes"]} == {
        ("allow", "deny", ("candidate-no-lists",))
    }


def test_a_loosened_policy_set_changes_exactly_the_records_it_permits(recorded, tmp_path):
    run = recorded[0]
    candidate = policies_copy(tmp_path / "loosened", LOOSEN)
    code, summary, stderr = replay("--log", run.log, "--policies", candidate, "--config", run.config)
    assert code == 1, stderr
    assert changed_ids(summary) == {run.ids["other-repo"]}
    (change,) = summary["changes"]
    assert (change["before"], change["after"]) == ("deny", "allow")
    assert (change["before_policies"], change["after_policies"]) == ([], [LOOSEN_ID])
    assert change["resource"] == 'Secret::"secret/ci/acme/web/token"'


def test_a_candidate_reading_a_claim_the_records_lack_says_so_instead_of_guessing(recorded, tmp_path):
    """The records hold the claims the live schema declared; a candidate that declares and reads
    another (GitHub's job_workflow_sha) cannot be decided on them: every evaluated record is
    reported, by that reason, and none is counted as changed or unchanged."""
    run = recorded[0]
    candidate = policies_copy(
        tmp_path / "pinned",
        '@id("ci-pins-its-workflow")\n'
        'forbid (principal, action, resource in Path::"secret/ci") unless { context.claims has job_workflow_sha };\n',
    )
    schema = (candidate / "schema.cedarschema").read_text()
    schema = schema.replace("  sha?: String,\n", "  sha?: String,\n  job_workflow_sha?: String,\n")
    (candidate / "schema.cedarschema").write_text(schema)
    code, summary, stderr = replay("--log", run.log, "--policies", candidate, "--config", run.config)
    # A gate that decided nothing never passes: exit 2, with the summary still printed.
    assert code == 2 and "nothing was replayed" in stderr, (code, stderr)
    evaluated = len(with_inputs(run.records))
    assert (summary["replayed"], summary["changed"], summary["not_replayable"]) == (0, 0, len(run.records))
    reason = 'claim "job_workflow_sha" is read by the candidate policies but not recorded'
    assert summary["not_replayable_reasons"][reason] == evaluated


def test_records_written_under_a_rotated_audit_key_replay_together(recorded, tmp_path):
    before, after = recorded
    token_hmacs = [{r["token_hmac"] for r in run.records} for run in recorded]
    assert len(token_hmacs[0]) == len(token_hmacs[1]) == 1 and token_hmacs[0] != token_hmacs[1], "the key rotated"
    records = before.records + after.records
    logs = ["--log", before.log, "--log", after.log]

    code, summary, stderr = replay(*logs, "--policies", stack_module.POLICIES_DIR, "--config", after.config)
    assert code == 0, stderr
    assert (summary["records"], summary["replayed"], summary["changed"]) == (
        len(records),
        len(with_inputs(records)),
        0,
    )
    assert summary["not_replayable"] == 2 * len(REFUSED_BEFORE_EVALUATION)
    # A candidate decides the records of both keys alike.
    candidate = policies_copy(tmp_path / "tightened", TIGHTEN)
    code, summary, stderr = replay(*logs, "--policies", candidate, "--config", after.config)
    assert code == 1, stderr
    assert changed_ids(summary) == {before.ids["kv-v1"], after.ids["kv-v1"]}


@pytest.mark.parametrize(
    "problem",
    ["missing log file", "unparseable policies", "policies the schema rejects", "missing config file"],
)
def test_errors_exit_2_without_a_summary(recorded, tmp_path, problem):
    run = recorded[0]
    policies = policies_copy(tmp_path / "candidate")
    log, config = run.log, run.config
    if problem == "missing log file":
        log = tmp_path / "no-such-access.log"
    elif problem == "unparseable policies":
        (policies / "policies.cedar").write_text("this is not cedar")
    elif problem == "policies the schema rejects":
        with open(policies / "policies.cedar", "a") as cedar:
            cedar.write('\npermit (principal, action, resource) when { context.claims.no_such_claim == "x" };\n')
    else:
        config = tmp_path / "no-such-config.json"
    code, summary, stderr = replay("--log", run.log, "--log", log, "--policies", policies, "--config", config)
    assert (code, summary) == (2, None), stderr
    assert stderr.strip(), "the error is named"
    if problem.startswith("missing"):
        assert "cannot read" in stderr and Path(log if "log" in problem else config).name in stderr

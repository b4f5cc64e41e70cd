"""`secretgate report` on an access log that real Envoy wrote in front of real
OpenBao and the real approver: CI reads with curl, hvac and the bao CLI,
refusals of every kind, an approval released, one denied and a retry-mode
grant used twice. The report's figures are checked against the records
themselves (counted here independently), its HTML is opened in headless
Chromium driven by Selenium (figures and charts visible, printable, no request
leaves the page),
and no canary secret value appears in the HTML, the CSV files or the JSON.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from selenium.webdriver.common.print_page_options import PrintOptions

import stack as stack_module
from approval_support import (  # noqa: F401 (approver and gated are pytest fixtures)
    ALICE,
    SECRETS,
    approval_id,
    approver,
    as_approver,
    gated,
    in_background,
    pending_for,
)
from browser import headless_chromium, network_requests, screenshot, wait_until
from conftest import RawClient, seed_values
from policy_change_support import bao_cli, hvac_client

SCREENSHOTS = stack_module.REPO_ROOT / "target" / "tmp"
RUN_URL = "https://github.com/acme/web/actions/runs/4242"
API_DB = "/v1/secret/data/ci/acme/api/db"

# How the report groups decisions (README: Access report), restated here so the
# check is independent of the Rust code.
REFUSAL_GROUPS = {
    "deny": "policy",
    "unauthenticated": "unauthenticated",
    "no_policy": "no_policy",
    "error": "error",
    "host_error": "error",
    "approval_error": "error",
    "audit_unavailable": "error",
    "bad_request": "bad_request",
    "method_not_allowed": "bad_request",
    "approval_denied": "approval",
    "approval_required": "approval",
    "pending_approval": "approval",
}


def principal_label(record: dict) -> str | None:
    principal = record.get("principal")
    return f'{principal["type"]}::{json.dumps(principal["id"])}' if principal else None


def report(*args: str | Path) -> subprocess.CompletedProcess:
    argv = [str(stack_module.cli_path()), "report", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def traffic(gated, approver, tmp_path_factory):
    """One run's traffic through the approval stack; returns the access log and
    the report written from it (HTML, CSV, JSON)."""
    envoy = RawClient(gated.envoy_url, vault_token=gated.root_token)
    api = gated.mint_jwt()
    web = gated.mint_jwt({"repository": "acme/web"})
    web_prod = gated.mint_jwt({"repository": "acme/web", "environment": "production"})

    # Allowed reads with every client.
    assert envoy.get(API_DB, jwt=api).status == 200
    assert bao_cli(gated, api, "kv get", "-format=json", "-mount=secret", "ci/acme/api/db").returncode == 0
    hvac_client(gated, api, []).secrets.kv.v2.read_secret_version(
        path="ci/acme/api/db", mount_point="secret", raise_on_deleted_version=True
    )
    # Refusals: another repository's secret, no identity, a path the filter refuses.
    assert envoy.get("/v1/secret/data/ci/acme/web/token", jwt=api).status == 403
    assert envoy.get(API_DB).status == 401
    assert envoy.get("/v1/secret/data/ci/acme/api/%2e%2e%2fweb", jwt=api).status in (400, 403)

    # A held read released by an approver (the reason is a CI run's URL).
    thread, result = in_background(
        lambda: envoy.get(
            "/v1/secret/data/prod/acme/web/db", jwt=web_prod, headers={"X-Secretgate-Reason": RUN_URL}, timeout=30
        )
    )
    item = pending_for(approver, "secret/prod/acme/web/db")
    alice = as_approver(approver, ALICE)
    assert alice.request("POST", f"/v1/approvals/{approval_id(item)}/approve", body={}).status == 200
    thread.join(timeout=30)
    assert result["response"].status == 200
    # A held read an approver denies.
    thread, result = in_background(
        lambda: envoy.get(
            "/v1/secret/data/prod/acme/web/other", jwt=web_prod, headers={"X-Secretgate-Reason": "INC-7"}, timeout=30
        )
    )
    item = pending_for(approver, "secret/prod/acme/web/other")
    denied = alice.request("POST", f"/v1/approvals/{approval_id(item)}/deny", body={"reason": "not during the freeze"})
    assert denied.status == 200
    thread.join(timeout=30)
    assert result["response"].status == 403
    # Retry mode: asked, approved, then the grant serves two reads.
    first = envoy.get("/v1/secret/data/staging/acme/web/db", jwt=web)
    assert first.status == 403 and first.json()["approval_id"]
    assert alice.request("POST", f"/v1/approvals/{first.json()['approval_id']}/approve", body={}).status == 200
    assert envoy.get("/v1/secret/data/staging/acme/web/db", jwt=web).status == 200
    assert envoy.get("/v1/secret/data/staging/acme/web/db", jwt=web).status == 200

    # One line per request above, the bao CLI's mount lookup included.
    gated.access_log_lines(at_least=12)
    out = tmp_path_factory.mktemp("report")
    log = out / "access.log"
    log.write_text(gated.path("access.log").read_text())
    done = report("--log", log, "--out", out / "report.html", "--csv", out / "csv", "--json", out / "report.json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line["audit"]) for line in lines if line.get("audit")]
    assert len(records) == len(lines) == 12, "every request left exactly one record"
    return {
        "log": log,
        "dir": out,
        "records": records,
        "json": json.loads((out / "report.json").read_text()),
        "stdout": done.stdout,
    }


def test_the_figures_match_the_records(traffic):
    records, data = traffic["records"], traffic["json"]
    summary = data["summary"]
    assert summary["records"] == len(records) == 12
    assert summary["unreadable_lines"] == 0
    assert summary["masking"] == {"hmac-sha256": len(records)}
    allowed = [r for r in records if r["decision"] == "allow"]
    assert summary["allowed"] == len(allowed)
    assert summary["allowed_reads"] == sum(1 for r in allowed if r.get("action") == "read")
    refusals = Counter(REFUSAL_GROUPS[r["decision"]] for r in records if r["decision"] != "allow")
    assert summary["refusals"] == {group: refusals.get(group, 0) for group in summary["refusals"]}
    assert refusals["policy"] >= 1 and refusals["unauthenticated"] >= 1 and refusals["approval"] >= 2
    principals = {principal_label(r) for r in records} - {None}
    assert summary["principals"] == len(principals)
    secrets = {r["resource"] for r in records if (r.get("resource") or "").startswith("Secret::")}
    assert summary["secrets"] == len(secrets)

    # Per secret and per principal: every (secret, principal) count.
    allowed_pairs = Counter((r["resource"], principal_label(r)) for r in allowed if r.get("resource"))
    refused_pairs = Counter(
        (r["resource"], principal_label(r) or "(no identity)")
        for r in records
        if r["decision"] != "allow" and r.get("resource")
    )
    listed_allowed = {(s["resource"], a["who"]): a["count"] for s in data["secrets"] for a in s["readers"]}
    listed_refused = {(s["resource"], a["who"]): a["count"] for s in data["secrets"] for a in s["refused"]}
    assert listed_allowed == dict(allowed_pairs)
    assert listed_refused == dict(refused_pairs)
    by_principal = {(a["who"], p["principal"]): a["count"] for p in data["principals"] for a in p["read"]}
    assert by_principal == dict(allowed_pairs)

    # Approvals: two grants released secrets (one of them twice), one denial.
    grants = defaultdict(list)
    for r in records:
        if (r.get("approval") or {}).get("outcome") == "approved":
            grants[r["approval"]["grant_id"]].append(r)
    assert len(grants) == 2
    assert summary["approvals"] == {"requested": 3, "approved": 2, "denied": 1, "expired": 0, "undecided": 0}
    listed = {g["grant_id"]: g for g in data["approvals"]}
    assert set(listed) == set(grants)
    for grant_id, released in grants.items():
        row = listed[grant_id]
        assert row["releases"] == len(released)
        assert row["approver"] == ALICE[0]
        assert row["requester"] == principal_label(released[0])
        assert row["resource"] == released[0]["resource"]
    prod = next(g for g in data["approvals"] if "prod/acme/web/db" in g["resource"])
    assert prod["request_reason"] == RUN_URL
    assert [d["outcome"] for d in data["approval_refusals"]] == ["denied"]
    assert data["approval_refusals"][0]["reason"] == "not during the freeze"
    assert data["offboarding"] == [], "nobody was cut off in this run"
    assert sum(h["allowed"] for h in data["hourly"]) == summary["allowed"]
    assert sum(h["refused"] for h in data["hourly"]) == summary["refused"]


def test_the_csv_tables_hold_the_same_rows(traffic):
    csv_dir = traffic["dir"] / "csv"
    with open(csv_dir / "secret_reads.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = {(s["resource"], a["who"], a["count"]) for s in traffic["json"]["secrets"] for a in s["readers"]}
    assert {(r["resource"], r["principal"], int(r["requests"])) for r in rows} == expected
    with open(csv_dir / "summary.csv", newline="") as handle:
        figures = {row["figure"]: row["value"] for row in csv.DictReader(handle)}
    assert int(figures["records"]) == traffic["json"]["summary"]["records"]
    with open(csv_dir / "approvals.csv", newline="") as handle:
        assert {row["request_reason"] for row in csv.DictReader(handle)} >= {RUN_URL}


def test_no_secret_value_reaches_any_output(traffic):
    canaries = [*seed_values(), *(value for secret in SECRETS.values() for value in secret.values())]
    outputs = [traffic["dir"] / "report.html", traffic["dir"] / "report.json", *sorted((traffic["dir"] / "csv").glob("*"))]
    assert len(outputs) >= 10
    for path in outputs:
        text = path.read_text()
        leaked = [canary for canary in canaries if canary in text]
        assert not leaked, f"{path.name} holds {leaked}"
    # Masked bodies were in the log the report read: it left them out.
    assert '\\"password\\":\\"hmac-sha256:' in traffic["log"].read_text()
    assert "hmac-sha256:" not in (traffic["dir"] / "report.json").read_text()


def test_garbled_and_empty_logs_never_abort_the_report(traffic, tmp_path):
    text = traffic["log"].read_text()
    truncated = tmp_path / "truncated.log"
    truncated.write_text(text + text.splitlines()[-1][:57] + "\n\x00garbage\n")
    done = report("--log", truncated, "--out", tmp_path / "t.html", "--json", tmp_path / "t.json")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "t.json").read_text())["summary"]
    assert summary["unreadable_lines"] == 2
    assert summary["records"] == traffic["json"]["summary"]["records"]
    assert 'id="unreadable"' in (tmp_path / "t.html").read_text()

    empty = tmp_path / "empty.log"
    empty.write_text("")
    done = report("--log", empty, "--out", tmp_path / "e.html", "--json", tmp_path / "e.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "e.json").read_text())["summary"]["records"] == 0
    assert "no audit records" in (tmp_path / "e.html").read_text()
    assert report("--log", tmp_path / "missing.log", "--out", tmp_path / "m.html").returncode == 2


def test_the_page_shows_its_figures_and_charts_in_chromium_and_loads_nothing(traffic, tmp_path):
    page = traffic["dir"] / "report.html"
    summary = traffic["json"]["summary"]
    with headless_chromium(tmp_path / "chromium", network_log=True) as browser:
        # Leave chromium's own start page, and forget what it loaded.
        browser.get("about:blank")
        network_requests(browser)
        browser.get(page.as_uri())
        wait_until(browser, lambda d: d.execute_script("return document.readyState") == "complete", "the page")
        visible = """const e = document.querySelector(arguments[0]);
            if (!e) return null;
            const r = e.getBoundingClientRect(), s = getComputedStyle(e);
            return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'
                ? e.textContent.trim() : null;"""
        for figure in ("records", "principals", "secrets", "allowed_reads", "refused", "approvals_approved"):
            shown = browser.execute_script(visible, f"[data-figure={figure}]")
            assert shown == str(summary[figure] if figure in summary else summary["approvals"]["approved"]), figure
        for chart in ("#chart-hourly", "#chart-top-secrets", "#chart-top-refused"):
            assert browser.execute_script(visible, chart) is not None, chart
            bars = browser.execute_script(
                "return [...document.querySelectorAll(arguments[0] + ' rect.bar')]"
                ".filter(r => r.getBBox().width > 0).length",
                chart,
            )
            assert bars >= 1, chart
        assert browser.execute_script("return document.scripts.length") == 0
        screenshot(browser, SCREENSHOTS / "report.png")
        pdf = browser.print_page(PrintOptions())
        (SCREENSHOTS / "report.pdf").write_bytes(base64.b64decode(pdf))
        assert (SCREENSHOTS / "report.pdf").read_bytes().startswith(b"%PDF")
        requests = network_requests(browser)
        assert page.as_uri() in requests, f"the network log saw no page load: {requests}"
        assert set(requests) <= {page.as_uri()}, f"the page loaded more than itself: {requests}"
        assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_the_cli_finds_a_cut_off_across_chunks_and_threads(tmp_path):
    """Lines out of time order, over many read chunks (parsed on several threads):
    the contractor's allow comes last in the file, its refusals first."""

    def line(minute: int, who: str, secret: str, decision: str) -> str:
        record = {
            "time": f"2026-12-01T{minute // 60:02d}:{minute % 60:02d}:00.000Z",
            "request_id": f"r{minute}{who}",
            "principal": {"type": "Workload", "id": who},
            "method": "GET",
            "path": f"/v1/secret/data/{secret}",
            "action": "read",
            "resource": f'Secret::"secret/{secret}"',
            "decision": decision,
            "reason": "a forbid policy applies" if decision == "deny" else "permitted",
            "policies": ["offboarded"] if decision == "deny" else ["reads"],
            "response_body": {"size": 2000, "json": {"data": {"data": {"password": "hmac-sha256:" + "ab" * 32}}}},
            "masking": "hmac-sha256",
        }
        return json.dumps({"response_code": 200, "audit": json.dumps(record)})

    lines = [line(600 + i, "contractor", "shared/db", "deny") for i in range(300)]
    for i in range(6000):
        lines.append(line(i % 1400, f"steady-{i % 7}", "shared/db", "allow"))
        lines.append(line(i % 1400, "stranger", "shared/other", "deny"))
    lines.append(line(300, "contractor", "shared/db", "allow"))
    log = tmp_path / "shuffled.log"
    log.write_text("\n".join(lines) + "\n")
    assert log.stat().st_size > 5 * (1 << 20), "several read chunks"
    done = report("--log", log, "--out", tmp_path / "r.html", "--json", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["records"] == len(lines)
    assert [(w["principal"], w["first_allowed"], w["first_refusal"]) for w in data["offboarding"]] == [
        ('Workload::"contractor"', "2026-12-01T05:00:00.000Z", "2026-12-01T10:00:00.000Z")
    ]
    assert 'data-principal="Workload::&quot;contractor&quot;"' in (tmp_path / "r.html").read_text()

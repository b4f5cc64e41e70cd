"""Versioning with real Envoy and OpenBao: the filter names its version and
the configuration's revision in Envoy's log at start and in every audit
record, a loaded bundle's revision in every record after it, and
``secretgate --version`` prints the same names from the same files."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

import stack as stack_module
from bundle_server import BundleServer, bundle_bytes
from conftest import RawClient
from policy_change_support import audit_records, eventually

SECRET = "/v1/secret/data/ci/acme/api/db"


def cli(*args: str) -> dict[str, str]:
    """``secretgate --version ARGS`` as {name: value}: its first line is ``secretgate <version>``."""
    out = subprocess.run(
        [str(stack_module.cli_path()), "--version", *args], capture_output=True, text=True, check=True
    ).stdout
    first, *rest = out.splitlines()
    name, version = first.split(" ")
    assert name == "secretgate"
    return {"version": version, **dict(line.split(" ", 1) for line in rest)}


def loaded_configuration(running, tmp_path) -> str:
    """The configuration string exactly as Envoy hands it to the filter, written to a file."""
    envoy = yaml.safe_load(running.path("envoy.yaml").read_text())
    listener = envoy["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    wasm = next(f for f in filters if f["name"] == "envoy.filters.http.wasm")
    text = wasm["typed_config"]["config"]["configuration"]["value"]
    path = tmp_path / "configuration.json"
    path.write_text(text)
    return str(path)


def record_of(running, response) -> dict:
    """The audit record of one response, found by its request id."""
    request_id = response.headers.get("x-request-id")
    return eventually(
        lambda: next((r for r in audit_records(running) if r["request_id"] == request_id), None),
        10,
        f"the record of {request_id}",
    )


def test_every_record_and_the_start_log_name_the_version_and_the_configuration(stack, tmp_path):
    expected = cli("--config", loaded_configuration(stack, tmp_path))
    assert expected["config_revision"].startswith("sha256:") and len(expected["config_revision"]) == 23
    client = RawClient(stack.envoy_url, vault_token=stack.root_token)
    allowed = client.get(SECRET, jwt=stack.mint_jwt())
    denied = client.get("/v1/secret/data/prod/acme/api/db", jwt=stack.mint_jwt())
    missing = client.get(SECRET)
    assert (allowed.status, denied.status, missing.status) == (200, 403, 401)

    ids = {r.headers.get("x-request-id") for r in (allowed, denied, missing)}
    records = eventually(
        lambda: (found := [r for r in audit_records(stack) if r["request_id"] in ids]) and len(found) == 3 and found,
        10,
        "the three records",
    )
    for record in records:
        assert record["filter_version"] == expected["version"], record
        assert record["config_revision"] == expected["config_revision"], record
        assert record["bundle_revision"] is None, "no bundle is configured"
    start = f"secretgate {expected['version']}: configuration loaded"
    lines = [line for line in stack.path("envoy.log").read_text().splitlines() if start in line]
    assert lines and all(line.endswith(f"revision {expected['config_revision']}") for line in lines), lines


def test_an_operator_named_configuration_is_recorded_by_its_name(tmp_path):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["revision"] = "deploy-2026.12.02-abc1234"
    with stack_module.Stack(tmp_path / "stack", plugin_config=config) as running:
        assert cli("--config", loaded_configuration(running, tmp_path))["config_revision"] == config["revision"]
        client = RawClient(running.envoy_url, vault_token=running.root_token)
        read = client.get(SECRET, jwt=running.mint_jwt())
        assert read.status == 200
        assert record_of(running, read)["config_revision"] == config["revision"]


def test_a_configuration_with_an_unprintable_revision_is_refused(make_stack):
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    config["revision"] = 'a "quoted"\nrevision'
    with pytest.raises(stack_module.ProcessStartupError) as refused:
        make_stack(plugin_config=config).start()
    assert refused.value.returncode not in (None, 0), "Envoy must exit, not hang"
    assert "configuration rejected" in refused.value.log_tail
    assert "revision must be 1 to 128 printable ASCII characters" in refused.value.log_tail


def test_records_name_the_live_bundle_by_its_revision(tmp_path):
    served = tmp_path / "served"
    shutil.copytree(stack_module.POLICIES_DIR, served, ignore=shutil.ignore_patterns("tests"))
    server = BundleServer(served)
    config = stack_module.bundle_plugin_config(refresh_s=2, digest=True)
    running = stack_module.Stack(tmp_path / "stack", plugin_config=config)
    running.extra_clusters["bundles"] = server.port
    with server, running:
        client = RawClient(running.envoy_url, vault_token=running.root_token)
        eventually(lambda: client.get(SECRET, jwt=running.mint_jwt()).status == 200, 10, "the first bundle load")
        served_read = client.get(SECRET, jwt=running.mint_jwt())
        assert served_read.status == 200
        bundle_file = tmp_path / "bundle.json"
        bundle_file.write_bytes(bundle_bytes(served))
        first = cli("--bundle", str(bundle_file))["bundle_revision"]
        assert first == json.loads(bundle_file.read_text())["revision"]
        record = record_of(running, served_read)
        assert (record["decision"], record["bundle_revision"]) == ("allow", first)
        assert f"bundle loaded (revision {first}," in running.path("envoy.log").read_text()

        # A bundle without a revision is named by its digest, as the CLI computes it.
        unnamed = json.loads(bundle_bytes(served))
        del unnamed["revision"]
        unnamed["policies"] += "\n// changed\n"
        (served / "bundle.json").write_text(json.dumps(unnamed))
        bundle_file.write_bytes((served / "bundle.json").read_bytes())
        second = cli("--bundle", str(bundle_file))["bundle_revision"]
        assert second.startswith("sha256:") and second != first

        def latest():
            return record_of(running, client.get(SECRET, jwt=running.mint_jwt()))["bundle_revision"] == second

        eventually(latest, 15, "the unnamed bundle's digest in a record")

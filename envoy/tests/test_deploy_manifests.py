"""The deployment manifests in envoy/deploy/ (Istio, Envoy Gateway, plain Kubernetes).

No cluster runs here, so what can be checked offline is checked with the real
tools: the files are what ``render.py`` writes, every document parses, every
filter configuration they carry loads in the compiled filter
(``host-test check``, which runs ``proxy_on_configure`` as Envoy does) and a
broken copy of each is refused, the plain-Envoy bootstrap passes
``envoy --mode validate`` of the real Envoy 1.40, each platform's claims key
is the one its jwt_authn writes, and every digest is the documented
placeholder until ``render.py --code-sha256/--image-digest`` replaces it.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import stack as stack_module

DEPLOY_DIR = stack_module.ENVOY_DIR / "deploy"
sys.path.insert(0, str(DEPLOY_DIR))
import render  # noqa: E402  (needs the sys.path entry above)

REPO = stack_module.REPO_ROOT
WASM_FILTER = "envoy.filters.http.wasm"


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY_DIR / name).read_text()) if doc is not None]


def one(name: str, kind: str) -> dict:
    (found,) = [doc for doc in documents(name) if doc["kind"] == kind]
    return found


def bootstrap() -> dict:
    """The plain-Envoy bootstrap, as the Secret hands it to Envoy."""
    return yaml.safe_load(one("kubernetes/openbao-envoy.yaml", "Secret")["stringData"]["envoy.yaml"])


def http_filters(config: dict) -> list[dict]:
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def wasm_plugin_config(config: dict) -> dict:
    (wasm,) = [f for f in http_filters(config) if f["name"] == WASM_FILTER]
    return wasm["typed_config"]["config"]


def filter_configurations() -> dict[str, dict]:
    """Each target's filter configuration, parsed from where its platform takes it."""
    return {
        "istio": one("istio/wasmplugin.yaml", "WasmPlugin")["spec"]["pluginConfig"],
        "envoy-gateway": one("envoy-gateway/envoyextensionpolicy.yaml", "EnvoyExtensionPolicy")["spec"]["wasm"][0][
            "config"
        ],
        "kubernetes": json.loads(wasm_plugin_config(bootstrap())["configuration"]["value"]),
    }


def test_the_committed_manifests_are_what_render_py_writes():
    rendered = render.manifests()
    committed = {str(path.relative_to(DEPLOY_DIR)) for path in DEPLOY_DIR.rglob("*.yaml")}
    assert committed == set(rendered), "a manifest is not rendered by render.py (or one is missing)"
    stale = [name for name, text in rendered.items() if (DEPLOY_DIR / name).read_text() != text]
    assert not stale, f"out of date, run .venv/bin/python envoy/deploy/render.py: {stale}"


def test_every_manifest_parses_into_named_kubernetes_objects():
    kinds = {}
    for name in render.manifests():
        docs = documents(name)
        assert docs, name
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), (name, doc.keys())
            assert doc["metadata"]["name"], name
            kinds.setdefault(name, []).append(doc["kind"])
    assert kinds["istio/wasmplugin.yaml"] == ["WasmPlugin"]
    assert kinds["istio/requestauthentication.yaml"] == ["RequestAuthentication"]
    assert kinds["envoy-gateway/envoyextensionpolicy.yaml"] == ["EnvoyExtensionPolicy"]
    assert kinds["envoy-gateway/securitypolicy.yaml"] == ["SecurityPolicy"]
    assert kinds["kubernetes/openbao-envoy.yaml"] == ["Namespace", "Secret", "Deployment", "Service"]
    assert kinds["kubernetes/bundles.yaml"] == ["ConfigMap", "Deployment", "Service"]
    assert kinds["kubernetes/approver.yaml"] == ["Secret", "PersistentVolumeClaim", "Deployment", "Service"]


# ---------------------------------------------------------------- the filter configurations load


def broken(config: dict) -> dict:
    """A copy the filter must refuse: its claims key is a list, not a name (each target's copy stays
    distinct, so host-test checks each)."""
    copy = json.loads(json.dumps(config))
    copy["identity"]["payload_in_metadata"] = [config["identity"]["payload_in_metadata"]]
    return copy


def served_bundle_inline(config: dict) -> dict:
    """The Kubernetes configuration with the bundle the bundle server serves put inline:
    the policies it will swap in, validated as the filter validates a fetched bundle."""
    bundle = json.loads(one("kubernetes/bundles.yaml", "ConfigMap")["data"]["bundle.json"])
    inline = {key: value for key, value in config.items() if key != "bundle"}
    inline.update({key: bundle[key] for key in ("schema", "policies", "entities")})
    return inline


@pytest.fixture(scope="module")
def host_test_check(tmp_path_factory):
    """Every configuration to check, good and broken, in one scenario file, so the filter
    is compiled once; returns each scenario's OK/ERROR line by name."""
    configurations = filter_configurations()
    cases = {name: config for name, config in configurations.items()}
    cases["kubernetes with the served bundle"] = served_bundle_inline(configurations["kubernetes"])
    cases.update({f"broken {name}": broken(config) for name, config in configurations.items()})
    scenarios = [{"name": name, "config": {"inline": config}, "request": {}} for name, config in cases.items()]
    file = tmp_path_factory.mktemp("deploy-check") / "manifests.yaml"
    file.write_text(yaml.safe_dump({"scenarios": scenarios}, sort_keys=False))
    built = REPO / "target" / "debug" / "host-test"
    runner = [str(built)] if built.is_file() else ["cargo", "run", "-q", "-p", "host-test", "--"]
    run = subprocess.run([*runner, "check", str(file)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode in (0, 1), f"host-test could not check:\n{run.stdout}\n{run.stderr}"
    lines: dict[str, list[str]] = {}
    for line in run.stdout.splitlines():
        for name in cases:
            if f"({name})" in line:
                lines.setdefault(name, []).append(line)
    return lines


@pytest.mark.parametrize("target", ["istio", "envoy-gateway", "kubernetes", "kubernetes with the served bundle"])
def test_the_filter_configuration_loads_in_the_filter(host_test_check, target):
    assert [line.split()[0] for line in host_test_check[target]] == ["OK"], host_test_check[target]


@pytest.mark.parametrize("target", ["istio", "envoy-gateway", "kubernetes"])
def test_a_broken_copy_is_refused(host_test_check, target):
    lines = host_test_check[f"broken {target}"]
    assert lines and all(line.startswith("ERROR") for line in lines), lines
    assert any("configuration rejected" in line and "expected a string" in line for line in lines), lines


def test_the_bundle_server_announces_the_digest_of_the_bundle_it_serves():
    data = one("kubernetes/bundles.yaml", "ConfigMap")["data"]
    announced = data["bundle.json.sha256"].split()[0]
    assert announced == hashlib.sha256(data["bundle.json"].encode()).hexdigest()


# ---------------------------------------------------------------- each platform's claims key


def test_each_configuration_reads_the_claims_where_its_platform_writes_them():
    configurations = filter_configurations()
    # Istio writes every RequestAuthentication issuer's payload under "payload".
    assert configurations["istio"]["identity"]["payload_in_metadata"] == "payload"
    # Envoy Gateway writes under the SecurityPolicy provider's name.
    (provider,) = one("envoy-gateway/securitypolicy.yaml", "SecurityPolicy")["spec"]["jwt"]["providers"]
    assert configurations["envoy-gateway"]["identity"]["payload_in_metadata"] == provider["name"]
    # Plain Envoy: the bootstrap's own provider says where.
    (jwt_authn,) = [f for f in http_filters(bootstrap()) if f["name"] == "envoy.filters.http.jwt_authn"]
    (github,) = jwt_authn["typed_config"]["providers"].values()
    assert configurations["kubernetes"]["identity"]["payload_in_metadata"] == github["payload_in_metadata"]


def test_every_target_trusts_github_actions_tokens_from_the_same_header():
    (rule,) = one("istio/requestauthentication.yaml", "RequestAuthentication")["spec"]["jwtRules"]
    (provider,) = one("envoy-gateway/securitypolicy.yaml", "SecurityPolicy")["spec"]["jwt"]["providers"]
    (jwt_authn,) = [f for f in http_filters(bootstrap()) if f["name"] == "envoy.filters.http.jwt_authn"]
    (github,) = jwt_authn["typed_config"]["providers"].values()
    issuer, jwks = "https://token.actions.githubusercontent.com", "https://token.actions.githubusercontent.com/.well-known/jwks"
    assert (rule["issuer"], rule["jwksUri"], rule["fromHeaders"]) == (issuer, jwks, [{"name": "x-secretgate-jwt"}])
    assert (provider["issuer"], provider["remoteJWKS"]["uri"]) == (issuer, jwks)
    assert provider["extractFrom"] == {"headers": [{"name": "x-secretgate-jwt"}]}
    assert (github["issuer"], github["remote_jwks"]["http_uri"]["uri"]) == (issuer, jwks)
    assert github["from_headers"] == [{"name": "x-secretgate-jwt"}]
    assert rule["audiences"] == provider["audiences"] == github["audiences"] == ["secretgate"]


def test_every_target_fails_closed():
    plugin = one("istio/wasmplugin.yaml", "WasmPlugin")["spec"]
    assert (plugin["failStrategy"], plugin["phase"]) == ("FAIL_CLOSE", "AUTHZ")
    assert one("envoy-gateway/envoyextensionpolicy.yaml", "EnvoyExtensionPolicy")["spec"]["wasm"][0]["failOpen"] is False
    assert wasm_plugin_config(bootstrap())["failure_policy"] == "FAIL_CLOSED"


# ---------------------------------------------------------------- digests


def digests(value, where: str = "") -> dict[str, str]:
    """Every sha256 field in a manifest (and in the bootstrap inside it), by where it is."""
    found = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("sha256", "code_sha256") and isinstance(item, str):
                found[f"{where}.{key}"] = item
            elif key == "envoy.yaml" and isinstance(item, str):
                found.update(digests(yaml.safe_load(item), f"{where}.envoy.yaml"))
            else:
                found.update(digests(item, f"{where}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(digests(item, f"{where}[{index}]"))
    return found


def all_digests(texts: dict[str, str]) -> dict[str, str]:
    found = {}
    for name, text in texts.items():
        for index, doc in enumerate(yaml.safe_load_all(text)):
            found.update(digests(doc, f"{name}#{index}"))
    return found


def test_the_committed_digests_are_the_documented_placeholder():
    found = all_digests({name: (DEPLOY_DIR / name).read_text() for name in render.manifests()})
    assert len(found) == 3, found  # Istio's image, Envoy Gateway's module, plain Envoy's module
    assert set(found.values()) == {render.PLACEHOLDER_SHA256}
    readme = (REPO / "README.md").read_text()
    assert render.PLACEHOLDER_SHA256 in readme, "README must say the all-zero digest is a placeholder"


def test_render_puts_a_real_module_digest_everywhere_the_module_is_fetched(tmp_path):
    module = stack_module.wasm_path()
    module_sha256 = stack_module.sha256_hex(module)
    image_digest = hashlib.sha256(b"an image manifest").hexdigest()
    argv = ["--out", str(tmp_path), "--code-sha256", module_sha256, "--image-digest", image_digest]
    assert render.main(argv) == 0

    found = all_digests({name: (tmp_path / name).read_text() for name in render.manifests()})
    by_file = {where.split("#")[0]: digest for where, digest in found.items()}
    assert by_file == {
        "istio/wasmplugin.yaml": image_digest,
        "envoy-gateway/envoyextensionpolicy.yaml": module_sha256,
        "kubernetes/openbao-envoy.yaml": module_sha256,
    }


# ---------------------------------------------------------------- envoy --mode validate


def envoy_validate(config_text: str, directory: Path) -> subprocess.CompletedProcess:
    config = directory / "envoy.yaml"
    config.write_text(config_text)
    argv = [
        stack_module.envoy_binary(), "--mode", "validate", "-c", str(config),
        "--base-id", str(random.randint(1_000, 4_000_000)),  # other Envoys may share the machine
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_the_plain_envoy_bootstrap_passes_envoy_validate(tmp_path):
    text = one("kubernetes/openbao-envoy.yaml", "Secret")["stringData"]["envoy.yaml"]

    result = envoy_validate(text, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "OK" in result.stdout


def test_envoy_validate_refuses_a_broken_copy_of_the_bootstrap(tmp_path):
    config = bootstrap()
    wasm_plugin_config(config)["failure_policy"] = "FAIL_SHUT"

    result = envoy_validate(yaml.safe_dump(config), tmp_path)

    assert result.returncode != 0
    assert "FAIL_SHUT" in result.stdout + result.stderr

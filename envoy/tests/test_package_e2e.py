"""`make package` end to end: the release files it writes, that a second run
from the same commit writes the same bytes, and a round trip of both image
variants through a real registry (Debian's docker-registry) with skopeo:
what comes back is the filter, byte for byte, under the media types and
annotations Istio's Wasm fetcher and an auditor read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

import stack as stack_module

REPO_ROOT = stack_module.REPO_ROOT
DIST = REPO_ROOT / "dist"
SKOPEO = "/usr/bin/skopeo"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT = "application/vnd.module.wasm.content.layer.v1+wasm"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout.strip()


def filter_version() -> str:
    return tomllib.loads((REPO_ROOT / "plugin" / "Cargo.toml").read_text())["package"]["version"]


def expected_annotations() -> dict[str, str]:
    """What package.sh derives from the commit (and, for the source, from the clone)."""
    origin = subprocess.run(["git", "config", "--get", "remote.origin.url"], cwd=REPO_ROOT, capture_output=True, text=True)
    source = os.environ.get("SECRETGATE_PACKAGE_SOURCE") or origin.stdout.strip() or f"file://{REPO_ROOT}"
    return {
        "org.opencontainers.image.version": filter_version(),
        "org.opencontainers.image.revision": git("rev-parse", "HEAD"),
        "org.opencontainers.image.created": subprocess.run(
            ["git", "show", "-s", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ", "HEAD"],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC0"},
        ).stdout.strip(),
        "org.opencontainers.image.source": source,
    }


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_package_script(out: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO_ROOT / "package" / "package.sh"), str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(extra_env or {})},
    )


def skopeo(*args: str) -> str:
    done = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


def layout_blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":", 1)
    data = (layout / "blobs" / algorithm / hex_digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hex_digest, f"blob {digest} does not match its digest"
    return data


def layout_manifest(layout: Path, ref_name: str) -> tuple[str, dict]:
    """(digest, manifest) of the image named ``ref_name`` in a layout's index.json."""
    index = json.loads((layout / "index.json").read_text())
    matches = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == ref_name]
    assert len(matches) == 1, f"{ref_name} is named {len(matches)} times in {index}"
    return matches[0]["digest"], json.loads(layout_blob(layout, matches[0]["digest"]))


def plugin_wasm_from_layer(layer: bytes) -> bytes:
    """What Istio's extractWasmPluginBinary does: gunzip, untar, take plugin.wasm."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["plugin.wasm"], members
        member = members[0]
        assert (member.uid, member.gid, member.uname, member.gname, member.mode) == (0, 0, "", "", 0o644)
        extracted = archive.extractfile(member)
        assert extracted is not None
        return extracted.read()


@pytest.fixture(scope="session")
def package() -> Path:
    """`make package` once for the session; returns dist/."""
    done = subprocess.run(["make", "package"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"make package failed:\n{done.stdout}\n{done.stderr}"
    return DIST


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with stack_module.LocalRegistry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def test_make_package_writes_the_filter_and_its_checksum(package):
    wasm = (package / "secretgate.wasm").read_bytes()
    assert wasm == stack_module.DEFAULT_WASM.read_bytes(), "dist/secretgate.wasm is the root wasm build's filter"
    assert wasm.startswith(b"\0asm")
    line = (package / "secretgate.wasm.sha256").read_text()
    assert line == f"{hashlib.sha256(wasm).hexdigest()}  secretgate.wasm\n"
    checked = subprocess.run(["sha256sum", "-c", "secretgate.wasm.sha256"], cwd=package, capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip() == "secretgate.wasm: OK", checked


def test_the_layout_names_both_variants_and_holds_every_blob(package):
    layout = package / "oci"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["mediaType"] == OCI_INDEX and index["schemaVersion"] == 2
    version = filter_version()
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == [version, f"{version}-compat"]
    referenced = set()
    for entry in index["manifests"]:
        assert entry["mediaType"] == OCI_MANIFEST
        manifest = json.loads(layout_blob(layout, entry["digest"]))
        assert entry["size"] == len(layout_blob(layout, entry["digest"]))
        referenced.add(entry["digest"])
        for descriptor in [manifest["config"], *manifest["layers"]]:
            assert descriptor["size"] == len(layout_blob(layout, descriptor["digest"]))
            referenced.add(descriptor["digest"])
    stored = {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}
    assert stored == referenced, "every stored blob is referenced and every reference is stored"


def test_a_second_run_from_the_same_commit_writes_identical_files(package, tmp_path):
    run_package_script(tmp_path / "again")
    first, second = tree(package), tree(tmp_path / "again")
    assert sorted(first) == sorted(second)
    different = [path for path in first if first[path] != second[path]]
    assert not different, f"files differ between two runs: {different}"


def test_credentials_in_the_source_url_stay_out_of_the_package(tmp_path):
    run_package_script(tmp_path / "out", {"SECRETGATE_PACKAGE_SOURCE": "https://ci-bot:s3cret-token@git.example.org/team/secretgate.git"})
    everything = b"".join(tree(tmp_path / "out" / "oci").values())
    assert b"s3cret-token" not in everything
    _, manifest = layout_manifest(tmp_path / "out" / "oci", filter_version())
    assert manifest["annotations"]["org.opencontainers.image.source"] == "https://git.example.org/team/secretgate.git"


def push(registry, ref_name: str) -> str:
    """Push one variant from dist/oci with its digests kept; returns the docker:// reference."""
    target = f"docker://{registry.host}/secretgate:{ref_name}"
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{DIST / 'oci'}:{ref_name}", target)
    return target


def test_the_oci_variant_round_trips_through_a_registry(package, registry, tmp_path):
    version = filter_version()
    layout_digest, _ = layout_manifest(package / "oci", version)
    target = push(registry, version)

    raw = skopeo("inspect", "--tls-verify=false", "--raw", target)
    assert f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}" == layout_digest, "the registry serves the layout's manifest bytes"
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == WASM_CONFIG
    assert manifest["annotations"] == expected_annotations()
    # Istio's extractOCIArtifactImage: exactly two layers, one of them the raw module.
    assert [layer["mediaType"] for layer in manifest["layers"]] == [WASM_CONFIG, WASM_CONTENT]
    runtime_config = json.loads(skopeo("inspect", "--tls-verify=false", "--config", "--raw", target))
    assert runtime_config == {
        "type": "envoy_proxy",
        "abiVersions": ["proxy_abi_version_0_2_1"],
        "config": {"root_ids": ["secretgate"]},
    }

    pulled = tmp_path / "pulled"
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", target, f"oci:{pulled}:{version}")
    pulled_digest, pulled_manifest = layout_manifest(pulled, version)
    assert pulled_digest == layout_digest
    (wasm_layer,) = [layer for layer in pulled_manifest["layers"] if layer["mediaType"] == WASM_CONTENT]
    wasm = layout_blob(pulled, wasm_layer["digest"])
    assert wasm == (package / "secretgate.wasm").read_bytes()
    assert f"{hashlib.sha256(wasm).hexdigest()}  secretgate.wasm\n" == (package / "secretgate.wasm.sha256").read_text()


def test_the_compat_variant_round_trips_through_a_registry(package, registry, tmp_path):
    ref_name = f"{filter_version()}-compat"
    layout_digest, _ = layout_manifest(package / "oci", ref_name)
    target = push(registry, ref_name)

    raw = skopeo("inspect", "--tls-verify=false", "--raw", target)
    assert f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}" == layout_digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_IMAGE_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER_GZIP]
    assert manifest["annotations"] == {**expected_annotations(), "module.wasm.image/variant": "compat"}
    # An ordinary image, so skopeo's image view reads it too.
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", target))
    assert inspected["Digest"] == layout_digest
    assert (inspected["Architecture"], inspected["Os"]) == ("wasm", "wasip1")
    assert inspected["Created"] == expected_annotations()["org.opencontainers.image.created"]
    assert inspected["Layers"] == [manifest["layers"][0]["digest"]]

    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", target, f"dir:{pulled}")
    assert json.loads((pulled / "manifest.json").read_text()) == manifest
    layer_hex = manifest["layers"][0]["digest"].split(":", 1)[1]
    wasm = plugin_wasm_from_layer((pulled / layer_hex).read_bytes())
    assert wasm == (package / "secretgate.wasm").read_bytes()
    assert f"{hashlib.sha256(wasm).hexdigest()}  secretgate.wasm\n" == (package / "secretgate.wasm.sha256").read_text()


def test_the_packaging_tool_refuses_to_build_for_wasm():
    """The root wasm build never builds it (not a default member); asked for
    explicitly, a wasm32 build stops at its compile_error."""
    done = subprocess.run(
        ["cargo", "check", "--target", "wasm32-wasip1", "-p", "secretgate-package"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "secretgate-package is a native build tool" in done.stderr, done.stderr[-2000:]

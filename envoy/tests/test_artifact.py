"""One unambiguous artifact: the wasm build a platform team runs from the
repository's root writes exactly one ``.wasm``, and it is the filter (a
proxy-wasm reactor with no ``_start``), never the CLI as a WASI command module
whose file name would collide with it. The CLI refuses to build for wasm at
all, and trying leaves the filter untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import stack as stack_module

ROOT = stack_module.REPO_ROOT
WASM_BUILD = ["cargo", "build", "--release", "--target", "wasm32-wasip1"]

# What makes a module a proxy-wasm filter to Envoy's host (proxy-wasm ABI 0.2.1).
PROXY_WASM_EXPORTS = {"proxy_on_context_create", "proxy_on_memory_allocate", "proxy_abi_version_0_2_1"}


def read_leb128(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def exported_names(module: bytes) -> set[str]:
    """The names in a Wasm module's export section (section id 7)."""
    assert module[:8] == b"\0asm\x01\0\0\0", "not a Wasm binary module"
    at, names = 8, set()
    while at < len(module):
        section_id = module[at]
        size, at = read_leb128(module, at + 1)
        end = at + size
        if section_id == 7:
            count, cursor = read_leb128(module, at)
            for _ in range(count):
                length, cursor = read_leb128(module, cursor)
                names.add(module[cursor : cursor + length].decode())
                cursor += length + 1  # the export's kind byte
                _, cursor = read_leb128(module, cursor)  # its index
        at = end
    return names


def wasm_artifacts(cargo_stdout: str) -> list[str]:
    """Every .wasm file cargo reported writing, from ``--message-format=json``."""
    files = []
    for line in cargo_stdout.splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact":
            files += [f for f in message.get("filenames", []) if f.endswith(".wasm")]
    return files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_root_wasm_build_writes_one_wasm_and_it_is_the_filter():
    build = subprocess.run(
        [*WASM_BUILD, "--message-format=json"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "collision" not in build.stderr, build.stderr
    artifacts = wasm_artifacts(build.stdout)
    assert [Path(f).name for f in artifacts] == ["secretgate.wasm"], artifacts
    assert Path(artifacts[0]).resolve() == stack_module.DEFAULT_WASM.resolve()

    exports = exported_names(Path(artifacts[0]).read_bytes())
    assert PROXY_WASM_EXPORTS <= exports, sorted(exports)
    # A command module's _start is what Envoy runs at load; the filter has none.
    assert "_start" not in exports and "main" not in exports


def test_the_cli_refuses_to_build_for_wasm_and_leaves_the_filter_alone():
    filter_wasm = stack_module.DEFAULT_WASM
    before = sha256(filter_wasm)
    build = subprocess.run([*WASM_BUILD, "-p", "secretgate-cli"], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode != 0
    assert "the secretgate CLI is native only" in build.stderr, build.stderr[-2000:]
    assert sha256(filter_wasm) == before
    assert not (filter_wasm.parent / "secretgate-cli.wasm").exists()


def test_the_export_reader_tells_a_command_module_from_the_filter():
    # A minimal command module: one function exported as _start (so the reader can fail).
    command = bytes.fromhex(
        "0061736d01000000"  # magic, version
        "010401600000"  # type section: () -> ()
        "03020100"  # function section: one function of type 0
        "070a01065f737461727400 00".replace(" ", "")  # export "_start" func 0
        + "0a040102000b"  # code section: empty body
    )
    assert exported_names(command) == {"_start"}

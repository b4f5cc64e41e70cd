"""The README says what the code is: its stated `.wasm` size is within 5% of
the build, and its layout table names every module of the filter's core."""

from __future__ import annotations

import re

import stack as stack_module

README = stack_module.REPO_ROOT / "README.md"
PLUGIN_SRC = stack_module.REPO_ROOT / "plugin" / "src"


def stated_wasm_bytes(text: str) -> int:
    match = re.search(r"stripped symbols: \*\*[\d.]+ MiB\*\* \(([\d,]+) bytes", text)
    assert match, "the README states the release .wasm size"
    return int(match.group(1).replace(",", ""))


def test_the_stated_wasm_size_is_the_build_within_five_percent():
    built = stack_module.wasm_path().stat().st_size
    stated = stated_wasm_bytes(README.read_text())
    assert abs(built - stated) <= stated * 0.05, f"README says {stated:,} bytes, the build is {built:,}"


def test_the_layout_table_names_every_core_module():
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `plugin/` |"))
    modules = sorted(p.stem for p in PLUGIN_SRC.glob("*.rs") if p.stem != "lib")
    missing = [m for m in modules if f"`{m}`" not in row]
    assert not missing, f"the layout table leaves out {missing}"
    assert "adapter/" in row
    assert any(line.startswith("| `cli/` |") for line in text.splitlines()), "the layout table leaves out cli/"


def test_the_size_reader_reads_the_figure():
    assert stated_wasm_bytes("stripped symbols: **5.0 MiB** (5,212,199 bytes), most") == 5_212_199

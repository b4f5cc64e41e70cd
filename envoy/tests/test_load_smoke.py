"""Smoke run of the load benchmark (benches/load.py --smoke): every cell starts,
the allow and deny requests get 200 and 403 through Secretgate and through
ext_authz, and the table is produced. Seconds per cell; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import stack as stack_module

LOAD_PY = stack_module.REPO_ROOT / "benches" / "load.py"


def test_load_benchmark_smoke(tmp_path: Path):
    run_dir = tmp_path / "load"
    done = subprocess.run(
        [sys.executable, str(LOAD_PY), "--smoke", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=300, cwd=stack_module.REPO_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"

    results = json.loads((run_dir / "results.json").read_text())
    cells = {(r["upstream"], r["mode"]) for r in results}
    modes = ["none", "sg-allow", "sg-deny", "authz-allow", "authz-deny"]
    assert cells == {(upstream, mode) for upstream in ("static", "openbao") for mode in modes}
    for result in results:
        for run in (result["throughput"], result["latency"]):
            assert run["requests"] > 0, result
        assert result["envoy_rss_kib"], result
        # The filter's own gauge: its VMs' linear memory, only where it runs.
        if result["mode"].startswith("sg-"):
            assert result["wasm_memory_bytes"] > 0, result
        else:
            assert result["wasm_memory_bytes"] is None, result

    table = (run_dir / "results.md").read_text()
    assert "(2) Secretgate, allow" in table and "(4) ext_authz + cedar-authz, allow" in table
    assert table.count("\n| static |") == len(modes) and table.count("\n| openbao |") == len(modes)

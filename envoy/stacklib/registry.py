"""A throwaway OCI registry on loopback: Debian's ``docker-registry`` (CNCF
distribution 2.8), installed by ``envoy/setup.sh``, with filesystem storage
in a folder of the caller's, started on a free 127.0.0.1 port and stopped by
its PID. Never the system service: the package's own configuration listens
on every interface.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

from .binaries import LOOPBACK, _http, free_ports, port_accepts
from .processes import StackError, _file_size, _spawn, _write_private, stop_process, wait_ready

DOCKER_REGISTRY = "/usr/bin/docker-registry"


def registry_config(storage: Path, port: int, http_secret: str) -> str:
    """distribution's YAML: loopback only, blobs under ``storage``, no health checks, no auth.
    (JSON is valid YAML, so no YAML writer is needed.)"""
    return json.dumps(
        {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": False}},
            # A fixed secret per run: without one the registry logs a warning and makes one up.
            "http": {"addr": f"{LOOPBACK}:{port}", "secret": http_secret},
        },
        indent=2,
    )


class LocalRegistry:
    """``with LocalRegistry(folder) as registry:`` a registry at ``registry.host`` (``127.0.0.1:PORT``)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.port: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        if self.port is None:
            raise StackError("the registry is not started")
        return f"{LOOPBACK}:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "registry.log"

    def start(self) -> "LocalRegistry":
        if not os.access(DOCKER_REGISTRY, os.X_OK):
            raise StackError(f"{DOCKER_REGISTRY} is missing: run envoy/setup.sh (apt-get install docker-registry)")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        config = self.folder / "config.yml"
        _write_private(config, registry_config(self.folder / "storage", self.port, secrets.token_hex(16)))
        offset = _file_size(self.log)
        self._process = _spawn([DOCKER_REGISTRY, "serve", str(config)], self.log, dict(os.environ))
        port = self.port
        wait_ready(
            "docker-registry",
            self._process,
            [self.log],
            [offset],
            lambda: port_accepts(port) and _http("GET", f"http://{LOOPBACK}:{port}/v2/")[0] == 200,
        )
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process.pid, DOCKER_REGISTRY, self._process)
            self._process = None

    def __enter__(self) -> "LocalRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""A static file server for the filter's code: Envoy fetches ``secretgate.wasm``
from it when the bootstrap loads the filter with ``vm_config.code.remote``
(see ``envoy_config.remote_wasm_code``), as a deployment fetches it from an
artifact server or registry instead of reading a file on the proxy's disk.

It is Python's own ``http.server``, bound to 127.0.0.1 in a process of its own
and stopped by its PID. Its log has one line per request, which is how tests
count Envoy's fetches (and retries).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .binaries import LOOPBACK, free_ports, port_accepts
from .processes import _file_size, _spawn, stop_process, wait_ready


def sha256_hex(path: str | os.PathLike) -> str:
    """The lowercase hex SHA-256 of a file, as ``vm_config.code.remote.sha256`` takes it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class CodeServer:
    """Serves ``directory`` over HTTP on a loopback port of its own.

    ``publish(module)`` copies a module into the directory, so the file Envoy
    fetches is a copy the test controls, not the build output.
    """

    def __init__(self, directory: str | os.PathLike, log: str | os.PathLike):
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = Path(log)
        (self.port,) = free_ports(1)
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{name}"

    def publish(self, module: str | os.PathLike, name: str | None = None) -> str:
        """Copy ``module`` into the served directory; returns its URL."""
        target = self.directory / (name or Path(module).name)
        shutil.copyfile(module, target)
        return self.url(target.name)

    def start(self) -> None:
        self.stop()
        argv = [
            sys.executable, "-m", "http.server", str(self.port),
            "--bind", LOOPBACK,
            "--directory", str(self.directory),
        ]  # fmt: skip
        offset = _file_size(self.log)
        # -u: unbuffered, so each request's log line is on disk when it is answered.
        self._process = _spawn([argv[0], "-u", *argv[1:]], self.log, dict(os.environ))
        port = self.port
        wait_ready("code server", self._process, [self.log], [offset], lambda: port_accepts(port))

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process.pid, sys.executable, self._process)
            self._process = None

    def fetches(self, name: str) -> int:
        """How many GET requests for ``name`` the server has answered (its log's request lines)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return len(re.findall(rf'"GET /{re.escape(name)} HTTP/1\.[01]" 200 ', text))

    def __enter__(self) -> "CodeServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

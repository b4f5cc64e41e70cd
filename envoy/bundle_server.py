#!/usr/bin/env python3
"""A small static bundle server: serves a policies directory as a Secretgate bundle.

    python envoy/bundle_server.py --dir policies --port 8181

``GET /bundle.json`` answers the bundle: ``bundle.json`` from the directory
if there is one, verbatim; otherwise one assembled on every request from
``schema.cedarschema``, ``policies.cedar`` and ``entities.json`` (so editing
a file takes effect at the filter's next refresh). Every answer carries an
``ETag`` (the SHA-256 of its bytes) and honours ``If-None-Match`` with 304.

``GET /bundle.json.sha256`` announces the digest, as ``sha256sum`` prints
it: the directory's own ``bundle.json.sha256`` if present, otherwise the
digest of the bundle being served.

Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"
BUNDLE_PATH = "/bundle.json"
DIGEST_PATH = "/bundle.json.sha256"


def bundle_bytes(directory: Path) -> bytes:
    """The bundle the directory stands for (see the module docstring)."""
    static = directory / "bundle.json"
    if static.is_file():
        return static.read_bytes()
    bundle = {
        "schema": (directory / "schema.cedarschema").read_text(),
        "policies": (directory / "policies.cedar").read_text(),
        "entities": json.loads((directory / "entities.json").read_text()),
    }
    text = json.dumps(bundle, sort_keys=True)
    bundle["revision"] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return json.dumps(bundle, sort_keys=True).encode()


def digest_bytes(directory: Path) -> bytes:
    announced = directory / "bundle.json.sha256"
    if announced.is_file():
        return announced.read_bytes()
    return f"{hashlib.sha256(bundle_bytes(directory)).hexdigest()}  bundle.json\n".encode()


def handler_for(directory: Path):
    class BundleHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            try:
                if self.path == BUNDLE_PATH:
                    body, content_type = bundle_bytes(directory), "application/json"
                elif self.path == DIGEST_PATH:
                    body, content_type = digest_bytes(directory), "text/plain"
                else:
                    self._answer(404, b"not found\n", "text/plain")
                    return
            except (OSError, ValueError) as error:
                self._answer(500, f"{error}\n".encode(), "text/plain")
                return
            etag = f'"{hashlib.sha256(body).hexdigest()}"'
            if self.headers.get("If-None-Match") == etag:
                self._answer(304, b"", None, etag)
                return
            self._answer(200, body, content_type, etag)

        def _answer(self, status: int, body: bytes, content_type: str | None, etag: str | None = None):
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            if etag:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    return BundleHandler


class BundleServer:
    """The server in a background thread (tests); ``port=0`` picks a free port."""

    def __init__(self, directory: str | Path, port: int = 0):
        self.directory = Path(directory)
        self.httpd = http.server.ThreadingHTTPServer((LOOPBACK, port), handler_for(self.directory))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "BundleServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bundle_server.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="policies directory to serve")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    httpd = http.server.ThreadingHTTPServer((LOOPBACK, args.port), handler_for(Path(args.dir)))
    print(f"serving {args.dir} as a bundle on http://{LOOPBACK}:{args.port}{BUNDLE_PATH}", flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

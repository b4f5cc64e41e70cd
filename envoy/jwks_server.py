#!/usr/bin/env python3
"""A stand-in for a CI provider's JWKS endpoint (GitHub's
``https://token.actions.githubusercontent.com/.well-known/jwks``).

    python envoy/jwks_server.py --file <run dir>/jwks.json --port 8182

``GET /.well-known/jwks`` answers the file's bytes, read again on every
request, so replacing the file rotates the keys Envoy sees at its next fetch.
Every answer is logged as one ``served ...`` line on stdout, which the stack
counts as Envoy's fetches. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.server
import json
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
JWKS_PATH = "/.well-known/jwks"


def handler_for(jwks_file: Path):
    class JwksHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path != JWKS_PATH:
                self._answer(404, b"not found\n", "text/plain")
                return
            try:
                body = jwks_file.read_bytes()
                kids = [key.get("kid") for key in json.loads(body)["keys"]]
            except (OSError, ValueError, KeyError, TypeError) as error:
                self._answer(500, f"{error}\n".encode(), "text/plain")
                print(f"failed {self.path}: {error}", flush=True)
                return
            self._answer(200, body, "application/json")
            print(f"served {self.path} kids={','.join(map(str, kids))} at={time.time():.3f}", flush=True)

        def _answer(self, status: int, body: bytes, content_type: str):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # one line per answer is printed above, in a form the stack counts

    return JwksHandler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jwks_server.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", required=True, help="the JWKS file to serve")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    httpd = http.server.ThreadingHTTPServer((LOOPBACK, args.port), handler_for(Path(args.file)))
    print(f"serving {args.file} on http://{LOOPBACK}:{args.port}{JWKS_PATH}", flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

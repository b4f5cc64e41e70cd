"""Headless Debian chromium driven over the Chrome DevTools Protocol (CDP).

Just enough of CDP for the approver page: navigate, evaluate, type, and click
with real (trusted) mouse events at an element's position. Chromium is started
in its own process group with a throwaway profile and stopped by that group's
id. envoy/setup.sh installs the browser; a missing one is an error, not a skip.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import websocket

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
]


class CdpError(RuntimeError):
    pass


class Chromium:
    def __init__(self, profile: Path, log: Path):
        if not os.access(CHROMIUM, os.X_OK):
            raise AssertionError(f"{CHROMIUM} is missing: run envoy/setup.sh (it installs Debian's chromium)")
        self.profile = Path(profile)
        self.profile.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log)
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the renderers too
            )
        self.ws: websocket.WebSocket | None = None
        self._ids = itertools.count(1)
        # Events of the domains a test enabled (Network.enable, ...), in order.
        self.events: list[dict] = []
        try:
            self._connect()
        except BaseException:
            self.stop()
            raise

    def _connect(self, timeout: float = 30.0) -> None:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        port = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"chromium exited with {self.process.returncode}: {self.log_tail()}")
            lines = active.read_text().splitlines() if active.exists() else []
            if len(lines) >= 2:
                port = int(lines[0])
                break
            time.sleep(0.05)
        if port is None:
            raise AssertionError(f"chromium wrote no DevToolsActivePort within {timeout}s: {self.log_tail()}")
        target = self._page_target(port, deadline)
        # No Origin header: Chromium refuses DevTools websockets from origins it was not told to allow.
        self.ws = websocket.create_connection(target, timeout=20, suppress_origin=True)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _page_target(self, port: int, deadline: float) -> str:
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", "/json/list")
                targets = json.loads(connection.getresponse().read())
            except OSError:
                targets = []
            finally:
                connection.close()
            for target in targets:
                if target.get("type") == "page" and target.get("webSocketDebuggerUrl"):
                    return target["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise AssertionError(f"chromium offered no page target: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ CDP

    def call(self, method: str, **params) -> dict:
        assert self.ws is not None
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if "method" in message and "id" not in message:
                self.events.append(message)
                continue
            if message.get("id") == call_id:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0):
        """Poll until the expression is truthy; a page mid-navigation just means not yet."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
                if last:
                    return last
            except CdpError as error:  # e.g. the execution context was destroyed by a navigation
                last = error
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression} (last: {last}); page: {self.text()!r}")

    def navigate(self, url: str) -> None:
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise AssertionError(f"navigating to {url}: {result['errorText']}")

    def text(self) -> str:
        try:
            return self.evaluate("document.body ? document.body.innerText : ''") or ""
        except CdpError:
            return ""

    def url(self) -> str:
        return self.evaluate("location.href")

    def type_into(self, selector: str, text: str) -> None:
        """Click into the field and type as a user would (Input.insertText goes through the editing path)."""
        self.click(selector)
        self.call("Input.insertText", text=text)
        typed = self.evaluate(f"document.querySelector({json.dumps(selector)}).value")
        assert typed == text, f"typed into {selector}: {typed!r}"

    def click(self, selector: str) -> None:
        """A real mouse click (press + release) at the centre of the element, as a user's would be."""
        box = self.wait_for(
            f"""(() => {{
                const e = document.querySelector({json.dumps(selector)});
                if (!e) return null;
                e.scrollIntoView({{block: "center"}});
                const r = e.getBoundingClientRect();
                return r.width > 0 && r.height > 0 ? {{x: r.x + r.width / 2, y: r.y + r.height / 2}} : null;
            }})()"""
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    # ------------------------------------------------------------- teardown

    def stop(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except OSError:
                pass
            self.ws = None
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Renderers and helpers share the group; make sure none outlives the test.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

"""Starting and stopping the stack's processes by PID, and what goes wrong doing so.

Every process runs in its own session (process group), so it is stopped as a
unit by the PID recorded for it, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 40


class StackError(RuntimeError):
    """A stack process could not be started or configured."""


class ProcessStartupError(StackError):
    """A process exited (or never became ready) during startup.

    ``returncode`` is None when it was still running at the deadline (it has
    then been killed); ``log_tail`` holds the end of its logs for diagnosis.
    """

    def __init__(self, name: str, returncode: int | None, log_tail: str):
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail
        if returncode is None:
            what = f"{name} did not become ready within {STARTUP_TIMEOUT_S:.0f}s"
        else:
            what = f"{name} exited with code {returncode} during startup"
        super().__init__(f"{what}; last log lines:\n{log_tail}")


def _write_private(path: Path, data: bytes | str) -> None:
    """Write a file only the owner can read (keys, root token)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, 0o600)


def _log_tail(path: Path, start_offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(start_offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return f"({path} not readable)"
    # Cut very long lines (Envoy logs its whole extension list at startup): the tail is for diagnosis.
    return "\n".join(line if len(line) <= 400 else line[:400] + " [...]" for line in text.splitlines()[-lines:])


def _file_size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _child_env(home: Path) -> dict:
    """The environment for bao/envoy: no inherited Vault/OpenBao settings, a private HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(home)
    return env


def _spawn(argv: list[str], output: Path, env: dict) -> subprocess.Popen:
    """Start a process in its own session/process group so it can be stopped as a unit by its PID."""
    with open(output, "ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def pid_is_running(pid: int, exe: str | None = None) -> bool:
    """True if ``pid`` is a live (not zombie) process, and when ``exe`` is given, runs that binary.

    Checking the binary keeps a stale state.json from ever signalling an
    unrelated process that reused the PID.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return False
    return exe is None or argv0 == exe


def stop_process(pid: int | None, exe: str | None, popen: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after a grace period. Safe if already gone."""
    if not pid or not pid_is_running(pid, exe):
        if popen is not None:
            popen.poll()
        return
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        if _wait_gone(pid, exe, popen, wait_s):
            return
    raise StackError(f"process {pid} ({exe}) survived SIGKILL")


def _wait_gone(pid: int, exe: str | None, popen: subprocess.Popen | None, timeout: float) -> bool:
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout)
        return popen.poll() is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_is_running(pid, exe):
            return True
        time.sleep(0.05)
    return not pid_is_running(pid, exe)



def wait_ready(name: str, process: subprocess.Popen, logs: list[Path], offsets: list[int], is_ready) -> None:
    """Poll ``is_ready`` until true; raise with the logs written since ``offsets`` if the process dies or stalls."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProcessStartupError(name, process.returncode, log_tails(logs, offsets))
        if is_ready():
            return
        time.sleep(0.1)
    stop_process(process.pid, None, process)
    raise ProcessStartupError(name, None, log_tails(logs, offsets))


def log_tails(logs, offsets) -> str:
    return "\n".join(f"--- {log.name}\n{_log_tail(log, offset)}" for log, offset in zip(logs, offsets))

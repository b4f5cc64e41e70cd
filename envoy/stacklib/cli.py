"""The real Secretgate stack on loopback: OpenBao (dev) behind Envoy + the secretgate filter.

The command line of ``envoy/stack.py`` (see its docstring for the commands).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from .binaries import ENVOY_DIR, POLICIES_DIR, WASM_ENV_VAR
from .plugin_config import (
    APPROVER_CLUSTER,
    HEADER_IDENTITY,
    JWT_IDENTITY,
    bundle_plugin_config,
    plugin_config,
    with_approval,
)
from .processes import STARTUP_TIMEOUT_S, StackError, _file_size, _log_tail, _spawn, stop_process
from .stack import Stack, down, read_state, running_pids
from .tokens import DevSigningKey, github_actions_claims, github_claims, gitlab_ci_claims

STACK_PY = ENVOY_DIR / "stack.py"
# The keyword arguments of github_actions_claims / gitlab_ci_claims that mint-jwt takes from --claim.
DERIVING_CLAIMS = {
    "github": ("repository", "ref", "environment", "event_name"),
    "gitlab": ("project_path", "ref", "ref_type", "environment", "pipeline_source", "user_login"),
}

def _parse_claims(pairs: list[str]) -> dict:
    """``name=value`` sets a string claim, ``name:=json`` a typed one (e.g. ``iat:=0``, ``ref_protected:=null``)."""
    claims = {}
    for pair in pairs:
        if ":=" in pair:
            name, raw = pair.split(":=", 1)
            claims[name] = json.loads(raw)
        elif "=" in pair:
            name, value = pair.split("=", 1)
            claims[name] = value
        else:
            raise SystemExit(f"--claim expects name=value or name:=json, got {pair!r}")
    return claims


def _stack_from_args(args) -> Stack:
    identity = HEADER_IDENTITY if args.identity == "header" else JWT_IDENTITY
    if args.bundle:
        config = bundle_plugin_config(identity=identity, policies_dir=args.policies)
    else:
        config = plugin_config(args.policies, identity)
    if args.approver_port:
        config = with_approval(config, _read_token(args.approval_token_file))
    stack = Stack(args.run_dir, plugin_config=config, wasm=args.wasm, bundle_dir=args.policies if args.bundle else None)
    if args.approver_port:
        stack.extra_clusters[APPROVER_CLUSTER] = args.approver_port
    return stack


def _read_token(path: str) -> str:
    """The callout token from its file (one line; a trailing newline is not part of it)."""
    token = Path(path).read_text().strip()
    if not token:
        raise SystemExit(f"--approval-token-file {path} is empty")
    return token


def _check_approval_args(parser: argparse.ArgumentParser, args) -> None:
    if args.command in ("up", "serve") and bool(args.approver_port) != bool(args.approval_token_file):
        parser.error("--approver-port and --approval-token-file go together")


def _cmd_serve(args) -> int:
    """Run the stack in the foreground until SIGTERM/SIGINT, then stop it."""
    if running_pids(args.run_dir):
        print(f"stack already running in {args.run_dir} (see state.json); run 'down' first", file=sys.stderr)
        return 1
    stop_requested = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop_requested.append(signum))
    stack = _stack_from_args(args)
    stack.keeper_pid = os.getpid()
    try:
        stack.start()
        stack.status = "up"
        stack._write_state()
        print(f"OpenBao {stack.bao_url} pid {stack._bao.pid}; Envoy {stack.envoy_url} pid {stack._envoy.pid}", flush=True)
        while not stop_requested:
            time.sleep(0.2)  # polling, unlike pause(), cannot miss a signal that lands just before it
    except BaseException:
        stack.status = "failed"
        raise
    finally:
        stack.keeper_pid = None
        stack.stop()
        if stack.status != "failed":
            stack.status = "down"
        stack._write_state()
    return 0


def _cmd_up(args) -> int:
    """Start the stack in the background and return once it is ready.

    Envoy asks the kernel for SIGTERM when its parent exits
    (prctl(PR_SET_PDEATHSIG) at startup), so it cannot simply be left behind by
    this short-lived command: a detached keeper process (`stack.py serve`)
    starts and parents OpenBao and Envoy and stays until `down`.
    """
    run_dir = Path(args.run_dir).resolve()
    if running_pids(run_dir):
        print(f"stack already running in {run_dir} (see state.json); run 'down' first", file=sys.stderr)
        return 1
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / "state.json").unlink()
    argv = [sys.executable, str(STACK_PY), "serve", "--run-dir", str(run_dir),
            "--policies", args.policies, "--identity", args.identity]  # fmt: skip
    if args.wasm:
        argv += ["--wasm", args.wasm]
    if args.bundle:
        argv.append("--bundle")
    if args.approver_port:
        _read_token(args.approval_token_file)  # an unreadable or empty file fails here, not in the keeper
        argv += ["--approver-port", str(args.approver_port),
                 "--approval-token-file", str(Path(args.approval_token_file).resolve())]  # fmt: skip
    keeper_log = run_dir / "keeper.log"
    offset = _file_size(keeper_log)
    keeper = _spawn(argv, keeper_log, dict(os.environ))
    try:
        state = _wait_for_keeper(keeper, run_dir, 3 * STARTUP_TIMEOUT_S)
    except BaseException as error:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning up even on a second Ctrl-C
        stop_process(keeper.pid, None, keeper)
        down(run_dir)
        if isinstance(error, KeyboardInterrupt):
            print("interrupted; everything started was stopped", file=sys.stderr)
            return 130
        print(f"stack failed to start ({error}); {keeper_log}:\n{_log_tail(keeper_log, offset)}", file=sys.stderr)
        return 1
    print(f"OpenBao  {state['bao']['url']}  (pid {state['bao']['pid']}, audit log {state['bao']['audit_log']})")
    print(f"Envoy    {state['envoy']['url']}  (pid {state['envoy']['pid']}, admin {state['envoy']['admin_url']})")
    print(f"keeper   pid {keeper.pid}, log {keeper_log}")
    print(f"state    {run_dir / 'state.json'}  (root token inside; stop with: stack.py down --run-dir {args.run_dir})")
    return 0


def _wait_for_keeper(keeper: subprocess.Popen, run_dir: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if keeper.poll() is not None:
            raise StackError(f"keeper exited with code {keeper.returncode}")
        with contextlib.suppress(json.JSONDecodeError):
            state = read_state(run_dir)
            if state and state.get("status") == "up":
                return state
        time.sleep(0.1)
    raise StackError("stack did not come up in time")


def _cmd_down(args) -> int:
    # Finish stopping even if Ctrl-C is pressed again: a half-done down leaves orphans.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopped = down(args.run_dir)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def _cmd_mint_jwt(args) -> int:
    """The demo token by default; ``--github``/``--gitlab`` a token shaped as that CI system sends it
    (``--claim`` overrides any claim, a null one drops it)."""
    key = DevSigningKey.load_or_create(Path(args.run_dir))
    overrides = _parse_claims(args.claim)
    if args.shape == "demo":
        claims = github_claims(overrides, args.ttl)
    else:
        shaped = github_actions_claims if args.shape == "github" else gitlab_ci_claims
        # Claims the CI system derives others from (sub, repository_owner, namespace_path,
        # ...) shape the token, so an overridden repository or project stays coherent.
        deriving = {name: overrides[name] for name in DERIVING_CLAIMS[args.shape] if isinstance(overrides.get(name), str)}
        claims = {**shaped(ttl=args.ttl, **deriving), **overrides}
    print(key.sign({name: value for name, value in claims.items() if value is not None}))
    return 0


def _cmd_env(args) -> int:
    """Shell exports for a separate shell (contains the dev root token: meant for eval, not for reading)."""
    state = read_state(args.run_dir)
    if state is None:
        print(f"no state.json in {args.run_dir}", file=sys.stderr)
        return 1
    exports = {
        "SECRETGATE_URL": state["envoy"]["url"],
        "SECRETGATE_BAO_DIRECT_URL": state["bao"]["url"],
        "BAO_ADDR": state["envoy"]["url"],
        "BAO_TOKEN": state["bao"]["root_token"],
        "BAO_BIN": state["bao"]["exe"],
    }
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start OpenBao and Envoy in the background, return when ready")
    up.set_defaults(handler=_cmd_up)
    serve = commands.add_parser("serve", help="run OpenBao and Envoy in the foreground until SIGTERM/Ctrl-C")
    serve.set_defaults(handler=_cmd_serve)
    for starter in (up, serve):
        starter.add_argument("--policies", default=str(POLICIES_DIR), help="Cedar schema/policies/entities directory")
        starter.add_argument("--identity", choices=["jwt", "header"], default="jwt")
        starter.add_argument("--wasm", default=None, help=f"filter .wasm (default: ${WASM_ENV_VAR} or cargo's output)")
        starter.add_argument(
            "--bundle", action="store_true", help="serve --policies as a live bundle (edits apply within 5 s)"
        )
        starter.add_argument(
            "--approver-port", type=int, default=None, metavar="PORT",
            help="the approval service (approver/) listening on 127.0.0.1:PORT: Envoy gets the cluster"
            " 'approver' and the filter an 'approval' section for @approval permits",
        )  # fmt: skip
        starter.add_argument(
            "--approval-token-file", default=None, metavar="FILE",
            help="the callout token the filter sends the approval service (from a file: argv is visible in ps)",
        )  # fmt: skip

    stop = commands.add_parser("down", help="stop everything recorded in state.json")
    stop.set_defaults(handler=_cmd_down)

    mint = commands.add_parser("mint-jwt", help="print a CI JWT signed with the run dir's dev key")
    mint.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE|NAME:=JSON")
    mint.add_argument("--ttl", type=int, default=600)
    shape = mint.add_mutually_exclusive_group()
    shape.add_argument("--github", dest="shape", action="store_const", const="github",
                       help="a GitHub Actions token as GitHub shapes it (sub derived from repository, ref, environment)")
    shape.add_argument("--gitlab", dest="shape", action="store_const", const="gitlab",
                       help="a GitLab CI id_token (project_path, namespace_path, ...)")
    mint.set_defaults(shape="demo")
    mint.set_defaults(handler=_cmd_mint_jwt)

    env = commands.add_parser("env", help="print shell exports for the running stack (for eval)")
    env.set_defaults(handler=_cmd_env)

    for sub in (up, serve, stop, mint, env):
        sub.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    _check_approval_args(parser, args)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

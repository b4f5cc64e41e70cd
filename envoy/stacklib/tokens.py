"""CI identity tokens: GitHub Actions and GitLab CI shaped claims, the development
signing keys, and the JWKS that Envoy fetches them from.

Envoy's ``jwt_authn`` verifies tokens against a remote JWKS, as it does in
production against the CI provider's JWKS URL. Here ``envoy/jwks_server.py``
stands in for the provider: it serves the run dir's ``jwks.json`` and reads it
again on every request, so a test rotates keys by publishing another set.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .binaries import ENVOY_DIR, LOOPBACK, free_ports, port_accepts
from .processes import _file_size, _spawn, _write_private, pid_is_running, stop_process, wait_ready

JWT_ISSUER = "https://ci.secretgate.local"
JWT_AUDIENCE = "secretgate"
JWT_HEADER = "x-secretgate-jwt"
JWT_PROVIDER = "ci"
CLAIMS_METADATA_KEY = "ci_claims"

# Where Envoy fetches the JWKS: a cluster of its own (as in production, where
# it points at the provider), the path GitHub publishes its keys under.
JWKS_CLUSTER = "jwks"
JWKS_HOST = "jwks.secretgate.local"
JWKS_PATH = "/.well-known/jwks"
JWKS_FILE = "jwks.json"
# How long Envoy keeps a fetched JWKS before fetching again (seconds).
DEFAULT_JWKS_CACHE_S = 300


# ---------------------------------------------------------------- claims


def _subject_value(value: str) -> str:
    """A value inside a GitHub ``sub``: a colon is sent as %3A, so the subject still splits on ':'."""
    return value.replace(":", "%3A")


def github_actions_claims(
    repository: str = "acme/api",
    *,
    ref: str = "refs/heads/main",
    environment: str | None = None,
    event_name: str = "push",
    ref_protected: bool = True,
    immutable_sub: bool = False,
    repository_id: str = "690001",
    repository_owner_id: str = "1001",
    workflow: str = "deploy",
    actor: str = "acme-bot",
    subject: str | None = None,
    issuer: str = JWT_ISSUER,
    audience: str = JWT_AUDIENCE,
    now: int | None = None,
    ttl: int = 600,
) -> dict:
    """The claims of a GitHub Actions OIDC token (``id-token: write``) for ``repository``.

    ``sub`` is derived as GitHub derives it: ``repo:ORG/REPO:environment:ENV``
    for a job with an environment, ``repo:ORG/REPO:pull_request`` for a pull
    request, else ``repo:ORG/REPO:ref:REF``. ``subject`` ("ref",
    "environment", "pull_request") forces one form. ``immutable_sub`` gives the
    form newer repositories get, ``repo:OWNER@OWNER_ID/REPO@REPO_ID:...``,
    which survives renames. Like GitHub, ids and ``ref_protected`` are strings.
    """
    now = int(time.time()) if now is None else now
    owner, name = repository.split("/", 1)
    if subject is None:
        subject = "environment" if environment else "pull_request" if event_name == "pull_request" else "ref"
    who = f"{owner}@{repository_owner_id}/{name}@{repository_id}" if immutable_sub else repository
    context = {
        "ref": f"ref:{_subject_value(ref)}",
        "environment": f"environment:{_subject_value(environment or '')}",
        "pull_request": "pull_request",
    }[subject]
    workflow_ref = f"{repository}/.github/workflows/{workflow}.yml@{ref}"
    claims = {
        "jti": str(uuid.uuid4()),
        "sub": f"repo:{who}:{context}",
        "aud": audience,
        "ref": ref,
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "repository": repository,
        "repository_owner": owner,
        "repository_owner_id": repository_owner_id,
        "repository_id": repository_id,
        "repository_visibility": "private",
        "run_id": "4242424242",
        "run_number": "17",
        "run_attempt": "1",
        "actor_id": "424242",
        "actor": actor,
        "workflow": workflow,
        "event_name": event_name,
        "ref_protected": "true" if ref_protected else "false",
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "workflow_ref": workflow_ref,
        "workflow_sha": "0123456789abcdef0123456789abcdef01234567",
        "job_workflow_ref": workflow_ref,
        "job_workflow_sha": "0123456789abcdef0123456789abcdef01234567",
        "runner_environment": "github-hosted",
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }
    if environment is not None:
        claims["environment"] = environment
    return claims


def gitlab_ci_claims(
    project_path: str = "acme/api",
    *,
    ref: str = "main",
    ref_type: str = "branch",
    ref_protected: bool = True,
    environment: str | None = None,
    environment_protected: bool = False,
    pipeline_source: str = "push",
    user_login: str = "acme-bot",
    project_id: str = "4242",
    namespace_id: str = "77",
    issuer: str = JWT_ISSUER,
    audience: str = JWT_AUDIENCE,
    now: int | None = None,
    ttl: int = 600,
) -> dict:
    """The claims of a GitLab CI ``id_tokens`` token for ``project_path`` (``GROUP/PROJECT``).

    ``sub`` is ``project_path:GROUP/PROJECT:ref_type:branch:ref:main``. GitLab
    too sends ids and booleans (``ref_protected``, ``environment_protected``)
    as strings.
    """
    now = int(time.time()) if now is None else now
    namespace_path = project_path.rsplit("/", 1)[0]
    ref_path = f"refs/{'tags' if ref_type == 'tag' else 'heads'}/{ref}"
    claims = {
        "namespace_id": namespace_id,
        "namespace_path": namespace_path,
        "project_id": project_id,
        "project_path": project_path,
        "project_visibility": "private",
        "user_id": "424242",
        "user_login": user_login,
        "user_email": f"{user_login}@acme.test",
        "user_access_level": "developer",
        "pipeline_id": "9001",
        "pipeline_source": pipeline_source,
        "job_id": "90017",
        "ref": ref,
        "ref_type": ref_type,
        "ref_path": ref_path,
        "ref_protected": "true" if ref_protected else "false",
        "runner_id": "12",
        "runner_environment": "gitlab-hosted",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "ci_config_ref_uri": f"gitlab.com/{project_path}//.gitlab-ci.yml@{ref_path}",
        "ci_config_sha": "0123456789abcdef0123456789abcdef01234567",
        "jti": str(uuid.uuid4()),
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "sub": f"project_path:{project_path}:ref_type:{ref_type}:ref:{ref}",
        "aud": audience,
    }
    if environment is not None:
        claims["environment"] = environment
        claims["environment_protected"] = "true" if environment_protected else "false"
        claims["deployment_tier"] = "production" if environment == "production" else "other"
    return claims


def default_claims(now: int | None = None, ttl: int = 600, repository: str = "acme/api", ref: str = "refs/heads/main") -> dict:
    """The demo's GitHub-Actions-shaped token: acme/api on a protected main branch.

    It carries ``environment: ci`` but keeps the ``ref`` subject, because the
    demo entities (policies/entities.json) name workloads by that subject.
    """
    return github_actions_claims(repository, ref=ref, environment="ci", subject="ref", now=now, ttl=ttl)


def github_claims(overrides: dict | None = None, ttl: int = 600) -> dict:
    """Default claims with ``overrides`` applied.

    Claims that GitHub derives from others (sub, repository_owner,
    workflow_ref, job_workflow_ref) follow an overridden repository/ref unless
    they are overridden themselves, so ``{"repository": "acme/web"}`` yields a
    coherent acme/web token. An override whose value is None removes that claim.
    """
    overrides = dict(overrides or {})
    derived_from = {name: overrides[name] for name in ("repository", "ref") if isinstance(overrides.get(name), str)}
    claims = default_claims(ttl=ttl, **derived_from)
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


# ---------------------------------------------------------------- signing keys


class DevSigningKey:
    """A development RSA key, created once per run dir and name, that signs CI tokens.

    The unnamed key (``jwt-signing-key.pem``) is the one the stack publishes at
    start; named keys (``jwt-signing-key-<name>.pem``) are for rotation tests.
    Its ``kid`` is derived from the public key, so it is stable per file.
    """

    FILE_NAME = "jwt-signing-key.pem"

    def __init__(self, private_key: rsa.RSAPrivateKey):
        self._key = private_key
        public_der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha256(public_der).hexdigest()[:16]

    @classmethod
    def file_name(cls, name: str = "") -> str:
        return f"jwt-signing-key-{name}.pem" if name else cls.FILE_NAME

    @classmethod
    def load_or_create(cls, run_dir: Path, name: str = "") -> "DevSigningKey":
        path = Path(run_dir) / cls.file_name(name)
        if path.exists():
            return cls(serialization.load_pem_private_key(path.read_bytes(), password=None))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
        return cls(key)

    def jwk(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return jwk

    def jwks(self) -> dict:
        return jwks_document([self])

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        """An RS256 token of exactly ``claims`` (no defaults added), with this key's ``kid``."""
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, **(headers or {})})

    def mint(self, claims: dict | None = None, ttl: int = 600) -> str:
        """The demo token (``github_claims``) with ``claims`` overriding its defaults."""
        return self.sign(github_claims(claims, ttl))


def jwks_document(keys: list[DevSigningKey]) -> dict:
    return {"keys": [key.jwk() for key in keys]}


def write_jwks(path: Path, keys: list[DevSigningKey]) -> None:
    """Replace the JWKS file in one step: the server never reads half of it."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(jwks_document(keys), indent=2) + "\n")
    os.replace(partial, path)


# ---------------------------------------------------------------- the JWKS server


class JwksServer:
    """``envoy/jwks_server.py`` in a process of its own, on a free loopback port.

    It serves ``<run dir>/jwks.json`` at ``JWKS_PATH`` and logs one line per
    request to ``jwks-server.log``, so tests can count Envoy's fetches.
    """

    LOG = "jwks-server.log"

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.file = self.run_dir / JWKS_FILE
        self.port: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.run_dir / self.LOG

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    @property
    def url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.port}{JWKS_PATH}" if self.port else None

    def running(self) -> bool:
        return self.pid is not None and pid_is_running(self.pid, sys.executable)

    def publish(self, keys: list[DevSigningKey]) -> None:
        """Serve exactly ``keys`` from the next request on (Envoy sees them at its next fetch)."""
        write_jwks(self.file, keys)

    def start(self) -> None:
        if self.running():
            return
        if self.port is None:  # kept across restarts: Envoy's cluster points at it
            (self.port,) = free_ports(1)
        argv = [sys.executable, str(ENVOY_DIR / "jwks_server.py"), "--file", str(self.file), "--port", str(self.port)]
        offset = _file_size(self.log)
        self._process = _spawn(argv, self.log, dict(os.environ))
        wait_ready("JWKS server", self._process, [self.log], [offset], lambda: port_accepts(self.port))

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process.pid, sys.executable, self._process)
            self._process = None

    def fetches(self) -> int:
        """How many times the JWKS was served (to anyone: only Envoy asks)."""
        try:
            return sum(1 for line in self.log.read_text().splitlines() if line.startswith("served "))
        except FileNotFoundError:
            return 0

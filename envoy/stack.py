#!/usr/bin/env python3
"""The real Secretgate stack on loopback: OpenBao (dev) behind Envoy + the secretgate filter.

Importable (pytest fixtures use ``Stack``) and a CLI::

    python envoy/stack.py up       --run-dir envoy/.run [--identity jwt|header] [--wasm PATH]
                                   [--policies DIR] [--bundle]
                                   [--approver-port PORT --approval-token-file FILE]
    python envoy/stack.py serve    --run-dir envoy/.run     # same, in the foreground
    python envoy/stack.py down     --run-dir envoy/.run
    python envoy/stack.py mint-jwt --run-dir envoy/.run --claim repository=acme/web [--github|--gitlab]
    python envoy/stack.py env      --run-dir envoy/.run     # shell exports, for eval

Everything binds 127.0.0.1, every process runs in its own process group and is
stopped by the PID recorded in ``<run>/state.json``.

The code lives in ``stacklib/`` (one module per concern, see its
``__init__``); this file is the entry point and re-exports the names that
tests, the demo and the benchmarks import from ``stack``.
"""

from __future__ import annotations

import sys

from stacklib.binaries import (  # noqa: F401 (re-exported)
    CLI_ENV_VAR,
    DEFAULT_CLI,
    DEFAULT_WASM,
    ENVOY_DIR,
    LOOPBACK,
    POLICIES_DIR,
    REPO_ROOT,
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
from stacklib.bundles import BUNDLE_CLUSTER, SHADOW_CLUSTER, PolicyServer  # noqa: F401 (re-exported)
from stacklib.cli import main
from stacklib.code_server import CodeServer, sha256_hex  # noqa: F401 (re-exported)
from stacklib.envoy_config import (  # noqa: F401 (re-exported)
    CLIENT_ADDRESS_OPTIONS,
    FILTER_CODE_CLUSTER,
    FILTER_CODE_RETRIES,
    JWT_LOCAL_REPLY_CONFIG,
    _file_access_log_to,
    _json_access_log,
    _jwt_authn_filter,
    _loopback_cluster,
    _router_filter,
    secretgate_filter,
    _socket_address,
    downstream_tls_context,
    envoy_config,
    remote_wasm_code,
)
from stacklib.pki import CertFiles, DevPki  # noqa: F401 (re-exported)
from stacklib.registry import DOCKER_REGISTRY, LocalRegistry  # noqa: F401 (re-exported)
from stacklib.plugin_config import (  # noqa: F401 (re-exported)
    APPROVER_CLUSTER,
    DEV_AUDIT,
    DEV_AUDIT_KEY,
    HEADER_IDENTITY,
    JWT_IDENTITY,
    MOUNTS,
    MTLS_IDENTITY,
    PRINCIPAL_HEADER,
    bundle_plugin_config,
    default_plugin_config,
    plugin_config,
    with_approval,
    with_shadow,
)
from stacklib.processes import (  # noqa: F401 (re-exported)
    LOG_TAIL_LINES,
    STARTUP_TIMEOUT_S,
    STOP_GRACE_S,
    ProcessStartupError,
    StackError,
    _child_env,
    _file_size,
    _log_tail,
    _spawn,
    _write_private,
    pid_is_running,
    stop_process,
)
from stacklib.stack import STACK_PROCESSES, MountMismatchError, Stack, down, read_state, running_pids  # noqa: F401
from stacklib.tokens import (  # noqa: F401 (re-exported)
    CLAIMS_METADATA_KEY,
    DEFAULT_JWKS_CACHE_S,
    JWKS_CLUSTER,
    JWKS_PATH,
    JWT_AUDIENCE,
    JWT_HEADER,
    JWT_ISSUER,
    JWT_PROVIDER,
    DevSigningKey,
    JwksServer,
    default_claims,
    github_actions_claims,
    github_claims,
    gitlab_ci_claims,
    jwks_document,
)

if __name__ == "__main__":
    sys.exit(main())

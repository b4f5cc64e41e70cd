"""The secretgate filter's JSON configuration, as the stack builds it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .binaries import POLICIES_DIR
from .bundles import BUNDLE_CLUSTER, SHADOW_CLUSTER
from .tokens import CLAIMS_METADATA_KEY

PRINCIPAL_HEADER = "x-secretgate-principal"

# Which secrets-engine flavour is mounted where; the filter needs it to turn a
# Vault HTTP path into a (mount, secret path, action) triple.
# The plugin configuration takes the mounts (with their path templates) from
# the policies directory's config.json, when it has one.
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


def bundle_plugin_config(
    identity: dict | None = None,
    refresh_s: int = 5,
    digest: bool = True,
    policies_dir: str | os.PathLike = POLICIES_DIR,
) -> dict:
    """The plugin configuration that takes schema, policies and entities from a bundle server;
    the mounts and their templates stay inline, from ``policies_dir``'s config.json."""
    inline = plugin_config(policies_dir, identity)
    config = {key: value for key, value in inline.items() if key not in ("schema", "policies", "entities")}
    config["bundle"] = bundle_source(BUNDLE_CLUSTER, refresh_s, digest)
    return config


def with_shadow(config: dict, refresh_s: int = 1, digest: bool = True, **overrides) -> dict:
    """A copy of ``config`` that also evaluates a shadow policy set, fetched from the stack's
    shadow server (cluster "shadows", see ``Stack.start_shadow_server``). ``overrides`` replace
    keys of the ``shadow`` object (e.g. ``timeout_ms``). The shadow never decides: the records
    say what it would have decided."""
    shadowed = dict(config)
    shadowed["shadow"] = {**bundle_source(SHADOW_CLUSTER, refresh_s, digest), **overrides}
    return shadowed


def bundle_source(cluster: str, refresh_s: int, digest: bool) -> dict:
    """Where the filter fetches a bundle from, as ``bundle`` and ``shadow`` both take it:
    ``envoy/bundle_server.py``'s paths on ``cluster``."""
    source = {
        "cluster": cluster,
        "authority": f"{cluster}.local",
        "path": "/bundle.json",
        "refresh_s": refresh_s,
    }
    if digest:
        source["digest_path"] = "/bundle.json.sha256"
    return source


# The approval service's cluster in Envoy (``Stack.extra_clusters``), as the
# ``approval`` section names it.
APPROVER_CLUSTER = "approver"


def with_approval(config: dict, token: str, timeout_ms: int = 30000) -> dict:
    """A copy of ``config`` whose filter calls the approval service (``approver/``) on cluster
    "approver" for ``@approval`` permits, authenticated with the callout ``token``. The section
    belongs to the static configuration, also when the policies come from a bundle. The stack
    needs ``extra_clusters["approver"]`` set to the service's loopback port."""
    approving = dict(config)
    approving["approval"] = {
        "cluster": APPROVER_CLUSTER,
        "authority": f"{APPROVER_CLUSTER}.local",
        "timeout_ms": timeout_ms,
        "token": token,
    }
    return approving


def default_plugin_config(identity: dict | None = None) -> dict:
    """The plugin configuration for the repository's own policies/ directory."""
    return plugin_config(POLICIES_DIR, identity)


"""The secretgate filter's JSON configuration, as the stack builds it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .binaries import POLICIES_DIR
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


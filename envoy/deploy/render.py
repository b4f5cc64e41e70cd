#!/usr/bin/env python3
"""Renders the deployment manifests in envoy/deploy/ from one source of truth.

    .venv/bin/python envoy/deploy/render.py                 # rewrite the committed manifests
    .venv/bin/python envoy/deploy/render.py --check         # exit 1 if a committed file differs
    .venv/bin/python envoy/deploy/render.py --out DIR \\
        --code-url https://artifacts.example.com/secretgate/0.1.0/secretgate.wasm \\
        --code-sha256 "$(sha256sum secretgate.wasm | cut -d' ' -f1)" \\
        --image oci://registry.example.com/secretgate/filter:0.1.0 \\
        --image-digest <the image manifest's sha256>   # manifests for your deployment

The source of truth is this file plus the GitHub Actions policy pack
(``policies/packs/github-actions``): each target gets the same filter
configuration, differing only where its platform differs (where jwt_authn
puts the verified claims, where the policies come from). The committed files
carry placeholders (``example.com`` hosts, an all-zero digest, ``REPLACE-``
secrets); README "Manifests: Istio, Envoy Gateway, plain Kubernetes" says
which, and ``envoy/tests/test_deploy_manifests.py`` checks that the committed
files are what this renders, that every filter configuration in them loads
(``host-test check``) and that the plain-Envoy bootstrap passes
``envoy --mode validate``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

DEPLOY_DIR = Path(__file__).resolve().parent
ENVOY_DIR = DEPLOY_DIR.parent
REPO_ROOT = ENVOY_DIR.parent
PACK_DIR = REPO_ROOT / "policies" / "packs" / "github-actions"

sys.path.insert(0, str(ENVOY_DIR))
from bundle_server import bundle_bytes  # noqa: E402 (needs the sys.path entry above)
from stacklib.envoy_config import (  # noqa: E402
    CLIENT_ADDRESS_OPTIONS,
    JWT_LOCAL_REPLY_CONFIG,
    remote_wasm_code,
    secretgate_filter,
)

VERSION = tomllib.loads((REPO_ROOT / "plugin" / "Cargo.toml").read_text())["package"]["version"]
NAMESPACE = "secretgate"

# A digest no module has: a manifest applied without replacing it loads no
# filter, and so (fail closed) serves nothing, rather than an unverified module.
PLACEHOLDER_SHA256 = "0" * 64
PLACEHOLDER_CODE_URL = f"https://artifacts.example.com/secretgate/{VERSION}/secretgate.wasm"
PLACEHOLDER_IMAGE = f"oci://registry.example.com/secretgate/filter:{VERSION}"
PLACEHOLDER_HMAC_KEY = "REPLACE-with-32-random-bytes-audit-hmac-key"
PLACEHOLDER_CALLOUT_TOKEN = "REPLACE-with-the-approver-callout-token"
PLACEHOLDER_APPROVER_TOKEN = "REPLACE-with-an-approver-login-token"

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_JWKS_HOST = "token.actions.githubusercontent.com"
GITHUB_JWKS_URI = f"https://{GITHUB_JWKS_HOST}/.well-known/jwks"
# The job asks for it: core.getIDToken('secretgate').
AUDIENCE = "secretgate"
# Not Authorization: Vault clients send their Vault token there as a Bearer.
JWT_HEADER = "x-secretgate-jwt"

# Where each platform's jwt_authn puts the verified payload (its provider's
# payload_in_metadata), which is the filter's identity.payload_in_metadata.
# Istio: always "payload" (pilot/pkg/xds/filters: EnvoyJwtFilterPayload).
ISTIO_CLAIMS_KEY = "payload"
# Envoy Gateway: the SecurityPolicy's provider name (internal/xds/translator/jwt.go).
EG_PROVIDER = "github"
# Plain Envoy: whatever the bootstrap says; the stack and README use ci_claims.
ENVOY_CLAIMS_KEY = "ci_claims"

OPENBAO_SELECTOR = {"app": "openbao"}
# The plain-Envoy pod: OpenBao listens on loopback only, so every request goes through Envoy.
OPENBAO_LOOPBACK_PORT = 8201
ENVOY_PORT = 8200
BUNDLES_SERVICE = "secretgate-bundles"
BUNDLES_PORT = 8080
APPROVER_SERVICE = "secretgate-approver"
APPROVER_PORT = 8300
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
OPENBAO_IMAGE = "openbao/openbao:2.7.2"
BUNDLE_SERVER_IMAGE = "nginxinc/nginx-unprivileged:1.27-alpine"
APPROVER_IMAGE = f"registry.example.com/secretgate/approver:{VERSION}"


@dataclass(frozen=True)
class Placeholders:
    """What a deployment replaces: where the filter comes from and its digests."""

    code_url: str = PLACEHOLDER_CODE_URL
    code_sha256: str = PLACEHOLDER_SHA256
    image: str = PLACEHOLDER_IMAGE
    image_digest: str = PLACEHOLDER_SHA256


# ---------------------------------------------------------------- the filter's configuration


def filter_configuration(claims_key: str, policies_inline: bool, audit: dict, extra: dict | None = None) -> dict:
    """The filter configuration from the GitHub Actions pack; ``claims_key`` is where the platform's
    jwt_authn writes the verified claims."""
    pack = json.loads((PACK_DIR / "config.json").read_text())
    config: dict = {}
    if policies_inline:
        config["schema"] = (PACK_DIR / "schema.cedarschema").read_text()
        config["policies"] = (PACK_DIR / "policies.cedar").read_text()
        config["entities"] = json.loads((PACK_DIR / "entities.json").read_text())
    config["mounts"] = pack["mounts"]
    config["identity"] = {**pack["identity"], "payload_in_metadata": claims_key}
    config["audit"] = audit
    config.update(extra or {})
    return config


# The platform targets keep the configuration free of secrets (it is readable by
# whoever reads the custom resource): records are redacted, not HMAC'd.
REDACTED_AUDIT = {"mode": "redact"}


def istio_configuration() -> dict:
    return filter_configuration(ISTIO_CLAIMS_KEY, policies_inline=True, audit=REDACTED_AUDIT)


def envoy_gateway_configuration() -> dict:
    return filter_configuration(EG_PROVIDER, policies_inline=True, audit=REDACTED_AUDIT)


def kubernetes_configuration() -> dict:
    """Plain Envoy: policies from the bundle server (live off-boarding), approvals from the approver."""
    svc = f"{NAMESPACE}.svc.cluster.local"
    extra = {
        "bundle": {
            "cluster": "bundles",
            "authority": f"{BUNDLES_SERVICE}.{svc}",
            "path": "/bundle.json",
            "digest_path": "/bundle.json.sha256",
            "refresh_s": 30,
        },
        "approval": {
            "cluster": "approver",
            "authority": f"{APPROVER_SERVICE}.{svc}",
            "timeout_ms": 30000,
            "token": PLACEHOLDER_CALLOUT_TOKEN,
        },
    }
    audit = {"mode": "hmac-sha256", "hmac_key": PLACEHOLDER_HMAC_KEY}
    return filter_configuration(ENVOY_CLAIMS_KEY, policies_inline=False, audit=audit, extra=extra)


# ---------------------------------------------------------------- Istio


def istio_manifests(p: Placeholders) -> list[dict]:
    wasm_plugin = {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "secretgate", "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": OPENBAO_SELECTOR},
            "url": p.image,
            # For oci:// Istio compares this with the image manifest's digest.
            "sha256": p.image_digest,
            "imagePullPolicy": "IfNotPresent",
            # After Istio's authentication filters (RequestAuthentication's jwt_authn).
            "phase": "AUTHZ",
            "failStrategy": "FAIL_CLOSE",
            "pluginName": "secretgate",
            "match": [{"mode": "SERVER"}],
            "pluginConfig": istio_configuration(),
        },
    }
    return [wasm_plugin]


def istio_request_authentication() -> list[dict]:
    return [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "github-actions", "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": OPENBAO_SELECTOR},
                "jwtRules": [
                    {
                        "issuer": GITHUB_ISSUER,
                        "jwksUri": GITHUB_JWKS_URI,
                        "audiences": [AUDIENCE],
                        "fromHeaders": [{"name": JWT_HEADER}],
                        "forwardOriginalToken": False,
                    }
                ],
            },
        }
    ]


# ---------------------------------------------------------------- Envoy Gateway

ROUTE_REF = [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "openbao"}]


def envoy_gateway_extension_policy(p: Placeholders) -> list[dict]:
    return [
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyExtensionPolicy",
            "metadata": {"name": "secretgate", "namespace": NAMESPACE},
            "spec": {
                "targetRefs": ROUTE_REF,
                "wasm": [
                    {
                        "name": "secretgate",
                        "rootID": "secretgate",
                        # HTTP: the digest is the module file's (sha256sum secretgate.wasm).
                        "code": {"type": "HTTP", "http": {"url": p.code_url, "sha256": p.code_sha256}},
                        "config": envoy_gateway_configuration(),
                        "failOpen": False,
                    }
                ],
            },
        }
    ]


def envoy_gateway_security_policy() -> list[dict]:
    return [
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "SecurityPolicy",
            "metadata": {"name": "github-actions", "namespace": NAMESPACE},
            "spec": {
                "targetRefs": ROUTE_REF,
                "jwt": {
                    # A request without a token reaches the filter, which answers 401 itself.
                    "optional": True,
                    "providers": [
                        {
                            "name": EG_PROVIDER,
                            "issuer": GITHUB_ISSUER,
                            "audiences": [AUDIENCE],
                            "remoteJWKS": {"uri": GITHUB_JWKS_URI},
                            "extractFrom": {"headers": [{"name": JWT_HEADER}]},
                        }
                    ],
                },
            },
        }
    ]


# ---------------------------------------------------------------- plain Kubernetes (Envoy sidecar)


def _tls_cluster(name: str, host: str) -> dict:
    return {
        "name": name,
        "type": "LOGICAL_DNS",
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, 443)}}]}],
        },
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
                    }
                },
            },
        },
    }


def _dns_cluster(name: str, host: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _url_host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]


def envoy_bootstrap(p: Placeholders) -> dict:
    """Envoy in the OpenBao pod: jwt_authn (GitHub Actions) -> secretgate (fetched with its digest) -> OpenBao
    on loopback."""
    svc = f"{NAMESPACE}.svc.cluster.local"
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "github": {
                    "issuer": GITHUB_ISSUER,
                    "audiences": [AUDIENCE],
                    "remote_jwks": {
                        "http_uri": {"uri": GITHUB_JWKS_URI, "cluster": "github_jwks", "timeout": "5s"},
                        "cache_duration": "300s",
                        "async_fetch": {"fast_listener": False},
                        "retry_policy": {
                            "num_retries": 2,
                            "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"},
                        },
                    },
                    "from_headers": [{"name": JWT_HEADER}],
                    "payload_in_metadata": ENVOY_CLAIMS_KEY,
                    "forward": False,
                }
            },
            "rules": [
                {
                    "match": {"prefix": "/"},
                    "requires": {"requires_any": {"requirements": [{"provider_name": "github"}, {"allow_missing": {}}]}},
                }
            ],
        },
    }
    secretgate = secretgate_filter(
        None,
        json.dumps(kubernetes_configuration(), indent=2),
        code=remote_wasm_code(p.code_url, p.code_sha256, retries=5, timeout="30s", back_off=("1s", "10s")),
    )
    access_log = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": "/dev/stdout",
            "log_format": {
                "json_format": {
                    "start_time": "%START_TIME%",
                    "method": "%REQ(:METHOD)%",
                    "path": "%PATH(NQ)%",
                    "response_code": "%RESPONSE_CODE%",
                    "response_code_details": "%RESPONSE_CODE_DETAILS%",
                    "request_id": "%REQ(X-REQUEST-ID)%",
                    "audit": "%FILTER_STATE(wasm.secretgate_audit:PLAIN)%",
                }
            },
        },
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "secretgate",
        **CLIENT_ADDRESS_OPTIONS,
        "always_set_request_id_in_response": True,
        "http_protocol_options": {"allow_custom_methods": True},
        "access_log": [access_log],
        "local_reply_config": JWT_LOCAL_REPLY_CONFIG,
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
            jwt_authn,
            secretgate,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        # Admin on loopback only: it can change Envoy's state.
        "admin": {"address": _address("127.0.0.1", 9901)},
        "static_resources": {
            "listeners": [
                {
                    "name": "secretgate",
                    "address": _address("0.0.0.0", ENVOY_PORT),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "openbao",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {
                        "cluster_name": "openbao",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address("127.0.0.1", OPENBAO_LOOPBACK_PORT)}}]}],
                    },
                },
                _dns_cluster("bundles", f"{BUNDLES_SERVICE}.{svc}", BUNDLES_PORT),
                _dns_cluster("approver", f"{APPROVER_SERVICE}.{svc}", APPROVER_PORT),
                _tls_cluster("github_jwks", GITHUB_JWKS_HOST),
                _tls_cluster("filter_code", _url_host(p.code_url)),
            ],
        },
    }


def kubernetes_gateway(p: Placeholders) -> list[dict]:
    envoy_yaml = dump_yaml([envoy_bootstrap(p)])
    labels = dict(OPENBAO_SELECTOR)
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            # A Secret, not a ConfigMap: the filter configuration in it holds the audit
            # HMAC key and the approval callout token, and Envoy takes a Wasm
            # configuration only inline.
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "secretgate-envoy", "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {"envoy.yaml": envoy_yaml},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "openbao", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                # Placeholder: your OpenBao or Vault server. It must listen on
                                # 127.0.0.1:8201 only (listener "tcp" { address = "127.0.0.1:8201" }),
                                # so that no request reaches it except through Envoy.
                                "name": "openbao",
                                "image": OPENBAO_IMAGE,
                                "args": ["server", "-config=/openbao/config"],
                            },
                            {
                                "name": "envoy",
                                "image": ENVOY_IMAGE,
                                "args": ["-c", "/etc/envoy/envoy.yaml", "--log-level", "info"],
                                "ports": [{"name": "vault", "containerPort": ENVOY_PORT}],
                                # Ready once the listener is bound. A filter whose fetch failed does
                                # not stop that (it fails closed: 503 to everything), so alert on
                                # wasm.remote_load_fetch_failures too (README).
                                "readinessProbe": {"tcpSocket": {"port": ENVOY_PORT}},
                                "volumeMounts": [{"name": "envoy-config", "mountPath": "/etc/envoy", "readOnly": True}],
                            },
                        ],
                        "volumes": [{"name": "envoy-config", "secret": {"secretName": "secretgate-envoy"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "openbao", "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"name": "vault", "port": ENVOY_PORT, "targetPort": "vault"}]},
        },
    ]


def kubernetes_bundles() -> list[dict]:
    bundle = bundle_bytes(PACK_DIR)
    labels = {"app": BUNDLES_SERVICE}
    return [
        {
            # Edit the pack, re-render, apply: the kubelet updates the files, and the
            # filter swaps the bundle in at its next refresh (no Envoy restart).
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": BUNDLES_SERVICE, "namespace": NAMESPACE},
            "data": {
                "bundle.json": bundle.decode(),
                "bundle.json.sha256": f"{hashlib.sha256(bundle).hexdigest()}  bundle.json\n",
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": BUNDLES_SERVICE, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "static",
                                "image": BUNDLE_SERVER_IMAGE,
                                "ports": [{"name": "http", "containerPort": BUNDLES_PORT}],
                                "readinessProbe": {"httpGet": {"path": "/bundle.json.sha256", "port": "http"}},
                                "volumeMounts": [
                                    {"name": "bundle", "mountPath": "/usr/share/nginx/html", "readOnly": True}
                                ],
                            }
                        ],
                        "volumes": [{"name": "bundle", "configMap": {"name": BUNDLES_SERVICE}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": BUNDLES_SERVICE, "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": BUNDLES_PORT, "targetPort": "http"}]},
        },
    ]


def approver_toml() -> str:
    return "\n".join(
        [
            "# The approval service (approver/README.md). Tokens are secrets.",
            f'listen = "0.0.0.0:{APPROVER_PORT}"',
            "allow_non_loopback = true           # reached by Envoy through the Service",
            'database = "/var/lib/secretgate/approver.db"',
            'public_url = "https://approvals.example.com"   # where approvers open the page',
            'callout_path = "/v1/approvals"',
            f'callout_token = "{PLACEHOLDER_CALLOUT_TOKEN}"   # the filter\'s approval.token',
            "max_wait_ms = 30000",
            "pending_ttl_s = 3600",
            "",
            "[[approvers]]",
            'id = "alice@example.com"',
            f'token = "{PLACEHOLDER_APPROVER_TOKEN}"',
            'groups = ["secops"]',
            "",
        ]
    )


def kubernetes_approver() -> list[dict]:
    labels = {"app": APPROVER_SERVICE}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": APPROVER_SERVICE, "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {"approver.toml": approver_toml()},
        },
        {
            # Approvals and grants live in SQLite: keep them across restarts.
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": APPROVER_SERVICE, "namespace": NAMESPACE},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": APPROVER_SERVICE, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                # One writer of the SQLite file.
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "approver",
                                "image": APPROVER_IMAGE,
                                "args": ["serve", "--config", "/etc/approver/approver.toml"],
                                "ports": [{"name": "http", "containerPort": APPROVER_PORT}],
                                "readinessProbe": {"tcpSocket": {"port": "http"}},
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/approver", "readOnly": True},
                                    {"name": "data", "mountPath": "/var/lib/secretgate"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "config", "secret": {"secretName": APPROVER_SERVICE}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": APPROVER_SERVICE}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": APPROVER_SERVICE, "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": APPROVER_PORT, "targetPort": "http"}]},
        },
    ]


# ---------------------------------------------------------------- rendering


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (policies, schema, envoy.yaml) as literal blocks, so they stay readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrings.add_representer(str, _represent_str)


def dump_yaml(documents: list[dict]) -> str:
    return yaml.dump_all(documents, Dumper=_BlockStrings, sort_keys=False, width=120, explicit_start=len(documents) > 1)


HEADER = "# Rendered by envoy/deploy/render.py; edit that file (or the pack) and re-render.\n"


def manifests(p: Placeholders = Placeholders()) -> dict[str, str]:
    """Every manifest file, relative to envoy/deploy/, with its text."""
    files = {
        "istio/wasmplugin.yaml": istio_manifests(p),
        "istio/requestauthentication.yaml": istio_request_authentication(),
        "envoy-gateway/envoyextensionpolicy.yaml": envoy_gateway_extension_policy(p),
        "envoy-gateway/securitypolicy.yaml": envoy_gateway_security_policy(),
        "kubernetes/openbao-envoy.yaml": kubernetes_gateway(p),
        "kubernetes/bundles.yaml": kubernetes_bundles(),
        "kubernetes/approver.yaml": kubernetes_approver(),
    }
    return {name: HEADER + dump_yaml(docs) for name, docs in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEPLOY_DIR, help="where to write (default: envoy/deploy)")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    parser.add_argument("--code-url", default=PLACEHOLDER_CODE_URL, help="where Envoy fetches secretgate.wasm (https)")
    parser.add_argument("--code-sha256", default=PLACEHOLDER_SHA256, help="sha256sum of that file (hex)")
    parser.add_argument("--image", default=PLACEHOLDER_IMAGE, help="oci:// image of the filter (Istio)")
    parser.add_argument("--image-digest", default=PLACEHOLDER_SHA256, help="that image's manifest digest (hex)")
    args = parser.parse_args(argv)
    placeholders = Placeholders(args.code_url, args.code_sha256, args.image, args.image_digest)
    stale = []
    for name, text in manifests(placeholders).items():
        target = args.out / name
        if args.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if stale:
        print("out of date (run .venv/bin/python envoy/deploy/render.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

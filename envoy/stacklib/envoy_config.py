"""Envoy's bootstrap for the stack: jwt_authn -> secretgate wasm -> router -> OpenBao."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .binaries import LOOPBACK
from .forwarded_cert import envoy_route_headers, envoy_upstream_bind
from .pki import DevPki
from .tokens import (
    CLAIMS_METADATA_KEY,
    DEFAULT_JWKS_CACHE_S,
    JWKS_CLUSTER,
    JWKS_HOST,
    JWKS_PATH,
    JWT_AUDIENCE,
    JWT_HEADER,
    JWT_ISSUER,
    JWT_PROVIDER,
)

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
    jwks_port: int,
    access_log: Path,
    jwks_cache_s: int = DEFAULT_JWKS_CACHE_S,
    mtls: DevPki | None = None,
    extra_clusters: dict[str, int] | None = None,
    wasm_plugin_options: dict | None = None,
    forward_client_cert: bool = False,
    wasm_code: dict | None = None,
) -> dict:
    """Envoy bootstrap: jwt_authn -> secretgate wasm -> router -> OpenBao.

    ``plugin_configuration`` may be a dict (serialised to JSON) or a raw string,
    so tests can hand the filter deliberately broken configurations. With
    ``mtls`` the listener speaks TLS and requires a client certificate signed
    by that CA (see downstream_tls_context); without it, plain HTTP.
    ``jwks_port`` is the JWKS server's loopback port: Envoy fetches the
    signing keys from it (cluster "jwks") and keeps them ``jwks_cache_s`` seconds.
    ``extra_clusters`` adds loopback clusters by name (e.g. the approval service).
    ``wasm_plugin_options`` adds fields to the Wasm filter's PluginConfig
    (e.g. ``{"allow_on_headers_stop_iteration": True}``).
    ``forward_client_cert`` (with ``mtls``) hands OpenBao the verified client certificate for
    its cert auth: Envoy sets the header ``forwarded_cert.CLIENT_CERT_HEADER`` on every request
    and connects to OpenBao (``bao_port``: the listener that trusts it) from
    ``forwarded_cert.ENVOY_SOURCE_ADDRESS``.
    ``wasm_code`` replaces the filter's ``vm_config.code`` (default: the local
    file ``wasm``), e.g. ``remote_wasm_code(...)``; its cluster must be among
    ``extra_clusters``.
    """
    if forward_client_cert and mtls is None:
        raise ValueError("forward_client_cert needs mtls: only a certificate Envoy verified may be forwarded")
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
        "local_reply_config": JWT_LOCAL_REPLY_CONFIG,
        "route_config": {
            "name": "openbao",
            "virtual_hosts": [
                {
                    "name": "openbao",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "openbao", "timeout": "30s"},
                            **(envoy_route_headers() if forward_client_cert else {}),
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            _jwt_authn_filter(jwks_cache_s),
            secretgate_filter(wasm, plugin_configuration, wasm_plugin_options, wasm_code),
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
                _loopback_cluster("openbao", bao_port, envoy_upstream_bind() if forward_client_cert else None),
                *(
                    _loopback_cluster(name, port)
                    for name, port in {JWKS_CLUSTER: jwks_port, **(extra_clusters or {})}.items()
                ),
            ],
        },
    }


def _loopback_cluster(name: str, port: int, upstream_bind: dict | None = None) -> dict:
    return {
        "name": name,
        **({"upstream_bind_config": upstream_bind} if upstream_bind else {}),
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


def _jwt_authn_filter(jwks_cache_s: int = DEFAULT_JWKS_CACHE_S) -> dict:
    provider = {
        "issuer": JWT_ISSUER,
        "audiences": [JWT_AUDIENCE],
        # The keys come from the provider's JWKS URL, as in production (see README,
        # "CI tokens"). async_fetch: Envoy fetches them before the listener serves
        # (fast_listener: false) and again every cache_duration (5 s before it ends
        # when it is longer than 5 s), on the main thread, so no request waits for
        # a fetch. Envoy 1.40 does not fetch on an unknown kid: a new key is
        # trusted, and a removed key distrusted, only after the next fetch.
        "remote_jwks": {
            "http_uri": {"uri": f"http://{JWKS_HOST}{JWKS_PATH}", "cluster": JWKS_CLUSTER, "timeout": "5s"},
            "cache_duration": f"{jwks_cache_s}s",
            "async_fetch": {"fast_listener": False},
            # Retries within one fetch; a failed fetch is retried by async_fetch a second later.
            "retry_policy": {"num_retries": 2, "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"}},
        },
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


# jwt_authn answers every bad token with 401, except a token for another
# audience: 403 "Audiences in Jwt are not allowed". Such a token does not
# authenticate the caller here at all (it was issued for another service), so
# it is a 401 like an expired or forged one; a 403 would tell the client it was
# identified and refused by policy, which is what secretgate's own 403s mean.
# Only jwt_authn's replies are remapped (their details start with
# jwt_authn_access_denied); the filter's 403s have empty details and stay 403.
JWT_LOCAL_REPLY_CONFIG = {
    "mappers": [
        {
            "filter": {
                "extension_filter": {
                    "name": "envoy.access_loggers.extension_filters.cel",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                        "expression": "response.code == 403 && response.code_details.startsWith('jwt_authn_access_denied')",
                    },
                }
            },
            "status_code": 401,
        }
    ]
}


# The cluster Envoy fetches the filter's code from when it is loaded remotely.
FILTER_CODE_CLUSTER = "filter_code"
# Fetch attempts after the first, when the code server fails or sends other bytes.
FILTER_CODE_RETRIES = 2


def remote_wasm_code(
    uri: str,
    sha256: str,
    cluster: str = FILTER_CODE_CLUSTER,
    retries: int = FILTER_CODE_RETRIES,
    timeout: str = "10s",
    back_off: tuple[str, str] = ("0.2s", "1s"),
) -> dict:
    """``vm_config.code`` that fetches the module from ``uri`` over ``cluster`` and loads it only if its
    SHA-256 is ``sha256`` (hex). Envoy fetches it once, before the listener serves; see README,
    "Remote loading with a digest", for what happens when the digest does not match. The
    defaults suit a loopback test; a deployment (envoy/deploy) waits and backs off longer."""
    return {
        "remote": {
            "http_uri": {"uri": uri, "cluster": cluster, "timeout": timeout},
            "sha256": sha256,
            "retry_policy": {
                "num_retries": retries,
                "retry_back_off": {"base_interval": back_off[0], "max_interval": back_off[1]},
            },
        }
    }


def secretgate_filter(
    wasm: Path | None, configuration: str, options: dict | None = None, code: dict | None = None
) -> dict:
    """The Wasm HTTP filter entry for secretgate: ``code`` (e.g. ``remote_wasm_code``) or the local file ``wasm``."""
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
                    "code": code or {"local": {"filename": str(wasm)}},
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


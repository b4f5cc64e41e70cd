"""OpenBao's cert auth behind the gate: Envoy terminates TLS, so OpenBao never sees the
client certificate. Envoy hands the certificate it verified to OpenBao in a header of
its own, and OpenBao reads that header on a listener of its own, only from Envoy's
source address.

Why a plain header and not Envoy's ``x-forwarded-client-cert``: OpenBao 2.7's
decoders (``x_forwarded_for_client_cert_decoders``: ``URL``, ``PEM``, ``RFC9440``)
take a header that holds one certificate and nothing else. Envoy's XFCC value is
``Hash=...;Cert="<url-encoded PEM>"``: URL-decoded, the PEM does not start a line
(it follows ``Cert="``), so OpenBao answers 400 "failed to decode PEM certificate".
``%DOWNSTREAM_PEER_CERT%`` is exactly the URL-encoded PEM (``+``, ``/`` and ``=``
escaped), which ``URL`` then ``PEM`` decode.

Why it cannot be forged: Envoy removes any copy the client sent and sets it from the
TLS connection (the route's ``request_headers_to_remove`` / ``request_headers_to_add``);
OpenBao reads the header only on a request whose TCP peer is in
``x_forwarded_for_authorized_addrs`` and which carries ``X-Forwarded-For`` (Envoy adds
it, ``use_remote_address``). It would merely drop the header otherwise; with
``x_forwarded_for_reject_not_present`` and ``x_forwarded_for_reject_not_authorized``, as
OpenBao's documentation advises, it refuses such a request with 400, so the listener
serves Envoy and nobody else. Without ``x_forwarded_for_authorized_addrs`` OpenBao would
take the header from anyone who reaches the listener.
"""

from __future__ import annotations

from .binaries import LOOPBACK

# The header Envoy sets to the verified client certificate (URL-encoded PEM).
CLIENT_CERT_HEADER = "x-secretgate-client-cert"

# Envoy connects to OpenBao from this address (its cluster's upstream_bind_config), and the
# forwarding listener trusts the header from it alone. Every other local client, a test
# talking to OpenBao directly included, connects from 127.0.0.1, so "from Envoy" and "from
# anyone else on the machine" stay distinguishable on loopback (Linux routes 127.0.0.0/8 to lo).
ENVOY_SOURCE_ADDRESS = "127.0.0.2"

# What OpenBao does with the header, in order: URL-decode it, then take the PEM block's DER.
OPENBAO_DECODERS = ["URL", "PEM"]


def openbao_listener(port: int, cluster_port: int) -> dict:
    """OpenBao's listener for Envoy: serves ``ENVOY_SOURCE_ADDRESS`` only, and trusts its ``CLIENT_CERT_HEADER``.

    Its own ``cluster_address``: a dev server otherwise claims the listener's port + 1."""
    return {
        "tcp": {
            "address": f"{LOOPBACK}:{port}",
            "cluster_address": f"{LOOPBACK}:{cluster_port}",
            "tls_disable": True,
            "x_forwarded_for_authorized_addrs": f"{ENVOY_SOURCE_ADDRESS}/32",
            "x_forwarded_for_reject_not_present": True,
            "x_forwarded_for_reject_not_authorized": True,
            "x_forwarded_for_client_cert_header": CLIENT_CERT_HEADER,
            "x_forwarded_for_client_cert_decoders": OPENBAO_DECODERS,
        }
    }


def envoy_route_headers() -> dict:
    """The route's header rules: drop a client's copy of the header, set it from the TLS connection."""
    return {
        "request_headers_to_remove": [CLIENT_CERT_HEADER],
        "request_headers_to_add": [
            {
                "header": {"key": CLIENT_CERT_HEADER, "value": "%DOWNSTREAM_PEER_CERT%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def envoy_upstream_bind() -> dict:
    """The OpenBao cluster's ``upstream_bind_config``: connect from ``ENVOY_SOURCE_ADDRESS``."""
    return {"source_address": {"address": ENVOY_SOURCE_ADDRESS, "port_value": 0}}

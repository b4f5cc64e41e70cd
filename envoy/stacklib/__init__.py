"""The pieces of the test stack (``envoy/stack.py``), one concern per module.

Layers import only downwards, never back up:

    binaries      paths, binaries, loopback ports and HTTP
    processes     spawning and stopping processes by PID, startup errors
    tokens        CI claims, signing keys, the JWKS file and its server
    bundles       the policy bundle servers (live and shadow)
    code_server   the file server Envoy fetches the filter's code from (remote loading)
    pki           the development CA for mTLS
    forwarded_cert  OpenBao cert auth behind the gate: the header Envoy sets, OpenBao's listener for it
    registry      a throwaway OCI registry (docker-registry) for the package tests
    plugin_config the filter's JSON configuration
    envoy_config  Envoy's bootstrap
    stack         the Stack class and state.json
    cli           ``python envoy/stack.py ...``

``envoy/stack.py`` re-exports every public name, so callers import from
``stack`` and need not know this layout.
"""

"""OpenBao's own route list against the filter's route table.

``plugin/tests/openbao_routes.json`` lists every route, with its operations,
that OpenBao's OpenAPI document names for the engine types Secretgate
classifies; ``plugin/tests/openbao_routes.rs`` checks that each lands on a
named action and resource (``other`` only where the table says why). This
test asks a real OpenBao, with each of those engines mounted, for its route
list and requires it to be exactly the table's: a route a new OpenBao version
adds, or an operation it adds to a known route, fails here instead of being
classified ``other`` unnoticed.
"""

from __future__ import annotations

import json

import pytest

import stack as stack_module

TABLE_FILE = stack_module.REPO_ROOT / "plugin" / "tests" / "openbao_routes.json"
OPERATIONS = ("get", "post", "patch", "delete")
# The OpenAPI document's catch-all for KV v2 paths no named route matches; its
# requests are classified by the named routes' rules (and refused or `other`).
CATCH_ALL_SUFFIX = "/^.*$"

# Secretgate's type -> how OpenBao mounts it.
ENGINE_MOUNTS = {
    "kv-v1": {"type": "kv", "options": {"version": "1"}},
    "kv-v2": {"type": "kv", "options": {"version": "2"}},
    "database": {"type": "database"},
    "pki": {"type": "pki"},
    "transit": {"type": "transit"},
    "ssh": {"type": "ssh"},
}


def route_operations(openapi: dict, prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    """route -> operations, for the routes under the given mounts; `list` where GET takes list=true."""
    routes: dict[str, set[str]] = {}
    for route, item in openapi["paths"].items():
        if not route.startswith(prefixes) or route.endswith(CATCH_ALL_SUFFIX):
            continue
        operations = {op for op in OPERATIONS if op in item}
        get_parameters = item.get("get", {}).get("parameters", [])
        if any(parameter.get("name") == "list" for parameter in get_parameters):
            operations.add("list")
        routes[route] = operations
    return routes


@pytest.fixture(scope="module")
def openapi(tmp_path_factory) -> dict:
    """The route list of a real OpenBao with every table engine mounted at the table's paths."""
    table = json.loads(TABLE_FILE.read_text())
    private = stack_module.Stack(tmp_path_factory.mktemp("openbao-routes"))
    try:
        private.start_bao()
        existing = private.bao_request("GET", "sys/mounts")[1]["data"]
        for path, kind in table["mounts"].items():
            if f"{path}/" in existing:
                continue
            status, reply = private.bao_request("POST", f"sys/mounts/{path}", ENGINE_MOUNTS[kind])
            assert status < 300, f"mounting {kind} at {path}: {reply}"
        status, document = private.bao_request("GET", "sys/internal/specs/openapi")
        assert status == 200, document
        return {"table": table, "document": document}
    finally:
        private.stop_bao()


def test_openbao_serves_exactly_the_routes_the_table_classifies(openapi):
    table, document = openapi["table"], openapi["document"]
    prefixes = tuple(f"/{mount}/" for mount in table["mounts"]) + ("/cubbyhole/",)
    served = route_operations(document, prefixes)
    listed = {route["route"]: set(route["operations"]) for route in table["routes"]}

    assert len(served) > 200, "the OpenAPI document lists the engines' routes"
    new = {route: sorted(ops) for route, ops in served.items() if route not in listed}
    gone = sorted(route for route in listed if route not in served)
    changed = {
        route: {"openbao": sorted(served[route]), "table": sorted(listed[route])}
        for route in served.keys() & listed.keys()
        if served[route] != listed[route]
    }
    assert not new, f"OpenBao routes the table does not classify: {new}"
    assert not gone, f"table routes OpenBao no longer has: {gone}"
    assert not changed, f"routes whose operations differ: {changed}"


def test_the_route_list_reader_sees_new_routes():
    """The comparison can fail: a route and an operation the table lacks are found."""
    document = {
        "paths": {
            "/transit/keys/{name}": {"get": {}, "post": {}},
            "/transit/keys": {"get": {"parameters": [{"name": "list"}]}},
            "/secret/^.*$": {"get": {}},
            "/sys/health": {"get": {}},
        }
    }
    assert route_operations(document, ("/transit/", "/secret/")) == {
        "/transit/keys/{name}": {"get", "post"},
        "/transit/keys": {"get", "list"},
    }

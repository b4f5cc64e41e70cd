"""context.recent_reads with real Envoy and OpenBao: a burst of reads beyond
the window's limit trips the policy, counted in Envoy's shared data."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import stack as stack_module
from conftest import RawClient

LIMIT = 4


def burst_plugin_config() -> dict:
    config = stack_module.default_plugin_config()
    schema = config["schema"].replace("  namespace: String,\n};", "  namespace: String,\n  recent_reads: Long,\n};")
    assert "recent_reads" in schema, "the schema's RequestContext changed shape"
    config["schema"] = schema
    config["policies"] += (
        '\n@id("no-read-bursts")\n'
        'forbid (principal, action == Action::"read", resource)\n'
        f"when {{ context.recent_reads > {LIMIT} }};\n"
    )
    config["recent_reads"] = {"window_s": 60}
    return config


def test_a_burst_of_reads_beyond_the_window_limit_trips_the_policy(tmp_path):
    with stack_module.Stack(tmp_path / "stack", plugin_config=burst_plugin_config()) as running:
        client = RawClient(running.envoy_url, vault_token=running.root_token)
        api = running.mint_jwt()
        web = running.mint_jwt({"repository": "acme/web"})
        statuses = [client.get("/v1/secret/data/ci/acme/api/db", jwt=api).status for _ in range(LIMIT + 2)]
        assert statuses == [200] * LIMIT + [403, 403]
        # Another workload is counted on its own.
        assert client.get("/v1/secret/data/ci/acme/web/token", jwt=web).status == 200
        records = [line for line in running.access_log_lines(at_least=LIMIT + 3) if "acme/api/db" in line["path"]]
        assert "no-read-bursts" in records[-1]["audit"]


def test_parallel_reads_across_workers_are_each_counted_once(tmp_path):
    """Four Envoy workers, each with its own VM, race on one principal's
    slot (and on making the slot key): with no read lost and none counted
    twice, exactly LIMIT reads pass, whichever worker serves them."""
    config = burst_plugin_config()
    parallel = 24
    with stack_module.Stack(tmp_path / "stack", plugin_config=config, concurrency=4) as running:
        api = running.mint_jwt()
        start = threading.Barrier(parallel)

        def read(_: int) -> int:
            # One connection each, so Envoy spreads them over its workers.
            client = RawClient(running.envoy_url, vault_token=running.root_token)
            start.wait()
            return client.get("/v1/secret/data/ci/acme/api/db", jwt=api).status

        with ThreadPoolExecutor(parallel) as pool:
            statuses = list(pool.map(read, range(parallel)))
        workers = running.counters(r"^listener\..*\.worker_\d+\.downstream_cx_total$")
        assert sum(1 for accepted in workers.values() if accepted) >= 2, workers
        assert sorted(statuses) == [200] * LIMIT + [403] * (parallel - LIMIT), statuses
        records = running.access_log_lines(at_least=parallel)
        assert sum("no-read-bursts" in line["audit"] for line in records) == parallel - LIMIT

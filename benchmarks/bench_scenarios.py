"""Scenario benchmarks: each round is one load-generator run against a reference server.

One benchmark per (scenario, server), grouped by scenario, so::

    python -m pytest benchmarks/bench_scenarios.py --benchmark-only --benchmark-group-by=group

shows the servers side by side. The timed figure is the wall time of one run
(N connections); the figures that matter ride in ``extra_info``: conn/s, the
server's CPU per connection, ListenOverflows and the p99 latencies (medians
over the rounds, and every round's value).
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List

import pytest

from fastaccept import bench

loadgen = pytest.importorskip("fastaccept.bench.loadgen",
                              reason="fastaccept.bench._loadgen is not built")


def _median(values: List[Any]) -> float:
    return statistics.median(values) if values else float("nan")


@pytest.mark.parametrize("server_label", list(bench.SERVERS))
@pytest.mark.parametrize("scenario_name", list(bench.SCENARIOS))
def test_scenario(benchmark: Any, ref_server: Any, bench_quick: bool, bench_rounds: int,
                  cpu_iters_per_ms: int, overflow_counter: str, scenario_name: str,
                  server_label: str) -> None:
    scenario = bench.SCENARIOS[scenario_name]
    spec = bench.SERVERS[server_label]
    n = scenario.quick_connections if bench_quick else scenario.connections
    server = ref_server(scenario, spec, round(cpu_iters_per_ms * scenario.cpu_ms))
    loadgen.run(bench.HOST, server.port, connections=32, concurrency=8,
                timeout=scenario.timeout_s)                 # warm up
    rounds: List[Dict[str, Any]] = []

    def setup() -> Any:
        # Untimed: let the server settle, then take the baselines.
        rounds.append({"cpu0": server.wait_idle(), "net0": bench.read_netstat()})
        return (), {}

    def one_run() -> None:
        rounds[-1]["load"] = loadgen.run(
            bench.HOST, server.port, connections=n, concurrency=scenario.concurrency or n,
            burst=scenario.burst, timeout=scenario.timeout_s)

    def teardown() -> None:
        r = rounds[-1]
        r["cpu1"], r["net1"] = server.wait_idle(), bench.read_netstat()

    benchmark.group = scenario_name
    benchmark.pedantic(one_run, setup=setup, teardown=teardown, rounds=bench_rounds,
                       iterations=1, warmup_rounds=0)

    # --benchmark-disable runs the target once without teardown: use whole rounds only.
    done = [r for r in rounds if "load" in r and "cpu1" in r]
    loads = [r["load"] for r in done]
    cpu = [(r["cpu1"] - r["cpu0"]) / 1000.0 / r["load"].completed if r["load"].completed
           else None for r in done]
    overflows = [r["net1"].get("ListenOverflows", 0) - r["net0"].get("ListenOverflows", 0)
                 for r in done]
    benchmark.extra_info.update({
        "scenario": scenario.describe(bench_quick),
        "server": server_label,
        "conn_per_s": _median([x.conn_per_s for x in loads]),
        "cpu_us_per_conn": _median([c for c in cpu if c is not None]),
        "listen_overflows": _median(overflows),
        "connect_p99_ms": _median([x.connect_ms.p99 for x in loads]),
        "rtt_p99_ms": _median([x.rtt_ms.p99 for x in loads]),
        "failures": _median([sum(x.failures.values()) for x in loads]),
        "overflow_counter": overflow_counter,
        "cpu_source": server.source,
        "rounds": [{"conn_per_s": x.conn_per_s, "completed": x.completed,
                    "connections": x.connections, "failures": x.failures,
                    "cpu_us_per_conn": c, "listen_overflows": o}
                   for x, c, o in zip(loads, cpu, overflows)],
    })

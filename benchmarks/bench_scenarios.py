"""Scenario benchmarks: each round is one load-generator run against a reference server.

One benchmark per (scenario, server of that scenario), grouped by scenario, so::

    python -m pytest benchmarks/bench_scenarios.py --benchmark-only --benchmark-group-by=group

shows the servers side by side. The timed figure is the wall time of one run
(N connections; for a ``requests`` scenario its requests on their
connections; for an ``idle`` one the real requests beside the idle
connections); the figures that matter ride in ``extra_info`` (medians over
the rounds, and every round's value): conn/s, the server's CPU per
connection, ListenOverflows and the p99 latencies; requests/s, CPU per
request and the request latencies for ``requests`` scenarios; the round
trips with and without the idle connections, their ratio and the server's
RSS per idle connection for ``idle`` ones.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List

import pytest

from fastaccept import bench
from fastaccept.bench import runner

loadgen = pytest.importorskip("fastaccept.bench.loadgen",
                              reason="fastaccept.bench._loadgen is not built")


def _median(values: List[Any]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def _pairs(kind: str) -> List[Any]:
    return [pytest.param(name, label, id=f"{name}-{label}")
            for name, sc in bench.SCENARIOS.items() if sc.kind == kind
            for label in sc.servers]


@pytest.mark.parametrize("scenario_name, server_label", _pairs("connections"))
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


@pytest.mark.parametrize("scenario_name, server_label", _pairs("requests"))
def test_requests_scenario(benchmark: Any, ref_server: Any, bench_quick: bool,
                           bench_rounds: int, cpu_iters_per_ms: int, scenario_name: str,
                           server_label: str) -> None:
    """Keep-alive (and its one-connection-per-request twin): requests on connections."""
    scenario = bench.SCENARIOS[scenario_name]
    spec = bench.SERVERS[server_label]
    server = ref_server(scenario, spec, round(cpu_iters_per_ms * scenario.cpu_ms))
    measured = runner.request_load(scenario, bench_quick, scenario.timeout_s)
    warm = dict(measured, connections=8, concurrency=8,
                requests_per_connection=min(16, measured["requests_per_connection"]))
    loadgen.run(bench.HOST, server.port, **warm)
    rounds: List[Dict[str, Any]] = []

    def setup() -> Any:
        rounds.append({"cpu0": server.wait_idle()})
        return (), {}

    def one_run() -> None:
        rounds[-1]["load"] = loadgen.run(bench.HOST, server.port, **measured)

    def teardown() -> None:
        rounds[-1]["cpu1"] = server.wait_idle()

    benchmark.group = scenario_name
    benchmark.pedantic(one_run, setup=setup, teardown=teardown, rounds=bench_rounds,
                       iterations=1, warmup_rounds=0)

    done = [r for r in rounds if "load" in r and "cpu1" in r]
    loads = [r["load"] for r in done]
    cpu = [(r["cpu1"] - r["cpu0"]) / 1000.0 / r["load"].requests if r["load"].requests
           else None for r in done]
    benchmark.extra_info.update({
        "scenario": scenario.describe(bench_quick),
        "server": server_label,
        "requests_per_s": _median([x.requests_per_s for x in loads]),
        "cpu_us_per_request": _median(cpu),
        "request_p50_ms": _median([x.request_ms.p50 for x in loads]),
        "request_p99_ms": _median([x.request_ms.p99 for x in loads]),
        "failures": _median([sum(x.failures.values()) for x in loads]),
        "cpu_source": server.source,
        "rounds": [{"requests_per_s": x.requests_per_s, "requests": x.requests,
                    "completed": x.completed, "connections": x.connections,
                    "failures": x.failures, "cpu_us_per_request": c}
                   for x, c in zip(loads, cpu)],
    })


@pytest.mark.parametrize("scenario_name, server_label", _pairs("idle"))
def test_idle_scenario(benchmark: Any, ref_server: Any, bench_quick: bool, bench_rounds: int,
                       scenario_name: str, server_label: str) -> None:
    """Round trips beside K idle connections, against the same ones alone.

    The idle connections are opened once, after the rounds alone (untimed,
    in the first setup), and held for the timed rounds; the server's RSS
    growth over their opening is divided by K."""
    scenario = bench.SCENARIOS[scenario_name]
    spec = bench.SERVERS[server_label]
    k = scenario.idle_connections
    why = runner.idle_fd_shortfall(k)
    if why is not None:
        pytest.skip(why)
    server = ref_server(scenario, spec)
    requests = {"connections": scenario.size(bench_quick), "concurrency": 1,
                "timeout": scenario.timeout_s, "request": bench.REQUEST}
    loadgen.run(bench.HOST, server.port, connections=32, concurrency=8,
                timeout=scenario.timeout_s)                 # warm up
    server.wait_idle()
    alone = [loadgen.run(bench.HOST, server.port, **requests) for _ in range(bench_rounds)]
    state: Dict[str, Any] = {"idle": []}
    loads: List[Any] = []

    def setup() -> Any:
        if not state["idle"]:
            server.wait_idle()
            state["rss0"] = server.rss_bytes()
            state["idle"] = runner.open_idle(server, k)
            server.wait_idle()
            state["rss1"] = server.rss_bytes()
        return (), {}

    def one_run() -> None:
        loads.append(loadgen.run(bench.HOST, server.port, **requests))

    try:
        benchmark.group = scenario_name
        benchmark.pedantic(one_run, setup=setup, rounds=bench_rounds, iterations=1,
                           warmup_rounds=0)
        lost = runner.idle_lost(state["idle"])
    finally:
        runner.close_idle(state["idle"])

    base50 = _median([x.rtt_ms.p50 for x in alone])
    base99 = _median([x.rtt_ms.p99 for x in alone])
    p50 = _median([x.rtt_ms.p50 for x in loads])
    p99 = _median([x.rtt_ms.p99 for x in loads])
    benchmark.extra_info.update({
        "scenario": scenario.describe(bench_quick),
        "server": server_label,
        "idle_connections": k,
        "base_rtt_p50_ms": base50, "base_rtt_p99_ms": base99,
        "rtt_p50_ms": p50, "rtt_p99_ms": p99,
        "rtt_p50_ratio": p50 / base50 if base50 else None,
        "rtt_p99_ratio": p99 / base99 if base99 else None,
        "rss_per_idle_conn": (state["rss1"] - state["rss0"]) / k if "rss1" in state else None,
        "idle_lost": lost,
        "failures": _median([sum(x.failures.values()) for x in alone + loads]),
    })

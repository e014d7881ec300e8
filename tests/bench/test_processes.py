"""The bench's scenarios of several processes: processes-* and the reload contract."""
from __future__ import annotations

import dataclasses
import json

import pytest

from fa_testutil import needs_loadgen, run_cli
from fastaccept import bench
from fastaccept.bench import runner
from fastaccept.bench.scenarios import DEFAULT_SCENARIOS

pytestmark = needs_loadgen


def _tiny(name: str, **changes) -> bench.Scenario:
    return dataclasses.replace(bench.SCENARIOS[name], **changes)


def test_the_scenarios_of_several_processes_are_optional():
    optional = {n for n, sc in bench.SCENARIOS.items() if sc.optional}
    assert optional == {"processes-spread", "processes-burst", "processes-cpu", "reload",
                        "reload-keepalive"}
    assert not optional & set(DEFAULT_SCENARIOS)
    assert bench.SCENARIOS["reload"].reloads == 10
    assert bench.SCENARIOS["reload-keepalive"].per_connection() == 100
    assert bench.SCENARIOS["processes-cpu"].cpu_ms == 1.0
    for name in ("processes-spread", "processes-burst"):
        for label in bench.SCENARIOS[name].servers:
            spec = bench.SERVERS[label]
            assert spec.workers == 8 and spec.processes in (1, 2)
    # processes-cpu: every row of 2 processes next to the same server in one
    for label in bench.SCENARIOS["processes-cpu"].servers:
        spec = bench.SERVERS[label]
        if spec.processes == 2:
            single = bench.SERVERS[spec.single]
            assert spec.single in bench.SCENARIOS["processes-cpu"].servers
            assert (single.kind, single.workers, single.processes) == \
                (spec.kind, spec.workers, 1)


def test_spread():
    assert runner.spread([50, 50]) == 1.0
    assert runner.spread([25, 75]) == 0.5
    assert runner.spread([0, 10]) == 0.0
    assert runner.spread([]) is None and runner.spread([0, 0]) is None


@pytest.mark.parametrize("label", ["fastaccept-8x2", "fastaccept-8x2-rp", "serial-x2"])
def test_run_one_with_two_processes_counts_each_process(label, no_leaks):
    sc = _tiny("processes-cpu", quick_connections=200, cpu_ms=0.0)
    r = bench.run_one(sc, bench.SERVERS[label], quick=True, cpu_iters=0)
    assert r.error is None, r.error
    assert (r.connections, r.completed) == (200, 200)
    assert len(r.per_process) == 2 and sum(r.per_process) == r.served
    assert r.served == runner.QUICK_WARM_CONNECTIONS + 200
    assert r.spread is not None and r.cpu_us_per_conn is not None
    assert r.client_cpu_us_per_conn is not None


@pytest.mark.slow
@pytest.mark.parametrize("label", bench.SCENARIOS["reload"].servers)
@pytest.mark.parametrize("name", ["reload", "reload-keepalive"])
def test_run_one_reload(name, label, no_leaks):
    sc = _tiny(name, reloads=3, kill_after=2, timeout_s=5.0)
    r = bench.run_one(sc, bench.SERVERS[label], quick=True)
    assert r.error is None, r.error
    assert r.reloads == 3 and r.reload_p50_ms is not None and r.reload_max_ms >= r.reload_p50_ms
    assert r.killed_held is not None and r.responses_5xx == 0
    f = r.failures
    assert f["refused"] == 0 and f["timeout"] == 0, f
    lost = f["reset"] + f["other"] + (f["closed"] if sc.per_connection() == 1 else 0)
    assert lost <= r.killed_held, (f, r.killed_held)
    assert r.requests > 1000


def test_the_tables_of_several_processes():
    report = bench.BenchReport(["processes-cpu", "reload"],
                               ["fastaccept-8", "fastaccept-8x2", "serial", "serial-x2",
                                "wsgi-8x2"], 1, False, "private", "", "cpu-clock", 1000)
    for rep, label, rate, counts in ((0, "fastaccept-8", 900.0, []),
                                     (0, "fastaccept-8x2", 1500.0, [700, 800]),
                                     (0, "serial", 1000.0, []),
                                     (0, "serial-x2", 1900.0, [750, 750]),
                                     (1, "fastaccept-8", 1000.0, []),
                                     (1, "fastaccept-8x2", 1800.0, [700, 800]),
                                     (1, "serial", 1000.0, []),
                                     (1, "serial-x2", 1800.0, [750, 750]),
                                     (2, "fastaccept-8", 600.0, []),
                                     (2, "fastaccept-8x2", 1200.0, [700, 800]),
                                     (2, "serial", 500.0, []),
                                     (2, "serial-x2", 1000.0, [750, 750])):
        r = bench.RunResult("processes-cpu", label, rep, connections=100, completed=100,
                            failures=dict.fromkeys(("refused", "reset", "timeout", "other",
                                                    "closed"), 0),
                            conn_per_s=rate, cpu_us_per_conn=1100.0,
                            client_cpu_us_per_conn=60.0, per_process=counts,
                            spread=runner.spread(counts))
        report.runs.append(r)
    r = bench.RunResult("reload", "wsgi-8x2", 0, requests=50000, requests_per_s=5000.0,
                        failures={"refused": 0, "reset": 3, "timeout": 0, "other": 0,
                                  "closed": 0},
                        reloads=10, reload_p50_ms=40.0, reload_max_ms=90.0, killed_held=4,
                        responses_5xx=0)
    report.runs.append(r)
    table = bench.format_table(report)
    assert "conn/s x 1 proc  CPU us/conn  client us/conn  spread" in table
    # medians 900 and 1500: 1.67; the pairs 1.67, 1.80 and 2.00: median 1.80
    assert "fastaccept-8x2        1500     1.67       1100.0            60.0    0.93" in table
    # each row against its own 1-process row: serial-x2's medians 1800 / 1000
    assert "serial-x2             1800     1.80" in table
    assert "serial                1000     1.00" in table
    assert "(connections per process, each repetition: fastaccept-8x2 700/800 700/800 " \
           "700/800; serial-x2 750/750 750/750 750/750)" in table
    assert "(x 1 proc in each repetition, against the 1-process row in the same one: " \
           "fastaccept-8x2 1.67 1.80 2.00, median 1.80; serial-x2 1.90 1.80 2.00, " \
           "median 1.90)" in table
    assert "wsgi-8x2         1    5000      10      40      90       0     3       0     0" \
           "      0    0           4" in table
    json.dumps(bench.report_dict(report))


@pytest.mark.slow
def test_bench_runs_a_scenario_of_several_processes(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--quick", "--scenario", "processes-burst", "--json", out,
                   cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\nprocesses-burst: " in proc.stdout and "spread" in proc.stdout
    data = json.loads(out.read_text())
    assert [r["server"] for r in data["runs"]] == list(
        bench.SCENARIOS["processes-burst"].servers)
    for run in data["runs"]:
        assert run["error"] is None and run["completed"] == run["connections"], run

"""fastaccept.bench.runner and scenarios: the bench harness and the bench verb.

Correctness only: counters are read or refused, the summary and the table
add up, every connection of a quick bench completes, the JSON is produced.
No timing is ever asserted. (The reference servers: test_refservers.py.)
"""
from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from fa_testutil import needs_loadgen, read_line, run_child, run_cli, start_child
from fastaccept import _kernel, bench
from fastaccept.bench import runner

RUN_TIMEOUT_S = 240     # the bench --quick aims at under 60 s; this only stops a hang


def test_listen_queue_raises_for_a_socket_not_listening():
    """A QueueSampler stops on OSError when the server's socket goes away.
    (What it reads, _kernel.listen_queue: test_kernel.py.)"""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        assert bench.listen_queue(lsock) == _kernel.listen_queue(lsock) == (0, 8)
    with socket.socket() as idle:
        with pytest.raises(OSError):
            bench.listen_queue(idle)
    with pytest.raises(OSError):
        bench.listen_queue(idle)            # closed


def test_read_netstat_raises_when_it_cannot_count(tmp_path):
    """Overflows that could not be read must not turn into zeros. (What it
    reads, _kernel.read_tcpext: test_kernel.py.)"""
    counted = tmp_path / "counted"
    counted.write_text("TcpExt: ListenOverflows ListenDrops\nTcpExt: 22 33\n")
    assert bench.read_netstat(str(counted)) == {"ListenOverflows": 22, "ListenDrops": 33}
    with pytest.raises(OSError, match="no TcpExt counters"):
        bench.read_netstat(str(tmp_path / "missing"))
    path = tmp_path / "netstat"
    path.write_text("IpExt: InNoRoutes\nIpExt: 4\n")
    with pytest.raises(OSError, match="no TcpExt counters"):
        bench.read_netstat(str(path))


def test_process_cpu_time_is_read_from_outside(tmp_path):
    # The sources agree within a tick or so for an idle child.
    proc = start_child("idle.py", cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert read_line(proc.stdout.fileno(), 30.0, proc) == b"ready\n"
        clock = bench.process_cpu_ns(proc.pid, "cpu-clock")
        stat = bench.process_cpu_ns(proc.pid, "proc-stat")
        assert clock > 0 and stat >= 0
        tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        assert abs(clock - stat) <= 2 * tick_ns + clock // 10
    finally:
        proc.communicate(b"", timeout=30)


def test_private_netns_when_allowed(tmp_path):
    # In a child: entering a namespace must not move the test process.
    proc = run_child("private_netns.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    if os.geteuid() == 0:
        assert proc.stdout.strip() == "private"


def _fake_run(scenario: str, server: str, rep: int, cpu: float, fails: int = 0) -> bench.RunResult:
    return bench.RunResult(scenario, server, rep, connections=100, completed=100 - fails,
                           failures={"refused": 0, "reset": 0, "timeout": fails, "other": 0},
                           conn_per_s=1000.0 + rep, connect_p99_ms=0.5, rtt_p99_ms=2.0,
                           cpu_us_per_conn=cpu, listen_overflows=rep)


def test_summary_takes_medians_and_the_ratio_to_c_inline():
    report = bench.BenchReport(["throughput"], ["fastaccept-8", "c-inline"], 3, False,
                               "private", "", "cpu-clock", 1000)
    for rep, (fa, ci) in enumerate([(30.0, 10.0), (90.0, 12.0), (40.0, 8.0)]):
        report.runs.append(_fake_run("throughput", "fastaccept-8", rep, fa, fails=rep))
        report.runs.append(_fake_run("throughput", "c-inline", rep, ci))
    rows = bench.summarize(report)["throughput"]
    assert rows["fastaccept-8"]["cpu_us_per_conn"] == 40.0
    assert rows["c-inline"]["cpu_us_per_conn"] == 10.0
    assert rows["fastaccept-8"]["cpu_ratio"] == 4.0
    assert rows["c-inline"]["cpu_ratio"] == 1.0
    assert rows["fastaccept-8"]["failures"] == 1 and rows["fastaccept-8"]["failures_max"] == 2
    assert rows["fastaccept-8"]["listen_overflows"] == 1
    table = bench.format_table(report)
    assert "private network namespace" in table
    assert "40.0" in table and "4.00" in table and "1 (max 2)" in table


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown server nginx"):
        runner._names(["fastaccept-8,nginx"], bench.SERVERS, "server")
    assert runner._names(["c-inline", "serial,c-inline"], bench.SERVERS, "server") == \
        ["serial", "c-inline"]


@needs_loadgen
def test_warm_client_completes_its_burst_and_leaves_nothing_behind(no_leaks):
    assert bench.warm_client(300) == 300


def test_bench_quick_produces_the_table_and_completes_every_connection(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--quick", "--json", out, cwd=tmp_path, timeout=RUN_TIMEOUT_S)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 0, stderr[-3000:]
    for name in bench.SCENARIOS:
        assert f"\n{name}: " in stdout
    for label in bench.SERVERS:
        assert stdout.count(f"\n{label} ") == len(bench.SCENARIOS), stdout
    assert "rep 1/1" in stderr      # the progress lines
    data = json.loads(out.read_text())
    assert len(data["runs"]) == len(bench.SCENARIOS) * len(bench.SERVERS)
    # the client's untimed burst first, as large as the largest measured one
    largest = max(sc.quick_connections for sc in bench.SCENARIOS.values() if sc.burst)
    assert data["meta"]["client_warmup"] == largest
    assert f"untimed burst of {largest} connections" in stdout
    for run in data["runs"]:
        where = f"{run['scenario']}/{run['server']}"
        assert run["error"] is None, where
        assert run["connections"] > 0, where
        # Every connection is accounted for, completed or failed by kind.
        assert run["completed"] + sum(run["failures"].values()) == run["connections"], where
        if run["server"].startswith("fastaccept"):
            # fastaccept serves every one. The serial reference servers are
            # allowed to lose clients in a burst: showing that is the bench's
            # point, and how many depends on how busy the machine is.
            assert run["completed"] == run["connections"], (where, run["failures"])
        else:
            assert run["completed"] > 0, (where, run["failures"])
        assert run["served"] is not None and run["served"] >= run["completed"], where
        assert run["cpu_us_per_conn"] is not None, where

"""fastaccept.bench.runner and scenarios: the bench harness and the bench verb.

Correctness only: counters are read or refused, the summary and the table
add up, every connection of a quick bench completes, the JSON is produced.
No timing is ever asserted. (The reference servers: test_refservers.py.)
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
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
                           failures={"refused": 0, "reset": 0, "timeout": fails, "other": 0,
                                     "closed": 0},
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
    with pytest.raises(ValueError, match="unknown scenario idle-5"):
        runner._names(["keepalive,idle-5"], bench.SCENARIOS, "scenario")
    assert runner._names(["idle-64,keepalive"], bench.SCENARIOS, "scenario") == \
        ["keepalive", "idle-64"]


def test_variants_run_only_when_named_and_where_their_kind_runs():
    from fastaccept.bench import refservers, scenarios
    everything = runner._names(None, bench.SERVERS, "server", scenarios.VARIANTS)
    assert everything == list(bench.SERVERS)            # no variant unless named
    named = runner._names(["fastaccept-8,fastaccept-8-normal"], bench.SERVERS, "server",
                          scenarios.VARIANTS)
    assert named == ["fastaccept-8", "fastaccept-8-normal"]
    keepalive = bench.SCENARIOS["keepalive"]
    assert scenarios.runs_in(keepalive, "fastaccept-8-normal")
    assert not scenarios.runs_in(keepalive, "c-inline")
    idle = bench.SCENARIOS["idle-64"]
    assert scenarios.runs_in(idle, "fastaccept-8-normal")
    assert not scenarios.runs_in(idle, "fastaccept-8-accept")   # would block every worker
    for spec in scenarios.VARIANTS.values():
        assert spec.label not in bench.SERVERS
        # every variant's options are refservers' own
        args = refservers.build_parser().parse_args([spec.kind, *spec.extra])
        assert args.name == spec.kind


@pytest.mark.parametrize("option, value, message", [
    ("--only", "fastaccept-8,nginx", "unknown server nginx"),
    ("--scenario", "keepalive,idle-5", "unknown scenario idle-5"),
])
def test_bench_refuses_unknown_names_before_running_anything(tmp_path, option, value, message):
    proc = run_cli("bench", "--quick", option, value, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "rep 1/1" not in proc.stderr         # nothing ran



@needs_loadgen
def test_warm_client_completes_its_burst_and_leaves_nothing_behind(no_leaks):
    assert bench.warm_client(300) == 300


CONNECTION_SCENARIOS = [name for name, sc in bench.SCENARIOS.items()
                        if sc.kind == "connections" and not sc.optional]


def test_bench_quick_produces_the_table_and_completes_every_connection(tmp_path):
    """The connection scenarios (the new kinds have tests of their own below)."""
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--quick", "--scenario", ",".join(CONNECTION_SCENARIOS),
                   "--json", out, cwd=tmp_path, timeout=RUN_TIMEOUT_S)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 0, stderr[-3000:]
    for name in CONNECTION_SCENARIOS:
        assert f"\n{name}: " in stdout
    for label in bench.SERVERS:
        runs_it = [n for n in CONNECTION_SCENARIOS if label in bench.SCENARIOS[n].servers]
        assert stdout.count(f"\n{label} ") == len(runs_it), stdout
    assert "\ngthread " not in stdout       # not a server of these scenarios
    assert "rep 1/1" in stderr      # the progress lines
    data = json.loads(out.read_text())
    assert len(data["runs"]) == sum(len(bench.SCENARIOS[n].servers) for n in CONNECTION_SCENARIOS)
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



# -- the new kinds: requests (keep-alive) and idle -----------------------------------

def test_first_scenarios_keep_their_servers_and_protocol():
    """What the first scenarios run must not change with the new kinds."""
    first = ("throughput", "burst", "burst-2048", "burst-cpu", "seed")
    for name in first:
        sc = bench.SCENARIOS[name]
        assert sc.kind == "connections" and sc.protocol == "http-close"
        assert sc.servers == ("serial", "threadpool", "socketserver", "fastaccept-1",
                              "fastaccept-8", "c-inline")
        assert sc.per_connection() == 1 and sc.framing == "eof" and sc.server_fds() is None
        server = bench.make_server(sc, bench.SERVERS["fastaccept-8"])
        assert (server.protocol, server.fds, server.max_connections) == ("http-close", None, None)


def test_new_scenarios_as_asked():
    sc = bench.SCENARIOS
    assert (sc["burst-zero"].burst, sc["burst-zero"].connections, sc["burst-zero"].backlog,
            sc["burst-zero"].sleep_ms, sc["burst-zero"].cpu_ms) == (True, 2000, 128, 0.0, 0.0)
    for name, protocol in (("keepalive", "line-keep"), ("keepalive-close", "line-close")):
        assert sc[name].kind == "requests" and sc[name].protocol == protocol
        assert sc[name].concurrency == 256 and sc[name].workers == 8
        assert "c-inline" not in sc[name].servers
        assert "c-inline" in dict(sc[name].skipped)
        assert set(sc[name].servers) == {"fastaccept-1", "fastaccept-8", "gthread",
                                         "threadpool", "socketserver"}
    assert sc["keepalive"].per_connection() > sc["keepalive"].per_connection(quick=True) > 1
    assert sc["keepalive-close"].per_connection() == 1
    for k in (64, 1000, 10000):
        idle = sc[f"idle-{k}"]
        assert idle.kind == "idle" and idle.idle_connections == k and idle.connections == 200
        assert idle.servers == ("fastaccept-1", "fastaccept-8", "gthread")
        assert set(dict(idle.skipped)) == {"serial", "threadpool", "socketserver"}
        # fastaccept must accept beyond its default max_connections (10,000)
        server = bench.make_server(idle, bench.SERVERS["fastaccept-1"])
        assert server.max_connections is not None and server.max_connections > k
        assert server.fds is not None and server.fds > k


def test_read_rss_bytes(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  9000 kB\nVmRSS:\t  1234 kB\nThreads:\t1\n")
    assert bench.read_rss_bytes(0, str(status)) == 1234 * 1024
    status.write_text("Name:\tkthreadd\nThreads:\t1\n")
    with pytest.raises(OSError, match="no VmRSS"):
        bench.read_rss_bytes(0, str(status))
    status.write_text("VmRSS:\t  12 MB\n")
    with pytest.raises(OSError, match="unexpected VmRSS"):
        bench.read_rss_bytes(0, str(status))
    # this process: 32 MiB written in grows it by about that much
    before = bench.read_rss_bytes(os.getpid())
    block = b"x" * (32 << 20)
    after = bench.read_rss_bytes(os.getpid())
    assert after - before >= 24 << 20, (before, after)
    del block


def _tiny(name: str, **changes) -> bench.Scenario:
    return dataclasses.replace(bench.SCENARIOS[name], **changes)


def _ok(r: bench.RunResult) -> None:
    assert r.error is None and r.skipped is None, (r.error, r.skipped)


@pytest.mark.parametrize("label", bench.SCENARIOS["keepalive"].servers)
def test_run_one_keepalive(label, no_leaks):
    """8 clients x 20 requests on one connection each, every request answered;
    the server counts exactly the warm-up's and the run's requests."""
    sc = _tiny("keepalive", connections=8, quick_connections=8, concurrency=8,
               quick_requests_per_connection=20, timeout_s=20.0)
    r = bench.run_one(sc, bench.SERVERS[label], quick=True)
    _ok(r)
    assert (r.connections, r.completed, r.requests, r.failed) == (8, 8, 160, 0)
    assert r.served == 8 * 16 + 160         # the warm-up: 8 connections x 16 requests
    assert r.requests_per_s > 0 and r.cpu_us_per_request is not None
    assert 0 < r.request_p50_ms <= r.request_p99_ms
    assert r.load["requests_per_connection"] == 20 and r.load["framing"] == "fixed"


@pytest.mark.parametrize("label", ["fastaccept-1", "gthread"])
def test_run_one_keepalive_close(label, no_leaks):
    sc = _tiny("keepalive-close", quick_connections=60, concurrency=8, timeout_s=20.0)
    r = bench.run_one(sc, bench.SERVERS[label], quick=True)
    _ok(r)
    assert (r.connections, r.completed, r.requests, r.failed) == (60, 60, 60, 0)
    assert r.served == runner.QUICK_WARM_CONNECTIONS + 60
    assert r.cpu_us_per_request is not None


@pytest.mark.parametrize("label", bench.SCENARIOS["idle-64"].servers)
def test_run_one_idle(label, no_leaks):
    """10 requests alone, then 30 idle connections, then 10 requests beside
    them; the idle ones are all still open at the end."""
    sc = _tiny("idle-64", connections=10, quick_connections=10, idle_connections=30)
    r = bench.run_one(sc, bench.SERVERS[label], quick=True)
    _ok(r)
    assert (r.connections, r.completed, r.idle_connections) == (10, 10, 30)
    assert r.base_load["completed"] == 10
    assert r.failures == {"refused": 0, "reset": 0, "timeout": 0, "other": 0, "closed": 0,
                          "idle_lost": 0}
    assert r.served == runner.QUICK_WARM_CONNECTIONS + 20
    assert r.base_rtt_p50_ms is not None and r.base_rtt_p50_ms > 0
    assert r.rtt_p50_ratio == pytest.approx(r.rtt_p50_ms / r.base_rtt_p50_ms)
    assert r.rss_before is not None and r.rss_before > 0 and r.rss_after is not None
    assert r.rss_per_idle_conn == pytest.approx((r.rss_after - r.rss_before) / 30)


def test_run_one_idle_skips_what_the_fd_limit_cannot_hold(no_leaks):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard fd limit")
    sc = _tiny("idle-10000", idle_connections=hard)
    r = bench.run_one(sc, bench.SERVERS["fastaccept-8"], quick=True)
    assert r.error is None
    assert r.skipped is not None and "hard limit" in r.skipped and str(hard) in r.skipped
    assert r.served is None         # no server was started
    report = bench.BenchReport([sc.name], ["fastaccept-8"], 1, True, "host", "test",
                               "cpu-clock", 1000, runs=[r])
    assert "fastaccept-8  skipped: " in bench.format_table(report)


class _Listener:
    """What open_idle needs of a server: a port and its accept queue."""

    def __init__(self, backlog: int) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]

    def queue(self):
        return bench.listen_queue(self.sock)


def test_open_idle_waits_for_the_server_to_accept(no_leaks):
    """A listener nobody accepts from: the first group stays in its queue,
    so open_idle gives up at its timeout and leaves nothing open."""
    listener = _Listener(backlog=128)
    try:
        with pytest.raises(TimeoutError, match="did not accept"):
            runner.open_idle(listener, 10, timeout_s=0.3)
    finally:
        listener.sock.close()


def test_idle_lost_counts_what_the_server_closed(no_leaks):
    listener = _Listener(backlog=16)
    accepted = []
    try:
        clients = [socket.create_connection(("127.0.0.1", listener.port), timeout=10)
                   for _ in range(4)]
        accepted = [listener.sock.accept()[0] for _ in range(4)]
        assert runner.idle_lost(clients) == 0
        accepted[0].close()
        accepted[2].shutdown(socket.SHUT_WR)
        deadline_poll = select_wait(clients[0], clients[2])
        assert deadline_poll
        assert runner.idle_lost(clients) == 2
        runner.close_idle(clients)
    finally:
        for s in accepted:
            s.close()
        listener.sock.close()


def select_wait(*socks, timeout: float = 10.0) -> bool:
    """Wait until every sock is readable (its EOF arrived); bounded."""
    import select
    pending = list(socks)
    while pending:
        ready, _, _ = select.select(pending, [], [], timeout)
        if not ready:
            return False
        pending = [s for s in pending if s not in ready]
    return True


def test_tables_of_the_new_kinds():
    report = bench.BenchReport(["keepalive", "idle-1000", "burst-zero"],
                               ["c-inline", "fastaccept-8", "gthread", "threadpool"], 2, False,
                               "private", "", "cpu-clock", 1000, only=True)
    for rep in range(2):
        for label in ("fastaccept-8", "gthread", "threadpool"):
            r = _fake_run("keepalive", label, rep, 30.0)
            r.requests, r.requests_per_s, r.cpu_us_per_request = 5000, 40000.0 + rep, 11.5
            r.request_p50_ms, r.request_p99_ms, r.request_max_ms = 1.25, 4.5, 650.0
            report.runs.append(r)
        for label in ("fastaccept-8", "gthread"):
            r = _fake_run("idle-1000", label, rep, 0.0)
            r.failures["idle_lost"] = 0
            r.base_rtt_p50_ms, r.base_rtt_p99_ms, r.rtt_p50_ms, r.rtt_p99_ms = 0.1, 0.3, 0.2, 0.6
            r.rtt_p50_ratio, r.rtt_p99_ratio, r.rss_per_idle_conn = 2.0, 2.0, 321.0
            report.runs.append(r)
        for label in ("c-inline", "fastaccept-8", "threadpool"):
            r = _fake_run("burst-zero", label, rep, 20.0)
            r.listen_overflows = 7 * rep if label != "fastaccept-8" else 0
            report.runs.append(r)
    table = bench.format_table(report)
    assert "req/s  CPU us/req  req p50 ms  req p99 ms  req max ms  failures" in table
    assert "fastaccept-8     40000        11.5       1.250        4.50       650.0  0" in table
    assert "(c-inline not run: it answers the http-close protocol in C" in table
    assert "RSS B/idle" in table
    assert "fastaccept-8        0.100      0.300      0.200      0.600   2.00   2.00" in table
    assert "(threadpool not run: each idle connection blocks" in table
    # --only named them, and these scenarios do not run them
    assert "(not in this scenario: c-inline)" in table          # idle-1000
    assert "(not in this scenario: gthread)" in table           # burst-zero
    assert "(overflows per repetition: c-inline 0 7; fastaccept-8 0 0; threadpool 0 7)" in table
    data = bench.report_dict(report)
    assert data["medians"]["keepalive"]["gthread"]["requests_per_s"] == 40000.5
    assert data["medians"]["idle-1000"]["gthread"]["rss_per_idle_conn"] == 321.0
    assert "gthread" not in data["medians"]["burst-zero"]
    json.dumps(data)


@pytest.mark.slow
def test_bench_quick_of_the_new_kinds_with_only(tmp_path):
    """The command of the brief: two new scenarios, two servers, quick, JSON."""
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--scenario", "keepalive,idle-1000", "--only", "fastaccept-8,gthread",
                   "--quick", "--json", out, cwd=tmp_path, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\nkeepalive: " in proc.stdout and "\nidle-1000: " in proc.stdout
    assert "req/s  CPU us/req" in proc.stdout and "RSS B/idle" in proc.stdout
    for label in ("fastaccept-8", "gthread"):
        assert proc.stdout.count(f"\n{label} ") == 2
    data = json.loads(out.read_text())
    assert [(r["scenario"], r["server"]) for r in data["runs"]] == [
        ("keepalive", "fastaccept-8"), ("keepalive", "gthread"),
        ("idle-1000", "fastaccept-8"), ("idle-1000", "gthread")]
    r = 256 * bench.SCENARIOS["keepalive"].per_connection(quick=True)
    for run in data["runs"]:
        assert run["error"] is None, run
        if run["scenario"] == "keepalive":
            assert run["requests"] == r and run["completed"] == 256, run["failures"]
            assert run["cpu_us_per_request"] is not None
        else:
            assert run["completed"] == 200 and run["base_load"]["completed"] == 200
            assert run["failures"]["idle_lost"] == 0
            assert run["rss_per_idle_conn"] is not None

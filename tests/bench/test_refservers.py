"""fastaccept.bench.refservers: the reference servers the bench runs, one process each.

Correctness only: every connection is answered with the one demo reply, each
server binds its own port or takes a listening one, stops on SIGINT and
exits cleanly. No timing is ever asserted.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from fa_testutil import has_loadgen, needs_loadgen, read_line
from fastaccept import bench
from fastaccept.bench import refservers, runner

WORKS = {"plain": {}, "sleep": {"sleep_ms": 1.0}, "cpu": {"cpu_iters": 1000}}


@pytest.mark.parametrize("kind,work", [
    pytest.param(kind, work, id=f"{kind}-{name}")
    for kind in refservers.NAMES for name, work in WORKS.items()
    if kind != "c-inline" or name == "plain"])      # c-inline does no handler work
def test_refserver_serves_and_exits_cleanly(kind, work, http_get, no_leaks):
    if kind == "c-inline" and not has_loadgen():
        pytest.skip("fastaccept.bench._loadgen is not built")
    server = bench.ServerProcess(kind, backlog=16, workers=2, **work)
    with server:
        for _ in range(5):
            reply = http_get(("127.0.0.1", server.port), timeout=10.0)
            assert reply == refservers.RESPONSE
    assert server.returncode == 0
    assert server.served == 5


def test_refserver_binds_its_own_port_and_stops_on_sigint():
    proc = subprocess.Popen([sys.executable, "-m", "fastaccept.bench.refservers", "serial",
                             "--backlog", "4"], stdout=subprocess.PIPE, cwd=runner.PACKAGE_PARENT)
    try:
        line = read_line(proc.stdout.fileno(), 30.0, proc)
        assert line.startswith(b"port ")
        port = int(line.split()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            assert s.recv(4096).startswith(b"HTTP/1.0 200 OK")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert out.strip() == b"served 1"


def test_refserver_rejects_a_socket_that_is_not_listening():
    with socket.socket() as s:
        proc = subprocess.run([sys.executable, "-m", "fastaccept.bench.refservers", "serial",
                               "--fd", str(s.fileno())], pass_fds=(s.fileno(),),
                              capture_output=True, timeout=30, cwd=runner.PACKAGE_PARENT)
    assert proc.returncode != 0
    assert b"not a listening socket" in proc.stderr


def test_burn_does_work_proportional_to_its_count():
    assert refservers.burn(0) == 0
    assert refservers.burn(10) == sum(i * i for i in range(10))
    assert refservers.calibrate_cpu_iters(0) == 0
    assert refservers.calibrate_cpu_iters(1.0) >= 1



@needs_loadgen
def test_loadgen_run_against_a_reference_server_completes_every_connection():
    from fastaccept.bench import loadgen

    with bench.ServerProcess("fastaccept", backlog=128, workers=4) as server:
        result = loadgen.run("127.0.0.1", server.port, connections=300, concurrency=16,
                             timeout=20.0)
    assert result.connections == 300
    assert result.completed == 300, result.failures
    assert sum(result.failures.values()) == 0
    assert server.served == 300

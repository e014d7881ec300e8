"""fastaccept.bench.refservers: the reference servers the bench runs, one process each.

Correctness only: every connection is answered with the one demo reply (or
its line echoed, in the line protocols), each server binds its own port or
takes a listening one, stops on SIGINT and exits cleanly. No timing is ever
asserted.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from fa_testutil import has_loadgen, needs_loadgen, read_line
from fastaccept import bench
from fastaccept.bench import refservers, runner, wsgiapp

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
            if kind == "wsgi":      # a real HTTP server: Date, Server, Connection: close
                assert reply.startswith(b"HTTP/1.0 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")
            else:
                assert reply == refservers.RESPONSE
    assert server.returncode == 0
    assert server.served == 5


@pytest.mark.parametrize("kind", refservers.SUPERVISED)
@pytest.mark.parametrize("listener", ["shared", "reuseport"])
def test_refserver_in_two_processes(kind, listener, http_get, no_leaks):
    server = bench.ServerProcess(kind, backlog=16, workers=2, processes=2, listener=listener)
    with server:
        assert (server.sock is None) == (listener == "reuseport")
        ready = [server.next_event("ready", 30.0) for _ in range(2)]
        assert all(ready) and len({e["pid"] for e in ready}) == 2
        assert sorted(server.children()) == sorted(e["pid"] for e in ready)
        assert server.cpu_ns() > 0
        for _ in range(6):
            assert http_get(("127.0.0.1", server.port), timeout=10.0).endswith(b"\r\n\r\nok")
    assert server.returncode == 0
    assert server.served == 6 and sum(server.per_process) == 6 and len(server.per_process) == 2
    assert [e["event"] for e in server.events].count("exited") == 2


def test_serial_forked_in_two_processes_on_one_socket(http_get, no_leaks):
    server = bench.ServerProcess("serial", backlog=16, workers=1, processes=2, listener="shared")
    with server:
        ready = [server.next_event("ready", 30.0) for _ in range(2)]
        assert all(ready) and len({e["pid"] for e in ready}) == 2
        assert sorted(server.children()) == sorted(e["pid"] for e in ready)
        for _ in range(6):
            assert http_get(("127.0.0.1", server.port), timeout=10.0).endswith(b"\r\n\r\nok")
    assert server.returncode == 0
    assert server.served == 6 and sum(server.per_process) == 6 and len(server.per_process) == 2


@pytest.mark.parametrize("name, args", [("serial", ["--listener", "reuseport"]),
                                        ("threadpool", ["--processes", "2"])])
def test_refserver_processes_are_for_fastaccept_wsgi_and_a_forked_serial(name, args):
    proc = subprocess.run([sys.executable, "-m", "fastaccept.bench.refservers", name, *args],
                          capture_output=True, text=True, timeout=30, cwd=runner.PACKAGE_PARENT)
    assert proc.returncode == 2 and "runs in one process" in proc.stderr


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


# -- wsgi as the HTTP scenarios run it -------------------------------------------------

def test_wsgi_options_from_the_command_line():
    parse = refservers.build_parser().parse_args
    assert refservers._wsgi_options(parse(["wsgi"])) == {"timeout": None}
    assert refservers._wsgi_options(parse(["wsgi", "--keep-alive", "300", "--max-connections",
                                           "50"])) == {"timeout": None, "keep_alive": 300.0,
                                                       "max_connections": 50}
    # the HTTP scenarios' fastaccept rows: refservers options of its own
    for label in ("fastaccept-wsgi-1", "fastaccept-wsgi-8"):
        spec = bench.SERVERS[label]
        args = parse([spec.kind, *spec.extra])
        assert args.name == "wsgi" and args.hello and args.keep_alive == 300.0


def test_wsgi_hello_answers_the_peers_app_and_keeps_for_keep_alive(no_leaks):
    """--hello serves wsgiapp.app; --keep-alive is WSGIServer's: a kept
    connection left idle past it is closed by the server."""
    server = bench.ServerProcess("wsgi", backlog=16, workers=2,
                                 extra=["--hello", "--keep-alive", "0.2"])
    with server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(wsgiapp.BODY):
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 13" in data
            assert s.recv(4096) == b""      # closed after 0.2 s idle (10 s bound)
    assert server.returncode == 0 and server.served == 1


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


# -- the line protocols --------------------------------------------------------------

LINE_SERVERS = [kind for kind in refservers.NAMES if kind not in refservers.HTTP_ONLY]
LINE_WORKS = {"plain": {}, "sleep": {"sleep_ms": 1.0}}


def _recv_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("kind,work", [
    pytest.param(kind, work, id=f"{kind}-{name}")
    for kind in LINE_SERVERS for name, work in LINE_WORKS.items()])
def test_line_keep_serves_several_requests_on_one_connection(kind, work, no_leaks):
    """Six lines on one connection, each echoed (a line in two writes too),
    then a second connection: every request is counted as served."""
    server = bench.ServerProcess(kind, backlog=16, workers=2, protocol="line-keep", **work)
    with server:
        for c in range(2):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                for i in range(5):
                    s.sendall(b"conn %d line %d\n" % (c, i))
                    assert _recv_line(s) == b"conn %d line %d\n" % (c, i)
                s.sendall(b"in two")
                s.sendall(b" writes\n")
                assert _recv_line(s) == b"in two writes\n"
    assert server.returncode == 0
    assert server.served == 12


@pytest.mark.parametrize("kind", ["fastaccept", "gthread", "socketserver"])
def test_line_keep_gives_the_worker_back_between_requests(kind, no_leaks):
    """With one worker, two kept connections take turns: only a server that
    gives the connection back between requests (fastaccept's KEEP, gthread's
    poller; socketserver has a thread each) can answer the second while the
    first stays open."""
    server = bench.ServerProcess(kind, backlog=16, workers=1, protocol="line-keep")
    with server:
        a = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        b = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with a, b:
            for i in range(4):
                for name, s in (("a", a), ("b", b)):
                    s.sendall(b"%s%d\n" % (name.encode(), i))
                    assert _recv_line(s) == b"%s%d\n" % (name.encode(), i)
    assert server.served == 8


@pytest.mark.parametrize("kind", LINE_SERVERS)
def test_line_close_answers_one_line_then_closes(kind, no_leaks):
    server = bench.ServerProcess(kind, backlog=16, workers=2, protocol="line-close")
    with server:
        for i in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(b"only %d\n" % i)
                assert _recv_line(s) == b"only %d\n" % i
                assert s.recv(4096) == b""      # and the server closed it
    assert server.returncode == 0
    assert server.served == 3


@pytest.mark.parametrize("protocol", ["line-keep", "line-close"])
def test_c_inline_refuses_the_line_protocols(protocol):
    proc = subprocess.run([sys.executable, "-m", "fastaccept.bench.refservers", "c-inline",
                           "--protocol", protocol], capture_output=True, timeout=30,
                          cwd=runner.PACKAGE_PARENT)
    assert proc.returncode == 2
    assert f"cannot serve --protocol {protocol}".encode() in proc.stderr
    assert proc.stdout == b""           # it never served


def test_make_handler_refuses_an_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        refservers.make_handler(protocol="smtp")


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    return int(line.split()[3])


def test_fds_raises_the_servers_own_fd_limit(no_leaks):
    """The server starts with a soft limit of 256 (lowered before the exec)
    and raises its own to --fds 2048."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard fd limit ({hard}) is below what the test asks for")
    lowered = ("import os, resource, sys; "
               "resource.setrlimit(resource.RLIMIT_NOFILE, "
               "(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
               "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", lowered, "-m", "fastaccept.bench.refservers",
                             "gthread", "--fds", "2048"], stdout=subprocess.PIPE,
                            cwd=runner.PACKAGE_PARENT)
    try:
        line = read_line(proc.stdout.fileno(), 30.0, proc)
        assert line.startswith(b"port ")
        assert _soft_nofile(proc.pid) == 2048
        assert http_get_ok(int(line.split()[1]))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert out.strip() == b"served 1"


def http_get_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data == refservers.RESPONSE


def test_fds_above_the_hard_limit_is_refused():
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard fd limit to exceed")
    proc = subprocess.run([sys.executable, "-m", "fastaccept.bench.refservers", "serial",
                           "--fds", str(hard + 1)], capture_output=True, timeout=30,
                          cwd=runner.PACKAGE_PARENT)
    assert proc.returncode == 2
    assert b"hard limit" in proc.stderr


def test_raise_fd_limit_keeps_a_limit_that_is_high_enough():
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert refservers.raise_fd_limit(1) == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


@needs_loadgen
def test_fastaccept_max_connections_reaches_the_server(no_leaks):
    """--max-connections 2: two idle clients hold the limit, so a third is
    served only once one of them leaves."""
    from fastaccept import _kernel

    with bench.ServerProcess("fastaccept", backlog=16, workers=1, max_connections=2) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(2)]
        try:
            late = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            with late:
                late.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert server.sock is not None
                # the third waits in the kernel queue: the server stopped accepting
                deadline = time.monotonic() + 10
                while _kernel.listen_queue(server.sock) != (1, 16):
                    assert time.monotonic() < deadline, "the third was accepted"
                    time.sleep(0.01)    # a poll interval
                idle.pop().close()
                assert late.recv(4096).startswith(b"HTTP/1.0 200 OK")
        finally:
            for s in idle:
                s.close()

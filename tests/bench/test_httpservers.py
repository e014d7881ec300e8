"""fastaccept.bench.httpservers: the HTTP peers the bench measures WSGIServer against.

Correctness only: each peer that is installed serves wsgiapp.app on the
bench's socket (or, granian, on the port it is given), keeps an HTTP/1.1
connection, stops on SIGTERM with status 0 and leaves no process behind,
also when the bench dies without stopping it. A peer that is not installed
is skipped, with the reason. No timing is ever asserted.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys

import pytest

from fa_testutil import all_gone, needs_peer, read_line
from fastaccept import bench
from fastaccept.bench import httpservers, runner

HELLO = b"Hello, world!"
#: The peers that run as a process tree of their own (a child, its workers).
CHILD_PEERS = ("gunicorn", "granian")


def test_names_and_packages():
    assert set(httpservers.NAMES) == set(httpservers.PEERS)
    assert httpservers.BINDS_ITSELF <= set(httpservers.NAMES)
    for label in ("gunicorn-gthread", "waitress", "cheroot", "granian"):
        spec = bench.SERVERS[label]
        assert spec.peer and spec.kind in httpservers.NAMES


def test_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(httpservers.PEERS, "cheroot", "no_such_package_for_the_bench")
    why = httpservers.missing("cheroot")
    assert why is not None and "no_such_package_for_the_bench is not installed" in why
    assert "pip install 'fastaccept[peers]'" in why
    assert httpservers.missing("not-a-peer") is None


def test_command_lines_of_the_child_peers():
    gunicorn = httpservers.command("gunicorn", fd=7, port=0, backlog=128, threads=8)
    assert gunicorn[1:3] == ["-m", "gunicorn"]
    assert "fd://7" in gunicorn and httpservers.APP_TARGET == gunicorn[-1]
    assert gunicorn[gunicorn.index("--worker-class") + 1] == "gthread"
    assert gunicorn[gunicorn.index("--threads") + 1] == "8"
    granian = httpservers.command("granian", fd=None, port=4321, backlog=64, threads=2)
    assert granian[granian.index("--port") + 1] == "4321"
    assert granian[granian.index("--backlog") + 1] == "64"
    assert granian[granian.index("--blocking-threads") + 1] == "2"
    with pytest.raises(ValueError, match="give fd"):
        httpservers.command("gunicorn", fd=None, port=1, backlog=1, threads=1)
    with pytest.raises(ValueError, match="runs in this process"):
        httpservers.command("waitress", fd=3, port=1, backlog=1, threads=1)


def _main(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "fastaccept.bench.httpservers", *args],
                          capture_output=True, text=True, timeout=60, cwd=runner.PACKAGE_PARENT,
                          **kwargs)


@pytest.mark.parametrize("args, message", [
    (["granian", "--fd", "0"], "granian needs --port"),
    (["gunicorn", "--port", "1"], "gunicorn needs --fd"),
    (["waitress", "--fd", "0", "--threads", "0"], "threads and backlog must be >= 1"),
    (["granian", "--port", "1", "--backlog", "64"], "granian takes a backlog of at least 128"),
])
def test_main_refuses_what_it_cannot_serve(args, message):
    proc = _main(*args)
    assert proc.returncode == 2 and message in proc.stderr


@needs_peer("waitress")
def test_main_refuses_a_socket_that_does_not_listen():
    with socket.socket() as s:
        proc = _main("waitress", "--fd", str(s.fileno()), pass_fds=(s.fileno(),))
    assert proc.returncode == 2 and "is not a listening socket" in proc.stderr


def test_probe_is_false_where_nothing_answers():
    assert not httpservers.probe(runner.free_port(), timeout=2.0)


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_peer(label)) for n, label in (
    ("gunicorn", "gunicorn-gthread"), ("waitress", "waitress"), ("cheroot", "cheroot"),
    ("granian", "granian"))])
def test_peer_serves_the_app_keeps_a_connection_and_stops(name, no_leaks):
    server = bench.ServerProcess(name, backlog=128, workers=2, peer=True)
    with server:
        assert (server.sock is None) == (name in httpservers.BINDS_ITSELF)
        tree = runner.process_tree(server.proc.pid)
        assert len(tree) >= (3 if name in CHILD_PEERS else 1)   # gunicorn: arbiter, worker
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for _ in range(3):          # HTTP/1.1: one connection for the three
                conn.request("GET", "/")
                reply = conn.getresponse()
                assert (reply.status, reply.read()) == (200, HELLO)
                assert reply.getheader("Content-Length") == "13"
                assert not reply.will_close
        finally:
            conn.close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):        # HTTP/1.0: the server closes
                data += chunk
        assert data.split(b" ", 2)[1] == b"200" and data.endswith(HELLO)
        assert server.cpu_ns() > 0 and server.rss_bytes() > 0
        depth, limit = server.queue()       # TCP_INFO, or sock_diag for granian
        assert depth == 0 and limit == 128
    assert server.returncode == 0
    assert server.served is None            # the peers do not count
    assert all_gone(tree, 15.0), [p for p in tree if os.path.exists(f"/proc/{p}")]


_ORPHAN = """
import os, sys
from fastaccept.bench.runner import ServerProcess, process_tree
server = ServerProcess(sys.argv[1], backlog=128, workers=2, peer=True).start()
print(" ".join(map(str, process_tree(server.proc.pid))), flush=True)
sys.stdin.readline()
os._exit(1)         # the bench dies: no stop(), no SIGTERM from it
"""


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_peer(label)) for n, label in (
    ("gunicorn", "gunicorn-gthread"), ("granian", "granian"))])
def test_peer_dies_with_the_bench(name, tmp_path):
    """A bench that crashes leaves no peer behind: httpservers gets SIGTERM
    when the bench dies, and stops its own child tree."""
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN, name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=tmp_path)
    tree, ok = [], False
    try:
        line = read_line(proc.stdout.fileno(), 60.0, proc)
        tree = [int(p) for p in line.split()]
        assert len(tree) >= 2, line
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(30) == 1
        assert all_gone(tree, 30.0), [p for p in tree if os.path.exists(f"/proc/{p}")]
        ok = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        for pid in tree[1:] if not ok else ():  # what a failure left: the server's tree
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@needs_peer("waitress")
def test_sigint_stops_a_peer_too(tmp_path):
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        proc = subprocess.Popen([sys.executable, "-m", "fastaccept.bench.httpservers",
                                 "waitress", "--fd", str(lsock.fileno())],
                                stdout=subprocess.PIPE, pass_fds=(lsock.fileno(),),
                                cwd=runner.PACKAGE_PARENT)
    try:
        line = read_line(proc.stdout.fileno(), 60.0, proc)
        assert line.startswith(b"port ")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()

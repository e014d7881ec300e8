"""Connections that wait in C: dispatch when readable, KEEP, idle deadlines,
max_connections, and what a stop does with each (src/fa_conn.*, fa_accept.c).

A worker only ever receives a connection that has something for it: new
connections and kept ones wait in the accept loop's epoll set until their
bytes arrive, and C closes the ones that never send (after idle_timeout)
or whose peer left.
"""
from __future__ import annotations

import json
import resource
import socket
import subprocess
import threading
import time

import pytest

import fastaccept
from fa_testutil import child_argv, close_all, read_line, read_to_eof, reset


LINE_END = b"\n"


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(LINE_END):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _echo_line_keep(conn: socket.socket, addr) -> object:
    """One line in, the same line out, then KEEP: a line protocol on one connection.
    Reads byte-exact (a line is one recv here, the client sends one at a time)."""
    line = conn.recv(4096)
    if not line:
        return None
    conn.sendall(line)
    return fastaccept.KEEP


def test_keep_serves_requests_on_one_connection_without_a_thread_between(server_factory,
                                                                         wait_for):
    server = server_factory(_echo_line_keep, workers=2)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        for i in range(50):
            sock.sendall(b"%d\n" % i)
            assert _read_line(sock) == b"%d\n" % i
        # between requests the connection waits in C, no worker holds it
        wait_for(lambda: server.stats()["conns_waiting"] == 1, 10.0, "the kept connection in C")
        assert server.stats()["workers_busy"] == 0
    st = wait_for(lambda: (s := server.stats())["peer_closed"] == 1 and s["conns_open"] == 0
                  and s, 10.0, "C to close the connection its peer closed")
    assert st["accepted"] == 1
    assert st["handled"] == 50          # the close itself never reached a worker
    assert st["kept"] == 50
    assert st["conns_open"] == 0 and st["conns_waiting"] == 0


def test_kept_connection_idle_past_idle_timeout_is_closed_by_c_with_a_fin(server_factory,
                                                                         wait_for):
    server = server_factory(_echo_line_keep, workers=1, idle_timeout=0.3)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"one\n")
        assert _read_line(sock) == b"one\n"
        t0 = time.monotonic()
        assert sock.recv(1) == b""          # EOF: a FIN, not a reset
        assert time.monotonic() - t0 < 5.0
    st = wait_for(lambda: (s := server.stats())["idle_closed"] == 1 and s, 10.0, "idle_closed")
    assert st["handled"] == 1


def test_keep_on_a_connection_the_peer_closed(server_factory, wait_for):
    """A handler returns KEEP, but its peer has already gone: C sees the EOF
    and closes it; no handler runs for it again."""
    calls = []

    def handler(conn, addr):
        calls.append(conn.recv(4096))
        conn.sendall(b"bye\n")
        return fastaccept.KEEP

    server = server_factory(handler, workers=1)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"last\n")
        sock.shutdown(socket.SHUT_WR)       # gone before the handler returns KEEP
        assert _read_line(sock) == b"bye\n"
        assert sock.recv(1) == b""
    wait_for(lambda: server.stats()["peer_closed"] == 1, 10.0, "C to close it")
    assert calls == [b"last\n"]
    assert server.stats()["conns_open"] == 0


@pytest.mark.parametrize("behaviour", ["silent", "one_byte", "reset", "close"])
def test_idle_clients_of_every_kind(server_factory, wait_for, behaviour, caplog):
    """Clients that never send (closed by C after idle_timeout), send one
    byte and stop (dispatched: the handler's own timeout ends it), reset, or
    close at once (both closed by C, no handler)."""
    handled = []

    def handler(conn, addr):
        handled.append(addr)
        try:
            conn.recv(1)
            conn.recv(1)        # one_byte: waits for a second byte that never comes
        except socket.timeout:
            pass

    server = server_factory(handler, workers=1, idle_timeout=0.3, timeout=0.3)
    sock = socket.create_connection(server.address, timeout=10.0)
    try:
        if behaviour == "one_byte":
            sock.sendall(b"x")
        elif behaviour == "reset":
            reset(sock)
        elif behaviour == "close":
            sock.close()
        if behaviour in ("silent", "one_byte"):
            assert sock.recv(1) == b""      # closed by the server within its bounds
    finally:
        sock.close()
    key = {"silent": "idle_closed", "one_byte": "handled", "reset": "peer_closed",
           "close": "peer_closed"}[behaviour]
    st = wait_for(lambda: (s := server.stats())[key] == 1 and s["conns_open"] == 0 and s,
                  10.0, f"{key} == 1")
    assert len(handled) == (1 if behaviour == "one_byte" else 0)
    assert st["accepted"] == 1


def test_max_connections_reached_and_released(server_factory, wait_for, http_get):
    """At max_connections open, the loop stops accepting: the next client
    waits in the kernel queue; once one closes, it is accepted and served."""
    def handler(conn, addr):
        if conn.recv(4096):
            conn.sendall(b"ok")

    server = server_factory(handler, workers=1, max_connections=3, backlog=16)
    idle = [socket.create_connection(server.address, timeout=10.0) for _ in range(3)]
    try:
        wait_for(lambda: server.stats()["conns_waiting"] == 3, 10.0, "3 waiting in C")
        late = socket.create_connection(server.address, timeout=10.0)
        try:
            late.sendall(b"GET")
            st = wait_for(lambda: (s := server.stats())["kernel_queue_depth"] == 1 and s,
                          10.0, "the 4th in the kernel queue")
            assert st["accepted"] == 3 and st["max_connections_pauses"] >= 1
            assert st["conns_open"] == 3
            idle.pop().close()              # C sees the EOF, closes its end
            assert late.recv(16) == b"ok"   # accepted once below the limit
        finally:
            late.close()
    finally:
        close_all(idle)
    st = wait_for(lambda: (s := server.stats())["conns_open"] == 0 and s, 10.0, "all closed")
    assert st["accepted"] == 4 and st["handled"] == 1


def test_stop_serves_readable_closes_idle_and_kept_with_a_fin(server_factory, wait_for,
                                                                join_all):
    """A stop with connections in every state: one busy in a handler (served
    in full), one kept and idle, one new and idle (both closed with a FIN:
    EOF for the client, no reset), one kept whose next request arrived (served)."""
    release = threading.Event()
    replies = {}

    def handler(conn, addr):
        data = conn.recv(4096)
        if data == b"slow\n":
            release.wait(30.0)
        conn.sendall(b"re:" + data)
        return fastaccept.KEEP

    server = server_factory(handler, workers=2)
    busy = socket.create_connection(server.address, timeout=10.0)
    kept_idle = socket.create_connection(server.address, timeout=10.0)
    new_idle = socket.create_connection(server.address, timeout=10.0)
    kept_ready = socket.create_connection(server.address, timeout=10.0)
    socks = [busy, kept_idle, new_idle, kept_ready]
    shutter = threading.Thread(target=server.shutdown, name="test-shutdown")
    try:
        for s in (kept_idle, kept_ready):
            s.sendall(b"first\n")
            assert s.recv(4096) == b"re:first\n"
        busy.sendall(b"slow\n")
        wait_for(lambda: server.stats()["workers_busy"] == 1 and
                 server.stats()["conns_waiting"] == 3, 10.0, "1 busy, 3 waiting")
        # its next request is in before the stop: it must be served
        kept_ready.sendall(b"second\n")
        replies["kept_ready"] = kept_ready.recv(4096)
        shutter.start()
        for name, s in (("kept_idle", kept_idle), ("new_idle", new_idle)):
            replies[name] = s.recv(1)       # a reset would raise here
        release.set()
        replies["busy"] = busy.recv(4096)
    finally:
        release.set()
        if shutter.ident is not None:
            assert join_all([shutter], 30.0) == []
        close_all(socks)
    assert replies == {"kept_ready": b"re:second\n", "kept_idle": b"", "new_idle": b"",
                       "busy": b"re:slow\n"}
    st = server.stats()
    assert st["stop_closed"] >= 2 and st["conns_open"] == 0


def test_dispatch_accept_sends_new_connections_at_once_and_kept_ones_wait_in_c(
        server_factory, wait_for):
    """Under dispatch="accept" a new connection reaches a worker at once (the
    server may speak first); a kept one still waits in C."""
    def handler(conn, addr):
        conn.sendall(b"hello\n")            # a banner: the client sent nothing yet
        line = conn.recv(4096)
        if line:
            conn.sendall(line)
            return fastaccept.KEEP
        return None

    server = server_factory(handler, workers=1, dispatch="accept")
    with socket.create_connection(server.address, timeout=10.0) as sock:
        assert _read_line(sock) == b"hello\n"
        sock.sendall(b"ping\n")
        assert _read_line(sock) == b"ping\n"
        wait_for(lambda: server.stats()["conns_waiting"] == 1, 10.0, "kept, waiting in C")
        sock.sendall(b"again\n")
        assert _read_line(sock) == b"hello\n"   # the handler runs again from the top
        assert _read_line(sock) == b"again\n"


def test_shed_under_readable_dispatch_answers_what_is_ready_when_the_ring_is_full(
        server_factory, wait_for):
    release = threading.Event()

    def handler(conn, addr):
        conn.recv(4096)
        release.wait(30.0)
        conn.sendall(b"ok")

    server = server_factory(handler, workers=1, ring_size=2, overload="shed",
                            shed_response=b"busy")
    held = []
    try:
        for i in range(3):                  # 1 in the handler, then 2 in the ring
            s = socket.create_connection(server.address, timeout=10.0)
            s.sendall(b"x")
            held.append(s)
            if i == 0:
                wait_for(lambda: server.stats()["workers_busy"] == 1, 10.0, "a busy worker")
        wait_for(lambda: server.stats()["ring_depth"] == 2, 10.0, "a full ring")
        with socket.create_connection(server.address, timeout=10.0) as extra:
            extra.sendall(b"x")
            assert read_to_eof(extra) == b"busy"
        release.set()
        assert [read_to_eof(s) for s in held] == [b"ok"] * 3
    finally:
        release.set()
        close_all(held)
    assert server.stats()["shed"] == 1


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@pytest.mark.slow
def test_ten_thousand_kept_connections_with_eight_workers(server_factory, wait_for, tmp_path):
    """10,000 connections open at once (a child process is the client), each
    sending two requests with a pause between: every request answered by 8
    workers, and between the two all 10,000 wait in C, none in a thread."""
    n = 10000
    _raise_nofile(n + 1024)
    server = server_factory(_echo_line_keep, workers=8, backlog=4096, max_connections=n + 16)
    child = subprocess.Popen(child_argv("keepalive_clients.py", "127.0.0.1", server.address[1],
                                        n, 2),
                             cwd=str(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert read_line(child.stdout.fileno(), 120.0, child) == b"round 0 done\n"
        st = wait_for(lambda: (s := server.stats())["conns_waiting"] == n and s, 60.0,
                      f"{n} kept connections waiting in C")
        assert st["workers_busy"] == 0
        child.stdin.write(b"go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=180.0)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary == {"answered": 2 * n, "errors": []}, err.decode()[-2000:]
    assert child.returncode == 0
    st = wait_for(lambda: (s := server.stats())["conns_open"] == 0 and s, 60.0, "all closed")
    assert st["handled"] == 2 * n and st["accepted"] == n
    assert st["workers"] == 8


def test_tcpserver_keep_with_an_unbuffered_stream_handler(wait_for, no_leaks):
    import socketserver

    class Echo(socketserver.StreamRequestHandler):
        rbufsize = 0            # nothing read past the line: the rest stays in the socket

        def handle(self):
            line = self.rfile.readline()
            if line:
                self.wfile.write(line)
                self.server.keep(self.request)

    with fastaccept.TCPServer(("127.0.0.1", 0), Echo, workers=2) as server:
        t = threading.Thread(target=server.serve_forever, name="test-serve")
        t.start()
        try:
            with socket.create_connection(server.server_address, timeout=10.0) as sock:
                for i in range(20):
                    sock.sendall(b"line %d\n" % i)
                    assert _read_line(sock) == b"line %d\n" % i
            wait_for(lambda: server.stats()["peer_closed"] == 1, 10.0, "C to close it")
            st = server.stats()
            assert st["accepted"] == 1 and st["handled"] == 20 and st["kept"] == 20
        finally:
            server.shutdown()
            t.join(10.0)


def test_stop_grace_serves_a_request_sent_on_a_kept_connection_during_the_stop(
        server_factory, wait_for, join_all):
    """With stop_grace, a kept connection whose next request comes after the
    stop began is still served (its KEEP then closes it), not closed idle."""
    server = server_factory(_echo_line_keep, workers=1, stop_grace=5.0)
    sock = socket.create_connection(server.address, timeout=10.0)
    shutter = threading.Thread(target=server.shutdown, name="test-shutdown")
    try:
        sock.sendall(b"one\n")
        assert _read_line(sock) == b"one\n"
        wait_for(lambda: server.stats()["conns_waiting"] == 1, 10.0, "kept, waiting in C")
        shutter.start()
        # the listener is let go before the grace: a new client is refused
        wait_for(lambda: _refused(server.address), 10.0, "the listener let go")
        sock.sendall(b"two\n")
        assert _read_line(sock) == b"two\n"     # served during the grace
        assert sock.recv(1) == b""              # then closed: no keeping at a stop
    finally:
        sock.close()
        if shutter.ident is not None:
            assert join_all([shutter], 30.0) == []
    st = server.stats()
    assert st["handled"] == 2 and st["stop_closed"] == 0


def _refused(address) -> bool:
    try:
        socket.create_connection(address, timeout=2.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_shared_listener_served_by_two_servers(server_factory, wait_for):
    """Two servers on one listening socket (as two processes would share
    it), each registered with EPOLLEXCLUSIVE: every client is served, by
    one or the other, and each stop lets only its own reference go."""
    lsock = socket.create_server(("127.0.0.1", 0), backlog=64)
    other = lsock.dup()
    a = server_factory(_echo_line_keep, sock=lsock, shared_listener=True, workers=2)
    b = server_factory(_echo_line_keep, sock=other, shared_listener=True, workers=2)
    address = a.address
    for i in range(40):
        with socket.create_connection(address, timeout=10.0) as c:
            c.sendall(b"%d\n" % i)
            assert _read_line(c) == b"%d\n" % i
    wait_for(lambda: a.stats()["accepted"] + b.stats()["accepted"] == 40, 10.0, "40 accepted")
    assert a.shutdown(timeout=10.0)
    with socket.create_connection(address, timeout=10.0) as c:     # b still listens
        c.sendall(b"after\n")
        assert _read_line(c) == b"after\n"

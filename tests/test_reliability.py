"""Overload, hostile peers, accept errors and misbehaving handlers: fastaccept
keeps serving and loses nothing.

Each test provokes one failure mode on loopback and checks both what the
victim sees and that everyone else is still served. The README's
"Guarantees" section states the behaviour these tests pin down. Related
tests elsewhere: tests/test_server.py (a burst through a ring of 8 under the
queue policy, the kernel backlog served at shutdown, shutdown(timeout) with a
stuck handler, EMFILE back-off and recovery, detach) and tests/test_fork.py
(os.fork() with a server running, before it starts, and from a handler).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from typing import Any, List

import pytest

import fastaccept
from fa_testutil import (REPLY_OK, REQUEST, CommandChild, Gate, child_path, close_all, connect,
                         read_line, read_to_eof, reset, start_child)
from fastaccept.bench import loadgen
from fastaccept._options import DEFAULT_TIMEOUT

SHED = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _fill_workers_and_ring(server: fastaccept.Server, wait_for: Any, workers: int,
                           ring: int) -> List[socket.socket]:
    """Occupy every worker (blocked in the handler), then every ring slot."""
    held = []
    try:
        for _ in range(workers):
            held.append(connect(server.address, REQUEST))
        wait_for(lambda: server.stats()["workers_busy"] == workers, 10.0, "busy workers")
        for _ in range(ring):
            held.append(connect(server.address, REQUEST))
        wait_for(lambda: server.stats()["ring_depth"] == ring, 10.0, "a full ring")
    except BaseException:
        close_all(held)
        raise
    return held


# -- overload policy ---------------------------------------------------------------

def test_shed_answers_a_burst_at_once_and_serves_the_rest(server_factory, read_request,
                                                          wait_for):
    """A burst larger than ring + workers under overload="shed": every
    connection that finds the ring full gets shed_response and EOF at once,
    while the workers are still blocked; nothing waits in the kernel queue;
    the connections in the workers and the ring are served in full later."""
    gate = Gate()

    def handler(conn, addr):
        if read_request(conn):
            gate.wait()
            conn.sendall(REPLY_OK)

    workers, ring, burst = 2, 2, 200
    server = server_factory(handler, workers=workers, ring_size=ring, backlog=1024,
                            dispatch="accept", overload="shed", shed_response=SHED)
    held = _fill_workers_and_ring(server, wait_for, workers, ring)
    shed_clients: List[socket.socket] = []
    try:
        for _ in range(burst):
            shed_clients.append(connect(server.address, REQUEST))
        replies = [read_to_eof(c) for c in shed_clients]
        assert replies == [SHED] * burst
        wait_for(lambda: server.stats()["shed"] == burst, 10.0, f"{burst} shed")
        st = server.stats()
        assert st["accepted"] == workers + ring + burst     # shed ones are accepted too
        assert st["workers_busy"] == workers        # no worker was freed for them
        assert st["kernel_queue_depth"] == 0
        assert st["ring_full_waits"] == 0           # the loop never waited for space

        # A load generator burst: all answered, none times out or is refused.
        result = loadgen.run("127.0.0.1", server.address[1], connections=500, burst=True,
                             timeout=10.0)
        assert result.failures["timeout"] == 0 and result.failures["refused"] == 0, result
        assert result.completed == 500, result
        wait_for(lambda: server.stats()["shed"] == burst + 500, 10.0, "500 more shed")
        assert not gate.open.is_set()
    finally:
        gate.open.set()
        close_all(shed_clients)
    try:
        assert [read_to_eof(c) for c in held] == [REPLY_OK] * (workers + ring)
    finally:
        close_all(held)
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["accepted"] - st["shed"] == st["handled"] == workers + ring
    assert st["handler_errors"] == 0
    assert st["accept_errors"] == {}


def test_shed_without_a_response_closes_at_once(server_factory, read_request, wait_for):
    gate = Gate()

    def handler(conn, addr):
        if read_request(conn):
            gate.wait()
            conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=1, ring_size=2, overload="shed")
    held = _fill_workers_and_ring(server, wait_for, 1, 2)
    try:
        with connect(server.address, REQUEST) as c:
            assert read_to_eof(c) == b""
        wait_for(lambda: server.stats()["shed"] == 1, 10.0, "1 shed")
        gate.open.set()
        assert [read_to_eof(c) for c in held] == [REPLY_OK] * 3
    finally:
        gate.open.set()
        close_all(held)


def test_shedding_is_warned_about(server_factory, read_request, wait_for, caplog):
    caplog.set_level(logging.WARNING, logger="fastaccept")
    gate = Gate()

    def handler(conn, addr):
        if read_request(conn):
            gate.wait()

    server = server_factory(handler, start=False, workers=1, ring_size=2, overload="shed",
                            shed_response=SHED)
    server.monitor_interval = 0.01
    server.warn_interval = 3600.0
    server.start()
    held = _fill_workers_and_ring(server, wait_for, 1, 2)
    try:
        for _ in range(3):
            with connect(server.address, REQUEST) as c:
                assert read_to_eof(c) == SHED

        def shed_warnings() -> list:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                    and "shed_response" in r.getMessage()]
        wait_for(shed_warnings, 10.0, "a warning about shed connections")
        # The monitor may have looked between two of them: 1 to 3 in the first warning.
        rise = re.search(r"(\d+) connections were answered", shed_warnings()[0])
        assert rise and 1 <= int(rise.group(1)) <= 3, shed_warnings()
    finally:
        gate.open.set()
        close_all(held)


def test_queue_policy_holds_a_burst_in_the_backlog(server_factory, read_request, wait_for):
    """The same burst under the default policy, overload="queue": nothing is
    answered early or dropped; the kernel backlog holds what the ring cannot
    and every client is served once the workers are free."""
    gate = Gate()

    def handler(conn, addr):
        if read_request(conn):
            gate.wait()
            conn.sendall(REPLY_OK)

    workers, ring, burst = 2, 2, 200
    server = server_factory(handler, workers=workers, ring_size=ring, backlog=1024,
                            dispatch="accept")
    held = _fill_workers_and_ring(server, wait_for, workers, ring)
    try:
        for _ in range(burst):
            held.append(connect(server.address, REQUEST))
        wait_for(lambda: server.stats()["kernel_queue_depth"] == burst, 10.0,
                 "the burst in the kernel queue")
        st = server.stats()
        assert st["accepted"] == workers + ring
        assert st["shed"] == 0
        readable = select.select(held, [], [], 0)[0]
        assert readable == [], "a client got an answer before any worker was free"
        gate.open.set()
        replies = [read_to_eof(c) for c in held]
    finally:
        gate.open.set()
        close_all(held)
    assert replies == [REPLY_OK] * (workers + ring + burst)
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["accepted"] == st["handled"] == workers + ring + burst
    assert st["shed"] == 0
    assert st["ring_full_waits"] >= 1


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(overload="drop"), ValueError, "overload"),
    (dict(overload=None), ValueError, "overload"),
    (dict(overload="shed", shed_response="503"), TypeError, "shed_response"),
    (dict(overload="shed", shed_response=b"x" * (64 * 1024 + 1)), ValueError, "shed_response"),
    (dict(shed_response=b"HTTP/1.0 503"), ValueError, "shed_response"),
])
def test_bad_overload_arguments(no_leaks, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        fastaccept.Server(lambda conn, addr: None, "127.0.0.1", 0, **kwargs)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(exc, match=word):
            fastaccept.TCPServer(sock.getsockname(), object, **kwargs)
    if kwargs != dict(shed_response=b"HTTP/1.0 503"):     # Acceptor: no cross-check
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            with pytest.raises(exc, match=word):
                fastaccept.Acceptor(sock.fileno(), **kwargs)


def test_largest_shed_response_is_sent_whole(server_factory, read_request, wait_for):
    gate = Gate()
    big = bytes(range(256)) * 256          # 64 KiB, the maximum

    def handler(conn, addr):
        if read_request(conn):
            gate.wait()

    server = server_factory(handler, workers=1, ring_size=2, overload="shed",
                            shed_response=big)
    held = _fill_workers_and_ring(server, wait_for, 1, 2)
    try:
        with connect(server.address, REQUEST) as c:
            assert read_to_eof(c) == big
    finally:
        gate.open.set()
        close_all(held)


# -- hostile and broken peers ---------------------------------------------------------

def test_default_timeout_is_finite(server_factory, http_get, read_request):
    """A production default: an idle client cannot hold a worker for ever."""
    assert DEFAULT_TIMEOUT == 30.0
    seen = []

    def handler(conn, addr):
        seen.append(conn.gettimeout())
        if read_request(conn):
            conn.sendall(REPLY_OK)

    server = server_factory(handler)
    assert http_get(server.address, timeout=10.0) == REPLY_OK
    assert seen == [DEFAULT_TIMEOUT]


def test_idle_clients_never_reach_a_worker(server_factory, read_request, wait_for):
    """Slowloris, with the default dispatch ("readable"): idle clients wait
    in C, not in workers. More of them than workers, and a client that sends
    is served at once; each idle one is closed by C (a FIN: EOF, no reset)
    once idle_timeout has passed, without a handler ever running for it."""
    handled = []

    def handler(conn, addr):
        handled.append(addr)
        if read_request(conn):
            conn.sendall(REPLY_OK)

    workers, idle_n, idle_timeout = 2, 6, 0.5
    server = server_factory(handler, workers=workers, idle_timeout=idle_timeout)
    idle = []
    try:
        for _ in range(idle_n):
            idle.append(connect(server.address))       # connect, send nothing
        wait_for(lambda: server.stats()["conns_waiting"] == idle_n, 10.0, "idle clients in C")
        assert server.stats()["workers_busy"] == 0
        with connect(server.address, REQUEST) as good:
            assert read_to_eof(good) == REPLY_OK
        t0 = time.monotonic()
        # Every idle client was closed by the server (EOF), none by itself.
        assert [read_to_eof(c) for c in idle] == [b""] * idle_n
        waited = time.monotonic() - t0
    finally:
        close_all(idle)
    assert server.shutdown(timeout=10.0)
    assert len(handled) == 1
    # Generous against a noisy machine, and far below what an unbounded wait
    # would show (the idle clients stayed connected until their EOF above).
    assert waited < idle_timeout + 2.0, waited
    st = server.stats()
    assert st["idle_closed"] == idle_n
    assert st["handler_errors"] == 0
    assert st["accepted"] == idle_n + 1 and st["handled"] == 1


def test_idle_clients_cannot_hold_workers_past_the_timeout(server_factory, read_request,
                                                           wait_for, caplog):
    """Slowloris under dispatch="accept" (a connection goes to a worker at
    once): more idle clients than workers. Each holds a worker for one
    timeout at most, then is closed; a client that does send is served while
    the idle ones are still connected."""
    caplog.set_level(logging.CRITICAL, logger="fastaccept")   # the expected timeouts
    timeout = 0.5
    held_for = []
    timed_out = []

    def handler(conn, addr):
        t0 = time.monotonic()
        try:
            head = read_request(conn)
        except socket.timeout:
            timed_out.append(addr)
            raise
        finally:
            held_for.append(time.monotonic() - t0)
        if head:
            conn.sendall(REPLY_OK)

    workers, idle_n = 2, 6
    server = server_factory(handler, workers=workers, timeout=timeout, dispatch="accept")
    idle = []
    try:
        for _ in range(idle_n):
            idle.append(connect(server.address))       # connect, send nothing
        wait_for(lambda: server.stats()["workers_busy"] == workers, 10.0, "idle clients in workers")
        with connect(server.address, REQUEST) as good:
            assert read_to_eof(good) == REPLY_OK
        # Every idle client was closed by the server (EOF), none by itself.
        assert [read_to_eof(c) for c in idle] == [b""] * idle_n
    finally:
        close_all(idle)
    assert server.shutdown(timeout=10.0)
    assert len(timed_out) == idle_n
    # Generous against a noisy machine, and far below what an unbounded wait
    # would show (the idle clients stayed connected until their EOF above).
    assert max(held_for) < timeout + 2.0, held_for
    st = server.stats()
    assert st["handler_errors"] == idle_n
    assert st["handled"] == st["accepted"] == idle_n + 1


def test_clients_that_reset_before_their_handler_runs(server_factory, read_request, wait_for,
                                                      http_get):
    """SO_LINGER 0 closes of connections still in the kernel queue and in the
    ring: each is accepted (or counted as ECONNABORTED) and its handler sees
    the reset; nothing leaks; the server keeps serving."""
    gate = Gate()
    outcomes = []

    def handler(conn, addr):
        gate.wait()
        try:
            head = read_request(conn)
            if head:
                conn.sendall(REPLY_OK)
            outcomes.append("served" if head else "eof")
        except OSError:     # recv or send: ConnectionResetError, BrokenPipeError
            outcomes.append("reset")

    workers, ring, queued = 1, 2, 10
    server = server_factory(handler, workers=workers, ring_size=ring, backlog=64,
                            dispatch="accept")
    held = _fill_workers_and_ring(server, wait_for, workers, ring)
    resetters: List[socket.socket] = []
    try:
        for _ in range(queued):
            resetters.append(connect(server.address))
        wait_for(lambda: server.stats()["kernel_queue_depth"] == queued, 10.0, "queued clients")
        for c in resetters:             # in the kernel queue
            reset(c)
        for c in held[workers:]:        # in the ring: accepted, no handler yet
            reset(c)
        gate.open.set()
        assert read_to_eof(held[0]) == REPLY_OK
        wait_for(lambda: server.stats()["ring_depth"] == 0
                 and server.stats()["workers_busy"] == 0
                 and server.stats()["kernel_queue_depth"] == 0, 10.0, "the resets handled")
        assert http_get(server.address, timeout=10.0) == REPLY_OK
    finally:
        gate.open.set()
        close_all(held + resetters)
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    aborted = st["accept_errors"].get("ECONNABORTED", 0)
    assert set(st["accept_errors"]) <= {"ECONNABORTED"}
    assert st["accepted"] + aborted == workers + ring + queued + 1
    assert st["accepted"] == st["handled"]
    assert outcomes.count("served") == 2            # held[0] and the last client
    assert outcomes.count("reset") == st["accepted"] - 2, outcomes


def test_client_that_resets_during_its_handler(server_factory, wait_for, http_get):
    """A reset while the handler runs surfaces in the handler (recv and send
    raise) and costs the worker nothing else."""
    in_handler = threading.Event()
    reset_done = Gate()
    errors = []

    def handler(conn, addr):
        if conn.recv(4) != b"GET ":
            conn.sendall(REPLY_OK)
            return
        in_handler.set()
        reset_done.wait()
        for op in (lambda: conn.recv(4096), lambda: conn.sendall(REPLY_OK * 1000)):
            try:
                op()
            except OSError as e:
                errors.append(type(e))

    server = server_factory(handler, workers=1)
    c = connect(server.address, b"GET ")
    try:
        assert in_handler.wait(10.0)
        reset(c)
        reset_done.open.set()
        wait_for(lambda: server.stats()["handled"] == 1, 10.0, "the handler to end")
    finally:
        reset_done.open.set()
        c.close()
    assert errors and errors[0] is ConnectionResetError, errors
    assert http_get(server.address, timeout=10.0, request=b"PING") == REPLY_OK
    assert server.stats()["handler_errors"] == 0


def test_client_that_never_reads_cannot_hold_a_worker(server_factory, read_request, caplog):
    """The handler's send blocks on a client that never reads; the timeout
    ends it and the only worker serves the next client while the first one
    is still connected."""
    caplog.set_level(logging.CRITICAL, logger="fastaccept")
    timeout = 0.5
    chunk = b"x" * (1 << 20)
    results = []

    def handler(conn, addr):
        if read_request(conn).startswith(b"GET /big"):
            sent = 0
            try:
                while sent < 1 << 30:       # bounded: 1 GiB
                    conn.sendall(chunk)
                    sent += len(chunk)
                results.append("sent all")
            except socket.timeout:
                results.append("timeout")
            return
        conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=1, timeout=timeout)
    sluggard = socket.socket()
    try:
        sluggard.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sluggard.settimeout(10.0)
        sluggard.connect(server.address)
        sluggard.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        with connect(server.address, REQUEST) as next_client:
            assert read_to_eof(next_client) == REPLY_OK
        assert results == ["timeout"]
    finally:
        sluggard.close()
    assert server.shutdown(timeout=10.0)


@pytest.mark.parametrize("reader", ["to_eof", "request_head"])
def test_client_half_close_gets_its_reply(server_factory, read_request, reader):
    """A client that sends its request and shuts down its write side still
    reads the full reply, whether the handler reads to EOF or to the blank
    line."""
    def handler(conn, addr):
        if reader == "to_eof":
            data = read_to_eof(conn)
        else:
            data = read_request(conn)
        conn.sendall(REPLY_OK if data == REQUEST else b"bad " + data)

    server = server_factory(handler, workers=2)
    for _ in range(5):
        with connect(server.address, REQUEST) as c:
            c.shutdown(socket.SHUT_WR)
            assert read_to_eof(c) == REPLY_OK
    assert server.shutdown(timeout=10.0)
    assert server.stats()["handler_errors"] == 0


def shimmed_server(tmp_path: Any, **env: str) -> CommandChild:
    """children/command_server.py with accept4() going through children/accept_shim.c."""
    shim = tmp_path / "accept_shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-o", str(shim),
                    child_path("accept_shim.c"), "-ldl"], check=True, timeout=60)
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD"), str(shim)) if p)
    return CommandChild(tmp_path, env=dict(os.environ, LD_PRELOAD=preload, **env))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found on PATH")
@pytest.mark.parametrize("name", ["ENFILE", "ENOBUFS", "ENOMEM"])
def test_resource_errors_back_off_and_recover(tmp_path, name):
    """accept4() failing with ENFILE (the system-wide file table full), ENOBUFS
    or ENOMEM, injected with an LD_PRELOAD shim, for a sustained period:
    counted, backed off, nothing accepted or lost; once it clears, every
    waiting client is served."""
    flag = tmp_path / "failing"
    child = shimmed_server(tmp_path, FA_ACCEPT_ERRNO=str(getattr(errno, name)),
                          FA_FAIL_WHILE=str(flag))
    clients = []
    try:
        address = child.address()
        flag.touch()
        for _ in range(5):
            clients.append(connect(address, REQUEST))
        deadline = time.monotonic() + 15.0
        while True:
            st = child.ask(b"stats")
            if st["emfile_pauses"] >= 4:        # 5 + 10 + 20 ms of back-off at least
                break
            assert time.monotonic() < deadline, f"no sustained {name} back-off: {st}"
            time.sleep(0.01)    # a poll interval
        assert st["accepted"] == 0, st
        assert set(st["accept_errors"]) == {name}, st
        assert st["accept_errors"][name] >= 4, st
        assert st["kernel_queue_depth"] == 5, st
        flag.unlink()
        assert [read_to_eof(c) for c in clients] == [b"ok"] * 5, child.stderr_path.read_text()
        final = child.quit()
    finally:
        close_all(clients)
        child.close()
    assert final["shutdown_ok"] is True, final
    assert final["accepted"] == final["handled"] == 5, final
    assert set(final["accept_errors"]) == {name}, final


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found on PATH")
@pytest.mark.parametrize("name", ["ECONNABORTED", "EPROTO", "EPERM",
                                  # accept(2): Linux passes on network errors
                                  # already pending on the new socket
                                  "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
                                  "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH"])
def test_dead_connection_errors_skip_one_and_go_on(tmp_path, name):
    """accept4() reporting a connection that died in the queue (every second
    one here): that connection is counted and gone, the loop neither stops
    nor backs off, and every other client is served."""
    code = getattr(errno, name)
    child = shimmed_server(tmp_path, FA_ACCEPT_ERRNO=str(code), FA_DROP_EVERY="2")
    replies = []
    try:
        address = child.address()
        for _ in range(10):     # one at a time: the shim drops the 2nd, 4th, ...
            with connect(address, REQUEST) as c:
                try:
                    replies.append(read_to_eof(c))
                except ConnectionResetError:    # closed with the request unread
                    replies.append(b"")
        final = child.quit()
    finally:
        child.close()
    assert replies == [b"ok", b""] * 5
    assert final["shutdown_ok"] is True
    assert final["accepted"] == final["handled"] == 5
    # counted under the errno's canonical name (EOPNOTSUPP is ENOTSUP on Linux)
    assert final["accept_errors"] == {errno.errorcode[code]: 5}
    assert final["emfile_pauses"] == 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found on PATH")
def test_unexpected_accept_error_stops_the_loop_and_says_so(tmp_path):
    """An accept4() error outside the ones the loop handles (EINVAL here) ends
    the accept loop at once: counted once (no retry, no spin), logged, and
    shutdown() still completes. The dead loop lets go of the listener, so
    later clients are refused at once instead of waiting in a queue nobody
    accepts from (the queued client that met the error is reset with it)."""
    flag = tmp_path / "failing"
    flag.touch()
    child = shimmed_server(tmp_path, FA_ACCEPT_ERRNO=str(errno.EINVAL), FA_FAIL_WHILE=str(flag))
    clients = []
    try:
        address = child.address()
        try:
            clients.append(connect(address, REQUEST))
        except ConnectionResetError:
            pass            # the release reached it before connect() returned
        deadline = time.monotonic() + 15.0
        while not child.ask(b"stats")["accept_errors"]:
            assert time.monotonic() < deadline, "the injected EINVAL never reached the loop"
            time.sleep(0.01)    # a poll interval
        with pytest.raises(ConnectionRefusedError):
            connect(address, timeout=5.0).close()
        final = child.quit()
    finally:
        close_all(clients)
        child.close()
    assert final["shutdown_ok"] is True
    assert final["accept_errors"] == {"EINVAL": 1}
    assert final["accepted"] == 0
    assert "accept loop stopped" in child.stderr_path.read_text()


# -- misbehaving handlers --------------------------------------------------------------

@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_handler_base_exceptions_do_not_kill_the_worker(server_factory, read_request,
                                                        http_get, caplog, exc):
    """Exceptions that do not derive from Exception are logged and counted
    like the others; the only worker stays alive and serves on. (Exception
    itself: test_handler_exception_is_logged_counted_and_service_continues.)"""
    caplog.set_level(logging.INFO, logger="fastaccept")

    def handler(conn, addr):
        if read_request(conn).startswith(b"GET /boom"):
            raise exc("from the handler")
        conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=1)
    assert http_get(server.address, timeout=10.0, request=b"GET /boom HTTP/1.0\r\n\r\n") == b""
    for _ in range(3):
        assert http_get(server.address, timeout=10.0) == REPLY_OK
    workers = [t for t in threading.enumerate() if t.name.startswith("fastaccept-worker-")]
    assert len(workers) == 1 and workers[0].is_alive()
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["handler_errors"] == 1
    assert st["handled"] == st["accepted"] == 4
    records = [r for r in caplog.records if r.name == "fastaccept" and r.levelno >= logging.ERROR]
    assert len(records) == 1 and records[0].exc_info[0] is exc


def test_handler_that_closes_its_socket(server_factory, read_request, join_all):
    """conn.close() in the handler: the server does not close the number a
    second time (with fds reused by other workers at once, a double close
    would hit another client's connection)."""
    def handler(conn, addr):
        if read_request(conn):
            conn.sendall(REPLY_OK)
        conn.close()

    server = server_factory(handler, workers=4)
    failures = []

    def client() -> None:
        for _ in range(50):
            try:
                with connect(server.address, REQUEST) as c:
                    reply = read_to_eof(c)
                if reply != REPLY_OK:
                    failures.append(reply)
            except OSError as e:
                failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    assert not join_all(threads, 60.0)
    assert failures == []
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["handled"] == st["accepted"] == 200
    assert st["handler_errors"] == 0


def test_stuck_handlers_shutdown_returns_and_the_process_exits(tmp_path):
    """Handlers blocked for good: shutdown(timeout) returns on time with
    False, names the stuck workers, closes the connection still queued, and
    the interpreter still exits (workers are daemon threads)."""
    stderr_path = tmp_path / "child.stderr"
    clients = []
    with open(stderr_path, "wb") as stderr:
        proc = start_child("stuck_handlers.py", cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=stderr)
    try:
        line = read_line(proc.stdout.fileno(), 30.0)
        address = tuple(json.loads(line)["address"])
        for _ in range(3):                  # two stuck in handlers, one in the ring
            clients.append(connect(address, REQUEST))
        result = json.loads(read_line(proc.stdout.fileno(), 30.0))
        assert proc.wait(timeout=30.0) == 0, stderr_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10.0)
        proc.stdout.close()
        for c in clients:
            c.close()
    assert result["shutdown"] is False
    assert result["took"] < 5.0
    log = stderr_path.read_text()
    assert "fastaccept-worker-0" in log and "fastaccept-worker-1" in log, log
    assert "shutdown closed 1 queued connections" in log, log

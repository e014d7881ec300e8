"""fastaccept.Server: serving, peer addresses, errors, shutdown, limits, validation."""
from __future__ import annotations

import errno
import logging
import os
import queue
import resource
import signal
import socket
import threading
import time

import pytest

import fastaccept
from fa_testutil import (REPLY_OK, CommandChild, has_ipv6_loopback, may_run_realtime, open_fds,
                         read_to_eof, run_child_json)


@pytest.fixture
def ok_handler(read_request):
    """A handler that reads one request and answers REPLY_OK."""
    def handler(conn: socket.socket, addr) -> None:
        if read_request(conn):
            conn.sendall(REPLY_OK)
    return handler


# -- serving and peer addresses ----------------------------------------------

def test_many_clients_get_replies_and_handler_sees_their_address(
        server_factory, read_request, join_all):
    n_threads, per_thread = 64, 32          # 2048 connections
    seen = {}                               # request id -> addr the handler got

    def handler(conn, addr):
        head = read_request(conn)
        request_id = head.split(b" ", 2)[1].decode()
        seen[request_id] = addr
        conn.sendall(f"{addr[0]} {addr[1]}".encode())

    server = server_factory(handler, workers=8, backlog=1024)
    host, port = server.address
    mine = {}                               # request id -> client getsockname()
    failures = []

    def client(t: int) -> None:
        try:
            for i in range(per_thread):
                request_id = f"/{t}-{i}"
                with socket.create_connection((host, port), timeout=10.0) as sock:
                    local = sock.getsockname()
                    mine[request_id] = local
                    sock.sendall(f"GET {request_id} HTTP/1.0\r\n\r\n".encode())
                    reply = read_to_eof(sock)
                expected = f"{local[0]} {local[1]}".encode()
                if reply != expected:
                    failures.append(f"{request_id}: reply {reply!r}, expected {expected!r}")
        except Exception as e:     # reported below with the others
            failures.append(f"client {t}: {e!r}")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    assert not join_all(threads, 60.0), "clients still running after 60 s"
    assert not failures, f"{len(failures)} failures, first: {failures[:5]}"
    assert len(mine) == n_threads * per_thread
    assert seen.keys() == mine.keys()
    wrong = [(k, seen[k], mine[k]) for k in mine if seen[k] != mine[k]]
    assert not wrong, f"handler saw wrong peer addresses: {wrong[:5]}"
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["accepted"] == st["handled"] == n_threads * per_thread
    assert st["handler_errors"] == 0


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")
def test_ipv6_loopback(server_factory, read_request):
    seen = []

    def handler(conn, addr):
        seen.append(addr)
        if read_request(conn):
            conn.sendall(REPLY_OK)

    server = server_factory(handler, host="::1")
    assert server.address[0] == "::1"
    assert server.address[1] != 0
    assert server.socket.family == socket.AF_INET6
    with socket.create_connection(server.address[:2], timeout=10.0) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = read_to_eof(sock)
        local = sock.getsockname()
    assert reply == REPLY_OK
    assert seen == [local]          # ('::1', port, flowinfo, scope_id)


def test_handler_exception_is_logged_counted_and_service_continues(
        server_factory, read_request, http_get, caplog):
    caplog.set_level(logging.INFO, logger="fastaccept")

    def handler(conn, addr):
        head = read_request(conn)
        if head.startswith(b"GET /boom"):
            raise ZeroDivisionError("boom from the handler")
        conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=2)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        boom_addr = sock.getsockname()
        sock.sendall(b"GET /boom HTTP/1.0\r\n\r\n")
        assert sock.recv(4096) == b""       # the server closed it, nothing sent
    for _ in range(5):                      # both workers still serve
        assert http_get(server.address, timeout=10.0) == REPLY_OK
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["handler_errors"] == 1
    assert st["handled"] == st["accepted"] == 6
    records = [r for r in caplog.records
               if r.name == "fastaccept" and r.levelno >= logging.ERROR]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert str(boom_addr) in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "Traceback" in caplog.text and "boom from the handler" in caplog.text


# -- shutdown -------------------------------------------------------------------

CLEAN_REFUSALS = (ConnectionRefusedError, ConnectionResetError, BrokenPipeError)


@pytest.mark.parametrize("workers, proxy", [(1, False), (4, False), (16, False), (4, True)])
def test_shutdown_under_load(server_factory, ok_handler, join_all, wait_for, workers, proxy):
    """Clients run while shutdown() happens: each one gets its full reply or a
    clean refusal/reset, none hangs, nothing leaks (server_factory checks).
    With ``proxy``, each client sends a PROXY header before its request."""
    server = server_factory(ok_handler, workers=workers, backlog=1024, proxy_protocol=proxy)
    address = server.address
    header = b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\n" if proxy else b""
    outcomes = []           # ("ok" | "refused" | "eof") per connection
    problems = []
    done = threading.Event()
    n_clients, max_per_client = 16, 2000

    def client() -> None:
        refusals = 0
        for _ in range(max_per_client):
            try:
                with socket.create_connection(address, timeout=10.0) as sock:
                    sock.sendall(header + b"GET / HTTP/1.0\r\n\r\n")
                    reply = read_to_eof(sock)
                if reply == REPLY_OK:
                    outcomes.append("ok")
                elif reply == b"":
                    outcomes.append("eof")
                    refusals += 1
                else:
                    problems.append(f"partial reply {reply!r}")
            except socket.timeout as e:
                problems.append(f"timeout: {e!r}")
            except CLEAN_REFUSALS:
                outcomes.append("refused")
                refusals += 1
            except Exception as e:
                problems.append(f"unexpected {e!r}")
            if done.is_set() and refusals >= 3:
                return

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for t in threads:
        t.start()
    wait_for(lambda: outcomes.count("ok") >= 200, 30.0, "200 served connections")
    t0 = time.monotonic()
    assert server.shutdown(timeout=20.0), "shutdown under load timed out"
    shutdown_s = time.monotonic() - t0
    done.set()
    assert not join_all(threads, 30.0), "clients still running 30 s after shutdown"
    assert not problems, f"{len(problems)} bad outcomes, first: {problems[:5]}"
    assert outcomes.count("refused") + outcomes.count("eof") >= 3 * n_clients
    assert shutdown_s < 20.0
    st = server.stats()
    # Every connection the server accepted was handled, or closed idle by C
    # (connected, nothing sent yet when the stop came: a FIN, the "eof"
    # outcome): none dropped on the floor. Every other end stays 0.
    assert st["accepted"] == (st["handled"] + st["stop_closed"] + st["peer_closed"]
                              + st["idle_closed"] + st["shed"]
                              + sum(st["proxy_rejected"].values()) + st["proxy_timeouts"])
    assert st["idle_closed"] + st["shed"] + st["proxy_timeouts"] == 0
    assert st["proxy_rejected"] == {}
    assert st["stop_closed"] + st["peer_closed"] <= outcomes.count("eof")
    assert st["handled"] >= outcomes.count("ok")
    assert st["handler_errors"] <= outcomes.count("eof")


@pytest.mark.parametrize("dispatch", ["accept", "readable"])
def test_small_ring_slow_workers_burst(server_factory, read_request, wait_for, dispatch):
    """ring_size=8, slow workers, 500 concurrent connections: all served, the
    ring never overflows. The kernel backlog holds the rest under
    dispatch="accept"; under "readable" the loop drains the kernel queue
    anyway and the rest wait in C, ready, for ring space."""
    n = 500
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * n + 100:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low for {n} client sockets")
    gate = threading.Event()

    def handler(conn, addr):
        # Hold every worker until the whole burst is connected, so the ring
        # fills up for certain; then a few ms of "work" per connection.
        gate.wait(30.0)
        if read_request(conn):
            time.sleep(0.002)
            conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=4, ring_size=8, backlog=1024, dispatch=dispatch)
    clients = []
    try:
        for _ in range(n):
            sock = socket.create_connection(server.address, timeout=15.0)
            clients.append(sock)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        wait_for(lambda: server.stats()["ring_depth"] == 8
                 and server.stats()["workers_busy"] == 4, 10.0, "busy workers and a full ring")
        if dispatch == "accept":
            assert server.stats()["accepted"] == 4 + 8    # the rest waits in the kernel
        else:
            st = wait_for(lambda: (s := server.stats())["accepted"] == n and s, 10.0,
                          "every connection out of the kernel queue")
            assert st["kernel_queue_depth"] == 0
            assert st["conns_waiting"] == n - 4 - 8       # ready, in C, for ring space
        gate.set()
        replies = []
        for sock in clients:
            reply = read_to_eof(sock)
            replies.append(reply)
    finally:
        gate.set()
        for sock in clients:
            sock.close()
    assert replies.count(REPLY_OK) == n, f"{n - replies.count(REPLY_OK)} clients not served"
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["accepted"] == st["handled"] == n
    assert st["ring_high_water"] == 8
    assert st["ring_full_waits"] >= 1
    assert st["accept_errors"] == {}
    assert st["shed"] == 0                  # overload="queue", the default


@pytest.mark.parametrize("dispatch", ["accept", "readable"])
def test_backlog_is_served_at_shutdown(server_factory, read_request, wait_for, join_all,
                                       dispatch):
    """Connections still in the kernel accept queue when shutdown() is called
    are accepted and served, not reset (gunicorn's graceful shutdown resets
    them). The queue is full: the backlog of 15 admits 16. Under "readable"
    the same 16 wait in C instead (readable, for ring space) and are served
    the same way."""
    gate = threading.Event()

    def handler(conn, addr):
        gate.wait(30.0)
        if read_request(conn):
            conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=2, ring_size=2, backlog=15, dispatch=dispatch)
    n = 20
    clients = []
    shutdown_result = []
    shutter = threading.Thread(target=lambda: shutdown_result.append(server.shutdown(20.0)))
    try:
        for _ in range(n):
            sock = socket.create_connection(server.address, timeout=15.0)
            clients.append(sock)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        # 2 in handlers, 2 in the ring, the other 16 in the kernel queue.
        wait_for(lambda: server.stats()["ring_depth"] == 2
                 and server.stats()["workers_busy"] == 2, 10.0, "busy workers and a full ring")
        if dispatch == "accept":
            wait_for(lambda: server.stats()["kernel_queue_depth"] == 16, 10.0,
                     "16 connections in the kernel queue")
            st = server.stats()
            assert st["accepted"] == 4
            assert st["kernel_backlog"] + 1 == 16       # the queue is full
        else:
            wait_for(lambda: server.stats()["conns_waiting"] == 16, 10.0, "16 waiting in C")
        shutter.start()
        # Release the handlers only once shutdown() has begun (its repr says
        # "stopping" right before it stops the accept loop), so the 16
        # connections are still in the kernel queue when the stop comes.
        wait_for(lambda: repr(server).startswith("<fastaccept.Server stopping"), 10.0,
                 "shutdown() to begin")
        gate.set()
        replies = []
        for sock in clients:
            reply = read_to_eof(sock)
            replies.append(reply)
    finally:
        gate.set()
        for sock in clients:
            sock.close()
        if shutter.ident is not None:
            join_all([shutter], 30.0)
    assert replies == [REPLY_OK] * n
    assert shutdown_result == [True]
    st = server.stats()
    assert st["accepted"] == st["handled"] == n


def test_shutdown_timeout_with_stuck_handler(server_factory, wait_for, caplog, join_all):
    caplog.set_level(logging.INFO, logger="fastaccept")
    release = threading.Event()
    stuck_names = []

    def handler(conn, addr):
        conn.recv(1)                # the byte that made it readable
        stuck_names.append(threading.current_thread().name)
        release.wait(60.0)          # "forever" for this test, yet bounded

    server = server_factory(handler, workers=2)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"x")
        wait_for(lambda: server.stats()["workers_busy"] == 1, 10.0, "the handler to block")
        t0 = time.monotonic()
        try:
            assert server.shutdown(timeout=0.5) is False
            elapsed = time.monotonic() - t0
        finally:
            release.set()
        assert elapsed < 5.0, f"shutdown(timeout=0.5) took {elapsed:.2f} s"
        warnings = [r.getMessage() for r in caplog.records
                    if r.name == "fastaccept" and r.levelno == logging.WARNING]
        assert any(stuck_names[0] in m for m in warnings), warnings
        # Once the handler is released its worker ends; a second shutdown()
        # waits for it and frees what the first one could not.
        assert server.shutdown(timeout=10.0) is True
        alive = [t.name for t in threading.enumerate() if t.name.startswith("fastaccept-")]
        assert alive == []
        assert sock.recv(1) == b""


# -- per-connection behaviour --------------------------------------------------------

def test_handler_detach_keeps_connection_open(server_factory, read_request, wait_for):
    handed_over = queue.Queue()

    def handler(conn, addr):
        read_request(conn)
        inode = os.fstat(conn.fileno()).st_ino
        fd = conn.detach()
        handed_over.put((fd, inode))

    server = server_factory(handler, workers=1)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        fd, inode = handed_over.get(timeout=10.0)
        # Wait until the worker is done with the connection (its cleanup ran).
        wait_for(lambda: server.stats()["handled"] == 1, 10.0, "the handler to finish")
        assert os.fstat(fd).st_ino == inode, "the server closed a detached connection"
        with socket.socket(fileno=fd) as conn:
            conn.sendall(REPLY_OK)
        reply = read_to_eof(sock)
        assert reply == REPLY_OK
    # no_leaks (through server_factory) fails the test if the server closed
    # the fd number a second time, or if it stayed open.


@pytest.mark.parametrize("timeout", [None, 0.0, 2.5])
def test_timeout_is_applied_to_connections(server_factory, http_get, timeout):
    seen = []

    def handler(conn, addr):
        seen.append(conn.gettimeout())
        conn.sendall(REPLY_OK)

    server = server_factory(handler, timeout=timeout)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"x")
        assert sock.recv(4096)
    assert server.shutdown(timeout=10.0)
    assert seen == [timeout]


@pytest.mark.parametrize("worker_nice", [None, 0, 5])
def test_workers_step_back_for_the_accept_loop(server_factory, http_get, read_request,
                                               worker_nice):
    """Workers run SCHED_BATCH at +worker_nice (default 0: the caller's nice value);
    the caller's own thread is untouched."""
    seen = []
    main_tid = threading.get_native_id()
    before = (os.sched_getscheduler(main_tid), os.getpriority(os.PRIO_PROCESS, main_tid))

    def handler(conn, addr):
        tid = threading.get_native_id()
        seen.append((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
        read_request(conn)
        conn.sendall(REPLY_OK)

    options = {} if worker_nice is None else {"worker_nice": worker_nice}
    server = server_factory(handler, **options)
    assert http_get(server.address, timeout=10.0)
    assert server.shutdown(timeout=10.0)
    assert seen == [(os.SCHED_BATCH, min(19, before[1] + (worker_nice or 0)))]
    assert (os.sched_getscheduler(main_tid), os.getpriority(os.PRIO_PROCESS, main_tid)) == before


@pytest.mark.parametrize("priority", ["realtime", "normal"])
def test_accept_loop_runs_realtime_where_the_process_may(tmp_path, priority):
    """accept_priority="realtime" makes the loop's thread SCHED_FIFO when the
    process may; stats() says which it got; "normal" never asks."""
    expected = priority == "realtime" and may_run_realtime()
    got = run_child_json("accept_priority.py", priority, cwd=tmp_path)
    assert got["served"] is True
    assert got["names"] == ["fa-accept"]
    assert got["accept_realtime"] == int(expected)
    # a realtime loop also asks that whatever it might fork starts normal
    assert got["policy"] == (os.SCHED_FIFO | os.SCHED_RESET_ON_FORK if expected
                             else os.SCHED_OTHER)


def test_accept_loop_refused_realtime_runs_as_a_normal_thread(tmp_path):
    """Without the right (RLIMIT_RTPRIO 0, no CAP_SYS_NICE) the request is
    refused and the loop serves as a normal thread, without an error."""
    got = run_child_json("accept_priority.py", "realtime", "--drop", cwd=tmp_path)
    assert got["served"] is True
    assert got["accept_realtime"] == 0
    assert got["policy"] == os.SCHED_OTHER


def test_timeout_expires_in_handler(server_factory, wait_for):
    errors = []

    def handler(conn, addr):
        try:
            conn.recv(1)            # the client sends one byte and stalls:
            conn.recv(1)            # this one waits
        except socket.timeout as e:
            errors.append(e)

    server = server_factory(handler, timeout=0.05)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"x")          # dispatched: a worker's recv then waits
        assert sock.recv(1) == b""  # closed after the timeout, not after 10 s
    assert server.shutdown(timeout=10.0)
    assert len(errors) == 1


def test_sock_argument_uses_a_prebound_socket(server_factory, ok_handler, http_get, no_leaks):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = server_factory(ok_handler, sock=sock)
        assert server.socket is sock
        assert server.address == sock.getsockname()
        assert http_get(server.address, timeout=10.0) == REPLY_OK
        assert server.shutdown(timeout=10.0)
        assert sock.fileno() == -1      # the server owns and closed it
    finally:
        sock.close()


# -- the descriptor limit --------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_does_not_spin_and_recovers(tmp_path, http_get, no_leaks):
    """Sustained descriptor exhaustion, three times over: the accept loop
    backs off instead of spinning, connections keep arriving and wait in the
    kernel queue, every one of them is served once descriptors are free, and
    the child's fd count returns to where it started after each round.
    (ENFILE, ENOBUFS and ENOMEM, injected: see
    test_reliability.py::test_resource_errors_back_off_and_recover.)"""
    nofile = 64
    n_held = 120
    n_late = 10         # arrive while the child is stuck at EMFILE
    rounds = 3
    held = []
    child = CommandChild(tmp_path, "--nofile", nofile, "--workers", 4, "--backlog", 1024,
                         "--timeout", 60.0)

    def child_stats() -> dict:
        return child.ask(b"stats", 10.0)

    try:
        address = child.address()
        start = child_stats()
        assert start["fds"] is not None
        for round_ in range(rounds):
            before = child_stats()
            emfile_before = before["accept_errors"].get("EMFILE", 0)
            for _ in range(n_held):
                held.append(socket.create_connection(address, timeout=10.0))
            # The child runs out of fds (64) long before it has accepted 120.
            deadline = time.monotonic() + 15.0
            while True:
                st = child_stats()
                if st["accept_errors"].get("EMFILE", 0) >= emfile_before + 2:
                    break
                assert time.monotonic() < deadline, f"round {round_}: no EMFILE counted: {st}"
                time.sleep(0.01)        # a poll interval
            assert st["accepted"] - before["accepted"] < n_held
            assert st["emfile_pauses"] > before["emfile_pauses"]
            if round_ == 0:
                # While stuck at EMFILE the accept loop must back off, not spin.
                cpu0, t0 = _cpu_seconds(child.proc.pid), time.monotonic()
                time.sleep(1.0)         # the measurement window, not a synchronisation
                cpu1, t1 = _cpu_seconds(child.proc.pid), time.monotonic()
                cpu_share = (cpu1 - cpu0) / (t1 - t0)
                assert cpu_share < 0.3, \
                    f"the child used {cpu_share:.0%} of a CPU while stuck at EMFILE"
            # More clients arrive under pressure: they wait, nothing is lost.
            for _ in range(n_late):
                held.append(socket.create_connection(address, timeout=10.0))
            still_stuck = child_stats()
            assert still_stuck["accepted"] == st["accepted"]
            assert still_stuck["accept_errors"]["EMFILE"] >= st["accept_errors"]["EMFILE"]

            # Release the held clients: every one of them is served in the end.
            for sock in held:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            replies = [read_to_eof(sock) for sock in held]
            assert replies == [b"ok"] * (n_held + n_late), f"round {round_}"
            for sock in held:
                sock.close()
            held.clear()
            # And new clients are served again.
            for _ in range(5):
                assert http_get(address, timeout=10.0) == b"ok"
            # Every descriptor of the round was closed: back to the start.
            deadline = time.monotonic() + 10.0
            while child_stats()["fds"] != start["fds"]:
                assert time.monotonic() < deadline, \
                    f"round {round_}: child fds {child_stats()['fds']}, at start {start['fds']}"
                time.sleep(0.01)        # a poll interval

        final = child.quit()
        assert final["shutdown_ok"] is True
        assert final["accepted"] == final["handled"] == rounds * (n_held + n_late + 5)
        assert final["accept_errors"].get("EMFILE", 0) >= 2 * rounds
        assert set(final["accept_errors"]) == {"EMFILE"}
    finally:
        for sock in held:
            sock.close()
        child.close()


# -- validation ---------------------------------------------------------------------

def _noop(conn, addr):
    pass


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(workers=0), ValueError, "workers"),
    (dict(workers=-3), ValueError, "workers"),
    (dict(ring_size=3), ValueError, "ring_size"),
    (dict(ring_size=1), ValueError, "ring_size"),
    (dict(ring_size=0), ValueError, "ring_size"),
    (dict(ring_size=2**25), ValueError, "ring_size"),
    (dict(ring_size=1000), ValueError, "ring_size"),
    (dict(backlog=0), ValueError, "backlog"),
    (dict(backlog=-1), ValueError, "backlog"),
    (dict(timeout=-1.0), ValueError, "timeout"),
    (dict(timeout=float("inf")), ValueError, "timeout"),
    (dict(max_batch=0), ValueError, "max_batch"),
    (dict(spin_us=-1), ValueError, "spin_us"),
    (dict(spin_us=100_001), ValueError, "spin_us"),
    (dict(nap_us=-1), ValueError, "nap_us"),
    (dict(nap_us=1001), ValueError, "nap_us"),
    (dict(worker_nice=-1), ValueError, "worker_nice"),
    (dict(worker_nice=20), ValueError, "worker_nice"),
    (dict(accept_priority="rt"), ValueError, "accept_priority"),
    (dict(accept_priority=None), ValueError, "accept_priority"),
    (dict(workers="8"), TypeError, "workers"),
    (dict(handler=None), TypeError, "handler"),
    (dict(handler=42), TypeError, "handler"),
])
def test_bad_arguments_are_refused_before_anything_starts(no_leaks, kwargs, exc, word):
    handler = kwargs.pop("handler", _noop)
    threads = threading.active_count()
    fds = open_fds()
    with pytest.raises(exc, match=word):
        fastaccept.Server(handler, "127.0.0.1", 0, **kwargs)
    assert threading.active_count() == threads
    assert open_fds() == fds


@pytest.mark.parametrize("timeout", [-1, float("inf"), float("nan")])
def test_shutdown_refuses_a_timeout_it_cannot_wait(server_factory, ok_handler, timeout):
    """shutdown(timeout=inf) used to raise OverflowError from its waits,
    after it had begun the stop; it is refused before anything happens."""
    server = server_factory(ok_handler, workers=1)
    with pytest.raises(ValueError, match="timeout"):
        server.shutdown(timeout=timeout)
    assert repr(server).startswith("<fastaccept.Server running")
    assert server.shutdown(timeout=10.0) is True


def test_sock_must_be_a_stream_socket(no_leaks):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        fds, threads = open_fds(), threading.active_count()
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            fastaccept.Server(_noop, sock=udp)
        assert (open_fds(), threading.active_count()) == (fds, threads)


def test_sock_must_be_listening(no_leaks):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        fds, threads = open_fds(), threading.active_count()
        with pytest.raises(ValueError, match="listen"):
            fastaccept.Server(_noop, sock=tcp)
        assert (open_fds(), threading.active_count()) == (fds, threads)


def test_port_in_use_raises_eaddrinuse_and_leaks_nothing(no_leaks):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        fds, threads = open_fds(), threading.active_count()
        with pytest.raises(OSError) as exc:
            fastaccept.Server(_noop, "127.0.0.1", port)
        assert exc.value.errno == errno.EADDRINUSE
        assert (open_fds(), threading.active_count()) == (fds, threads)


# -- lifecycle and stats ----------------------------------------------------------------

def test_start_twice_is_an_error(server_factory, ok_handler):
    server = server_factory(ok_handler)
    with pytest.raises(RuntimeError):
        server.start()
    assert server.shutdown(timeout=10.0)
    with pytest.raises(RuntimeError):
        server.start()


def test_context_manager_shuts_down(no_leaks, ok_handler, http_get):
    with fastaccept.Server(ok_handler, "127.0.0.1", 0, workers=2) as server:
        server.start()
        address = server.address
        assert http_get(address, timeout=10.0) == REPLY_OK
    assert server.socket.fileno() == -1
    assert [t.name for t in threading.enumerate() if t.name.startswith("fastaccept-")] == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10.0).close()


def test_context_manager_without_start(no_leaks, ok_handler):
    with fastaccept.Server(ok_handler, "127.0.0.1", 0) as server:
        pass
    assert server.socket.fileno() == -1


def test_address_has_the_resolved_port(server_factory, ok_handler):
    server = server_factory(ok_handler, start=False)
    host, port = server.address
    assert host == "127.0.0.1"
    assert 0 < port < 65536
    assert server.address == server.socket.getsockname()


def test_stats_keys_and_counts(server_factory, ok_handler, http_get):
    server = server_factory(ok_handler, workers=3)
    keys = {"accepted", "handled", "handler_errors", "accept_errors", "ring_depth",
            "ring_high_water"}
    assert keys <= server.stats().keys()
    n = 25
    for _ in range(n):
        assert http_get(server.address, timeout=10.0) == REPLY_OK
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert keys <= st.keys()
    assert st["accepted"] == st["handled"] == n
    assert st["handler_errors"] == 0
    assert st["accept_errors"] == {}
    assert st["ring_depth"] == 0
    assert 1 <= st["ring_high_water"] <= n


def test_stats_before_start(server_factory, ok_handler):
    server = server_factory(ok_handler, start=False)
    st = server.stats()
    assert st["accepted"] == st["handled"] == st["handler_errors"] == 0
    assert st["accept_errors"] == {}


# -- start and shutdown: late clients, failed starts, shutdown from a handler ---------

def test_a_client_arriving_after_the_final_drain_is_refused_not_reset(
        server_factory, read_request, wait_for, join_all):
    """The listener is let go right after the final drain, so a client that
    connects while workers still finish their handlers is refused at once;
    it used to complete its handshake in the kernel and then be reset."""
    release = threading.Event()

    def handler(conn, addr):
        read_request(conn)
        release.wait(30.0)
        conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=1)
    first = socket.create_connection(server.address, timeout=10.0)
    shutter = threading.Thread(target=server.shutdown, name="test-shutdown")
    try:
        first.sendall(b"GET / HTTP/1.0\r\n\r\n")
        wait_for(lambda: server.stats()["workers_busy"] == 1, 10.0, "the handler to hold")
        shutter.start()
        wait_for(lambda: not server._accept_thread.is_alive(), 10.0, "the final drain")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=5.0).close()
    finally:
        release.set()
        if shutter.ident is not None:
            assert join_all([shutter], 30.0) == []
    assert first.recv(4096).endswith(b"ok")     # the one being served still is
    first.close()


def test_shared_listener_keeps_listening_for_its_other_holder(server_factory, ok_handler,
                                                              http_get):
    """A listener another process also holds (a supervisor, systemd) is
    only let go by this server: the other holder's copy still listens."""
    lsock = socket.create_server(("127.0.0.1", 0), backlog=16)
    other = lsock.dup()             # as another process's descriptor would be
    try:
        server = server_factory(ok_handler, sock=lsock, workers=1)
        address = server.address
        assert http_get(address).endswith(b"ok")
        assert server.shutdown(timeout=10.0) is True
        client = socket.create_connection(address, timeout=5.0)     # queued on `other`
        conn, _ = other.accept()
        conn.close()
        client.close()
    finally:
        other.close()


@pytest.fixture
def failing_thread_start(monkeypatch):
    """Make starting the thread named `name` fail as CPython does when the
    system has no threads left."""
    def arm(name):
        real_start = threading.Thread.start

        def start(self):
            if self.name == name:
                raise RuntimeError("can't start new thread")
            return real_start(self)
        monkeypatch.setattr(threading.Thread, "start", start)
        return monkeypatch
    return arm


def test_serve_forever_raises_when_start_fails_and_leaks_nothing(
        no_leaks, ok_handler, http_get, failing_thread_start, join_all):
    """serve_forever() used to wait for ever (deaf to Ctrl-C) when start()
    failed, and the failed start left the acceptor's epoll and eventfd open
    and doubled the worker lists on a retry."""
    server = fastaccept.Server(ok_handler, workers=4)
    try:
        patch = failing_thread_start("fastaccept-worker-2")
        errors = []

        def serve():
            try:
                server.serve_forever()
            except RuntimeError as e:
                errors.append(e)
        serving = threading.Thread(target=serve, name="test-serve")
        serving.start()
        assert join_all([serving], 10.0) == [], "serve_forever() hung after start() failed"
        assert [str(e) for e in errors] == ["can't start new thread"]
        assert [t.name for t in threading.enumerate() if t.name.startswith("fastaccept-")] == []
        patch.undo()
        server.start()          # a retry starts exactly the workers asked for
        assert server.stats()["workers"] == 4
        assert http_get(server.address).endswith(b"ok")
    finally:
        assert server.shutdown(timeout=10.0) is True


@pytest.mark.parametrize("which", ["fastaccept-acceptor", "fastaccept-monitor"])
def test_a_failed_start_can_be_retried(no_leaks, ok_handler, http_get, failing_thread_start,
                                       which):
    server = fastaccept.Server(ok_handler, workers=2)
    try:
        patch = failing_thread_start(which)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            server.start()
        assert "new" in repr(server)
        patch.undo()
        server.start()
        assert server.stats()["workers"] == 2
        assert http_get(server.address).endswith(b"ok")
    finally:
        assert server.shutdown(timeout=10.0) is True


def test_shutdown_from_the_only_handler_with_the_ring_full_does_not_deadlock(
        server_factory, read_request, wait_for, join_all):
    """1 worker, a ring of 2 and more clients queued behind it: the loop
    waits for ring space that only this worker can make. shutdown() from
    its handler used to join that loop and wait for ever; it now asks for
    the stop and returns False, and every queued client is still served."""
    go = threading.Event()
    returned = []

    def handler(conn, addr):
        if read_request(conn).startswith(b"GET /stop"):
            go.wait(30.0)
            t0 = time.monotonic()
            returned.append((server.shutdown(), time.monotonic() - t0))
        conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=1, ring_size=2)
    clients = [socket.create_connection(server.address, timeout=15.0) for _ in range(6)]
    try:
        clients[0].sendall(b"GET /stop HTTP/1.0\r\n\r\n")
        wait_for(lambda: server.stats()["workers_busy"] == 1, 10.0, "the stopping handler")
        for c in clients[1:]:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        wait_for(lambda: server.stats()["ring_full_waits"] >= 1, 10.0, "a full ring")
        go.set()
        replies = [c.recv(4096) for c in clients]
    finally:
        go.set()
        for c in clients:
            c.close()
    assert returned and returned[0][0] is False and returned[0][1] < 5.0, returned
    assert all(r.endswith(b"ok") for r in replies), replies
    assert server.shutdown(timeout=10.0) is True
    assert server.stats()["handled"] == 6


def test_serve_forever_finishes_a_shutdown_asked_from_a_handler(no_leaks, read_request):
    """A handler's shutdown() only asks; serve_forever() in the main flow
    wakes, joins every thread and returns."""
    def handler(conn, addr):
        read_request(conn)
        conn.sendall(REPLY_OK)
        server.shutdown()

    server = fastaccept.Server(handler, workers=2)

    def request():
        with socket.create_connection(server.address, timeout=10.0) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            sock.recv(4096)
    client = threading.Thread(target=request, name="test-client")
    client.start()
    done = threading.Thread(target=server.serve_forever, name="test-serve")
    done.start()
    done.join(30.0)
    client.join(10.0)
    assert not done.is_alive(), "serve_forever() did not return"
    assert "closed" in repr(server)
    assert server.stats()["handled"] == 1


def test_service_actions_runs_while_serving(no_leaks, ok_handler):
    calls = []

    class Ticking(fastaccept.Server):
        def service_actions(self):
            calls.append(time.monotonic())
            if len(calls) == 3:
                self.shutdown()

    server = Ticking(ok_handler, workers=1)
    runner = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              name="test-serve")
    runner.start()
    runner.join(30.0)
    assert not runner.is_alive()
    assert len(calls) == 3


def _blocked_signals(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))


def test_accept_thread_leaves_fault_signals_deliverable(server_factory, ok_handler, wait_for):
    """The accept loop blocks the asynchronous signals (they go to the main
    thread) but not SIGSEGV, SIGBUS, SIGFPE, SIGILL: a fault there must reach
    faulthandler instead of the kernel killing the process silently."""
    server = server_factory(ok_handler, workers=1)
    tid = server._accept_thread.native_id
    wait_for(lambda: _blocked_signals(tid) & (1 << (signal.SIGINT - 1)), 10.0,
             "the loop to block its signals")
    mask = _blocked_signals(tid)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        assert mask & (1 << (sig - 1)), f"{sig.name} is not blocked in the accept thread"
    for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL):
        assert not mask & (1 << (sig - 1)), f"{sig.name} is blocked in the accept thread"

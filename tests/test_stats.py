"""Server.stats(), the queue-wait histogram, the "fastaccept" log lines, the
overload monitor thread: every counter is provoked and seen moving. (The C
histogram's own test: test_c_stress.py; ``serve --stats-interval``: test_main.py.)"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, List

import pytest

import fastaccept
from fastaccept._stats import QUEUE_WAIT_BOUNDS_US, OverloadWatch
from fa_testutil import Gate, connect_many, no_new_fds

#: Every key stats() promises, before start, while running and after shutdown.
KEYS = {"accepted", "handled", "handler_errors", "accept_errors", "emfile_pauses", "shed",
        "ring_depth",
        "ring_high_water", "ring_full_waits", "ring_capacity", "workers", "workers_busy",
        "workers_parked", "worker_wakeups", "worker_sleeps", "accept_batches", "accept_naps",
        "queue_wait_count", "queue_wait_p50_us", "queue_wait_p99_us", "kernel_queue_depth",
        "kernel_backlog", "listen_overflows", "listen_drops", "listen_counters_scope",
        "proxy_rejected", "proxy_timeouts"}


def _fill(server: fastaccept.Server, wait_for: Callable[..., Any]) -> dict:
    """With 1 worker and a ring of 2, connect 5 clients: one in the blocked
    handler, two in the ring (full), two left in the kernel accept queue.
    Return the stats of that state."""
    def full():
        st = server.stats()
        return st if (st["workers_busy"] == 1 and st["ring_depth"] == 2
                      and st["kernel_queue_depth"] == 2) else None
    return wait_for(full, 10.0, "1 busy worker, a full ring and 2 connections in the kernel")


# -- counters ------------------------------------------------------------------

def test_stats_keys_before_start_while_running_and_after_shutdown(server_factory):
    server = server_factory(lambda c, a: None, start=False, backlog=37)
    st = server.stats()
    assert KEYS <= set(st), KEYS - set(st)
    assert st["accepted"] == 0 and st["workers"] == 0
    assert st["kernel_queue_depth"] == 0 and st["kernel_backlog"] == 37
    server.start()
    running = server.stats()
    assert KEYS <= set(running)
    # the stand-in counters before start are the acceptor's, key for key,
    # of the same types (a dict of counts by name is an empty dict)
    assert set(st) == set(running), set(st) ^ set(running)
    assert [k for k in running if type(st[k]) is not type(running[k])] == []
    assert st["accept_errors"] == st["http_rejected"] == st["proxy_rejected"] == {}
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert KEYS <= set(st)
    assert set(st) == set(running)
    assert st["kernel_queue_depth"] is None and st["kernel_backlog"] is None   # socket closed
    assert st["listen_counters_scope"] == "namespace"


def test_accepted_handled_and_queue_wait_count_move(server_factory, http_get):
    def handler(conn, addr):
        conn.recv(1024)
        conn.sendall(b"ok")

    server = server_factory(handler, workers=2)
    before = server.stats()
    assert (before["accepted"], before["handled"], before["queue_wait_count"]) == (0, 0, 0)
    for _ in range(7):
        assert http_get(server.address) == b"ok"
    # handled moves once the worker is back from the handler, after the reply
    assert server.shutdown(timeout=10.0)
    st = server.stats()
    assert st["accepted"] == 7
    assert st["handled"] == 7
    assert st["queue_wait_count"] == 7
    assert st["accept_batches"] >= 1
    assert st["handler_errors"] == 0 and st["accept_errors"] == {}


def test_handler_errors_move(server_factory, wait_for, caplog):
    caplog.set_level(logging.CRITICAL, logger="fastaccept")     # the expected tracebacks
    calls = []

    def handler(conn, addr):
        calls.append(addr)
        if len(calls) % 2:
            raise RuntimeError("handler failure under test")

    server = server_factory(handler, dispatch="accept", workers=1)
    for c in connect_many(server.address, 4):
        c.close()
    st = wait_for(lambda: (s := server.stats())["handled"] == 4 and s, 10.0, "4 handled")
    assert st["handler_errors"] == 2


def test_ring_kernel_queue_workers_busy_and_queue_wait_move_when_workers_block(
        server_factory, wait_for):
    gate = Gate()
    server = server_factory(gate, dispatch="accept", workers=1, ring_size=2, backlog=16)
    before = server.stats()
    assert before["workers_busy"] == 0 and before["ring_full_waits"] == 0
    assert before["queue_wait_p99_us"] == 0
    clients = connect_many(server.address, 5)
    try:
        st = _fill(server, wait_for)
        held_from = time.monotonic()
        assert st["ring_full_waits"] >= 1
        assert st["ring_high_water"] == 2
        assert st["accepted"] == 3
        assert st["kernel_backlog"] == 16
        assert st["workers"] == 1
        # The two connections in the ring wait at least this long for the worker.
        time.sleep(0.05)        # the queue wait under test, not a synchronisation
        held_us = (time.monotonic() - held_from) * 1e6
    finally:
        gate.open.set()
        for c in clients:
            c.close()
    st = wait_for(lambda: (s := server.stats())["handled"] == 5 and s, 10.0, "5 handled")
    assert st["accepted"] == 5 and st["queue_wait_count"] == 5
    assert st["ring_depth"] == 0
    assert st["kernel_queue_depth"] == 0
    wait_for(lambda: server.stats()["workers_busy"] == 0, 10.0, "the worker to go idle")
    # p99 is the middle of a bucket at most 6.25% wide: within 3.2%
    assert st["queue_wait_p99_us"] >= 0.9 * held_us, st
    assert st["queue_wait_p50_us"] <= st["queue_wait_p99_us"]


def test_queue_wait_histogram_is_cumulative_and_counts_every_pop(server_factory, wait_for):
    gate = Gate()
    server = server_factory(gate, dispatch="accept", workers=1, ring_size=2)
    buckets, sum_us = server.queue_wait_histogram()
    assert [b for b, _ in buckets] == [float(b) for b in QUEUE_WAIT_BOUNDS_US] + [float("inf")]
    assert all(n == 0 for _, n in buckets) and sum_us == 0
    clients = connect_many(server.address, 5)
    try:
        _fill(server, wait_for)
        time.sleep(0.02)        # a queue wait of at least 20 ms, the input under test
    finally:
        gate.open.set()
        for c in clients:
            c.close()
    wait_for(lambda: server.stats()["handled"] == 5, 10.0, "5 handled")
    buckets, sum_us = server.queue_wait_histogram()
    counts = [n for _, n in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == 5 == server.stats()["queue_wait_count"]
    # two connections waited >= 20 ms in the ring: above the 16384 us bound
    le_16ms = dict(buckets)[16384.0]
    assert le_16ms <= 3
    assert sum_us >= 2 * 20000
    assert server.shutdown(timeout=10.0)
    assert server.queue_wait_histogram() == (buckets, sum_us)     # kept after close


def test_listen_overflows_and_drops_move_when_the_kernel_queue_overflows(
        server_factory, wait_for):
    gate = Gate()
    # 1 in the handler + 2 in the ring + backlog + 1 in the kernel queue;
    # every SYN beyond that is dropped and counted.
    server = server_factory(gate, dispatch="accept", workers=1, ring_size=2, backlog=1)
    before = server.stats()
    assert before["listen_counters_scope"] == "namespace"
    if before["listen_overflows"] is None:
        pytest.skip("/proc/net/netstat has no TcpExt ListenOverflows here")
    clients = []
    try:
        for _ in range(12):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            clients.append(c)
            c.setblocking(False)
            c.connect_ex(server.address)    # EINPROGRESS: a dropped SYN never completes
        st = wait_for(lambda: (s := server.stats())["listen_overflows"]
                      > before["listen_overflows"] and s, 10.0, "ListenOverflows to rise")
        assert st["listen_drops"] > before["listen_drops"]
        assert st["kernel_backlog"] == 1
        # a full queue holds backlog + 1 (SYN retransmits refill it within seconds)
        wait_for(lambda: server.stats()["kernel_queue_depth"] == 2, 10.0,
                 "a full kernel accept queue")
    finally:
        for c in clients:
            c.close()
        gate.open.set()


def test_accept_errors_and_emfile_pauses_move_and_recover(server_factory, wait_for):
    server = server_factory(lambda c, a: None, start=False, workers=1, ring_size=16)
    # No monitor thread: each of its ticks opens /proc/net/netstat, and one
    # that closes below the limit frees a descriptor for accept4().
    server.monitor_interval = None
    server.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(10.0)
    try:
        with no_new_fds():
            client.connect(server.address)          # needs no new fd here
            client.sendall(b"x")     # something for a worker, once accepted
            # stats() reads the errors before the pauses, so one snapshot can
            # hold a pause whose error it missed: wait for both.
            st = wait_for(lambda: (s := server.stats())["emfile_pauses"] >= 1
                          and s["accept_errors"].get("EMFILE", 0) >= 1 and s,
                          10.0, "an EMFILE error and pause")
            assert set(st["accept_errors"]) == {"EMFILE"}
            assert st["accepted"] == 0
        st = wait_for(lambda: (s := server.stats())["handled"] == 1 and s, 10.0,
                      "the loop to resume and serve the client")
        assert st["accepted"] == 1
    finally:
        client.close()


def test_overload_messages_name_the_cause():
    st = {"ring_capacity": 2, "kernel_queue_depth": 5, "kernel_backlog": 128,
          "workers_busy": 8, "workers": 8, "accept_errors": {"EMFILE": 3}}
    from fastaccept._stats import overload_message as _overload_message
    ring = _overload_message("ring_full_waits", 7, 30.0, st)
    assert "ring (2 slots) was full 7 times in 30 s" in ring
    assert "5/128" in ring and "8/8 busy" in ring
    emfile = _overload_message("emfile_pauses", 3, 2.0, st)
    assert "file descriptors" in emfile and "paused 3 times" in emfile and "EMFILE" in emfile
    overflow = _overload_message("listen_overflows", 40, 1.0, st)
    assert "ListenOverflows rose by 40" in overflow and "namespace-wide" in overflow


def test_effective_backlog_from_the_kernel(server_factory, caplog):
    caplog.set_level(logging.INFO, logger="fastaccept")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(7)
        server = server_factory(lambda c, a: None, sock=sock)
        assert server.stats()["kernel_backlog"] == 7
        assert any("(backlog 7)" in r.getMessage() for r in caplog.records)
        assert server.shutdown(timeout=10.0)
    finally:
        sock.close()
    somaxconn = fastaccept._kernel.somaxconn()
    if somaxconn is not None and somaxconn < 2**31 - 1:
        capped = server_factory(lambda c, a: None, start=False, backlog=somaxconn + 1)
        assert capped.stats()["kernel_backlog"] == somaxconn


# -- logs and the monitor thread --------------------------------------------------

def test_start_and_final_stats_are_logged(server_factory, http_get, caplog):
    caplog.set_level(logging.INFO, logger="fastaccept")

    def handler(conn, addr):
        conn.recv(1024)
        conn.sendall(b"ok")

    server = server_factory(handler, workers=3, ring_size=64, backlog=37)
    for _ in range(3):
        http_get(server.address)
    assert server.shutdown(timeout=10.0)
    messages = [r.getMessage() for r in caplog.records if r.name == "fastaccept"]
    starts = [m for m in messages if m.startswith("serving on")]
    assert starts == [f"serving on {server.address} (backlog 37) with 3 workers and a ring of 64"]
    finals = [m for m in messages if m.startswith("stopped on")]
    assert len(finals) == 1
    assert "accepted 3, handled 3, handler errors 0, accept errors none" in finals[0]
    assert server.shutdown(timeout=10.0)                # again: no second final line
    assert sum(r.getMessage().startswith("stopped on") for r in caplog.records) == 1


def test_monitor_thread_warns_once_per_interval_when_the_ring_is_full(
        server_factory, wait_for, caplog):
    caplog.set_level(logging.WARNING, logger="fastaccept")
    gate = Gate()
    server = server_factory(gate, dispatch="accept", start=False, workers=1, ring_size=2)
    server.monitor_interval = 0.01
    server.warn_interval = 3600.0
    # ring_full_waits as each tick of the monitor thread read it
    seen: List[int] = []
    real_stats = server.stats

    def stats() -> dict:
        st = real_stats()
        if threading.current_thread().name == "fastaccept-monitor":
            seen.append(st["ring_full_waits"])
        return st
    server.stats = stats
    server.start()
    assert any(t.name == "fastaccept-monitor" for t in threading.enumerate())

    def ring_warnings():
        return [r for r in caplog.records
                if r.name == "fastaccept" and "ring (2 slots) was full" in r.getMessage()]

    clients = connect_many(server.address, 5)
    try:
        _fill(server, wait_for)
        warned = wait_for(ring_warnings, 10.0, "a ring-full warning")
        assert warned[0].levelno == logging.WARNING
        # Drain, then fill the ring again: ring_full_waits rises once more.
        gate.open.set()
        for c in clients:
            c.close()
        clients = []
        wait_for(lambda: server.stats()["handled"] == 5, 10.0, "5 handled")
        gate.open.clear()
        risen_from = server.stats()["ring_full_waits"]
        clients = connect_many(server.address, 5)
        _fill(server, wait_for)
        # A tick saw the rise, and a later tick began: the first one's check has run.
        wait_for(lambda: any(v > risen_from for v in seen[:-1]), 10.0,
                 "the monitor to read the new ring-full waits")
        assert len(ring_warnings()) == 1, "a second warning within warn_interval"
    finally:
        gate.open.set()
        for c in clients:
            c.close()


def test_no_monitor_thread_when_disabled(server_factory):
    server = server_factory(lambda c, a: None, start=False)
    server.monitor_interval = None
    server.start()
    assert not any(t.name == "fastaccept-monitor" for t in threading.enumerate())


def test_overload_watch_rate_limits_per_kind():
    watch = OverloadWatch(30.0, 0.0, {"ring_full_waits": 0, "emfile_pauses": 0,
                                       "listen_overflows": None})
    assert watch.check(1.0, {"ring_full_waits": 0, "emfile_pauses": 0}) == []
    assert watch.check(2.0, {"ring_full_waits": 5, "emfile_pauses": 0}) == [
        ("ring_full_waits", 5, 2.0)]
    # within 30 s: silent, but the rise is kept for the next warning
    assert watch.check(10.0, {"ring_full_waits": 9, "emfile_pauses": 1}) == [
        ("emfile_pauses", 1, 10.0)]
    assert watch.check(31.0, {"ring_full_waits": 9, "emfile_pauses": 1}) == []
    assert watch.check(32.0, {"ring_full_waits": 12, "emfile_pauses": 1}) == [
        ("ring_full_waits", 7, 30.0)]
    # the first reading of a counter (None before) is a baseline, not a rise
    assert watch.check(40.0, {"listen_overflows": 1000}) == []
    assert watch.check(41.0, {"listen_overflows": 1003}) == [("listen_overflows", 3, 1.0)]
    # a counter that went back (a reset) is a new baseline
    assert watch.check(100.0, {"ring_full_waits": 2}) == []
    assert watch.check(101.0, {"ring_full_waits": 4}) == [("ring_full_waits", 2, 1.0)]


def test_stats_does_not_wait_for_a_shutdown_in_progress(server_factory, wait_for, join_all):
    gate = Gate()
    server = server_factory(gate, dispatch="accept", workers=1)
    clients = connect_many(server.address, 1)
    try:
        assert gate.entered.acquire(timeout=10.0)
        stopper = threading.Thread(target=server.shutdown, name="test-shutdown")
        stopper.start()
        wait_for(server._lock.locked, 10.0, "shutdown() to hold the server's lock")
        got = []
        reader = threading.Thread(target=lambda: got.append(server.stats()), name="test-stats")
        reader.start()
        stuck = join_all([reader], 5.0)
        assert not stuck, "stats() blocked while shutdown() waited for a worker"
        assert got[0]["workers_busy"] == 1
    finally:
        gate.open.set()
        for c in clients:
            c.close()
    assert not join_all([stopper], 10.0)


def test_tcpserver_stats_have_the_kernel_keys(no_leaks, wait_for):
    import socketserver

    class Quiet(socketserver.BaseRequestHandler):
        def handle(self):
            pass

    server = fastaccept.TCPServer(("127.0.0.1", 0), Quiet, workers=1)
    t = threading.Thread(target=server.serve_forever, name="test-serve")
    t.start()
    try:
        st = wait_for(server.stats, 10.0, "the server to start")
        assert KEYS <= set(st)
        assert st["kernel_backlog"] == min(server.request_queue_size,
                                           fastaccept._kernel.somaxconn() or 2**31)
    finally:
        server.shutdown()
        t.join(10.0)
        server.server_close()
    assert not t.is_alive()

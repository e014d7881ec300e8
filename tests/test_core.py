"""fastaccept._core, the extension: Ring, Acceptor and close_fd (the Cython layer over src/)."""
from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

import fastaccept
from fa_testutil import (fork, may_run_realtime, no_new_fds, open_fds, run_child_json,
                         thread_name, wait_child)


# -- Ring ------------------------------------------------------------------

def test_ring_is_fifo():
    ring = fastaccept.Ring(64)
    values = [1000 + 7 * i for i in range(50)]
    for v in values:
        assert ring.push(v) is True
    popped = []
    for _ in values:
        item = ring.pop(timeout=1.0)
        assert item is not None
        fd, addr, queued_ns = item
        assert addr is None
        assert queued_ns > 0
        popped.append(fd)
    assert popped == values
    assert ring.pop(timeout=0) is None


def test_ring_fifo_across_laps():
    # A small ring reused many times: the slot sequence numbers wrap laps.
    ring = fastaccept.Ring(4)
    expected = []
    got = []
    n = 0
    for _ in range(100):
        for _ in range(3):
            assert ring.push(n)
            expected.append(n)
            n += 1
        for _ in range(3):
            got.append(ring.pop(timeout=1.0)[0])
    assert got == expected


def test_ring_capacity_len_and_high_water():
    ring = fastaccept.Ring(8)
    assert ring.capacity == 8
    assert len(ring) == 0
    assert ring.high_water == 0
    for i in range(8):
        assert ring.push(i) is True
        assert len(ring) == i + 1
    assert ring.push(99) is False          # full: refused, not blocked
    assert len(ring) == 8
    assert ring.high_water == 8
    assert ring.pop(timeout=1.0)[0] == 0
    assert ring.pop(timeout=1.0)[0] == 1
    assert len(ring) == 6
    assert ring.high_water == 8             # a maximum, not the current depth
    assert ring.push(8) is True             # a freed slot is usable again
    assert len(ring) == 7


def test_ring_pop_timeout_on_empty_returns_none():
    ring = fastaccept.Ring(4)
    t0 = time.monotonic()
    assert ring.pop(timeout=0.05) is None
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.045, f"pop returned after {elapsed:.3f} s, before its timeout"
    assert ring.pop(timeout=0) is None


def test_ring_close_wakes_every_waiter(wait_for, join_all):
    ring = fastaccept.Ring(16)
    n = 6
    results = [object()] * n
    # A long pop timeout keeps a lost wake-up from hanging the suite, while
    # the join below (much shorter) still catches it.
    pop_timeout = 30.0

    def waiter(i: int) -> None:
        results[i] = ring.pop(timeout=pop_timeout)

    threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    wait_for(lambda: ring.parked == n, 10.0, f"{n} waiters parked in pop()")
    assert not ring.closed
    t0 = time.monotonic()
    ring.close()
    alive = join_all(threads, 5.0)
    assert not alive, f"{len(alive)} waiters still blocked 5 s after close()"
    assert time.monotonic() - t0 < pop_timeout / 2
    assert results == [None] * n
    assert ring.closed
    assert ring.parked == 0


def test_ring_close_lets_waiters_drain_first():
    ring = fastaccept.Ring(4)
    assert ring.push(5) and ring.push(6)
    ring.close()
    assert ring.pop(timeout=1.0)[0] == 5
    assert ring.pop(timeout=1.0)[0] == 6
    assert ring.pop(timeout=1.0) is None
    with pytest.raises(ValueError):
        ring.push(7)


def test_ring_push_wakes_a_parked_waiter(wait_for, join_all):
    ring = fastaccept.Ring(4)
    got = []
    t = threading.Thread(target=lambda: got.append(ring.pop(timeout=30.0)), daemon=True)
    t.start()
    wait_for(lambda: ring.parked == 1, 10.0, "the waiter to park")
    assert ring.push(42)
    assert not join_all([t], 5.0)
    assert got and got[0] is not None and got[0][0] == 42


@pytest.mark.parametrize("capacity", [0, 1, 3, 6, 100, -2, 2**25, 2**64])
def test_ring_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity"):
        fastaccept.Ring(capacity)


@pytest.mark.parametrize("timeout", [-0.001, -1, float("nan")])
def test_ring_pop_bad_timeout(timeout):
    ring = fastaccept.Ring(4)
    ring.push(1)
    with pytest.raises(ValueError, match="timeout"):
        ring.pop(timeout=timeout)
    assert len(ring) == 1           # nothing was taken


# -- Acceptor ----------------------------------------------------------------

@pytest.fixture
def listener(no_leaks):
    """A listening IPv4 socket on an ephemeral loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock
    sock.close()


class Running:
    """An Acceptor whose run() executes in a thread; always stopped and freed."""

    def __init__(self, sock: socket.socket, **kwargs) -> None:
        self.acceptor = fastaccept.Acceptor(sock.fileno(), **kwargs)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-acceptor", daemon=True)

    def _run(self) -> None:
        try:
            self.acceptor.run()
        except BaseException as e:      # reported by stop()
            self.error = e

    def start(self) -> "Running":
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.acceptor.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after stop()"
        assert self.error is None, f"run() raised {self.error!r}"

    def close(self) -> None:
        if self.thread.is_alive():
            self.acceptor.abort()
            self.thread.join(5.0)
        if not self.thread.is_alive():
            self.acceptor.close()


@pytest.fixture
def running(listener):
    made = []

    def make(**kwargs) -> Running:
        r = Running(listener, **kwargs).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _close_fd(item) -> None:
    os.close(item[0])


def test_acceptor_pop_returns_fd_peer_and_time(listener, running):
    r = running(ring_size=64)
    before_ns = time.monotonic_ns()
    with socket.create_connection(listener.getsockname(), timeout=5.0) as client:
        item = r.acceptor.pop(timeout=5.0)
        after_ns = time.monotonic_ns()
        assert item is not None, "no connection popped within 5 s"
        fd, addr, accepted_ns = item
        try:
            assert addr == client.getsockname()
            assert before_ns <= accepted_ns <= after_ns
            # The fd is the server end of this very connection.
            with socket.socket(fileno=os.dup(fd)) as server_end:
                assert server_end.getpeername() == client.getsockname()
                server_end.sendall(b"hi")
            assert client.recv(2) == b"hi"
        finally:
            os.close(fd)
    r.stop()
    assert r.acceptor.pop(timeout=5.0) is None


def test_acceptor_stop_ends_run_and_closes_ring(listener, running, wait_for):
    r = running()
    # Wait until run() is really in its loop, so stop() reaches the running loop.
    wait_for(lambda: r.acceptor.running, 5.0, "run() to start")
    t0 = time.monotonic()
    r.stop()
    assert not r.acceptor.running
    assert r.acceptor.pop(timeout=5.0) is None
    assert time.monotonic() - t0 < 4.0, "pop() waited for its timeout instead of seeing the close"


def test_acceptor_stats_count_connections(listener, running, wait_for):
    r = running(ring_size=64)
    n = 10
    clients = [socket.create_connection(listener.getsockname(), timeout=5.0) for _ in range(n)]
    try:
        wait_for(lambda: r.acceptor.stats()["accepted"] == n, 10.0, f"{n} accepts")
        st = r.acceptor.stats()
        assert st["ring_depth"] == n
        assert st["ring_high_water"] == n
        assert st["ring_capacity"] == 64
        assert st["accept_errors"] == {}
        assert st["accept_batches"] >= 1
        for _ in range(n):
            _close_fd(r.acceptor.pop(timeout=5.0))
        assert r.acceptor.stats()["ring_depth"] == 0
        assert r.acceptor.stats()["ring_high_water"] == n
    finally:
        for c in clients:
            c.close()
    r.stop()


def test_acceptor_close_closes_queued_fds(listener, running, wait_for):
    r = running(ring_size=16)
    fds_before = open_fds()
    clients = [socket.create_connection(listener.getsockname(), timeout=5.0) for _ in range(3)]
    try:
        wait_for(lambda: r.acceptor.stats()["ring_depth"] == 3, 10.0, "3 queued connections")
        client_fds = {c.fileno() for c in clients}
        queued = sorted(open_fds() - fds_before - client_fds)
        assert len(queued) == 3, f"expected 3 accepted fds, found {queued}"
        for fd in queued:
            os.fstat(fd)                    # open while queued
        r.stop()
        r.acceptor.close()
        for fd in queued:
            with pytest.raises(OSError) as exc:
                os.fstat(fd)
            assert exc.value.errno == errno.EBADF
        r.acceptor.close()                  # idempotent
        for c in clients:                   # the server end is gone: EOF
            assert c.recv(1) == b""
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("realtime", [True, False])
def test_acceptor_run_lends_the_thread_its_scheduling_and_gives_it_back(listener, wait_for,
                                                                        realtime):
    """While run() runs, the caller's thread is called fa-accept and, with
    realtime=True where the process may, SCHED_FIFO; afterwards it has its
    own name, policy and nice value again."""
    expected = realtime and may_run_realtime()
    acceptor = fastaccept.Acceptor(listener.fileno(), realtime=realtime)
    seen = {}

    def own() -> tuple:
        tid = threading.get_native_id()
        return (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,
                os.getpriority(os.PRIO_PROCESS, tid), thread_name(tid))

    def lender() -> None:
        seen["before"] = own()
        acceptor.run()
        seen["after"] = own()

    t = threading.Thread(target=lender, name="lender", daemon=True)
    try:
        t.start()
        # the loop names its thread once its scheduling is set (running
        # turns true before that, as run() enters C)
        wait_for(lambda: thread_name(t.native_id) == "fa-accept", 5.0, "the loop to start")
        assert os.sched_getscheduler(t.native_id) == (
            os.SCHED_FIFO | os.SCHED_RESET_ON_FORK if expected else os.SCHED_OTHER)
        assert acceptor.stats()["accept_realtime"] == int(expected)
    finally:
        acceptor.stop()
        t.join(5.0)
        if not t.is_alive():
            acceptor.close()
    assert not t.is_alive()
    assert seen["after"] == seen["before"]


def test_acceptor_run_twice_is_an_error(listener, running, wait_for):
    r = running()
    wait_for(lambda: r.acceptor.running, 5.0, "run() to start")
    with pytest.raises(RuntimeError):
        r.acceptor.run()                    # while the first run() is running
    r.stop()
    with pytest.raises(RuntimeError):
        r.acceptor.run()                    # after it returned


def test_acceptor_stop_before_run_closes_ring(listener):
    acceptor = fastaccept.Acceptor(listener.fileno())
    try:
        acceptor.stop()
        t0 = time.monotonic()
        assert acceptor.pop(timeout=5.0) is None
        assert time.monotonic() - t0 < 4.0, \
            "pop() waited for its timeout instead of seeing the close"
        # The thread meant to run the loop may start after its owner gave up
        # on it: run() then returns at once, and only once.
        assert acceptor.run() is None
        with pytest.raises(RuntimeError):
            acceptor.run()
    finally:
        acceptor.close()


def test_acceptor_close_while_running_is_refused(listener, running, wait_for):
    r = running()
    wait_for(lambda: r.acceptor.running, 5.0, "run() to start")
    with pytest.raises(RuntimeError):
        r.acceptor.close()
    r.stop()


@pytest.mark.parametrize("kwargs, word", [
    (dict(ring_size=3), "ring_size"),
    (dict(ring_size=1), "ring_size"),
    (dict(ring_size=2**25), "ring_size"),
    (dict(max_batch=0), "max_batch"),
    (dict(spin_us=-1), "spin_us"),
    (dict(spin_us=fastaccept._core.MAX_SPIN_US + 1), "spin_us"),
    (dict(nap_us=-1), "nap_us"),
    (dict(nap_us=fastaccept._core.MAX_NAP_US + 1), "nap_us"),
    (dict(overload="drop"), "overload"),
    (dict(overload="shed", shed_response=b"x" * (fastaccept._core.MAX_SHED_RESPONSE + 1)),
     "shed_response"),
    (dict(proxy=True, proxy_timeout=0), "proxy_timeout"),
    (dict(proxy=True, proxy_timeout=-1.0), "proxy_timeout"),
    (dict(proxy=True, proxy_timeout=float("nan")), "proxy_timeout"),
])
def test_acceptor_bad_arguments(listener, kwargs, word):
    with pytest.raises(ValueError, match=word):
        fastaccept.Acceptor(listener.fileno(), **kwargs)


def test_acceptor_refuses_a_negative_fd(no_leaks):
    with pytest.raises(ValueError, match="fd must be"):
        fastaccept.Acceptor(-1)


@pytest.mark.parametrize("kwargs, word", [
    (dict(ring_size="8"), "ring_size"),
    (dict(ring_size=8.0), "ring_size"),
    (dict(max_batch=None), "max_batch"),
    (dict(spin_us="x"), "spin_us"),
    (dict(nap_us=1.5), "nap_us"),
    (dict(nap_us=True), "nap_us"),
    (dict(shed_response="503"), "shed_response"),
    (dict(proxy=1), "proxy"),
    (dict(proxy=True, proxy_timeout="3"), "proxy_timeout"),
])
def test_acceptor_arguments_of_the_wrong_type(listener, kwargs, word):
    with pytest.raises(TypeError, match=word):
        fastaccept.Acceptor(listener.fileno(), **kwargs)


@pytest.mark.parametrize("bounds, error", [
    ([1, 1.5], TypeError),
    (["4"], TypeError),
    ([4, 2], ValueError),
    ([1, 1], ValueError),
    ([-1, 4], ValueError),
])
def test_queue_wait_histogram_refuses_bad_bounds(listener, bounds, error):
    acceptor = fastaccept.Acceptor(listener.fileno())
    try:
        with pytest.raises(error, match="bounds_us"):
            acceptor.queue_wait_histogram(bounds)
        assert acceptor.queue_wait_histogram([]) == ([0], 0)
        assert acceptor.queue_wait_histogram(iter([0, 1, 4])) == ([0, 0, 0, 0], 0)
    finally:
        acceptor.close()


@pytest.mark.parametrize("dispatch", ["accept", "readable"])
def test_acceptor_reads_a_proxy_header_first(listener, running, wait_for, dispatch):
    """proxy=True: the popped entry's address is the header's source, the
    client's bytes are all still in the socket, and a connection without a
    header is closed (a FIN) and counted by error name."""
    r = running(dispatch=dispatch, proxy=True, proxy_timeout=5.0)
    assert (r.acceptor.proxy, r.acceptor.proxy_timeout) == (True, 5.0)
    header = b"PROXY TCP6 2001:db8::7 2001:db8::1 40002 443\r\n"
    with socket.create_connection(listener.getsockname(), timeout=10.0) as client:
        client.sendall(header + b"payload")
        fd, addr, _ = r.acceptor.pop(timeout=10.0)
        try:
            assert addr == ("2001:db8::7", 40002, 0, 0)
            assert os.read(fd, 100) == b"payload"
        finally:
            r.acceptor.finish(fd)
    with socket.create_connection(listener.getsockname(), timeout=10.0) as client:
        client.sendall(b"payload")
        assert client.recv(16) == b""
    st = wait_for(lambda: (s := r.acceptor.stats())["proxy_rejected"] and s, 10.0, "the count")
    assert st["proxy_rejected"] == {"ENOTPROXY": 1} and st["proxy_timeouts"] == 0
    r.stop()
    assert fastaccept._core.PROXY_ERROR_NAMES[fastaccept._core.PROXY_ENOTPROXY] == "ENOTPROXY"


def test_acceptor_without_proxy_reads_nothing(listener):
    acceptor = fastaccept.Acceptor(listener.fileno(), proxy_timeout=2.0)
    try:
        assert (acceptor.proxy, acceptor.proxy_timeout) == (False, None)
        st = acceptor.stats()
        assert st["proxy_rejected"] == {} and st["proxy_timeouts"] == 0
    finally:
        acceptor.close()


def test_acceptor_counts_emfile_by_name_and_recovers(listener, running, wait_for):
    """accept4() failing with EMFILE is counted under "EMFILE", and the loop
    resumes by itself once descriptors are available again."""
    r = running(ring_size=16)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5.0)
    try:
        with no_new_fds():
            client.connect(listener.getsockname())      # needs no new fd here
            wait_for(lambda: r.acceptor.stats()["accept_errors"].get("EMFILE", 0) >= 1,
                     10.0, "an EMFILE accept error")
            st = r.acceptor.stats()
            assert st["emfile_pauses"] >= 1
            assert st["accepted"] == 0
            assert set(st["accept_errors"]) == {"EMFILE"}
        item = r.acceptor.pop(timeout=10.0)
        assert item is not None, "the loop did not resume after EMFILE"
        try:
            assert item[1] == client.getsockname()
        finally:
            os.close(item[0])
    finally:
        client.close()
    r.stop()


def test_acceptor_grows_the_fd_table_for_a_full_ring(tmp_path):
    """At construction the fd table is sized for a full ring plus
    FA_FD_SLACK (1024), or up to RLIMIT_NOFILE when that is lower, so that
    it never grows (and stalls the loop) during a burst."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192:
        pytest.skip(f"the hard fd limit ({hard}) is below what the test grows to")
    out = run_child_json("acceptor_fd_table.py", cwd=tmp_path)
    # the kernel sizes tables in powers of two
    assert out["before"] < 1000 <= out["capped"] < 2000
    assert 4096 + 1024 <= out["grown"]


def test_acceptor_dealloc_without_close_frees_fds(listener):
    # uvloop-style: C resources are freed even when close() is never called.
    before = open_fds()
    acceptor = fastaccept.Acceptor(listener.fileno())
    assert len(open_fds() - before) == 3       # its epoll fd, eventfd and placeholder
    acceptor.stop()
    del acceptor            # no cycle: freed now, not by the collector
    assert open_fds() == before


@pytest.mark.parametrize("spin_us", [0, 200, 5000])
def test_acceptor_serves_every_connection_polling_or_not(listener, running, spin_us):
    """A burst (enough queued to start polling), then a pause past the polling
    window, then one more: every connection is popped, whatever spin_us is."""
    r = running(spin_us=spin_us)
    assert r.acceptor.spin_us == spin_us
    clients = [socket.create_connection(listener.getsockname(), timeout=10.0) for _ in range(32)]
    got = [r.acceptor.pop(timeout=10.0) for _ in range(32)]
    late = socket.create_connection(listener.getsockname(), timeout=10.0)
    got.append(r.acceptor.pop(timeout=10.0))
    try:
        assert all(item is not None for item in got)
        ports = sorted(item[1][1] for item in got)
        assert ports == sorted(c.getsockname()[1] for c in clients + [late])
    finally:
        for item in got:
            if item is not None:
                os.close(item[0])
        for c in clients + [late]:
            c.close()


@pytest.mark.parametrize("nap_us", [0, 100, 1000])
def test_acceptor_naps_while_the_ring_holds_work_and_loses_nothing(
        listener, running, wait_for, nap_us):
    """Connections that come faster than nap_us while nobody pops: once a
    batch empties the kernel queue with work left in the ring, the loop naps
    (unless nap_us=0). Every connection is still accepted once, and stopping
    with the ring full of work ends the loop and leaves every entry to pop."""
    # The whole load waits in the kernel queue before the loop starts, so
    # the loop's wake-ups find it at once: the density it measures does not
    # depend on how fast this process can connect. 60 is not a multiple of
    # max_batch, so the last batch ends on an empty queue, where naps start.
    n, max_batch = 60, 16
    clients = []
    got = []
    try:
        for _ in range(n):
            clients.append(socket.create_connection(listener.getsockname(), timeout=10.0))
        wait_for(lambda: fastaccept._kernel.listen_queue(listener)[0] == n, 10.0,
                 f"{n} connections in the kernel queue")
        r = running(nap_us=nap_us, spin_us=0, max_batch=max_batch)  # wake-ups or naps only
        assert r.acceptor.nap_us == nap_us
        wait_for(lambda: r.acceptor.stats()["accepted"] == n, 10.0, f"{n} accepted")
        r.stop()
        got = [r.acceptor.pop(timeout=10.0) for _ in range(n)]
        assert all(item is not None for item in got)
        assert r.acceptor.pop(timeout=0) is None       # stopped and drained
        assert sorted(item[1][1] for item in got) == sorted(c.getsockname()[1] for c in clients)
        st = r.acceptor.stats()
        assert st["accepted"] == n
        assert st["accept_naps"] == (0 if nap_us == 0 else 1)
    finally:
        for item in got:
            if item is not None:
                os.close(item[0])
        for c in clients:
            c.close()


def test_close_fd_closes_and_reports_errors():
    a, b = socket.socketpair()
    fd = a.detach()
    fastaccept._core.close_fd(fd)
    with pytest.raises(OSError) as e:
        os.fstat(fd)
    assert e.value.errno == errno.EBADF
    with pytest.raises(OSError) as e:
        fastaccept._core.close_fd(fd)
    assert e.value.errno == errno.EBADF
    b.close()


def test_acceptor_refuses_use_in_a_forked_child(listener):
    """The child of os.fork() has no accept thread: using the parent's
    Acceptor there raises instead of touching shared C state."""
    acceptor = fastaccept.Acceptor(listener.fileno())
    pid = fork()
    if pid == 0:                        # child: report through the exit status
        code = 1
        try:
            acceptor.pop(timeout=0)
        except RuntimeError:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    status = wait_child(pid, 30.0)
    acceptor.close()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_discard_lets_a_loop_waiting_for_space_go_on(listener, running, wait_for):
    """discard() frees slots as a worker's pop does: a loop waiting for ring
    space wakes and accepts what waited in the kernel queue. (It used to pop
    without waking it, and the loop slept until an abort.)"""
    r = running(ring_size=2, max_batch=1)
    clients = [socket.create_connection(listener.getsockname(), timeout=5.0) for _ in range(4)]
    try:
        wait_for(lambda: r.acceptor.stats()["ring_full_waits"] >= 1 and
                 r.acceptor.stats()["accepted"] == 2, 10.0, "a full ring")
        discarded = r.acceptor.discard()    # 2, or more if the woken loop was quick
        wait_for(lambda: r.acceptor.stats()["accepted"] == 4, 5.0,
                 "the loop to accept the two left in the kernel queue")
        discarded += r.acceptor.discard()
        assert discarded == 4
    finally:
        for c in clients:
            c.close()


def test_end_listen_release_and_keep(listener, running):
    """After a stop, "release" lets go of the listener (a client is then
    refused), "keep" leaves it listening for its owner."""
    address = listener.getsockname()
    r = running(end_listen="keep")
    assert r.acceptor.end_listen == "keep"
    r.stop()
    with socket.create_connection(address, timeout=5.0):
        pass                        # still listening: queued in the kernel
    r2 = running()                  # the default
    assert r2.acceptor.end_listen == "release"
    r2.stop()
    item = r2.acceptor.pop(timeout=5.0)     # the client queued while nobody accepted
    assert item is not None
    os.close(item[0])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5.0).close()
    assert listener.fileno() >= 0   # the number is still the owner's to close


def test_end_listen_is_checked(listener):
    with pytest.raises(ValueError, match="end_listen"):
        fastaccept.Acceptor(listener.fileno(), end_listen="close")


# -- send_all and recv_some: a worker's I/O on a bare descriptor -------------

def test_recv_some_returns_what_is_there_then_eof():
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"hello")
        assert fastaccept._core.recv_some(a.fileno(), 64, 5.0) == b"hello"
        b.sendall(b"abcdef")
        assert fastaccept._core.recv_some(a.fileno(), 4, 5.0) == b"abcd"
        assert fastaccept._core.recv_some(a.fileno(), 4, 5.0) == b"ef"
        assert fastaccept._core.recv_some(a.fileno(), 0, 5.0) == b""
        b.shutdown(socket.SHUT_WR)
        assert fastaccept._core.recv_some(a.fileno(), 64, 5.0) == b""


def test_recv_some_waits_without_the_gil_up_to_its_timeout():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TimeoutError):
            fastaccept._core.recv_some(a.fileno(), 64, 0.05)
        # a wait that bytes end: they are sent by another thread, which runs
        # only if the wait gave up the GIL
        sender = threading.Timer(0.05, b.sendall, (b"late",))
        sender.start()
        try:
            assert fastaccept._core.recv_some(a.fileno(), 64, 10.0) == b"late"
        finally:
            sender.join()


def test_recv_some_and_send_all_name_the_error():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="size"):
            fastaccept._core.recv_some(a.fileno(), -1)
        with pytest.raises(ValueError, match="timeout"):
            fastaccept._core.recv_some(a.fileno(), 1, -1.0)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as e:
        fastaccept._core.recv_some(r, 1)
    assert e.value.errno == errno.EBADF
    with pytest.raises(OSError) as e:
        fastaccept._core.send_all(w, [b"x"])
    assert e.value.errno == errno.EBADF


def test_send_all_sends_every_buffer_through_a_full_socket_buffer():
    a, b = socket.socketpair()
    with a, b:
        bufs = [b"x" * 1000, memoryview(b"y" * 300000), bytearray(b"z" * 7), b""]
        got = bytearray()

        def read_all():
            while len(got) < 301007:
                chunk = b.recv(65536)
                if not chunk:
                    return
                got.extend(chunk)
        reader = threading.Thread(target=read_all)
        reader.start()
        try:
            assert fastaccept._core.send_all(a.fileno(), bufs, 10.0) == 301007
        finally:
            reader.join(10.0)
        assert bytes(got) == b"x" * 1000 + b"y" * 300000 + b"z" * 7


def test_send_all_times_out_on_a_peer_that_does_not_read():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TimeoutError):
            fastaccept._core.send_all(a.fileno(), [b"x" * (64 << 20)], 0.05)


def test_send_all_last_ends_the_stream_with_the_bytes():
    """last=True: the bytes, then the FIN, before the sender closes: the
    peer reads them and then the end; the sender can send no more. Over
    TCP, where MSG_MORE holds the tail back for the FIN."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        b = socket.create_connection(listener.getsockname(), timeout=5.0)
        a, _ = listener.accept()
    with a, b:
        assert fastaccept._core.send_all(a.fileno(), [b"head\r\n", b"body"], 5.0, True) == 10
        b.settimeout(5.0)
        got = b""
        while len(got) < 10:
            chunk = b.recv(64)
            assert chunk, got
            got += chunk
        assert got == b"head\r\nbody"
        assert b.recv(64) == b""
        with pytest.raises(BrokenPipeError):
            fastaccept._core.send_all(a.fileno(), [b"more"], 5.0)


def test_send_all_last_names_the_error_of_its_shutdown():
    """Nothing to send: last=True is the shutdown(SHUT_WR) alone, whose
    failure is an OSError with its errno, as a failed sendmsg's is."""
    with socket.socket() as unconnected:
        with pytest.raises(OSError) as e:
            fastaccept._core.send_all(unconnected.fileno(), [], 5.0, True)
        assert e.value.errno == errno.ENOTCONN
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as e:
            fastaccept._core.send_all(w, [], 5.0, True)
        assert e.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)

"""Servers that drain the accept queue from C and run handlers in threads.

    Server        handler(conn, addr) called in a worker thread per connection
    TCPServer     socketserver-shaped: a RequestHandlerClass per connection

Both own one ``Acceptor`` (the GIL-free accept loop, see ``_core``) and a
fixed pool of worker threads that pop accepted connections from its ring.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import weakref
from typing import Any, Callable, Optional, Tuple, Type

from fastaccept._core import (DEFAULT_NAP_US, DEFAULT_SPIN_US, MAX_NAP_US, MAX_SHED_RESPONSE,
                              MAX_SPIN_US,
                              OVERLOAD_POLICIES, RING_MAX_CAPACITY, RING_MIN_CAPACITY,
                              Acceptor, close_fd)
from fastaccept.monitor import COUNTERS_SCOPE, TCPEXT_FIELDS, listen_queue, read_tcpext

__all__ = ["Server", "TCPServer", "Handler"]

log = logging.getLogger("fastaccept")

Handler = Callable[[socket.socket, Any], Any]

MAX_WORKERS = 4096
DEFAULT_MAX_BATCH = 16
DEFAULT_WORKER_NICE = 10
#: Seconds a connection may keep a worker waiting in one socket operation
#: (``conn.settimeout``). Finite by default: without it, a client that
#: connects and sends nothing (slowloris) holds a worker for ever, and
#: ``workers`` of them stop the server. 30 s is what users of other servers
#: expect (gunicorn's worker timeout is 30 s, nginx's client_header_timeout
#: 60 s) and is far above any honest client's pause on a live connection.
DEFAULT_TIMEOUT = 30.0
SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"
#: Upper bounds (us) of the queue-wait histogram's buckets: powers of 4 from
#: 1 us to 67 s. Powers of two fall on the C histogram's bucket edges, so the
#: cumulative counts are exact.
QUEUE_WAIT_BOUNDS_US = tuple(4 ** k for k in range(14))


def _kernel_somaxconn() -> Optional[int]:
    try:
        with open(SOMAXCONN_PATH) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _check_ring_size(ring_size: Any) -> int:
    _check_int("ring_size", ring_size, RING_MIN_CAPACITY, RING_MAX_CAPACITY)
    if ring_size & (ring_size - 1):
        raise ValueError(f"ring_size must be a power of two, got {ring_size}")
    return ring_size


def _check_timeout(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be None or a number, got {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout}")
    return float(timeout)


def _check_overload(overload: Any, shed_response: Any) -> Tuple[str, bytes]:
    if overload not in OVERLOAD_POLICIES:
        raise ValueError(f"overload must be 'queue' or 'shed', got {overload!r}")
    if not isinstance(shed_response, (bytes, bytearray, memoryview)):
        raise TypeError(f"shed_response must be bytes, got {type(shed_response).__name__}")
    response = bytes(shed_response)
    if len(response) > MAX_SHED_RESPONSE:
        raise ValueError(f"shed_response must be at most {MAX_SHED_RESPONSE} bytes, "
                         f"got {len(response)}")
    if response and overload != "shed":
        # Most likely a forgotten overload="shed": say so rather than never shed.
        raise ValueError("shed_response is sent only with overload='shed'")
    return overload, response


def _check_listening(sock: Any) -> socket.socket:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, got {type(sock).__name__}")
    if sock.fileno() < 0:
        raise ValueError("sock is closed")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"sock must be SOCK_STREAM, got {sock.type!r}")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError("sock must be bound and listening (call listen() first)")
    return sock


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """Return a socket bound to (host, port) and listening; nothing left open on error."""
    family, type_, proto, _, sockaddr = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    somaxconn = _kernel_somaxconn()
    if somaxconn is not None and backlog > somaxconn:
        log.warning("backlog %d is capped by net.core.somaxconn: the effective backlog is %d",
                    backlog, somaxconn)
    return sock


def _lower_priority(nice: int) -> None:
    """Make the calling worker thread yield the CPU to the accept loop.

    On Linux both settings apply to the calling thread only and need no
    privilege: SCHED_BATCH keeps a woken worker from preempting the running
    accept loop, and the nice value gives the loop the larger CPU share.
    During a burst, workers woken for the first connections would otherwise
    take the CPU from the loop while the kernel queue overflows. Best effort:
    a refusal leaves the thread as it was. ``nice`` 0 changes nothing.
    """
    if nice <= 0:
        return
    tid = threading.get_native_id()
    try:
        if hasattr(os, "SCHED_BATCH"):
            os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:
        log.debug("could not lower the worker's priority: %s", e)


class _WorkerCounts:
    """Counters written by one worker thread only, so no lock is needed.

    ``conn`` is the connection in the handler right now (None between
    connections, so the worker is busy exactly when it is set): a forked
    child closes its copy (see ``_after_fork``)."""

    __slots__ = ("handled", "errors", "conn")

    def __init__(self) -> None:
        self.handled = 0
        self.errors = 0
        self.conn: Optional[socket.socket] = None


class _OverloadWatch:
    """Decide which overload warnings to log: a counter rose, and its kind
    has not been warned about for ``every_s`` seconds.

    A rise that comes too soon is not lost: the next warning of that kind
    reports everything since the last one. Pure (time is passed in), so the
    rate limit is testable without a clock.
    """

    KINDS = ("ring_full_waits", "shed", "emfile_pauses", "listen_overflows")

    def __init__(self, every_s: float, now: float, values: dict) -> None:
        self.every_s = every_s
        self._base = {k: values.get(k) for k in self.KINDS}
        self._since = dict.fromkeys(self.KINDS, now)
        self._warned = dict.fromkeys(self.KINDS, float("-inf"))

    def check(self, now: float, values: dict) -> list:
        """Return [(kind, rise, seconds the rise spans)] to warn about now."""
        due = []
        for kind in self.KINDS:
            value, base = values.get(kind), self._base[kind]
            if value is None:
                continue
            if base is None or value < base:    # first reading, or a counter reset
                self._base[kind], self._since[kind] = value, now
                continue
            if value > base and now - self._warned[kind] >= self.every_s:
                due.append((kind, value - base, now - self._since[kind]))
                self._base[kind], self._since[kind], self._warned[kind] = value, now, now
        return due


def _overload_message(kind: str, rise: int, span_s: float, st: dict) -> str:
    if kind == "ring_full_waits":
        return (f"overload: the ring ({st.get('ring_capacity')} slots) was full {rise} times in "
                f"{span_s:.0f} s; connections waited in the kernel accept queue "
                f"({st.get('kernel_queue_depth')}/{st.get('kernel_backlog')} now) for a free "
                f"worker ({st.get('workers_busy')}/{st.get('workers')} busy)")
    if kind == "shed":
        return (f"overload: the ring ({st.get('ring_capacity')} slots) was full and {rise} "
                f"connections were answered with shed_response and closed in {span_s:.0f} s "
                f"({st.get('workers_busy')}/{st.get('workers')} workers busy)")
    if kind == "emfile_pauses":
        return (f"overload: accept4() ran out of file descriptors or memory and paused {rise} "
                f"times in {span_s:.0f} s (accept errors so far: {st.get('accept_errors')}); "
                "raise RLIMIT_NOFILE (ulimit -n) or serve connections faster")
    return (f"overload: the kernel refused connections: TcpExt ListenOverflows rose by {rise} in "
            f"{span_s:.0f} s (a {COUNTERS_SCOPE}-wide counter, other servers count too; this "
            f"server's accept queue is {st.get('kernel_queue_depth')}/"
            f"{st.get('kernel_backlog')})")


class Server:
    """Accept connections from C without the GIL; run handler(conn, addr) in workers.

    The listening socket is created (bound, listening) by the constructor, so
    ``address`` is known at once and a port in use raises there. ``start()``
    launches the accept loop and ``workers`` threads; ``shutdown()`` stops
    them and closes the listening socket.

    A monitor thread wakes every ``monitor_interval`` seconds (None: no
    thread) and logs a warning on the ``"fastaccept"`` logger when the ring
    was full, accept4() ran out of descriptors, or the kernel's
    ListenOverflows counter rose; at most one warning per kind per
    ``warn_interval`` seconds. Both are class attributes: set them on a
    subclass or on an instance before ``start()``.

    ``timeout`` (default ``DEFAULT_TIMEOUT``, 30 s; None: none) bounds every
    socket operation of a handler on its connection, so an idle or stalled
    client cannot hold a worker longer than that per operation.
    ``overload`` decides what a connection that finds the ring full gets:
    ``"queue"`` (the default) leaves it in the kernel backlog until a worker
    is free; ``"shed"`` accepts it anyway, sends ``shed_response`` (at most
    64 KiB, e.g. an HTTP 503; best effort) from C and closes it, counted in
    ``stats()["shed"]``.

    After ``os.fork()`` the child's copy of a started server is inert: the
    child has none of its threads. Right after the fork, the child closes its
    copies of the listening socket and of the connections queued or in other
    threads' handlers (so they close for their clients when the parent
    closes them), and ``shutdown()`` there returns True at once. Start new
    servers in the child instead; a server created but not started before
    the fork can be started in the child.
    """

    monitor_interval: Optional[float] = 1.0
    warn_interval: float = 30.0

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: Optional[socket.socket] = None,
        workers: int = 8,
        backlog: int = 2048,
        ring_size: int = 4096,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        max_batch: int = DEFAULT_MAX_BATCH,
        spin_us: int = DEFAULT_SPIN_US,
        worker_nice: int = DEFAULT_WORKER_NICE,
        overload: str = "queue",
        shed_response: bytes = b"",
        nap_us: int = DEFAULT_NAP_US,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self._workers_n = _check_int("workers", workers, 1, MAX_WORKERS)
        _check_int("backlog", backlog, 1, 2**31 - 1)
        self._ring_size = _check_ring_size(ring_size)
        self._max_batch = _check_int("max_batch", max_batch, 1, 65536)
        self._spin_us = _check_int("spin_us", spin_us, 0, MAX_SPIN_US)
        self._nap_us = _check_int("nap_us", nap_us, 0, MAX_NAP_US)
        self._worker_nice = _check_int("worker_nice", worker_nice, 0, 19)
        self._timeout = _check_timeout(timeout)
        self._overload, self._shed_response = _check_overload(overload, shed_response)
        self._handler = handler
        if sock is None:
            _check_int("port", port, 0, 65535)
            self._sock = _listen(host, port, backlog)
            somaxconn = _kernel_somaxconn()
            self._backlog: Optional[int] = (backlog if somaxconn is None
                                            else min(backlog, somaxconn))
        else:
            self._sock = _check_listening(sock)
            self._backlog = None
        kernel = listen_queue(self._sock)
        if kernel is not None:
            self._backlog = kernel[1]       # what the kernel applies, caps included
        self._family = self._sock.family
        self._type = self._sock.type
        self._proto = self._sock.proto
        self._address = self._sock.getsockname()

        self._lock = threading.Lock()
        # new -> running -> stopping -> closed; a forked child's copy of a
        # running or stopping server becomes "forked"
        self._state = "new"
        self._acceptor: Optional[Acceptor] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._accept_error: Optional[OSError] = None
        self._workers: list = []
        self._counts: list = []
        self._final_stats: Optional[dict] = None
        self._final_waits: Optional[Tuple[list, int]] = None
        self._monitor_thread: Optional[threading.Thread] = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()

    # -- public surface -------------------------------------------------

    @property
    def address(self) -> Any:
        """The bound address, with the port resolved (as getsockname() reports it)."""
        return self._address

    @property
    def socket(self) -> socket.socket:
        """The listening socket."""
        return self._sock

    def start(self) -> None:
        """Start the accept loop and the workers; return once the loop is running."""
        with self._lock:
            if self._state == "forked":
                raise RuntimeError("start() on a server inherited from the parent process "
                                   "(forked): create a new Server in the child")
            if self._state != "new":
                raise RuntimeError(f"start() on a server that is {self._state}")
            acceptor = Acceptor(self._sock.fileno(), self._ring_size, self._max_batch,
                                self._spin_us, self._overload, self._shed_response,
                                self._nap_us)
            self._acceptor = acceptor
            running = threading.Event()
            self._accept_thread = threading.Thread(
                target=self._accept_main, args=(acceptor, running),
                name="fastaccept-acceptor", daemon=True)
            try:
                for i in range(self._workers_n):
                    counts = _WorkerCounts()
                    t = threading.Thread(target=self._worker_main, args=(acceptor, counts),
                                         name=f"fastaccept-worker-{i}", daemon=True)
                    t.start()
                    self._counts.append(counts)
                    self._workers.append(t)
                self._accept_thread.start()
                if self.monitor_interval:
                    self._monitor_thread = threading.Thread(
                        target=self._monitor_main, args=(float(self.monitor_interval),),
                        name="fastaccept-monitor", daemon=True)
                    self._monitor_thread.start()
            except BaseException:
                self._stop_requested.set()      # ends the monitor thread, if it started
                acceptor.abort()
                self._join_all(time.monotonic() + 5.0)
                raise
            self._state = "running"
            _started_servers.add(self)
        running.wait()
        log.info("serving on %s (backlog %s) with %d workers and a ring of %d",
                 self._address, self._backlog, self._workers_n, self._ring_size)

    def serve_forever(self) -> None:
        """Start if needed and block until shutdown.

        In the main thread, SIGINT and SIGTERM trigger a graceful shutdown and
        this returns once it is done.
        """
        # The handlers go in before start(): once a client has been served,
        # a SIGINT must mean a graceful shutdown, not a KeyboardInterrupt.
        in_main = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main:
            def on_signal(signum: int, frame: Any) -> None:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                self._stop_requested.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            try:
                self.start()
            except RuntimeError:
                if self._state == "forked":
                    raise
                if self._state != "running":   # already shut down
                    self._stopped.wait()
                    return
            self._stop_requested.wait()
            self.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._accept_error is not None:
            raise self._accept_error

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Stop accepting, serve what was already queued, join every thread.

        Connections waiting in the kernel accept queue when this is called
        are still accepted and served; the listening socket is closed once
        the accept loop has returned. Return True if every thread finished
        within ``timeout`` seconds (None: wait as long as it takes), False
        if some workers were still running handlers (or this is called from
        a handler); stuck workers are logged, and the queued connections no
        worker had started are closed. After False, calling it again waits
        for those workers once more and frees the accept loop once they end.
        """
        timeout = _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop_requested.set()
        with self._lock:
            if self._state in ("closed", "forked"):     # forked: nothing runs here
                return True
            if self._state == "new":
                self._close_socket()
                self._state = "closed"
                self._stopped.set()
                return True
            self._state = "stopping"
            acceptor = self._acceptor
            assert acceptor is not None
            acceptor.stop()
            finished = self._join_all(deadline)
            self._close_socket()
            if finished:
                acceptor.close()
            else:
                dropped = acceptor.discard()
                if dropped:
                    log.warning("shutdown closed %d queued connections no worker was free "
                                "to serve", dropped)
            # Stay "stopping" while workers run on: the next shutdown() joins
            # them and closes the acceptor instead of reporting success.
            self._state = "closed" if finished else "stopping"
            self._stopped.set()
        if finished:
            self._log_final_stats()
        return finished

    def close(self) -> None:
        """Shut down if running; close the listening socket."""
        self.shutdown()

    def stats(self) -> dict:
        """Return a snapshot of the counters and of the kernel's accept queue.

        Cheap enough to call every second under full load (about 0.1 ms,
        most of it the kernel producing /proc/net/netstat; one getsockopt
        gives the queue), from any thread, and it never waits for a shutdown
        in progress. Keys are listed in the README ("API"); after shutdown
        the counters keep their final values and the kernel queue keys are
        None.
        """
        counts = list(self._counts)
        st = self._core_stats()
        st["handled"] = sum(c.handled for c in counts)
        st["handler_errors"] = sum(c.errors for c in counts)
        st["workers"] = len(counts)
        st["workers_busy"] = sum(1 for c in counts if c.conn is not None)
        kernel = listen_queue(self._sock)
        st["kernel_queue_depth"], st["kernel_backlog"] = kernel if kernel else (None, None)
        tcpext = read_tcpext(fields=TCPEXT_FIELDS)
        st["listen_overflows"] = tcpext.get("ListenOverflows")
        st["listen_drops"] = tcpext.get("ListenDrops")
        st["listen_counters_scope"] = COUNTERS_SCOPE
        return st

    def queue_wait_histogram(self) -> Tuple[list, int]:
        """Return ([(upper bound in us, cumulative count), ...], sum in us) of the queue waits.

        The queue wait of a connection is the time from accept4() to a worker
        taking it (the handler starts right after), in whole microseconds.
        Bounds are QUEUE_WAIT_BOUNDS_US and a last ``float("inf")`` whose
        count is the total: the shape of a Prometheus histogram.
        """
        acceptor = self._acceptor
        raw = None
        if acceptor is not None:
            try:
                raw = acceptor.queue_wait_histogram(QUEUE_WAIT_BOUNDS_US)
            except (ValueError, RuntimeError):      # closed: the final copy was saved first
                raw = self._final_waits
        if raw is None:
            raw = ([0] * (len(QUEUE_WAIT_BOUNDS_US) + 1), 0)
        cumulative, sum_us = raw
        bounds = [float(b) for b in QUEUE_WAIT_BOUNDS_US] + [float("inf")]
        return list(zip(bounds, cumulative)), sum_us

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<fastaccept.Server {self._state} on {self._address!r}>"

    def _core_stats(self) -> dict:
        """The acceptor's counters: live while it is open, else the copy saved
        just before it was closed. Takes no lock: acceptor.stats() runs with
        the GIL held, so close() cannot interleave with it, and the copy is
        saved before close()."""
        acceptor = self._acceptor
        if acceptor is not None:
            try:
                return acceptor.stats()
            except (ValueError, RuntimeError):      # closed (or used after fork)
                pass
        if self._final_stats is not None:
            return dict(self._final_stats)
        return {"accepted": 0, "accept_errors": {}, "emfile_pauses": 0, "shed": 0, "ring_depth": 0,
                "ring_high_water": 0, "ring_full_waits": 0, "ring_capacity": self._ring_size,
                "accept_batches": 0, "accept_naps": 0, "workers_parked": 0, "worker_wakeups": 0,
                "worker_sleeps": 0, "queue_wait_count": 0, "queue_wait_p50_us": 0,
                "queue_wait_p99_us": 0}

    def _log_final_stats(self) -> None:
        st = self.stats()
        log.info("stopped on %s: accepted %d, handled %d, handler errors %d, accept errors %s, "
                 "EMFILE pauses %d, ring high water %d/%d, ring full waits %d, "
                 "queue wait p50 %d us p99 %d us, shed %d", self._address, st["accepted"],
                 st["handled"], st["handler_errors"], st["accept_errors"] or "none",
                 st["emfile_pauses"], st["ring_high_water"], st["ring_capacity"],
                 st["ring_full_waits"], st["queue_wait_p50_us"], st["queue_wait_p99_us"],
                 st["shed"])

    def _after_fork(self) -> None:
        """Make this copy of a started server inert; runs in a forked child.

        The child has none of the server's threads, so nothing here waits:
        the lock and events a parent thread may have held at the fork are
        replaced, not acquired. The child's copies of the listening socket,
        of the queued connections and of the connections in other threads'
        handlers are closed: otherwise the port stays bound and a connection
        the parent closes stays open for its client while the child lives.
        The forking thread's own connection (a handler that forks to hand it
        over) is left to it. Closing copies never touches the parent's.
        """
        if self._state not in ("running", "stopping"):
            return          # a new server can still be started in the child
        self._state = "forked"
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._stop_requested.set()
        self._stopped = threading.Event()
        self._stopped.set()
        self._sock.close()
        me = threading.get_ident()
        for thread, counts in zip(self._workers, self._counts):
            conn = counts.conn
            if conn is not None and thread.ident != me:
                # detach: the dead thread's socket object must never close
                # this number again, once the child reuses it
                fd = conn.detach()
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        # A connection a worker was just taking or closing at the instant of
        # the fork is in neither place: its copy stays open in the child.
        if self._acceptor is not None:
            self._acceptor.close_inherited()

    # -- threads ----------------------------------------------------------

    def _monitor_main(self, interval: float) -> None:
        """Log rate-limited overload warnings; one wake-up per interval."""
        try:
            watch = _OverloadWatch(self.warn_interval, time.monotonic(), self.stats())
            while not self._stop_requested.wait(interval):
                st = self.stats()
                for kind, rise, span_s in watch.check(time.monotonic(), st):
                    log.warning("%s", _overload_message(kind, rise, span_s, st))
        except Exception:       # a monitor must never take the server down
            log.exception("the overload monitor stopped")

    def _accept_main(self, acceptor: Acceptor, running: threading.Event) -> None:
        running.set()
        try:
            acceptor.run()
        except OSError as e:
            self._accept_error = e
            log.error("accept loop stopped: %s", e)
            self._stop_requested.set()

    def _worker_main(self, acceptor: Acceptor, counts: _WorkerCounts) -> None:
        _lower_priority(self._worker_nice)
        pop = acceptor.pop
        handler = self._handler
        family, type_, proto = self._family, self._type, self._proto
        timeout = self._timeout
        while True:
            try:
                item = pop()
            except (ValueError, RuntimeError):
                return      # the acceptor was closed under a late worker
            if item is None:
                return
            fd, addr, _ = item
            try:
                conn = socket.socket(family, type_, proto, fd)
            except OSError:
                os.close(fd)
                counts.errors += 1
                continue
            counts.conn = conn
            try:
                if timeout is not None:
                    conn.settimeout(timeout)
                handler(conn, addr)
            except BaseException:
                # Not only Exception: a KeyboardInterrupt or SystemExit raised
                # by a handler would otherwise end this worker silently and
                # shrink the pool. Stopping the server is shutdown()'s job.
                counts.errors += 1
                log.exception("handler raised for connection from %s", addr)
            finally:
                fd = conn.detach()      # -1 if the handler closed or detached it
                if fd >= 0:
                    try:
                        close_fd(fd)
                    except OSError as e:    # e.g. the handler os.close()d the number
                        counts.errors += 1
                        log.error("closing the connection from %s failed: %s", addr, e)
                counts.conn = None
                counts.handled += 1

    def _join_all(self, deadline: Optional[float]) -> bool:
        """Join the accept thread, then the workers, by deadline. True if all joined."""
        me = threading.current_thread()
        acceptor = self._acceptor
        t = self._accept_thread
        if t is not None and t.ident is not None and t is not me:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive() and acceptor is not None:
                acceptor.abort()    # stop waiting for ring space; return now
                t.join()
        stuck = []
        for w in self._workers:
            if w is me or w.ident is None:
                continue
            w.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                stuck.append(w.name)
        m = self._monitor_thread
        if m is not None and m is not me and m.ident is not None:
            m.join()    # it wakes at once: _stop_requested is set before any join
        if acceptor is not None:
            self._final_stats = acceptor.stats()
            self._final_waits = acceptor.queue_wait_histogram(QUEUE_WAIT_BOUNDS_US)
        if stuck:
            log.warning("shutdown timed out; workers still in a handler: %s", ", ".join(stuck))
            return False
        return me not in self._workers

    def _close_socket(self) -> None:
        self._sock.close()


#: Servers started in this process, for the fork handler (weak: a server
#: nobody references is gone in the child too).
_started_servers: "weakref.WeakSet[Server]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for server in list(_started_servers):
        try:
            server._after_fork()
        except Exception:   # the child must get going whatever happens here
            log.exception("cleaning up an inherited server after fork failed")


os.register_at_fork(after_in_child=_after_fork_in_child)


class TCPServer:
    """A drop-in for ``socketserver.ThreadingTCPServer`` backed by fastaccept.

    Same constructor shape and method names (``server_bind``,
    ``server_activate``, ``verify_request``, ``process_request``,
    ``finish_request``, ``shutdown_request``, ``close_request``,
    ``handle_error``), so a subclass overrides one step. Requests run on a
    fixed pool of ``workers`` threads instead of a thread per request.
    """

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = 2048
    allow_reuse_address = True
    allow_reuse_port = False

    def __init__(
        self,
        server_address: Tuple[Any, ...],
        RequestHandlerClass: Type[Any],
        bind_and_activate: bool = True,
        *,
        workers: int = 8,
        ring_size: int = 4096,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        overload: str = "queue",
        shed_response: bytes = b"",
    ) -> None:
        _check_int("workers", workers, 1, MAX_WORKERS)
        _check_ring_size(ring_size)
        _check_timeout(timeout)
        _check_overload(overload, shed_response)
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._options = dict(workers=workers, ring_size=ring_size, timeout=timeout,
                             overload=overload, shed_response=shed_response)
        self._server: Optional[Server] = None
        self._server_lock = threading.Lock()
        self._shut_down = False
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def server_bind(self) -> None:
        """Bind the socket to server_address (with SO_REUSEADDR when allowed)."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listen with request_queue_size as the backlog."""
        self.socket.listen(self.request_queue_size)

    def fileno(self) -> int:
        """Return the listening socket's file descriptor."""
        return self.socket.fileno()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until shutdown(); poll_interval is accepted for compatibility only."""
        with self._server_lock:
            if self._shut_down:
                return
            if self._server is None:
                self._server = Server(self._process, sock=self.socket, **self._options)
            server = self._server
        server.serve_forever()

    def shutdown(self) -> None:
        """Stop serve_forever() and wait for it, serving what is already queued."""
        with self._server_lock:
            self._shut_down = True
            server = self._server
        if server is not None:
            server.shutdown()

    def server_close(self) -> None:
        """Close the listening socket."""
        self.shutdown()
        self.socket.close()

    def stats(self) -> dict:
        """The underlying Server's counters (empty before serve_forever)."""
        return self._server.stats() if self._server is not None else {}

    def queue_wait_histogram(self) -> Tuple[list, int]:
        """The underlying Server's queue-wait histogram (all zero before serve_forever)."""
        if self._server is not None:
            return self._server.queue_wait_histogram()
        bounds = [float(b) for b in QUEUE_WAIT_BOUNDS_US] + [float("inf")]
        return [(b, 0) for b in bounds], 0

    # socketserver's per-request steps, called in a worker thread.
    def _process(self, request: socket.socket, client_address: Any) -> None:
        if self.verify_request(request, client_address):
            self.process_request(request, client_address)
        else:
            self.shutdown_request(request)

    def verify_request(self, request: socket.socket, client_address: Any) -> bool:
        """Return False to refuse the request; the default accepts all."""
        return True

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """Run finish_request, report errors with handle_error, then shut down the request."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        """Instantiate RequestHandlerClass, which handles the request."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: socket.socket) -> None:
        """Half-close the write side, then close the request."""
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_request(request)

    def close_request(self, request: socket.socket) -> None:
        """Close the request socket."""
        request.close()

    def handle_error(self, request: socket.socket, client_address: Any) -> None:
        """Log the exception being handled (logger "fastaccept")."""
        log.exception("exception while handling request from %s", client_address)

    def __enter__(self) -> "TCPServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server_close()

"""``Server``: the accept loop in C, a pool of worker threads, and their steps.

A ``Server`` owns one ``Acceptor`` (the GIL-free accept loop, see ``_core``)
and a fixed pool of worker threads that pop connections from its ring. A
connection reaches a worker only when it has work for it: by default it
waits in C until its first bytes arrive, and a handler that returns
``KEEP`` gives it back to C to wait for its next request. What a worker does
with a connection is a named step, as in socketserver, so that ``TCPServer``
and the HTTP server override one step and keep the lifecycle:

    process_connection(conn, addr)   serve one connection (the handler); its
                                     result KEEP keeps the connection
    handle_error(conn, addr)         an exception escaped process_connection
    service_actions()                called by serve_forever() every poll_interval

Lifecycle: new -> running -> stopping -> closed (a forked child's copy of a
running server becomes "forked"; see ``_fork``). ``TCPServer`` may go from
running back to new (socketserver's ``shutdown()`` then ``serve_forever()``).
"""
from __future__ import annotations

import logging
import os
import signal
import socket as _socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from fastaccept import _fork, _kernel, _options, _stats
from fastaccept._core import STATS_KEYS, Acceptor
from fastaccept._options import (DEFAULT_BACKLOG, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BATCH,
                                 DEFAULT_MAX_CONNECTIONS, DEFAULT_NAP_US, DEFAULT_PROXY_TIMEOUT,
                                 DEFAULT_RING_SIZE, DEFAULT_SPIN_US, DEFAULT_TIMEOUT,
                                 DEFAULT_WORKER_NICE, DEFAULT_WORKERS, MAX_BATCH,
                                 MAX_CONNECTIONS, MAX_NAP_US, MAX_SPIN_US, MAX_WORKERS)
from fastaccept._stats import QUEUE_WAIT_BOUNDS_US, WorkerCounts

__all__ = ["Server", "Handler", "KEEP"]

log = logging.getLogger("fastaccept")

Handler = Callable[[_socket.socket, Any], Any]

#: Values of ``accept_priority``.
ACCEPT_PRIORITIES = ("realtime", "normal")



class _Keep:
    """The type of KEEP. ``rest``: bytes already read from the connection
    past the request just served (an HTTP server's next pipelined request),
    which the accept loop parses first; KEEP itself has none."""

    __slots__ = ("rest",)

    def __init__(self, rest: Optional[bytes] = None) -> None:
        self.rest = rest

    def __repr__(self) -> str:
        return "fastaccept.KEEP" if self.rest is None else f"fastaccept.KEEP(rest={self.rest!r})"


#: What a handler returns to keep its connection open: the server gives it
#: back to the accept loop, which waits in C (no thread) for its next request
#: and then calls the handler again, in whatever worker is free. Closed by C
#: after ``idle_timeout`` if nothing comes.
KEEP = _Keep()
#: What process_connection returns when it has taken the connection over
#: (TCPServer: socketserver's steps close it): the worker then neither
#: closes nor keeps it, and only counts it out.
_TAKEN = object()


def _lower_priority(nice: int) -> None:
    """Make the calling worker thread yield the CPU to the accept loop.

    On Linux both settings apply to the calling thread only and need no
    privilege. SCHED_BATCH, always: a woken worker does not preempt the
    running thread (the accept loop in a burst, another worker between
    connections), yet keeps a nice-0 thread's share of the CPU against the
    machine's other processes. ``nice`` above 0 also gives the loop and every
    neighbour a larger share (docs/design.md section 4: the bench's bursts
    do not need it). Best effort: a refusal leaves the thread as it was.
    """
    tid = threading.get_native_id()
    try:
        if hasattr(os, "SCHED_BATCH"):
            os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        if nice > 0:
            os.setpriority(os.PRIO_PROCESS, tid,
                           min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:
        log.debug("could not lower the worker's priority: %s", e)


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

    ``dispatch`` is where a new connection goes: ``"readable"`` (the
    default) keeps it in C until its first bytes arrive, so a client that
    connects and sends nothing never holds a worker, and closes it after
    ``idle_timeout`` seconds (None: never); ``"accept"`` hands it to a worker
    at once, for protocols where the server speaks first. A handler that
    returns ``KEEP`` gives its connection back to wait in C the same way.
    At most ``max_connections`` connections are open at once (waiting in C,
    queued, or in a handler); beyond, the loop stops accepting and the
    kernel backlog holds the rest. At a stop, connections waiting in C get
    ``stop_grace`` seconds (default 0) for their next request, which is
    served, before the idle ones are closed with a FIN: with it a client
    that sends on a kept connection just as the server stops (a reload) is
    answered instead of reset. ``shared_listener=True`` says the listening
    socket is shared with other processes that accept from it too (each
    loop then registers it with EPOLLEXCLUSIVE: one wakes per connection).

    ``accept_priority="realtime"`` (the default) runs the accept loop's
    thread under SCHED_FIFO at priority 1 where the process may (root,
    CAP_SYS_NICE, or RLIMIT_RTPRIO >= 1), so its wake-ups preempt whatever
    runs on its CPU instead of waiting up to a scheduler tick while a burst
    fills the backlog; ``stats()["accept_realtime"]`` says whether it was
    granted (refused, the loop runs as a normal thread with a short time
    slice). ``"normal"`` never asks.

    ``proxy_protocol=True`` puts the server behind a load balancer that
    sends the PROXY protocol (HAProxy's ``send-proxy``/``send-proxy-v2``,
    nginx's ``proxy_protocol on`` in a ``stream`` block): every connection
    must start with a v1 or v2 header, which C reads before anything else
    (at most ``proxy_timeout`` seconds after the accept, default 3; None:
    no deadline), and ``addr`` is then the client's address the header
    carries, not the balancer's (the balancer's stays for a LOCAL header,
    as health checks send). Only the header is read: the client's bytes
    reach the handler intact. A connection without a valid header in time
    (a direct client too) is closed with a FIN and no answer, counted in
    ``stats()["proxy_rejected"]`` (by error) or ``["proxy_timeouts"]``.

    ``timeout`` (default ``DEFAULT_TIMEOUT``, 30 s; None: none) bounds every
    socket operation of a handler on its connection, so a stalled client
    cannot hold a worker longer than that per operation.
    ``overload`` decides what a connection that finds the ring full gets:
    ``"queue"`` (the default) leaves it in the kernel backlog until a worker
    is free; ``"shed"`` accepts it anyway, sends ``shed_response`` (at most
    64 KiB, e.g. an HTTP 503; best effort) from C and closes it, counted in
    ``stats()["shed"]``.

    After ``os.fork()`` the child's copy of a started server is inert (see
    ``fastaccept._fork``): ``shutdown()`` there returns True at once and
    ``start()`` raises. Start new servers in the child instead; a server
    created but not started before the fork can be started in the child.
    """

    monitor_interval: Optional[float] = 1.0
    warn_interval: float = 30.0

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: Optional[_socket.socket] = None,
        workers: int = DEFAULT_WORKERS,
        backlog: int = DEFAULT_BACKLOG,
        ring_size: int = DEFAULT_RING_SIZE,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        max_batch: int = DEFAULT_MAX_BATCH,
        spin_us: int = DEFAULT_SPIN_US,
        worker_nice: int = DEFAULT_WORKER_NICE,
        overload: str = "queue",
        shed_response: bytes = b"",
        nap_us: int = DEFAULT_NAP_US,
        dispatch: str = "readable",
        idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        stop_grace: float = 0.0,
        shared_listener: bool = False,
        accept_priority: str = "realtime",
        proxy_protocol: bool = False,
        proxy_timeout: Optional[float] = DEFAULT_PROXY_TIMEOUT,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        _options.check_int("backlog", backlog, 1, 2**31 - 1)
        self._configure(workers=workers, ring_size=ring_size, timeout=timeout,
                        max_batch=max_batch, spin_us=spin_us, worker_nice=worker_nice,
                        overload=overload, shed_response=shed_response, nap_us=nap_us,
                        dispatch=dispatch, idle_timeout=idle_timeout,
                        max_connections=max_connections, stop_grace=stop_grace,
                        shared_listener=shared_listener, accept_priority=accept_priority,
                        proxy_protocol=proxy_protocol, proxy_timeout=proxy_timeout)
        self._handler: Optional[Handler] = handler
        if sock is None:
            _options.check_int("port", port, 0, 65535)
            self._adopt(_options.listen(host, port, backlog))
        else:
            self._adopt(_options.check_listening(sock))

    def _configure(self, *, workers: int, ring_size: int, timeout: Optional[float],
                   max_batch: int = DEFAULT_MAX_BATCH, spin_us: int = DEFAULT_SPIN_US,
                   worker_nice: int = DEFAULT_WORKER_NICE, overload: str = "queue",
                   shed_response: bytes = b"", nap_us: int = DEFAULT_NAP_US,
                   end_listen: str = "release", dispatch: str = "readable",
                   idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT,
                   max_connections: int = DEFAULT_MAX_CONNECTIONS, stop_grace: float = 0.0,
                   shared_listener: bool = False, accept_priority: str = "realtime",
                   proxy_protocol: bool = False,
                   proxy_timeout: Optional[float] = DEFAULT_PROXY_TIMEOUT) -> None:
        """Check and keep the options; set up the state of a server not started."""
        self._workers_n = _options.check_int("workers", workers, 1, MAX_WORKERS)
        self._ring_size = _options.check_ring_size(ring_size)
        self._max_batch = _options.check_int("max_batch", max_batch, 1, MAX_BATCH)
        self._spin_us = _options.check_int("spin_us", spin_us, 0, MAX_SPIN_US)
        self._nap_us = _options.check_int("nap_us", nap_us, 0, MAX_NAP_US)
        self._worker_nice = _options.check_int("worker_nice", worker_nice, 0, 19)
        self._timeout = _options.check_timeout(timeout)
        self._overload, self._shed_response = _options.check_overload(overload, shed_response)
        self._dispatch = _options.check_dispatch(dispatch)
        self._idle_timeout = _options.check_idle_timeout(idle_timeout)
        self._max_connections = _options.check_int("max_connections", max_connections, 1,
                                                   MAX_CONNECTIONS)
        self._end_listen = end_listen
        grace = _options.check_timeout(stop_grace, "stop_grace")
        self._stop_grace = grace if grace else None
        if not isinstance(shared_listener, bool):
            raise TypeError(f"shared_listener must be a bool, got {type(shared_listener).__name__}")
        self._shared_listener = shared_listener
        if accept_priority not in ACCEPT_PRIORITIES:
            raise ValueError(f"accept_priority must be 'realtime' or 'normal', "
                             f"got {accept_priority!r}")
        self._accept_priority = accept_priority
        self._proxy_protocol, self._proxy_timeout = _options.check_proxy(proxy_protocol,
                                                                         proxy_timeout)
        self._handler = None
        self._sock: _socket.socket = None  # type: ignore[assignment]  # set by _adopt
        self._address: Any = None
        self._backlog: Optional[int] = None
        self._lock = threading.Lock()
        # new -> running -> stopping -> closed; "forked" in a forked child
        self._state = "new"
        self._counts: List[WorkerCounts] = []
        self._reset_run()
        self._final_stats: Optional[Dict[str, Any]] = None
        self._final_waits: Optional[Tuple[List[int], int]] = None

    def _reset_run(self) -> None:
        """Forget the threads and the acceptor of a run, for a (re)start.
        The workers' counters stay, for stats(), until the next start()."""
        self._acceptor: Optional[Acceptor] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._accept_error: Optional[OSError] = None
        self._workers: List[threading.Thread] = []

        self._monitor_thread: Optional[threading.Thread] = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()

    def _adopt(self, sock: _socket.socket) -> None:
        """Take the listening socket: the server owns (and closes) it from now on."""
        self._sock = sock
        kernel = _kernel.listen_queue(sock)
        self._backlog = kernel[1] if kernel is not None else None  # what the kernel applies
        self._family, self._type, self._proto = sock.family, sock.type, sock.proto
        self._address = sock.getsockname()

    # -- public surface -------------------------------------------------

    @property
    def address(self) -> Any:
        """The bound address, with the port resolved (as getsockname() reports it)."""
        return self._address

    @property
    def socket(self) -> _socket.socket:
        """The listening socket."""
        return self._sock

    def start(self) -> None:
        """Start the accept loop and the workers; return once the loop is running.

        If a thread cannot be started, everything started so far is stopped
        and freed and the error is raised; the server is then as before the
        call, and start() may be tried again."""
        with self._lock:
            if self._state == "forked":
                raise RuntimeError("start() on a server inherited from the parent process "
                                   "(forked): create a new Server in the child")
            if self._state != "new":
                raise RuntimeError(f"start() on a server that is {self._state}")
            acceptor = Acceptor(self._sock.fileno(), self._ring_size, self._max_batch,
                                self._spin_us, self._overload, self._shed_response,
                                self._nap_us, self._end_listen, self._dispatch,
                                self._idle_timeout, self._max_connections,
                                exclusive=self._shared_listener, grace=self._stop_grace,
                                realtime=self._accept_priority == "realtime",
                                proxy=self._proxy_protocol, proxy_timeout=self._proxy_timeout,
                                **self._acceptor_options())
            self._acceptor = acceptor
            self._counts = []
            running = threading.Event()
            try:
                for i in range(self._workers_n):
                    counts = WorkerCounts()
                    t = threading.Thread(target=self._worker_main, args=(acceptor, counts),
                                         name=f"fastaccept-worker-{i}", daemon=True)
                    t.start()
                    self._counts.append(counts)
                    self._workers.append(t)
                self._accept_thread = threading.Thread(
                    target=self._accept_main, args=(acceptor, running),
                    name="fastaccept-acceptor", daemon=True)
                self._accept_thread.start()
                if self.monitor_interval:
                    self._monitor_thread = threading.Thread(
                        target=self._monitor_main, args=(float(self.monitor_interval),),
                        name="fastaccept-monitor", daemon=True)
                    self._monitor_thread.start()
            except BaseException:
                self._abandon_start(acceptor)
                raise
            self._state = "running"
            _fork.track(self)
        running.wait()
        log.info("serving on %s (backlog %s) with %d workers and a ring of %d",
                 self._address, self._backlog, self._workers_n, self._ring_size)

    def _acceptor_options(self) -> Dict[str, Any]:
        """More keyword arguments of the Acceptor (the HTTP server's: its parser)."""
        return {}

    def _abandon_start(self, acceptor: Acceptor) -> None:
        """Undo a start() that failed half way; runs with the lock held."""
        self._stop_requested.set()          # ends the monitor thread, if it started
        acceptor.abort(keep_listening=True)     # returns at once, the workers too
        for t in [self._accept_thread, self._monitor_thread, *self._workers]:
            if t is not None and t.ident is not None:
                t.join()
        # Whatever the loop accepted and no worker took is closed here; the
        # listener still listens, for the next start().
        acceptor.discard()
        acceptor.close()
        self._reset_run()       # as before start(): it may be called again

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Start if needed and block until shutdown; call service_actions()
        every ``poll_interval`` seconds meanwhile.

        In the main thread, SIGINT and SIGTERM trigger a graceful shutdown and
        this returns once it is done. If start() fails, its error is raised.
        """
        poll = _options.check_seconds("poll_interval", poll_interval, 86400.0)
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
            if not self._begin_serving():
                return
            try:
                stop = self._stop_requested
                try:
                    while not stop.wait(poll):
                        self.service_actions()
                finally:
                    self._finish_serving()
            finally:
                self._end_serving()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._accept_error is not None:
            raise self._accept_error

    def _begin_serving(self) -> bool:
        """serve_forever()'s start: False if there is nothing to serve."""
        with self._lock:
            state = self._state
        if state == "forked":
            raise RuntimeError("serve_forever() on a server inherited from the parent process "
                               "(forked): create a new Server in the child")
        if state == "new":
            self.start()
            return True
        return state == "running"

    def _finish_serving(self) -> None:
        """serve_forever()'s end, once a stop was requested."""
        self.shutdown()

    def _end_serving(self) -> None:
        """serve_forever() returns (after _finish_serving, or a start() that failed)."""

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Stop accepting, serve what was already queued, join every thread.

        Connections waiting in the kernel accept queue when this is called
        are still accepted and served; then the server lets go of the
        listening socket at once, so later clients are refused. Return True
        if every thread finished within ``timeout`` seconds (None: wait as
        long as it takes), False if some workers were still running
        handlers, or if this is called from a handler: then the stop goes on
        without waiting (the caller's own worker must return for it to end)
        and a later shutdown() from another thread, or serve_forever(),
        finishes it. Stuck workers are logged, and the queued connections no
        worker had started are closed. After False, calling it again waits
        for those workers once more and frees the accept loop once they end.
        """
        timeout = _options.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = self._stop_run(deadline)
        if finished:
            with self._lock:
                if self._state == "stopped":
                    self._sock.close()
                    self._state = "closed"
        return finished

    def close(self) -> None:
        """Shut down if running; close the listening socket."""
        self.shutdown()

    # -- steps, called in a worker thread (override in a subclass) -------

    def process_connection(self, conn: _socket.socket, addr: Any) -> Any:
        """Serve one connection: run the handler; return what it returned.

        The worker then closes ``conn``, unless this returned ``KEEP`` (the
        connection goes back to C to wait for its next request) or the
        handler called ``conn.detach()`` (it is then the handler's). An
        exception propagates to ``handle_error``, and the connection is
        closed."""
        if self._timeout is not None:
            conn.settimeout(self._timeout)
        assert self._handler is not None
        return self._handler(conn, addr)

    def handle_error(self, conn: _socket.socket, addr: Any) -> None:
        """Called (in the worker) with the exception that escaped
        process_connection: log it with the traceback on "fastaccept"."""
        log.exception("handler raised for connection from %s", addr)

    def service_actions(self) -> None:
        """Called by serve_forever() every poll_interval; does nothing."""

    def _unhandled(self, conn: _socket.socket, addr: Any) -> None:
        """What a worker does with an exception that escaped process_connection."""
        self.handle_error(conn, addr)

    # -- observability ----------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Return a snapshot of the counters and of the kernel's accept queue.

        Cheap enough to call every second under full load (about 0.1 ms,
        most of it the kernel producing /proc/net/netstat; one getsockopt
        gives the queue), from any thread, and it never waits for a shutdown
        in progress. Keys are listed in the README ("API"); after shutdown
        the counters keep their final values and the kernel queue keys are
        None.
        """
        return _stats.assemble(self._core_stats(), list(self._counts), self._sock)

    def queue_wait_histogram(self) -> Tuple[List[Tuple[float, int]], int]:
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
        elif self._final_waits is not None:
            raw = self._final_waits
        return _stats.histogram_buckets(raw)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<fastaccept.{type(self).__name__} {self._state} on {self._address!r}>"

    def _core_stats(self) -> Dict[str, Any]:
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
        return _stats.idle_core_stats(self._ring_size, STATS_KEYS)

    def _log_final_stats(self) -> None:
        st = self.stats()
        log.info("stopped on %s: accepted %d, handled %d, handler errors %d, accept errors %s, "
                 "EMFILE pauses %d, ring high water %d/%d, ring full waits %d, "
                 "queue wait p50 %d us p99 %d us, shed %d", self._address, st["accepted"],
                 st["handled"], st["handler_errors"], st["accept_errors"] or "none",
                 st["emfile_pauses"], st["ring_high_water"], st["ring_capacity"],
                 st["ring_full_waits"], st["queue_wait_p50_us"], st["queue_wait_p99_us"],
                 st["shed"])

    # -- stopping ---------------------------------------------------------

    def _stop_run(self, deadline: Optional[float]) -> bool:
        """Stop the accept loop and join the threads of this run by deadline.

        The state becomes "stopped" (the acceptor closed, the socket still
        open) when everything finished; True then, or when nothing runs."""
        self._stop_requested.set()
        me = threading.current_thread()
        if me in self._workers:
            # From a handler: joining would wait for this very thread, and
            # a loop waiting for ring space would wait for it too. The lock
            # may be held by a thread joining this one: never wait for it.
            acceptor = self._acceptor
            if acceptor is not None:
                acceptor.stop()
                if self._lock.acquire(blocking=False):
                    if self._state == "running":
                        self._state = "stopping"
                    self._lock.release()
            return False
        with self._lock:
            if self._state in ("closed", "forked", "stopped"):
                return True
            if self._state == "new":
                self._state = "stopped"
                self._stopped.set()
                return True
            self._state = "stopping"
            acceptor = self._acceptor
            assert acceptor is not None
            acceptor.stop()
            finished = self._join_all(deadline)
            if finished:
                acceptor.close()
                self._state = "stopped"
            else:
                dropped = acceptor.discard()
                if dropped:
                    log.warning("shutdown closed %d queued connections no worker was free "
                                "to serve", dropped)
                # Stay "stopping" while workers run on: the next shutdown()
                # joins them and closes the acceptor instead of reporting success.
            self._stopped.set()
        if finished:
            self._log_final_stats()
        return finished

    # -- threads ----------------------------------------------------------

    def _monitor_main(self, interval: float) -> None:
        """Log rate-limited overload warnings; one wake-up per interval."""
        try:
            watch = _stats.OverloadWatch(self.warn_interval, time.monotonic(), self.stats())
            while not self._stop_requested.wait(interval):
                st = self.stats()
                for kind, rise, span_s in watch.check(time.monotonic(), st):
                    log.warning("%s", _stats.overload_message(kind, rise, span_s, st))
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

    @staticmethod
    def _popped(acceptor: Acceptor) -> Iterator[Tuple[int, Any, Any]]:
        """A worker's entries, (fd, addr, request), until the ring is closed
        and empty."""
        pop = acceptor.pop_entry
        while True:
            try:
                item = pop()
            except (ValueError, RuntimeError):
                return      # the acceptor was closed under a late worker
            if item is None:
                return
            yield item

    def _worker_main(self, acceptor: Acceptor, counts: WorkerCounts) -> None:
        _lower_priority(self._worker_nice)
        finish, keep = acceptor.finish, acceptor.keep
        # (conn, addr), or (conn, addr, request) for the HTTP server's step
        process: Callable[..., Any] = self.process_connection
        family, type_, proto = self._family, self._type, self._proto
        for fd, addr, request in self._popped(acceptor):
            try:
                conn = _socket.socket(family, type_, proto, fd)
            except OSError:
                finish(fd)
                counts.errors += 1
                continue
            counts.conn = conn
            result = None
            try:
                # the request the accept loop parsed, for the HTTP server
                result = process(conn, addr) if request is None else process(conn, addr, request)
            except BaseException:
                # Not only Exception: a KeyboardInterrupt or SystemExit raised
                # by a handler would otherwise end this worker silently and
                # shrink the pool. Stopping the server is shutdown()'s job.
                counts.errors += 1
                try:
                    self._unhandled(conn, addr)
                except BaseException:
                    log.exception("handle_error raised for connection from %s", addr)
            finally:
                counts.conn = None
                counts.handled += 1
            # -1 if the handler closed or detached it (or the step took it):
            # then it is only counted out
            fd = -1 if result is _TAKEN else conn.detach()
            try:
                if result.__class__ is _Keep:
                    keep(fd, result.rest)
                else:
                    finish(fd)
            except (ValueError, RuntimeError):
                # the acceptor is gone (used after fork): close it ourselves
                if fd >= 0:
                    os.close(fd)
                return

    def _join_all(self, deadline: Optional[float]) -> bool:
        """Join the accept thread, then the workers, by deadline. True if all joined."""
        acceptor = self._acceptor
        t = self._accept_thread
        if t is not None and t.ident is not None:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive() and acceptor is not None:
                acceptor.abort()    # stop waiting for ring space; return now
                t.join()
        stuck = []
        for w in self._workers:
            if w.ident is None:
                continue
            w.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                stuck.append(w.name)
        m = self._monitor_thread
        if m is not None and m.ident is not None:
            m.join()    # it wakes at once: _stop_requested is set before any join
        if acceptor is not None:
            self._final_stats = acceptor.stats()
            self._final_waits = acceptor.queue_wait_histogram(QUEUE_WAIT_BOUNDS_US)
        if stuck:
            log.warning("shutdown timed out; workers still in a handler: %s", ", ".join(stuck))
            return False
        return True

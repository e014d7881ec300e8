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
from typing import Any, Callable, Optional, Tuple, Type, Union

from fastaccept._core import RING_MAX_CAPACITY, RING_MIN_CAPACITY, Acceptor

__all__ = ["Server", "TCPServer", "Handler"]

log = logging.getLogger("fastaccept")

Handler = Callable[[socket.socket, Any], Any]

MAX_WORKERS = 4096
DEFAULT_MAX_BATCH = 16
SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


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


class _WorkerCounts:
    """Counters written by one worker thread only, so no lock is needed."""

    __slots__ = ("handled", "errors", "busy")

    def __init__(self) -> None:
        self.handled = 0
        self.errors = 0
        self.busy = False


class Server:
    """Accept connections from C without the GIL; run handler(conn, addr) in workers.

    The listening socket is created (bound, listening) by the constructor, so
    ``address`` is known at once and a port in use raises there. ``start()``
    launches the accept loop and ``workers`` threads; ``shutdown()`` stops
    them and closes the listening socket.
    """

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
        timeout: Optional[float] = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self._workers_n = _check_int("workers", workers, 1, MAX_WORKERS)
        _check_int("backlog", backlog, 1, 2**31 - 1)
        self._ring_size = _check_ring_size(ring_size)
        self._max_batch = _check_int("max_batch", max_batch, 1, 65536)
        self._timeout = _check_timeout(timeout)
        self._handler = handler
        if sock is None:
            _check_int("port", port, 0, 65535)
            self._sock = _listen(host, port, backlog)
        else:
            self._sock = _check_listening(sock)
        self._family = self._sock.family
        self._type = self._sock.type
        self._proto = self._sock.proto
        self._address = self._sock.getsockname()

        self._lock = threading.Lock()
        self._state = "new"             # new -> running -> stopping -> closed
        self._acceptor: Optional[Acceptor] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._accept_error: Optional[OSError] = None
        self._workers: list = []
        self._counts: list = []
        self._final_stats: Optional[dict] = None
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
            if self._state != "new":
                raise RuntimeError(f"start() on a server that is {self._state}")
            acceptor = Acceptor(self._sock.fileno(), self._ring_size, self._max_batch)
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
            except BaseException:
                acceptor.abort()
                self._join_all(time.monotonic() + 5.0)
                raise
            self._state = "running"
        running.wait()
        log.info("serving on %s with %d workers and a ring of %d",
                 self._address, self._workers_n, self._ring_size)

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
            if self._state == "closed":
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
        return finished

    def close(self) -> None:
        """Shut down if running; close the listening socket."""
        self.shutdown()

    def stats(self) -> dict:
        """Return a snapshot of the counters (cheap enough to call often)."""
        counts = list(self._counts)
        handled = sum(c.handled for c in counts)
        errors = sum(c.errors for c in counts)
        with self._lock:
            if self._final_stats is not None:
                st = dict(self._final_stats)
            elif self._acceptor is not None:
                st = self._acceptor.stats()
            else:
                st = {"accepted": 0, "accept_errors": {}, "emfile_pauses": 0, "ring_depth": 0,
                      "ring_high_water": 0, "ring_full_waits": 0}
        st["handled"] = handled
        st["handler_errors"] = errors
        st["workers"] = len(counts)
        st["workers_busy"] = sum(1 for c in counts if c.busy)
        return st

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<fastaccept.Server {self._state} on {self._address!r}>"

    # -- threads ----------------------------------------------------------

    def _accept_main(self, acceptor: Acceptor, running: threading.Event) -> None:
        running.set()
        try:
            acceptor.run()
        except OSError as e:
            self._accept_error = e
            log.error("accept loop stopped: %s", e)
            self._stop_requested.set()

    def _worker_main(self, acceptor: Acceptor, counts: _WorkerCounts) -> None:
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
            counts.busy = True
            try:
                if timeout is not None:
                    conn.settimeout(timeout)
                handler(conn, addr)
            except BaseException:   # a handler never kills its worker
                counts.errors += 1
                log.exception("handler raised for connection from %s", addr)
            finally:
                conn.close()
                counts.handled += 1
                counts.busy = False

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
        if acceptor is not None:
            self._final_stats = acceptor.stats()
        if stuck:
            log.warning("shutdown timed out; workers still in a handler: %s", ", ".join(stuck))
            return False
        return me not in self._workers

    def _close_socket(self) -> None:
        self._sock.close()


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
        timeout: Optional[float] = None,
    ) -> None:
        _check_int("workers", workers, 1, MAX_WORKERS)
        _check_ring_size(ring_size)
        _check_timeout(timeout)
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._options = dict(workers=workers, ring_size=ring_size, timeout=timeout)
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

"""``TCPServer``: a drop-in for ``socketserver.ThreadingTCPServer``.

The constructor, the attributes and every step method of socketserver's
``TCPServer`` (``server_bind``, ``server_activate``, ``get_request``,
``verify_request``, ``process_request``, ``finish_request``,
``shutdown_request``, ``close_request``, ``handle_error``,
``handle_timeout``, ``service_actions``, ``handle_request``,
``serve_forever``, ``shutdown``, ``server_close``, ``fileno``), so that a
subclass overrides one step as it would there, and CPython's own
``test_socketserver`` passes against it (tests/test_tcpserver_cpython.py).
``serve_forever()`` drains the listening socket from C (``Server``'s accept
loop) and runs each request on a fixed pool of ``workers`` threads instead
of a thread each; ``handle_request()`` serves one request in the calling
thread, as socketserver does. Mixing in ``socketserver.ThreadingMixIn``
works too: its ``process_request`` then runs each request in a thread of
its own, started from a worker.
"""
from __future__ import annotations

import logging
import selectors
import socket as _socket
import threading
import time
from typing import Any, Optional, Set, Tuple, Type

from fastaccept import _options
from fastaccept._options import (DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
                                 DEFAULT_PROXY_TIMEOUT, DEFAULT_RING_SIZE, DEFAULT_TIMEOUT,
                                 DEFAULT_WORKERS)
from fastaccept.server import _TAKEN, KEEP, Server

__all__ = ["TCPServer"]

log = logging.getLogger("fastaccept")


class TCPServer(Server):
    """A drop-in for ``socketserver.ThreadingTCPServer`` backed by fastaccept.

    ``TCPServer(server_address, RequestHandlerClass, bind_and_activate=True,
    *, workers=8, ring_size=4096, socket_timeout=30.0, overload="queue",
    shed_response=b"", dispatch="accept", idle_timeout=30.0,
    max_connections=10000, accept_priority="realtime", proxy_protocol=False,
    proxy_timeout=3.0)``: the first three as in socketserver; the others
    are ``Server``'s (``socket_timeout`` is ``Server``'s ``timeout``,
    renamed because socketserver's ``timeout`` attribute is
    ``handle_request()``'s). With ``proxy_protocol=True`` C reads each
    connection's PROXY header first, whatever the dispatch, and
    ``client_address`` is the client's address it carries.
    ``dispatch`` defaults to ``"accept"``: a socketserver handler may speak
    first (a banner, a greeting), so a request reaches it as soon as it is
    accepted. With ``dispatch="readable"`` connections wait in C for their
    first bytes instead. A handler keeps its connection for the next request
    with ``self.server.keep(self.request)`` (see ``keep``).

    Like socketserver, ``shutdown()`` stops ``serve_forever()`` (after
    serving what was queued) and leaves the socket listening, so
    ``serve_forever()`` or ``handle_request()`` can serve it again;
    ``server_close()`` closes it.
    """

    address_family = _socket.AF_INET
    socket_type = _socket.SOCK_STREAM
    request_queue_size = 2048
    allow_reuse_address = True
    allow_reuse_port = False
    #: handle_request()'s wait for a request, in seconds (None: for ever).
    timeout: Optional[float] = None
    #: Accepted for socketserver's ThreadingMixIn; fastaccept's own pool
    #: always behaves as daemon_threads=True, block_on_close=True (its
    #: workers never keep the process alive, and shutdown() waits for every
    #: handler).
    daemon_threads = True
    block_on_close = True

    def __init__(
        self,
        server_address: Any,
        RequestHandlerClass: Type[Any],
        bind_and_activate: bool = True,
        *,
        workers: int = DEFAULT_WORKERS,
        ring_size: int = DEFAULT_RING_SIZE,
        socket_timeout: Optional[float] = DEFAULT_TIMEOUT,
        overload: str = "queue",
        shed_response: bytes = b"",
        dispatch: str = "accept",
        idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        accept_priority: str = "realtime",
        proxy_protocol: bool = False,
        proxy_timeout: Optional[float] = DEFAULT_PROXY_TIMEOUT,
    ) -> None:
        # socketserver's shutdown() leaves the socket listening: keep it.
        self._configure(workers=workers, ring_size=ring_size, timeout=socket_timeout,
                        overload=overload, shed_response=shed_response, end_listen="keep",
                        dispatch=dispatch, idle_timeout=idle_timeout,
                        max_connections=max_connections, accept_priority=accept_priority,
                        proxy_protocol=proxy_protocol, proxy_timeout=proxy_timeout)
        self._kept: Set[_socket.socket] = set()
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        self._serving = False
        self._serving_done = threading.Event()
        self._shutdown_pending = False
        self.socket = _socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    @property
    def socket(self) -> _socket.socket:
        """The listening socket (an attribute, as in socketserver)."""
        return self._sock

    @socket.setter
    def socket(self, sock: _socket.socket) -> None:
        self._sock = sock

    @property
    def address(self) -> Any:
        """The bound address (``server_address``)."""
        return self.server_address

    # -- socketserver's set-up steps ----------------------------------------

    def server_bind(self) -> None:
        """Bind the socket to server_address (with SO_REUSEADDR/SO_REUSEPORT when allowed)."""
        if self.allow_reuse_address and hasattr(_socket, "SO_REUSEADDR"):
            self.socket.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(_socket, "SO_REUSEPORT"):
            self.socket.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listen with request_queue_size as the backlog."""
        self.socket.listen(self.request_queue_size)
        _options.warn_if_capped(self.request_queue_size)

    def server_close(self) -> None:
        """Stop serving (as shutdown()) and close the listening socket."""
        self.shutdown()
        with self._lock:
            if self._state not in ("closed", "forked"):
                self._state = "closed"
        self.socket.close()

    def fileno(self) -> int:
        """Return the listening socket's file descriptor."""
        return self.socket.fileno()

    # -- serving ---------------------------------------------------------------

    def start(self) -> None:
        """Start the accept loop and the workers on the (listening) socket."""
        if self._state == "new":
            self._adopt(_options.check_listening(self.socket))
        super().start()

    def _begin_serving(self) -> bool:
        with self._lock:
            if self._serving:
                raise RuntimeError("serve_forever() is already running")
            if self._shutdown_pending:      # shutdown() came first: return at once
                self._shutdown_pending = False
                return False
            if self._state == "closed":
                raise ValueError("serve_forever() on a closed server")
            self._serving = True
            self._serving_done = threading.Event()
        try:
            if super()._begin_serving():
                return True
        except BaseException:
            self._end_serving()
            raise
        self._end_serving()
        return False

    def _end_serving(self) -> None:
        with self._lock:
            self._serving = False
            self._serving_done.set()

    def _finish_serving(self) -> None:
        self._stop_serving(None)

    def _stop_serving(self, deadline: Optional[float]) -> bool:
        """Stop the run and make the server startable again (socket listening)."""
        finished = self._stop_run(deadline)
        if finished:
            with self._lock:
                if self._state == "stopped":
                    self._reset_run()
                    self._state = "new"
        return finished

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Stop serve_forever() and wait for it, serving what is already queued.

        The socket keeps listening (server_close() closes it). Called before
        serve_forever(), it makes the next serve_forever() return at once,
        as in socketserver (which then does not wait for ever). From a
        handler it asks for the stop and returns False without waiting.
        Return True once everything stopped within ``timeout`` seconds."""
        timeout = _options.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if threading.current_thread() in self._workers:
            return self._stop_run(deadline)
        with self._lock:
            serving, done = self._serving, self._serving_done
            if serving:
                self._stop_requested.set()
            elif self._state == "new":
                self._shutdown_pending = True
                return True
        if serving:
            return done.wait(timeout)
        return self._stop_serving(deadline)

    def handle_request(self) -> None:
        """Wait up to ``timeout`` for one request and handle it in this thread.

        As socketserver's: the wait is the socket's timeout or ``timeout``,
        whichever is shorter; if it passes, ``handle_timeout()`` is called.
        Not while serve_forever() runs (its accept loop owns the socket), nor
        with ``proxy_protocol``: it accepts in Python, where no PROXY header
        is read, and would report the balancer as the client."""
        if self._serving or self._state in ("running", "stopping"):
            raise RuntimeError("handle_request() while serve_forever() runs")
        if self._proxy_protocol:
            raise RuntimeError("handle_request() does not read PROXY protocol headers "
                               "(proxy_protocol=True): use serve_forever()")
        timeout = self.socket.gettimeout()
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.PollSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            while True:
                if selector.select(timeout):
                    return self._handle_request_noblock()
                if deadline is not None:
                    timeout = deadline - time.monotonic()
                    if timeout < 0:
                        return self.handle_timeout()

    def _handle_request_noblock(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:     # the client went away, or another thread took it
            return
        if self._timeout is not None:
            request.settimeout(self._timeout)
        self._handle(request, client_address)

    def get_request(self) -> Tuple[_socket.socket, Any]:
        """Accept one connection from the listening socket (handle_request())."""
        return self.socket.accept()

    def handle_timeout(self) -> None:
        """Called by handle_request() when no request came in time; does nothing."""

    # -- per request, in a worker (serve_forever) or the caller (handle_request) --

    def process_connection(self, conn: _socket.socket, addr: Any) -> Any:
        """Server's step for one connection: socketserver's request path.

        socketserver's steps close the request themselves (or, with
        ThreadingMixIn, the request's own thread does): the worker only
        gives it back if the handler asked to keep it."""
        if self._timeout is not None:
            conn.settimeout(self._timeout)
        self._handle(conn, addr)
        if conn in self._kept:
            self._kept.discard(conn)
            return KEEP
        return _TAKEN

    def keep(self, request: _socket.socket) -> None:
        """Keep this request's connection open for its next request.

        Call it from the handler. Once the handler returns, the connection is
        not shut down but goes back to the accept loop, which waits in C (no
        thread) for the client's next bytes and then hands the connection to
        a new RequestHandlerClass in whatever worker is free; after
        ``idle_timeout`` seconds of silence C closes it. The handler must
        not have read past its request: use ``rbufsize = 0`` (an unbuffered
        ``rfile``) or ``recv`` exactly what it needs, since bytes left in a
        buffer are lost. Only for requests served by serve_forever()'s pool
        (not handle_request(), nor a ThreadingMixIn thread)."""
        self._kept.add(request)

    def _handle(self, request: _socket.socket, client_address: Any) -> None:
        """verify_request, process_request; errors to handle_error; as socketserver."""
        if self.verify_request(request, client_address):
            try:
                self.process_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
                self.shutdown_request(request)
            except BaseException:
                self.shutdown_request(request)
                raise
        else:
            self.shutdown_request(request)

    def _unhandled(self, conn: _socket.socket, addr: Any) -> None:
        # A BaseException (SystemExit...) from a request, in a worker:
        # socketserver does not pass those to handle_error.
        log.exception("request from %s raised", addr)

    def verify_request(self, request: _socket.socket, client_address: Any) -> bool:
        """Return False to refuse the request; the default accepts all."""
        return True

    def process_request(self, request: _socket.socket, client_address: Any) -> None:
        """Run finish_request, then shutdown_request (socketserver.BaseServer's)."""
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def finish_request(self, request: _socket.socket, client_address: Any) -> None:
        """Instantiate RequestHandlerClass, which handles the request."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: _socket.socket) -> None:
        """Half-close the write side, then close the request (unless kept)."""
        if request in self._kept:
            return
        try:
            request.shutdown(_socket.SHUT_WR)
        except OSError:
            pass    # the client may have closed already
        self.close_request(request)

    def close_request(self, request: _socket.socket) -> None:
        """Close the request socket."""
        request.close()

    def handle_error(self, request: _socket.socket, client_address: Any) -> None:
        """Log the exception being handled (logger "fastaccept")."""
        log.exception("exception while handling request from %s", client_address)

    def __enter__(self) -> "TCPServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server_close()

    def __repr__(self) -> str:
        return f"<fastaccept.{type(self).__name__} {self._state} on {self.server_address!r}>"

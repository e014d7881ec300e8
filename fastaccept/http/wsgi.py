"""``WSGIServer``: HTTP/1.1 for WSGI applications (PEP 3333) on fastaccept.

The accept loop reads and parses every request head in C, without the GIL,
before a worker wakes (``Acceptor(http=True)``): a slow or silent client
never holds a thread, and a malformed or oversized head is answered from C
(400, 408, 413, 414, 431, 501, 505) and closed. A worker receives a complete,
valid head with the bytes read after it, builds the environ from it in one
pass (``Request.environ``), runs the application, and sends the response
(status line, headers and the first body chunk in one ``send_all``, from C,
without giving up the GIL while the socket takes it). A connection that may
carry another request goes back to the accept loop (``KEEP``) with any bytes
read past its body, and waits there, in C, for its next request, for at most
``keep_alive`` seconds.

Response framing: the application's Content-Length when it gives one (or
one computed for a single-chunk body); otherwise chunked for HTTP/1.1 and
close-delimited for HTTP/1.0. HEAD gets the headers of a GET without the
body; 1xx, 204 and 304 get no body. ``Date`` and ``Server`` are added unless
the application sent them. An application that raises before it sent
anything gets a 500; after, the connection is closed (the client sees a cut
response). Both are logged with the traceback.
"""
from __future__ import annotations

import logging
import os
import socket as _socket
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO, Tuple, Union

from fastaccept import _options
from fastaccept._core import Acceptor, HTTPError, Histogram, Request, send_all
from fastaccept._options import (DEFAULT_BACKLOG, DEFAULT_MAX_CONNECTIONS,
                                 DEFAULT_PROXY_TIMEOUT, DEFAULT_RING_SIZE, DEFAULT_TIMEOUT,
                                 DEFAULT_WORKERS, MAX_CONNECTIONS)
from fastaccept.http import accesslog, responses
from fastaccept.http.connection import Body
from fastaccept._stats import WorkerCounts
from fastaccept.server import Server, _Keep, _lower_priority

__all__ = ["WSGIServer", "FileWrapper", "DEFAULT_KEEP_ALIVE", "DEFAULT_MAX_BODY"]

log = logging.getLogger("fastaccept")

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: Seconds a kept connection may wait (in C) for its next request.
DEFAULT_KEEP_ALIVE = 5.0
#: At a stop, how long kept connections may still bring a request (answered
#: with Connection: close) before the idle ones are closed: a client that
#: sends just as a reload stops this process is answered, not reset.
DEFAULT_STOP_GRACE = 1.0
#: Largest request body: a Content-Length above it is answered 413 from C, a
#: chunked body that grows past it 413 from the worker.
DEFAULT_MAX_BODY = 1 << 30
#: Headers a WSGI application must not set (PEP 3333: hop-by-hop).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailers", "transfer-encoding",
                        "upgrade"})
#: Upper bounds (us) of the request latency histogram: powers of 4, 1 us to 67 s.
LATENCY_BOUNDS_US = tuple(4 ** k for k in range(14))
_NO_BODY_STATUS = ("1", "204", "304")


class FileWrapper:
    """``wsgi.file_wrapper``: a file sent with sendfile() when it has a
    descriptor, else read in blocks. Closing it closes the file."""

    def __init__(self, filelike: Any, block_size: int = 65536) -> None:
        self.filelike = filelike
        self.block_size = block_size
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterable[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block

    def fileno(self) -> Optional[int]:
        """The descriptor to sendfile() from, or None."""
        try:
            return int(self.filelike.fileno())
        except (AttributeError, OSError, ValueError):
            return None


class _Stats:
    """One worker's HTTP counters (written by that worker only: no lock)."""

    __slots__ = ("requests", "by_class", "app_errors")

    def __init__(self) -> None:
        self.requests = 0
        self.by_class = [0, 0, 0, 0, 0, 0]      # index: first digit of the status
        self.app_errors = 0


class _Exchange:
    """One request's response: what start_response() was given, and what
    has gone out. Sends through send_all() on the connection's descriptor."""

    __slots__ = ("fd", "minor", "method_head", "timeout", "status", "headers", "head_sent",
                 "length", "sent", "chunked", "close", "code", "server")

    def __init__(self, fd: int, minor: int, head: bool, keep_alive: bool,
                 timeout: Optional[float], server: "WSGIServer") -> None:
        self.fd = fd
        self.minor = minor
        self.method_head = head
        self.timeout = timeout
        self.status: Optional[str] = None
        self.headers: List[Tuple[str, str]] = []
        self.head_sent = False
        self.length: Optional[int] = None       # the body's declared length
        self.sent = 0                           # body bytes sent
        self.chunked = False
        self.close = not keep_alive
        self.code = 0
        self.server = server

    def start_response(self, status: str, headers: List[Tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        """PEP 3333's start_response."""
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called again without exc_info")
        if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or \
                status[3] != " ":
            raise ValueError(f"bad WSGI status {status!r}")
        self.status = status
        self.headers = headers
        return self.write

    # -- the head --------------------------------------------------------------

    def _head(self, body: bytes, done: bool) -> bytes:
        """The status line and headers, framing decided; body is the first
        chunk, done whether it is the whole body."""
        status = self.status
        if status is None:
            raise AssertionError("the application returned without calling start_response()")
        self.code = int(status[:3])
        out = [responses.status_line(self.minor, status)]
        append = out.append
        has_date = has_server = False
        length = None
        for name, value in self.headers:
            lname = name.lower()
            if lname == "content-length":
                length = int(value)
            elif lname == "date":
                has_date = True
            elif lname == "server":
                has_server = True
            elif lname in HOP_BY_HOP:
                raise ValueError(f"a WSGI application may not set the hop-by-hop header {name}")
            append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if not has_date:
            append(responses.date_header())
        if not has_server:
            append(b"Server: fastaccept\r\n")
        no_body = status.startswith(_NO_BODY_STATUS)
        if length is None and not no_body:
            if done:
                length = len(body)
                append(b"Content-Length: %d\r\n" % length)
            elif self.minor >= 1 and not self.method_head:
                self.chunked = True
                append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.close = True           # HTTP/1.0: the body ends at the close
        self.length = length
        if self.server._stopping():
            self.close = True
        if self.close:
            append(b"Connection: close\r\n")
        elif self.minor == 0:
            append(b"Connection: keep-alive\r\n")
        append(b"\r\n")
        return b"".join(out)

    # -- the body --------------------------------------------------------------

    def _frame(self, data: bytes) -> List[bytes]:
        if self.method_head or not data:
            return []
        self.sent += len(data)
        if self.length is not None and self.sent > self.length:
            raise ValueError(f"the application sent more than its Content-Length "
                             f"({self.length} bytes)")
        if self.chunked:
            return [b"%x\r\n" % len(data), data, b"\r\n"]
        return [data]

    def send(self, data: bytes, done: bool = False) -> None:
        """Send a body chunk, with the head before the first (one send)."""
        if not self.head_sent:
            head = self._head(data, done)
            self.head_sent = True
            # the whole response, on a connection it ends: the FIN goes with it
            send_all(self.fd, [head, *self._frame(data)], self.timeout, done and self.close)
        elif data:
            send_all(self.fd, self._frame(data), self.timeout)

    def write(self, data: bytes) -> None:
        """The write() callable of start_response (sends at once)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() takes bytes, got {type(data).__name__}")
        if self.status is None:
            raise AssertionError("write() before start_response()")
        self.send(bytes(data))

    def finish(self) -> None:
        """End the body: the head if nothing was sent, the last chunk."""
        if not self.head_sent:
            self.send(b"", done=True)
        elif self.chunked and not self.method_head:
            send_all(self.fd, [b"0\r\n\r\n"], self.timeout)
        if self.length is not None and self.sent < self.length and not self.method_head \
                and not self.status.startswith(_NO_BODY_STATUS):     # type: ignore[union-attr]
            self.close = True               # cut short: the client would wait for the rest

    def sendfile(self, wrapper: FileWrapper, fd: int) -> bool:
        """Send a file wrapper's file with os.sendfile(); False if it cannot."""
        try:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
            size = os.fstat(fd).st_size - offset
        except OSError:
            return False
        if self.length is None:
            for name, value in self.headers:
                if name.lower() == "content-length":
                    self.length = int(value)
            if self.length is None:
                self.headers.append(("Content-Length", str(size)))
                self.length = size
        if not self.head_sent:
            send_all(self.fd, [self._head(b"", False)], self.timeout)
            self.head_sent = True
        if self.method_head:
            return True
        left = min(size, self.length)
        if self.timeout is not None:
            os.set_blocking(self.fd, False)     # so that a wait is bounded: _wait_writable
        while left > 0:
            try:
                n = os.sendfile(self.fd, fd, offset, left)
            except BlockingIOError:
                _wait_writable(self.fd, self.timeout)
                continue
            if n == 0:
                break
            offset += n
            left -= n
            self.sent += n
        return True


def _wait_writable(fd: int, timeout: Optional[float]) -> None:
    import select
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not poller.poll(None if timeout is None else int(timeout * 1000)):
        raise TimeoutError("timed out")


class WSGIServer(Server):
    """Serve a WSGI application over HTTP/1.1 (PEP 3333), on fastaccept's engine.

    ``WSGIServer(app, host, port, *, workers=8, backlog=2048, keep_alive=5.0,
    timeout=30.0, max_request_line=8192, max_fields=100, max_head=65536,
    max_body=1 GiB, max_connections=10000, access_log=None, ...)``, with
    ``Server``'s lifecycle (``start``, ``serve_forever``, ``shutdown``,
    ``address``, ``stats``, the context manager).

    - ``timeout``: a request head must be complete this long after it starts
      (else 408 from C), and every socket operation of a worker on the body
      or the response is bounded by it.
    - ``keep_alive``: how long a connection may wait, in C, for its next
      request (None: ``timeout``).
    - Limits answered from C: a request line over ``max_request_line``
      bytes (414), more than ``max_fields`` fields or a head over
      ``max_head`` bytes (431), a Content-Length over ``max_body`` (413).
    - ``access_log``: None (off), "-" (stderr), a path (appended to), a text
      stream, or a ``logging.Logger``: one line per request, common log
      format plus the time to respond in microseconds.
    - ``proxy_protocol``: behind a load balancer sending the PROXY protocol
      (v1 or v2), C reads each connection's header before its first request
      head (within ``proxy_timeout`` seconds), and ``REMOTE_ADDR`` and
      ``REMOTE_PORT`` are the client's the header names; a connection
      without a valid header is closed unanswered (see ``Server``).
    """

    def __init__(
        self,
        app: WSGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: Optional[_socket.socket] = None,
        workers: int = DEFAULT_WORKERS,
        backlog: int = DEFAULT_BACKLOG,
        ring_size: int = DEFAULT_RING_SIZE,
        keep_alive: Optional[float] = DEFAULT_KEEP_ALIVE,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        max_request_line: int = 8192,
        max_fields: int = 100,
        max_head: int = 65536,
        max_body: int = DEFAULT_MAX_BODY,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        access_log: Union[None, str, TextIO, logging.Logger] = None,
        overload: str = "queue",
        url_scheme: str = "http",
        stop_grace: float = DEFAULT_STOP_GRACE,
        proxy_protocol: bool = False,
        proxy_timeout: Optional[float] = DEFAULT_PROXY_TIMEOUT,
        **tuning: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be callable, got {type(app).__name__}")
        self._http_limits = dict(
            max_request_line=_options.check_int("max_request_line", max_request_line, 16,
                                                1 << 30),
            max_fields=_options.check_int("max_fields", max_fields, 1, 1 << 16),
            max_head=_options.check_int("max_head", max_head, 64, 1 << 30),
            max_body=_options.check_int("max_body", max_body, 1, 2**63 - 1))
        timeout = _options.check_timeout(timeout)
        keep_alive = _options.check_seconds("keep_alive", keep_alive if keep_alive is not None
                                            else timeout, _options.MAX_IDLE_TIMEOUT,
                                            allow_none=True)
        if overload not in ("queue", "shed"):
            raise ValueError(f"overload must be 'queue' or 'shed', got {overload!r}")
        if url_scheme not in ("http", "https"):
            raise ValueError(f"url_scheme must be 'http' or 'https', got {url_scheme!r}")
        _options.check_int("max_connections", max_connections, 1, MAX_CONNECTIONS)
        self._access = accesslog.open_log(access_log)   # before the socket: nothing to undo
        try:
            super().__init__(self._no_handler, host, port, sock=sock, workers=workers,
                             backlog=backlog, ring_size=ring_size, timeout=timeout,
                             overload=overload,
                             shed_response=(responses.SHED_RESPONSE if overload == "shed"
                                            else b""),
                             dispatch="readable", idle_timeout=keep_alive,
                             max_connections=max_connections,
                             stop_grace=min(stop_grace, keep_alive or stop_grace),
                             proxy_protocol=proxy_protocol, proxy_timeout=proxy_timeout,
                             **tuning)
        except BaseException:
            if self._access is not None:
                self._access.close()
            raise
        self.app = app
        self._max_body = self._http_limits["max_body"]
        self._latency = Histogram()
        self._http_stats: List[_Stats] = []
        self._tls = threading.local()
        host_, port_ = self.address[0], self.address[1]
        self._base_environ: Dict[str, Any] = {
            "SERVER_NAME": host_, "SERVER_PORT": str(port_), "SCRIPT_NAME": "",
            "wsgi.version": (1, 0), "wsgi.url_scheme": url_scheme, "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper,
        }

    @staticmethod
    def _no_handler(conn: _socket.socket, addr: Any) -> None:
        """Never called: process_connection serves every request."""

    def _acceptor_options(self) -> Dict[str, Any]:
        timeout = self._timeout
        return dict(http=True, head_timeout=timeout if timeout else None, **self._http_limits)

    def _stopping(self) -> bool:
        return self._stop_requested.is_set()

    # -- one request --------------------------------------------------------------

    def _worker_main(self, acceptor: Acceptor, counts: WorkerCounts) -> None:
        """A worker's loop: Server's, but the connection stays a bare
        descriptor. Nothing here needs a socket object, and making one costs
        a getsockname() per request. A subclass with its own
        process_connection or handle_error gets Server's loop, which calls
        them with a socket."""
        cls = type(self)
        if cls.process_connection is not WSGIServer.process_connection or \
                cls.handle_error is not Server.handle_error:
            super()._worker_main(acceptor, counts)
            return
        _lower_priority(self._worker_nice)
        finish, keep = acceptor.finish, acceptor.keep
        serve, stats = self._serve, self._stats_of_thread()
        for fd, addr, request in self._popped(acceptor):
            counts.conn = fd
            kept: Optional[_Keep] = None
            try:
                kept = serve(fd, addr, request, stats)
            except BaseException:
                # what _serve does not catch: a KeyboardInterrupt or
                # SystemExit from the application; the worker goes on
                counts.errors += 1
                log.exception("serving a request from %s raised", addr)
            finally:
                counts.conn = None
                counts.handled += 1
            try:
                if kept is None:
                    finish(fd)
                else:
                    keep(fd, kept.rest)
            except (ValueError, RuntimeError):
                os.close(fd)    # the acceptor is gone (used after fork)
                return

    def process_connection(self, conn: _socket.socket, addr: Any,
                           request: Optional[Request] = None) -> Any:
        """Serve one request the accept loop parsed (Server's step; see
        _worker_main)."""
        return self._serve(conn.fileno(), addr, request, self._stats_of_thread())

    def _serve(self, fd: int, addr: Any, request: Optional[Request],
               stats: _Stats) -> Optional[_Keep]:
        """Serve one request on fd; return a KEEP with the bytes read past
        it if the connection may carry another, else None (close it)."""
        if request is None:
            return None
        t0 = time.monotonic_ns()
        timeout = self._timeout     # (sends bound it themselves; the body's reads: Body)
        env = request.environ(self._base_environ)
        env["REMOTE_ADDR"] = addr[0] if isinstance(addr, tuple) else ""
        env["REMOTE_PORT"] = str(addr[1]) if isinstance(addr, tuple) else ""
        minor = request.version_minor
        send_continue = None
        if request.expect_continue:
            def send_continue() -> None:
                send_all(fd, [responses.CONTINUE], timeout)
        ex = _Exchange(fd, minor, env["REQUEST_METHOD"] == "HEAD", request.keep_alive,
                       timeout, self)
        stats.requests += 1
        body: Optional[Body] = None
        try:
            body = Body(fd, request.rest, request.content_length, request.chunked,
                        self._max_body, send_continue, timeout)
            env["wsgi.input"] = body
            self._run_app(env, ex)
        except HTTPError as e:          # the body broke its framing
            ex.close = True
            if not ex.head_sent:
                self._send_error(ex, e.status, str(e).encode() + b"\n")
        except OSError:                 # the client went away, or a timeout
            ex.close = True
        except Exception:
            ex.close = True
            stats.app_errors += 1
            log.exception("the WSGI application raised for %s %s from %s",
                          env.get("REQUEST_METHOD"), env.get("PATH_INFO"), addr)
            if not ex.head_sent:
                self._send_error(ex, 500, b"internal server error\n")
        stats.by_class[ex.code // 100 if 0 < ex.code < 600 else 0] += 1
        self._latency.record_since(t0)
        if self._access is not None:
            self._access.write(env, ex.code, ex.sent, time.monotonic_ns() - t0)
        if ex.close or body is None or not body.drain() or self._stopping():
            return None
        return _Keep(body.rest() or None)

    def _run_app(self, env: Dict[str, Any], ex: _Exchange) -> None:
        result = self.app(env, ex.start_response)
        try:
            if isinstance(result, FileWrapper):
                fd = result.fileno()
                if fd is not None and ex.sendfile(result, fd):
                    return
            if isinstance(result, (list, tuple)) and len(result) == 1:
                ex.send(bytes(result[0]), done=True)    # one chunk: its length is known
                ex.finish()
                return
            for chunk in result:
                if chunk:
                    ex.send(chunk)
            ex.finish()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _send_error(self, ex: _Exchange, status: int, body: bytes) -> None:
        ex.code = status
        ex.head_sent = True
        try:
            send_all(ex.fd, [responses.simple(status, body, minor=ex.minor)], ex.timeout)
        except OSError:
            pass

    def _stats_of_thread(self) -> _Stats:
        """This worker's counters (made on its first request)."""
        st: Optional[_Stats] = getattr(self._tls, "stats", None)
        if st is None:
            st = _Stats()
            self._tls.stats = st
            self._http_stats.append(st)
        return st

    # -- observability ------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Server.stats() plus the HTTP counters: requests, responses by
        status class, application errors, rejections from C by status, and
        the request latency (from the worker taking it to the end of the
        response) p50/p99 in us."""
        st = super().stats()
        per = list(self._http_stats)
        st["requests"] = sum(s.requests for s in per)
        classes = [sum(s.by_class[i] for s in per) for i in range(6)]
        st["responses"] = {f"{i}xx": classes[i] for i in range(1, 6)}
        st["app_errors"] = sum(s.app_errors for s in per)
        (p50, p99), _ = self._latency.quantiles_us((0.5, 0.99))
        st["request_latency_p50_us"], st["request_latency_p99_us"] = p50, p99
        return st

    def latency_histogram(self) -> Tuple[List[Tuple[float, int]], int]:
        """([(upper bound in us, cumulative count)...], sum in us) of the
        request latencies: the shape of a Prometheus histogram."""
        counts, sum_us = self._latency.cumulative(LATENCY_BOUNDS_US)
        bounds = [float(b) for b in LATENCY_BOUNDS_US] + [float("inf")]
        return list(zip(bounds, counts)), sum_us

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Server.shutdown(), then close the access log."""
        done = super().shutdown(timeout)
        if done and self._access is not None:
            self._access.close()
        return done


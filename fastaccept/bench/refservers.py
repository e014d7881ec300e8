"""Reference servers for the benchmarks, one per process.

    serial        one thread: accept -> recv -> respond -> close (the old architecture)
    threadpool    a pure-Python accept loop that submits each connection to a
                  concurrent.futures.ThreadPoolExecutor(workers)
    socketserver  socketserver.ThreadingTCPServer (a thread per connection)
    fastaccept    fastaccept.Server(handler, workers=W, backlog=B)
    gthread       the design of gunicorn's gthread worker, in pure Python: one
                  thread polls (selectors) the listening socket and every
                  connection waiting for its next request; a readable one goes
                  to a ThreadPoolExecutor(workers), which runs the handler and
                  gives a kept connection back to the polling thread (a queue
                  and a wake-up socketpair in the same poller) to wait again
    c-inline      fastaccept.bench._loadgen.serve_inline: the C accept loop reads,
                  answers and closes in C with no Python at all; the ceiling
                  for this protocol on this machine (it ignores the handler work)
    wsgi          fastaccept.WSGIServer with an application answering the demo
                  reply's body, "ok" (HTTP/1.1: it keeps a connection a client
                  asks it to keep, so the loadgen's http framing can send
                  several requests on one); with ``--hello``, wsgiapp.app's
                  "Hello, world!" (the HTTP scenarios' app, which the peers
                  of httpservers serve too); ``--keep-alive S`` is its
                  keep_alive

``--processes N`` (fastaccept and wsgi) serves with ``fastaccept.serve_processes``:
N processes on the inherited socket (``--fd``, shared) or on sockets of
their own (``--listener reuseport``, bound on ``--port``). The supervisor then
also prints one ``event {json}`` line on stdout per supervisor event (ready,
switched, exited...), and at exit ``per-process N1 N2 ...``: the requests
each process that stopped gracefully served, in the order they exited.
The serial server takes ``--processes N`` too: forked N times on one
socket (``--fd``, or one it binds), nothing between the kernel queue and the
handler, it prints the same ``event`` lines for "ready" and the same counts.

Every server speaks every protocol (``--protocol``), except c-inline, which
speaks only the first:

    http-close    read until ``\\r\\n\\r\\n`` (or EOF), reply a fixed HTTP 200 with
                  body "ok" (the demo reply), close. The default.
    line-keep     read one line (up to ``\\n``), echo it, keep the connection for
                  the next line: fastaccept's handler returns ``fastaccept.KEEP``
                  (the connection waits in C), gthread's pool gives it back to
                  the poller, and serial, threadpool and socketserver serve the
                  connection's next line in the same thread until the client
                  closes.
    line-close    read one line, echo it, close: one connection per request.

(A line echo echoes whatever complete lines one read brought: a client that
sends one line at a time gets one line back each time.) The Python servers
optionally sleep (``--sleep-ms``) or burn pure-Python CPU (``--cpu-ms`` /
``--cpu-iters``) before each reply.

Run one with::

    python -m fastaccept.bench.refservers NAME [--protocol P] [--backlog B]
        [--workers W] [--sleep-ms S] [--cpu-ms C | --cpu-iters N] [--fd FD]
        [--parent PID] [--fds N] [--max-connections N]
        [--processes N] [--listener shared|reuseport] [--port P]
        [--hello] [--keep-alive S]

It binds 127.0.0.1:0 (or serves the listening socket inherited as ``--fd``),
prints ``port N`` on stdout once it serves, and serves until SIGTERM or SIGINT;
then it stops, prints ``served N`` and exits with status 0. Each server has a
process of its own so the bench can read its CPU time from outside.

These servers exist to be measured: clients are trusted loopback load
generators, so the handlers use plain blocking sockets without timeouts
(a timeout would add a poll() per recv and distort the CPU figures).
``--fds N`` raises the process's RLIMIT_NOFILE soft limit to at least N (for
benches that hold thousands of idle connections); ``--max-connections``
is fastaccept's and wsgi's ``max_connections`` (their default otherwise).
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import itertools
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, cast

from fastaccept.bench import wsgiapp
from fastaccept.demo import DEMO_REPLY

__all__ = ["NAMES", "PROTOCOLS", "RESPONSE", "make_handler", "make_app", "calibrate_cpu_iters",
           "burn", "raise_fd_limit", "die_with_parent", "take_process_options", "main"]

#: The demo server's reply: every reference server answers the same bytes.
RESPONSE = DEMO_REPLY
#: Its body, which the wsgi server's application answers too (unless --hello).
DEMO_BODY = RESPONSE.split(b"\r\n\r\n", 1)[1]
REQUEST_END = b"\r\n\r\n"
MAX_REQUEST = 65536
STOP_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1

NAMES = ("serial", "threadpool", "socketserver", "fastaccept", "gthread", "c-inline", "wsgi")
#: What the servers speak (see the module's docstring); the first is the default.
PROTOCOLS = ("http-close", "line-keep", "line-close")
#: Servers that speak the http-close protocol only.
HTTP_ONLY = ("c-inline", "wsgi")
#: Servers that run in several processes with --processes: fastaccept's
#: supervisor, or forked on one shared socket (the serial server).
SUPERVISED = ("fastaccept", "wsgi")
FORKED = ("serial",)

#: handler(conn, addr) -> None: nothing was asked (the peer closed first);
#: False: answered, close the connection; True: answered, keep it for the
#: next request. The caller closes ``conn`` unless it keeps it.
Handler = Callable[[socket.socket, Any], Optional[bool]]


def burn(iterations: int) -> int:
    """Do ``iterations`` steps of pure-Python arithmetic (holds the GIL throughout)."""
    x = 0
    for i in range(iterations):
        x = (x + i * i) & 0xFFFF
    return x


def calibrate_cpu_iters(ms: float, trials: int = 5) -> int:
    """Return how many ``burn`` steps take ``ms`` milliseconds of CPU on this machine.

    The fastest of a few trials is used: noise only ever makes a trial slower.
    """
    if ms <= 0:
        return 0
    probe = 20000
    best = float("inf")
    for _ in range(trials):
        t0 = time.thread_time_ns()
        burn(probe)
        best = min(best, time.thread_time_ns() - t0)
    per_ms = probe * 1e6 / max(best, 1)
    return max(1, round(per_ms * ms))


def read_request(conn: socket.socket) -> bool:
    """Read until the end of the request head; False if the peer closed first."""
    data = conn.recv(4096)
    while REQUEST_END not in data:
        if not data or len(data) > MAX_REQUEST:
            return False
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def read_lines(conn: socket.socket) -> bytes:
    """Read until the data ends with a newline; b"" if the peer closed first."""
    data = conn.recv(4096)
    while data and not data.endswith(b"\n"):
        if len(data) > MAX_REQUEST:
            return b""
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


def make_handler(sleep_ms: float = 0.0, cpu_iters: int = 0,
                 protocol: str = "http-close") -> Handler:
    """Return handler(conn, addr) for ``protocol``: read one request, do the
    work, answer; see ``Handler`` for what it returns.

    http-close answers 200 "ok" and returns False; line-keep echoes the
    line and returns True, line-close echoes it and returns False. The
    caller closes ``conn`` unless it keeps it.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    sleep_s = sleep_ms / 1000.0
    response = RESPONSE

    if protocol != "http-close":
        keep = protocol == "line-keep"

        def line_handler(conn: socket.socket, addr: Any) -> Optional[bool]:
            data = read_lines(conn)
            if not data:
                return None
            if sleep_s:
                time.sleep(sleep_s)
            if cpu_iters:
                burn(cpu_iters)
            conn.sendall(data)
            return keep
        return line_handler

    if not sleep_s and not cpu_iters:
        def handler(conn: socket.socket, addr: Any) -> Optional[bool]:
            if read_request(conn):
                conn.sendall(response)
                return False
            return None
        return handler

    def working_handler(conn: socket.socket, addr: Any) -> Optional[bool]:
        if not read_request(conn):
            return None
        if sleep_s:
            time.sleep(sleep_s)
        if cpu_iters:
            burn(cpu_iters)
        conn.sendall(response)
        return False
    return working_handler


def make_app(sleep_ms: float = 0.0, cpu_iters: int = 0,
             body: bytes = DEMO_BODY) -> Callable[..., Any]:
    """``wsgiapp.make_app``'s application answering 200 ``body`` (the demo
    reply's, "ok") after the work: sleep ``sleep_ms``, burn ``cpu_iters``."""
    sleep_s = sleep_ms / 1000.0

    def work() -> None:
        if sleep_s:
            time.sleep(sleep_s)
        if cpu_iters:
            burn(cpu_iters)
    return wsgiapp.make_app(body, work if sleep_s or cpu_iters else None)


def _serve_one(handler: Handler, conn: socket.socket, addr: Any,
               served: "itertools.count[int]") -> None:
    """Serve every request of a connection in this thread, then close it."""
    try:
        while True:
            answered = handler(conn, addr)
            if answered is None:
                break
            next(served)    # itertools.count is atomic under the GIL; += is not
            if not answered:
                break
    except OSError:
        pass            # the client went away: nothing to report in a benchmark
    finally:
        conn.close()


def _accept_failed(e: OSError) -> None:
    """Back off briefly when out of descriptors or memory, so the loop does not spin."""
    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
        time.sleep(0.005)


def _unblock_accept(lsock: socket.socket) -> None:
    """Wake a thread blocked in accept() on lsock (Linux returns EINVAL to it)."""
    try:
        lsock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _RefServer:
    """start() spawns the serving threads; stop() ends them; served() counts."""

    def __init__(self, lsock: socket.socket, handler: Handler, workers: int) -> None:
        self.lsock = lsock
        self.handler = handler
        self.workers = workers
        self.counter = itertools.count()
        self.stopping = threading.Event()
        self.threads: List[threading.Thread] = []

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, deadline: float) -> bool:
        raise NotImplementedError

    def served(self) -> int:
        """Connections served; call once, after stop()."""
        return next(self.counter)   # after N next() calls by handlers, this returns N

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _join(self, deadline: float) -> bool:
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


class SerialServer(_RefServer):
    """One thread accepts and serves each connection to the end before the next."""

    def start(self) -> None:
        self._spawn(self._loop, "serial")

    def _loop(self) -> None:
        lsock, handler, served = self.lsock, self.handler, self.counter
        while True:
            try:
                conn, addr = lsock.accept()
            except OSError as e:
                if self.stopping.is_set():
                    return
                _accept_failed(e)
                continue
            _serve_one(handler, conn, addr, served)

    def stop(self, deadline: float) -> bool:
        self.stopping.set()
        _unblock_accept(self.lsock)
        return self._join(deadline)


class ThreadPoolServer(_RefServer):
    """A Python accept loop submitting every connection to a ThreadPoolExecutor."""

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pool")
        self._spawn(self._loop, "accept")

    def _loop(self) -> None:
        lsock, submit, handler, served = self.lsock, self.pool.submit, self.handler, self.counter
        while True:
            try:
                conn, addr = lsock.accept()
            except OSError as e:
                if self.stopping.is_set():
                    return
                _accept_failed(e)
                continue
            submit(_serve_one, handler, conn, addr, served)

    def stop(self, deadline: float) -> bool:
        self.stopping.set()
        _unblock_accept(self.lsock)
        joined = self._join(deadline)
        # Queued connections are still served (as the other servers do).
        self.pool.shutdown(wait=True)
        return joined


class SocketServerServer(_RefServer):
    """socketserver.ThreadingTCPServer over the listening socket."""

    def start(self) -> None:
        import socketserver

        handler, served = self.handler, self.counter

        class RequestHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    while True:
                        answered = handler(self.request, self.client_address)
                        if answered is None:
                            break
                        next(served)
                        if not answered:
                            break
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        server = Server(self.lsock.getsockname(), RequestHandler, bind_and_activate=False)
        server.socket.close()
        server.socket = self.lsock     # already bound and listening
        self.server = server
        self._spawn(server.serve_forever, "socketserver")

    def stop(self, deadline: float) -> bool:
        self.server.shutdown()         # from the main thread: no deadlock
        return self._join(deadline)


class FastacceptServer(_RefServer):
    """fastaccept.Server over the listening socket. ``options``: more
    keyword arguments of Server (the bench's --fa-* measurement knobs)."""

    max_connections: Optional[int] = None
    options: Dict[str, Any] = {}

    def start(self) -> None:
        from fastaccept import KEEP, Server

        handler, served = self.handler, self.counter

        def counted(conn: socket.socket, addr: Any) -> Any:
            try:
                answered = handler(conn, addr)
            except OSError:
                return None
            if answered is None:
                return None
            next(served)
            return KEEP if answered else None

        # timeout=None: no timeout, as the module docstring says (the default is 30 s)
        options = dict(self.options)
        if self.max_connections is not None:
            options["max_connections"] = self.max_connections
        self.server = Server(counted, sock=self.lsock, workers=self.workers, timeout=None,
                             **options)
        self.server.start()

    def stop(self, deadline: float) -> bool:
        return self.server.shutdown(timeout=max(0.0, deadline - time.monotonic()))


class GthreadServer(_RefServer):
    """One polling thread and a thread pool, as gunicorn's gthread worker is designed.

    The polling thread's selector holds the listening socket, a wake-up
    socketpair and every connection waiting for a request (new ones and
    kept ones). A readable connection leaves the selector for the pool,
    whose thread runs the handler; a kept connection goes back on a queue,
    and a byte on the socketpair wakes the polling thread to register it
    again. Nothing but the polling thread touches the selector.
    """

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gthread")
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.back: Deque[Tuple[socket.socket, Any]] = collections.deque()
        self.lsock.setblocking(False)
        self.selector.register(self.lsock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self._spawn(self._loop, "gthread-poller")

    def _loop(self) -> None:
        lsock, wake_r, selector, stopping = self.lsock, self.wake_r, self.selector, self.stopping
        submit, serve, register = self.pool.submit, self._serve, selector.register
        unregister, back, read = selector.unregister, self.back, selectors.EVENT_READ
        while not stopping.is_set():
            for key, _ in selector.select():
                sock = cast(socket.socket, key.fileobj)
                if sock is lsock:
                    try:
                        conn, addr = lsock.accept()     # one per readiness, as gthread
                    except OSError as e:
                        _accept_failed(e)
                        continue
                    if conn.gettimeout() is not None:
                        conn.setblocking(True)          # the handlers block
                    register(conn, read, addr)
                elif sock is wake_r:
                    try:
                        wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    while back:
                        conn, addr = back.popleft()
                        register(conn, read, addr)
                else:
                    unregister(sock)
                    submit(serve, sock, key.data)

    def _serve(self, conn: socket.socket, addr: Any) -> None:
        """In a pool thread: one request; then close or give the connection back."""
        keep = False
        try:
            answered = self.handler(conn, addr)
            if answered is not None:
                next(self.counter)
                keep = answered
        except OSError:
            pass
        if not keep or self.stopping.is_set():
            conn.close()
            return
        self.back.append((conn, addr))
        try:
            self.wake_w.send(b"x")
        except BlockingIOError:
            pass        # the socketpair is full: a wake-up is pending anyway
        except OSError:
            pass        # closed by stop(), which closes what is left on the queue

    def stop(self, deadline: float) -> bool:
        self.stopping.set()
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass
        joined = self._join(deadline)
        self.pool.shutdown(wait=True)   # the requests in service are answered
        if joined:
            # Connections still waiting (in the selector, or given back since).
            for key in list(self.selector.get_map().values()):
                if key.fileobj is not self.lsock and key.fileobj is not self.wake_r:
                    cast(socket.socket, key.fileobj).close()
            self.selector.close()
        while self.back:
            self.back.popleft()[0].close()
        self.wake_r.close()
        self.wake_w.close()
        return joined


class WsgiServer(_RefServer):
    """fastaccept.WSGIServer over the listening socket (the handler's work in its app)."""

    #: the application (main() sets it with the work asked for)
    app: Optional[Callable[..., Any]] = None
    #: WSGIServer's keyword arguments beyond app, sock and workers (main()
    #: sets them from the command line)
    options: Dict[str, Any] = {"timeout": None}

    def start(self) -> None:
        from fastaccept import WSGIServer
        self.server = WSGIServer(self.app or make_app(), sock=self.lsock, workers=self.workers,
                                 **self.options)
        self.server.start()

    def stop(self, deadline: float) -> bool:
        return self.server.shutdown(timeout=max(0.0, deadline - time.monotonic()))

    def served(self) -> int:
        return int(self.server.stats()["requests"])


class InlineServer(_RefServer):
    """fastaccept.bench._loadgen.serve_inline: accept, read, reply and close in C."""

    def start(self) -> None:
        from fastaccept.bench._loadgen import serve_inline

        self.stop_r, self.stop_w = os.pipe()
        self.count: List[int] = []

        def run() -> None:
            self.count.append(serve_inline(self.lsock.fileno(), RESPONSE, self.stop_r))

        self._spawn(run, "c-inline")

    def stop(self, deadline: float) -> bool:
        os.write(self.stop_w, b"x")
        joined = self._join(deadline)
        if joined:
            os.close(self.stop_r)
            os.close(self.stop_w)
        return joined

    def served(self) -> int:
        return self.count[0] if self.count else 0


SERVER_CLASSES = {
    "serial": SerialServer,
    "threadpool": ThreadPoolServer,
    "socketserver": SocketServerServer,
    "fastaccept": FastacceptServer,
    "gthread": GthreadServer,
    "c-inline": InlineServer,
    "wsgi": WsgiServer,
}


def raise_fd_limit(fds: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to at least ``fds`` (within the hard
    limit); return the soft limit now. ValueError if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= fds:
        return soft
    if hard != resource.RLIM_INFINITY and hard < fds:
        raise ValueError(f"{fds} descriptors asked for, but RLIMIT_NOFILE's hard limit "
                         f"is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (fds, hard))
    return fds


def die_with_parent(parent: int) -> None:
    """Get SIGTERM when the parent dies, so a crashed bench leaves no server behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:      # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def take_process_options(fds: Optional[int], parent: Optional[int]) -> Optional[str]:
    """Apply a bench server's --fds (raise_fd_limit) and --parent
    (die_with_parent) when given; return why --fds cannot be had, or None."""
    if fds is not None:
        try:
            raise_fd_limit(fds)
        except ValueError as e:
            return f"--fds: {e}"
    if parent is not None:
        die_with_parent(parent)
    return None


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m fastaccept.bench.refservers``."""
    p = argparse.ArgumentParser(prog="python -m fastaccept.bench.refservers",
                                description="run one reference server for the benchmarks")
    p.add_argument("name", choices=NAMES)
    p.add_argument("--protocol", choices=PROTOCOLS, default=PROTOCOLS[0],
                   help="what the server speaks (default http-close; see the module's "
                        "docstring)")
    p.add_argument("--backlog", type=int, default=128,
                   help="listen backlog when binding (default 128)")
    p.add_argument("--workers", type=int, default=8,
                   help="worker threads for threadpool and fastaccept (default 8)")
    p.add_argument("--sleep-ms", type=float, default=0.0, help="handler sleeps this long")
    p.add_argument("--cpu-ms", type=float, default=0.0,
                   help="handler burns about this much pure-Python CPU (calibrated at start)")
    p.add_argument("--cpu-iters", type=int, default=None,
                   help="handler burns exactly this many steps (overrides --cpu-ms)")
    p.add_argument("--fd", type=int, default=None,
                   help="serve this inherited listening socket instead of binding")
    p.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (default 0)")
    p.add_argument("--parent", type=int, default=None,
                   help="exit when this process (the bench) dies")
    p.add_argument("--fds", type=int, default=None,
                   help="raise RLIMIT_NOFILE's soft limit to at least this (idle connections)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="fastaccept's and wsgi's max_connections (default: their own)")
    # knobs for measuring fastaccept's own choices against each other
    p.add_argument("--fa-dispatch", choices=("readable", "accept"), default=None,
                   help="fastaccept's dispatch (default: Server's)")
    p.add_argument("--fa-worker-nice", type=int, default=None,
                   help="fastaccept's worker_nice (default: Server's)")
    p.add_argument("--fa-accept-priority", choices=("realtime", "normal"), default=None,
                   help="fastaccept's accept_priority (default: Server's)")
    p.add_argument("--fa-spin-us", type=int, default=None,
                   help="fastaccept's spin_us (default: Server's)")
    p.add_argument("--fa-nap-us", type=int, default=None,
                   help="fastaccept's nap_us (default: Server's)")
    p.add_argument("--defer-accept", type=int, default=None, metavar="S",
                   help="set TCP_DEFER_ACCEPT to S seconds on the listener (any server)")
    p.add_argument("--processes", type=int, default=1,
                   help="fastaccept and wsgi: serve in this many processes (default 1)")
    p.add_argument("--listener", choices=("shared", "reuseport"), default=None,
                   help="with --processes: the listener layout (reuseport binds --port)")
    p.add_argument("--hello", action="store_true",
                   help="wsgi: serve wsgiapp.app's 'Hello, world!' (the HTTP scenarios' app, "
                        "the peers' too), not 'ok'")
    p.add_argument("--keep-alive", type=float, default=None, metavar="S",
                   help="wsgi: WSGIServer's keep_alive (default: WSGIServer's)")
    return p


def _listening_socket(args: argparse.Namespace) -> socket.socket:
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise ValueError(f"--fd {args.fd} is not a listening socket")
        sock.setblocking(True)
        return sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(args.backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def main(argv: Optional[List[str]] = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.workers < 1 or args.backlog < 1 or args.sleep_ms < 0 or args.cpu_ms < 0:
        print("workers and backlog must be >= 1, sleep-ms and cpu-ms >= 0", file=sys.stderr)
        return 2
    if args.name in HTTP_ONLY and args.protocol != "http-close":
        print(f"{args.name} answers http-close only (in C, without a handler): it cannot "
              f"serve --protocol {args.protocol}", file=sys.stderr)
        return 2
    why = take_process_options(args.fds, args.parent)
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    if args.processes > 1 or args.listener is not None:
        if args.name in FORKED and args.listener != "reuseport":
            return _serve_forked(args)
        if args.name not in SUPERVISED:
            print(f"{args.name} runs in one process: --processes and --listener are for "
                  f"{' and '.join(SUPERVISED)} (and --processes alone for "
                  f"{' and '.join(FORKED)})", file=sys.stderr)
            return 2
        return _serve_processes(args)
    # Block the stop signals before any thread exists (threads inherit the
    # mask), then wait for them with sigwait: no handler, no polling.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    cpu_iters = args.cpu_iters if args.cpu_iters is not None else calibrate_cpu_iters(args.cpu_ms)
    handler = make_handler(args.sleep_ms, cpu_iters, args.protocol)
    lsock = _listening_socket(args)
    if args.defer_accept is not None:
        lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, args.defer_accept)
    server = SERVER_CLASSES[args.name](lsock, handler, args.workers)
    if isinstance(server, FastacceptServer):
        if args.max_connections is not None:
            server.max_connections = args.max_connections
        server.options = _fa_options(args)
    if isinstance(server, WsgiServer):
        server.app = _wsgi_app(args, cpu_iters)
        server.options = _wsgi_options(args)
    try:
        server.start()
        print(f"port {lsock.getsockname()[1]}", flush=True)
        signal.sigwait(stop_signals)
        clean = server.stop(time.monotonic() + STOP_GRACE_S)
    finally:
        lsock.close()
    print(f"served {server.served()}", flush=True)
    if not clean:
        print(f"{args.name}: some threads were still busy at exit", file=sys.stderr)
    return 0


def _fa_options(args: argparse.Namespace) -> Dict[str, Any]:
    """fastaccept's Server keyword arguments that the --fa-* options give."""
    given = (("dispatch", args.fa_dispatch), ("worker_nice", args.fa_worker_nice),
             ("spin_us", args.fa_spin_us), ("nap_us", args.fa_nap_us),
             ("accept_priority", args.fa_accept_priority))
    return {k: v for k, v in given if v is not None}


def _wsgi_app(args: argparse.Namespace, cpu_iters: int) -> Callable[..., Any]:
    """The wsgi server's application: the work asked for, then "ok" or, with
    --hello, wsgiapp's body."""
    return make_app(args.sleep_ms, cpu_iters, wsgiapp.BODY if args.hello else DEMO_BODY)


def _wsgi_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The wsgi server's WSGIServer keyword arguments beyond app, sock and
    workers: no head timeout (trusted loopback clients: the other servers
    have none either), and --keep-alive and --max-connections when given."""
    given = (("keep_alive", args.keep_alive), ("max_connections", args.max_connections))
    return {"timeout": None, **{k: v for k, v in given if v is not None}}


def _serve_processes(args: argparse.Namespace) -> int:
    """fastaccept or wsgi in --processes processes (fastaccept.serve_processes)."""
    import json

    from fastaccept import KEEP, Server, WSGIServer
    from fastaccept.supervise import Supervisor

    cpu_iters = args.cpu_iters if args.cpu_iters is not None else calibrate_cpu_iters(args.cpu_ms)
    handler = make_handler(args.sleep_ms, cpu_iters, args.protocol)
    app = _wsgi_app(args, cpu_iters)
    limits = {} if args.max_connections is None else {"max_connections": args.max_connections}

    def counted(conn: socket.socket, addr: Any) -> Any:
        try:
            answered = handler(conn, addr)
        except OSError:
            return None
        return KEEP if answered else None

    def factory(sock: socket.socket) -> Server:
        if args.name == "wsgi":
            return WSGIServer(app, sock=sock, workers=args.workers, **_wsgi_options(args))
        return Server(counted, sock=sock, workers=args.workers, timeout=None, **limits,
                      **_fa_options(args))

    def emit(event: Any) -> None:
        print("event " + json.dumps(event, default=str), flush=True)

    where: Any = {"fd": args.fd} if args.fd is not None else {"port": args.port}
    supervisor = Supervisor(factory, processes=args.processes, listener=args.listener,
                            backlog=args.backlog, graceful_timeout=STOP_GRACE_S, min_uptime=0.0,
                            backoff=0.05, on_event=emit, **where)
    print(f"port {supervisor.address[1]}", flush=True)
    status = supervisor.run()
    key = "requests" if args.name == "wsgi" else "handled"
    counts = [int((e["stats"] or {}).get(key, 0)) for e in supervisor.exits if e["stats"]]
    print(f"served {sum(counts)}", flush=True)
    print("per-process " + " ".join(map(str, counts)), flush=True)
    return status


def _serve_forked(args: argparse.Namespace) -> int:
    """The serial server in --processes processes, forked on one listening
    socket, each serving it as the single process does; for the events and
    counts, see the module's docstring."""
    import json
    import traceback

    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    cpu_iters = args.cpu_iters if args.cpu_iters is not None else calibrate_cpu_iters(args.cpu_ms)
    handler = make_handler(args.sleep_ms, cpu_iters, args.protocol)
    lsock = _listening_socket(args)
    print(f"port {lsock.getsockname()[1]}", flush=True)
    parent = os.getpid()
    children: Dict[int, int] = {}       # pid: the read end of its count pipe
    counts: List[int] = []
    try:
        for _ in range(args.processes):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for own in (r, *children.values()):     # the parent's read ends
                        os.close(own)
                    die_with_parent(parent)
                    server = SERVER_CLASSES[args.name](lsock, handler, args.workers)
                    server.start()
                    # one write(): the children's lines must not interleave
                    line = "event " + json.dumps({"event": "ready", "pid": os.getpid()})
                    os.write(sys.stdout.fileno(), line.encode() + b"\n")
                    signal.sigwait(stop_signals)
                    server.stop(time.monotonic() + STOP_GRACE_S)
                    os.write(w, str(server.served()).encode())
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            os.close(w)
            children[pid] = r
        signal.sigwait(stop_signals)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid, r in children.items():
            with os.fdopen(r, "rb") as f:
                counts.append(int(f.read() or b"0"))
            os.waitpid(pid, 0)
        lsock.close()
    print(f"served {sum(counts)}", flush=True)
    print("per-process " + " ".join(map(str, counts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reference servers for the benchmarks, one per process.

    serial        one thread: accept -> recv -> respond -> close (the old architecture)
    threadpool    a pure-Python accept loop that submits each connection to a
                  concurrent.futures.ThreadPoolExecutor(workers)
    socketserver  socketserver.ThreadingTCPServer (a thread per connection)
    fastaccept    fastaccept.Server(handler, workers=W, backlog=B)
    c-inline      fastaccept.bench._loadgen.serve_inline: the C accept loop reads,
                  answers and closes in C with no Python at all; the ceiling
                  for this protocol on this machine (it ignores the handler work)

All speak the same protocol: read until ``\\r\\n\\r\\n`` (or EOF), reply a
fixed HTTP 200 with body "ok", close. The Python servers optionally sleep
(``--sleep-ms``) or burn pure-Python CPU (``--cpu-ms`` / ``--cpu-iters``)
before replying.

Run one with::

    python -m fastaccept.bench.refservers NAME [--backlog B] [--workers W]
        [--sleep-ms S] [--cpu-ms C | --cpu-iters N] [--fd FD] [--parent PID]

It binds 127.0.0.1:0 (or serves the listening socket inherited as ``--fd``),
prints ``port N`` on stdout once it serves, and serves until SIGTERM or SIGINT;
then it stops, prints ``served N`` and exits with status 0. Each server has a
process of its own so the bench can read its CPU time from outside.

These servers exist to be measured: clients are trusted loopback load
generators, so the handlers use plain blocking sockets without timeouts
(a timeout would add a poll() per recv and distort the CPU figures).
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import itertools
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional

from fastaccept.demo import DEMO_REPLY

__all__ = ["NAMES", "RESPONSE", "make_handler", "calibrate_cpu_iters", "burn", "main"]

#: The demo server's reply: every reference server answers the same bytes.
RESPONSE = DEMO_REPLY
REQUEST_END = b"\r\n\r\n"
MAX_REQUEST = 65536
STOP_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1

NAMES = ("serial", "threadpool", "socketserver", "fastaccept", "c-inline")

Handler = Callable[[socket.socket, Any], None]


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


def make_handler(sleep_ms: float = 0.0, cpu_iters: int = 0) -> Handler:
    """Return handler(conn, addr): read the request, do the work, reply 200 "ok".

    The caller closes ``conn``.
    """
    sleep_s = sleep_ms / 1000.0
    response = RESPONSE

    if not sleep_s and not cpu_iters:
        def handler(conn: socket.socket, addr: Any) -> None:
            if read_request(conn):
                conn.sendall(response)
        return handler

    def working_handler(conn: socket.socket, addr: Any) -> None:
        if not read_request(conn):
            return
        if sleep_s:
            time.sleep(sleep_s)
        if cpu_iters:
            burn(cpu_iters)
        conn.sendall(response)
    return working_handler


def _serve_one(handler: Handler, conn: socket.socket, addr: Any,
               served: "itertools.count[int]") -> None:
    try:
        handler(conn, addr)
    except OSError:
        pass            # the client went away: nothing to report in a benchmark
    finally:
        conn.close()
        next(served)    # itertools.count is atomic under the GIL; += is not


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
                    handler(self.request, self.client_address)
                except OSError:
                    pass
                next(served)

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
    """fastaccept.Server over the listening socket."""

    def start(self) -> None:
        from fastaccept import Server

        handler, served = self.handler, self.counter

        def counted(conn: socket.socket, addr: Any) -> None:
            try:
                handler(conn, addr)
            except OSError:
                pass
            next(served)

        # timeout=None: no timeout, as the module docstring says (the default is 30 s)
        self.server = Server(counted, sock=self.lsock, workers=self.workers, timeout=None)
        self.server.start()

    def stop(self, deadline: float) -> bool:
        return self.server.shutdown(timeout=max(0.0, deadline - time.monotonic()))


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
    "c-inline": InlineServer,
}


def _die_with_parent(parent: int) -> None:
    """Get SIGTERM when the parent dies, so a crashed bench leaves no server behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:      # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m fastaccept.bench.refservers``."""
    p = argparse.ArgumentParser(prog="python -m fastaccept.bench.refservers",
                                description="run one reference server for the benchmarks")
    p.add_argument("name", choices=NAMES)
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
    if args.parent is not None:
        _die_with_parent(args.parent)
    # Block the stop signals before any thread exists (threads inherit the
    # mask), then wait for them with sigwait: no handler, no polling.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    cpu_iters = args.cpu_iters if args.cpu_iters is not None else calibrate_cpu_iters(args.cpu_ms)
    handler = make_handler(args.sleep_ms, cpu_iters)
    lsock = _listening_socket(args)
    server = SERVER_CLASSES[args.name](lsock, handler, args.workers)
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


if __name__ == "__main__":
    sys.exit(main())

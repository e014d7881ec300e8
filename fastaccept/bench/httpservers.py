"""The HTTP peers of the bench, one per process, all serving ``wsgiapp.app``.

    gunicorn         gunicorn's gthread worker: 1 worker process, T threads
    waitress         waitress (one asyncore I/O thread, T worker threads)
    cheroot          cheroot.wsgi.Server (the CherryPy server), a pool of T threads
    granian          granian's WSGI interface: 1 worker process, 1 runtime
                     (Rust I/O) thread, T blocking threads running the app

fastaccept's own row is refservers' ``wsgi`` server with ``--hello
--keep-alive 300`` (scenarios.HTTP_WSGI_OPTIONS): the one way the bench
starts a WSGIServer. The peers are benchmark references:
``pip install 'fastaccept[peers]'`` installs them. The product never imports
them (nor this module); a peer that is not installed is reported by
``missing(NAME)``, and the bench skips it with that line.

Every server gets the same application, T threads where it has threads (the
bench gives T = 8, as to fastaccept-wsgi-8), no access log, HTTP/1.1
keep-alive on, with the longest idle time a run could need:

    keep-alive     KEEP_ALIVE_S (300 s, as fastaccept's keep_alive) where the
                   server has such a timeout: gunicorn's --keep-alive,
                   waitress's channel_timeout, cheroot's timeout; granian has
                   none but its header read timeout, which also closes idle
                   kept connections: its maximum, 60 s, longer than any run
    connections    at most MAX_CONNECTIONS (10,000, fastaccept's default
                   max_connections) open at once where the server has a limit
                   of its own (gunicorn's --worker-connections, default 1000;
                   waitress's connection_limit, default 100; granian's
                   --backpressure, default backlog / workers), so that a burst
                   measures how fast each drains the accept queue, not a
                   smaller default limit; cheroot has no such limit.
                   cheroot's keep_alive_conn_limit (default 10: keep-alive
                   off beyond 10 connections) is lifted (None), else 64
                   keep-alive clients would get Connection: close. waitress
                   polls with poll(), not select(), which cannot watch
                   descriptors above 1024 (asyncore_use_poll).

The listening socket: the bench makes it (bound, listening with the
scenario's backlog) and the child inherits it, as for refservers, wherever
the server can take one:

    gunicorn         --bind fd://N (gunicorn leaves a socket that already
                     listens alone; --backlog is given the same value anyway)
    waitress         create_server(sockets=[sock], backlog=B): it calls
                     listen(B) again, with the same backlog
    cheroot          no option takes a socket (only systemd's LISTEN_FDS, on fd
                     3): the server's bind() step is overridden to adopt it;
                     prepare() then calls listen(request_queue_size = B)
    granian          cannot take a socket or a descriptor on Linux (each
                     worker builds its own listener from host, port and
                     backlog): it binds ``--port P`` that the bench chose
                     (a free port of its private network namespace) with
                     ``--backlog B``. The bench then reads its accept queue
                     with sock_diag rather than TCP_INFO on its own socket.

gunicorn and granian run as child processes of this one, by their own
command lines (``command(NAME, ...)``; it dies with this process); the
bench adds the CPU time and memory of the whole process tree. waitress and
cheroot run in this process.

Run one with::

    python -m fastaccept.bench.httpservers NAME (--fd FD | --port P) [--backlog B]
        [--threads T] [--parent PID] [--fds N]

It prints ``port N`` on stdout once the server answered a request of its
own (so gunicorn's and granian's workers are up), serves until SIGTERM or
SIGINT, then stops and exits with status 0 (the peers do not count the
requests they answered: the process prints no ``served N``).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, List, NoReturn, Optional

from fastaccept.bench.refservers import die_with_parent, take_process_options
from fastaccept.bench.scenarios import HTTP_KEEP_ALIVE_S

__all__ = ["NAMES", "PEERS", "BINDS_ITSELF", "KEEP_ALIVE_S", "MAX_CONNECTIONS", "APP_TARGET",
           "missing", "command", "probe", "main"]

NAMES = ("gunicorn", "waitress", "cheroot", "granian")
#: The peers and the package each needs.
PEERS = {"gunicorn": "gunicorn", "waitress": "waitress", "cheroot": "cheroot",
         "granian": "granian"}
#: Servers that cannot take the bench's socket: they bind --port themselves.
BINDS_ITSELF = frozenset({"granian"})
#: Longer than any run: no server closes an idle kept connection mid-run.
KEEP_ALIVE_S = HTTP_KEEP_ALIVE_S
#: The smallest backlog granian takes.
GRANIAN_MIN_BACKLOG = 128
#: granian's longest header read timeout (ms), its only idle timeout.
GRANIAN_HEADER_TIMEOUT_MS = 60000
#: Open connections a server may hold, where it has a limit: fastaccept's default.
MAX_CONNECTIONS = 10000
APP_TARGET = "fastaccept.bench.wsgiapp:app"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0          # for the server's first answer
CHILD_STOP_S = 10.0             # a peer's own process tree, after SIGTERM
PROBE_RETRY_S = 0.02


def missing(name: str) -> Optional[str]:
    """Why server ``name`` cannot run here (its package is not installed), or None."""
    package = PEERS.get(name)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"{package} is not installed (pip install 'fastaccept[peers]')"


def command(name: str, *, fd: Optional[int], port: int, backlog: int,
            threads: int) -> List[str]:
    """The command line of a peer that runs as a child (gunicorn, granian)."""
    if name == "gunicorn":
        if fd is None:
            raise ValueError("gunicorn serves the inherited socket: give fd")
        # --graceful-timeout bounds the stop: a kept connection would hold
        # the worker's graceful exit for the default 30 s.
        return [sys.executable, "-m", "gunicorn", "--worker-class", "gthread",
                "--workers", "1", "--threads", str(threads), "--bind", f"fd://{fd}",
                "--backlog", str(backlog), "--keep-alive", str(KEEP_ALIVE_S),
                "--worker-connections", str(MAX_CONNECTIONS), "--graceful-timeout", "5",
                "--log-level", "warning", APP_TARGET]
    if name == "granian":
        return [sys.executable, "-m", "granian", "--interface", "wsgi", "--http", "1",
                "--no-ws", "--host", HOST, "--port", str(port), "--backlog", str(backlog),
                "--workers", "1", "--runtime-threads", "1", "--blocking-threads",
                str(threads), "--backpressure", str(MAX_CONNECTIONS),
                "--http1-header-read-timeout", str(GRANIAN_HEADER_TIMEOUT_MS),
                "--no-access-log", "--log-level", "warning", APP_TARGET]
    raise ValueError(f"{name} runs in this process, not by a command line")


def probe(port: int, timeout: float = 2.0) -> bool:
    """Send one HTTP/1.0 GET to 127.0.0.1:port; True if it was answered 200."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: %s:%d\r\n\r\n" % (HOST.encode(), port))
            with s.makefile("rb") as reply:
                data = reply.read()         # to EOF: HTTP/1.0, the server closes
    except OSError:
        return False
    return data.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 "))


def _wait_serving(port: int, alive: Callable[[], bool]) -> None:
    """Return once the server answers; RuntimeError if it died or took too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not probe(port):
        if not alive():
            raise RuntimeError("the server exited before it answered")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"no answer on port {port} within {START_TIMEOUT_S:g} s")
        time.sleep(PROBE_RETRY_S)   # a retry interval: the server is still starting


def _announce(port: int) -> None:
    print(f"port {port}", flush=True)


# -- the servers ---------------------------------------------------------------------

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _serve_cheroot(lsock: socket.socket, threads: int, backlog: int) -> None:
    from cheroot import wsgi

    from fastaccept.bench.wsgiapp import app

    # (misc: cheroot without its stubs is Any, which strict mypy will not subclass)
    class Server(wsgi.Server):  # type: ignore[misc,unused-ignore]
        """cheroot's server on the bench's socket: its bind() step adopts it."""

        def bind(self, family: int, type: int, proto: int = 0) -> socket.socket:
            self.socket = lsock
            self.bind_addr = lsock.getsockname()
            return lsock

    server = Server(lsock.getsockname(), app, numthreads=threads, max=threads,
                    request_queue_size=backlog, timeout=KEEP_ALIVE_S)
    # cheroot documents None as "no limit"; its stub says int
    server.keep_alive_conn_limit = None  # type: ignore[assignment,unused-ignore]
    server.prepare()
    thread = threading.Thread(target=server.serve, name="cheroot-serve", daemon=True)
    thread.start()
    try:
        _wait_serving(lsock.getsockname()[1], thread.is_alive)
        _announce(lsock.getsockname()[1])
        signal.sigwait(STOP_SIGNALS)
    finally:
        server.stop()
        thread.join(CHILD_STOP_S)


def _serve_waitress(lsock: socket.socket, threads: int, backlog: int) -> None:
    from waitress import create_server

    from fastaccept.bench.wsgiapp import app

    server = create_server(app, sockets=[lsock], threads=threads, backlog=backlog,
                           channel_timeout=KEEP_ALIVE_S, connection_limit=MAX_CONNECTIONS,
                           asyncore_use_poll=True, ident="waitress")
    port = lsock.getsockname()[1]

    def announce() -> None:
        try:
            _wait_serving(port, lambda: True)
        except RuntimeError as e:
            print(f"waitress: {e}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        _announce(port)

    def stop(signum: int, frame: Any) -> NoReturn:
        raise SystemExit(0)

    # waitress's loop runs in this (the main) thread and stops on SystemExit,
    # which the signal handler raises there.
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    threading.Thread(target=announce, name="waitress-announce", daemon=True).start()
    server.run()


def _serve_child(name: str, lsock: Optional[socket.socket], port: int, threads: int,
                 backlog: int) -> None:
    fd = lsock.fileno() if lsock is not None else None
    cmd = command(name, fd=fd, port=port, backlog=backlog, threads=threads)
    parent = os.getpid()

    def in_child() -> None:
        # A signal mask survives exec: the peer must get the SIGTERM this
        # process blocked for its sigwait.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        die_with_parent(parent)

    # The peer's own output goes to stderr: stdout carries the port line alone.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                            pass_fds=() if fd is None else (fd,), preexec_fn=in_child)
    try:
        _wait_serving(port, lambda: proc.poll() is None)
        _announce(port)
        signal.sigwait(STOP_SIGNALS)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(CHILD_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m fastaccept.bench.httpservers``."""
    p = argparse.ArgumentParser(prog="python -m fastaccept.bench.httpservers",
                                description="run one HTTP reference server for the bench")
    p.add_argument("name", choices=NAMES)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="serve this inherited listening socket")
    where.add_argument("--port", type=int,
                       help="bind 127.0.0.1:PORT (for the servers that take no socket)")
    p.add_argument("--backlog", type=int, default=128,
                   help="the listen backlog (the inherited socket's; default 128)")
    p.add_argument("--threads", type=int, default=8,
                   help="threads that run the application (default 8)")
    p.add_argument("--parent", type=int, default=None,
                   help="exit when this process (the bench) dies")
    p.add_argument("--fds", type=int, default=None,
                   help="raise RLIMIT_NOFILE's soft limit to at least this")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.backlog < 1:
        print("threads and backlog must be >= 1", file=sys.stderr)
        return 2
    # (usage first: a wrong command line is wrong whether the peer is installed or not)
    if args.name == "granian" and args.backlog < GRANIAN_MIN_BACKLOG:
        print(f"granian takes a backlog of at least {GRANIAN_MIN_BACKLOG}", file=sys.stderr)
        return 2
    if (args.port is not None) != (args.name in BINDS_ITSELF):
        need = "--port" if args.name in BINDS_ITSELF else "--fd"
        print(f"{args.name} needs {need}", file=sys.stderr)
        return 2
    why = missing(args.name)
    if why is not None:
        print(f"{args.name}: {why}", file=sys.stderr)
        return 3
    why = take_process_options(args.fds, args.parent)
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    # The stop signals are blocked before any thread exists (threads inherit
    # the mask) and taken with sigwait; waitress unblocks them for its own.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    lsock: Optional[socket.socket] = None
    if args.fd is not None:
        lsock = socket.socket(fileno=args.fd)
        if not lsock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            lsock.detach()
            print(f"--fd {args.fd} is not a listening socket", file=sys.stderr)
            return 2
    try:
        if args.name in ("gunicorn", "granian"):
            port = args.port if lsock is None else lsock.getsockname()[1]
            _serve_child(args.name, lsock, port, args.threads, args.backlog)
        else:
            assert lsock is not None
            serve = {"cheroot": _serve_cheroot, "waitress": _serve_waitress}[args.name]
            serve(lsock, args.threads, args.backlog)
    except RuntimeError as e:
        print(f"{args.name}: {e}", file=sys.stderr)
        return 1
    finally:
        if lsock is not None:
            lsock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo server: ``fastaccept serve`` answers every request with HTTP 200 "ok".

It reads one request head and answers a fixed reply, with ``Server``'s
defaults; it exists to try fastaccept in one command and to watch it work
(``--stats-interval``). The bench's reference servers send the same reply.
"""
from __future__ import annotations

import argparse
import os
import socket
import threading
from typing import Any, Dict, Optional

from fastaccept._core import OVERLOAD_POLICIES
from fastaccept._options import DEFAULT_BACKLOG, DEFAULT_RING_SIZE, DEFAULT_TIMEOUT, MAX_TIMEOUT

__all__ = ["DEMO_REPLY", "DEMO_SHED_REPLY", "demo_handler", "format_stats", "add_arguments",
           "run"]

#: The one demo reply: the demo server's and the bench's reference servers'.
DEMO_REPLY = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
#: What ``serve --overload shed`` answers when the ring is full.
DEMO_SHED_REPLY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
REQUEST_END = b"\r\n\r\n"
MAX_REQUEST = 65536
DEFAULT_PORT = 8080


def demo_handler(conn: socket.socket, addr: Any) -> None:
    """Read one request head (up to 64 KiB), answer 200 "ok"; the server closes."""
    data = b""
    while REQUEST_END not in data and len(data) < MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    conn.sendall(DEMO_REPLY)


def format_stats(st: Dict[str, Any]) -> str:
    """Return one line summarising Server.stats() for a terminal."""
    errors = ", ".join(f"{k} {v}" for k, v in st["accept_errors"].items()) or "none"
    return (f"accepted {st['accepted']}  handled {st['handled']}  handler errors "
            f"{st['handler_errors']}  busy {st['workers_busy']}/{st['workers']}  "
            f"ring {st['ring_depth']}/{st['ring_capacity']} (high {st['ring_high_water']}, "
            f"full {st['ring_full_waits']})  kernel queue {st['kernel_queue_depth']}/"
            f"{st['kernel_backlog']}  queue wait p50 {st['queue_wait_p50_us']} us p99 "
            f"{st['queue_wait_p99_us']} us  accept errors {errors}  EMFILE pauses "
            f"{st['emfile_pauses']}  ListenOverflows {st['listen_overflows']} "
            f"({st['listen_counters_scope']})")


def timeout_arg(text: str) -> Optional[float]:
    """Parse a --timeout: seconds, or "none" for no timeout."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'none': {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the serve verb's options to ``parser``."""
    from fastaccept import supervise

    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to bind (default {DEFAULT_PORT}; 0 picks one)")
    parser.add_argument("--workers", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG,
                        help=f"listen backlog (default {DEFAULT_BACKLOG})")
    parser.add_argument("--ring-size", type=int, default=DEFAULT_RING_SIZE,
                        help="ring slots, a power of two")
    parser.add_argument("--timeout", type=timeout_arg, default=DEFAULT_TIMEOUT,
                        help="per-connection socket timeout in seconds, or 'none' "
                             f"(default {DEFAULT_TIMEOUT:g}, as Server)")
    parser.add_argument("--overload", choices=OVERLOAD_POLICIES, default="queue",
                        help="when the ring is full: leave connections in the kernel "
                             "backlog (queue, the default) or answer them 503 from C (shed)")
    parser.add_argument("--proxy-protocol", action="store_true",
                        help="behind a load balancer: every connection must start with a "
                             "PROXY protocol header (v1 or v2, e.g. HAProxy's send-proxy-v2), "
                             "whose client address is then the peer's; others are closed")
    parser.add_argument("--stats-interval", type=float, default=None, metavar="S",
                        help="print the server's stats every S seconds (each process's "
                             "with --processes)")
    supervise.add_arguments(parser)


def _print_stats_every(server: Any, interval: float, done: threading.Event,
                       prefix: str) -> None:
    while not done.wait(interval):
        print(prefix + format_stats(server.stats()), flush=True)


def run(args: argparse.Namespace) -> int:
    """The serve verb: serve until SIGINT/SIGTERM; print the totals."""
    from fastaccept import _options, supervise
    from fastaccept.server import Server

    if args.stats_interval is not None and not 0 < args.stats_interval <= MAX_TIMEOUT:
        raise ValueError(f"--stats-interval must be > 0 and at most {MAX_TIMEOUT:g} s, "
                         f"got {args.stats_interval}")
    # Checked here, before any child exists: a bad option is an error, not a
    # start failure of every child.
    _options.check_int("workers", args.workers, 1, _options.MAX_WORKERS)
    _options.check_ring_size(args.ring_size)
    _options.check_timeout(args.timeout)
    shed_reply = DEMO_SHED_REPLY if args.overload == "shed" else b""
    _options.check_overload(args.overload, shed_reply)

    def factory(sock: socket.socket) -> Server:
        return Server(demo_handler, sock=sock, workers=args.workers, ring_size=args.ring_size,
                      timeout=args.timeout, overload=args.overload, shed_response=shed_reply,
                      proxy_protocol=args.proxy_protocol)

    done = threading.Event()
    several = args.processes > 1

    def on_start(server: Server) -> None:
        if args.stats_interval is None:
            return
        prefix = f"stats [{os.getpid()}]: " if several else "stats: "
        threading.Thread(target=_print_stats_every, name="fastaccept-stats", daemon=True,
                         args=(server, args.stats_interval, done, prefix)).start()

    supervisor = supervise.from_args(args, factory, on_start=on_start)
    host, port = supervisor.address[:2]
    shown = f"[{host}]" if ":" in host else host
    how = (f"{args.workers} workers x {args.processes} processes, "
           f"{supervisor.listeners.layout} listener" if several else f"{args.workers} workers")
    print(f"fastaccept serving on http://{shown}:{port}/ ({how}); Ctrl-C to stop", flush=True)
    try:
        status = supervisor.run()
    finally:
        done.set()
    stats = supervisor.totals()
    print(f"stopped: accepted {stats.get('accepted', 0)}, handled {stats.get('handled', 0)}, "
          f"handler errors {stats.get('handler_errors', 0)}", flush=True)
    return status

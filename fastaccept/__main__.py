"""Command line: ``python -m fastaccept VERB``.

    serve   a demo server answering every connection with a fixed HTTP 200
    bench   benchmark fastaccept against reference servers (see fastaccept.bench)
    load    open many connections to a server from C and report rate and latency
    monitor watch any listening TCP port's kernel accept queue (see fastaccept.monitor)
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from typing import Any, List, Optional

DEMO_REPLY = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
#: What ``serve --overload shed`` answers when the ring is full.
DEMO_SHED_REPLY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
REQUEST_END = b"\r\n\r\n"
MAX_REQUEST = 65536


def demo_handler(conn: socket.socket, addr: Any) -> None:
    """Read one request head (up to 64 KiB), answer 200 "ok"; the server closes."""
    data = b""
    while REQUEST_END not in data and len(data) < MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    conn.sendall(DEMO_REPLY)


def format_stats(st: dict) -> str:
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


def _timeout_arg(text: str) -> Optional[float]:
    """Parse --timeout: seconds, or "none" for no timeout."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'none': {text!r}") from None


def _print_stats_every(server: Any, interval: float, done: threading.Event) -> None:
    while not done.wait(interval):
        print("stats: " + format_stats(server.stats()), flush=True)


def _serve(args: argparse.Namespace) -> int:
    from fastaccept import Server

    if args.stats_interval is not None and not args.stats_interval > 0:
        raise ValueError(f"--stats-interval must be > 0, got {args.stats_interval}")
    shed_reply = DEMO_SHED_REPLY if args.overload == "shed" else b""
    server = Server(demo_handler, args.host, args.port, workers=args.workers,
                    backlog=args.backlog, ring_size=args.ring_size, timeout=args.timeout,
                    overload=args.overload, shed_response=shed_reply)
    host, port = server.address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"fastaccept serving on http://{shown}:{port}/ ({args.workers} workers); "
          "Ctrl-C to stop", flush=True)
    done = threading.Event()
    printer = None
    if args.stats_interval is not None:
        printer = threading.Thread(target=_print_stats_every, name="fastaccept-stats",
                                   args=(server, args.stats_interval, done), daemon=True)
        printer.start()
    try:
        server.serve_forever()
    finally:
        done.set()
        if printer is not None:
            printer.join()
    stats = server.stats()
    print(f"stopped: accepted {stats['accepted']}, handled {stats['handled']}, "
          f"handler errors {stats['handler_errors']}", flush=True)
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from fastaccept import monitor

    return monitor.main(args.port, once=args.once, as_json=args.json, interval=args.interval,
                        count=args.count, source=args.source)


def _bench(args: argparse.Namespace) -> int:
    from fastaccept import bench

    return bench.main(args)


def _load(args: argparse.Namespace) -> int:
    import json

    from fastaccept import loadgen

    result = loadgen.run(args.host, args.port, connections=args.connections,
                         concurrency=args.concurrency, burst=args.burst, timeout=args.timeout,
                         max_seconds=args.max_seconds)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2), flush=True)
        return 0
    shown = f"[{args.host}]" if ":" in args.host else args.host
    cut = (f" ({args.connections - result.connections} not started: the run's time bound "
           "passed)"
           if result.connections < args.connections else "")
    print(f"load {shown}:{args.port}: completed {result.completed}/{result.connections} in "
          f"{result.elapsed_s:.3f} s (all started in {result.issue_s:.3f} s), "
          f"{result.conn_per_s:.0f} conn/s{cut}")
    print("failures: " + ", ".join(f"{k} {v}" for k, v in result.failures.items()))
    for name, p in (("connect", result.connect_ms), ("rtt", result.rtt_ms)):
        print(f"{name + ' ms:':12} p50 {p.p50:.3f}  p90 {p.p90:.3f}  p99 {p.p99:.3f}  "
              f"max {p.max:.3f}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every verb."""
    from fastaccept._core import OVERLOAD_POLICIES
    from fastaccept.server import DEFAULT_TIMEOUT

    parser = argparse.ArgumentParser(prog="python -m fastaccept",
                                     description="fastaccept command line tools")
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", help="run a demo server that answers HTTP 200 \"ok\"")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default 8080; 0 picks one)")
    serve.add_argument("--workers", type=int, default=8, help="worker threads (default 8)")
    serve.add_argument("--backlog", type=int, default=2048, help="listen backlog (default 2048)")
    serve.add_argument("--ring-size", type=int, default=4096, help="ring slots, a power of two")
    serve.add_argument("--timeout", type=_timeout_arg, default=DEFAULT_TIMEOUT,
                       help="per-connection socket timeout in seconds, or 'none' "
                            f"(default {DEFAULT_TIMEOUT:g}, as Server)")
    serve.add_argument("--overload", choices=OVERLOAD_POLICIES, default="queue",
                       help="when the ring is full: leave connections in the kernel "
                            "backlog (queue, the default) or answer them 503 from C (shed)")
    serve.add_argument("--stats-interval", type=float, default=None, metavar="S",
                       help="print the server's stats every S seconds")
    serve.set_defaults(run=_serve)

    from fastaccept.bench import add_arguments as add_bench_arguments
    bench = verbs.add_parser("bench", help="benchmark fastaccept against reference servers",
                             description="Run the load scenarios against every reference "
                             "server, interleaved, and print a table of medians.")
    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)

    load = verbs.add_parser("load", help="open many connections to a server from C and "
                            "report conn/s and latency percentiles",
                            description="Connect, send one HTTP/1.0 request, read to EOF, "
                            "close: N times, from one C epoll thread.")
    load.add_argument("host", help="server address or name")
    load.add_argument("port", type=int, help="server port")
    load.add_argument("-n", "--connections", type=int, default=20000,
                      help="connections to make (default 20000)")
    load.add_argument("-c", "--concurrency", type=int, default=64,
                      help="connections open at once (default 64)")
    load.add_argument("--burst", action="store_true",
                      help="open all connections at once (ignores -c)")
    load.add_argument("--timeout", type=float, default=10.0,
                      help="per-connection timeout in seconds (default 10)")
    load.add_argument("--max-seconds", type=float, default=None,
                      help="start no connection later than this many seconds into the run, "
                      "which then ends within max-seconds + timeout (default: no bound but "
                      "the run's shape: connections, concurrency and timeout)")
    load.add_argument("--json", action="store_true", help="print the result as JSON")
    load.set_defaults(run=_load)

    mon = verbs.add_parser("monitor", help="watch a listening TCP port's kernel accept queue",
                           description="Show the accept-queue depth and backlog of every "
                           "socket listening on PORT (IPv4 and IPv6, any server), the "
                           "established connections on it, and the kernel's ListenOverflows "
                           "and ListenDrops rates (namespace-wide counters), from /proc/net. "
                           "Exits 1 when nothing listens on PORT.")
    mon.add_argument("port", type=int, help="the listening port")
    mon.add_argument("--once", action="store_true",
                     help="print one reading and exit (rates over --interval)")
    mon.add_argument("--json", action="store_true", help="print JSON, one object per reading")
    mon.add_argument("--interval", type=float, default=1.0, metavar="S",
                     help="seconds between readings (default 1)")
    mon.add_argument("--count", type=int, default=None, metavar="N",
                     help="stop after N readings (default: until Ctrl-C)")
    mon.add_argument("--source", choices=("auto", "sock_diag", "proc"), default="auto",
                     help="read sockets with sock_diag netlink, /proc/net/tcp* (no backlog), "
                     "or the first that works (default auto)")
    mon.set_defaults(run=_monitor)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"python -m fastaccept {args.verb}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

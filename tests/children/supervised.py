"""fastaccept.serve_processes() in a process of its own, watched through its events.

Prints one JSON line per event on stdout: first {"event": "listening",
"address": [host, port], "pid": supervisor's pid}, then each of the
supervisor's on_event dicts as it happens, and last {"event": "exit",
"status": N, "totals": {...}} before it exits with that status.

Every process serves a fastaccept.WSGIServer whose application answers
200 "ok" (after --sleep-ms). Options:

    --processes N, --listener shared|reuseport, --graceful S, --backoff S,
    --max-start-failures N, --min-uptime S, --fd N    serve_processes's
    --workers N, --sleep-ms MS                        the server's, the app's
    --record FILE       each factory call appends a JSON line: its pid, the
                        monotonic time, its threads, its descriptors, the
                        listener's number and the servers already started
    --fail-while PATH   the factory raises while PATH exists (an application
                        that raises at import)
    --gate FIFO         the factory first opens FIFO for reading: it blocks
                        until the test opens the other end
    --block-sigterm     the factory blocks SIGTERM (a child that ignores it)
    --stuck-ms MS       the app sleeps MS on the path /stuck (a request that
                        outlasts the graceful timeout)
"""
import argparse
import json
import logging
import os
import signal
import sys
import time

import fastaccept
from fastaccept import _fork


def emit(event):
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def fd_table():
    table = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            table[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return table


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--listener", default=None)
    p.add_argument("--graceful", type=float, default=10.0)
    p.add_argument("--backoff", type=float, default=0.05)
    p.add_argument("--max-start-failures", type=int, default=6)
    p.add_argument("--min-uptime", type=float, default=0.0)
    p.add_argument("--fd", type=int, default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--sleep-ms", type=float, default=0.0)
    p.add_argument("--stuck-ms", type=float, default=0.0)
    p.add_argument("--record", default=None)
    p.add_argument("--fail-while", default=None)
    p.add_argument("--gate", default=None)
    p.add_argument("--block-sigterm", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s [%(process)d] %(levelname)s %(message)s")

    def app(environ, start_response):
        if args.stuck_ms and environ["PATH_INFO"] == "/stuck":
            time.sleep(args.stuck_ms / 1000.0)
        elif args.sleep_ms:
            time.sleep(args.sleep_ms / 1000.0)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    def factory(sock):
        if args.record:
            line = {"pid": os.getpid(), "t": time.monotonic(),
                    "threads": len(os.listdir("/proc/self/task")), "fds": fd_table(),
                    "listener": sock.fileno(),
                    "started": sum(1 for s in list(_fork._started)
                                   if s._state in ("running", "stopping"))}
            with open(args.record, "a") as f:
                f.write(json.dumps(line) + "\n")
        if args.gate:
            with open(args.gate, "rb"):
                pass
        if args.fail_while and os.path.exists(args.fail_while):
            raise RuntimeError(f"cannot import the application ({args.fail_while} exists)")
        if args.block_sigterm:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        return fastaccept.WSGIServer(app, sock=sock, workers=args.workers)

    options = dict(processes=args.processes, graceful_timeout=args.graceful,
                   backoff=args.backoff, max_start_failures=args.max_start_failures,
                   min_uptime=args.min_uptime, on_event=emit)
    if args.listener:
        options["listener"] = args.listener
    if args.fd is not None:
        options["fd"] = args.fd
    supervisor = fastaccept.supervise.Supervisor(factory, **options)
    emit({"event": "listening", "address": supervisor.address, "pid": os.getpid(),
          "layout": supervisor.listeners.layout})
    status = supervisor.run()
    emit({"event": "exit", "status": status, "totals": supervisor.totals()})
    return status


if __name__ == "__main__":
    sys.exit(main())

"""A fastaccept.Server driven through stdin, for tests that watch it from outside.

Each connection gets b"ok" once its request head is in; until then the
handler holds it (and its descriptor). Prints {"address": [host, port]},
then reads commands, one a line:

    stats   print server.stats() with "fds": the descriptors open, less the
            transient ones under /proc (null when none is free to list them)
    quit    (or EOF) shut down and print the final stats with "shutdown_ok"

Every answer is one JSON line on stdout. Options:

    --nofile N    RLIMIT_NOFILE's soft limit, set before fastaccept is imported
    --workers N, --backlog N, --timeout S    Server's (its defaults otherwise)

tests/test_server.py runs it out of descriptors; tests/test_reliability.py
runs it with children/accept_shim.c preloaded to make accept4() fail.
"""
import argparse
import json
import os
import sys

from childlib import read_request, set_fd_limit


def fds_outside_proc():
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:         # EMFILE: the accept loop holds every free fd
        return None
    fds = 0
    for name in names:
        try:
            fds += not os.readlink("/proc/self/fd/" + name).startswith("/proc/")
        except OSError:
            pass            # closed since (listdir's own, the monitor's netstat)
    return fds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nofile", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backlog", type=int)
    parser.add_argument("--timeout", type=float)
    args = parser.parse_args()
    if args.nofile is not None:
        set_fd_limit(args.nofile)
    import fastaccept

    def handler(conn, addr):
        if read_request(conn):
            conn.sendall(b"ok")

    options = {k: v for k, v in (("backlog", args.backlog), ("timeout", args.timeout))
               if v is not None}
    server = fastaccept.Server(handler, "127.0.0.1", 0, workers=args.workers, **options)
    server.start()
    print(json.dumps({"address": server.address}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps(dict(server.stats(), fds=fds_outside_proc())), flush=True)
        elif line.strip() == "quit":
            break
    ok = server.shutdown(timeout=10.0)
    print(json.dumps(dict(server.stats(), shutdown_ok=ok)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

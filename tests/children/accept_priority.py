"""Serve one request with a given accept_priority; print what the loop ran as.

    python accept_priority.py realtime|normal [--drop]

--drop first gives up the right to realtime scheduling: RLIMIT_RTPRIO 0
and, for root, the user nobody (which clears CAP_SYS_NICE). The last line
printed is JSON: accept_realtime from stats(), the accept thread's policy
and name while it ran, and whether the request was answered.
"""
import json
import os
import resource
import socket
import sys

import fastaccept
from childlib import read_request, thread_name, threads_named

NOBODY = 65534


def drop_realtime() -> None:
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def main() -> int:
    priority = sys.argv[1]

    def handler(conn: socket.socket, addr) -> None:
        read_request(conn)
        conn.sendall(b"ok")

    server = fastaccept.Server(handler, accept_priority=priority, workers=1)
    if "--drop" in sys.argv[2:]:
        drop_realtime()     # after the imports: nobody may not read them
    server.start()
    try:
        with socket.create_connection(server.address, timeout=10.0) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            served = sock.recv(16) == b"ok"
        loops = threads_named("fa-accept")
        policy = os.sched_getscheduler(loops[0]) if len(loops) == 1 else None
        names = [thread_name(t) for t in loops]
        realtime = server.stats()["accept_realtime"]
    finally:
        server.shutdown(timeout=10.0)
    print(json.dumps({"accept_realtime": realtime, "policy": policy, "names": names,
                      "served": served, "uid": os.getuid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

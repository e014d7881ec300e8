"""A Server whose two handlers block for good, shut down with a timeout.

Prints {"address": [host, port]}, waits (up to 30 s, else exit 3) until the
test's clients fill both workers and one ring slot, then calls
shutdown(timeout=0.5) and prints {"shutdown": its result, "took": seconds}.
The program then ends with the workers still stuck: the interpreter must
exit anyway (they are daemon threads). Warnings are logged to stderr.
"""
import json
import logging
import sys
import threading
import time

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
import fastaccept  # noqa: E402  (after the logging set-up)

forever = threading.Event()


def handler(conn, addr):
    forever.wait()          # never set, no timeout: stuck for good


server = fastaccept.Server(handler, "127.0.0.1", 0, workers=2, ring_size=4)
server.start()
print(json.dumps({"address": server.address}), flush=True)
deadline = time.monotonic() + 30.0
while server.stats()["workers_busy"] < 2 or server.stats()["ring_depth"] < 1:
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.01)        # a poll interval; the loop re-checks the stats
t0 = time.monotonic()
ok = server.shutdown(timeout=0.5)
print(json.dumps({"shutdown": ok, "took": time.monotonic() - t0}), flush=True)

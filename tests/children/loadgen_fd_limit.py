"""The load generator raises the soft fd limit when a run needs more.

Under a soft limit of 128, loadgen.run() makes 400 connections, 200 at a
time, to a c-inline server in a thread. Prints one JSON line: "completed"
(the run's), "served" ([what serve_inline returned]), "soft" (the soft limit
after the run) and "hard".
"""
import json
import os
import resource
import socket
import threading

from childlib import set_fd_limit
from fastaccept.bench import loadgen

hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
set_fd_limit(128)
lsock = socket.socket()
lsock.bind(("127.0.0.1", 0))
lsock.listen(1024)
stop_r, stop_w = os.pipe()
served = []
t = threading.Thread(target=lambda: served.append(
    loadgen.serve_inline(lsock.fileno(), b"ok", stop_r)))
t.start()
try:
    result = loadgen.run("127.0.0.1", lsock.getsockname()[1], connections=400,
                         concurrency=200, timeout=10)
finally:
    os.write(stop_w, b"x")
    t.join(10)
print(json.dumps({"completed": result.completed, "served": served,
                  "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "hard": hard}))

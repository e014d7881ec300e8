"""The load generator grows the fd table for its sockets plus slack before the load.

Under a soft limit of 8192, against a port nobody listens on (every connect
refused). Prints one JSON line: the table size (FDSize) "before", after one
connection run with the numbers up to 8 below the table's end held ("one":
only the slack can have grown it), after a burst of 3000 ("burst"), the
burst's "refused" count, and the descriptors open before and after
("open_before", "open_after").
"""
import json
import os
import socket

from childlib import fd_table_size, open_fd_count, set_fd_limit
from fastaccept.bench import loadgen

set_fd_limit(8192)
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()                               # nothing listens there: every connect is refused
out = {"before": fd_table_size(), "open_before": open_fd_count()}
# Hold the numbers up to 8 below the table's end: one connection's epoll fd
# and socket still fit, so only the growth for the slack can enlarge it.
held = []
while True:
    fd = os.dup(0)
    if fd >= out["before"] - 8:
        os.close(fd)
        break
    held.append(fd)
loadgen.run("127.0.0.1", port, connections=1, concurrency=1, timeout=5.0)
out["one"] = fd_table_size()
for fd in held:
    os.close(fd)
result = loadgen.run("127.0.0.1", port, connections=3000, burst=True, timeout=5.0)
out["burst"] = fd_table_size()
out["refused"] = result.failures["refused"]
out["open_after"] = open_fd_count()
print(json.dumps(out))

"""How an Acceptor sizes the fd table: a full ring plus slack, capped by RLIMIT_NOFILE.

Prints one JSON line with the table size (FDSize) "before" any Acceptor,
once one with ring_size=65536 was made under a soft limit of 1000
("capped"), and once one with ring_size=4096 was made under 8192 ("grown").
"""
import json
import socket

import fastaccept
from childlib import fd_table_size, set_fd_limit

lsock = socket.socket()
lsock.bind(("127.0.0.1", 0))
lsock.listen(16)
out = {"before": fd_table_size()}
set_fd_limit(1000)
fastaccept.Acceptor(lsock.fileno(), ring_size=65536).close()   # wants 66560: capped
out["capped"] = fd_table_size()
set_fd_limit(8192)
fastaccept.Acceptor(lsock.fileno(), ring_size=4096).close()
out["grown"] = fd_table_size()
print(json.dumps(out))

"""The c-inline server (serve_inline) under a tiny fd limit.

usage: inline_emfile.py REPLY

Listens on a loopback port and prints it, then limits itself to room for
its epoll fd and about three clients and serves REPLY to every request
until a byte arrives on stdin; prints how many it served.
"""
import socket
import sys

from childlib import open_fd_count, set_fd_limit
from fastaccept.bench._loadgen import serve_inline

lsock = socket.socket()
lsock.bind(("127.0.0.1", 0))
lsock.listen(64)
print(lsock.getsockname()[1], flush=True)
set_fd_limit(open_fd_count() + 3)   # room for the epoll fd and about three clients
print(serve_inline(lsock.fileno(), sys.argv[1].encode(), 0), flush=True)

"""Plain helpers shared by the test modules (conftest.py puts this folder on sys.path)."""
from __future__ import annotations

import os
import socket

MAX_REPLY = 1 << 20


def open_fds() -> set:
    """Descriptors open now (without the one listdir itself used)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        fds.add(int(name))
    return fds


def read_to_eof(sock: socket.socket, limit: int = MAX_REPLY) -> bytes:
    """Read until the peer closes (the socket's own timeout bounds each recv)."""
    chunks = []
    size = 0
    while size < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

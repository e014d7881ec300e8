"""Plain helpers shared by the test modules (conftest.py puts this folder on sys.path)."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from typing import Any, Iterator, Optional

import pytest

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


def read_line(fd: int, timeout: float, writer: Optional[subprocess.Popen] = None) -> bytes:
    """One line from a pipe, or fail after timeout (the writer may hang).

    Read byte by byte, so nothing past the line is consumed. ``writer``, the
    process at the other end, is named with its exit status if the pipe closes."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no line within {timeout} s (got {data!r})", pytrace=False)
        byte = os.read(fd, 1)
        if not byte:
            who = "the writer" if writer is None else f"the child (status {writer.poll()})"
            pytest.fail(f"{who} closed the pipe after {data!r}", pytrace=False)
        data += byte
    return data


def has_loadgen() -> bool:
    """True if the bench's C extension (the load generator, c-inline) is built."""
    try:
        from fastaccept.bench import loadgen  # noqa: F401
        from fastaccept.bench._loadgen import serve_inline  # noqa: F401
    except ImportError:
        return False
    return True


#: Skips a test that needs fastaccept.bench._loadgen where it is not built.
needs_loadgen = pytest.mark.skipif(not has_loadgen(),
                                   reason="fastaccept.bench._loadgen is not built")


def has_ipv6_loopback() -> bool:
    """True if a TCP socket can bind ::1 here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def no_new_fds() -> Iterator[None]:
    """Lower RLIMIT_NOFILE's soft limit to the lowest free descriptor number
    for the block: no new descriptor can be allocated (EMFILE), but every
    open one stays usable. The limit is restored on the way out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.dup(0)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


#: For child scripts: the size of the calling process's fd table.
FD_TABLE_SIZE_SRC = """
def fd_table_size():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))
"""


def run_child_json(script: str, cwd: Any) -> Any:
    """Run script in a child Python (its fd limit and fd table are its own,
    and from cwd it imports the installed package); return the JSON it prints."""
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(cwd),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)

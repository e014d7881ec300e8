"""What the child programs in this folder share; they import it as ``childlib``.

A child runs as ``python tests/children/NAME.py`` from a scratch directory:
its own folder comes first on ``sys.path`` (so ``import childlib`` finds this
file) and the source tree not at all (so ``import fastaccept`` finds the
installed package). The test process imports this module too, as
``children.childlib`` (conftest.py puts tests/ on ``sys.path``), for
``read_request``: one copy serves the handlers on both sides.
"""
import os
import resource
import socket

REQUEST_END = b"\r\n\r\n"


def read_request(conn: socket.socket, limit: int = 65536) -> bytes:
    """Read one request head (up to the blank line); b"" if the peer closed first."""
    data = b""
    while REQUEST_END not in data and len(data) < limit:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


def set_fd_limit(soft: int) -> None:
    """Set RLIMIT_NOFILE's soft limit to ``soft``, keeping the hard one."""
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def fd_table_size() -> int:
    """The size of this process's fd table (FDSize in /proc/self/status)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))


def open_fd_count() -> int:
    """How many descriptors are open now (listdir's own included)."""
    return len(os.listdir("/proc/self/fd"))

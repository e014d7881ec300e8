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


def may_run_realtime() -> bool:
    """Whether a thread of this process may make itself SCHED_FIFO (asked of
    a throwaway thread, which gives it back at once)."""
    import threading
    got = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            got.append(False)
            return
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        got.append(True)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return got[0]


def thread_name(tid: int) -> str:
    """The kernel's name of thread ``tid`` of this process (its comm)."""
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().rstrip("\n")


def threads_named(name: str) -> list:
    """The ids of this process's threads that the kernel calls ``name``."""
    tids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            if thread_name(int(tid)) == name:
                tids.append(int(tid))
        except FileNotFoundError:       # ended meanwhile
            pass
    return tids

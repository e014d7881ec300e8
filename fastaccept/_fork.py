"""What a forked child does with the servers it inherited.

The child of ``os.fork()`` has only the thread that forked: a started
server's accept loop and workers do not exist there. Right after the fork,
every server started in the parent is made inert in the child: its lock and
events are replaced (a parent thread may have held them at the fork), and
the child's copies of the listening socket, of the connections queued in the
ring and of the connections in other threads' handlers are closed, so that
the port is not held by the child and a connection the parent closes closes
for its client. The forking thread's own connection (a handler that forks to
hand it over) is left to it. Closing copies never touches the parent's.
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # pragma: no cover
    from fastaccept.server import Server

__all__ = ["track", "make_inert"]

log = logging.getLogger("fastaccept")

#: Servers started in this process (weak: a server nobody references is gone
#: in the child too).
_started: "weakref.WeakSet[Server]" = weakref.WeakSet()


def track(server: "Server") -> None:
    """Remember a started server, to make it inert in a forked child."""
    _started.add(server)


def make_inert(server: "Server") -> None:
    """Make the child's copy of a started server inert; runs in a forked child.

    Nothing here waits: no other thread exists to release anything."""
    if server._state not in ("running", "stopping"):
        return          # a new server can still be started in the child
    server._state = "forked"
    server._lock = threading.Lock()
    server._stop_requested = threading.Event()
    server._stop_requested.set()
    server._stopped = threading.Event()
    server._stopped.set()
    server._sock.close()
    me = threading.get_ident()
    for thread, counts in zip(server._workers, server._counts):
        conn = counts.conn
        if conn is not None and thread.ident != me:
            # detach: the dead thread's socket object must never close
            # this number again, once the child reuses it
            fd = conn if isinstance(conn, int) else conn.detach()
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
    # A connection a worker was just taking or closing at the instant of
    # the fork is in neither place: its copy stays open in the child.
    if server._acceptor is not None:
        server._acceptor.close_inherited()


def _after_fork_in_child() -> None:
    for server in list(_started):
        try:
            make_inert(server)
        except Exception:   # the child must get going whatever happens here
            log.exception("cleaning up an inherited server after fork failed")


os.register_at_fork(after_in_child=_after_fork_in_child)

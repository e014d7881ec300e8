"""The kernel self-check a serving process logs at start: one line per check, never fatal.

    backlog     the backlog the kernel applies to the listener(s), against
                net.core.somaxconn (which caps every listen() backlog)
    nofile      RLIMIT_NOFILE (ulimit -n) against max_connections per
                process, and, with several processes, their sum against
                fs.file-max
    migrate     net.ipv4.tcp_migrate_req, where SO_REUSEPORT listeners are
                used: without it a listener that closes resets its queue

Each check is a pure function of what it reads (passed in, or read with
``fastaccept._kernel``), returning ``(logging level, message)``: WARNING
when something will bite, INFO otherwise. ``serve_processes`` runs them, in
the supervisor with several processes and in the process itself with one.
"""
from __future__ import annotations

import logging
import resource
import socket
from typing import List, Optional, Tuple

from fastaccept import _kernel

__all__ = ["Check", "FD_HEADROOM", "backlog_check", "nofile_check", "migrate_check",
           "migrate_message", "log_checks"]

log = logging.getLogger("fastaccept")

#: (logging level, message)
Check = Tuple[int, str]
#: Descriptors a serving process needs besides its connections: the
#: listener, epoll, eventfd, pipes, log files, the application's own.
FD_HEADROOM = 64
PREFIX = "kernel check: "


def backlog_check(sock: socket.socket, asked: Optional[int], listeners: int = 1,
                  processes: int = 1, somaxconn: Optional[int] = None) -> Check:
    """The effective backlog of ``sock`` (one of ``listeners`` alike) against
    net.core.somaxconn; ``asked`` is the backlog given to listen() (None:
    an inherited listener)."""
    if somaxconn is None:
        somaxconn = _kernel.somaxconn()
    queue = _kernel.listen_queue(sock)
    effective = queue[1] if queue is not None else None
    if listeners > 1:
        per = f" per listener ({listeners} SO_REUSEPORT listeners, one queue each)"
    elif processes > 1:
        per = f" (one queue shared by {processes} processes)"
    else:
        per = ""
    if effective is None:
        return logging.WARNING, f"{PREFIX}cannot read the listener's backlog (not TCP?)"
    if asked is not None and effective < asked:
        return logging.WARNING, (
            f"{PREFIX}backlog {asked} is capped by net.core.somaxconn: the effective "
            f"backlog is {effective}{per}; raise net.core.somaxconn for a longer queue")
    origin = "" if asked is not None else " (inherited listener)"
    return logging.INFO, (f"{PREFIX}effective backlog {effective}{per}{origin}, "
                          f"net.core.somaxconn {somaxconn if somaxconn is not None else '?'}")


def nofile_check(max_connections: int, processes: int = 1, nofile: Optional[int] = None,
                 file_max: Optional[int] = None) -> Check:
    """RLIMIT_NOFILE's soft limit (``nofile``, default: this process's)
    against ``max_connections`` per process; with several processes, their
    sum against fs.file-max."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    need = max_connections + FD_HEADROOM
    if nofile != resource.RLIM_INFINITY and nofile < need:
        return logging.WARNING, (
            f"{PREFIX}ulimit -n is {nofile} but max_connections is {max_connections}: past "
            f"about {max(0, nofile - FD_HEADROOM)} open connections per process accept4() "
            f"fails with EMFILE and the accept loop pauses; raise ulimit -n (LimitNOFILE= "
            f"under systemd) to {need} or more, or lower max_connections")
    shown = "unlimited" if nofile == resource.RLIM_INFINITY else str(nofile)
    line = f"{PREFIX}ulimit -n {shown} for max_connections {max_connections} per process"
    if processes > 1:
        if file_max is None:
            file_max = _kernel.file_max()
        total = processes * need
        if file_max is not None and total > file_max:
            return logging.WARNING, (
                f"{line}, but {processes} processes may open {total} descriptors, more than "
                f"fs.file-max {file_max} allows the whole system; raise fs.file-max or "
                "lower max_connections")
        line += f"; {processes} processes: up to {total} descriptors (fs.file-max " \
                f"{file_max if file_max is not None else '?'})"
    return logging.INFO, line


def migrate_check(reuseport: bool) -> Optional[Check]:
    """net.ipv4.tcp_migrate_req, read from the kernel, when SO_REUSEPORT
    listeners are used (None otherwise)."""
    return migrate_message(_kernel.tcp_migrate_req()) if reuseport else None


def migrate_message(migrate: Optional[bool]) -> Check:
    """What net.ipv4.tcp_migrate_req = ``migrate`` (None: the kernel lacks
    it) means for SO_REUSEPORT listeners."""
    consequence = ("a SO_REUSEPORT listener that closes (a process removed with SIGTTOU, "
                   "the final stop) resets the connections that reached its queue after "
                   "its last drain; reloads and restarts keep every listener open and are "
                   "not affected")
    if migrate is None:
        return logging.WARNING, (f"{PREFIX}this kernel has no net.ipv4.tcp_migrate_req "
                                 f"(Linux before 5.14): {consequence}")
    if not migrate:
        return logging.WARNING, (f"{PREFIX}net.ipv4.tcp_migrate_req is off: {consequence}; "
                                 "set net.ipv4.tcp_migrate_req=1 to have the kernel move "
                                 "them to the other listeners")
    return logging.INFO, (f"{PREFIX}net.ipv4.tcp_migrate_req is on: a SO_REUSEPORT "
                          "listener that closes hands its queued connections to the others")


def log_checks(checks: List[Optional[Check]]) -> None:
    """Log each check (None: not applicable) on the "fastaccept" logger."""
    for check in checks:
        if check is not None:
            log.log(check[0], "%s", check[1])

"""The listening sockets a supervisor serves, and where they come from.

Two layouts (``LAYOUTS``):

    shared      one listening socket; every child accepts from it. The
                children register it with EPOLLEXCLUSIVE, so one child wakes
                per connection, and the kernel's one queue holds what no child
                has taken yet.
    reuseport   one SO_REUSEPORT socket per child slot, all bound to the same
                address: the kernel spreads connections over them by a hash
                of the 4-tuple, and each has a queue of its own.

Either way the supervisor keeps its own reference to every socket for as
long as the slot exists, and a slot's socket outlives the child serving it:
the child that replaces it (after a crash, or in a reload) inherits the
same socket. So a child that stops or dies never closes a listener: the
connections in its queue wait there for the next child instead of being
reset. Only a slot that goes away (SIGTTOU) or the final stop closes one.

Inherited listeners (socket activation) come from ``--fd N`` or systemd's
``LISTEN_FDS``/``LISTEN_PID`` (``from_systemd``); they are served shared.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, List, MutableMapping, Optional

from fastaccept import _options

__all__ = ["LAYOUTS", "DEFAULT_LAYOUT", "SD_LISTEN_FDS_START", "Listeners", "adopt_fd",
           "from_systemd", "reuses_port"]

log = logging.getLogger("fastaccept")

LAYOUTS = ("shared", "reuseport")
#: The layout ``serve_processes`` binds with several processes unless told
#: otherwise. fastaccept's accept loop drains a queue it shares as fast as
#: connections come, so with one shared socket the first process to wake
#: takes nearly all of them: docs/design.md section 10 has the measurements.
DEFAULT_LAYOUT = "reuseport"
#: The first descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def check_layout(layout: Any) -> str:
    """The layout, if it is one of LAYOUTS."""
    if layout not in LAYOUTS:
        raise ValueError(f"listener must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return str(layout)


def reuses_port(sock: socket.socket) -> bool:
    """Whether sock has SO_REUSEPORT set."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
    except OSError:
        return False


def adopt_fd(fd: int, what: str = "--fd") -> socket.socket:
    """A socket object for an inherited listening descriptor ``fd``.

    The descriptor must be a bound, listening SOCK_STREAM socket; it is
    made close-on-exec (a program the application runs must not hold it).
    ``what`` names it in errors. Nothing is closed on error: the descriptor
    is not ours until it is adopted."""
    _options.check_int(what, fd, 0, 2**31 - 1)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ValueError(f"{what} {fd} is not a socket: {e.strerror}") from None
    try:
        _options.check_listening(sock)
    except ValueError as e:
        sock.detach()
        raise ValueError(f"{what} {fd}: {e}") from None
    sock.set_inheritable(False)
    return sock


def from_systemd(environ: Optional[MutableMapping[str, str]] = None,
                 pid: Optional[int] = None) -> List[socket.socket]:
    """The listening sockets systemd passed (socket activation), or [].

    systemd's protocol (sd_listen_fds(3)): when ``LISTEN_PID`` is this
    process's pid, ``LISTEN_FDS`` descriptors starting at 3 are inherited
    listeners. The variables (and ``LISTEN_FDNAMES``) are removed from the
    environment once read, whether they were meant for this process or not,
    so that a program the application runs does not take them for its own.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    listen_pid, listen_fds = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    for name in _SYSTEMD_VARIABLES:
        env.pop(name, None)
    if listen_pid is None or listen_fds is None:
        return []
    try:
        meant_for = int(listen_pid)
        count = int(listen_fds)
    except ValueError:
        raise ValueError(f"LISTEN_PID={listen_pid!r} LISTEN_FDS={listen_fds!r}: not numbers") \
            from None
    if meant_for != (os.getpid() if pid is None else pid):
        return []
    if count < 0:
        raise ValueError(f"LISTEN_FDS={count}: not a number of descriptors")
    socks: List[socket.socket] = []
    try:
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
            socks.append(adopt_fd(fd, "LISTEN_FDS descriptor"))
    except BaseException:
        for s in socks:
            s.detach()
        raise
    return socks


class Listeners:
    """The listening sockets of one supervisor (or one process), by layout.

    ``shared``: ``first`` is every slot's socket. ``reuseport``: ``first``
    is slot 0's; ``open_slot()`` binds one more SO_REUSEPORT socket on the
    same address for each further slot. ``close_slot(sock)`` closes this
    process's reference to a slot's socket; ``close()`` every one."""

    def __init__(self, layout: str, first: socket.socket, *, inherited: bool,
                 backlog: Optional[int] = None) -> None:
        self.layout = check_layout(layout)
        self.inherited = inherited
        #: the backlog asked for when this process bound them (None: inherited)
        self.backlog = backlog
        self._first: Optional[socket.socket] = first
        self._socks: List[socket.socket] = [first]
        self._slot0_taken = False
        self.address: Any = first.getsockname()

    @classmethod
    def bind(cls, host: str, port: int, backlog: int, layout: str) -> "Listeners":
        """Bind and listen on (host, port): port 0 picks one, which every
        further reuseport socket then shares."""
        layout = check_layout(layout)
        _options.check_int("port", port, 0, 65535)
        _options.check_int("backlog", backlog, 1, 2**31 - 1)
        sock = _options.listen(host, port, backlog, reuse_port=layout == "reuseport",
                               warn_capped=False)
        return cls(layout, sock, inherited=False, backlog=backlog)

    @classmethod
    def adopt(cls, sock: socket.socket) -> "Listeners":
        """Serve an inherited listening socket (shared by every child)."""
        return cls("shared", _options.check_listening(sock), inherited=True)

    @property
    def sockets(self) -> List[socket.socket]:
        """Every socket open here now."""
        return list(self._socks)

    def open_slot(self) -> socket.socket:
        """The socket for a new slot: the shared one, or (reuseport) slot 0's
        first and then a new SO_REUSEPORT socket on the same address."""
        if self._first is None:
            raise RuntimeError("the listeners are closed")
        if self.layout == "shared":
            return self._first
        if not self._slot0_taken:
            self._slot0_taken = True
            return self._first
        host, port = self.address[0], self.address[1]
        assert self.backlog is not None
        sock = _options.listen(host, port, self.backlog, reuse_port=True, warn_capped=False)
        self._socks.append(sock)
        return sock

    def close_slot(self, sock: socket.socket) -> None:
        """Close this process's reference to a reuseport slot's socket (the
        child serving it keeps its own until it stops). Shared: nothing."""
        if self.layout == "shared" or sock not in self._socks:
            return
        self._socks.remove(sock)
        sock.close()

    def close(self) -> None:
        """Close every socket this process holds (idempotent)."""
        for sock in self._socks:
            sock.close()
        self._socks = []
        self._first = None

    def __repr__(self) -> str:
        return (f"<Listeners {self.layout} on {self.address!r}: {len(self._socks)} "
                f"socket(s){' inherited' if self.inherited else ''}>")


"""What the kernel knows about a listening socket, read in one place.

The server's ``stats()``, its start-up checks, the ``monitor`` verb and the
bench all read these; none keeps a copy of its own.

    listen_queue(sock)      (queue, backlog) of one listening socket via TCP_INFO
    read_tcpext()           the TcpExt counters of /proc/net/netstat
    somaxconn()             net.core.somaxconn, the cap on every backlog
    tcp_migrate_req()       net.ipv4.tcp_migrate_req: whether closing one of
                            several SO_REUSEPORT listeners hands its queue to
                            the others instead of resetting it
    file_max()              fs.file-max, the descriptors the whole system may open

``ListenOverflows`` and ``ListenDrops`` count for the whole network namespace
the reader runs in (``COUNTERS_SCOPE``): other servers' drops count too.
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Dict, Optional, Sequence, Tuple

__all__ = ["COUNTERS_SCOPE", "TCPEXT_FIELDS", "listen_queue", "read_tcpext", "somaxconn",
           "tcp_migrate_req", "file_max"]

PROC_NET = "/proc/net"
SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"
TCP_MIGRATE_REQ_PATH = "/proc/sys/net/ipv4/tcp_migrate_req"
FILE_MAX_PATH = "/proc/sys/fs/file-max"
#: How ``stats()`` and ``monitor`` label the TcpExt counters.
COUNTERS_SCOPE = "namespace"
#: The TcpExt counters ``stats()`` and ``monitor`` report.
TCPEXT_FIELDS = ("ListenOverflows", "ListenDrops")
TCP_LISTEN = 0x0A
#: struct tcp_info: eight u8 fields, then u32 rto, ato, snd_mss, rcv_mss,
#: unacked, sacked. On a LISTEN socket unacked is the accept queue's length
#: and sacked its maximum (tcp_get_info in net/ipv4/tcp.c).
_TCP_INFO_QUEUE = struct.Struct("=II")
_TCP_INFO_QUEUE_OFFSET = 24
_TCP_INFO_LEN = _TCP_INFO_QUEUE_OFFSET + _TCP_INFO_QUEUE.size



def listen_queue(sock: socket.socket) -> Optional[Tuple[int, int]]:
    """Return (connections waiting for accept(), backlog) of a listening TCP socket.

    Read with one getsockopt(TCP_INFO). None if the socket is closed, not
    TCP or not listening.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, ValueError):
        return None
    if len(info) < _TCP_INFO_LEN or info[0] != TCP_LISTEN:
        return None
    queue, backlog = _TCP_INFO_QUEUE.unpack_from(info, _TCP_INFO_QUEUE_OFFSET)
    return queue, backlog


def read_tcpext(path: str = os.path.join(PROC_NET, "netstat"),
                fields: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Return the TcpExt counters of /proc/net/netstat by name ({} if unreadable).

    The file pairs a line of names with a line of values per group
    ("TcpExt: SyncookiesSent ...", then "TcpExt: 0 ..."). With ``fields``,
    only those are converted (the ones the kernel has).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    at = data.find(b"TcpExt:")
    if at < 0:
        return {}
    lines = data[at:].split(b"\n", 2)
    if len(lines) < 2 or not lines[1].startswith(b"TcpExt:"):
        return {}
    names = lines[0].decode("ascii", "replace").split()
    values = lines[1].split()
    try:
        if fields is None:
            return dict(zip(names[1:], map(int, values[1:])))
        out = {}
        for name in fields:
            if name in names:
                out[name] = int(values[names.index(name)])
        return out
    except (ValueError, IndexError):
        return {}


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def somaxconn(path: str = SOMAXCONN_PATH) -> Optional[int]:
    """net.core.somaxconn (every listen() backlog is capped to it), or None if unreadable."""
    return _read_int(path)


def tcp_migrate_req(path: str = TCP_MIGRATE_REQ_PATH) -> Optional[bool]:
    """Whether net.ipv4.tcp_migrate_req is on, or None where the kernel lacks it.

    With it on, a closing SO_REUSEPORT listener's queued connections move to
    another listener of the group; with it off they are reset."""
    value = _read_int(path)
    return None if value is None else value != 0


def file_max(path: str = FILE_MAX_PATH) -> Optional[int]:
    """fs.file-max (open descriptors the whole system allows), or None if unreadable."""
    return _read_int(path)

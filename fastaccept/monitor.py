"""Watch the kernel accept queue of any listening TCP socket on this machine.

    snapshot(port)          one reading: each listener's queue and backlog, the
                            established connections, the TcpExt drop counters
    rates(before, after)    per-second rates of those counters between two readings
    listen_queue(sock)      (queue, backlog) of one listening socket via TCP_INFO
    read_tcpext()           the TcpExt counters of /proc/net/netstat
                            (both from ``fastaccept._kernel``, the one place that
                            reads them for the server, this verb and the bench)
    main(...)               the ``python -m fastaccept monitor`` verb

The sockets are read with a sock_diag netlink dump (what ``ss -lnt`` uses),
which any user may make, so this works for servers of any kind and any owner
(fastaccept or not), IPv4 and IPv6. For a socket in LISTEN state it reports
the accept queue (connections whose handshake completed and that wait for
``accept()``: ``ss``'s Recv-Q) and the queue's maximum, the backlog after the
``net.core.somaxconn`` cap (``ss``'s Send-Q). Where netlink is refused (some
sandboxes), ``/proc/net/tcp`` and ``/proc/net/tcp6`` give the queue in the
``rx_queue`` column of LISTEN (``st`` 0A) rows, but not the backlog: their
``tx_queue`` of a listener is always 0. ``netstat -an | grep -c LISTEN`` counts
listening sockets, not this depth.

``ListenOverflows`` (a handshake completed or a SYN arrived while the accept
queue was full) and ``ListenDrops`` (every SYN or final ACK a listener dropped,
overflows included) count for the whole network namespace the reader runs
in: the whole host unless it runs in a container. They are not per port;
other servers' drops count too.
"""
from __future__ import annotations

import argparse
import errno
import io
import json
import os
import socket
import struct
import sys
import threading
import time
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from fastaccept._kernel import (COUNTERS_SCOPE, PROC_NET, TCP_LISTEN, TCPEXT_FIELDS,
                                listen_queue, read_tcpext)

__all__ = ["snapshot", "rates", "listen_queue", "read_tcpext", "format_line", "main"]


TCP_ESTABLISHED = 0x01
TCP_SYN_RECV = 0x03
TCP_NEW_SYN_RECV = 0x0C     # how inet_diag reports a request socket in the SYN table

# sock_diag netlink (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
_NLMSG = struct.Struct("=IHHII")            # len, type, flags, seq, pid
#: inet_diag_req_v2: family, protocol, ext, pad, states, then a zero inet_diag_sockid
_DIAG_REQ = struct.Struct("=BBBxI48x")
#: inet_diag_msg: family, state, timer, retrans, sockid (sport and dport
#: big-endian, src, dst, if, cookie), expires, rqueue, wqueue, uid, inode
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_DIAG_STATES = (1 << TCP_LISTEN) | (1 << TCP_ESTABLISHED) | (1 << TCP_SYN_RECV) | (
    1 << TCP_NEW_SYN_RECV)
NETLINK_TIMEOUT_S = 5.0
def _ipv4(hex_addr: str) -> str:
    # one u32 in host byte order, printed as hex
    return socket.inet_ntop(socket.AF_INET, struct.pack("=I", int(hex_addr, 16)))


def _ipv6(hex_addr: str) -> str:
    # four u32 words, each in host byte order
    words = [int(hex_addr[i:i + 8], 16) for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, struct.pack("=4I", *words))


#: (local address, state, queue, backlog or None, uid, inode) of one socket
Row = Tuple[str, int, int, Optional[int], int, int]


def _diag_rows(family: int, port: int) -> Iterator[Row]:
    """Yield the TCP sockets of ``family`` whose local port is ``port``, from
    one sock_diag dump (LISTEN, ESTABLISHED and SYN_RECV only). Raise OSError
    if the kernel refuses the request."""
    ipv6 = family == socket.AF_INET6
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(NETLINK_TIMEOUT_S)
        nl.sendto(_NLMSG.pack(_NLMSG.size + _DIAG_REQ.size, SOCK_DIAG_BY_FAMILY,
                              NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                  + _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, _DIAG_STATES), (0, 0))
        while True:
            data = nl.recv(1 << 16)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, kind = _NLMSG.unpack_from(data, off)[:2]
                if length < _NLMSG.size:
                    raise OSError(errno.EPROTO, "malformed sock_diag reply")
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
                    raise OSError(err, os.strerror(err))
                if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSG.size + _DIAG_MSG.size:
                    (_, state, _, _, sport, _, src, _, _, _, _, rqueue, wqueue, uid,
                     inode) = _DIAG_MSG.unpack_from(data, off + _NLMSG.size)
                    if int.from_bytes(sport, "big") == port:
                        addr = socket.inet_ntop(family, src if ipv6 else src[:4])
                        if state == TCP_NEW_SYN_RECV:
                            state = TCP_SYN_RECV
                        # rqueue/wqueue are the accept queue and its maximum for
                        # a listener only (tcp_diag_get_info)
                        yield (addr, state, rqueue, wqueue, uid, inode)
                off += (length + 3) & ~3
            if not data:
                raise OSError(errno.EPROTO, "sock_diag dump ended without NLMSG_DONE")


def _proc_rows(path: str, port: int, ipv6: bool) -> Iterator[Row]:
    """Yield the sockets bound to local port ``port`` in one /proc/net/tcp*
    file; for listeners the queue is rx_queue and the backlog is unknown."""
    needle = f":{port:04X} "
    try:
        f = open(path)
    except FileNotFoundError:
        return      # no IPv6 in this kernel or namespace
    with f:
        next(f, None)       # header
        for line in f:
            if needle not in line:      # cheap filter before splitting
                continue
            fields = line.split()
            if len(fields) < 10:
                continue
            addr, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) != port:
                continue    # the needle matched the remote address
            rx_queue = fields[4].partition(":")[2]
            yield ((_ipv6 if ipv6 else _ipv4)(addr), int(fields[3], 16), int(rx_queue, 16),
                   None, int(fields[7]), int(fields[9]))


SOURCES = ("auto", "sock_diag", "proc")


def _socket_rows(port: int, proc_net: str, source: str) -> Tuple[str, List[Row]]:
    """Return (source used, rows) for ``port``."""
    if source != "proc":
        try:
            rows = list(_diag_rows(socket.AF_INET, port))
            try:
                rows += _diag_rows(socket.AF_INET6, port)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EAFNOSUPPORT):   # no IPv6 here
                    raise
            return "sock_diag", rows
        except OSError:
            if source == "sock_diag":
                raise
    rows = []
    for name, ipv6 in (("tcp", False), ("tcp6", True)):
        rows += _proc_rows(os.path.join(proc_net, name), port, ipv6)
    return os.path.join(proc_net, "tcp"), rows


def snapshot(port: int, proc_net: str = PROC_NET, source: str = "auto") -> Dict[str, Any]:
    """Read the kernel's view of TCP port ``port`` now; return it as a dict.

    ``source`` picks where sockets are read: "sock_diag" (netlink; OSError
    if refused), "proc" (``proc_net``/tcp and tcp6) or "auto" (netlink, else
    /proc). ``proc_net`` is also where netstat is read (tests point it at
    sample files).

    Keys: ``port``; ``time`` (time.monotonic() of the reading); ``source``
    ("sock_diag" or the /proc file used); ``listeners``, one dict per LISTEN
    socket on the port (``address``, ``family`` "IPv4"/"IPv6", ``queue``:
    connections waiting for accept(), ``backlog``: the queue's maximum,
    None from /proc, ``uid``, ``inode``); ``queue`` and ``backlog`` summed
    over the listeners (0 when there is none; ``backlog`` None if unknown);
    ``established``: ESTABLISHED connections whose local port is ``port``
    (those still in an accept queue included); ``syn_recv``: handshakes in
    progress; ``listen_overflows`` and ``listen_drops``: the TcpExt counters
    (None if unreadable), which count for the whole ``counters_scope``
    ("namespace": the network namespace, the host outside containers).
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in [1, 65535], got {port}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    listeners: List[Dict[str, Any]] = []
    established = syn_recv = 0
    now = time.monotonic()
    used, rows = _socket_rows(port, proc_net, source)
    for addr, state, queue, backlog, uid, inode in rows:
        if state == TCP_LISTEN:
            listeners.append({"address": addr, "family": "IPv6" if ":" in addr else "IPv4",
                              "queue": queue, "backlog": backlog, "uid": uid, "inode": inode})
        elif state == TCP_ESTABLISHED:
            established += 1
        elif state == TCP_SYN_RECV:
            syn_recv += 1
    tcpext = read_tcpext(os.path.join(proc_net, "netstat"), TCPEXT_FIELDS)
    backlogs = [entry["backlog"] for entry in listeners]
    return {
        "port": port,
        "time": now,
        "source": used,
        "listeners": listeners,
        "queue": sum(entry["queue"] for entry in listeners),
        "backlog": None if None in backlogs else sum(backlogs),
        "established": established,
        "syn_recv": syn_recv,
        "listen_overflows": tcpext.get("ListenOverflows"),
        "listen_drops": tcpext.get("ListenDrops"),
        "counters_scope": COUNTERS_SCOPE,
    }


def rates(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """Return ``listen_overflows_per_s`` and ``listen_drops_per_s`` between two snapshots.

    A rate is None when a counter is missing, went backwards (a counter
    reset) or no time passed.
    """
    dt = after["time"] - before["time"]
    out: Dict[str, Optional[float]] = {}
    for key in ("listen_overflows", "listen_drops"):
        a, b = before.get(key), after.get(key)
        out[key + "_per_s"] = ((b - a) / dt if a is not None and b is not None and dt > 0
                               and b >= a else None)
    return out


def _max(backlog: Optional[int]) -> str:
    return "?" if backlog is None else str(backlog)


def _rate(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f}/s"


def format_line(snap: Dict[str, Any], rate: Optional[Dict[str, Optional[float]]] = None,
                peak: Optional[int] = None) -> str:
    """Return one human-readable line for a snapshot (and its rates and peak queue)."""
    listeners = snap["listeners"]
    if not listeners:
        head = f"port {snap['port']}: nothing listening"
    else:
        head = f"port {snap['port']}: accept queue {snap['queue']}/{_max(snap['backlog'])}"
        if peak is not None:
            head += f" (peak {peak})"
        if len(listeners) > 1:
            head += " [" + ", ".join(f"{entry['address']} {entry['queue']}/{_max(entry['backlog'])}"
                                     for entry in listeners) + "]"
    rate = rate or {}
    # the drop rates first: a narrow terminal cuts the end of the line
    return (f"{head}  ListenOverflows {_rate(rate.get('listen_overflows_per_s'))}  "
            f"ListenDrops {_rate(rate.get('listen_drops_per_s'))} ({snap['counters_scope']})  "
            f"established {snap['established']}  syn-recv {snap['syn_recv']}")


def _nothing_listens(port: int, source: str) -> str:
    return (f"nothing listens on TCP port {port} in this network namespace "
            f"(no IPv4 or IPv6 LISTEN socket; read from {source})")


def _columns(out: IO[str]) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 120


def _json_record(snap: Dict[str, Any], rate: Optional[Dict[str, Optional[float]]],
                 peak: Optional[int]) -> str:
    record = dict(snap)
    record.update(rate or {"listen_overflows_per_s": None, "listen_drops_per_s": None})
    record["peak_queue"] = peak
    return json.dumps(record)


def main(port: int, *, once: bool = False, as_json: bool = False, interval: float = 1.0,
         count: Optional[int] = None, out: IO[str] = sys.stdout,
         proc_net: str = PROC_NET, source: str = "auto") -> int:
    """Run the monitor verb; return the exit status (1 when nothing listens).

    Live (default): a reading at once, then one every ``interval`` seconds,
    redrawn in place on a terminal and one line per reading otherwise, until
    Ctrl-C or ``count`` readings. ``once``: two readings ``interval`` apart
    (the rates need both; 0 reads once, without rates), the second one
    printed. ``as_json``: one JSON object per reading, the snapshot's keys
    plus the rates and ``peak_queue`` (the largest queue this run has read).
    ``proc_net`` and ``source`` are passed to ``snapshot``.
    """
    if not 0 <= interval <= threading.TIMEOUT_MAX:      # time.sleep() overflows beyond it
        raise ValueError(f"interval must be >= 0 and at most {threading.TIMEOUT_MAX:g} s, "
                         f"got {interval}")
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    snap = snapshot(port, proc_net, source)
    if not snap["listeners"]:
        print(_nothing_listens(port, snap["source"]), file=sys.stderr)
        return 1
    in_place = out.isatty() and not as_json and not once
    peak = snap["queue"]
    rate: Optional[Dict[str, Optional[float]]] = None
    shown = 0
    try:
        if once and interval > 0:
            time.sleep(interval)    # the span the rates are measured over
            later = snapshot(port, proc_net, source)
            rate = rates(snap, later)
            snap = later
            peak = max(peak, snap["queue"])
        while True:
            if as_json:
                out.write(_json_record(snap, rate, peak) + "\n")
            elif in_place:
                # cut to the width: a wrapped line could not be redrawn in place
                line = format_line(snap, rate, peak)[:max(1, _columns(out) - 1)]
                out.write("\r" + line + "\x1b[K")
            else:
                out.write(format_line(snap, rate, peak) + "\n")
            out.flush()
            shown += 1
            if once or (count is not None and shown >= count):
                break
            time.sleep(interval)    # the refresh period
            later = snapshot(port, proc_net, source)
            rate = rates(snap, later)
            snap = later
            peak = max(peak, snap["queue"])
    except KeyboardInterrupt:
        pass
    if in_place:
        out.write("\n")
        out.flush()
    return 0


# -- the ``fastaccept monitor`` verb ------------------------------------------------

VERB_DESCRIPTION = ("Show the accept-queue depth and backlog of every socket listening on PORT "
                    "(IPv4 and IPv6, any server), the established connections on it, and the "
                    "kernel's ListenOverflows and ListenDrops rates (namespace-wide counters), "
                    "from /proc/net. Exits 1 when nothing listens on PORT.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the monitor verb's options to ``parser``."""
    parser.add_argument("port", type=int, help="the listening port")
    parser.add_argument("--once", action="store_true",
                        help="print one reading and exit (rates over --interval)")
    parser.add_argument("--json", action="store_true", help="print JSON, one object per reading")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="seconds between readings (default 1)")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="stop after N readings (default: until Ctrl-C)")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="read sockets with sock_diag netlink, /proc/net/tcp* (no backlog), "
                        "or the first that works (default auto)")


def run(args: argparse.Namespace) -> int:
    """The monitor verb with parsed ``args``."""
    return main(args.port, once=args.once, as_json=args.json, interval=args.interval,
                count=args.count, source=args.source)

"""A server's stats, assembled; its overload warnings, decided and worded.

``Server.stats()`` joins three sources: the accept loop's counters (C,
``Acceptor.stats()``), the workers' counters (``WorkerCounts``, one per
worker thread) and the kernel's view of the listening socket
(``fastaccept._kernel``). The monitor thread compares successive stats with
``OverloadWatch`` and logs ``overload_message`` for what rose.
"""
from __future__ import annotations

import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from fastaccept import _kernel

__all__ = ["QUEUE_WAIT_BOUNDS_US", "CORE_DICT_KEYS", "WorkerCounts", "OverloadWatch",
           "overload_message", "idle_core_stats", "assemble", "histogram_buckets"]

#: Upper bounds (us) of the queue-wait histogram's buckets: powers of 4 from
#: 1 us to 67 s. Powers of two fall on the C histogram's bucket edges, so the
#: cumulative counts are exact.
QUEUE_WAIT_BOUNDS_US = tuple(4 ** k for k in range(14))

Stats = Dict[str, Any]


class WorkerCounts:
    """Counters written by one worker thread only, so no lock is needed.

    ``conn`` is the connection in the handler right now, a socket (or its
    bare descriptor, for the HTTP server's workers), None between
    connections, so the worker is busy exactly when it is set: a forked
    child closes its copy (see ``fastaccept._fork``)."""

    __slots__ = ("handled", "errors", "conn")

    def __init__(self) -> None:
        self.handled = 0
        self.errors = 0
        self.conn: Union[socket.socket, int, None] = None


#: The accept loop's counters that are dicts (counts by errno, status or error name).
CORE_DICT_KEYS = ("accept_errors", "http_rejected", "proxy_rejected")


def idle_core_stats(ring_capacity: int, core_keys: Sequence[str]) -> Stats:
    """The accept loop's counters of a server not started yet: every key, all
    zero (an empty dict for the counts by name)."""
    st: Stats = dict.fromkeys(core_keys, 0)
    for key in CORE_DICT_KEYS:
        st[key] = {}
    st["ring_capacity"] = ring_capacity
    return st


def assemble(core: Stats, counts: List[WorkerCounts], sock: socket.socket) -> Stats:
    """Server.stats(): the loop's counters, the workers' and the kernel's view."""
    st = dict(core)
    st["handled"] = sum(c.handled for c in counts)
    st["handler_errors"] = sum(c.errors for c in counts)
    st["workers"] = len(counts)
    st["workers_busy"] = sum(1 for c in counts if c.conn is not None)
    kernel = _kernel.listen_queue(sock)
    st["kernel_queue_depth"], st["kernel_backlog"] = kernel if kernel else (None, None)
    tcpext = _kernel.read_tcpext(fields=_kernel.TCPEXT_FIELDS)
    st["listen_overflows"] = tcpext.get("ListenOverflows")
    st["listen_drops"] = tcpext.get("ListenDrops")
    st["listen_counters_scope"] = _kernel.COUNTERS_SCOPE
    return st


def histogram_buckets(raw: Optional[Tuple[List[int], int]]) -> Tuple[List[Tuple[float, int]], int]:
    """([(upper bound us, cumulative count), ..., (inf, total)], sum us) from the
    acceptor's raw (cumulative counts, sum); all zero for None."""
    if raw is None:
        raw = ([0] * (len(QUEUE_WAIT_BOUNDS_US) + 1), 0)
    cumulative, sum_us = raw
    bounds = [float(b) for b in QUEUE_WAIT_BOUNDS_US] + [float("inf")]
    return list(zip(bounds, cumulative)), sum_us


class OverloadWatch:
    """Decide which overload warnings to log: a counter rose, and its kind
    has not been warned about for ``every_s`` seconds.

    A rise that comes too soon is not lost: the next warning of that kind
    reports everything since the last one. Pure (time is passed in), so the
    rate limit is testable without a clock.
    """

    KINDS = ("ring_full_waits", "shed", "emfile_pauses", "listen_overflows")

    def __init__(self, every_s: float, now: float, values: Stats) -> None:
        self.every_s = every_s
        self._base: Dict[str, Optional[int]] = {k: values.get(k) for k in self.KINDS}
        self._since = dict.fromkeys(self.KINDS, now)
        self._warned = dict.fromkeys(self.KINDS, float("-inf"))

    def check(self, now: float, values: Stats) -> List[Tuple[str, int, float]]:
        """Return [(kind, rise, seconds the rise spans)] to warn about now."""
        due = []
        for kind in self.KINDS:
            value, base = values.get(kind), self._base[kind]
            if value is None:
                continue
            if base is None or value < base:    # first reading, or a counter reset
                self._base[kind], self._since[kind] = value, now
                continue
            if value > base and now - self._warned[kind] >= self.every_s:
                due.append((kind, value - base, now - self._since[kind]))
                self._base[kind], self._since[kind], self._warned[kind] = value, now, now
        return due


def overload_message(kind: str, rise: int, span_s: float, st: Stats) -> str:
    """The warning for a rise of ``kind`` over ``span_s`` seconds, with the stats behind it."""
    if kind == "ring_full_waits":
        return (f"overload: the ring ({st.get('ring_capacity')} slots) was full {rise} times in "
                f"{span_s:.0f} s; connections waited in the kernel accept queue "
                f"({st.get('kernel_queue_depth')}/{st.get('kernel_backlog')} now) for a free "
                f"worker ({st.get('workers_busy')}/{st.get('workers')} busy)")
    if kind == "shed":
        return (f"overload: the ring ({st.get('ring_capacity')} slots) was full and {rise} "
                f"connections were answered with shed_response and closed in {span_s:.0f} s "
                f"({st.get('workers_busy')}/{st.get('workers')} workers busy)")
    if kind == "emfile_pauses":
        return (f"overload: accept4() ran out of file descriptors or memory and paused {rise} "
                f"times in {span_s:.0f} s (accept errors so far: {st.get('accept_errors')}); "
                "raise RLIMIT_NOFILE (ulimit -n) or serve connections faster")
    return (f"overload: the kernel refused connections: TcpExt ListenOverflows rose by {rise} in "
            f"{span_s:.0f} s (a {_kernel.COUNTERS_SCOPE}-wide counter, other servers count too; "
            f"this server's accept queue is {st.get('kernel_queue_depth')}/"
            f"{st.get('kernel_backlog')})")

"""Defaults, bounds and argument checks, in one place; binding and listening.

Every public constructor (``Server``, ``TCPServer``, the WSGI server, the
command line and the bench's load generator) checks its arguments with these
functions, so a bad value raises the same ``TypeError``/``ValueError``
naming the argument and its range wherever it is given, before any thread
or socket exists.
"""
from __future__ import annotations

import logging
import math
import socket
import threading
from typing import Any, Optional, Tuple

from fastaccept import _kernel
from fastaccept._core import (DEFAULT_MAX_BATCH, DEFAULT_MAX_CONNECTIONS, DEFAULT_NAP_US,
                              DEFAULT_SPIN_US, DISPATCH_CHOICES, MAX_CONNECTIONS, MAX_NAP_US,
                              MAX_SHED_RESPONSE, MAX_SPIN_US, OVERLOAD_POLICIES,
                              RING_MAX_CAPACITY, RING_MIN_CAPACITY)

__all__ = [
    "DEFAULT_WORKERS", "MAX_WORKERS", "DEFAULT_BACKLOG", "DEFAULT_RING_SIZE", "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "DEFAULT_MAX_BATCH", "MAX_BATCH", "DEFAULT_SPIN_US", "MAX_SPIN_US", "DEFAULT_NAP_US",
    "MAX_NAP_US", "DEFAULT_WORKER_NICE", "OVERLOAD_POLICIES", "MAX_SHED_RESPONSE",
    "DEFAULT_IDLE_TIMEOUT", "MAX_IDLE_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "MAX_CONNECTIONS",
    "DISPATCH_CHOICES", "MAX_PROCESSES", "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_MAX_START_FAILURES", "DEFAULT_BACKOFF", "DEFAULT_MAX_BACKOFF", "DEFAULT_MIN_UPTIME",
    "DEFAULT_PROXY_TIMEOUT", "MAX_PROXY_TIMEOUT",
    "check_dispatch", "check_idle_timeout", "check_duration", "check_proxy",
    "check_int", "check_ring_size", "check_timeout", "check_seconds", "check_overload",
    "check_listening", "listen",
]

log = logging.getLogger("fastaccept")

DEFAULT_WORKERS = 8
MAX_WORKERS = 4096
DEFAULT_BACKLOG = 2048
DEFAULT_RING_SIZE = 4096
MAX_BATCH = 65536
#: Seconds a connection may keep a worker waiting in one socket operation
#: (``conn.settimeout``). Finite by default: without it, a client that
#: connects and sends nothing (slowloris) holds a worker for ever, and
#: ``workers`` of them stop the server. 30 s is what users of other servers
#: expect (gunicorn's worker timeout is 30 s, nginx's client_header_timeout
#: 60 s) and is far above any honest client's pause on a live connection.
DEFAULT_TIMEOUT = 30.0
#: The longest timeout taken, in seconds: socket.settimeout() and every wait
#: raise OverflowError beyond it (None is the way to wait for ever).
MAX_TIMEOUT = threading.TIMEOUT_MAX
#: How far workers step back for the accept loop (see server._lower_priority).
DEFAULT_WORKER_NICE = 0
#: Seconds a connection may wait in C with nothing for a worker (its first
#: bytes, or its next request after a KEEP) before C closes it. As
#: DEFAULT_TIMEOUT for the first request (a slowloris costs no thread now,
#: only ~170 bytes, but must not wait for ever); about what keep-alive
#: clients and proxies expect of an idle connection (nginx 75 s, gunicorn 2 s).
DEFAULT_IDLE_TIMEOUT = 30.0
MAX_IDLE_TIMEOUT = 7 * 86400.0
#: Seconds a connection behind a load balancer may take, from its accept, to
#: send its whole PROXY protocol header. The spec (section 2) has a
#: receiver wait at least 3 s; a balancer sends the header at once, in the
#: connection's first segment.
DEFAULT_PROXY_TIMEOUT = 3.0
MAX_PROXY_TIMEOUT = MAX_IDLE_TIMEOUT
#: Processes a supervisor may run (``serve_processes``, ``--processes``).
MAX_PROCESSES = 1024
#: Seconds a stopping process gets to finish what it accepted before SIGKILL
#: (gunicorn's graceful_timeout is 30 s as well).
DEFAULT_GRACEFUL_TIMEOUT = 30.0
#: Start failures in a row (a child that exits before it is ready, or within
#: ``DEFAULT_MIN_UPTIME`` of it) after which a supervisor gives up.
DEFAULT_MAX_START_FAILURES = 6
#: The first back-off after a start failure, in seconds; it doubles with each
#: failure in a row, up to DEFAULT_MAX_BACKOFF (0.5 + 1 + 2 + 4 + 8 s before
#: the sixth failure gives up: long enough for a database to come up).
DEFAULT_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 30.0
#: A child that exits sooner than this after it was ready failed to start.
DEFAULT_MIN_UPTIME = 1.0


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """value, or TypeError (not an int) / ValueError (outside [low, high]) naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_ring_size(ring_size: Any) -> int:
    """A power of two in [RING_MIN_CAPACITY, RING_MAX_CAPACITY]."""
    check_int("ring_size", ring_size, RING_MIN_CAPACITY, RING_MAX_CAPACITY)
    if ring_size & (ring_size - 1):
        raise ValueError(f"ring_size must be a power of two, got {ring_size}")
    return int(ring_size)


def check_timeout(timeout: Any, name: str = "timeout") -> Optional[float]:
    """None (no timeout) or a number of seconds in [0, MAX_TIMEOUT], as a float."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be None or a number, got {type(timeout).__name__}")
    if not 0 <= timeout <= MAX_TIMEOUT:
        raise ValueError(f"{name} must be None or in [0, {MAX_TIMEOUT:g}] seconds, "
                         f"got {timeout}")
    return float(timeout)


def check_seconds(name: str, value: Any, high: float, *, allow_none: bool = False
                  ) -> Optional[float]:
    """A finite number of seconds in (0, high]; None too when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "a number of seconds or None" if allow_none else "a number of seconds"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 < value <= high):
        raise ValueError(f"{name} must be in (0, {high:g}] seconds, got {value!r}")
    return float(value)


def check_duration(name: str, value: Any, high: float = MAX_TIMEOUT) -> float:
    """A finite number of seconds in [0, high] (0 allowed), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 <= value <= high):
        raise ValueError(f"{name} must be in [0, {high:g}] seconds, got {value!r}")
    return float(value)


def check_dispatch(dispatch: Any) -> str:
    """Where a new connection goes: "readable" (waits in C) or "accept"."""
    if dispatch not in DISPATCH_CHOICES:
        raise ValueError(f"dispatch must be 'readable' or 'accept', got {dispatch!r}")
    return str(dispatch)


def check_idle_timeout(idle_timeout: Any) -> Optional[float]:
    """None (wait for ever) or seconds in (0, MAX_IDLE_TIMEOUT]."""
    return check_seconds("idle_timeout", idle_timeout, MAX_IDLE_TIMEOUT, allow_none=True)


def check_proxy(proxy_protocol: Any, proxy_timeout: Any) -> Tuple[bool, Optional[float]]:
    """PROXY protocol on or off, and the header's deadline: (bool, seconds in
    (0, MAX_PROXY_TIMEOUT] or None for none)."""
    if not isinstance(proxy_protocol, bool):
        raise TypeError(f"proxy_protocol must be a bool, got {type(proxy_protocol).__name__}")
    return proxy_protocol, check_seconds("proxy_timeout", proxy_timeout, MAX_PROXY_TIMEOUT,
                                         allow_none=True)


def check_overload(overload: Any, shed_response: Any) -> Tuple[str, bytes]:
    """The overload policy and its shed response, as (policy, bytes)."""
    if overload not in OVERLOAD_POLICIES:
        raise ValueError(f"overload must be 'queue' or 'shed', got {overload!r}")
    if not isinstance(shed_response, (bytes, bytearray, memoryview)):
        raise TypeError(f"shed_response must be bytes, got {type(shed_response).__name__}")
    response = bytes(shed_response)
    if len(response) > MAX_SHED_RESPONSE:
        raise ValueError(f"shed_response must be at most {MAX_SHED_RESPONSE} bytes, "
                         f"got {len(response)}")
    if response and overload != "shed":
        # Most likely a forgotten overload="shed": say so rather than never shed.
        raise ValueError("shed_response is sent only with overload='shed'")
    return overload, response


def check_listening(sock: Any) -> socket.socket:
    """sock, if it is a bound and listening SOCK_STREAM socket."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, got {type(sock).__name__}")
    if sock.fileno() < 0:
        raise ValueError("sock is closed")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"sock must be SOCK_STREAM, got {sock.type!r}")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError("sock must be bound and listening (call listen() first)")
    return sock


def warn_if_capped(backlog: int) -> None:
    """Log once when net.core.somaxconn caps ``backlog``."""
    somaxconn = _kernel.somaxconn()
    if somaxconn is not None and backlog > somaxconn:
        log.warning("backlog %d is capped by net.core.somaxconn: the effective backlog is %d",
                    backlog, somaxconn)


def listen(host: str, port: int, backlog: int, *, reuse_port: bool = False,
           warn_capped: bool = True) -> socket.socket:
    """Return a socket bound to (host, port) and listening; nothing left open on error.

    SO_REUSEADDR always (a restarted server rebinds at once over TIME_WAIT);
    SO_REUSEPORT when ``reuse_port``, for one listener per process. A
    backlog that net.core.somaxconn caps is logged, unless ``warn_capped``
    is False (the supervisor's kernel check says it instead)."""
    family, type_, proto, _, sockaddr = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    if warn_capped:
        warn_if_capped(backlog)
    return sock

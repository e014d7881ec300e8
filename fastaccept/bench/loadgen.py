"""Open many short TCP connections from C, fast enough to stress an acceptor.

A Python client cannot open connections fast enough to find the limits of a
server's accept path, so ``run()`` hands the whole load to one C thread (one
epoll set of nonblocking sockets, the GIL released for the whole run)::

    from fastaccept.bench import loadgen

    result = loadgen.run("127.0.0.1", 8080, connections=20000, concurrency=64)
    print(result.conn_per_s, result.rtt_ms.p99, result.failures)

Each connection connects, sends ``request``, reads the reply until the server
closes, and closes. ``burst=True`` opens all of them at once instead of
keeping ``concurrency`` in flight. On an IPv4 loopback target each client
socket is bound to its own source address in 127.0.0.0/8, so a long run does
not run out of ephemeral ports.

Keep-alive: with ``requests_per_connection`` R > 1 each connection sends its
request R times, the next as soon as the response before it is complete
(back to back, never pipelined), and closes after the R-th. Where a response
ends is the ``framing``: ``"eof"`` (the server closes: the only framing of R
= 1 before keep-alive, and still the default), ``"fixed"`` (exactly
``response_len`` bytes, e.g. a line echo) or ``"http"`` (an HTTP/1.x head,
then a body framed by ``Transfer-Encoding: chunked`` or ``Content-Length``,
or running to EOF when it has neither)::

    result = loadgen.run("127.0.0.1", 8080, connections=256, concurrency=256,
                         requests_per_connection=100, framing="fixed",
                         request=b"ping\n")
    print(result.requests_per_s, result.request_ms.p99, result.failures["closed"])

Connect time (``connect_ms``) runs from just before a connection's
``connect()`` to the moment the client saw it writable (handshake done). The
client never sleeps while it has connections to start: after every
``HARVEST_EVERY`` connects it polls with a zero timeout and timestamps the
handshakes already done, then starts the next group; sending requests and
reading replies wait until the starts pause (all started, or every
``concurrency`` slot busy). So a burst (all N started back to back, without
waiting for any reply) is as sharp whatever the server does, and a
connection's connect time leaves out the time spent starting the others: it
overstates the handshake by at most about ``HARVEST_EVERY`` connect() calls
(well under a millisecond on loopback), not by the burst's length
(``issue_s``). A SYN dropped by a full accept queue shows as a connect time
of 1 s or more (the SYN retransmission). Round trips (``rtt_ms``) of a burst
do include the time spent starting the rest.

``serve_inline()`` is the matching reference server ("c-inline"): one C epoll
loop that answers every connection with a fixed response, the ceiling any
server can reach on this machine for this protocol.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import socket
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, cast

from fastaccept._options import check_int, check_seconds
from fastaccept.bench import _loadgen
from fastaccept.bench._loadgen import serve_inline

__all__ = ["Percentiles", "LoadResult", "run", "serve_inline", "FAILURE_KINDS",
           "FRAMINGS", "HARVEST_EVERY", "default_request"]

log = logging.getLogger("fastaccept")

FAILURE_KINDS = ("refused", "reset", "timeout", "other", "closed")
#: Where a response ends: at the server's EOF, after ``response_len`` bytes, or
#: as its HTTP/1.x head says.
FRAMINGS = ("eof", "fixed", "http")
_FRAMING_CODES = {"eof": _loadgen.FRAMING_EOF, "fixed": _loadgen.FRAMING_FIXED,
                  "http": _loadgen.FRAMING_HTTP}
DEFAULT_REQUEST = b"GET / HTTP/1.0\r\n\r\n"
#: The default request of the "fixed" framing: one line, echoed.
LINE_REQUEST = b"ping\n"
MAX_REQUESTS_PER_CONNECTION = _loadgen.MAX_REQUESTS_PER_CONNECTION
MAX_RESPONSE_LEN = _loadgen.MAX_RESPONSE_LEN
MAX_CONNECTIONS = _loadgen.MAX_CONNECTIONS
MAX_CONCURRENCY = _loadgen.MAX_CONCURRENCY
MAX_REQUEST = _loadgen.MAX_REQUEST
MAX_TIMEOUT = 3600.0
#: Longest ``max_seconds`` (a week).
MAX_SECONDS = 7 * 86400.0
#: Connections started between two zero-timeout polls for ready sockets.
HARVEST_EVERY = _loadgen.HARVEST_EVERY
# fds the process may need besides the client sockets (epoll, stdio, logs)
FD_HEADROOM = 64


@dataclass(frozen=True)
class Percentiles:
    """Nearest-rank percentiles of one latency, in milliseconds (0.0 without samples)."""

    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True)
class LoadResult:
    """What one ``run()`` measured.

    ``connections`` counts the attempts made; every attempt ends either
    completed or in one ``failures`` kind, so ``connections == completed +
    sum(failures.values())``. It is below the number asked for only when the
    run's bound on starting connections (``max_seconds``, see ``run``)
    passed first.

    A connection is completed when it received all its
    ``requests_per_connection`` responses. failures: ``refused``
    (ECONNREFUSED), ``reset`` (ECONNRESET or EPIPE), ``timeout`` (a response
    not complete within ``timeout``), ``closed`` (the server ended a kept
    connection, by EOF or reset, between two responses, before the last:
    only with ``requests_per_connection`` > 1), ``other`` (EOF without a
    reply or inside a response; a response its framing cannot parse, or
    bytes beyond it; no source port, fd or memory left; anything else).

    ``requests`` counts the complete responses, on every connection
    (failed ones too: a connection "closed" after 3 of its 10 requests adds
    3). ``request_ms`` covers each of them: from the start of its request's
    send to the end of its response (with ``"eof"`` framing: the EOF);
    ``requests_per_s`` is ``requests / elapsed_s``.

    ``elapsed_s`` runs from the first connect start to the end of the last
    connection (whatever its outcome); ``conn_per_s`` is ``completed /
    elapsed_s``. ``issue_s`` runs from the first connect start to the last
    one: how long starting them all took (a burst's spread). ``connect_ms``
    covers every connection whose handshake completed (connect start to
    seen writable: see the module's docstring), ``rtt_ms`` the completed
    ones (connect start to the end of the last response).
    """

    connections: int
    completed: int
    failures: Dict[str, int]
    elapsed_s: float
    issue_s: float
    conn_per_s: float
    connect_ms: Percentiles
    rtt_ms: Percentiles
    requests: int = 0
    requests_per_s: float = 0.0
    request_ms: Percentiles = Percentiles(0.0, 0.0, 0.0, 0.0)
    requests_per_connection: int = 1
    framing: str = "eof"

    def as_dict(self) -> Dict[str, Any]:
        """Return the result as plain dicts and numbers (JSON-ready)."""
        return dataclasses.asdict(self)


def _check_request(request: Any) -> bytes:
    if not isinstance(request, (bytes, bytearray, memoryview)):
        raise TypeError(f"request must be bytes, got {type(request).__name__}")
    data = bytes(request)
    if len(data) > MAX_REQUEST:
        raise ValueError(f"request must be at most {MAX_REQUEST} bytes, got {len(data)}")
    return data


def default_request(framing: str, host: str = "127.0.0.1", port: int = 80) -> bytes:
    """The request ``run`` sends when given none: an HTTP/1.0 GET for ``"eof"``
    (the server closes after it), an HTTP/1.1 GET with a Host field for
    ``"http"`` (the server may keep the connection), one line for ``"fixed"``."""
    if framing == "http":
        shown = f"[{host}]" if ":" in host else host
        try:
            name = shown.encode("ascii")
        except UnicodeError:
            name = shown.encode("idna")
        return b"GET / HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (name, port)
    if framing == "fixed":
        return LINE_REQUEST
    return DEFAULT_REQUEST


def _check_framing(framing: Any) -> str:
    if not isinstance(framing, str):
        raise TypeError(f"framing must be a str, got {type(framing).__name__}")
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    return framing


def _response_len(framing: str, response_len: Any, requests: int, request: bytes) -> int:
    """Check the framing options together; return the response length (0: none)."""
    if framing == "fixed":
        if response_len is None:
            if not request:
                raise ValueError("response_len must be given for framing 'fixed' with an "
                                 "empty request (by default it is the request's length)")
            return len(request)
        return check_int("response_len", response_len, 1, MAX_RESPONSE_LEN)
    if response_len is not None:
        raise ValueError(f"response_len is for framing 'fixed' only, not {framing!r}")
    if requests > 1 and framing == "eof":
        raise ValueError("requests_per_connection must be 1 with framing 'eof' (the EOF that "
                         "ends the response ends the connection): use 'fixed' or 'http'")
    return 0


def _resolve(host: Any, port: int) -> Tuple[int, str, int]:
    """Return (family, numeric address, IPv6 scope id) of host's first TCP address."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {type(host).__name__}")
    if not host:
        raise ValueError("host must be an address or a host name, got ''")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"host {host!r} does not resolve: {e}") from e
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            return int(family), str(sockaddr[0]), 0
        if family == socket.AF_INET6:
            # a scoped address comes back as "fe80::1%eth0"; the scope
            # travels as a number
            v6 = cast(Tuple[str, int, int, int], sockaddr)
            return int(family), v6[0].split("%", 1)[0], v6[3]
    raise ValueError(f"host {host!r} has no IPv4 or IPv6 address")


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _ensure_fd_limit(open_at_once: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit if open_at_once sockets would not fit."""
    needed = open_at_once + _open_fds() + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(
            f"{open_at_once} connections open at once need about {needed} file descriptors, "
            f"but RLIMIT_NOFILE's hard limit is {hard}: lower concurrency (or connections "
            "with burst=True), or raise the hard limit (ulimit -Hn)")
    new_soft = hard if hard != resource.RLIM_INFINITY else needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    log.info("raised RLIMIT_NOFILE soft limit from %d to %d for the load", soft, new_soft)


def _percentiles(raw: Dict[str, int]) -> Percentiles:
    return Percentiles(p50=raw["p50_ns"] / 1e6, p90=raw["p90_ns"] / 1e6,
                       p99=raw["p99_ns"] / 1e6, max=raw["max_ns"] / 1e6)


def run(host: str, port: int, *, connections: int = 1000, concurrency: int = 64,
        burst: bool = False, timeout: float = 10.0, max_seconds: Optional[float] = None,
        request: Optional[bytes] = None, requests_per_connection: int = 1,
        framing: str = "eof", response_len: Optional[int] = None) -> LoadResult:
    """Open ``connections`` TCP connections to (host, port) from C; return what was measured.

    At most ``concurrency`` connections are open at once (``burst=True``:
    all of them, started back to back without waiting for any reply; their
    round trips include the time the one client thread spent starting the
    rest, their connect times do not: see the module's docstring). Each one
    connects, sends ``request`` (may be empty with one request per
    connection: the server speaks first), reads the response, and after
    ``requests_per_connection`` responses (default 1) closes; with more than
    one it sends the next request as soon as a response is complete.
    ``framing`` says where a response ends: ``"eof"`` (the default; the
    server closes, so one request per connection), ``"fixed"`` (after
    ``response_len`` bytes; by default the request's length, for an echo) or
    ``"http"`` (see the module's docstring). ``request`` None sends
    ``default_request(framing, host, port)``.

    ``timeout`` bounds each connection with one request (from its connect
    start to its end) and each request with more (the first from the
    connect start, each later one from the start of its send): it then
    fails as "timeout".

    ``max_seconds`` bounds the run's length apart from ``timeout``: no
    connection starts later than ``max_seconds`` after the run started, so
    the run ends within ``max_seconds + requests_per_connection * timeout``
    (the connections still open then finish or time out as usual; those
    never started are not counted in ``connections``). ``None`` (the
    default) sets no bound of its own: every request is bounded by
    ``timeout`` and at most ``concurrency`` connections are open at once
    (all of them with ``burst=True``), so the run is bounded by its shape,
    and the starts stop after ``(ceil(connections / concurrency) + 1) *
    (requests_per_connection * timeout + 0.064)`` seconds (0.064: the
    longest back-off after running out of ports or fds), which only a run
    starved of ports or fds comes near. A long soak (say 1,000,000
    connections at 20,000 conn/s, ``timeout=10``) needs no ``max_seconds``;
    give one to cap its wall time.

    The GIL is released for the run, except for a moment after each signal
    (so Ctrl-C interrupts it). The process's RLIMIT_NOFILE soft limit is
    raised up to the hard limit if the open sockets need it, and stays
    raised; its fd table is grown for them before the first connect (the
    kernel would otherwise stall the client while growing it mid-load).

    Raise ValueError for an argument out of range (naming it) or a host that
    does not resolve, TypeError for one of the wrong type, OSError if epoll
    itself fails.
    """
    n = check_int("connections", connections, 1, MAX_CONNECTIONS)
    c = check_int("concurrency", concurrency, 1, MAX_CONCURRENCY)
    port = check_int("port", port, 1, 65535)
    if not isinstance(burst, bool):
        raise TypeError(f"burst must be a bool, got {type(burst).__name__}")
    timeout_s = check_seconds("timeout", timeout, MAX_TIMEOUT)
    assert timeout_s is not None
    max_s = check_seconds("max_seconds", max_seconds, MAX_SECONDS, allow_none=True)
    per_conn = check_int("requests_per_connection", requests_per_connection, 1,
                         MAX_REQUESTS_PER_CONNECTION)
    framing = _check_framing(framing)
    if request is None:
        request = default_request(framing, host if isinstance(host, str) else "", port)
    data = _check_request(request)
    fixed_len = _response_len(framing, response_len, per_conn, data)
    if per_conn > 1 and not data:
        raise ValueError("request must not be empty with requests_per_connection > 1")
    if burst and n > MAX_CONCURRENCY:
        raise ValueError(
            f"connections must be at most {MAX_CONCURRENCY} with burst=True, got {n}")
    open_at_once = n if burst else min(c, n)
    family, ip, scope_id = _resolve(host, port)
    _ensure_fd_limit(open_at_once)

    raw = _loadgen.load(family, ip, port, scope_id, n, open_at_once,
                        max(1, int(timeout_s * 1e9)), data,
                        0 if max_s is None else max(1, int(max_s * 1e9)),
                        per_conn, _FRAMING_CODES[framing], fixed_len)

    elapsed_s = raw["elapsed_ns"] / 1e9
    completed = raw["completed"]
    requests = raw["requests"]
    return LoadResult(
        connections=raw["attempted"],
        completed=completed,
        failures={kind: raw[kind] for kind in FAILURE_KINDS},
        elapsed_s=elapsed_s,
        issue_s=raw["issue_ns"] / 1e9,
        conn_per_s=completed / elapsed_s if elapsed_s > 0 else 0.0,
        connect_ms=_percentiles(raw["connect"]),
        rtt_ms=_percentiles(raw["rtt"]),
        requests=requests,
        requests_per_s=requests / elapsed_s if elapsed_s > 0 else 0.0,
        request_ms=_percentiles(raw["request"]),
        requests_per_connection=per_conn,
        framing=framing,
    )


# -- the ``fastaccept load`` verb ---------------------------------------------------

#: The verb's description, for the dispatcher.
VERB_DESCRIPTION = ("Connect, send one HTTP/1.0 request, read to EOF, close: N times, from one "
                    "C epoll thread. With --requests-per-connection R and a --framing of "
                    "fixed or http, each connection sends R requests back to back.")


def _escaped_bytes(text: str) -> bytes:
    """--request's value: Python escapes (\\r \\n \\x00 ...) decoded, as latin-1 bytes."""
    try:
        return text.encode("latin-1").decode("unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"not a request: {e}") from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the load verb's options to ``parser``."""
    parser.add_argument("host", help="server address or name")
    parser.add_argument("port", type=int, help="server port")
    parser.add_argument("-n", "--connections", type=int, default=20000,
                        help="connections to make (default 20000)")
    parser.add_argument("-c", "--concurrency", type=int, default=64,
                        help="connections open at once (default 64)")
    parser.add_argument("--burst", action="store_true",
                        help="open all connections at once (ignores -c)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="timeout in seconds per connection, per request with "
                        "--requests-per-connection above 1 (default 10)")
    parser.add_argument("-r", "--requests-per-connection", type=int, default=1,
                        help="requests each connection sends back to back before it closes "
                        "(default 1; above 1 needs --framing fixed or http)")
    parser.add_argument("--framing", choices=FRAMINGS, default="eof",
                        help="where a response ends: eof (the server closes; the default), "
                        "fixed (--response-len bytes) or http (Content-Length, chunked, or EOF)")
    parser.add_argument("--response-len", type=int, default=None,
                        help="bytes per response with --framing fixed (default: the "
                        "request's length, for an echo)")
    parser.add_argument("--request", type=_escaped_bytes, default=None,
                        help="the request, with Python escapes such as \\r\\n (default: "
                        "an HTTP/1.0 GET; with --framing http an HTTP/1.1 GET; with "
                        "--framing fixed the line 'ping\\n')")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="start no connection later than this many seconds into the run, "
                        "which then ends within max-seconds + timeout (default: no bound but "
                        "the run's shape: connections, concurrency and timeout)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    """The load verb: one run with parsed ``args``; print the result."""
    result = run(args.host, args.port, connections=args.connections,
                 concurrency=args.concurrency, burst=args.burst, timeout=args.timeout,
                 max_seconds=args.max_seconds, request=args.request,
                 requests_per_connection=args.requests_per_connection, framing=args.framing,
                 response_len=args.response_len)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2), flush=True)
        return 0
    shown = f"[{args.host}]" if ":" in args.host else args.host
    cut = (f" ({args.connections - result.connections} not started: the run's time bound "
           "passed)"
           if result.connections < args.connections else "")
    print(f"load {shown}:{args.port}: completed {result.completed}/{result.connections} in "
          f"{result.elapsed_s:.3f} s (all started in {result.issue_s:.3f} s), "
          f"{result.conn_per_s:.0f} conn/s{cut}")
    print("failures: " + ", ".join(f"{k} {v}" for k, v in result.failures.items()))
    shown_ms = [("connect", result.connect_ms), ("rtt", result.rtt_ms)]
    if result.requests_per_connection > 1 or result.framing != "eof":
        print(f"requests: {result.requests} in {result.elapsed_s:.3f} s, "
              f"{result.requests_per_s:.0f} req/s ({result.requests_per_connection} per "
              f"connection, framing {result.framing})")
        shown_ms.append(("request", result.request_ms))
    for name, p in shown_ms:
        print(f"{name + ' ms:':12} p50 {p.p50:.3f}  p90 {p.p90:.3f}  p99 {p.p99:.3f}  "
              f"max {p.max:.3f}", flush=True)
    return 0

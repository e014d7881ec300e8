"""What the bench measures: the load scenarios and the servers they run against.

A scenario is one load shape with the server settings it needs; a server
spec names a reference server (``refservers``) and its worker count as the
table shows it. ``runner`` runs every scenario against each of its servers.

A scenario's ``kind`` says what one run is:

    connections   N connections (``concurrency`` at once, or a burst), each
                  sending one request and reading the reply to EOF: conn/s,
                  CPU per connection, connect and round-trip p99, overflows.
    requests      ``concurrency`` clients sending requests in the scenario's
                  protocol, ``requests_per_connection`` back to back on each
                  connection (1: a connection per request): requests/s, CPU
                  per request, request latency p50 and p99.
    idle          ``connections`` requests one at a time with no other
                  client, then ``idle_connections`` idle clients that never
                  send, then the same requests again: the round trips with
                  and without them, and the server's memory per idle
                  connection.
    reload        ``concurrency`` clients keep requests going against a
                  supervisor of several processes while it gets ``reloads``
                  SIGHUPs and one child is SIGKILLed (after the
                  ``kill_after``-th reload): the reload contract's counts
                  (refused, reset, timeout, 5xx; what the killed child held)
                  and each reload's time.

The scenarios of several processes (``processes-*``, ``reload``) are
``optional``: not in the default run, chosen with ``--scenario``.

The HTTP scenarios (``http-*``, protocol ``http/1.0`` or ``http/1.1``) are
of the first kinds too, against the HTTP servers: fastaccept's WSGIServer
(refservers' ``wsgi`` with ``--hello``) and the peers of ``httpservers``,
all serving ``wsgiapp.app``. Their table has columns of its own and, where
the issue sets them, ``targets`` for fastaccept: its req/s as a multiple of
a peer's, overflows in every repetition, the round trip p99 beside idle
connections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

KINDS = ("connections", "requests", "idle", "reload")

#: The servers of the first scenarios (``connections`` kind), in table order.
CONNECTION_SERVERS = ("serial", "threadpool", "socketserver", "fastaccept-1", "fastaccept-8",
                      "c-inline")
KEEPALIVE_SERVERS = ("threadpool", "socketserver", "fastaccept-1", "fastaccept-8", "gthread")
IDLE_SERVERS = ("fastaccept-1", "fastaccept-8", "gthread")
#: Why a server is left out of a scenario, printed under its table.
C_INLINE_NO_LINES = ("c-inline", "not run: it answers the http-close protocol in C and "
                     "cannot echo lines")
IDLE_BLOCKING = (
    ("serial", "not run: it serves one connection at a time, so the first idle one "
               "blocks it in recv() and no real request is ever answered"),
    ("threadpool", "not run: each idle connection blocks one of its 8 threads in recv(), "
                   "so from 8 idle ones on no real request is answered"),
    ("socketserver", "not run: it would start one thread per idle connection "
                     "(10,000 threads for idle-10000), each blocked in recv()"),
)
#: Several processes: 8 workers each, 2 processes, the two listener layouts,
#: against one process (fastaccept-8).
PROCESS_SERVERS = ("fastaccept-8", "fastaccept-8x2", "fastaccept-8x2-rp")
#: processes-cpu's, each 2-process row against its own 1-process row (its
#: ``single``): the rows above; fastaccept with the one worker per process a
#: CPU-bound handler wants (8 threads only pass the GIL around); and the
#: serial server forked twice on one socket, the least a Python server can
#: add to the handler's work (and one that overflows in any burst).
PROCESS_CPU_SERVERS = ("fastaccept-1", "fastaccept-1x2-rp", *PROCESS_SERVERS, "serial",
                       "serial-x2")
RELOAD_SERVERS = ("wsgi-8x2", "wsgi-8x2-rp")
#: Descriptors a server (and the bench) gets beyond its idle connections.
IDLE_FD_HEADROOM = 1024
#: The protocols of the HTTP servers: an HTTP/1.0 GET read to EOF (the server
#: closes), or HTTP/1.1 GETs on a kept connection.
HTTP_PROTOCOLS = ("http/1.0", "http/1.1")
#: The HTTP servers, in table order: fastaccept's WSGIServer, then the peers.
HTTP_SERVERS = ("fastaccept-wsgi-1", "fastaccept-wsgi-8", "gunicorn-gthread", "waitress",
                "cheroot", "granian")
#: The fastaccept rows a target judges.
HTTP_JUDGED = ("fastaccept-wsgi-1", "fastaccept-wsgi-8")
#: Seconds an HTTP server of the bench keeps an idle connection: longer than
#: any run, so that none closes a kept or silent connection mid-run.
HTTP_KEEP_ALIVE_S = 300
#: refservers options of fastaccept's rows in the HTTP scenarios.
HTTP_WSGI_OPTIONS = ("--hello", "--keep-alive", str(HTTP_KEEP_ALIVE_S))


@dataclass(frozen=True)
class Scenario:
    """One load shape, with the server settings it needs.

    ``workers`` applies to the pooled servers (threadpool, gthread;
    fastaccept-N keeps its own N); ``timeout_s`` bounds each connection
    (each request, with more than one per connection) and the time
    connections are started. ``servers`` are the servers it runs, and
    ``skipped`` the ones it leaves out on purpose, with why.
    ``requests_per_connection`` (``quick_requests_per_connection`` with
    --quick) and ``framing`` are the load generator's; ``idle_connections``
    is K of the ``idle`` kind (``connections`` are then its real requests).
    ``per_rep_overflows``: the table lists the overflows of every
    repetition, not only their median. ``targets``, of the HTTP scenarios:
    what the issue asks of fastaccept's rows, each (what, peer, bound):
    ("ratio", PEER, X): req/s at least X times PEER's; ("overflows", "", N):
    at most N overflows in every repetition; ("rtt_p99_ms", "", MS): round
    trip p99 beside the idle connections under MS.
    """

    name: str
    connections: int
    quick_connections: int
    concurrency: int
    burst: bool
    backlog: int
    workers: int
    sleep_ms: float
    cpu_ms: float
    timeout_s: float
    note: str = ""
    kind: str = "connections"
    protocol: str = "http-close"
    requests_per_connection: int = 1
    quick_requests_per_connection: int = 1
    framing: str = "eof"
    idle_connections: int = 0
    servers: Tuple[str, ...] = CONNECTION_SERVERS
    skipped: Tuple[Tuple[str, str], ...] = ()
    per_rep_overflows: bool = False
    targets: Tuple[Tuple[str, str, float], ...] = ()
    #: not in the default run (long, or of several processes): --scenario NAME
    optional: bool = False
    #: the table shows how the connections spread over the processes, and
    #: the client's CPU per connection
    per_process: bool = False
    #: the reload kind: SIGHUPs, and after which one a child is SIGKILLed
    reloads: int = 0
    kill_after: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def size(self, quick: bool = False) -> int:
        """Connections of one run (the real requests, for the idle kind)."""
        return self.quick_connections if quick else self.connections

    def per_connection(self, quick: bool = False) -> int:
        """Requests each connection sends."""
        return self.quick_requests_per_connection if quick else self.requests_per_connection

    @property
    def is_http(self) -> bool:
        """Whether this scenario runs the HTTP servers (an HTTP protocol)."""
        return self.protocol in HTTP_PROTOCOLS

    def ratio_peers(self) -> Tuple[str, ...]:
        """The peers whose req/s the table divides every row's by."""
        return tuple(peer for what, peer, _ in self.targets if what == "ratio")

    def server_fds(self) -> Optional[int]:
        """The descriptors a server of this scenario needs, when more than usual."""
        return self.idle_connections + IDLE_FD_HEADROOM if self.idle_connections else None

    def describe(self, quick: bool = False) -> str:
        """Return a one-line summary of the load and the handler."""
        n = self.size(quick)
        if self.is_http:
            return self._describe_http(n, quick)
        if self.sleep_ms:
            work = f"handler sleeps {self.sleep_ms:g} ms"
        elif self.cpu_ms:
            work = f"handler burns ~{self.cpu_ms:g} ms of pure-Python CPU"
        else:
            work = "handler does no extra work"
        if self.kind == "requests":
            r = self.per_connection(quick)
            if r > 1:
                load = (f"{n} clients at once, {r} requests each back to back on one "
                        f"connection ({n * r} requests), protocol {self.protocol}")
            else:
                load = (f"{n} connections, {self.concurrency} concurrent, one request each, "
                        f"protocol {self.protocol}")
            return f"{load}; {work}; backlog {self.backlog}; {self.workers} workers"
        if self.kind == "reload":
            r = self.per_connection(quick)
            shape = f"{r} requests per connection" if r > 1 else "one request per connection"
            return (f"{self.concurrency} clients for {self.timeout_s:g} s, {shape}; "
                    f"{self.reloads} SIGHUPs, one child SIGKILLed after the "
                    f"{self.kill_after}th; {self.workers} workers per process")
        if self.kind == "idle":
            return (f"{n} requests one at a time ({self.protocol}), first alone, then beside "
                    f"{self.idle_connections} idle connections; {work}; backlog "
                    f"{self.backlog}; {self.workers} workers")
        load = f"{n} connections at once" if self.burst else \
            f"{n} connections, {self.concurrency} concurrent"
        return f"{load}; {work}; backlog {self.backlog}; {self.workers} workers"

    def _describe_http(self, n: int, quick: bool) -> str:
        app = (f"hello-world WSGI app; backlog {self.backlog}; {self.workers} threads "
               "(fastaccept-wsgi-1: 1)")
        get = "GET HTTP/1.0, read to EOF" if self.protocol == "http/1.0" else \
            "GET HTTP/1.1 (keep-alive)"
        if self.kind == "idle":
            return (f"{n} requests one at a time ({get}), first alone, then beside "
                    f"{self.idle_connections} idle connections; {app}")
        if self.burst:
            return f"{n} connections at once, one {get} each; {app}"
        r = self.per_connection(quick)
        if r > 1:
            return (f"{n} connections at once, {r} requests each back to back "
                    f"({n * r} requests), {get}; {app}")
        return f"{n} connections, {self.concurrency} concurrent, one {get} each; {app}"


def _idle(k: int) -> Scenario:
    return Scenario(f"idle-{k}", 200, 200, 1, False, 128, 8, 0.0, 0.0, 10.0, kind="idle",
                    idle_connections=k, servers=IDLE_SERVERS, skipped=IDLE_BLOCKING)


SCENARIOS: Dict[str, Scenario] = {s.name: s for s in (
    Scenario("throughput", 20000, 2000, 64, False, 128, 8, 0.0, 0.0, 60.0),
    Scenario("burst", 2000, 500, 0, True, 128, 8, 1.0, 0.0, 15.0),
    Scenario("burst-2048", 2000, 500, 0, True, 2048, 8, 1.0, 0.0, 15.0),
    Scenario("burst-cpu", 2000, 500, 0, True, 128, 8, 0.0, 1.0, 15.0),
    Scenario("seed", 2000, 500, 256, False, 128, 8, 5.0, 0.0, 30.0,
             note="the design note claims ~200 conn/s for the serial server"),
    Scenario("burst-zero", 2000, 500, 0, True, 128, 8, 0.0, 0.0, 15.0,
             per_rep_overflows=True),
    Scenario("keepalive", 256, 256, 256, False, 1024, 8, 0.0, 0.0, 30.0, kind="requests",
             protocol="line-keep", requests_per_connection=1200,
             quick_requests_per_connection=200, framing="fixed", servers=KEEPALIVE_SERVERS,
             skipped=(C_INLINE_NO_LINES,)),
    Scenario("keepalive-close", 20000, 4000, 256, False, 1024, 8, 0.0, 0.0, 30.0,
             kind="requests", protocol="line-close", servers=KEEPALIVE_SERVERS,
             skipped=(C_INLINE_NO_LINES,)),
    _idle(64),
    _idle(1000),
    _idle(10000),
    # The HTTP servers, one WSGI app (issue 12's targets for fastaccept).
    Scenario("http-close", 10000, 1000, 64, False, 128, 8, 0.0, 0.0, 30.0,
             kind="requests", protocol="http/1.0", servers=HTTP_SERVERS,
             targets=(("ratio", "granian", 1.0),)),
    Scenario("http-keepalive", 64, 64, 64, False, 128, 8, 0.0, 0.0, 30.0,
             kind="requests", protocol="http/1.1", requests_per_connection=500,
             quick_requests_per_connection=50, framing="http", servers=HTTP_SERVERS,
             targets=(("ratio", "gunicorn-gthread", 5.0), ("ratio", "granian", 0.6))),
    Scenario("http-burst", 2000, 500, 0, True, 128, 8, 0.0, 0.0, 15.0,
             protocol="http/1.0", servers=HTTP_SERVERS, per_rep_overflows=True,
             targets=(("overflows", "", 0),)),
    Scenario("http-idle", 200, 100, 1, False, 128, 8, 0.0, 0.0, 10.0, kind="idle",
             protocol="http/1.0", idle_connections=64, servers=HTTP_SERVERS,
             targets=(("rtt_p99_ms", "", 10.0),)),
    Scenario("processes-spread", 20000, 4000, 64, False, 128, 8, 0.0, 0.0, 60.0,
             servers=PROCESS_SERVERS, optional=True, per_process=True),
    Scenario("processes-burst", 2000, 500, 0, True, 128, 8, 1.0, 0.0, 15.0,
             servers=PROCESS_SERVERS, optional=True, per_process=True),
    Scenario("processes-cpu", 4000, 1000, 64, False, 2048, 8, 0.0, 1.0, 60.0,
             servers=PROCESS_CPU_SERVERS, optional=True, per_process=True),
    Scenario("reload", 0, 0, 64, False, 2048, 8, 0.0, 0.0, 12.0, kind="reload",
             servers=RELOAD_SERVERS, optional=True, reloads=10, kill_after=5),
    Scenario("reload-keepalive", 0, 0, 64, False, 2048, 8, 0.0, 0.0, 12.0, kind="reload",
             requests_per_connection=100, quick_requests_per_connection=100, framing="http",
             servers=RELOAD_SERVERS, optional=True, reloads=10, kill_after=5),
)}
#: What the bench runs when no --scenario is given.
DEFAULT_SCENARIOS = tuple(name for name, s in SCENARIOS.items() if not s.optional)


@dataclass(frozen=True)
class ServerSpec:
    """A reference server as the table names it: a refservers NAME and its
    workers. ``extra``: more refservers options (a variant measured against
    the default; variants run only when named with --only)."""

    label: str
    kind: str
    workers: Optional[int] = None       # None: the scenario's
    uses_workers: bool = True
    extra: Tuple[str, ...] = ()
    processes: int = 1
    #: with processes > 1: "shared" (the bench's socket, inherited) or
    #: "reuseport" (the server binds one per process itself)
    listener: Optional[str] = None
    #: False for a variant that hands connections to workers as they are
    #: accepted: idle connections would hold every worker (not run in ``idle``)
    idle_ok: bool = True
    #: a peer of ``httpservers`` (kind: its NAME), not a refservers server
    peer: bool = False
    #: with processes > 1: the 1-process server its "x 1 proc" divides by
    single: Optional[str] = None

    def workers_for(self, scenario: Scenario) -> int:
        """Return the worker count this server runs with in ``scenario``."""
        return self.workers if self.workers is not None else scenario.workers


SERVERS: Dict[str, ServerSpec] = {s.label: s for s in (
    ServerSpec("serial", "serial", 1, uses_workers=False),
    ServerSpec("threadpool", "threadpool"),
    ServerSpec("socketserver", "socketserver", uses_workers=False),
    ServerSpec("fastaccept-1", "fastaccept", 1),
    ServerSpec("fastaccept-8", "fastaccept", 8),
    ServerSpec("gthread", "gthread"),
    ServerSpec("c-inline", "c-inline", uses_workers=False),
    ServerSpec("fastaccept-8x2", "fastaccept", 8, processes=2, listener="shared",
               single="fastaccept-8"),
    ServerSpec("fastaccept-8x2-rp", "fastaccept", 8, processes=2, listener="reuseport",
               single="fastaccept-8"),
    ServerSpec("fastaccept-1x2-rp", "fastaccept", 1, processes=2, listener="reuseport",
               single="fastaccept-1"),
    ServerSpec("serial-x2", "serial", 1, uses_workers=False, processes=2, listener="shared",
               single="serial"),
    ServerSpec("wsgi-8x2", "wsgi", 8, processes=2, listener="shared"),
    ServerSpec("wsgi-8x2-rp", "wsgi", 8, processes=2, listener="reuseport"),
    # the HTTP scenarios' servers: fastaccept's WSGIServer on the hello app,
    # kept connections never timed out mid-run (as the peers are told)
    ServerSpec("fastaccept-wsgi-1", "wsgi", 1, extra=HTTP_WSGI_OPTIONS),
    ServerSpec("fastaccept-wsgi-8", "wsgi", 8, extra=HTTP_WSGI_OPTIONS),
    ServerSpec("gunicorn-gthread", "gunicorn", peer=True),
    ServerSpec("waitress", "waitress", peer=True),
    ServerSpec("cheroot", "cheroot", peer=True),
    ServerSpec("granian", "granian", peer=True),
)}
#: fastaccept with one choice changed, to measure the choice (design.md): not
#: in the default run, named with --only.
VARIANTS: Dict[str, ServerSpec] = {s.label: s for s in (
    ServerSpec("fastaccept-8-accept", "fastaccept", 8, extra=("--fa-dispatch", "accept"),
               idle_ok=False),
    ServerSpec("fastaccept-8-defer", "fastaccept", 8,
               extra=("--fa-dispatch", "accept", "--defer-accept", "1"), idle_ok=False),
    ServerSpec("fastaccept-8-readable-defer", "fastaccept", 8, extra=("--defer-accept", "1")),
    ServerSpec("fastaccept-1-nice10", "fastaccept", 1, extra=("--fa-worker-nice", "10")),
    ServerSpec("fastaccept-8-nice10", "fastaccept", 8, extra=("--fa-worker-nice", "10")),
    ServerSpec("fastaccept-1-normal", "fastaccept", 1,
               extra=("--fa-accept-priority", "normal")),
    ServerSpec("fastaccept-8-normal", "fastaccept", 8,
               extra=("--fa-accept-priority", "normal")),
    ServerSpec("fastaccept-1-normal-nice10", "fastaccept", 1,
               extra=("--fa-accept-priority", "normal", "--fa-worker-nice", "10")),
    ServerSpec("fastaccept-8-normal-nice10", "fastaccept", 8,
               extra=("--fa-accept-priority", "normal", "--fa-worker-nice", "10")),
    ServerSpec("fastaccept-1-nospin", "fastaccept", 1, extra=("--fa-spin-us", "0")),
    ServerSpec("fastaccept-8-nospin", "fastaccept", 8, extra=("--fa-spin-us", "0")),
    ServerSpec("fastaccept-8-nonap", "fastaccept", 8, extra=("--fa-nap-us", "0")),
)}
BASELINE = "c-inline"


def runs_in(scenario: Scenario, label: str) -> bool:
    """Whether server ``label`` runs in ``scenario``: a variant runs wherever
    a server of its kind and process count does (``idle`` ones only if
    ``idle_ok``)."""
    if label in scenario.servers:
        return True
    variant = VARIANTS.get(label)
    if variant is not None and scenario.kind == "idle" and not variant.idle_ok:
        return False
    return variant is not None and any(
        SERVERS[s].kind == variant.kind and SERVERS[s].processes == variant.processes
        for s in scenario.servers if s in SERVERS)

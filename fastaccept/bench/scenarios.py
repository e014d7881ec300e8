"""What the bench measures: the load scenarios and the servers they run against.

A scenario is one load shape with the server settings it needs; a server
spec names a reference server (``refservers``) and its worker count as the
table shows it. ``runner`` runs every scenario against every server.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Scenario:
    """One load shape, with the server settings it needs.

    ``workers`` applies to the pooled servers (threadpool; fastaccept-N
    keeps its own N); ``timeout_s`` bounds each connection and the time
    connections are started, so a run lasts at most twice that.
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

    def describe(self, quick: bool = False) -> str:
        """Return a one-line summary of the load and the handler."""
        n = self.quick_connections if quick else self.connections
        load = f"{n} connections at once" if self.burst else \
            f"{n} connections, {self.concurrency} concurrent"
        if self.sleep_ms:
            work = f"handler sleeps {self.sleep_ms:g} ms"
        elif self.cpu_ms:
            work = f"handler burns ~{self.cpu_ms:g} ms of pure-Python CPU"
        else:
            work = "handler does no extra work"
        return f"{load}; {work}; backlog {self.backlog}; {self.workers} workers"


SCENARIOS: Dict[str, Scenario] = {s.name: s for s in (
    Scenario("throughput", 20000, 2000, 64, False, 128, 8, 0.0, 0.0, 60.0),
    Scenario("burst", 2000, 500, 0, True, 128, 8, 1.0, 0.0, 15.0),
    Scenario("burst-2048", 2000, 500, 0, True, 2048, 8, 1.0, 0.0, 15.0),
    Scenario("burst-cpu", 2000, 500, 0, True, 128, 8, 0.0, 1.0, 15.0),
    Scenario("seed", 2000, 500, 256, False, 128, 8, 5.0, 0.0, 30.0,
             note="the design note claims ~200 conn/s for the serial server"),
)}


@dataclass(frozen=True)
class ServerSpec:
    """A reference server as the table names it: a refservers NAME and its workers."""

    label: str
    kind: str
    workers: Optional[int] = None       # None: the scenario's
    uses_workers: bool = True

    def workers_for(self, scenario: Scenario) -> int:
        """Return the worker count this server runs with in ``scenario``."""
        return self.workers if self.workers is not None else scenario.workers


SERVERS: Dict[str, ServerSpec] = {s.label: s for s in (
    ServerSpec("serial", "serial", 1, uses_workers=False),
    ServerSpec("threadpool", "threadpool"),
    ServerSpec("socketserver", "socketserver", uses_workers=False),
    ServerSpec("fastaccept-1", "fastaccept", 1),
    ServerSpec("fastaccept-8", "fastaccept", 8),
    ServerSpec("c-inline", "c-inline", uses_workers=False),
)}
BASELINE = "c-inline"

"""A ``prometheus_client`` collector for fastaccept servers.

Install the extra (``pip install "fastaccept[prometheus]"``), then register a
collector once for all the servers of a process::

    from prometheus_client import REGISTRY, start_http_server
    from fastaccept.prometheus import Collector

    REGISTRY.register(Collector(server))                 # one server
    REGISTRY.register(Collector({"api": a, "admin": b})) # several: label server="api"...
    start_http_server(9100)

Every scrape calls each server's ``stats()`` and ``queue_wait_histogram()``
(tens of microseconds each); nothing runs between scrapes. The exposition
itself is ``prometheus_client``'s. Metric names (all prefixed ``fastaccept_``):

    accepted_total, handled_total, handler_errors_total      counters
    accept_errors_total{errno="EMFILE"}                      counter per errno name
    emfile_pauses_total, ring_full_waits_total, shed_total   counters
    dispatched_total, kept_total                             counters: connections sent
                                                             to a worker after waiting
                                                             in C; given back (KEEP)
    idle_closed_total, peer_closed_total, stop_closed_total  counters: closed by C (idle
                                                             past idle_timeout, peer gone,
                                                             idle at a stop)
    max_connections_pauses_total                             counter
    proxy_rejected_total{reason="ENOTPROXY"}                 counter per PROXY header
                                                             error: closed by C
    proxy_timeouts_total                                     counter: no whole PROXY
                                                             header by proxy_timeout
    ring_depth, ring_high_water, ring_capacity                gauges (connections)
    conns_open, conns_waiting                                gauges: open connections,
                                                             and those waiting in C
    workers, workers_busy                                    gauges
    kernel_queue_depth, kernel_backlog                       gauges: the listening
                                                             socket's accept queue
    accept_realtime                                          gauge: 1 while the loop
                                                             runs under SCHED_FIFO
    queue_wait_seconds                                       histogram: accept4()
                                                             to a worker taking it
    tcpext_listen_overflows_total, tcpext_listen_drops_total counters of the whole
                                                             network namespace, once
                                                             per scrape, no server label
  and for a WSGIServer:
    http_requests_total                                      counter: requests served
    http_responses_total{class="2xx"}                        counter per status class
    http_app_errors_total                                    counter
    http_rejected_total{status="431"}                        counter: heads refused
                                                             from C, by status
    http_request_seconds                                     histogram: a worker taking
                                                             the request to the end of
                                                             its response
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Tuple, Union

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.utils import floatToGoString

__all__ = ["Collector"]

PREFIX = "fastaccept_"

#: (stats key, help) of the plain counters; the metric is PREFIX + the key.
COUNTERS = (
    ("accepted", "Connections taken from the kernel accept queue (shed ones included)."),
    ("handled", "Connections whose handler returned or raised."),
    ("handler_errors", "Handlers that raised (and sockets that could not be wrapped)."),
    ("emfile_pauses", "Back-offs of the accept loop on EMFILE, ENFILE, ENOBUFS or ENOMEM."),
    ("ring_full_waits", "Times the accept loop found the ring full and waited for a worker, "
     "leaving connections in the kernel queue."),
    ("shed", "Connections answered from C with shed_response and closed because the ring "
     "was full (overload='shed')."),
    ("dispatched", "Connections handed to a worker after waiting in C for their bytes "
     "(or for ring space)."),
    ("kept", "Connections a handler gave back (KEEP) to wait in C for their next request."),
    ("idle_closed", "Connections closed by C after idle_timeout with nothing for a worker."),
    ("peer_closed", "Connections closed by C because the peer left while they waited."),
    ("stop_closed", "Idle connections closed by C (a FIN) at a stop."),
    ("max_connections_pauses", "Times the accept loop stopped accepting at max_connections."),
    ("proxy_timeouts", "Connections closed by C (a FIN) without a whole PROXY protocol "
     "header within proxy_timeout."),
)
#: (stats key, help) of the gauges; the metric is PREFIX + the key.
GAUGES = (
    ("ring_depth", "Accepted connections waiting in the ring for a worker."),
    ("ring_high_water", "Most connections the ring has held at once."),
    ("ring_capacity", "Slots of the ring."),
    ("conns_open", "Open connections: waiting in C, queued in the ring or in a handler."),
    ("conns_waiting", "Connections waiting in C (in the accept loop's epoll set, or ready "
     "for ring space): no thread holds them."),
    ("workers", "Worker threads."),
    ("workers_busy", "Workers running a handler now."),
    ("kernel_queue_depth", "Connections waiting in the listening socket's kernel accept "
     "queue (TCP_INFO tcpi_unacked)."),
    ("kernel_backlog", "Maximum length of the kernel accept queue, after the somaxconn cap "
     "(TCP_INFO tcpi_sacked)."),
    ("accept_realtime", "1 while the accept loop runs under SCHED_FIFO "
     "(accept_priority='realtime', granted), else 0."),
)

ACCEPT_ERRORS_HELP = "accept4() failures by errno name (the loop went on or backed off)."
PROXY_REJECTED_HELP = ("Connections closed by C (a FIN, no answer) because their PROXY "
                       "protocol header was invalid, by error (ENOTPROXY: none at all).")
QUEUE_WAIT_HELP = ("Time from accept4() to a worker taking the connection, in whole "
                   "microseconds.")
#: (stats key, metric name without prefix, TcpExt field) of the namespace-wide counters.
TCPEXT = (("listen_overflows", "tcpext_listen_overflows", "ListenOverflows"),
          ("listen_drops", "tcpext_listen_drops", "ListenDrops"))

Servers = Union[Any, Mapping[str, Any]]


def _tcpext_help(field: str, scope: str = "namespace") -> str:
    return f"TcpExt {field} of /proc/net/netstat: {scope}-wide, every listener counts."


class Collector:
    """Collect the stats of one server, or of several labelled ``server=NAME``.

    ``servers`` is a ``fastaccept.Server`` (or anything with its ``stats()``
    and ``queue_wait_histogram()``), or a mapping of names to them. Register
    the collector with a ``prometheus_client`` registry; do not register two
    collectors for the same names in one registry (their series would
    collide): give one collector all the servers instead.
    """

    def __init__(self, servers: Servers) -> None:
        if isinstance(servers, Mapping):
            self._servers: Dict[str, Any] = dict(servers)
            self._labelled = True
        else:
            self._servers = {"": servers}
            self._labelled = False
        for name, server in self._servers.items():
            if not callable(getattr(server, "stats", None)):
                raise TypeError(f"server {name!r} has no stats() method")

    def describe(self) -> Iterator[Metric]:
        """Yield the metric families without values (lets the registry check names)."""
        labels = ["server"] if self._labelled else []
        for key, doc in COUNTERS:
            yield CounterMetricFamily(PREFIX + key, doc, labels=labels)
        yield CounterMetricFamily(PREFIX + "accept_errors", ACCEPT_ERRORS_HELP,
                                  labels=labels + ["errno"])
        yield CounterMetricFamily(PREFIX + "proxy_rejected", PROXY_REJECTED_HELP,
                                  labels=labels + ["reason"])
        for key, doc in GAUGES:
            yield GaugeMetricFamily(PREFIX + key, doc, labels=labels)
        yield HistogramMetricFamily(PREFIX + "queue_wait_seconds", QUEUE_WAIT_HELP,
                                    labels=labels)
        for _, name, field in TCPEXT:
            yield CounterMetricFamily(PREFIX + name, _tcpext_help(field))

    def collect(self) -> Iterator[Metric]:
        """Read every server's stats now and yield the metric families."""
        labels = ["server"] if self._labelled else []
        snaps = [([name] if self._labelled else [], server, server.stats())
                 for name, server in self._servers.items()]

        for key, doc in COUNTERS:
            family = CounterMetricFamily(PREFIX + key, doc, labels=labels)
            for values, _, st in snaps:
                if st.get(key) is not None:
                    family.add_metric(values, st[key])
            yield family

        errors = CounterMetricFamily(PREFIX + "accept_errors", ACCEPT_ERRORS_HELP,
                                     labels=labels + ["errno"])
        for values, _, st in snaps:
            for errno_name, n in sorted(st.get("accept_errors", {}).items()):
                errors.add_metric(values + [errno_name], n)
        yield errors

        rejected = CounterMetricFamily(PREFIX + "proxy_rejected", PROXY_REJECTED_HELP,
                                       labels=labels + ["reason"])
        for values, _, st in snaps:
            for reason, n in sorted(st.get("proxy_rejected", {}).items()):
                rejected.add_metric(values + [reason], n)
        yield rejected

        for key, doc in GAUGES:
            gauge = GaugeMetricFamily(PREFIX + key, doc, labels=labels)
            for values, _, st in snaps:
                if st.get(key) is not None:     # kernel keys are None once closed
                    gauge.add_metric(values, st[key])
            yield gauge

        waits = HistogramMetricFamily(PREFIX + "queue_wait_seconds", QUEUE_WAIT_HELP,
                                      labels=labels)
        for values, server, _ in snaps:
            histogram = getattr(server, "queue_wait_histogram", None)
            if histogram is None:
                continue
            buckets, sum_us = histogram()
            waits.add_metric(values, [(_le(bound_us), count) for bound_us, count in buckets],
                             sum_value=sum_us / 1e6)
        yield waits

        yield from self._collect_http(labels, snaps)

        # The TcpExt counters are the same for every server of the namespace:
        # one series, from the first server's reading.
        first = snaps[0][2] if snaps else {}
        scope = first.get("listen_counters_scope", "namespace")
        for key, name, field in TCPEXT:
            family = CounterMetricFamily(PREFIX + name, _tcpext_help(field, scope))
            if first.get(key) is not None:
                family.add_metric([], first[key])
            yield family


    def _collect_http(self, labels: List[str],
                      snaps: List[Tuple[List[str], Any, Dict[str, Any]]]) -> Iterator[Metric]:
        """The HTTP server's families (servers without HTTP stats add nothing)."""
        http = [(values, server, st) for values, server, st in snaps if "requests" in st]
        if not http:
            return
        requests = CounterMetricFamily(PREFIX + "http_requests", HTTP_HELP["requests"],
                                       labels=labels)
        responses = CounterMetricFamily(PREFIX + "http_responses", HTTP_HELP["responses"],
                                        labels=labels + ["class"])
        app_errors = CounterMetricFamily(PREFIX + "http_app_errors", HTTP_HELP["app_errors"],
                                         labels=labels)
        rejected = CounterMetricFamily(PREFIX + "http_rejected", HTTP_HELP["rejected"],
                                       labels=labels + ["status"])
        latency = HistogramMetricFamily(PREFIX + "http_request_seconds", HTTP_HELP["latency"],
                                        labels=labels)
        for values, server, st in http:
            requests.add_metric(values, st["requests"])
            for cls, n in sorted(st.get("responses", {}).items()):
                responses.add_metric(values + [cls], n)
            app_errors.add_metric(values, st.get("app_errors", 0))
            for status, n in sorted(st.get("http_rejected", {}).items()):
                rejected.add_metric(values + [str(status)], n)
            histogram = getattr(server, "latency_histogram", None)
            if histogram is not None:
                buckets, sum_us = histogram()
                latency.add_metric(values, [(_le(b), c) for b, c in buckets],
                                   sum_value=sum_us / 1e6)
        yield from (requests, responses, app_errors, rejected, latency)


HTTP_HELP = {
    "requests": "HTTP requests a worker served (each request of a kept connection counts).",
    "responses": "HTTP responses by status class.",
    "app_errors": "Requests whose WSGI application raised.",
    "rejected": "Request heads refused from C, by status (malformed, oversized, too slow).",
    "latency": "From a worker taking an HTTP request to the end of its response.",
}


def _le(bound_us: float) -> str:
    return str(floatToGoString(bound_us / 1e6))

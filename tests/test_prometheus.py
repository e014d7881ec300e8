"""fastaccept.prometheus.Collector: the stats as prometheus_client metrics.

Skipped as a whole when prometheus_client is not installed (it is in the
``test`` extra, so CI runs it)."""
from __future__ import annotations

import socket
import threading
from typing import Any, List

import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import fastaccept  # noqa: E402
from fastaccept.prometheus import Collector  # noqa: E402


def _registry(servers: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(Collector(servers))
    return registry


class FakeServer:
    """Anything with stats() and queue_wait_histogram() can be collected."""

    def __init__(self, **overrides: Any) -> None:
        self.st = {"accepted": 10, "handled": 9, "handler_errors": 1,
                   "accept_errors": {"EMFILE": 3, "ECONNABORTED": 1}, "emfile_pauses": 2,
                   "ring_full_waits": 4, "shed": 11, "ring_depth": 1, "ring_high_water": 7,
                   "ring_capacity": 64, "workers": 8, "workers_busy": 5,
                   "kernel_queue_depth": 6, "kernel_backlog": 128, "listen_overflows": 50,
                   "listen_drops": 55, "listen_counters_scope": "namespace",
                   "dispatched": 21, "kept": 22, "idle_closed": 23, "peer_closed": 24,
                   "stop_closed": 25, "max_connections_pauses": 26, "conns_open": 27,
                   "conns_waiting": 28, "proxy_rejected": {"ENOTPROXY": 29, "ECHECKSUM": 30},
                   "proxy_timeouts": 31}
        self.st.update(overrides)

    def stats(self) -> dict:
        return dict(self.st)

    def queue_wait_histogram(self):
        return [(1.0, 0), (4.0, 2), (16.0, 5), (float("inf"), 6)], 250


def test_metric_names_types_and_values_from_stats():
    registry = _registry(FakeServer())
    get = registry.get_sample_value
    assert get("fastaccept_accepted_total") == 10
    assert get("fastaccept_handled_total") == 9
    assert get("fastaccept_handler_errors_total") == 1
    assert get("fastaccept_emfile_pauses_total") == 2
    assert get("fastaccept_ring_full_waits_total") == 4
    assert get("fastaccept_shed_total") == 11
    assert get("fastaccept_accept_errors_total", {"errno": "EMFILE"}) == 3
    assert get("fastaccept_accept_errors_total", {"errno": "ECONNABORTED"}) == 1
    assert get("fastaccept_ring_depth") == 1
    assert get("fastaccept_ring_high_water") == 7
    assert get("fastaccept_ring_capacity") == 64
    assert get("fastaccept_workers") == 8
    assert get("fastaccept_workers_busy") == 5
    assert get("fastaccept_kernel_queue_depth") == 6
    assert get("fastaccept_kernel_backlog") == 128
    assert get("fastaccept_dispatched_total") == 21
    assert get("fastaccept_kept_total") == 22
    assert get("fastaccept_idle_closed_total") == 23
    assert get("fastaccept_peer_closed_total") == 24
    assert get("fastaccept_stop_closed_total") == 25
    assert get("fastaccept_max_connections_pauses_total") == 26
    assert get("fastaccept_conns_open") == 27
    assert get("fastaccept_conns_waiting") == 28
    assert get("fastaccept_proxy_rejected_total", {"reason": "ENOTPROXY"}) == 29
    assert get("fastaccept_proxy_rejected_total", {"reason": "ECHECKSUM"}) == 30
    assert get("fastaccept_proxy_timeouts_total") == 31
    assert get("fastaccept_tcpext_listen_overflows_total") == 50
    assert get("fastaccept_tcpext_listen_drops_total") == 55
    # the histogram, in seconds
    assert get("fastaccept_queue_wait_seconds_bucket", {"le": "1e-06"}) == 0
    assert get("fastaccept_queue_wait_seconds_bucket", {"le": "4e-06"}) == 2
    assert get("fastaccept_queue_wait_seconds_bucket", {"le": "1.6e-05"}) == 5
    assert get("fastaccept_queue_wait_seconds_bucket", {"le": "+Inf"}) == 6
    assert get("fastaccept_queue_wait_seconds_count") == 6
    assert get("fastaccept_queue_wait_seconds_sum") == pytest.approx(250e-6)

    types = {f.name: f.type for f in
             text_string_to_metric_families(generate_latest(registry).decode())}
    assert types["fastaccept_accepted"] == "counter"
    assert types["fastaccept_ring_depth"] == "gauge"
    assert types["fastaccept_queue_wait_seconds"] == "histogram"
    assert types["fastaccept_tcpext_listen_overflows"] == "counter"
    assert types["fastaccept_proxy_rejected"] == "counter"


def test_several_servers_are_labelled_and_tcpext_appears_once():
    registry = _registry({"api": FakeServer(accepted=1), "admin": FakeServer(accepted=2)})
    get = registry.get_sample_value
    assert get("fastaccept_accepted_total", {"server": "api"}) == 1
    assert get("fastaccept_accepted_total", {"server": "admin"}) == 2
    assert get("fastaccept_accept_errors_total", {"server": "api", "errno": "EMFILE"}) == 3
    assert get("fastaccept_queue_wait_seconds_count", {"server": "admin"}) == 6
    text = generate_latest(registry).decode()
    samples = [line for line in text.splitlines()
               if line.startswith("fastaccept_tcpext_listen_overflows_total")]
    assert samples == ["fastaccept_tcpext_listen_overflows_total 50.0"]


def test_closed_server_has_no_kernel_gauges():
    registry = _registry(FakeServer(kernel_queue_depth=None, kernel_backlog=None))
    assert registry.get_sample_value("fastaccept_kernel_queue_depth") is None
    assert registry.get_sample_value("fastaccept_accepted_total") == 10


def test_duplicate_registration_is_refused():
    registry = _registry(FakeServer())
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(Collector(FakeServer()))


def test_object_without_stats_is_refused():
    with pytest.raises(TypeError, match="stats"):
        Collector(object())


def test_collector_on_a_live_server_follows_its_stats(server_factory, http_get, wait_for):
    release = threading.Event()

    def handler(conn, addr):
        if conn.recv(1024) == b"block":
            release.wait(30.0)
            return
        conn.sendall(b"ok")

    server = server_factory(handler, workers=1, ring_size=2, backlog=64, dispatch="accept")
    registry = _registry(server)
    get = registry.get_sample_value
    assert get("fastaccept_accepted_total") == 0
    assert get("fastaccept_kernel_backlog") == 64
    for _ in range(3):
        assert http_get(server.address, request=b"x") == b"ok"
    wait_for(lambda: get("fastaccept_handled_total") == 3, 10.0, "3 handled")
    assert get("fastaccept_accepted_total") == 3
    assert get("fastaccept_queue_wait_seconds_count") == 3
    clients: List[socket.socket] = []
    try:
        for _ in range(5):
            c = socket.create_connection(server.address, timeout=10.0)
            clients.append(c)
            c.sendall(b"block")
        # (each is read on its own: the worker's busy count and the third
        # connection's push come a moment after the accept that left 2)
        wait_for(lambda: (get("fastaccept_kernel_queue_depth"), get("fastaccept_workers_busy"),
                          get("fastaccept_ring_depth")) == (2, 1, 2), 10.0,
                 "2 connections in the kernel queue, 2 in the ring, 1 in the handler")
        assert get("fastaccept_ring_full_waits_total") >= 1
    finally:
        release.set()
        for c in clients:
            c.close()
    wait_for(lambda: get("fastaccept_handled_total") == 8, 10.0, "8 handled")
    assert server.shutdown(timeout=10.0)
    assert get("fastaccept_accepted_total") == 8           # final values stay
    assert get("fastaccept_queue_wait_seconds_count") == 8
    assert get("fastaccept_kernel_queue_depth") is None    # socket closed


def test_tcpserver_is_collected_before_and_while_serving(no_leaks, wait_for):
    import socketserver

    import fastaccept

    class Quiet(socketserver.BaseRequestHandler):
        def handle(self):
            pass

    server = fastaccept.TCPServer(("127.0.0.1", 0), Quiet, workers=1)
    registry = _registry(server)
    get = registry.get_sample_value
    assert get("fastaccept_accepted_total") == 0            # not serving yet: zeros
    assert get("fastaccept_queue_wait_seconds_count") == 0
    t = threading.Thread(target=server.serve_forever, name="test-serve")
    t.start()
    try:
        wait_for(lambda: get("fastaccept_workers_busy") is not None and server.stats()["workers"],
                 10.0, "the server to start")
        socket.create_connection(server.server_address, timeout=10.0).close()
        wait_for(lambda: get("fastaccept_handled_total") == 1, 10.0, "1 handled")
    finally:
        server.shutdown()
        t.join(10.0)
        server.server_close()
    assert not t.is_alive()


def test_connections_waiting_in_c_are_a_gauge(server_factory, wait_for):
    import fastaccept

    def handler(conn, addr):
        conn.sendall(conn.recv(1024))
        return fastaccept.KEEP

    server = server_factory(handler, workers=1)
    get = _registry(server).get_sample_value
    clients: List[socket.socket] = []
    try:
        for _ in range(3):
            clients.append(socket.create_connection(server.address, timeout=10.0))
        clients[0].sendall(b"hi")
        assert clients[0].recv(16) == b"hi"
        wait_for(lambda: get("fastaccept_conns_waiting") == 3, 10.0, "3 waiting in C")
        assert get("fastaccept_conns_open") == 3
        assert get("fastaccept_kept_total") == 1
        assert get("fastaccept_workers_busy") == 0
    finally:
        for c in clients:
            c.close()
    wait_for(lambda: get("fastaccept_peer_closed_total") == 3, 10.0, "3 closed by C")
    assert get("fastaccept_conns_waiting") == 0


def test_wsgi_server_http_families(wsgi_factory, wait_for):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = wsgi_factory(app)
    get = _registry(server).get_sample_value
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 3)
        data = b""
        while data.count(b"ok") < 3:
            data += sock.recv(4096)
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")         # no Host: 400 from C
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
    wait_for(lambda: get("fastaccept_http_requests_total") == 3, 10.0, "3 requests")
    assert get("fastaccept_http_responses_total", {"class": "2xx"}) == 3
    assert get("fastaccept_http_app_errors_total") == 0
    wait_for(lambda: get("fastaccept_http_rejected_total", {"status": "400"}) == 1, 10.0,
             "a 400 from C")
    assert get("fastaccept_http_request_seconds_count") == 3


def test_servers_not_started_yet_are_collected(no_leaks):
    """Before start() the counts by name are empty dicts, as they are later."""
    def app(environ, start_response):
        start_response("200 OK", [])
        return []

    servers = {"wsgi": fastaccept.WSGIServer(app), "plain": fastaccept.Server(lambda c, a: None)}
    try:
        get = _registry(servers).get_sample_value
        assert get("fastaccept_accepted_total", {"server": "wsgi"}) == 0
        assert get("fastaccept_http_requests_total", {"server": "wsgi"}) == 0
        assert get("fastaccept_accepted_total", {"server": "plain"}) == 0
        assert get("fastaccept_proxy_timeouts_total", {"server": "plain"}) == 0
    finally:
        for server in servers.values():
            server.shutdown()


def test_proxy_rejections_of_a_real_server(server_factory, wait_for):
    server = server_factory(lambda c, a: None, proxy_protocol=True)
    get = _registry(server).get_sample_value
    with socket.create_connection(server.address, timeout=10.0) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")        # a direct client: no header
        assert sock.recv(16) == b""
    wait_for(lambda: get("fastaccept_proxy_rejected_total", {"reason": "ENOTPROXY"}) == 1,
             10.0, "the rejection")
    assert get("fastaccept_proxy_timeouts_total") == 0

"""Micro benchmarks of the pieces a connection passes through in Python.

    ring push+pop     one push and one pop through the extension (Ring), the
                      per-connection cost of the hand-off between the accept
                      loop and a worker, seen from Python
    pop() wake-up     a push to a ring whose consumer is parked in pop(), and
                      the consumer's reply through a second ring: two wake-ups,
                      each a futex wake plus taking the GIL
    wrap an fd        socket.socket(family, type, proto, fd), what a worker
                      does with every accepted fd (and the autodetecting
                      socket.socket(fileno=fd) for comparison)
    http-parse        one typical browser GET head (about 400 bytes, 9
                      fields) through _core.parse_request_head, and through
                      httptools (llhttp) with the callbacks that collect the
                      same things; both build Python objects per field, so
                      this compares the whole cost a Python caller pays
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from fastaccept import Ring

PAIRS = 1000
PARK_TIMEOUT_S = 5.0
WAKEUP_ROUNDS = 2000


def test_ring_push_pop(benchmark: Any) -> None:
    ring = Ring(1024)

    def pairs() -> None:
        push, pop = ring.push, ring.pop
        for _ in range(PAIRS):
            push(7)         # the ring does not own the fd: any number will do
            pop(0)

    benchmark.group = "ring"
    benchmark(pairs)
    assert len(ring) == 0
    benchmark.extra_info["pairs_per_call"] = PAIRS
    benchmark.extra_info["pairs_per_s"] = PAIRS / benchmark.stats.stats.median
    benchmark.extra_info["ns_per_pair"] = benchmark.stats.stats.median / PAIRS * 1e9


def test_pop_wakeup_round_trip(benchmark: Any) -> None:
    ping, pong = Ring(64), Ring(64)

    def echo() -> None:
        while True:
            item = ping.pop(PARK_TIMEOUT_S)
            if item is None:        # closed and drained (or the bench stalled)
                return
            pong.push(item[0])

    consumer = threading.Thread(target=echo, name="echo", daemon=True)
    consumer.start()

    def until_parked() -> None:
        # Untimed: measure only pushes that must wake a sleeping pop().
        deadline = time.monotonic() + PARK_TIMEOUT_S
        while ping.parked == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the consumer never parked in pop()")
            time.sleep(0.0001)      # a poll interval; the loop re-checks the invariant

    def round_trip() -> None:
        ping.push(1)
        if pong.pop(PARK_TIMEOUT_S) is None:
            raise TimeoutError("no reply from the consumer")

    benchmark.group = "ring"
    try:
        benchmark.pedantic(round_trip, setup=until_parked, rounds=WAKEUP_ROUNDS, iterations=1)
    finally:
        ping.close()
        consumer.join(PARK_TIMEOUT_S)
    assert not consumer.is_alive()
    benchmark.extra_info["wakeup_us_estimate"] = benchmark.stats.stats.median / 2 * 1e6
    benchmark.extra_info["note"] = "one round = two wake-ups (push -> parked pop -> reply)"


@pytest.mark.parametrize("how", ["explicit", "fileno-only"])
def test_wrap_fd_as_socket(benchmark: Any, how: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        fd = s.fileno()
        if how == "explicit":
            def wrap() -> None:
                socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd).detach()
        else:
            def wrap() -> None:
                socket.socket(fileno=fd).detach()
        benchmark.group = "wrap fd"
        benchmark(wrap)
        benchmark.extra_info["ns_per_wrap"] = benchmark.stats.stats.median * 1e9


#: A typical browser GET head: 9 fields, about 400 bytes.
HTTP_HEAD = (b"GET /articles/2024/fast-accept-loops?page=2&sort=new HTTP/1.1\r\n"
             b"Host: www.example.com\r\n"
             b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 "
             b"Firefox/120.0\r\n"
             b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
             b"Accept-Language: en-US,en;q=0.5\r\n"
             b"Accept-Encoding: gzip, deflate, br\r\n"
             b"Connection: keep-alive\r\n"
             b"Cookie: session=8f3a2b1c; theme=dark\r\n"
             b"Upgrade-Insecure-Requests: 1\r\n"
             b"Sec-Fetch-Mode: navigate\r\n\r\n")
HEADS_PER_CALL = 100


def test_http_parse_fastaccept(benchmark: Any) -> None:
    from fastaccept._core import parse_request_head

    def parse() -> None:
        for _ in range(HEADS_PER_CALL):
            parse_request_head(HTTP_HEAD)

    benchmark.group = "http-parse"
    benchmark(parse)
    rc, head = parse_request_head(HTTP_HEAD)
    assert rc == len(HTTP_HEAD) and len(head["headers"]) == 9
    benchmark.extra_info["head_bytes"] = len(HTTP_HEAD)
    benchmark.extra_info["ns_per_head"] = benchmark.stats.stats.median / HEADS_PER_CALL * 1e9


def test_http_parse_httptools(benchmark: Any) -> None:
    httptools = pytest.importorskip("httptools")

    class Collect:
        """What parse_request_head returns: the target, the fields, the end."""

        def __init__(self) -> None:
            self.url = b""
            self.headers: list = []
            self.done = 0

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            self.done += 1

    proto = Collect()
    # one parser for the whole run, as on a keep-alive connection: each feed
    # is one complete request
    parser = httptools.HttpRequestParser(proto)

    def parse() -> None:
        for _ in range(HEADS_PER_CALL):
            proto.headers = []
            parser.feed_data(HTTP_HEAD)
            parser.get_method()

    benchmark.group = "http-parse"
    benchmark(parse)
    assert proto.done > 0 and len(proto.headers) == 9
    benchmark.extra_info["head_bytes"] = len(HTTP_HEAD)
    benchmark.extra_info["ns_per_head"] = benchmark.stats.stats.median / HEADS_PER_CALL * 1e9

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

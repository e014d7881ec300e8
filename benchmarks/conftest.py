"""Fixtures of the pytest-benchmark suite (not part of the default test run).

Run it with::

    python -m pytest benchmarks/ --benchmark-only --benchmark-group-by=group

Options: ``--bench-quick`` (fewer connections per round), ``--bench-rounds N``
(load-generator runs per scenario benchmark, default 3), ``--bench-netns``
(move this pytest process into a private network namespace first, when
allowed, so ListenOverflows counts the benchmark's connections alone).

Like ``tests/``, the suite measures the *installed* package: the source root
is taken off ``sys.path`` before anything imports ``fastaccept``.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Iterator, List

import pytest

_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _SOURCE_ROOT]

from fastaccept import bench  # noqa: E402  (after the sys.path fix above)

_NETNS: Dict[str, str] = {"counter": "host-wide"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastaccept benchmarks")
    group.addoption("--bench-quick", action="store_true",
                    help="scenario benchmarks: the smaller connection counts of bench --quick")
    group.addoption("--bench-rounds", type=int, default=3,
                    help="scenario benchmarks: load-generator runs per benchmark (default 3)")
    group.addoption("--bench-netns", action="store_true",
                    help="enter a private network namespace first (root), so ListenOverflows "
                         "counts this suite's connections alone")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--bench-netns", default=False):
        why = bench.enter_private_netns()
        _NETNS["counter"] = "private namespace" if why is None else f"host-wide ({why})"


@pytest.fixture(scope="session")
def bench_quick(request: pytest.FixtureRequest) -> bool:
    """True with --bench-quick."""
    return bool(request.config.getoption("--bench-quick"))


@pytest.fixture(scope="session")
def bench_rounds(request: pytest.FixtureRequest) -> int:
    """Load-generator runs per scenario benchmark."""
    rounds = int(request.config.getoption("--bench-rounds"))
    if rounds < 1:
        raise pytest.UsageError(f"--bench-rounds must be >= 1, got {rounds}")
    return rounds


@pytest.fixture(scope="session")
def overflow_counter() -> str:
    """Which ListenOverflows counter the suite reads: a private namespace's or the host's."""
    return _NETNS["counter"]


@pytest.fixture(scope="session")
def cpu_iters_per_ms() -> int:
    """pure-Python handler steps per ms of CPU, calibrated once for every server."""
    from fastaccept.bench.refservers import calibrate_cpu_iters

    return calibrate_cpu_iters(1.0)


@pytest.fixture
def ref_server() -> Iterator[Callable[..., bench.ServerProcess]]:
    """Return start(scenario, spec, cpu_iters) -> a started reference server process.

    Every server started is stopped in teardown, even when the test failed.
    """
    started: List[bench.ServerProcess] = []

    def start(scenario: bench.Scenario, spec: bench.ServerSpec, cpu_iters: int = 0) -> Any:
        # the scenario's protocol, and for idle ones the descriptors they need
        server = bench.make_server(scenario, spec, cpu_iters=cpu_iters)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()

"""Shared fixtures: leak checks, servers that always shut down, a tiny HTTP client.

The suite tests the *installed* package. ``python -m pytest`` puts the current
directory on ``sys.path``; run from the source tree, that would shadow the
installed ``fastaccept`` with the source directory, whose C extension is not
built in place. So the source root is taken off ``sys.path`` here, before any
test module imports ``fastaccept``.
"""
from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _SOURCE_ROOT]

# Test modules share plain helpers through fa_testutil, next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastaccept  # noqa: E402  (after the sys.path fix above)
from fa_testutil import (REQUEST, SupervisorChild, fd_table, read_request,  # noqa: E402
                         read_to_eof)

#: How long the leak check waits for exiting threads and closing fds.
LEAK_WAIT_S = 5.0


def _fd_changes(before: Dict[int, str], after: Dict[int, str]) -> List[str]:
    changes = []
    for fd, target in sorted(after.items()):
        if before.get(fd) != target:
            changes.append(f"fd {fd} -> {target} left open")
    for fd, target in sorted(before.items()):
        if fd not in after:
            # A descriptor the test did not open was closed: a double close.
            changes.append(f"fd {fd} -> {target} closed by the test")
    return changes


def _new_threads(before: set) -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves a descriptor open (or closes one it did not
    open), or leaves a thread running.

    Threads that are exiting and objects waiting for the collector get up to
    LEAK_WAIT_S to go away; the check polls rather than sleeping once.
    """
    fds_before = fd_table()
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + LEAK_WAIT_S
    while True:
        fd_changes = _fd_changes(fds_before, fd_table())
        threads = _new_threads(threads_before)
        if not fd_changes and not threads:
            return
        if time.monotonic() >= deadline:
            break
        gc.collect()
        time.sleep(0.01)    # a poll interval; the loop re-checks the invariant
    lines = fd_changes + [f"thread {t.name!r} (daemon={t.daemon}) still running"
                          for t in threads]
    pytest.fail("resources leaked by the test:\n  " + "\n  ".join(lines), pytrace=False)


@pytest.fixture
def server_factory(no_leaks):
    """Return make(handler, start=True, **kwargs) -> a fastaccept.Server on port 0.

    Every server made is shut down in teardown, even when the test failed,
    and the leak check (no_leaks) runs after that.
    """
    servers: List[fastaccept.Server] = []

    def make(handler: Callable[[socket.socket, Any], Any], *, start: bool = True,
             **kwargs: Any) -> fastaccept.Server:
        if "sock" not in kwargs:
            kwargs.setdefault("host", "127.0.0.1")
            kwargs.setdefault("port", 0)
        server = fastaccept.Server(handler, **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    stuck = [repr(s) for s in servers if not s.shutdown(timeout=10.0)]
    servers.clear()
    if stuck:
        pytest.fail(f"servers did not shut down within 10 s: {stuck}", pytrace=False)


@pytest.fixture
def wsgi_factory(no_leaks):
    """Return make(app, start=True, validate=True, **kwargs) -> a
    fastaccept.WSGIServer on port 0, the app wrapped in wsgiref.validate
    unless validate=False. Shut down in teardown, then the leak check."""
    from wsgiref.validate import validator

    servers: List[Any] = []

    def make(app: Any, *, start: bool = True, validate: bool = True, **kwargs: Any) -> Any:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        server = fastaccept.WSGIServer(validator(app) if validate else app, **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    stuck = [repr(s) for s in servers if not s.shutdown(timeout=10.0)]
    servers.clear()
    if stuck:
        pytest.fail(f"servers did not shut down within 10 s: {stuck}", pytrace=False)


def http_get(address: Any, timeout: float = 10.0, request: bytes = REQUEST) -> bytes:
    """Send one HTTP/1.0 request to address and return everything up to EOF."""
    with socket.create_connection(tuple(address[:2]), timeout=timeout) as sock:
        sock.sendall(request)
        return read_to_eof(sock)


@pytest.fixture(name="http_get")
def http_get_fixture() -> Callable[..., bytes]:
    """The http_get(address, timeout) helper."""
    return http_get


@pytest.fixture(name="read_request")
def read_request_fixture() -> Callable[..., bytes]:
    """The read_request(conn) helper for handlers."""
    return read_request


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.002) -> Any:
    """Poll predicate until it returns a true value; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)    # a poll interval; the loop re-checks the predicate


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    """The wait_for(predicate, timeout, what) bounded poll helper."""
    return wait_for


def join_all(threads: List[threading.Thread], timeout: float) -> List[threading.Thread]:
    """Join threads by one shared deadline; return those still alive."""
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


@pytest.fixture(name="join_all")
def join_all_fixture() -> Callable[..., List[threading.Thread]]:
    """The join_all(threads, timeout) helper."""
    return join_all


@pytest.fixture
def supervised(tmp_path, no_leaks):
    """Return make(*args, env=None, pass_fds=()) -> a SupervisorChild running
    children/supervised.py with ``args``; every one is closed (its session
    killed if anything still runs) in teardown, then the leak check runs."""
    made: List[SupervisorChild] = []

    def make(*args: Any, **kwargs: Any) -> SupervisorChild:
        child = SupervisorChild(tmp_path, *args, **kwargs)
        made.append(child)
        return child

    yield make
    for child in made:
        child.close()

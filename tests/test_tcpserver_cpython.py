"""CPython's Lib/test/test_socketserver.py passes against fastaccept.TCPServer.

Every TCP test of that file runs with socketserver.TCPServer and
ThreadingTCPServer replaced by fastaccept.TCPServer (in a child process, so
the replacement never leaks into this one): SocketServerTest's TCP cases,
ErrorHandlerTest's sync and threading cases (handled for Exception, not
handled for SystemExit), SocketWriterTest (handle_request() in the main
thread, a signal during a large write) and MiscTestCase's verify_request /
shutdown_request and threads-reaped cases. The Unix-socket, UDP and forking
cases are not TCPServer's (socketserver builds their classes on its own
bases) and are left out.
"""
from __future__ import annotations

import json

import pytest

from fa_testutil import run_child

TCP_TESTS = [
    "SocketServerTest.test_TCPServer",
    "SocketServerTest.test_ThreadingTCPServer",
    "SocketServerTest.test_shutdown",
    "SocketServerTest.test_close_immediately",
    "SocketServerTest.test_tcpserver_bind_leak",
    "SocketServerTest.test_context_manager",
    "ErrorHandlerTest.test_sync_handled",
    "ErrorHandlerTest.test_sync_not_handled",
    "ErrorHandlerTest.test_threading_handled",
    "ErrorHandlerTest.test_threading_not_handled",
    "SocketWriterTest.test_basics",
    "SocketWriterTest.test_write",
    "MiscTestCase.test_shutdown_request_called_if_verify_request_false",
    "MiscTestCase.test_threads_reaped",
]


def test_cpython_socketserver_tcp_tests_pass(tmp_path):
    # cwd: a scratch directory (the tests write files there, and it keeps
    # the source tree off sys.path so the child imports the installed package)
    proc = run_child("cpython_socketserver.py", *TCP_TESTS, cwd=tmp_path, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no summary (status {proc.returncode}):\n{proc.stderr[-4000:]}"
    summary = json.loads(lines[-1])
    if "skip" in summary:
        pytest.skip(summary["skip"])
    assert summary["failed"] == [], proc.stderr[-8000:]
    assert summary["skipped"] == [], proc.stderr[-8000:]
    assert summary["run"] == len(TCP_TESTS), proc.stderr[-8000:]
    assert proc.returncode == 0, proc.stderr[-8000:]

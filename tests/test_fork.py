"""os.fork() and fastaccept: what fastaccept._fork does in the child.

A server started in the parent is made inert in the child right after the
fork (shutdown() returns at once, start() raises, its copies of the
listening socket and of other workers' connections are closed); one created
but not started can be started in the child; a handler that forks keeps its
own connection there. The parent is untouched. The README's "Guarantees"
row for os.fork() is pinned here; that the Acceptor itself refuses use in a
forked child is test_core.py's.
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from typing import Any

import pytest

import fastaccept
from fa_testutil import (REPLY_OK, Gate, close_all, connect, exit_child, fork, kill_child,
                         read_line, read_to_eof)


def _child_after_fork(server: fastaccept.Server, rfd: int, wfd: int, read_request: Any) -> int:
    """In the child: the inherited server is inert; a new one serves."""
    t0 = time.monotonic()
    shutdown_ok = server.shutdown(timeout=5.0)
    took = time.monotonic() - t0
    try:
        server.start()
        start_error = None
    except RuntimeError as e:
        start_error = str(e)

    def handler(conn, addr):
        if read_request(conn):
            conn.sendall(b"from the child")

    own = fastaccept.Server(handler, "127.0.0.1", 0, workers=1)
    own.start()
    report = {"shutdown": shutdown_ok, "took": took, "state": repr(server),
              "sock_fd": server.socket.fileno(), "start_error": start_error,
              "address": own.address}
    os.write(wfd, json.dumps(report).encode() + b"\n")
    read_line(rfd, 60.0)                 # "exit"
    return 0 if own.shutdown(timeout=10.0) else 4


def test_fork_after_start_child_copy_is_inert_and_parent_serves(server_factory, read_request,
                                                                wait_for, http_get):
    """os.fork() while connections sit in two handlers and in the ring. In
    the child, shutdown() returns at once and a new server works. In the
    parent, with the child still alive: those connections end for their
    clients when the parent closes them (the child closed its copies), new
    clients are served, and after shutdown the port refuses connections
    (the child closed its copy of the listening socket)."""
    gate = Gate()

    def handler(conn, addr):
        if read_request(conn).startswith(b"GET /hold"):
            gate.wait()
        conn.sendall(REPLY_OK)

    server = server_factory(handler, workers=2, ring_size=4)
    held = []
    pid = -1
    to_child = from_child = (-1, -1)
    try:
        for _ in range(3):
            held.append(connect(server.address, b"GET /hold HTTP/1.0\r\n\r\n"))
        wait_for(lambda: server.stats()["workers_busy"] == 2
                 and server.stats()["ring_depth"] == 1, 10.0, "2 busy workers and 1 queued")
        to_child, from_child = os.pipe(), os.pipe()
        pid = fork()
        if pid == 0:
            code = 2
            try:
                code = _child_after_fork(server, to_child[0], from_child[1], read_request)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        report = json.loads(read_line(from_child[0], 30.0))
        assert report["shutdown"] is True
        assert report["took"] < 2.0
        assert report["state"].startswith("<fastaccept.Server forked")
        assert report["sock_fd"] == -1
        assert "forked" in report["start_error"]

        gate.open.set()
        assert [read_to_eof(c) for c in held] == [REPLY_OK] * 3
        assert http_get(server.address, timeout=10.0) == REPLY_OK
        assert http_get(report["address"], timeout=10.0) == b"from the child"
        assert server.shutdown(timeout=10.0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=5.0).close()
        exit_child(pid, to_child[1])
        pid = -1
    finally:
        gate.open.set()
        close_all(held)
        kill_child(pid)
        for fd in (*to_child, *from_child):
            if fd >= 0:
                os.close(fd)
    st = server.stats()
    assert st["accepted"] == st["handled"] == 4


def test_fork_while_a_wsgi_worker_holds_a_request_closes_its_copy_in_the_child(
        wsgi_factory, wait_for):
    """The HTTP server's workers hold a bare descriptor, not a socket: a
    child forked while one is in the application closes its copy too, so
    the response's close in the parent ends the connection for the client
    while the child lives."""
    gate = Gate()

    def app(environ, start_response):
        gate.wait()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = wsgi_factory(app, workers=1)
    held = connect(server.address, b"GET / HTTP/1.0\r\n\r\n")
    pid = -1
    to_child = os.pipe()
    try:
        wait_for(lambda: server.stats()["workers_busy"] == 1, 10.0, "the worker in the app")
        pid = fork()
        if pid == 0:
            code = 3
            try:
                # alive, holding whatever copies it kept, until the parent is done
                if server.shutdown(timeout=5.0) and read_line(to_child[0], 30.0).strip() == b"exit":
                    code = 0
            finally:
                os._exit(code)
        gate.open.set()
        reply = read_to_eof(held)
        assert reply.startswith(b"HTTP/1.0 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")
        wait_for(lambda: server.stats()["workers_busy"] == 0, 10.0, "the worker to go idle")
        exit_child(pid, to_child[1])
        pid = -1
    finally:
        gate.open.set()
        held.close()
        kill_child(pid)
        for fd in to_child:
            os.close(fd)


def test_server_created_before_fork_starts_in_the_child(no_leaks, read_request, http_get):
    """Bind in the parent, start in the child (the pre-fork pattern): the
    child serves; the parent's unstarted copy just closes its socket."""
    def handler(conn, addr):
        if read_request(conn):
            conn.sendall(str(os.getpid()).encode())

    server = fastaccept.Server(handler, "127.0.0.1", 0, workers=2)
    to_child, from_child = os.pipe(), os.pipe()
    pid = -1
    try:
        pid = fork()
        if pid == 0:
            code = 2
            try:
                server.start()
                os.write(from_child[1], b"started\n")
                read_line(to_child[0], 60.0)
                code = 0 if server.shutdown(timeout=10.0) else 4
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        assert read_line(from_child[0], 30.0) == b"started\n"
        assert server.shutdown(timeout=10.0)        # "new" here: closes the parent's copy
        assert http_get(server.address, timeout=10.0) == str(pid).encode()
        exit_child(pid, to_child[1])
        pid = -1
    finally:
        kill_child(pid)
        server.shutdown(timeout=10.0)
        for fd in (*to_child, *from_child):
            os.close(fd)


def test_handler_that_forks_keeps_its_connection_in_the_child(server_factory, read_request,
                                                              http_get):
    """Fork-per-connection from a handler: the child keeps the forking
    worker's own connection (only other workers' copies are closed) and
    answers on it."""
    statuses = []

    def handler(conn, addr):
        if not read_request(conn):
            return
        pid = fork()
        if pid == 0:
            code = 1
            try:
                conn.sendall(b"child " + str(os.getpid()).encode())
                code = 0
            finally:
                os._exit(code)
        statuses.append(os.waitpid(pid, 0)[1])      # the child exits at once

    server = server_factory(handler, workers=2)
    reply = http_get(server.address, timeout=10.0)
    assert reply.startswith(b"child ") and int(reply[6:]) != os.getpid()
    assert server.shutdown(timeout=10.0)
    assert len(statuses) == 1
    assert os.WIFEXITED(statuses[0]) and os.WEXITSTATUS(statuses[0]) == 0

"""fastaccept.supervise.child: serving in this process, and what a factory must return."""
from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

import fastaccept
from fa_testutil import read_request
from fastaccept.supervise import child


def test_serve_stops_on_sigterm_and_puts_the_signals_back(no_leaks, http_get):
    previous = signal.getsignal(signal.SIGTERM)
    server = fastaccept.Server(lambda conn, addr: (read_request(conn), conn.sendall(b"ok")))
    seen = []

    def ready(s):
        seen.append(http_get(s.address))
        # from another thread, as a signal from outside would come
        threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM)).start()

    assert child.serve(server, graceful_timeout=5.0, ready=ready) is True
    assert seen == [b"ok"]
    assert signal.getsignal(signal.SIGTERM) is previous
    assert signal.set_wakeup_fd(-1) == -1           # none was set before, none is now
    assert server.socket.fileno() == -1


def test_serve_ends_when_a_handler_stops_the_server(no_leaks):
    server = fastaccept.Server(lambda conn, addr: server.shutdown())
    clients = []

    def ready(s):
        clients.append(socket.create_connection(s.address, timeout=10))
        clients[0].sendall(b"stop\n")       # the handler runs once bytes come
    try:
        assert child.serve(server, graceful_timeout=5.0, ready=ready) is True
    finally:
        for c in clients:
            c.close()


def test_serve_only_in_the_main_thread(no_leaks):
    server = fastaccept.Server(lambda conn, addr: None)
    errors = []

    def run():
        try:
            child.serve(server, graceful_timeout=1.0)
        except RuntimeError as e:
            errors.append(str(e))
    t = threading.Thread(target=run)
    t.start()
    t.join()
    server.shutdown()
    assert errors and "main thread" in errors[0]


def test_build_checks_what_the_factory_returns(no_leaks):
    lsock = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(TypeError, match="must return a fastaccept Server"):
            child.build(lambda sock: object(), lsock, shared=True)
        with pytest.raises(ValueError, match="on the socket it is given"):
            child.build(lambda sock: fastaccept.Server(lambda c, a: None, sock=other),
                        lsock, shared=True)
        server = child.build(lambda sock: fastaccept.Server(lambda c, a: None, sock=sock),
                             lsock, shared=True)
        assert server._shared_listener is True
        server.shutdown()
    finally:
        lsock.close()
        other.close()

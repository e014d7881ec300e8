"""fastaccept.TCPServer against socketserver.ThreadingTCPServer as the oracle.

The parity tests run once per server class: what the stdlib does is what
fastaccept.TCPServer must do.
"""
from __future__ import annotations

import errno
import socket
import socketserver
import threading
import time

import pytest

import fastaccept
from fa_testutil import open_fds, read_to_eof

HANDLER_TIMEOUT = 10.0


@pytest.fixture(params=[socketserver.ThreadingTCPServer, fastaccept.TCPServer],
                ids=["stdlib", "fastaccept"])
def server_cls(request):
    """The server class under test (the stdlib's is the oracle)."""
    return request.param


def _stop(server, thread: threading.Thread) -> None:
    # shutdown() of the stdlib blocks until serve_forever() notices, and
    # forever if serve_forever() is not running: bound it with a helper thread.
    stopper = threading.Thread(target=server.shutdown, daemon=True)
    stopper.start()
    stopper.join(10.0)
    server.server_close()
    thread.join(10.0)
    assert not stopper.is_alive(), "shutdown() did not return within 10 s"
    assert not thread.is_alive(), "serve_forever() did not return within 10 s"


@pytest.fixture
def serve(server_cls, no_leaks):
    """Return start(handler_class, cls=server_cls) -> a server in serve_forever.

    Every server started is shut down and closed in teardown."""
    started = []

    def start(handler_class, cls=None):
        server = (cls or server_cls)(("127.0.0.1", 0), handler_class)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="test-serve-forever")
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        _stop(server, thread)


def _exchange(address, data: bytes, timeout: float = 10.0):
    """Connect, send data, read to EOF; return (reply, client's local address)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        local = sock.getsockname()
        sock.sendall(data)
        return read_to_eof(sock), local


class EchoHandler(socketserver.StreamRequestHandler):
    """Echo one line; record what the server gave the handler."""

    timeout = HANDLER_TIMEOUT
    seen: list = []

    def handle(self) -> None:
        line = self.rfile.readline(65536)
        type(self).seen.append((self.request, self.client_address, self.server,
                                self.request.fileno() >= 0))
        self.wfile.write(line)


@pytest.fixture
def echo_handler():
    class Handler(EchoHandler):
        seen = []
    return Handler


def test_echo_a_line(serve, echo_handler):
    server = serve(echo_handler)
    address = server.server_address
    assert address[1] != 0
    expected = []
    for i in range(10):
        line = f"hello {i}\n".encode()
        reply, local = _exchange(address, line)
        assert reply == line
        expected.append(local)
    assert len(echo_handler.seen) == 10
    for (request, client_address, srv, was_open), local in zip(echo_handler.seen, expected):
        assert isinstance(request, socket.socket)
        assert was_open
        assert client_address == local
        assert srv is server


def test_concurrent_clients(serve, echo_handler, join_all):
    server = serve(echo_handler)
    results = []

    def client(i: int) -> None:
        try:
            for j in range(10):
                line = f"client {i} line {j}\n".encode()
                reply, _ = _exchange(server.server_address, line)
                results.append(reply == line)
        except Exception as e:
            results.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    assert not join_all(threads, 30.0)
    assert results == [True] * 160


def test_serve_forever_shutdown_and_server_close(server_cls, echo_handler, no_leaks):
    server = server_cls(("127.0.0.1", 0), echo_handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        address = server.server_address
        assert _exchange(address, b"one\n")[0] == b"one\n"
    finally:
        _stop(server, thread)
    assert server.socket.fileno() == -1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10.0).close()


def test_bind_failure_closes_the_socket(server_cls, echo_handler, no_leaks):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        fds = open_fds()
        with pytest.raises(OSError) as exc:
            server_cls(taken.getsockname(), echo_handler)
        assert exc.value.errno == errno.EADDRINUSE
        assert open_fds() == fds


def test_verify_request_false_closes_the_connection(serve, server_cls, echo_handler):
    verified = []

    class Refusing(server_cls):
        def verify_request(self, request, client_address):
            verified.append(client_address)
            return False

    server = serve(echo_handler, cls=Refusing)
    with socket.create_connection(server.server_address, timeout=10.0) as sock:
        local = sock.getsockname()
        assert sock.recv(4096) == b""       # closed without a reply
    assert verified == [local]
    assert echo_handler.seen == []          # the handler never ran


def test_handler_error_does_not_stop_service(serve, capsys, caplog):
    class Failing(socketserver.StreamRequestHandler):
        timeout = HANDLER_TIMEOUT

        def handle(self) -> None:
            line = self.rfile.readline(65536)
            if line == b"boom\n":
                raise RuntimeError("handler failed on purpose")
            self.wfile.write(line)

    server = serve(Failing)
    assert _exchange(server.server_address, b"boom\n")[0] == b""
    assert _exchange(server.server_address, b"fine\n")[0] == b"fine\n"
    # The stdlib prints the traceback; fastaccept logs it on "fastaccept".
    reported = capsys.readouterr().err + caplog.text
    assert "handler failed on purpose" in reported


def test_bind_and_activate_false(server_cls, echo_handler, no_leaks):
    server = server_cls(("127.0.0.1", 0), echo_handler, bind_and_activate=False)
    try:
        server.server_bind()
        server.server_activate()
        assert server.server_address[1] != 0
        assert server.fileno() == server.socket.fileno()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            assert _exchange(server.server_address, b"x\n")[0] == b"x\n"
        finally:
            _stop(server, thread)
    finally:
        server.server_close()


def test_context_manager_closes(server_cls, echo_handler, no_leaks):
    with server_cls(("127.0.0.1", 0), echo_handler) as server:
        assert server.socket.fileno() >= 0
    assert server.socket.fileno() == -1


# -- fastaccept only -------------------------------------------------------------

def test_shutdown_before_serve_forever_does_not_hang(echo_handler, no_leaks):
    # The stdlib would wait forever here; fastaccept must not.
    server = fastaccept.TCPServer(("127.0.0.1", 0), echo_handler)
    try:
        t0 = time.monotonic()
        server.shutdown()
        server.serve_forever()          # returns at once: already shut down
        assert time.monotonic() - t0 < 5.0
    finally:
        server.server_close()


def test_fastaccept_stats_and_options(echo_handler, no_leaks):
    server = fastaccept.TCPServer(("127.0.0.1", 0), echo_handler, workers=2, ring_size=16)
    before = server.stats()         # every key, as Server's, before serving
    assert before["accepted"] == before["handled"] == 0 and before["ring_capacity"] == 16
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        for i in range(5):
            assert _exchange(server.server_address, b"%d\n" % i)[0] == b"%d\n" % i
    finally:
        _stop(server, thread)
    st = server.stats()
    assert st["accepted"] == st["handled"] == 5
    assert st["workers"] == 2
    assert st["ring_capacity"] == 16


@pytest.mark.parametrize("kwargs, exc", [
    (dict(workers=0), ValueError),
    (dict(ring_size=6), ValueError),
    (dict(socket_timeout=-1), ValueError),
])
def test_fastaccept_bad_options_open_nothing(echo_handler, no_leaks, kwargs, exc):
    fds = open_fds()
    with pytest.raises(exc):
        fastaccept.TCPServer(("127.0.0.1", 0), echo_handler, **kwargs)
    assert open_fds() == fds

"""The accept loop behind a load balancer: ``proxy_protocol=True`` on Server,
WSGIServer and TCPServer (src/fa_accept.c reads each connection's PROXY
header in C, before anything else).

Checked on loopback, with headers built by hand (fa_proxy_build): v1 and v2,
IPv4, IPv6, UNIX, LOCAL and UNKNOWN, in one segment with the client's bytes
behind them, a byte at a time, and alone; the client's bytes reach the
handler or the WSGI application intact, and ``addr``, ``REMOTE_ADDR`` and
``REMOTE_PORT`` are the header's source (the connection's own peer for
LOCAL and UNKNOWN). While a header is incomplete none of its bytes waits
unread in the socket (a one-shot, level-triggered arm would fire again at
once: the loop would spin); ``unread_bytes`` reads that from the kernel. A
bad header, none in time, a peer that leaves half way and a stop half way
end the connection with a FIN and no answer, each counted once; a kept
connection sends no second header. The end-to-end test with a real
balancer is test_haproxy.py.
"""
from __future__ import annotations

import http.client
import socket
import socketserver
import threading
import time
from typing import Any, List, Tuple

import pytest

import fastaccept
from fa_proxy_build import LOCAL, PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID, PROXY, tlv, v1, v2
from fa_testutil import Gate, close_all, connect, read_to_eof, reset, unread_bytes

#: What a client sends after its header.
PAYLOAD = b"the client's own bytes\r\n" * 3

#: name: (header, the address it names: None where the connection's own
#: peer stands)
HEADERS = {
    "v1-tcp4": (v1("TCP4", "203.0.113.7", "198.51.100.1", 40001, 443),
                ("203.0.113.7", 40001)),
    "v1-tcp6": (v1("TCP6", "2001:db8::7", "2001:db8::1", 40002, 443),
                ("2001:db8::7", 40002, 0, 0)),
    "v1-tcp6-mapped": (v1("TCP6", "::ffff:203.0.113.9", "::ffff:198.51.100.1", 40003, 443),
                       ("::ffff:203.0.113.9", 40003, 0, 0)),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", None),
    "v1-unknown-with-addresses": (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
    "v2-tcp4": (v2(PROXY, 0x11, src=("203.0.113.8", 40004), dst=("198.51.100.1", 443)),
                ("203.0.113.8", 40004)),
    "v2-tcp6": (v2(PROXY, 0x21, src=("2001:db8::8", 40005), dst=("2001:db8::1", 443)),
                ("2001:db8::8", 40005, 0, 0)),
    "v2-tcp4-tlvs-crc32c": (v2(PROXY, 0x11, tlvs=tlv(PP2_TYPE_UNIQUE_ID, b"request-1"),
                               src=("203.0.113.10", 40006), dst=("198.51.100.1", 443),
                               crc=True),
                            ("203.0.113.10", 40006)),
    "v2-unix": (v2(PROXY, 0x31, src=b"/run/client.sock", dst=b"/run/lb.sock"),
                "/run/client.sock"),
    "v2-local": (v2(LOCAL, 0x00), None),
    "v2-local-tcp4": (v2(LOCAL, 0x11), None),
}

_CRC = v2(PROXY, 0x11, crc=True)
#: error name (the keys of stats()["proxy_rejected"]): what a client sends
BAD = {
    "ENOTPROXY": b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    "EMALFORMED": b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\n",    # a bare LF
    "EVERSION": v2(version=1),
    "ECOMMAND": v2(command=0x2),
    "EFAMILY": v1("UDP4"),
    "ETOOLONG": v2(tlvs=tlv(PP2_TYPE_NOOP, b"x" * 5000)),
    "ECHECKSUM": _CRC[:-1] + bytes([_CRC[-1] ^ 1]),
}


def expected_addr(name: str, client: socket.socket) -> Any:
    want = HEADERS[name][1]
    return client.getsockname() if want is None else want


def no_delay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ends(st: dict) -> int:
    """Every way a connection the loop accepted can end, summed."""
    return (st["handled"] - st["kept"] + st["shed"] + st["idle_closed"] + st["peer_closed"]
            + st["stop_closed"] + sum(st["http_rejected"].values())
            + sum(st["proxy_rejected"].values()) + st["proxy_timeouts"])


class Recorder:
    """A handler that reads `size` bytes (fewer at EOF), keeps (addr, bytes)
    and answers "ok"."""

    def __init__(self, size: int = len(PAYLOAD)) -> None:
        self.size = size
        self.seen: List[Tuple[Any, bytes]] = []

    def __call__(self, conn: socket.socket, addr: Any) -> None:
        data = b""
        while len(data) < self.size:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        self.seen.append((addr, data))
        conn.sendall(b"ok")


def whoami(environ, start_response):
    """REMOTE_ADDR, REMOTE_PORT, the path and the body, one line."""
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    out = (f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']} {environ['PATH_INFO']} "
           .encode() + body)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(out)))])
    return [out]


def remote(name: str, client: socket.socket) -> str:
    """What whoami says REMOTE_ADDR and REMOTE_PORT are for header `name`."""
    want = expected_addr(name, client)
    if isinstance(want, tuple):
        return f"{want[0]} {want[1]}"
    return " "                          # an AF_UNIX client has no host or port


# -- the header, then the client's bytes ------------------------------------------

@pytest.mark.parametrize("dispatch", ["readable", "accept"])
@pytest.mark.parametrize("name", list(HEADERS))
def test_header_and_client_bytes_in_one_segment(server_factory, name, dispatch):
    rec = Recorder()
    server = server_factory(rec, proxy_protocol=True, dispatch=dispatch)
    with connect(server.address) as client:
        client.sendall(HEADERS[name][0] + PAYLOAD)
        assert read_to_eof(client) == b"ok"
        want = expected_addr(name, client)
    assert rec.seen == [(want, PAYLOAD)]
    st = server.stats()
    assert st["proxy_rejected"] == {} and st["proxy_timeouts"] == 0


@pytest.mark.parametrize("name", ["v1-tcp4", "v1-tcp6", "v2-tcp6", "v2-tcp4-tlvs-crc32c",
                                  "v2-local"])
def test_header_a_byte_at_a_time(server_factory, wait_for, name):
    header = HEADERS[name][0]
    rec = Recorder()
    # Each byte waits for a scan of /proc/net/tcp, which takes long on a
    # machine with many sockets open: the header's own deadline is not
    # what this test is about.
    server = server_factory(rec, proxy_protocol=True, proxy_timeout=120.0)
    port = server.address[1]
    with no_delay(connect(server.address)) as client:
        me = client.getsockname()[1]
        for i in range(len(header)):
            client.send(header[i:i + 1])
            # each byte is taken as it comes: none waits unread in the socket
            wait_for(lambda: unread_bytes(port, me) == 0, 10.0, f"the loop to take byte {i}")
        wait_for(lambda: server.stats()["conns_waiting"] == 1, 10.0, "it waiting idle")
        assert (server.stats()["handled"], server.stats()["proxy_timeouts"]) == (0, 0)
        for i in range(len(PAYLOAD)):
            client.send(PAYLOAD[i:i + 1])
        assert read_to_eof(client) == b"ok"
        want = expected_addr(name, client)
    # the handler may have started on the first bytes: they arrive in order
    (addr, data), = rec.seen
    assert addr == want and data == PAYLOAD


def test_header_alone_then_the_client_speaks(server_factory, wait_for):
    """After a whole header the connection waits idle in C for its client's
    first bytes (dispatch "readable"), holding no worker."""
    rec = Recorder()
    server = server_factory(rec, proxy_protocol=True)
    port = server.address[1]
    with connect(server.address, HEADERS["v2-tcp4"][0]) as client:
        me = client.getsockname()[1]
        wait_for(lambda: unread_bytes(port, me) == 0, 10.0, "the loop to take the header")
        wait_for(lambda: server.stats()["conns_waiting"] == 1, 10.0, "it waiting idle")
        st = server.stats()
        assert (st["workers_busy"], st["handled"]) == (0, 0)
        client.sendall(PAYLOAD)
        assert read_to_eof(client) == b"ok"
    assert rec.seen == [(HEADERS["v2-tcp4"][1], PAYLOAD)]
    assert server.stats()["dispatched"] == 1


def test_bytes_that_look_like_a_header_after_one_are_the_clients(server_factory):
    """Only one header is read: a second one is the client's payload."""
    second = HEADERS["v2-tcp6"][0] + HEADERS["v1-tcp4"][0]
    rec = Recorder(len(second))
    server = server_factory(rec, proxy_protocol=True)
    with connect(server.address, HEADERS["v1-tcp6"][0] + second) as client:
        assert read_to_eof(client) == b"ok"
    assert rec.seen == [(HEADERS["v1-tcp6"][1], second)]


def test_a_kept_connection_sends_no_second_header(server_factory):
    def echo(conn: socket.socket, addr: Any) -> Any:
        line = conn.recv(4096)
        if not line:
            return None
        conn.sendall(repr(addr).encode() + b" " + line)
        return fastaccept.KEEP

    server = server_factory(echo, proxy_protocol=True)
    header, want = HEADERS["v1-tcp4"]
    with connect(server.address, header + b"one\n") as client:
        assert client.recv(4096) == repr(want).encode() + b" one\n"
        client.sendall(b"two\n")
        assert client.recv(4096) == repr(want).encode() + b" two\n"
        # on a kept connection, a PROXY line is the client's own bytes
        client.sendall(header)
        assert client.recv(4096) == repr(want).encode() + b" " + header
    st = server.stats()
    assert st["kept"] >= 2 and st["proxy_rejected"] == {}


def test_headers_complete_while_the_ring_is_full(server_factory, wait_for):
    """Connections whose header came while no worker was free wait ready in
    C, with the header's address, for ring space."""
    gate = Gate()
    seen = []

    def handler(conn: socket.socket, addr: Any) -> None:
        data = conn.recv(100)
        seen.append(addr)
        gate.wait()
        conn.sendall(data)

    server = server_factory(handler, workers=1, ring_size=2, proxy_protocol=True)
    n = 6
    want = [(f"203.0.113.{i + 1}", 41000 + i) for i in range(n)]
    clients = []
    try:
        for i, (host, port) in enumerate(want):
            clients.append(connect(server.address,
                                   v1("TCP4", host, "198.51.100.1", port, 443) + b"x%d" % i))
        # one in the handler, two in the ring, the rest ready in C
        wait_for(lambda: server.stats()["conns_waiting"] == n - 3, 10.0, "ready connections")
        gate.open.set()
        for i, client in enumerate(clients):
            assert read_to_eof(client) == b"x%d" % i
    finally:
        gate.open.set()
        close_all(clients)
    # in the order their headers came, which need not be the order of the connects
    assert sorted(seen) == sorted(want)


# -- bad headers, none, and peers that leave ------------------------------------

@pytest.mark.parametrize("kind", ["server", "wsgi"])
@pytest.mark.parametrize("error", list(BAD))
def test_bad_header_is_closed_by_a_fin_unanswered(server_factory, wsgi_factory, wait_for,
                                                 error, kind):
    rec = Recorder()
    server = (server_factory(rec, proxy_protocol=True) if kind == "server"
              else wsgi_factory(whoami, proxy_protocol=True))
    with connect(server.address) as client:
        # bytes behind the bad ones too: read and dropped, so the close is no reset
        client.sendall(BAD[error] + PAYLOAD)
        assert read_to_eof(client) == b""       # a reset would raise here
    st = wait_for(lambda: (s := server.stats())["proxy_rejected"] and s, 10.0, "the count")
    assert st["proxy_rejected"] == {error: 1}
    assert (st["accepted"], st["handled"], st["peer_closed"]) == (1, 0, 0)
    assert st["http_rejected"] == {} and rec.seen == []
    wait_for(lambda: server.stats()["conns_open"] == 0, 10.0, "the close")


@pytest.mark.parametrize("sent", [b"", b"PROXY TCP4 203.0.113.7 ", v2()[:20]],
                         ids=["nothing", "v1-part", "v2-part"])
def test_no_whole_header_in_time_is_closed_at_the_deadline(server_factory, wait_for, sent):
    rec = Recorder()
    server = server_factory(rec, proxy_protocol=True, proxy_timeout=0.3, idle_timeout=0.1)
    t0 = time.monotonic()
    with connect(server.address, sent) as client:
        assert read_to_eof(client) == b""
        waited = time.monotonic() - t0
    # the header's deadline, not idle_timeout's; counted from the accept,
    # which comes after t0
    assert waited >= 0.3
    st = wait_for(lambda: (s := server.stats())["proxy_timeouts"] == 1 and s, 10.0, "the count")
    assert (st["idle_closed"], st["handled"], st["proxy_rejected"]) == (0, 0, {})
    assert rec.seen == []


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize("sent", [b"", b"PROXY TCP6 2001:db8::", v2()[:17]],
                         ids=["nothing", "v1-part", "v2-part"])
def test_peer_leaving_mid_header_is_peer_closed(server_factory, wait_for, sent, how):
    rec = Recorder()
    server = server_factory(rec, proxy_protocol=True, proxy_timeout=120.0)  # not a timeout test
    client = connect(server.address, sent)
    me = client.getsockname()[1]
    # in the middle: what it sent is taken, the rest of the header awaited
    wait_for(lambda: server.stats()["conns_waiting"] == 1
             and unread_bytes(server.address[1], me) == 0, 10.0, "it waiting mid-header")
    if how == "fin":
        client.close()
    else:
        reset(client)
    st = wait_for(lambda: (s := server.stats())["peer_closed"] == 1 and s, 10.0, "peer_closed")
    assert (st["handled"], st["proxy_rejected"], st["proxy_timeouts"]) == (0, {}, 0)
    wait_for(lambda: server.stats()["conns_open"] == 0, 10.0, "the close")


def test_a_direct_client_is_refused_but_every_connection_counted(server_factory, wait_for):
    """A mix of every ending: each accepted connection ends exactly once."""
    rec = Recorder()
    server = server_factory(rec, proxy_protocol=True, proxy_timeout=0.2)
    good = [connect(server.address, HEADERS[name][0] + PAYLOAD)
            for name in ("v1-tcp4", "v2-tcp6", "v2-local")]
    direct = connect(server.address, b"GET / HTTP/1.0\r\n\r\n")
    bad = connect(server.address, BAD["ECHECKSUM"])
    silent = connect(server.address)
    gone = connect(server.address, b"PROX")
    gone.close()
    try:
        for client in good:
            assert read_to_eof(client) == b"ok"
        for client in (direct, bad, silent):
            assert read_to_eof(client) == b""
    finally:
        close_all(good + [direct, bad, silent])
    st = wait_for(lambda: (s := server.stats())["conns_open"] == 0 and s["peer_closed"] and s,
                  10.0, "every connection to end")
    assert st["accepted"] == 7 and ends(st) == 7, st
    assert st["proxy_rejected"] == {"ENOTPROXY": 1, "ECHECKSUM": 1}
    assert (st["proxy_timeouts"], st["peer_closed"], st["handled"]) == (1, 1, 3)


def test_stop_closes_connections_mid_header_with_a_fin(server_factory, wait_for):
    """At a stop, connections still waiting for their header are closed with
    a FIN (stop_closed); one whose header and bytes are in is served."""
    rec = Recorder()
    server = server_factory(rec, proxy_protocol=True, proxy_timeout=60.0)
    waiting = [connect(server.address), connect(server.address, b"PROXY TCP4 203.0"),
               connect(server.address, v2()[:30])]
    try:
        wait_for(lambda: server.stats()["conns_waiting"] == 3, 10.0, "three waiting")
        assert server.shutdown(timeout=10.0)
        for client in waiting:
            assert read_to_eof(client) == b""
    finally:
        close_all(waiting)
    st = server.stats()
    assert (st["stop_closed"], st["conns_open"], st["handled"]) == (3, 0, 0)
    assert ends(st) == st["accepted"] == 3


def test_a_stop_serves_a_header_and_request_already_in(server_factory, wait_for):
    """stop_grace: a header and its client's bytes that come during the
    grace are served."""
    rec = Recorder()
    server = server_factory(rec, proxy_protocol=True, stop_grace=10.0)
    with connect(server.address) as client:
        wait_for(lambda: server.stats()["conns_waiting"] == 1, 10.0, "it waiting")
        stopper = threading.Thread(target=server.shutdown, args=(20.0,))
        stopper.start()
        try:
            client.sendall(HEADERS["v2-tcp4"][0] + PAYLOAD)
            assert read_to_eof(client) == b"ok"
        finally:
            stopper.join(30.0)
    assert not stopper.is_alive()
    assert rec.seen == [(HEADERS["v2-tcp4"][1], PAYLOAD)]


# -- HTTP ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(HEADERS))
def test_wsgi_remote_addr_is_the_header_source(wsgi_factory, name):
    server = wsgi_factory(whoami, proxy_protocol=True)
    request = (b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
               b"hello")
    with connect(server.address, HEADERS[name][0] + request) as client:
        reply = read_to_eof(client)
        want = remote(name, client)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(f"{want} /p hello".encode())


def test_wsgi_keep_alive_needs_no_second_header(wsgi_factory):
    server = wsgi_factory(whoami, proxy_protocol=True)
    conn = http.client.HTTPConnection(*server.address[:2], timeout=10)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.sendall(HEADERS["v1-tcp6"][0])
        for path in ("/1", "/2", "/3"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == f"2001:db8::7 40002 {path} ".encode()
    finally:
        conn.close()
    st = server.stats()
    assert st["requests"] == 3 and st["kept"] >= 2 and st["accepted"] == 1


def test_wsgi_pipelined_requests_behind_the_header(wsgi_factory):
    server = wsgi_factory(whoami, proxy_protocol=True)
    raw = (HEADERS["v2-tcp4"][0] + b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
           b"GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    with connect(server.address, raw) as client:
        reply = read_to_eof(client)
    assert reply.count(b"HTTP/1.1 200 ") == 2
    assert reply.index(b"203.0.113.8 40004 /a ") < reply.index(b"203.0.113.8 40004 /b ")


def test_wsgi_head_deadline_starts_after_the_header(wsgi_factory, wait_for):
    """A head that does not follow its header in time is a 408, from C."""
    server = wsgi_factory(whoami, proxy_protocol=True, timeout=0.3)
    with connect(server.address, HEADERS["v1-tcp4"][0] + b"GET / HT") as client:
        assert read_to_eof(client).startswith(b"HTTP/1.1 408 ")
    wait_for(lambda: server.stats()["http_rejected"] == {408: 1}, 10.0, "the 408")
    assert server.stats()["proxy_timeouts"] == 0


# -- TCPServer -------------------------------------------------------------------

class WhoStream(socketserver.StreamRequestHandler):
    rbufsize = 0

    def handle(self) -> None:
        line = self.rfile.readline()
        self.wfile.write(repr(self.client_address).encode() + b" " + line)


@pytest.mark.parametrize("dispatch", ["accept", "readable"])
def test_tcpserver_reads_the_header_first(no_leaks, dispatch):
    server = fastaccept.TCPServer(("127.0.0.1", 0), WhoStream, proxy_protocol=True,
                                  dispatch=dispatch)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        header, want = HEADERS["v2-tcp6"]
        with connect(server.server_address, header + b"hello\n") as client:
            assert read_to_eof(client) == repr(want).encode() + b" hello\n"
    finally:
        server.shutdown()
        thread.join(10.0)
    try:
        # it accepts in Python, where no header is read: refused, not wrong
        with pytest.raises(RuntimeError, match="PROXY"):
            server.handle_request()
    finally:
        server.server_close()
    assert not thread.is_alive()


# -- arguments ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, word", [
    (dict(proxy_protocol=1), TypeError, "proxy_protocol"),
    (dict(proxy_protocol="yes"), TypeError, "proxy_protocol"),
    (dict(proxy_timeout=0), ValueError, "proxy_timeout"),
    (dict(proxy_timeout=-1.0), ValueError, "proxy_timeout"),
    (dict(proxy_timeout=float("inf")), ValueError, "proxy_timeout"),
    (dict(proxy_timeout="3"), TypeError, "proxy_timeout"),
])
@pytest.mark.parametrize("cls", ["Server", "WSGIServer", "TCPServer"])
def test_bad_arguments_are_refused(no_leaks, cls, kwargs, error, word):
    def make() -> Any:
        if cls == "Server":
            return fastaccept.Server(Recorder(), **kwargs)
        if cls == "WSGIServer":
            return fastaccept.WSGIServer(whoami, **kwargs)
        return fastaccept.TCPServer(("127.0.0.1", 0), WhoStream, **kwargs)

    with pytest.raises(error, match=word):
        make()


def test_what_reaches_the_acceptor(server_factory):
    """The default deadline is 3 s (the spec's least), None is none, and off
    is off."""
    for kwargs, proxy, timeout in [(dict(proxy_protocol=True), True, 3.0),
                                   (dict(proxy_protocol=True, proxy_timeout=None), True, None),
                                   (dict(proxy_protocol=True, proxy_timeout=0.5), True, 0.5),
                                   ({}, False, None)]:
        acceptor = server_factory(Recorder(), **kwargs)._acceptor
        assert (acceptor.proxy, acceptor.proxy_timeout) == (proxy, timeout)

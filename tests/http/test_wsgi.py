"""fastaccept.WSGIServer: PEP 3333 over HTTP/1.1, end to end on loopback.

Every application here runs inside wsgiref.validate (the wsgi_factory
fixture), so a server that breaks PEP 3333 fails the request. The environ
is compared with wsgiref.simple_server's for the same requests (the oracle,
as socketserver is for TCPServer); real clients (http.client, urllib, curl
when installed) talk to it; keep-alive, pipelining, framing, limits and
errors are checked on the wire.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Dict, List

import pytest

import fastaccept
from fa_testutil import read_to_eof

HELLO = b"Hello, World!"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def read_all(inp) -> bytes:
    """The whole body, as wsgiref.validate allows (read always takes a size)."""
    parts = []
    while True:
        part = inp.read(65536)
        if not part:
            return b"".join(parts)
        parts.append(part)


def _connect(server) -> socket.socket:
    return socket.create_connection(server.address[:2], timeout=10.0)


def _read_response(sock: socket.socket, buf: bytearray) -> Dict[str, Any]:
    """One response from sock (buf holds bytes already read past the last):
    {"status", "headers" (lower-case names), "body"}; framed by
    Content-Length, chunked, or the close."""
    def fill() -> bool:
        data = sock.recv(65536)
        buf.extend(data)
        return bool(data)

    while b"\r\n\r\n" not in buf:
        if not fill():
            raise EOFError(f"closed before a whole head: {bytes(buf)!r}")
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    del buf[:len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if status in (204, 304) or 100 <= status < 200 or headers.get("_head"):
        pass
    elif "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n and fill():
            pass
        body = bytes(buf[:n])
        del buf[:n]
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            while b"\r\n" not in buf:
                fill()
            line, _, _ = bytes(buf).partition(b"\r\n")
            del buf[:len(line) + 2]
            size = int(line, 16)
            while len(buf) < size + 2:
                fill()
            body += bytes(buf[:size])
            del buf[:size + 2]
            if size == 0:
                break
    else:
        while fill():
            pass
        body, buf[:] = bytes(buf), b""
    return {"status": status, "headers": headers, "body": body}


def exchange(server, raw: bytes, responses: int = 1) -> List[Dict[str, Any]]:
    """Send raw bytes on a new connection; read `responses` responses."""
    with _connect(server) as sock:
        sock.sendall(raw)
        buf = bytearray()
        return [_read_response(sock, buf) for _ in range(responses)]


# -- serving, keep-alive, real clients ------------------------------------------

def test_http_client_keep_alive_and_stats(wsgi_factory, wait_for):
    server = wsgi_factory(hello, workers=2)
    conn = http.client.HTTPConnection(*server.address[:2], timeout=10)
    try:
        for _ in range(20):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == HELLO
            assert resp.getheader("Server") == "fastaccept" and resp.getheader("Date")
    finally:
        conn.close()
    st = wait_for(lambda: (s := server.stats())["conns_open"] == 0 and s, 10.0, "closed")
    assert st["accepted"] == 1                  # one connection, 20 requests
    assert st["requests"] == 20 and st["http_requests"] == 20
    assert st["responses"]["2xx"] == 20 and st["app_errors"] == 0
    assert st["kept"] == 20 and st["request_latency_p99_us"] > 0


def test_urllib_and_http10(wsgi_factory):
    server = wsgi_factory(hello)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}/x") as r:
        assert r.status == 200 and r.read() == HELLO
    # HTTP/1.0 without keep-alive: the server closes after the response
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = read_to_eof(sock)
    assert reply.startswith(b"HTTP/1.0 200 OK\r\n") and reply.endswith(HELLO)
    assert b"Connection: close\r\n" in reply


def test_http10_keep_alive_on_request(wsgi_factory):
    server = wsgi_factory(hello)
    req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    r1, r2 = exchange(server, req + req, 2)
    for r in (r1, r2):
        assert r["status"] == 200 and r["body"] == HELLO
        assert r["headers"]["connection"] == "keep-alive"


def test_pipelined_requests_are_answered_in_order(wsgi_factory):
    def echo_path(environ, start_response):
        body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = wsgi_factory(echo_path, workers=4)
    raw = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(30))
    got = exchange(server, raw, 30)
    assert [r["body"] for r in got] == [b"/%d" % i for i in range(30)]


def test_connection_close_is_honoured(wsgi_factory):
    server = wsgi_factory(hello)
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_to_eof(sock)
    assert reply.endswith(HELLO) and b"Connection: close\r\n" in reply


def _tool_env() -> Dict[str, str]:
    """The environment for a client tool: not under test, so without the
    sanitizer stage's LD_PRELOAD."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(wsgi_factory, tmp_path):
    server = wsgi_factory(hello)
    url = f"http://127.0.0.1:{server.address[1]}/"
    proc = subprocess.run(["curl", "-sS", "--max-time", "10", url, url], capture_output=True,
                          timeout=30, env=_tool_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == HELLO * 2


def _ab_field(out: str, name: str) -> int:
    line = next(ln for ln in out.splitlines() if ln.startswith(name + ":"))
    return int(line.split(":", 1)[1].split()[0])


@pytest.mark.skipif(shutil.which("ab") is None, reason="ab (apache2-utils) is not installed")
@pytest.mark.parametrize("keep_alive", [False, True], ids=["http10", "keep-alive"])
def test_ab(wsgi_factory, keep_alive):
    """ApacheBench, one connection per request (HTTP/1.0) and with -k:
    every request answered, no failure, the right length every time."""
    server = wsgi_factory(hello)
    url = f"http://127.0.0.1:{server.address[1]}/"
    proc = subprocess.run(["ab", "-q", "-n", "400", "-c", "8", "-s", "10",
                           *(["-k"] if keep_alive else []), url],
                          capture_output=True, text=True, timeout=60, env=_tool_env())
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert _ab_field(out, "Complete requests") == 400
    assert _ab_field(out, "Failed requests") == 0
    assert _ab_field(out, "Document Length") == len(HELLO)
    assert "Non-2xx responses" not in out
    if keep_alive:
        assert _ab_field(out, "Keep-Alive requests") == 400


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk(wsgi_factory):
    """wrk keeps 16 connections busy for a second: no socket error, no
    non-2xx answer, and the server served at least what wrk counted."""
    server = wsgi_factory(hello)
    url = f"http://127.0.0.1:{server.address[1]}/"
    proc = subprocess.run(["wrk", "-t", "1", "-c", "16", "-d", "1s", "--timeout", "10s", url],
                          capture_output=True, text=True, timeout=60, env=_tool_env())
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Socket errors" not in out, out
    assert "Non-2xx or 3xx responses" not in out, out
    done = int(next(ln for ln in out.splitlines() if " requests in " in ln).split()[0])
    assert done > 0
    assert server.shutdown(timeout=10.0)
    assert server.stats()["http_requests"] >= done


def test_keep_alive_deadline_closes_an_idle_connection(wsgi_factory, wait_for):
    server = wsgi_factory(hello, keep_alive=0.3)
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        assert _read_response(sock, buf)["body"] == HELLO
        t0 = time.monotonic()
        assert sock.recv(1) == b""          # a FIN from C, after keep_alive
        assert time.monotonic() - t0 < 5.0
    wait_for(lambda: server.stats()["idle_closed"] == 1, 10.0, "idle_closed")


# -- the environ: wsgiref.simple_server as the oracle ------------------------------

PEP3333_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_PROTOCOL")
ENVIRON_CASES = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /a%20b/%E2%82%AC?x=1&y=%20 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
    b"GET /%zz/%2F HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 7\r\n\r\na=1&b=2",
    b"GET /dup HTTP/1.1\r\nHost: h\r\nX-Dup: one\r\nX-Dup: two\r\nAccept-Language: fr\r\n\r\n",
    b"GET http://example.com/abs/path?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /latin HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /q? HTTP/1.0\r\n\r\n",
]


def _recording_app(seen: List[Dict[str, Any]]):
    def app(environ, start_response):
        body = read_all(environ["wsgi.input"])
        keep = {k: v for k, v in environ.items() if k in PEP3333_KEYS or k.startswith("HTTP_")}
        keep["body"] = body
        seen.append(keep)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    return app


def _wsgiref_environ(raw: bytes) -> Dict[str, Any]:
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer as RefServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    seen: List[Dict[str, Any]] = []
    ref = RefServer(("127.0.0.1", 0), Quiet)
    ref.set_app(_recording_app(seen))
    t = threading.Thread(target=ref.handle_request, name="wsgiref")
    t.start()
    try:
        with socket.create_connection(ref.server_address, timeout=10.0) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            read_to_eof(sock)
    finally:
        t.join(10.0)
        ref.server_close()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("raw", ENVIRON_CASES, ids=range(len(ENVIRON_CASES)))
def test_environ_matches_wsgiref(wsgi_factory, raw):
    seen: List[Dict[str, Any]] = []
    server = wsgi_factory(_recording_app(seen))
    assert exchange(server, raw)[0]["status"] == 200
    ours, theirs = seen[0], _wsgiref_environ(raw)
    if raw.startswith(b"GET http://"):
        # wsgiref keeps the scheme and authority in PATH_INFO: PEP 3333
        # (and every other server) takes the path of an absolute-form target
        assert theirs["PATH_INFO"].startswith("http://example.com")
        theirs["PATH_INFO"] = "/abs/path"
    if raw.startswith(b"OPTIONS *"):
        # wsgiref passes "*", which its own validator refuses (PATH_INFO must
        # start with "/" or be empty)
        assert theirs["PATH_INFO"] == "*"
        theirs["PATH_INFO"] = ""
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        # wsgiref sets CONTENT_TYPE "text/plain" when none was sent, and
        # CONTENT_LENGTH "" : PEP 3333 lets both be absent
        if key not in ours and theirs.get(key) in ("", "text/plain"):
            theirs.pop(key)
    assert ours == theirs


def test_environ_basics(wsgi_factory):
    seen: List[Dict[str, Any]] = []

    def app(environ, start_response):
        seen.append(dict(environ))
        start_response("204 No Content", [])
        return []

    server = wsgi_factory(app)
    exchange(server, b"GET /p HTTP/1.1\r\nHost: h\r\nX_Spoof: 1\r\n\r\n")
    env = seen[0]
    assert env["wsgi.version"] == (1, 0) and env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is fastaccept.http.wsgi.FileWrapper
    assert env["SERVER_PORT"] == str(server.address[1])
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert "HTTP_X_SPOOF" not in env            # a name with "_" is left out


# -- response framing ---------------------------------------------------------------

def test_framing_of_every_kind(wsgi_factory):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/gen":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (part for part in (b"a", b"", b"bc", b"def"))
        if path == "/write":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"early ")
            return [b"late"]
        if path == "/204":
            start_response("204 No Content", [])
            return []
        if path == "/len":
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", "5")])
            return [b"12", b"345"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"single"]

    # not validated: wsgiref.validate wraps every iterable, and a list's
    # single chunk (sent with its Content-Length) is what is under test
    server = wsgi_factory(app, validate=False)
    r = exchange(server, b"GET /gen HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert r["headers"]["transfer-encoding"] == "chunked" and r["body"] == b"abcdef"
    r = exchange(server, b"GET /write HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert r["body"] == b"early late"
    r = exchange(server, b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert r["headers"]["content-length"] == "6" and r["body"] == b"single"
    r = exchange(server, b"GET /len HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert r["body"] == b"12345"
    with _connect(server) as sock:      # HTTP/1.0 and no length: ends at the close
        sock.sendall(b"GET /gen HTTP/1.0\r\n\r\n")
        reply = read_to_eof(sock)
    assert reply.endswith(b"\r\n\r\nabcdef") and b"chunked" not in reply
    with _connect(server) as sock:      # 204: no body, the connection stays
        sock.sendall(b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\nGET /one HTTP/1.1\r\nHost: h\r\n\r\n")
        buf = bytearray()
        assert _read_response(sock, buf)["status"] == 204
        assert _read_response(sock, buf)["body"] == b"single"


def test_head_has_the_headers_of_get_and_no_body(wsgi_factory):
    server = wsgi_factory(hello)
    with _connect(server) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(0.2)     # the two responses, back to back, before reading
        data = b""
        sock.settimeout(2.0)
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(HELLO):
            data += sock.recv(4096)
    head_resp, get_resp = data.split(b"HTTP/1.1 200 OK")[1:]
    assert b"Content-Length: 13" in head_resp and not head_resp.endswith(HELLO)
    assert get_resp.endswith(HELLO)


def test_file_wrapper_is_sent_with_sendfile(wsgi_factory, tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(300000)
    path.write_bytes(data)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    server = wsgi_factory(app, validate=False)     # validate would hide the wrapper
    r = exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert r["headers"]["content-length"] == "300000" and r["body"] == data


# -- request bodies -----------------------------------------------------------------

def _body_app(environ, start_response):
    inp = environ["wsgi.input"]
    how = environ["PATH_INFO"]
    if how == "/lines":
        got = b"|".join(inp.readlines())
    elif how == "/iter":
        got = b"|".join(list(inp))
    elif how == "/pieces":
        got = inp.read(3) + b"/" + inp.readline() + b"/" + read_all(inp)
    else:
        got = read_all(inp)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(got)))])
    return [got]


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_request_bodies_every_way(wsgi_factory, chunked):
    server = wsgi_factory(_body_app)
    body = b"one\ntwo\nthree"

    def req(path: str) -> bytes:
        if chunked:
            return (b"POST %s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"4\r\none\n\r\n9\r\ntwo\nthree\r\n0\r\n\r\n" % path.encode())
        return b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (
            path.encode(), len(body), body)

    raw = b"".join(req(p) for p in ("/all", "/lines", "/iter", "/pieces"))
    got = [r["body"] for r in exchange(server, raw, 4)]
    assert got == [body, b"one\n|two\n|three", b"one\n|two\n|three", b"one/\n/two\nthree"]


def test_unread_body_is_drained_and_the_connection_kept(wsgi_factory):
    server = wsgi_factory(hello)
    raw = (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000 +
           b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r["body"] for r in exchange(server, raw, 2)] == [HELLO, HELLO]


def test_a_large_unread_body_closes_the_connection(wsgi_factory):
    server = wsgi_factory(hello)
    with _connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\nabc")
        reply = read_to_eof(sock)
    assert reply.endswith(HELLO)            # answered, then closed: not read in full


def test_expect_100_continue_only_when_the_body_is_read(wsgi_factory):
    server = wsgi_factory(_body_app)
    with _connect(server) as sock:
        sock.sendall(b"POST /all HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        assert _read_response(sock, bytearray())["body"] == b"data"
    # an application that never reads the body: no 100, and the connection
    # closes (the body never came)
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        _read_response(sock, bytearray())
    server2 = wsgi_factory(hello)
    with _connect(server2) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        r = _read_response(sock, bytearray())
        assert r["status"] == 200 and r["body"] == HELLO


# -- errors and limits -------------------------------------------------------------

def test_application_errors(wsgi_factory, caplog, wait_for):
    caplog.set_level(logging.ERROR, logger="fastaccept")

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/late":
            start_response("200 OK", [("Content-Type", "text/plain")])

            def gen():
                yield b"partial"
                raise RuntimeError("after the head")
            return gen()
        raise RuntimeError("before anything")

    server = wsgi_factory(app, validate=False)
    r = exchange(server, b"GET /early HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert r["status"] == 500 and r["headers"]["connection"] == "close"
    with _connect(server) as sock:
        sock.sendall(b"GET /late HTTP/1.1\r\nHost: h\r\n\r\n")
        reply = read_to_eof(sock)          # closed after the partial body
    assert b"partial" in reply and not reply.endswith(b"0\r\n\r\n")
    wait_for(lambda: server.stats()["app_errors"] == 2, 10.0, "2 app errors")
    assert sum("the WSGI application raised" in r.getMessage() for r in caplog.records) == 2


def test_close_is_always_called(wsgi_factory):
    closed = []

    class Body:
        def __iter__(self):
            yield b"x"
            raise RuntimeError("mid-body")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    server = wsgi_factory(app, validate=False)
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        read_to_eof(sock)
    assert closed == [True]


def test_a_subclass_step_is_called_with_a_socket(no_leaks):
    """WSGIServer's workers serve bare descriptors; a subclass that
    overrides process_connection gets Server's loop, which calls it with the
    connection's socket and the parsed request."""
    seen = []

    class Tagged(fastaccept.WSGIServer):
        def process_connection(self, conn, addr, request=None):
            seen.append((type(conn), request.target))
            return super().process_connection(conn, addr, request)

    with Tagged(hello, "127.0.0.1", 0, workers=1) as server:
        server.start()
        sock = _connect(server)
        with sock:
            buf = bytearray()
            for path in ("/a", "/b"):
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
                assert _read_response(sock, buf)["body"] == HELLO
    assert seen == [(socket.socket, "/a"), (socket.socket, "/b")]


def test_a_subclass_handle_error_gets_what_escapes_the_application(no_leaks):
    """What the server does not catch (SystemExit from the application)
    reaches a subclass's handle_error, with the connection's socket."""
    seen = []

    def quits(environ, start_response):
        raise SystemExit(3)

    class Noting(fastaccept.WSGIServer):
        def handle_error(self, conn, addr):
            seen.append((type(conn), sys.exc_info()[0]))

    with Noting(quits, "127.0.0.1", 0, workers=1) as server:
        server.start()
        with _connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert read_to_eof(sock) == b""     # closed, nothing sent
    assert seen == [(socket.socket, SystemExit)]


def test_start_response_with_exc_info_replaces_the_status(wsgi_factory):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"),
                                                      ("Content-Length", "4")], sys.exc_info())
        return [b"busy"]

    server = wsgi_factory(app)
    r = exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert r["status"] == 503 and r["body"] == b"busy"


@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                       # no Host
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     400),                                                                  # CL.TE
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000000\r\n\r\n", 413),
])
def test_bad_heads_are_answered_from_c_and_closed(wsgi_factory, wait_for, raw, status):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return hello(environ, start_response)

    server = wsgi_factory(app, max_body=1 << 20)
    with _connect(server) as sock:
        sock.sendall(raw + b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
        reply = read_to_eof(sock)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert reply.count(b"Server: fastaccept") == 1  # the request after it was never read
    assert b"Connection: close" in reply and calls == []
    wait_for(lambda: server.stats()["http_rejected"].get(status) == 1, 10.0, f"{status} counted")


def test_limits_at_their_bound_are_served(wsgi_factory):
    server = wsgi_factory(hello, max_request_line=64, max_fields=3, max_head=200)
    line = b"GET /" + b"a" * (64 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 64
    r = exchange(server, line + b"\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n")[0]
    assert r["status"] == 200
    r = exchange(server, line.replace(b"/a", b"/aa", 1) + b"\r\nHost: h\r\n\r\n")[0]
    assert r["status"] == 414
    r = exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")[0]
    assert r["status"] == 431


def test_chunked_body_over_max_body_is_413(wsgi_factory):
    server = wsgi_factory(_body_app, max_body=10, validate=False)
    raw = b"POST /all HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n" + \
        b"x" * 11 + b"\r\n0\r\n\r\n"
    assert exchange(server, raw)[0]["status"] == 413


def test_slow_head_gets_408_from_c(wsgi_factory, wait_for):
    server = wsgi_factory(hello, timeout=0.3)
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHo")
        reply = read_to_eof(sock)
    assert reply.startswith(b"HTTP/1.1 408 ")
    wait_for(lambda: server.stats()["http_rejected"].get(408) == 1, 10.0, "408 counted")



def test_a_body_that_stops_coming_times_out_the_read(wsgi_factory, wait_for):
    """timeout bounds the application's body reads (the socket is given it
    at its first read): the connection is closed, the worker freed."""
    server = wsgi_factory(_body_app, workers=1, timeout=0.3)
    with _connect(server) as sock:
        sock.sendall(b"POST /all HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        assert read_to_eof(sock) == b""         # no response: a read of the app timed out
    # the one worker is free again, and a body that arrives whole is read
    raw = b"POST /all HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    assert exchange(server, raw)[0]["status"] == 200


# -- stopping -----------------------------------------------------------------------

def test_shutdown_answers_in_flight_with_close_and_closes_idle(wsgi_factory, join_all):
    entered, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            release.wait(30.0)
        return hello(environ, start_response)

    server = wsgi_factory(app, workers=2)
    idle, busy = _connect(server), _connect(server)
    try:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        _read_response(idle, bytearray())       # now kept, waiting in C
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        assert entered.wait(10.0)
        shutter = threading.Thread(target=server.shutdown, name="test-shutdown")
        shutter.start()
        assert idle.recv(1) == b""              # a FIN, not a reset
        release.set()
        r = _read_response(busy, bytearray())
        assert r["body"] == HELLO and r["headers"]["connection"] == "close"
        assert join_all([shutter], 30.0) == []
    finally:
        release.set()
        idle.close()
        busy.close()


# -- the command line ---------------------------------------------------------------

def test_wsgi_verb_serves_module_app(tmp_path, http_get):
    from fa_testutil import read_line
    (tmp_path / "webapp.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'hi']\n")
    proc = subprocess.Popen([sys.executable, "-m", "fastaccept", "wsgi", "webapp:app",
                             "--port", "0", "--chdir", str(tmp_path), "--workers", "2"],
                            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_line(proc.stdout.fileno(), 30.0, proc).decode()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert http_get(("127.0.0.1", port)).endswith(b"\r\n\r\nhi")
        proc.send_signal(2)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_wsgi_verb_behind_a_balancer(tmp_path, http_get):
    """--proxy-protocol: REMOTE_ADDR is the client's the PROXY header names."""
    from fa_testutil import read_line
    (tmp_path / "webapp.py").write_text(
        "def app(environ, start_response):\n"
        "    body = environ['REMOTE_ADDR'].encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    proc = subprocess.Popen([sys.executable, "-m", "fastaccept", "wsgi", "webapp:app",
                             "--port", "0", "--chdir", str(tmp_path), "--workers", "1",
                             "--proxy-protocol"],
                            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_line(proc.stdout.fileno(), 30.0, proc).decode()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        request = (b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\n"
                   b"GET / HTTP/1.0\r\n\r\n")
        assert http_get(("127.0.0.1", port), request=request).endswith(b"\r\n\r\n203.0.113.7")
        assert http_get(("127.0.0.1", port)) == b""         # no header: closed unanswered
        proc.send_signal(2)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("spec, words", [
    ("nosuchmodule:app", "cannot import"),
    ("webapp:missing", "has no"),
    ("webapp:NOT_CALLABLE", "not a callable"),
    ("webapp", "expected MODULE:APP"),
    ("broken:app", "raised"),
])
def test_wsgi_verb_bad_app_is_one_line(tmp_path, spec, words):
    (tmp_path / "webapp.py").write_text("NOT_CALLABLE = 3\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('at import')\n")
    proc = subprocess.run([sys.executable, "-m", "fastaccept", "wsgi", spec, "--port", "0",
                           "--chdir", str(tmp_path)], cwd="/", capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- Flask, end to end ----------------------------------------------------------------

def test_flask_app_end_to_end(wsgi_factory):
    flask = pytest.importorskip("flask")
    app = flask.Flask("fa_test")

    @app.route("/hello/<name>")
    def hello_name(name):
        return flask.jsonify(hello=name, q=flask.request.args.get("q"))

    @app.route("/echo", methods=["POST"])
    def echo():
        return flask.request.get_data()

    # Werkzeug reads wsgi.input without a size (wsgi.input_terminated),
    # which wsgiref.validate refuses: Flask is served as it is
    server = wsgi_factory(app, validate=False)
    conn = http.client.HTTPConnection(*server.address[:2], timeout=10)
    try:
        conn.request("GET", "/hello/w%C3%B6rld?q=1")
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"hello": "wörld", "q": "1"}
        conn.request("POST", "/echo", body=b"x" * 5000)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"x" * 5000
        conn.request("GET", "/missing")
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
    finally:
        conn.close()


def test_access_log(wsgi_factory, tmp_path):
    log_path = tmp_path / "access.log"
    server = wsgi_factory(hello, access_log=str(log_path))
    exchange(server, b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert server.shutdown(timeout=10.0)
    line = log_path.read_text().strip()
    assert line.startswith("127.0.0.1 - - [") and '"GET /a?b=1 HTTP/1.1" 200 13 ' in line
    assert line.split()[-1].isdigit()


def test_bad_arguments_are_refused(no_leaks):
    with pytest.raises(TypeError, match="app"):
        fastaccept.WSGIServer(object())
    for kwargs, word in [(dict(max_fields=0), "max_fields"), (dict(max_body=0), "max_body"),
                         (dict(keep_alive=-1), "keep_alive"), (dict(url_scheme="ftp"),
                                                                 "url_scheme"),
                         (dict(access_log=3), "access_log")]:
        with pytest.raises((ValueError, TypeError), match=word):
            fastaccept.WSGIServer(hello, **kwargs)

"""fastaccept.bench.wsgiapp: the one WSGI application of the bench's HTTP servers.

Called through wsgiref.validate (PEP 3333 checked on every call) and served
by wsgiref.simple_server, the oracle, on a loopback port.
"""
from __future__ import annotations

import io
import sys
import threading
from wsgiref import simple_server, validate

from fastaccept.bench import refservers, wsgiapp


def _call(app, environ=None):
    """Call app through wsgiref.validate; return (status, headers, body)."""
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, list(headers)
        return lambda data: None

    env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
           "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
           "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
           "wsgi.run_once": False, **(environ or {})}
    result = validate.validator(app)(env, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    return seen["status"], seen["headers"], body


def test_app_answers_hello_world_with_its_length():
    status, headers, body = _call(wsgiapp.app)
    assert status == "200 OK"
    assert headers == [("Content-Type", "text/plain"), ("Content-Length", "13")]
    assert body == b"Hello, world!" == wsgiapp.BODY


def test_every_call_gets_a_header_list_of_its_own():
    """A server may extend the list it is given: the next call must not see it."""
    lists = []

    def start_response(status, headers, exc_info=None):
        headers.append(("X-Added", "1"))
        lists.append(headers)

    for _ in range(2):
        wsgiapp.app({}, start_response)
    assert lists[0] is not lists[1]
    assert lists[1] == [("Content-Type", "text/plain"), ("Content-Length", "13"),
                        ("X-Added", "1")]


def test_make_app_runs_the_work_before_answering_its_body():
    order = []
    app = wsgiapp.make_app(b"ok", work=lambda: order.append("work"))
    status, headers, body = _call(app)
    assert order == ["work"] and body == b"ok"
    assert ("Content-Length", "2") in headers


def test_refservers_app_answers_the_demo_body_or_hello():
    """refservers' wsgi server serves this module's application."""
    assert _call(refservers.make_app())[2] == b"ok" == refservers.DEMO_BODY
    assert _call(refservers.make_app(cpu_iters=10, body=wsgiapp.BODY))[2] == wsgiapp.BODY


def test_served_by_the_reference_wsgi_server():
    """wsgiref.simple_server serves it as any WSGI server would."""
    httpd = simple_server.make_server("127.0.0.1", 0, validate.validator(wsgiapp.app),
                                      handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.handle_request, daemon=True)
    thread.start()
    try:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=10)
        conn.request("GET", "/")
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (200, b"Hello, world!")
        conn.close()
    finally:
        thread.join(10)
        httpd.server_close()
    assert not thread.is_alive()


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):
        pass

"""Status lines, the Date header, and the responses the server writes itself.

The accept loop answers malformed and oversized request heads from C (400,
408, 413, 414, 431, 501, 505: see ``src/fa_accept.c``); the ones here are
those a worker writes: 500 when an application fails before it sent
anything, 503 when the server sheds load, 100 Continue.
"""
from __future__ import annotations

import http
import time
from email.utils import formatdate
from typing import Dict, Tuple

__all__ = ["status_line", "date_header", "simple", "CONTINUE", "SHED_RESPONSE", "SERVER"]

#: The Server header's value.
SERVER = b"fastaccept"
#: What an Expect: 100-continue gets once the application reads the body.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_status_lines: Dict[Tuple[int, str], bytes] = {}


def status_line(minor: int, status: str) -> bytes:
    """b"HTTP/1.x <status>\\r\\n" for a WSGI status string ("200 OK")."""
    key = (minor, status)
    line = _status_lines.get(key)
    if line is None:
        line = b"HTTP/1.%d %s\r\n" % (minor, status.encode("latin-1"))
        if len(_status_lines) < 256:
            _status_lines[key] = line
    return line


_date_second = -1
_date_line = b""


def date_header() -> bytes:
    """b"Date: <IMF-fixdate>\\r\\n", formatted once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        # Two threads may both format it in the same second: same bytes.
        _date_line = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        _date_second = now
    return _date_line


def simple(status: int, body: bytes, *, minor: int = 1, close: bool = True) -> bytes:
    """A whole response with a text body (the server's own answers)."""
    phrase = http.HTTPStatus(status).phrase
    return (b"HTTP/1.%d %d %s\r\nServer: %s\r\n%sContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (
                minor, status, phrase.encode("ascii"), SERVER, date_header(), len(body),
                b"Connection: close\r\n" if close else b"", body))


#: What a connection that finds the ring full gets with overload="shed" (sent
#: from C: it has no Date, which the C side does not keep).
_SHED_BODY = b"server overloaded: try again\n"
SHED_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nServer: fastaccept\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\nRetry-After: 1\r\n\r\n%s" % (len(_SHED_BODY), _SHED_BODY))

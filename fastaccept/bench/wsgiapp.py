"""The one WSGI application of the bench, and its factory.

``app`` answers every request ``200 OK`` with ``Content-Type: text/plain``,
``Content-Length: 13`` and the body ``Hello, world!``: the classic hello-world,
so what the HTTP scenarios measure is the server (accepting, parsing,
dispatching to a thread, framing, sending), not the application. Every HTTP
server of the bench serves it: fastaccept's WSGIServer (refservers' ``wsgi``
with ``--hello``) and the peers of ``httpservers``. Each server adds its own
``Date`` and ``Server`` headers; the status, the Content-Length and the body
are the same bytes from all of them.

``make_app(body, work)`` makes the same application with another body, doing
``work()`` before it answers: refservers' ``wsgi`` answers the demo reply's
body, ``ok``, after the handler work a scenario asks for (a sleep, a CPU burn).

It is importable as ``fastaccept.bench.wsgiapp:app``: the target gunicorn
and granian are given on their command lines.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

__all__ = ["BODY", "STATUS", "CONTENT_TYPE", "WSGIApp", "make_app", "app"]

STATUS = "200 OK"
CONTENT_TYPE = "text/plain"
BODY = b"Hello, world!"

#: A PEP 3333 application: app(environ, start_response) -> iterable of bytes.
WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_app(body: bytes = BODY, work: Optional[Callable[[], object]] = None) -> WSGIApp:
    """Return a PEP 3333 application answering 200 OK, text/plain, ``body``
    with its Content-Length, after calling ``work()`` when given."""
    length = str(len(body))

    def hello(environ: Dict[str, Any],
              start_response: Callable[[str, List[Tuple[str, str]]], Any]) -> Iterable[bytes]:
        if work is not None:
            work()
        # A new header list per call: a server may extend the list it is given.
        start_response(STATUS, [("Content-Type", CONTENT_TYPE), ("Content-Length", length)])
        return [body]
    return hello


#: The hello-world application every HTTP server of the bench serves.
app = make_app()

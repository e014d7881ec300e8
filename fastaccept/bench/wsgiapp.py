"""The one WSGI application every HTTP server of the bench serves.

``app`` answers every request ``200 OK`` with ``Content-Type: text/plain``,
``Content-Length: 13`` and the body ``Hello, world!``: the classic hello-world,
so what the HTTP scenarios measure is the server (accepting, parsing,
dispatching to a thread, framing, sending), not the application. Each
server adds its own ``Date`` and ``Server`` headers; the status, the
Content-Length and the body are the same bytes from all of them.

It is importable as ``fastaccept.bench.wsgiapp:app`` (the target gunicorn
and granian are given on their command lines).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Tuple

__all__ = ["BODY", "STATUS", "CONTENT_TYPE", "app"]

STATUS = "200 OK"
CONTENT_TYPE = "text/plain"
BODY = b"Hello, world!"
_LENGTH = str(len(BODY))


def app(environ: Dict[str, Any],
        start_response: Callable[[str, List[Tuple[str, str]]], Any]) -> Iterable[bytes]:
    """PEP 3333: 200 OK, text/plain, ``Hello, world!`` with its Content-Length."""
    # A new header list per call: a server may extend the list it is given.
    start_response(STATUS, [("Content-Type", CONTENT_TYPE), ("Content-Length", _LENGTH)])
    return [BODY]

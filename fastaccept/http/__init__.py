"""fastaccept's HTTP/1.1 server for WSGI applications.

    wsgi         WSGIServer: PEP 3333 on fastaccept's engine; the request head
                 is parsed in C, in the accept loop, before a worker wakes
    connection   one request's body (wsgi.input) and what the connection does
                 after the response (keep-alive, draining, pipelining)
    responses    status lines, the Date header, the server's own responses
    accesslog    the access log (off by default)
    command      the ``fastaccept wsgi MODULE:APP`` verb
"""
from fastaccept.http.wsgi import WSGIServer

__all__ = ["WSGIServer"]

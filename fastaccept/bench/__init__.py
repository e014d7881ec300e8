"""fastaccept's instruments: the bench, its load generator and its reference servers.

    runner       ``fastaccept bench``: every scenario against every server, a table
    scenarios    the load shapes and the servers the bench runs
    refservers   the reference servers, one process each
    httpservers  the HTTP peers (gunicorn, waitress, cheroot, granian), one process each
    wsgiapp      the one WSGI application every HTTP server of the bench serves
    crosscheck   the load generator beside wrk and ab, on one HTTP server
    loadgen      the C load generator's API (``fastaccept load``)
    _loadgen     its extension: the load generator and the c-inline server in C

The product (``fastaccept``, ``fastaccept._core``) never imports this package;
it imports the product, to measure it.
"""
from fastaccept.bench.runner import *  # noqa: F401,F403
from fastaccept.bench.runner import __all__  # noqa: F401

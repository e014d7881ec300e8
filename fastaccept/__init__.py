"""fastaccept: drain a listening socket's accept queue from C, serve in Python threads.

The accept loop runs in C with the GIL released; accepted connections wait in
a bounded lock-free ring until a worker thread wraps each one as a
``socket.socket`` and calls your handler::

    import fastaccept

    def handler(conn, addr):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")

    with fastaccept.Server(handler, port=8080) as server:
        server.serve_forever()
"""
import os
import sys

if not sys.platform.startswith("linux"):
    raise ImportError(
        f"fastaccept needs Linux (accept4, epoll, eventfd, futex); this is {sys.platform}")


def _in_source_tree() -> bool:
    """True if this package is the unbuilt source directory of a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.exists(os.path.join(here, os.pardir, "setup.py"))


try:
    from fastaccept._core import Acceptor, Ring
except ImportError as e:  # pragma: no cover - depends on the install
    if _in_source_tree() and sys.argv[:1] == ["-m"]:
        # `python -m fastaccept` in the checkout: the current directory comes
        # first on sys.path, so this is the source package, not the installed one.
        sys.stderr.write("fastaccept: this is the source tree, whose C extension is not built "
                         "here; run the installed command instead (`fastaccept serve`), or "
                         "`python -m fastaccept` from another directory\n")
        raise SystemExit(2) from None
    raise ImportError(
        "fastaccept's C extension (fastaccept._core) is not built: install the package "
        "with `pip install .` from the source tree, and do not import it from the "
        f"source directory itself ({e})") from e

from fastaccept.server import KEEP, Server  # noqa: E402
from fastaccept.tcpserver import TCPServer  # noqa: E402
from fastaccept.http.wsgi import WSGIServer  # noqa: E402
from fastaccept.supervise import serve_processes  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Server", "TCPServer", "WSGIServer", "KEEP", "serve_processes", "Acceptor", "Ring",
           "__version__"]

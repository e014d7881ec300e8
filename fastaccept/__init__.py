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
import sys

if not sys.platform.startswith("linux"):
    raise ImportError(
        f"fastaccept needs Linux (accept4, epoll, eventfd, futex); this is {sys.platform}")

try:
    from fastaccept._core import Acceptor, Ring
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "fastaccept's C extension (fastaccept._core) is not built: install the package "
        "with `pip install .` from the source tree, and do not import it from the "
        f"source directory itself ({e})") from e

from fastaccept.server import Server, TCPServer

__version__ = "0.1.0"
__all__ = ["Server", "TCPServer", "Acceptor", "Ring", "__version__"]

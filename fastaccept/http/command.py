"""The ``fastaccept wsgi MODULE:APP`` verb: serve a WSGI application.

``MODULE:APP`` names the application as gunicorn's command line does: the
module is imported (from ``--chdir``, else the current directory, which go
first on ``sys.path``) and APP is an attribute of it, or a dotted path into
it (``pkg.web:factory.app``). A module that cannot be imported, an APP that
is missing or not callable, is a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import socket
from typing import TYPE_CHECKING, Any, Callable, Tuple

from fastaccept._options import DEFAULT_BACKLOG, DEFAULT_TIMEOUT, DEFAULT_WORKERS

if TYPE_CHECKING:   # pragma: no cover
    from fastaccept.http.wsgi import WSGIServer

__all__ = ["check_spec", "load_app", "add_arguments", "run", "VERB_DESCRIPTION"]

VERB_DESCRIPTION = ("Serve the WSGI application MODULE:APP over HTTP/1.1. Request heads are "
                    "read and parsed in C before a worker thread wakes; idle and kept "
                    "connections wait in C. Ctrl-C or SIGTERM stops it gracefully. With "
                    "--processes N each process imports the application itself, and SIGHUP "
                    "reloads it without dropping a connection.")
DEFAULT_PORT = 8000


class AppError(ValueError):
    """MODULE:APP does not name a WSGI application (the message says why)."""


def check_spec(spec: str, chdir: str = "") -> Tuple[str, str, str]:
    """(module, attribute path, directory) of MODULE:APP, checked without importing it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppError(f"expected MODULE:APP, got {spec!r}")
    where = os.path.abspath(chdir or os.getcwd())
    if chdir and not os.path.isdir(where):
        raise AppError(f"--chdir {chdir!r}: no such directory")
    return module_name, attr, where


def load_app(spec: str, chdir: str = "") -> Callable[..., Any]:
    """Import MODULE:APP (from chdir, or the current directory) and return APP."""
    module_name, attr, where = check_spec(spec, chdir)
    if chdir:
        os.chdir(where)
    if where not in sys.path:
        sys.path.insert(0, where)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise AppError(f"cannot import {module_name!r} from {where}: {e}") from None
    except Exception as e:      # the module itself raised while importing
        raise AppError(f"importing {module_name!r} raised {type(e).__name__}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(f"module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise AppError(f"{spec} is a {type(obj).__name__}, not a callable WSGI application")
    return obj  # type: ignore[no-any-return]


def _seconds_or_none(text: str) -> Any:
    from fastaccept.demo import timeout_arg
    return timeout_arg(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the wsgi verb's options to ``parser``."""
    from fastaccept.http.wsgi import DEFAULT_KEEP_ALIVE
    parser.add_argument("app", metavar="MODULE:APP", help="the WSGI application to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to bind (default {DEFAULT_PORT}; 0 picks one)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"worker threads (default {DEFAULT_WORKERS})")
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG,
                        help=f"listen backlog (default {DEFAULT_BACKLOG})")
    parser.add_argument("--keep-alive", type=_seconds_or_none, default=DEFAULT_KEEP_ALIVE,
                        metavar="S", help="seconds a kept connection may wait for its next "
                        f"request (default {DEFAULT_KEEP_ALIVE:g})")
    parser.add_argument("--timeout", type=_seconds_or_none, default=DEFAULT_TIMEOUT,
                        metavar="S", help="seconds a request head may take to arrive, and any "
                        f"socket operation of a worker (default {DEFAULT_TIMEOUT:g}; 'none')")
    parser.add_argument("--proxy-protocol", action="store_true",
                        help="behind a load balancer: every connection must start with a "
                             "PROXY protocol header (v1 or v2, e.g. HAProxy's send-proxy-v2), "
                             "whose client address is then REMOTE_ADDR; others are closed")
    parser.add_argument("--access-log", metavar="FILE", default=None,
                        help="log each request to FILE ('-': stderr); off by default")
    parser.add_argument("--chdir", metavar="DIR", default="",
                        help="import MODULE from DIR (default: the current directory)")
    from fastaccept import supervise
    supervise.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """The wsgi verb: serve until SIGINT/SIGTERM."""
    from fastaccept import _options, supervise
    from fastaccept.http.wsgi import WSGIServer

    check_spec(args.app, args.chdir)
    _options.check_int("workers", args.workers, 1, _options.MAX_WORKERS)
    _options.check_timeout(args.timeout)
    _options.check_seconds("keep_alive", args.keep_alive, _options.MAX_IDLE_TIMEOUT,
                           allow_none=True)
    if args.processes == 1:
        # One process: import now, so that a bad MODULE:APP is one line and
        # exit status 2, before anything is bound.
        loaded = load_app(args.app, args.chdir)

        def app_now() -> Callable[..., Any]:
            return loaded
    else:
        # Several: the supervisor never imports it; each child does, after
        # the fork, so a reload (SIGHUP) serves the code on disk now.
        def app_now() -> Callable[..., Any]:
            return load_app(args.app, args.chdir)

    def factory(sock: socket.socket) -> "WSGIServer":
        return WSGIServer(app_now(), sock=sock, workers=args.workers,
                          keep_alive=args.keep_alive, timeout=args.timeout,
                          access_log=args.access_log,
                          proxy_protocol=args.proxy_protocol)

    supervisor = supervise.from_args(args, factory)
    host, port = supervisor.address[:2]
    shown = f"[{host}]" if ":" in host else host
    how = (f"{args.workers} workers x {args.processes} processes, "
           f"{supervisor.listeners.layout} listener" if args.processes > 1
           else f"{args.workers} workers")
    print(f"fastaccept serving {args.app} on http://{shown}:{port}/ ({how}); "
          "Ctrl-C to stop", flush=True)
    status = supervisor.run()
    st = supervisor.totals()
    print(f"stopped: {st.get('requests', 0)} requests on {st.get('accepted', 0)} connections",
          flush=True)
    return status

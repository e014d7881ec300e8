"""Several serving processes on one port: supervision, restarts, reloads that drop nothing.

One Python process runs Python on one core at a time (the GIL), so a server
scales by processes. ``serve_processes(factory, processes=N, ...)`` binds the
listening socket(s), forks N children, and in each builds the server with
``factory(sock)``, which must return a ``Server`` (or ``WSGIServer``) made on
that socket::

    import fastaccept

    def factory(sock):
        from myapp import app                 # imported in the child: a reload
        return fastaccept.WSGIServer(app, sock=sock, workers=8)   # re-imports it

    raise SystemExit(fastaccept.serve_processes(factory, processes=4, port=8000))

The rooms:

    arbiter     the supervisor: forks, reaps, restarts with back-off, signals
    child       what a serving process runs (a forked child, or the only one)
    reload      the status pipe protocol, and the generations of a reload
    listeners   the listening sockets: shared, SO_REUSEPORT, inherited
    checks      the kernel self-check logged at start

``add_arguments`` and ``from_args`` give the ``serve`` and ``wsgi`` verbs their
process options (``--processes``, ``--graceful-timeout``, ``--listener``, ``--fd``).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Optional

from fastaccept._options import DEFAULT_GRACEFUL_TIMEOUT, MAX_TIMEOUT
from fastaccept.server import Server
from fastaccept.supervise.arbiter import EXIT_GAVE_UP, Supervisor
from fastaccept.supervise.child import Factory
from fastaccept.supervise.listeners import DEFAULT_LAYOUT, LAYOUTS

__all__ = ["serve_processes", "Supervisor", "Factory", "EXIT_GAVE_UP", "LAYOUTS",
           "DEFAULT_LAYOUT", "add_arguments", "from_args"]


def serve_processes(factory: Factory, *, processes: int = 1, host: str = "127.0.0.1",
                    port: int = 0, **options: Any) -> int:
    """Serve ``factory(sock)`` in ``processes`` processes until SIGTERM or
    SIGINT; return the exit status (0, or ``EXIT_GAVE_UP`` when the children
    kept failing to start).

    ``options`` are ``Supervisor``'s: ``sock``, ``fd``, ``listener``
    ("shared" or "reuseport"), ``backlog``, ``graceful_timeout``,
    ``max_start_failures``, ``backoff``, ``max_backoff``, ``min_uptime``,
    ``systemd``, ``on_event``, ``on_start``. With ``processes=1`` the server
    runs in this process (no supervisor); otherwise call it from the main
    thread of a process that runs no other thread and no server yet."""
    return Supervisor(factory, processes=processes, host=host, port=port, **options).run()


def _graceful(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_TIMEOUT:g}] seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the process options of the serve and wsgi verbs to ``parser``."""
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="serving processes (default 1: this process, no supervisor); "
                             "SIGHUP reloads, SIGTTIN/SIGTTOU add/remove one")
    parser.add_argument("--graceful-timeout", type=_graceful, default=DEFAULT_GRACEFUL_TIMEOUT,
                        metavar="S", help="seconds a stopping process gets to answer what it "
                        f"accepted before SIGKILL (default {DEFAULT_GRACEFUL_TIMEOUT:g})")
    parser.add_argument("--listener", choices=LAYOUTS, default=None,
                        help="with --processes: one socket every process accepts from "
                             "(shared) or one SO_REUSEPORT socket per process (reuseport); "
                             f"default {DEFAULT_LAYOUT} (docs/design.md section 10)")
    parser.add_argument("--fd", type=int, default=None, metavar="N",
                        help="serve the inherited listening socket N instead of binding "
                             "(systemd's LISTEN_FDS is used by itself)")


def from_args(args: argparse.Namespace, factory: Factory,
              on_start: Optional[Callable[[Server], None]] = None) -> Supervisor:
    """The Supervisor the parsed options of ``add_arguments`` (and --host,
    --port, --backlog) ask for; the listener is bound (or taken) here."""
    return Supervisor(factory, host=args.host, port=args.port, backlog=args.backlog,
                      processes=args.processes, graceful_timeout=args.graceful_timeout,
                      listener=args.listener, fd=args.fd, on_start=on_start)

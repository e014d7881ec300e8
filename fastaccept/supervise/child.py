"""What a serving process does: in a child the supervisor forked, or alone.

``serve(server, ...)`` runs a built server until SIGTERM or SIGINT, then
stops it gracefully within ``graceful_timeout``. It is the single process
of ``serve_processes(processes=1)`` and the second half of every child.

``child_main(...)`` is what a forked child runs, before anything else:

1. The signals the supervisor handles get their default actions back, and
   the supervisor's wake-up descriptor, its other children's status pipes
   and the other slots' listeners are closed: the child holds its own
   listener, its status pipe and whatever the program had opened before
   ``serve_processes``. It asks for SIGTERM if the supervisor dies.
2. ``factory(sock)`` builds the server. The application is imported here
   (after the fork), so a reload's new children run the code on disk now.
   A SIGTERM meanwhile ends the child at once: it has accepted nothing.
3. Its own stop signals are caught from here on (written to a wake-up
   pipe, acted on by the main loop: never in a handler), then the server
   starts and the child reports ``ready``; a stop asked for in between is
   served gracefully once it runs.
4. On SIGTERM it stops: the engine drains the kernel queue, lets go of the
   listener at once (the supervisor's reference keeps it listening for the
   other children), answers what it accepted, then exits, after reporting
   its final stats.

Exit statuses: ``EXIT_OK``, ``EXIT_TIMED_OUT`` (handlers were still running
at the graceful timeout), ``EXIT_START_FAILED`` (the factory or ``start()``
raised, after an ``error`` line), ``EXIT_ACCEPT_FAILED`` (the accept loop
stopped on an error), ``EXIT_INTERNAL``.
"""
from __future__ import annotations

import errno
import logging
import os
import resource
import select
import signal
import socket
import sys
import threading
from typing import Any, Callable, Dict, Iterable, Optional

from fastaccept.server import Server
from fastaccept.supervise import reload, wakeup

__all__ = ["Factory", "STOP_SIGNALS", "EXIT_OK", "EXIT_TIMED_OUT", "EXIT_START_FAILED",
           "EXIT_ACCEPT_FAILED", "EXIT_INTERNAL", "serve", "child_main", "build"]

log = logging.getLogger("fastaccept")

#: factory(sock) -> a Server (or WSGIServer, or a subclass) serving ``sock``
Factory = Callable[[socket.socket], Server]
#: What stops a serving process gracefully.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
EXIT_OK = 0
EXIT_TIMED_OUT = 1
EXIT_START_FAILED = 3
EXIT_ACCEPT_FAILED = 4
EXIT_INTERNAL = 70
#: How often the main loop looks at the server and the supervisor without a signal.
POLL_INTERVAL_S = 0.5
PR_SET_PDEATHSIG = 1


def build(factory: Factory, sock: socket.socket, *, shared: bool) -> Server:
    """factory(sock), checked: a Server on ``sock``. ``shared``: the listener
    is shared with other processes (EPOLLEXCLUSIVE)."""
    server = factory(sock)
    if not isinstance(server, Server):
        raise TypeError(f"the factory must return a fastaccept Server, got "
                        f"{type(server).__name__}")
    if server.socket is not sock:
        raise ValueError("the factory must build its server on the socket it is given "
                         "(sock=sock)")
    if shared:
        # A listener other processes accept from too: one wakes per connection.
        server._shared_listener = True
    return server


def serve(server: Server, *, graceful_timeout: float,
          ready: Optional[Callable[[Server], None]] = None,
          supervisor: Optional[int] = None, poll_interval: float = POLL_INTERVAL_S) -> bool:
    """Start ``server`` and serve until SIGTERM or SIGINT, then shut it down
    within ``graceful_timeout`` seconds; return shutdown()'s result.

    Main thread only. The stop signals are caught for the call (written to a
    wake-up pipe and acted on here, in the loop) and put back as they were.
    ``ready(server)`` runs once the server runs. The loop also ends when the
    server stops by itself (a handler called ``shutdown()``, or the accept
    loop failed: that ``OSError`` is raised after the shutdown) or, given
    ``supervisor``'s pid, when that process is no longer the parent."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve() catches SIGTERM and SIGINT: call it in the main thread")
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, wakeup.ignore) for sig in STOP_SIGNALS}
    try:
        server.start()
        if ready is not None:
            try:
                ready(server)
            except BaseException:
                server.shutdown(timeout=graceful_timeout)
                raise
        while True:
            readable, _, _ = select.select([wake_r], [], [], poll_interval)
            stops = STOP_SIGNALS & set(wakeup.signals_written(wake_r)) if readable else set()
            if stops:
                log.info("received %s: stopping", signal.Signals(min(stops)).name)
                break
            if server._stop_requested.is_set():
                break       # the accept loop failed, or a handler asked for a stop
            if supervisor is not None and os.getppid() != supervisor:
                log.warning("the supervisor (pid %d) is gone: stopping", supervisor)
                break
            server.service_actions()
        finished = server.shutdown(timeout=graceful_timeout)
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)
    if not finished:
        log.warning("handlers still running %g s after the stop began: exiting without them",
                    graceful_timeout)
    error = server._accept_error
    if error is not None:
        raise error
    return finished


def _die_with(supervisor: int) -> bool:
    """Ask for SIGTERM when the supervisor dies; False if it already has."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass        # the main loop's getppid() check remains
    return os.getppid() == supervisor


def _report(fd: int, kind: str, value: Any) -> None:
    """Write one status line; a supervisor that is gone is not an error."""
    data = reload.encode(kind, value)
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as e:
        if e.errno not in (errno.EPIPE, errno.EBADF):
            raise


def _exit_stats(server: Server) -> Dict[str, Any]:
    """The final stats worth reporting (JSON-ready)."""
    return {k: v for k, v in server.stats().items()
            if isinstance(v, (int, float, dict)) and not isinstance(v, bool)}


def child_main(factory: Factory, sock: socket.socket, status_fd: int, *,
               close: Callable[[], None], supervisor: int, graceful_timeout: float,
               signals: Iterable[int], mask: Iterable[int],
               on_start: Optional[Callable[[Server], None]] = None) -> int:
    """Run a forked child (see the module's docstring); return its exit status.

    ``signals``: the supervisor's handled signals, put back to their
    defaults; ``mask``: the signal mask to restore (the supervisor blocks
    its signals around fork()); ``close()`` closes the supervisor's
    descriptors this child must not hold. ``on_start(server)`` runs once
    the server runs."""
    for sig in signals:
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    close()
    signal.pthread_sigmask(signal.SIG_SETMASK, set(mask))
    if not _die_with(supervisor):
        return EXIT_OK      # orphaned before it began: nobody to serve for
    try:
        server = build(factory, sock, shared=True)
    except BaseException as e:
        log.exception("the server factory raised in child %d", os.getpid())
        _report(status_fd, reload.ERROR, f"{type(e).__name__}: {e}")
        return EXIT_START_FAILED

    started = False

    def ready(server: Server) -> None:
        nonlocal started
        started = True
        _report(status_fd, reload.READY, {
            "max_connections": server._max_connections,
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]})
        if on_start is not None:
            on_start(server)

    try:
        finished = serve(server, graceful_timeout=graceful_timeout, ready=ready,
                         supervisor=supervisor)
    except BaseException as e:
        if not started:
            log.exception("the server did not start in child %d", os.getpid())
            _report(status_fd, reload.ERROR, f"{type(e).__name__}: {e}")
            return EXIT_START_FAILED
        if not isinstance(e, OSError):
            raise
        log.error("child %d: the accept loop stopped: %s", os.getpid(), e)
        _report(status_fd, reload.EXIT, _exit_stats(server))
        return EXIT_ACCEPT_FAILED
    _report(status_fd, reload.EXIT, _exit_stats(server))
    return EXIT_OK if finished else EXIT_TIMED_OUT


def flush_stdio() -> None:
    """Flush Python's stdout and stderr (before fork(), and before os._exit())."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass

"""``Supervisor``: several serving processes on one port, kept alive and reloaded.

The supervisor binds (or inherits) the listening socket(s), then forks one
child per slot before any server exists: the children build and start their
servers themselves (``child``), so nothing the parent ran leaks into them
and a reload's children import the application afresh. The supervisor
stays single-threaded (fork() in a threaded process copies one thread and
whatever locks the others held) and does its work in one loop:

    select() on a wake-up pipe (signal.set_wakeup_fd: every signal it handles
    writes its number there; no work is done in a handler) and on each
    child's status pipe (``reload``'s protocol), with a timeout for the next
    deadline; then reap the children that exited (waitpid, per child: a
    program's other children are not ours to reap); then the deadlines:
    SIGKILL for a child past its graceful timeout, the respawns due.

Signals:

    SIGTERM, SIGINT   stop: every child drains, answers what it accepted and
                      exits within ``graceful_timeout`` (then SIGKILL); exit 0
    SIGHUP            reload: a new generation starts next to the serving one,
                      which stops once every new child is ready (``reload``)
    SIGTTIN, SIGTTOU  one child more, one child less (never below one)
    SIGCHLD           reap

A child that exits unasked for is replaced at once. One that exits before
it is ready, or within ``min_uptime`` of it, failed to start: its
replacement waits ``backoff`` seconds, doubling with each failure in a row
up to ``max_backoff``; after ``max_start_failures`` in a row the supervisor
gives up, stops the rest and exits with status ``EXIT_GAVE_UP``.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from fastaccept import _fork, _options
from fastaccept._options import (DEFAULT_BACKLOG, DEFAULT_BACKOFF, DEFAULT_GRACEFUL_TIMEOUT,
                                 DEFAULT_MAX_BACKOFF, DEFAULT_MAX_START_FAILURES,
                                 DEFAULT_MIN_UPTIME, MAX_PROCESSES)
from fastaccept.server import Server
from fastaccept.supervise import checks, child, listeners, reload, wakeup
from fastaccept.supervise.reload import Child, Generations, Slot

__all__ = ["Supervisor", "EXIT_GAVE_UP", "HANDLED_SIGNALS", "Event"]

log = logging.getLogger("fastaccept")

#: The supervisor's exit status when its children keep failing to start.
EXIT_GAVE_UP = 3
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGCHLD)
#: Longest select() between two looks at the children (a lost SIGCHLD costs no more).
MAX_WAIT_S = 1.0
#: on_event's argument: {"event": name, ...what it is about}
Event = Dict[str, Any]


def _exit_code(status: int) -> int:
    """A waitpid() status as an exit code, or minus the signal that killed it."""
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return -1


def _describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def sum_stats(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The sum of several stats dicts: numbers added, dicts added by key."""
    total: Dict[str, Any] = {}
    for rec in records:
        for key, value in rec.items():
            if isinstance(value, dict):
                inner = total.setdefault(key, {})
                if isinstance(inner, dict):
                    for k, v in value.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            inner[k] = inner.get(k, 0) + v
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


class Supervisor:
    """Serve ``factory(sock)`` in ``processes`` processes (see the module's docstring).

    The constructor takes the listening socket(s): ``sock`` (a listening
    socket), ``fd`` (an inherited descriptor), systemd's ``LISTEN_FDS`` when
    ``systemd`` is true and they are set for this process, or else it binds
    (host, port) with ``backlog``, by the ``listener`` layout ("shared" or
    "reuseport"; by default ``listeners.DEFAULT_LAYOUT`` with several
    processes, a plain socket with one; an inherited listener is always
    shared). ``address`` is then known. ``run()`` serves
    until a stop and returns the exit status.

    ``processes=1`` serves in this process, no fork: ``factory(sock)`` here,
    then ``child.serve``; SIGTERM and SIGINT stop it within the graceful
    timeout, and the factory's exceptions propagate from ``run()``.

    ``on_event(event)`` is called in the supervisor (its loop) for what
    happens: "spawned", "ready", "exited", "start_failed", "reload",
    "switched", "reload_failed", "scaled", "stopping", "gave_up", with the
    pids, slots and generations concerned. ``on_start(server)`` is called
    in each serving process once its server runs.
    """

    def __init__(self, factory: child.Factory, *, host: str = "127.0.0.1", port: int = 0,
                 sock: Optional[socket.socket] = None, fd: Optional[int] = None,
                 processes: int = 1, listener: Optional[str] = None,
                 backlog: int = DEFAULT_BACKLOG,
                 graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
                 max_start_failures: int = DEFAULT_MAX_START_FAILURES,
                 backoff: float = DEFAULT_BACKOFF, max_backoff: float = DEFAULT_MAX_BACKOFF,
                 min_uptime: float = DEFAULT_MIN_UPTIME, systemd: bool = True,
                 on_event: Optional[Callable[[Event], None]] = None,
                 on_start: Optional[Callable[[Server], None]] = None) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {type(factory).__name__}")
        self.processes = _options.check_int("processes", processes, 1, MAX_PROCESSES)
        self.graceful_timeout = _options.check_duration("graceful_timeout", graceful_timeout)
        self.max_start_failures = _options.check_int("max_start_failures", max_start_failures,
                                                     1, 1 << 20)
        self.backoff = _options.check_duration("backoff", backoff, 3600.0)
        self.max_backoff = _options.check_duration("max_backoff", max_backoff, 86400.0)
        self.min_uptime = _options.check_duration("min_uptime", min_uptime, 3600.0)
        if listener is not None:
            listeners.check_layout(listener)
        if sock is not None and fd is not None:
            raise ValueError("give sock or fd, not both")
        self._factory = factory
        self._on_event = on_event
        self._on_start = on_start
        self.listeners = self._take_listeners(host, port, sock, fd, systemd, listener, backlog,
                                              self.processes)
        self.address: Any = self.listeners.address
        #: one record per child that exited: pid, slot, generation, code, stats
        self.exits: List[Dict[str, Any]] = []
        #: the single process's final stats (processes=1)
        self.final_stats: Optional[Dict[str, Any]] = None
        self.exit_status = 0
        self.generations = Generations()
        self._children: Dict[int, Child] = {}
        self._stopping = False
        self._reload_pending = False
        self._checked_nofile = False
        self._sel: Optional[selectors.BaseSelector] = None
        self._wake: Optional[List[int]] = None

    @staticmethod
    def _take_listeners(host: str, port: int, sock: Optional[socket.socket], fd: Optional[int],
                        systemd: bool, listener: Optional[str], backlog: int,
                        processes: int) -> listeners.Listeners:
        inherited: Optional[socket.socket] = None
        if sock is not None:
            inherited = sock
        elif fd is not None:
            inherited = listeners.adopt_fd(fd)
        elif systemd:
            socks = listeners.from_systemd()
            if len(socks) > 1:
                for s in socks:
                    s.detach()
                raise ValueError(f"systemd passed {len(socks)} listening sockets (LISTEN_FDS); "
                                 "fastaccept serves one: give the socket unit one Listen "
                                 "line, or pick one with --fd")
            inherited = socks[0] if socks else None
        if inherited is not None:
            if listener == "reuseport":
                raise ValueError("an inherited listener is shared by every process: the "
                                 "reuseport layout needs the supervisor to bind the port "
                                 "itself")
            return listeners.Listeners.adopt(inherited)
        if listener is None:
            # one process binds a plain socket: SO_REUSEPORT would let another
            # program of the same user bind the port too and take a share
            listener = listeners.DEFAULT_LAYOUT if processes > 1 else "shared"
        return listeners.Listeners.bind(host, port, backlog, listener)

    # -- the public surface -------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the exit status (0, or EXIT_GAVE_UP)."""
        if self.processes == 1:
            return self._run_single()
        return self._run_supervisor()

    def children(self) -> Dict[int, Child]:
        """The live children by pid (stopping ones included)."""
        return dict(self._children)

    def totals(self) -> Dict[str, Any]:
        """The final stats summed over every child that reported them (one process: its own)."""
        if self.final_stats is not None:
            return dict(self.final_stats)
        return sum_stats([e["stats"] for e in self.exits if e.get("stats")])

    # -- one process ----------------------------------------------------------

    def _run_single(self) -> int:
        sock = self.listeners.sockets[0]
        try:
            server = child.build(self._factory, sock, shared=False)
        except BaseException:
            self.listeners.close()
            raise
        checks.log_checks([
            checks.backlog_check(sock, self.listeners.backlog),
            checks.nofile_check(server._max_connections),
            checks.migrate_check(listeners.reuses_port(sock))])
        try:
            finished = child.serve(server, graceful_timeout=self.graceful_timeout,
                                   ready=self._on_start)
        except BaseException:
            if server._state in ("new", "closed"):      # start() failed, or it all ended
                self.listeners.close()
            raise
        self.final_stats = server.stats()
        if finished:
            self.listeners.close()     # the server closed it already: a no-op
        return 0

    # -- several processes -------------------------------------------------------

    def _check_can_fork(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("the supervisor handles signals: run it in the main thread")
        try:
            threads = len(os.listdir("/proc/self/task"))
        except OSError:
            threads = threading.active_count()
        if threads > 1:
            names = ", ".join(t.name for t in threading.enumerate()
                              if t is not threading.main_thread()) or "not Python threads"
            raise RuntimeError(f"the supervisor forks its children, and {threads} threads run "
                               f"in this process ({names}): call serve_processes() before "
                               "starting threads or servers")
        started = [s for s in list(_fork._started) if s._state in ("running", "stopping")]
        if started:
            raise RuntimeError(f"a server already runs in this process ({started[0]!r}): "
                               "the supervisor's children build their servers themselves")

    def _run_supervisor(self) -> int:
        try:
            self._check_can_fork()
        except BaseException:
            self.listeners.close()
            raise
        sel = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel, self._wake = sel, [wake_r, wake_w]
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        previous = {sig: signal.signal(sig, wakeup.ignore) for sig in HANDLED_SIGNALS}
        previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        sel.register(wake_r, selectors.EVENT_READ, None)
        try:
            first = self.listeners.sockets[0]
            reuseport = self.listeners.layout == "reuseport"
            checks.log_checks([
                checks.backlog_check(first, self.listeners.backlog,
                                     self.processes if reuseport else 1, self.processes),
                checks.migrate_check(reuseport or listeners.reuses_port(first))])
            log.info("supervisor %d: %d processes on %s (%s listener%s), graceful timeout %g s",
                     os.getpid(), self.processes, self.address, self.listeners.layout,
                     ", inherited" if self.listeners.inherited else "", self.graceful_timeout)
            for _ in range(self.processes):
                self._add_slot()
            self._loop(wake_r)
        finally:
            self._kill_all()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sel.close()
            os.close(wake_r)
            os.close(wake_w)
            self._sel = self._wake = None
            self.listeners.close()
        log.info("supervisor %d: stopped (exit status %d)", os.getpid(), self.exit_status)
        return self.exit_status

    def _loop(self, wake_r: int) -> None:
        assert self._sel is not None
        while not (self._stopping and not self._children):
            for key, _ in self._sel.select(self._next_wait()):
                if key.data is None:
                    for sig in wakeup.signals_written(wake_r):
                        self._on_signal(sig)
                else:
                    self._read_status(key.data)
            self._reap()
            self._deadlines()

    def _next_wait(self) -> float:
        now = time.monotonic()
        due = [c.kill_at for c in self._children.values() if c.kill_at and not c.killed]
        due += [s.respawn_at for s in self.generations.slots if s.respawn_at is not None]
        if not due:
            return MAX_WAIT_S
        return max(0.0, min(MAX_WAIT_S, min(due) - now))

    def _event(self, kind: str, **info: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event({"event": kind, **info})
        except Exception:
            log.exception("on_event raised for %s", kind)

    # -- signals --------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return          # the loop reaps after every wake-up
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._begin_stop(f"received {signal.Signals(sig).name}")
        elif sig == signal.SIGHUP:
            self._reload()
        elif sig == signal.SIGTTIN:
            self._scale(+1)
        elif sig == signal.SIGTTOU:
            self._scale(-1)

    # -- children ---------------------------------------------------------------

    def _spawn(self, slot: Slot, generation: int) -> Optional[Child]:
        """Fork a child for slot; None if fork() failed (counted as a start failure)."""
        assert self._sel is not None and self._wake is not None
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        child.flush_stdio()         # or the child would write the parent's buffer again
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(status_r)
            os.close(status_w)
            log.error("fork() failed for slot %d: %s", slot.index, e)
            self._start_failed(slot, f"fork() failed: {e}")
            return None
        if pid == 0:
            self._in_child(slot, status_r, status_w, blocked)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(status_w)
        os.set_blocking(status_r, False)
        c = Child(pid, slot, generation, status_r, time.monotonic())
        self._children[pid] = c
        self._sel.register(status_r, selectors.EVENT_READ, c)
        log.info("%s started", c.describe())
        self._event("spawned", pid=pid, slot=slot.index, generation=generation)
        return c

    def _in_child(self, slot: Slot, status_r: int, status_w: int, mask: Any) -> None:
        """The forked child: never returns."""
        code = child.EXIT_INTERNAL
        try:
            assert self._sel is not None and self._wake is not None
            fds = [status_r, *self._wake, *(c.status_fd for c in self._children.values()
                                             if c.status_fd >= 0)]
            others = [s for s in self.listeners.sockets if s is not slot.sock]

            def close_supervisors() -> None:
                for s in others:
                    s.close()
                assert self._sel is not None
                self._sel.close()
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            code = child.child_main(self._factory, slot.sock, status_w,
                                    close=close_supervisors, supervisor=os.getppid(),
                                    graceful_timeout=self.graceful_timeout,
                                    signals=HANDLED_SIGNALS, mask=mask,
                                    on_start=self._on_start)
        except BaseException:
            try:
                log.exception("child %d failed", os.getpid())
            except BaseException:
                pass
        finally:
            child.flush_stdio()
            os._exit(code)

    def _stop(self, c: Child) -> None:
        """Ask a child to stop (SIGTERM); SIGKILL is due after the graceful timeout."""
        if c.state == "stopping":
            return
        c.state = "stopping"
        c.kill_at = time.monotonic() + self.graceful_timeout
        try:
            os.kill(c.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _kill_all(self) -> None:
        """SIGKILL and reap every child left (the loop ended on an error)."""
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid, c in list(self._children.items()):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self._close_status(c)
            del self._children[pid]

    def _close_status(self, c: Child) -> None:
        if c.status_fd < 0:
            return
        if self._sel is not None:
            try:
                self._sel.unregister(c.status_fd)
            except (KeyError, ValueError):
                pass
        os.close(c.status_fd)
        c.status_fd = -1

    def _read_status(self, c: Child) -> None:
        """Read what a child wrote on its status pipe and act on it."""
        while c.status_fd >= 0:
            try:
                data = os.read(c.status_fd, 65536)
            except BlockingIOError:
                return
            if not data:
                self._close_status(c)
                return
            for kind, value in c.reader.feed(data):
                self._on_status(c, kind, value)

    def _on_status(self, c: Child, kind: str, value: Any) -> None:
        if kind == reload.ERROR:
            c.error = str(value)
        elif kind == reload.EXIT:
            c.stats = value if isinstance(value, dict) else None
        elif kind == reload.READY:
            c.info = value if isinstance(value, dict) else {}
            c.ready_at = time.monotonic()
            if c.state == "starting":
                c.state = "ready"
            log.info("%s ready", c.describe())
            self._event("ready", pid=c.pid, slot=c.slot.index, generation=c.generation)
            if not self._checked_nofile and "max_connections" in c.info:
                self._checked_nofile = True
                checks.log_checks([checks.nofile_check(
                    int(c.info["max_connections"]), self.processes,
                    nofile=int(c.info.get("nofile", 0)) or None)])
            if self.generations.switch_due() and not self._stopping:
                self._switch()

    def _reap(self) -> None:
        for pid, c in list(self._children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self._read_status(c)        # what it wrote before it exited
                self._close_status(c)
                del self._children[pid]
                self._exited(c, _exit_code(status))

    def _exited(self, c: Child, code: int) -> None:
        now = time.monotonic()
        role = self.generations.detach(c)
        expected = c.state == "stopping" or self._stopping
        self.exits.append({"pid": c.pid, "slot": c.slot.index, "generation": c.generation,
                           "code": code, "stats": c.stats, "expected": expected})
        how = _describe_status(code)
        if expected:
            level = logging.INFO if code in (0, -signal.SIGTERM) else logging.WARNING
            log.log(level, "%s exited (%s)", c.describe(), how)
        else:
            log.warning("%s exited unexpectedly (%s)%s", c.describe(), how,
                        f": {c.error}" if c.error else "")
        self._event("exited", pid=c.pid, slot=c.slot.index, generation=c.generation,
                    code=code, expected=expected, stats=c.stats, error=c.error)
        if self._stopping or expected:
            return
        slot = c.slot
        if role == "next":
            self._abort_reload(f"{c.describe()} exited before the switch ({how})"
                               f"{': ' + c.error if c.error else ''}")
        elif role == "current":
            if c.ready_at is None or now - c.ready_at < self.min_uptime:
                reason = c.error or how
                if c.ready_at is not None:
                    reason += f", {now - c.ready_at:.2f} s after it was ready"
                self._start_failed(slot, reason)
            else:
                slot.failures = 0
                slot.respawn_at = now

    def _start_failed(self, slot: Slot, reason: str) -> None:
        """A child of slot failed to start: back off, or give up."""
        slot.failures += 1
        if slot.failures >= self.max_start_failures:
            log.error("children failed to start %d times in a row (last: %s): giving up",
                      slot.failures, reason)
            self._event("gave_up", slot=slot.index, failures=slot.failures, error=reason)
            self.exit_status = EXIT_GAVE_UP
            self._begin_stop("giving up")
            return
        delay = min(self.max_backoff, self.backoff * 2 ** (slot.failures - 1))
        slot.respawn_at = time.monotonic() + delay
        log.warning("slot %d: start failure %d of %d in a row (%s); next try in %.2f s",
                    slot.index, slot.failures, self.max_start_failures, reason, delay)
        self._event("start_failed", slot=slot.index, failures=slot.failures, error=reason,
                    retry_in=delay)

    def _deadlines(self) -> None:
        now = time.monotonic()
        for c in list(self._children.values()):
            if c.kill_at is not None and not c.killed and now >= c.kill_at:
                c.killed = True
                log.warning("%s did not stop within %g s: SIGKILL", c.describe(),
                            self.graceful_timeout)
                try:
                    os.kill(c.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._stopping:
            return
        for slot in list(self.generations.slots):
            if slot.respawn_at is not None and now >= slot.respawn_at:
                slot.respawn_at = None
                if slot.current is None:
                    slot.current = self._spawn(slot, self.generations.serving)

    # -- slots, reloads, the stop ------------------------------------------------------

    def _add_slot(self) -> Slot:
        gens = self.generations
        slot = Slot(len(gens.slots), self.listeners.open_slot())
        gens.slots.append(slot)
        if gens.reloading is not None:
            slot.next = self._spawn(slot, gens.reloading)
        else:
            slot.current = self._spawn(slot, gens.serving)
        return slot

    def _scale(self, delta: int) -> None:
        if self._stopping:
            return
        gens = self.generations
        before = len(gens.slots)
        if delta > 0:
            if before >= MAX_PROCESSES:
                log.warning("SIGTTIN: already %d processes, the most there may be", before)
                return
            self._add_slot()
        else:
            if before <= 1:
                log.warning("SIGTTOU: one process left: it stays")
                return
            slot = gens.slots.pop()
            slot.respawn_at = None
            # the child keeps its own reference until it has drained its queue
            self.listeners.close_slot(slot.sock)
            for c in slot.children():
                self._stop(c)
            if gens.switch_due():
                self._switch()
        self.processes = len(gens.slots)
        log.info("processes: %d -> %d", before, self.processes)
        self._event("scaled", processes=self.processes)

    def _reload(self) -> None:
        if self._stopping:
            return
        gens = self.generations
        if gens.reloading is not None:
            self._reload_pending = True
            log.info("SIGHUP: a reload is in progress (generation %d); another follows it",
                     gens.reloading)
            return
        generation = gens.begin()
        log.info("reload: starting generation %d (%d processes)", generation, len(gens.slots))
        self._event("reload", generation=generation)
        for slot in gens.slots:
            slot.next = self._spawn(slot, generation)
            if slot.next is None:
                self._abort_reload("fork() failed")
                return

    def _switch(self) -> None:
        gens = self.generations
        old = gens.switch()
        for c in old:
            self._stop(c)
        log.info("reload: generation %d serving (pids %s); stopping %s", gens.serving,
                 ", ".join(str(s.current.pid) for s in gens.slots if s.current),
                 ", ".join(str(c.pid) for c in old) or "nothing")
        self._event("switched", generation=gens.serving,
                    pids=[s.current.pid for s in gens.slots if s.current],
                    stopping=[c.pid for c in old])
        self._next_reload()

    def _abort_reload(self, reason: str) -> None:
        gens = self.generations
        generation = gens.reloading
        for c in gens.abort():
            self._stop(c)
        log.error("reload to generation %s failed: %s; generation %d goes on serving",
                  generation, reason, gens.serving)
        self._event("reload_failed", generation=generation, error=reason)
        now = time.monotonic()
        for slot in gens.slots:
            if slot.current is None and slot.respawn_at is None:
                slot.respawn_at = now
        self._next_reload()

    def _next_reload(self) -> None:
        if self._reload_pending:
            self._reload_pending = False
            self._reload()

    def _begin_stop(self, why: str) -> None:
        if self._stopping:
            log.info("%s: already stopping", why)
            return
        self._stopping = True
        log.info("%s: stopping %d children (graceful timeout %g s)", why, len(self._children),
                 self.graceful_timeout)
        self._event("stopping", reason=why, pids=sorted(self._children))
        # Our references go first: once the last child has drained and let go
        # of a listener, it closes, and later clients are refused, not queued.
        self.listeners.close()
        for slot in self.generations.slots:
            slot.respawn_at = None
        for c in list(self._children.values()):
            self._stop(c)

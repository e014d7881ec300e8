"""Zero-drop generations: what a child tells its supervisor, and the reload's bookkeeping.

A supervisor runs one child per slot; every slot has its listening socket
(``listeners``). A reload (SIGHUP) starts a new generation: one more child
per slot, on the slot's own socket, next to the one serving it. Only once
every child of the new generation has reported that its server runs are
the old ones told to stop (SIGTERM: each drains what it accepted, answers
its last requests and exits); until then both accept from the same
sockets, so no connection finds nobody to take it. If a child of the new
generation exits before the switch, the reload is abandoned: its other
children are stopped and the old generation goes on serving.

The status protocol: each child holds the write end of a pipe whose read
end is its supervisor's, and writes JSON lines on it (``encode``):

    {"ready": {...}}    its server runs (``start()`` returned); what the
                        supervisor's checks need (max_connections, ulimit -n)
    {"error": "..."}    it could not start: the factory or ``start()`` raised
    {"exit": {...}}     it stopped gracefully: its server's final stats

and then exits; the pipe's EOF and the exit status follow.
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["READY", "ERROR", "EXIT", "encode", "StatusReader", "Child", "Slot", "Generations"]

READY, ERROR, EXIT = "ready", "error", "exit"
#: A status line longer than this is garbage: dropped.
MAX_LINE = 1 << 20


def encode(kind: str, value: Any) -> bytes:
    """One status line."""
    return json.dumps({kind: value}, separators=(",", ":")).encode() + b"\n"


class StatusReader:
    """Split the bytes read from a status pipe into (kind, value) messages."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> List[Tuple[str, Any]]:
        """The complete messages ``data`` finishes (bad lines are skipped)."""
        self._buf += data
        out: List[Tuple[str, Any]] = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and len(message) == 1:
                ((kind, value),) = message.items()
                out.append((str(kind), value))
        if len(self._buf) > MAX_LINE:
            self._buf = b""
        return out


@dataclass(eq=False)
class Child:
    """One child process, as its supervisor sees it.

    ``state``: "starting" (forked, not ready yet), "ready" (its server
    runs), "stopping" (told to stop: SIGTERM sent, SIGKILL due at
    ``kill_at``)."""

    pid: int
    slot: "Slot"
    generation: int
    status_fd: int
    spawned_at: float
    state: str = "starting"
    ready_at: Optional[float] = None
    kill_at: Optional[float] = None
    killed: bool = False
    error: Optional[str] = None
    info: Dict[str, Any] = field(default_factory=dict)
    stats: Optional[Dict[str, Any]] = None
    reader: StatusReader = field(default_factory=StatusReader)

    def describe(self) -> str:
        """How the log names it."""
        return f"child {self.pid} (slot {self.slot.index}, generation {self.generation})"


@dataclass(eq=False)
class Slot:
    """A place for one serving child, with its listening socket.

    ``current`` serves it (or is starting to); ``next`` is the child of a
    reload in progress. ``failures`` counts the start failures in a row of
    its children, and ``respawn_at`` is when the next one is due (back-off)."""

    index: int
    sock: socket.socket
    current: Optional[Child] = None
    next: Optional[Child] = None
    failures: int = 0
    respawn_at: Optional[float] = None

    def children(self) -> List[Child]:
        """The children attached to this slot."""
        return [c for c in (self.current, self.next) if c is not None]


class Generations:
    """The slots, the generation they serve and the reload in progress.

    Pure bookkeeping (no process is touched here): the supervisor asks what
    to do and does it."""

    def __init__(self) -> None:
        self.slots: List[Slot] = []
        #: the generation the ``current`` children belong to
        self.serving = 1
        #: the generation a reload is starting, or None
        self.reloading: Optional[int] = None
        self._last = 1

    def begin(self) -> int:
        """Start a reload: the number of its generation."""
        assert self.reloading is None, "a reload is already in progress"
        self._last += 1
        self.reloading = self._last
        return self._last

    def target(self) -> int:
        """The generation a child started now belongs to."""
        return self.reloading if self.reloading is not None else self.serving

    def switch_due(self) -> bool:
        """Whether the reload in progress can switch: every slot's new child is ready."""
        return self.reloading is not None and all(
            s.next is not None and s.next.state == "ready" for s in self.slots)

    def switch(self) -> List[Child]:
        """Make the new children current; return the old ones, to be stopped."""
        assert self.reloading is not None
        old: List[Child] = []
        for slot in self.slots:
            if slot.current is not None:
                old.append(slot.current)
            slot.current, slot.next = slot.next, None
            slot.failures = 0
            slot.respawn_at = None
        self.serving, self.reloading = self.reloading, None
        return old

    def abort(self) -> List[Child]:
        """Abandon the reload in progress; return its children, to be stopped."""
        new: List[Child] = []
        for slot in self.slots:
            if slot.next is not None:
                new.append(slot.next)
                slot.next = None
        self.reloading = None
        return new

    def detach(self, child: Child) -> str:
        """Take a child that exited off its slot: "current" if it was
        serving it, "next" if it was a reload's new child, else "gone"
        (it had been told to stop, or its slot was removed)."""
        slot = child.slot
        if slot.current is child:
            slot.current = None
            return "current"
        if slot.next is child:
            slot.next = None
            return "next"
        return "gone"

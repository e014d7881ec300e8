"""Signals taken through a wake-up pipe (``signal.set_wakeup_fd``), by the
supervisor's loop and by a child's: the Python-level handler does nothing,
the loop reads which signals came from the pipe and acts on them there."""
from __future__ import annotations

import os
from typing import Any, List

__all__ = ["ignore", "signals_written"]


def ignore(signum: int, frame: Any) -> None:
    """The Python-level handler of a signal acted on through the wake-up pipe."""


def signals_written(fd: int) -> List[int]:
    """The signal numbers a nonblocking wake-up pipe holds, in order, repeats kept."""
    got: List[int] = []
    while True:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return got
        if not data:
            return got
        got.extend(data)

"""The HTTP server's access log: one line per request, off by default.

Common log format, then the time the server took, from a worker taking the
request to the end of its response, in microseconds::

    127.0.0.1 - - [01/Dec/2026:17:58:03 +0000] "GET /path?q=1 HTTP/1.1" 200 2 118

Written to stderr ("-"), a file (a path, appended to), any text stream, or
a ``logging.Logger`` (at INFO).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Dict, Optional, TextIO, Union

__all__ = ["AccessLog", "open_log"]

Target = Union[None, str, TextIO, logging.Logger]


class AccessLog:
    """Formats and writes access log lines; safe from every worker at once."""

    def __init__(self, stream: Optional[TextIO] = None, logger: Optional[logging.Logger] = None,
                 owned: bool = False) -> None:
        self._stream = stream
        self._logger = logger
        self._owned = owned
        self._lock = threading.Lock()

    @staticmethod
    def line(env: Dict[str, Any], status: int, sent: int, ns: int) -> str:
        """One access log line (without the newline)."""
        query = env.get("QUERY_STRING")
        target = env.get("PATH_INFO", "") + ("?" + query if query else "")
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime())
        return (f'{env.get("REMOTE_ADDR") or "-"} - - [{when}] "{env.get("REQUEST_METHOD")} '
                f'{target} {env.get("SERVER_PROTOCOL")}" {status or "-"} {sent or "-"} '
                f'{ns // 1000}')

    def write(self, env: Dict[str, Any], status: int, sent: int, ns: int) -> None:
        """Log one request: its environ, status, body bytes sent, nanoseconds taken."""
        text = self.line(env, status, sent, ns)
        if self._logger is not None:
            self._logger.info("%s", text)
            return
        assert self._stream is not None
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Close a log file this opened."""
        if self._owned and self._stream is not None:
            self._stream.close()


def open_log(target: Target) -> Optional[AccessLog]:
    """The access log for ``target``: None (off), "-" (stderr), a path, a
    text stream or a logger. Raises OSError naming the path it cannot open."""
    if target is None:
        return None
    if isinstance(target, logging.Logger):
        return AccessLog(logger=target)
    if target == "-":
        return AccessLog(stream=sys.stderr)
    if isinstance(target, str):
        return AccessLog(stream=open(target, "a", encoding="utf-8"), owned=True)
    if hasattr(target, "write"):
        return AccessLog(stream=target)
    raise TypeError(f"access_log must be None, '-', a path, a text stream or a logger, "
                    f"got {type(target).__name__}")

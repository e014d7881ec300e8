"""One request's body (``wsgi.input``) and what its connection does after.

The accept loop hands a worker the request head, parsed, with every byte it
had read past it (``Request.rest``): the start of the body, maybe the next
pipelined request. ``Body`` reads the body from those bytes first, then from
the socket: exactly Content-Length bytes, or a chunked body decoded in C
(``ChunkedDecoder``), or nothing. Once the response is out, what is left of
the body is read and dropped (up to ``DRAIN_MAX`` bytes; beyond, the
connection is closed instead), and the bytes after the body go back to the
accept loop with the connection, which parses them first.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Optional

from fastaccept._core import ChunkedDecoder, HTTPError, recv_some

__all__ = ["Body", "DRAIN_MAX", "READ_SIZE"]

#: Most bytes of a body the application left unread that the server reads
#: and drops to keep the connection; a larger rest closes it instead.
DRAIN_MAX = 65536
#: Bytes asked of the socket per read.
READ_SIZE = 65536


class Body:
    """``wsgi.input``: the request body, read as the application asks.

    ``read``, ``readline``, ``readlines`` and iteration, as PEP 3333 asks;
    reading past the end returns b"" (``wsgi.input_terminated``). A body
    that breaks its framing (a chunk that is not one, more than
    ``max_body`` bytes chunked, the client gone mid-body) raises ``HTTPError``
    with the status (400, 413) or the socket's OSError; the server then
    closes the connection.
    """

    __slots__ = ("_fd", "_buf", "_left", "_chunked", "_done", "_rest", "_continue",
                 "_sent_continue", "_max_body", "_timeout")

    def __init__(self, fd: int, rest: bytes, content_length: Optional[int],
                 chunked: bool, max_body: int,
                 send_continue: Optional[Callable[[], None]] = None,
                 timeout: Optional[float] = None) -> None:
        self._fd = fd                       # the connection's; the worker owns it
        self._timeout = timeout             # for each wait for bytes
        self._max_body = max_body
        self._continue = send_continue      # Expect: 100-continue, sent on the first read
        self._sent_continue = False
        self._chunked: Optional[ChunkedDecoder] = None
        self._buf = b""                     # body bytes decoded, not yet given out
        self._rest = b""                    # bytes past the body (the next request)
        if chunked:
            self._chunked = ChunkedDecoder(max_body)
            self._left = -1
            self._done = False
            self._feed(rest)
        else:
            length = content_length or 0
            self._left = length
            self._done = length == 0
            if rest:
                take = min(len(rest), length)
                self._buf = rest[:take]
                self._left -= take
                self._rest = rest[take:]
                self._done = self._left == 0

    # -- framing ------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Decode chunked bytes (all of data is consumed or kept as the rest)."""
        assert self._chunked is not None
        out, used, done = self._chunked.feed(data)
        if out:
            self._buf += out
        if done:
            self._done = True
            self._rest = data[used:]

    def _fill(self) -> bool:
        """Read more of the body from the socket; False at its end."""
        if self._done:
            return False
        if self._continue is not None and not self._sent_continue:
            self._sent_continue = True
            self._continue()
        want = READ_SIZE if self._left < 0 else min(READ_SIZE, self._left)
        data = recv_some(self._fd, want, self._timeout)
        if not data:
            raise HTTPError(400, "the client closed the connection before the end of the body")
        if self._chunked is not None:
            self._feed(data)
        else:
            self._buf += data
            self._left -= len(data)
            self._done = self._left == 0
        return True

    # -- PEP 3333 -------------------------------------------------------------

    def read(self, size: Optional[int] = -1) -> bytes:
        """Up to size bytes of the body (all of it for -1 or None)."""
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buf = self._buf, b""
            return data
        while len(self._buf) < size and self._fill():
            pass
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def readline(self, size: Optional[int] = -1) -> bytes:
        """One line of the body, with its b"\\n" (at most size bytes)."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0 or (size is not None and 0 <= size <= len(self._buf)) or not self._fill():
                break
        cut = end + 1 if end >= 0 else len(self._buf)
        if size is not None and 0 <= size < cut:
            cut = size
        data, self._buf = self._buf[:cut], self._buf[cut:]
        return data

    def readlines(self, hint: Optional[int] = -1) -> List[bytes]:
        """The lines of the body (about hint bytes of them, if given)."""
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    # -- after the response -----------------------------------------------------

    @property
    def complete(self) -> bool:
        """True once the whole body was read from the connection."""
        return self._done

    @property
    def unread(self) -> int:
        """Bytes of the body still on the connection (-1: chunked, not known)."""
        return 0 if self._done else self._left

    def drain(self) -> bool:
        """Read and drop what is left of the body, up to DRAIN_MAX bytes.
        True if the connection is at the next request (it may be kept)."""
        if self._done:
            self._buf = b""
            return True
        if 0 <= self._left and self._left + len(self._buf) > DRAIN_MAX:
            return False
        dropped = 0
        try:
            while not self._done:
                dropped += len(self._buf)
                self._buf = b""
                if dropped > DRAIN_MAX or not self._fill():
                    break
        except (OSError, HTTPError):
            return False
        self._buf = b""
        return self._done

    def rest(self) -> bytes:
        """The bytes read past the body: the start of the next request."""
        return self._rest

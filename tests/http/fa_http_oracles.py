"""httptools (llhttp) and h11 as oracles for tests/http: each parses a byte
stream of one request (plus, maybe, its body and a pipelined next request)
into the same plain shape, or returns None where it rejects the input."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import List, Optional, Tuple

import h11
import httptools

Header = Tuple[bytes, bytes]


@dataclass
class Message:
    method: bytes = b""
    target: bytes = b""
    version: str = ""                   # "1.0" or "1.1"
    headers: List[Header] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False              # the body ended (EndOfMessage)
    keep_alive: Optional[bool] = None   # None: this oracle does not say
    upgrade: Optional[bool] = None
    next_target: Optional[bytes] = None  # target of the pipelined request after it


def llhttp(data: bytes) -> Optional[Message]:
    """Parse with httptools' HttpRequestParser (llhttp, its strict defaults)."""
    msgs: List[Message] = []
    in_head = []

    class Proto:
        def on_message_begin(self) -> None:
            msgs.append(Message())
            in_head.append(True)

        def on_url(self, url: bytes) -> None:
            msgs[-1].target += url

        def on_header(self, name: bytes, value: bytes) -> None:
            if in_head[-1]:         # not the trailer fields of a chunked body
                msgs[-1].headers.append((name, value))

        def on_headers_complete(self) -> None:
            in_head[-1] = False
            m = msgs[-1]
            m.method = parser.get_method()
            m.version = parser.get_http_version()
            m.keep_alive = parser.should_keep_alive()
            m.upgrade = parser.should_upgrade()

        def on_body(self, body: bytes) -> None:
            msgs[-1].body += body

        def on_message_complete(self) -> None:
            msgs[-1].complete = True

    parser = httptools.HttpRequestParser(Proto())
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass                        # CONNECT or Upgrade: what follows is not HTTP
    except httptools.HttpParserError:
        return None
    if not msgs or in_head[0]:
        return None                 # no complete head
    if len(msgs) > 1:
        msgs[0].next_target = msgs[1].target
    return msgs[0]


@lru_cache(maxsize=None)
def llhttp_knows_method(method: bytes) -> bool:
    """llhttp accepts only the methods of its built-in table."""
    return llhttp(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n") is not None


def h11_parse(data: bytes) -> Optional[Message]:
    """Parse with h11 as a server. h11 rejects empty lines before the request
    line, which RFC 9112 §2.2 says a server SHOULD skip: strip them first."""
    while data.startswith(b"\r\n"):
        data = data[2:]
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    conn.receive_data(data)
    try:
        event = conn.next_event()
        if not isinstance(event, h11.Request):
            return None
        m = Message(method=event.method, target=event.target,
                    version=event.http_version.decode("ascii"),
                    headers=list(event.headers.raw_items()))
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Data):
                m.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                m.complete = True
                break
            else:
                break               # NEED_DATA: the body has not all arrived
    except h11.RemoteProtocolError:
        return None
    if m.complete:
        state = conn.their_state
        m.upgrade = state is h11.MIGHT_SWITCH_PROTOCOL
        m.keep_alive = state is h11.DONE
        rest = conn.trailing_data[0]
        if rest:
            line = rest.split(b"\r\n", 1)[0].split(b" ")
            m.next_target = line[1] if len(line) > 1 else None
    return m

"""Typed surface of the native benchmark instruments (see _loadgen.pyx)."""
from typing import Any, Dict

MAX_CONNECTIONS: int
MAX_CONCURRENCY: int
MAX_REQUEST: int
MAX_RESPONSE: int
HARVEST_EVERY: int
MAX_REQUESTS_PER_CONNECTION: int
MAX_RESPONSE_LEN: int
MAX_RESPONSE_HEAD: int
FRAMING_EOF: int
FRAMING_FIXED: int
FRAMING_HTTP: int

def load(family: int, ip: str, port: int, scope_id: int, connections: int,
         concurrency: int, timeout_ns: int, request: bytes,
         max_ns: int = 0, requests_per_conn: int = 1, framing: int = 0,
         response_len: int = 0) -> Dict[str, Any]:
    """Run one load; return the raw counters and percentiles (nanoseconds) as a dict."""
    ...

def serve_inline(listen_fd: int, response: bytes, stop_fd: int) -> int:
    """Serve listen_fd from one C epoll loop until stop_fd is readable; return the count served."""
    ...

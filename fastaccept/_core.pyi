"""Typed surface of the fastaccept._core extension."""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from typing_extensions import TypeAlias, disjoint_base

RING_MIN_CAPACITY: int
RING_MAX_CAPACITY: int
DEFAULT_MAX_BATCH: int
DEFAULT_SPIN_US: int
MAX_SPIN_US: int
DEFAULT_NAP_US: int
MAX_NAP_US: int
OVERLOAD_POLICIES: Tuple[str, ...]
MAX_SHED_RESPONSE: int
END_LISTEN_CHOICES: Tuple[str, ...]
DISPATCH_CHOICES: Tuple[str, ...]
DEFAULT_MAX_CONNECTIONS: int
MAX_CONNECTIONS: int
STATS_KEYS: Tuple[str, ...]
HTTP_REJECTED: Tuple[int, ...]

# (fd, peer address as the socket module reports it, CLOCK_MONOTONIC ns at accept)
_Entry: TypeAlias = Tuple[int, Any, int]

def close_fd(fd: int) -> None: ...

@disjoint_base
class Histogram:
    """A latency histogram any thread records into without a lock."""

    def record_ns(self, ns: int) -> None: ...
    def record_since(self, start_ns: int) -> None: ...
    def quantiles_us(self, qs: Sequence[float]) -> Tuple[List[int], int]: ...
    def cumulative(self, bounds_us: Sequence[int]) -> Tuple[List[int], int]: ...

@disjoint_base
class Ring:
    """Bounded lock-free queue of connection entries, fed from Python."""

    def __new__(cls, capacity: int) -> Ring: ...
    @property
    def capacity(self) -> int: ...
    @property
    def high_water(self) -> int: ...
    @property
    def parked(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def __len__(self) -> int: ...
    def push(self, fd: int) -> bool: ...
    def pop(self, timeout: Optional[float] = None) -> Optional[_Entry]: ...
    def close(self) -> None: ...

@disjoint_base
class Acceptor:
    """The GIL-free accept loop over one listening socket and its ring."""

    fd: int
    def __new__(cls, fd: int, ring_size: int = 4096, max_batch: int = 16,
                spin_us: int = 200, overload: str = "queue",
                shed_response: bytes = b"", nap_us: int = 200,
                end_listen: str = "release", dispatch: str = "accept",
                idle_timeout: Optional[float] = None,
                max_connections: int = 10000, http: bool = False,
                max_request_line: int = 8192, max_fields: int = 100,
                max_head: int = 65536, head_timeout: Optional[float] = None,
                max_body: Optional[int] = None, exclusive: bool = False,
                grace: Optional[float] = None, realtime: bool = False,
                proxy: bool = False, proxy_timeout: Optional[float] = None) -> Acceptor: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_batch(self) -> int: ...
    @property
    def spin_us(self) -> int: ...
    @property
    def nap_us(self) -> int: ...
    @property
    def overload(self) -> str: ...
    @property
    def dispatch(self) -> str: ...
    @property
    def idle_timeout(self) -> Optional[float]: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def proxy(self) -> bool: ...
    @property
    def proxy_timeout(self) -> Optional[float]: ...
    @property
    def end_listen(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def run(self) -> None: ...
    def stop(self) -> None: ...
    def abort(self, keep_listening: bool = False) -> None: ...
    def pop_entry(self, timeout: Optional[float] = None
                  ) -> Optional[Tuple[int, Any, Optional[Request]]]: ...
    def pop(self, timeout: Optional[float] = None) -> Optional[_Entry]: ...
    def finish(self, fd: int) -> None: ...
    def keep(self, fd: int, rest: Optional[bytes] = None) -> bool: ...
    def stats(self) -> Dict[str, Union[int, Dict[str, int]]]: ...
    def queue_wait_histogram(self, bounds_us: Sequence[int]) -> Tuple[List[int], int]: ...
    def discard(self) -> int: ...
    def close_inherited(self) -> int: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------
# HTTP/1.1 request heads, chunked bodies and percent-decoding (src/fa_http.h)

HTTP_DEFAULT_MAX_REQUEST_LINE: int
HTTP_DEFAULT_MAX_FIELDS: int
HTTP_DEFAULT_MAX_HEAD: int
HTTP_MAX_LIMIT: int
HTTP_MAX_FIELDS_LIMIT: int
HTTP_MAX_CHUNK_LINE: int
HTTP_MAX_TRAILER: int
HTTP_MAX_BODY_LIMIT: int

# The dict of a parsed head: method, target, path, query (str; path is the
# target up to the first "?", query what follows it, so for absolute-form the
# path still holds the scheme and authority, and for "*" or authority-form it
# is the whole target); version
# ("HTTP/1.0" or "HTTP/1.1"); headers (list of (name, value) bytes in order,
# values without the whitespace around them); content_length (int or None);
# chunked, keep_alive, expect_continue, upgrade (bool).
_RequestHead: TypeAlias = Dict[str, Any]
# (head_len, head) when complete; (0, None) when more bytes are needed;
# (-status, None) when rejected: -400, -414, -431, -501 or -505.
_HeadResult: TypeAlias = Tuple[int, Optional[_RequestHead]]

class HTTPError(ValueError):
    """Malformed or oversized HTTP input; ``status`` is the status to answer."""

    status: int
    def __init__(self, status: int, message: Optional[str] = None) -> None: ...

def parse_request_head(data: bytes, max_request_line: int = 8192, max_fields: int = 100,
                       max_head: int = 65536) -> _HeadResult:
    """Parse the request head at the start of data, strictly (RFC 9112).

    Returns (head_len, head) when the head is complete (head_len counts any
    leading empty lines and the final CRLFCRLF; what follows is the body or
    the next request), (0, None) when more bytes are needed, or
    (-status, None) when the request must be answered with that status and
    the connection closed. max_request_line bounds the request line without
    its CRLF (414), max_fields the field lines (431), max_head the whole head
    (431). Raises TypeError for data that is not bytes-like and TypeError or
    ValueError, naming the argument, for a bad limit."""
    ...

@disjoint_base
class HeadParser:
    """A request head fed as it arrives: the parser resumes where it stopped,
    so a head fed a byte at a time costs O(n) in all."""

    def __new__(cls, max_request_line: int = 8192, max_fields: int = 100,
                max_head: int = 65536) -> HeadParser: ...
    def feed(self, data: bytes) -> _HeadResult:
        """Append data and parse everything fed so far, as parse_request_head
        would; offsets count from the first byte fed. Once the result is
        final (complete or rejected) it is returned again and data ignored."""
        ...
    @property
    def buffered(self) -> bytes:
        """Every byte fed so far."""
        ...
    @property
    def scanned(self) -> int:
        """Bytes the scan for the end of the head has examined so far."""
        ...

@disjoint_base
class ChunkedDecoder:
    """Decoder of one chunked request body (RFC 9112 §7.1), fed in pieces.

    Chunk extensions and trailer fields are validated and discarded."""

    def __new__(cls, max_body: int) -> ChunkedDecoder: ...
    def feed(self, data: bytes) -> Tuple[bytes, int, bool]:
        """Decode the next bytes of the body; return (data decoded from them,
        bytes of data consumed, done). consumed < len(data) only when done:
        the next request starts at data[consumed:]. After done, feed consumes
        nothing. Raises HTTPError with status 400 (malformed) or 413 (a chunk
        would take the body past max_body), and again on every later feed."""
        ...
    @property
    def done(self) -> bool:
        """True once the last chunk, the trailer and the final CRLF were read."""
        ...
    @property
    def body_len(self) -> int:
        """Data bytes decoded so far."""
        ...
    @property
    def max_body(self) -> int:
        """The largest body this decoder accepts."""
        ...

def unquote(data: bytes) -> bytes:
    """Percent-decode data: %XX (hex, either case) becomes one byte; any other
    "%" stays as it is. Equal to urllib.parse.unquote_to_bytes on bytes."""
    ...

@disjoint_base
class Request:
    """One HTTP/1.1 request head as the accept loop parsed it, and the bytes
    read after it."""

    @property
    def method(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def version_minor(self) -> int: ...
    @property
    def headers(self) -> List[Tuple[bytes, bytes]]: ...
    @property
    def content_length(self) -> Optional[int]: ...
    @property
    def chunked(self) -> bool: ...
    @property
    def keep_alive(self) -> bool: ...
    @property
    def expect_continue(self) -> bool: ...
    @property
    def upgrade(self) -> bool: ...
    @property
    def head_len(self) -> int: ...
    @property
    def rest(self) -> bytes: ...
    def environ(self, base: Dict[str, Any]) -> Dict[str, Any]: ...

def send_all(fd: int, bufs: Sequence[Any], timeout: Optional[float] = None,
             last: bool = False) -> int: ...
def recv_some(fd: int, size: int, timeout: Optional[float] = None) -> bytes: ...


# ---------------------------------------------------------------------------
# PROXY protocol headers, versions 1 and 2 (src/fa_proxy.h)

PROXY_V1_MAX: int
PROXY_DEFAULT_MAX_LEN: int
PROXY_MIN_MAX_LEN: int
PROXY_MAX_MAX_LEN: int
PROXY_ENOTPROXY: int
PROXY_EMALFORMED: int
PROXY_EVERSION: int
PROXY_ECOMMAND: int
PROXY_EFAMILY: int
PROXY_ETOOLONG: int
PROXY_ECHECKSUM: int
PROXY_ERRORS: Dict[int, str]
PROXY_ERROR_NAMES: Dict[int, str]

# The dict of a parsed header: version (1 or 2); command ("PROXY", or
# "LOCAL" for a v2 LOCAL and a v1 UNKNOWN: the connection's own addresses
# stand); family ("TCP4", "UDP4", "TCP6", "UDP6", "UNIX", "UNIX_DGRAM",
# "UNKNOWN"); src and dst (the client's and the balancer's addresses as the
# socket module reports a peer: (host, port) for IPv4, (host, port,
# flowinfo, scope_id) for IPv6, str or bytes (abstract) for UNIX; None when
# the connection's own stand); header_len; tlvs (v2: list of (type, value)
# in order; [] for v1); authority (the PP2_TYPE_AUTHORITY value or None);
# ssl ((client flags, verify) of PP2_TYPE_SSL, or None); crc32c (a
# PP2_TYPE_CRC32C was present, and matched).
_ProxyHeader: TypeAlias = Dict[str, Any]
# (header_len, header) when complete; (0, None) when more bytes are needed;
# (PROXY_E*, None) when the connection must be dropped.
_ProxyResult: TypeAlias = Tuple[int, Optional[_ProxyHeader]]

def parse_proxy_header(data: bytes, max_len: int = 4096) -> _ProxyResult:
    """Parse the PROXY protocol header (v1 or v2) at the start of data,
    strictly (the header comment of src/fa_proxy.h has the rules).

    Returns (header_len, header) when the header is complete and valid (the
    payload starts at data[header_len:]), (0, None) while every byte so far
    fits a header, or (rc, None) with rc one of the PROXY_E* values. A
    version 2 header longer than max_len (in [PROXY_MIN_MAX_LEN,
    PROXY_MAX_MAX_LEN]) is PROXY_ETOOLONG. Raises TypeError for data that is
    not bytes-like and TypeError or ValueError, naming it, for a bad
    max_len."""
    ...

def proxy_crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32c (Castagnoli) of data, continuing from crc: the checksum a
    version 2 PP2_TYPE_CRC32C TLV carries."""
    ...

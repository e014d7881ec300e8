# cython: language_level=3, boundscheck=False, wraparound=False
"""The native benchmark instruments: a load generator and the c-inline server.

A thin adapter over ``src/fa_loadgen.c`` and ``src/fa_inline.c``: each call
runs its C loop with the GIL released, takes the GIL back only when a signal
interrupted the loop (to let ``KeyboardInterrupt`` through), and turns
negative errno values into ``OSError``. ``fastaccept.bench.loadgen`` is the API
over ``load()``; see ``_loadgen.pyi`` for the typed surface.
"""
import os as _os

from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memset


cdef extern from "<errno.h>" nogil:
    int EINTR
    int EINVAL
    int ENOMEM


cdef extern from "<sys/socket.h>" nogil:
    int AF_INET
    int AF_INET6


cdef extern from "fa_loadgen.h" nogil:
    unsigned int FA_LOAD_MAX_CONNECTIONS
    unsigned int FA_LOAD_MAX_CONCURRENCY
    unsigned int FA_LOAD_MAX_REQUEST
    unsigned int FA_LOAD_HARVEST_EVERY
    unsigned int FA_LOAD_MAX_REQUESTS_PER_CONN
    unsigned long long FA_LOAD_MAX_RESPONSE_LEN
    unsigned int FA_LOAD_MAX_HEAD
    int FA_LOAD_FRAMING_EOF
    int FA_LOAD_FRAMING_FIXED
    int FA_LOAD_FRAMING_HTTP

    ctypedef struct fa_load_config:
        uint64_t connections
        uint32_t concurrency
        uint64_t timeout_ns
        uint64_t max_ns
        const void *request
        size_t request_len
        uint64_t requests_per_conn
        int framing
        uint64_t response_len

    ctypedef struct fa_load_percentiles:
        uint64_t p50_ns
        uint64_t p90_ns
        uint64_t p99_ns
        uint64_t max_ns
        uint64_t samples

    ctypedef struct fa_load_result:
        uint64_t attempted
        uint64_t completed
        uint64_t refused
        uint64_t reset
        uint64_t timeout
        uint64_t other
        uint64_t closed
        uint64_t requests
        uint64_t elapsed_ns
        uint64_t issue_ns
        int source_rotation
        fa_load_percentiles connect
        fa_load_percentiles rtt
        fa_load_percentiles request

    ctypedef struct fa_load:
        pass

    int fa_load_target(fa_load_config *cfg, int family, const char *ip, uint16_t port,
                       uint32_t scope_id)
    int fa_load_init(fa_load *l, const fa_load_config *cfg)
    int fa_load_run(fa_load *l)
    void fa_load_result_get(fa_load *l, fa_load_result *out)
    void fa_load_destroy(fa_load *l)


cdef extern from "fa_inline.h" nogil:
    unsigned int FA_INLINE_MAX_RESPONSE

    ctypedef struct fa_inline:
        uint64_t served

    int fa_inline_init(fa_inline *s, int listen_fd, const void *response, size_t response_len,
                       int stop_fd)
    int fa_inline_run(fa_inline *s)
    void fa_inline_destroy(fa_inline *s)


MAX_CONNECTIONS = FA_LOAD_MAX_CONNECTIONS
MAX_CONCURRENCY = FA_LOAD_MAX_CONCURRENCY
MAX_REQUEST = FA_LOAD_MAX_REQUEST
MAX_RESPONSE = FA_INLINE_MAX_RESPONSE
HARVEST_EVERY = FA_LOAD_HARVEST_EVERY
MAX_REQUESTS_PER_CONNECTION = FA_LOAD_MAX_REQUESTS_PER_CONN
MAX_RESPONSE_LEN = FA_LOAD_MAX_RESPONSE_LEN
MAX_RESPONSE_HEAD = FA_LOAD_MAX_HEAD
#: Response framings, as ``load(framing=...)`` takes them.
FRAMING_EOF = FA_LOAD_FRAMING_EOF
FRAMING_FIXED = FA_LOAD_FRAMING_FIXED
FRAMING_HTTP = FA_LOAD_FRAMING_HTTP


cdef object _os_error(int rc):
    if rc == -ENOMEM:
        return MemoryError()
    return OSError(-rc, _os.strerror(-rc))


cdef dict _percentiles(fa_load_percentiles *p):
    return {"p50_ns": p.p50_ns, "p90_ns": p.p90_ns, "p99_ns": p.p99_ns,
            "max_ns": p.max_ns, "samples": p.samples}


def load(int family, str ip not None, int port, uint32_t scope_id, uint64_t connections,
         uint32_t concurrency, uint64_t timeout_ns, bytes request not None,
         uint64_t max_ns=0, uint64_t requests_per_conn=1, int framing=FA_LOAD_FRAMING_EOF,
         uint64_t response_len=0):
    """Run one load; return the raw counters and percentiles (nanoseconds) as a dict.

    ``family`` is AF_INET or AF_INET6 and ``ip`` a numeric address of it.
    ``max_ns`` 0 bounds the starts by the run's shape (see fa_loadgen.h).
    ``requests_per_conn`` responses per connection, framed by ``framing``
    (FRAMING_EOF, FRAMING_FIXED with ``response_len`` bytes each, or
    FRAMING_HTTP). Arguments are range-checked by
    ``fastaccept.bench.loadgen.run``; out-of-range values here raise
    ValueError without naming which.
    """
    cdef fa_load_config cfg
    cdef fa_load l
    cdef fa_load_result r
    cdef int rc
    if not 0 < port < 65536:
        raise ValueError(f"port must be in [1, 65535], got {port}")
    memset(&cfg, 0, sizeof(cfg))
    ip_bytes = ip.encode("ascii")
    rc = fa_load_target(&cfg, family, ip_bytes, <uint16_t>port, scope_id)
    if rc < 0:
        raise ValueError(f"not a numeric address of family {family}: {ip!r}")
    cfg.connections = connections
    cfg.concurrency = concurrency
    cfg.timeout_ns = timeout_ns
    cfg.max_ns = max_ns
    cfg.request = <const char *>request
    cfg.request_len = len(request)
    cfg.requests_per_conn = requests_per_conn
    cfg.framing = framing
    cfg.response_len = response_len
    rc = fa_load_init(&l, &cfg)
    if rc == -EINVAL:
        raise ValueError("connections, concurrency, timeout, request, requests_per_conn, "
                         "framing or response_len out of range")
    if rc < 0:
        raise _os_error(rc)
    try:
        while True:
            with nogil:
                rc = fa_load_run(&l)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        if rc < 0:
            raise _os_error(rc)
        with nogil:
            fa_load_result_get(&l, &r)
    finally:
        fa_load_destroy(&l)
    return {
        "attempted": r.attempted,
        "completed": r.completed,
        "refused": r.refused,
        "reset": r.reset,
        "timeout": r.timeout,
        "other": r.other,
        "closed": r.closed,
        "requests": r.requests,
        "elapsed_ns": r.elapsed_ns,
        "issue_ns": r.issue_ns,
        "source_rotation": bool(r.source_rotation),
        "connect": _percentiles(&r.connect),
        "rtt": _percentiles(&r.rtt),
        "request": _percentiles(&r.request),
    }


def serve_inline(int listen_fd, bytes response not None, int stop_fd):
    """Serve listen_fd from one C epoll loop until stop_fd is readable; return the count served.

    Each connection's request is read up to "\\r\\n\\r\\n" (or EOF), then
    ``response`` is written and the connection closed. The GIL is released
    throughout. ``listen_fd`` (a listening TCP socket, switched to
    nonblocking) and ``stop_fd`` (an eventfd or a pipe's read end, left
    readable) stay the caller's. Raise ValueError for a negative or equal
    fd, OSError if epoll or accept4 fails beyond recovery.
    """
    cdef fa_inline s
    cdef int rc
    cdef uint64_t served
    if listen_fd < 0 or stop_fd < 0 or listen_fd == stop_fd:
        raise ValueError(
            f"listen_fd and stop_fd must be two distinct open fds, got {listen_fd} and {stop_fd}")
    if len(response) > FA_INLINE_MAX_RESPONSE:
        raise ValueError(
            f"response must be at most {FA_INLINE_MAX_RESPONSE} bytes, got {len(response)}")
    rc = fa_inline_init(&s, listen_fd, <const char *>response, len(response), stop_fd)
    if rc < 0:
        raise _os_error(rc)
    try:
        while True:
            with nogil:
                rc = fa_inline_run(&s)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        if rc < 0:
            raise _os_error(rc)
        served = s.served
    finally:
        with nogil:
            fa_inline_destroy(&s)
    return served

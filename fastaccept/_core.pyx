# cython: language_level=3, boundscheck=False, wraparound=False
"""The native core of fastaccept: a GIL-free accept loop and its ring.

This module is a thin adapter over the C in ``src/``: it turns C results into
Python objects and negative errno values into ``OSError``. See ``_core.pyi``
for the typed surface.
"""
import errno as _errno
import os as _os

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.types cimport pid_t
from posix.unistd cimport close, getpid



cdef extern from "<errno.h>" nogil:
    int EINTR
    int ETIMEDOUT
    int ESHUTDOWN
    int EAGAIN

cdef extern from "<sys/socket.h>" nogil:
    int AF_INET
    int AF_INET6
    int AF_UNIX
    int AF_UNSPEC

cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        pass
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in:
        uint16_t sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6:
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

cdef extern from "<sys/un.h>" nogil:
    cdef struct sockaddr_un:
        char sun_path[108]

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    uint16_t ntohs(uint16_t v)
    uint32_t ntohl(uint32_t v)

cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)

cdef extern from "<stddef.h>" nogil:
    size_t offsetof_sun_path "offsetof(struct sockaddr_un, sun_path)"


RING_MIN_CAPACITY = FA_RING_MIN_CAPACITY
RING_MAX_CAPACITY = FA_RING_MAX_CAPACITY
DEFAULT_MAX_BATCH = 16
DEFAULT_SPIN_US = FA_SPIN_DEFAULT_NS // 1000
MAX_SPIN_US = FA_SPIN_MAX_NS // 1000
DEFAULT_NAP_US = FA_NAP_DEFAULT_NS // 1000
MAX_NAP_US = FA_NAP_MAX_NS // 1000
#: What the accept loop does with a connection that finds the ring full.
OVERLOAD_POLICIES = ("queue", "shed")
#: How listening ends once the loop has drained the kernel queue on stop.
END_LISTEN_CHOICES = ("release", "keep")
#: Where a new connection goes: "readable" waits in C for its first bytes,
#: "accept" goes to a worker at once (protocols where the server speaks first).
DISPATCH_CHOICES = ("readable", "accept")
DEFAULT_MAX_CONNECTIONS = FA_MAX_CONNS_DEFAULT
MAX_CONNECTIONS = FA_MAX_CONNS_MAX
#: The statuses the accept loop answers itself (malformed or oversized heads).
HTTP_REJECTED = (400, 408, 413, 414, 431, 501, 505)
#: The keys of Acceptor.stats(), in order.
STATS_KEYS = ("accepted", "accept_errors", "emfile_pauses", "shed", "ring_depth",
              "ring_high_water", "ring_full_waits", "ring_capacity", "accept_batches",
              "accept_naps", "workers_parked", "worker_wakeups", "worker_sleeps",
              "queue_wait_count", "queue_wait_p50_us", "queue_wait_p99_us",
              "conns_open", "conns_waiting", "dispatched", "kept", "idle_closed",
              "peer_closed", "stop_closed", "max_connections_pauses", "http_requests",
              "http_rejected", "proxy_rejected", "proxy_timeouts", "accept_realtime")
MAX_SHED_RESPONSE = FA_SHED_RESPONSE_MAX


# A request the accept loop parsed (defined with the HTTP code, below).
cdef class Request


# Bumped in every forked child, so objects can tell they were inherited.
cdef unsigned long _fork_generation = 0


def _after_fork_in_child():
    global _fork_generation
    _fork_generation += 1


_os.register_at_fork(after_in_child=_after_fork_in_child)


cdef object _os_error(int rc):
    return OSError(-rc, _os.strerror(-rc))


cdef object _sockaddr_object(const sockaddr_storage *ss, socklen_t n):
    """The address the socket module reports for a peer of this family: a
    tuple (IPv4, IPv6), a str or bytes (AF_UNIX), None for none (n 0 or
    AF_UNSPEC), else (family, raw bytes)."""
    cdef char host[64]
    cdef const sockaddr_in *v4
    cdef const sockaddr_in6 *v6
    cdef const sockaddr_un *un
    cdef size_t m
    if n == 0 or ss.ss_family == AF_UNSPEC:
        return None
    if ss.ss_family == AF_INET:
        v4 = <const sockaddr_in *>ss
        inet_ntop(AF_INET, &v4.sin_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v4.sin_port))
    if ss.ss_family == AF_INET6:
        v6 = <const sockaddr_in6 *>ss
        inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                v6.sin6_scope_id)
    if ss.ss_family == AF_UNIX:
        if n <= offsetof_sun_path:
            return ""
        un = <const sockaddr_un *>ss
        m = n - offsetof_sun_path
        if un.sun_path[0] == 0:          # abstract namespace: raw bytes
            return un.sun_path[:m]
        return _os.fsdecode(un.sun_path[:strnlen(un.sun_path, m)])
    return (ss.ss_family, (<const char *>ss)[:n])


cdef object _peer_address(fa_conn *c):
    """The address tuple Python's socket module would report for c's peer."""
    return _sockaddr_object(&c.addr, c.addrlen)


cdef object _int_arg(str name, object value, object low=None, object high=None):
    """value as an int, or TypeError/ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if low is not None and not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return int(value)


cdef int64_t _timeout_ns(object timeout) except -2:
    if timeout is None:
        return -1
    t = float(timeout)
    if not t >= 0.0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout!r}")
    if t > 1e9:
        return -1
    return <int64_t>(t * 1e9)


cdef inline object _entry(fa_conn *c, fa_hist *waits, bint with_request):
    """The tuple of a popped entry: (fd, addr, accepted_ns), or with_request
    (fd, addr, Request or None). Records its queue wait (from the moment it
    was ready for a worker) in waits unless that is NULL. Without
    with_request the bytes the loop read for it are freed here."""
    cdef Request req
    if waits != NULL:
        fa_hist_record_ns(waits, fa_now_ns() - c.ready_ns)
    if with_request:
        if c.data == NULL:
            return (c.fd, _peer_address(c), None)
        req = Request.__new__(Request)
        req.r = <fa_http_req *>c.data
        c.data = NULL
        return (c.fd, _peer_address(c), req)
    if c.data != NULL:
        free(c.data)
        c.data = NULL
    return (c.fd, _peer_address(c), c.accepted_ns)


cdef object _pop(fa_ring *ring, fa_lot *lot, fa_hist *waits, object timeout,
                 bint with_request):
    """Shared by Ring.pop and Acceptor.pop: wait without the GIL.

    When waits is not NULL, each entry's queue wait (accept to pop) is
    recorded there, in C: no Python object per connection."""
    cdef fa_conn c
    cdef int rc
    cdef int64_t left_ns = _timeout_ns(timeout)
    cdef uint64_t deadline_ns = 0
    # Ready work is taken with the GIL held: releasing and re-taking it for
    # a pop that cannot block would cost a GIL hand-off per connection.
    if fa_try_pop(ring, lot, &c) == 0:
        return _entry(&c, waits, with_request)
    if left_ns >= 0:
        deadline_ns = fa_now_ns() + <uint64_t>left_ns
    while True:
        with nogil:
            rc = fa_pop_wait(ring, lot, &c, left_ns)
        if rc == 0:
            return _entry(&c, waits, with_request)
        if rc == -EINTR:
            # A signal interrupted the wait: let Python run its handlers
            # (Ctrl-C raises here in the main thread), then wait on.
            PyErr_CheckSignals()
            if left_ns >= 0:
                now = fa_now_ns()
                left_ns = <int64_t>(deadline_ns - now) if deadline_ns > now else 0
            continue
        if rc == -ETIMEDOUT or rc == -ESHUTDOWN:
            return None
        raise _os_error(rc)


def close_fd(int fd):
    """Close fd without releasing the GIL.

    close() of an accepted TCP socket does not block (no SO_LINGER is set on
    it), so giving up the GIL around it, as os.close() and socket.close() do,
    only costs a GIL hand-off per connection. Raise OSError on failure."""
    cdef int err
    if close(fd) < 0:
        err = errno
        raise OSError(err, _os.strerror(err))


cdef object _hist_cumulative(fa_hist *h, object bounds_us):
    """(cumulative counts at each bound and in all, sum_us) of a histogram."""
    bounds = [_int_arg("bounds_us", b) for b in bounds_us]
    if any(b < 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"bounds_us must increase from 0 or more, got {bounds!r}")
    cdef uint64_t counts[FA_HIST_BUCKETS]
    cdef uint64_t total = fa_hist_snapshot(h, counts)
    cdef uint64_t sum_us = fa_hist_sum_us(h)
    cdef unsigned int i = 0
    cdef uint64_t below = 0
    out = []
    for b in bounds:
        # bucket i holds [low(i), low(i+1)); its integer values are all <= b
        # once low(i+1) <= b + 1
        while i < FA_HIST_BUCKETS - 1 and fa_hist_bucket_low(i + 1) <= b + 1:
            below += counts[i]
            i += 1
        out.append(below)
    out.append(total)
    return out, sum_us


cdef class Histogram:
    """A latency histogram any thread records into without a lock (the C
    histogram of the queue waits: 16 buckets per power of two, 1 us to
    134 s): the HTTP server's request latencies."""
    cdef fa_hist h

    def __cinit__(self):
        fa_hist_init(&self.h)

    def record_ns(self, uint64_t ns):
        """Record one duration, in nanoseconds."""
        fa_hist_record_ns(&self.h, ns)

    def record_since(self, uint64_t start_ns):
        """Record the time from start_ns (CLOCK_MONOTONIC, as time.monotonic_ns()) to now."""
        cdef uint64_t now = fa_now_ns()
        fa_hist_record_ns(&self.h, now - start_ns if now > start_ns else 0)

    def quantiles_us(self, qs):
        """[(q, value in us)] for each q in qs (0 < q <= 1), and the count."""
        cdef uint64_t counts[FA_HIST_BUCKETS]
        cdef uint64_t total = fa_hist_snapshot(&self.h, counts)
        return [fa_hist_quantile_us(counts, total, q) for q in qs], total

    def cumulative(self, bounds_us):
        """As Acceptor.queue_wait_histogram, for this histogram."""
        return _hist_cumulative(&self.h, bounds_us)


cdef class Ring:
    """Bounded lock-free queue of connection entries, for tests and tools.

    The same ring and wake-up logic the ``Acceptor`` uses, fed from Python.
    The ring does not own the fds pushed into it: whatever is left in it
    when it is freed is discarded, not closed.
    """
    cdef fa_ring ring
    cdef fa_lot lot
    cdef bint ready
    cdef int waiters

    def __cinit__(self, capacity):
        cap = int(capacity)
        if not (0 <= cap < 2**63 and fa_ring_capacity_ok(cap)):
            raise ValueError(
                f"capacity must be a power of two in [{FA_RING_MIN_CAPACITY}, "
                f"{FA_RING_MAX_CAPACITY}], got {capacity!r}")
        rc = fa_ring_init(&self.ring, cap)
        if rc < 0:
            raise _os_error(rc)
        rc = fa_lot_init(&self.lot)
        if rc < 0:
            fa_ring_destroy(&self.ring, 0)
            raise _os_error(rc)
        self.ready = True

    def __dealloc__(self):
        if self.ready:
            fa_lot_destroy(&self.lot)
            fa_ring_destroy(&self.ring, 0)
            self.ready = False

    @property
    def capacity(self):
        """Number of slots."""
        return self.ring.capacity

    @property
    def high_water(self):
        """Most entries held at once."""
        return fa_ring_high_water(&self.ring)

    @property
    def parked(self):
        """Consumers asleep in pop() right now."""
        return fa_lot_parked(&self.lot)

    @property
    def closed(self):
        """True once close() was called."""
        return bool(fa_lot_is_closed(&self.lot))

    def __len__(self):
        return fa_ring_depth(&self.ring)

    def push(self, int fd):
        """Queue fd; wake a parked consumer. Return False if the ring is full."""
        cdef fa_conn c
        if fa_lot_is_closed(&self.lot):
            raise ValueError("push to a closed ring")
        memset(&c, 0, sizeof(c))
        c.fd = fd
        c.addr.ss_family = AF_UNSPEC
        c.accepted_ns = fa_now_ns()
        c.ready_ns = c.accepted_ns
        if fa_ring_push(&self.ring, &c) < 0:
            return False
        fa_lot_wake_one(&self.lot)
        return True

    def pop(self, timeout=None):
        """Return (fd, None, queued_ns), or None on timeout or once closed and empty."""
        self.waiters += 1
        try:
            return _pop(&self.ring, &self.lot, NULL, timeout, False)
        finally:
            self.waiters -= 1

    def close(self):
        """Refuse further pushes; waiters drain what is left, then get None."""
        fa_lot_close(&self.lot)


cdef enum AcceptorState:
    IDLE = 0
    RUNNING = 1
    DONE = 2
    STOPPED_EARLY = 3       # stop() or abort() before run(): run() returns at once


cdef class Acceptor:
    """The GIL-free accept loop over one listening socket and its ring.

    ``run()`` blocks (without the GIL) until ``stop()`` or ``abort()``;
    worker threads call ``pop()`` to take accepted connections. The caller
    keeps ownership of the listening fd, which is switched to nonblocking.
    ``overload`` is what a connection that finds the ring full gets:
    "queue" leaves it in the kernel backlog, "shed" answers it with
    ``shed_response`` (bytes, at most MAX_SHED_RESPONSE) from C and closes it.
    ``end_listen`` is what happens to the listening socket once the loop has
    drained it on stop: "release" lets go of it at once (a placeholder is
    dup2()ed over ``fd``, which stays valid for its owner to close; a
    listener nobody else holds then refuses new clients), "keep" leaves it
    listening for its owner to serve again.
    ``proxy=True``: every new connection must first send a PROXY protocol
    header (v1 or v2), read in C before the dispatch and complete within
    ``proxy_timeout`` seconds of the accept (None: no deadline); its source
    address is the ``addr`` of the popped entry. A connection whose header is
    bad or late is closed with a FIN, counted in ``proxy_rejected`` (by
    ``PROXY_ERROR_NAMES``) or ``proxy_timeouts``.
    """
    cdef fa_acceptor a
    cdef fa_hist waits         # queue wait of every popped entry, accept to pop
    cdef bint ready
    cdef AcceptorState state
    cdef int waiters
    cdef pid_t pid
    cdef unsigned long generation
    cdef readonly int fd

    def __cinit__(self, int fd, ring_size=4096, max_batch=DEFAULT_MAX_BATCH,
                  spin_us=DEFAULT_SPIN_US, overload="queue", shed_response=b"",
                  nap_us=DEFAULT_NAP_US, end_listen="release", dispatch="accept",
                  idle_timeout=None, max_connections=DEFAULT_MAX_CONNECTIONS, http=False,
                  max_request_line=FA_HTTP_DEFAULT_MAX_REQUEST_LINE,
                  max_fields=FA_HTTP_DEFAULT_MAX_FIELDS, max_head=FA_HTTP_DEFAULT_MAX_HEAD,
                  head_timeout=None, max_body=None, exclusive=False, grace=None,
                  realtime=False, proxy=False, proxy_timeout=None):
        cap = _int_arg("ring_size", ring_size)
        if not (0 <= cap < 2**63 and fa_ring_capacity_ok(cap)):
            raise ValueError(
                f"ring_size must be a power of two in [{FA_RING_MIN_CAPACITY}, "
                f"{FA_RING_MAX_CAPACITY}], got {ring_size!r}")
        batch = _int_arg("max_batch", max_batch, 1, 65536)
        spin = _int_arg("spin_us", spin_us, 0, MAX_SPIN_US)
        nap = _int_arg("nap_us", nap_us, 0, MAX_NAP_US)
        if overload not in OVERLOAD_POLICIES:
            raise ValueError(f"overload must be 'queue' or 'shed', got {overload!r}")
        if not isinstance(shed_response, (bytes, bytearray, memoryview)):
            raise TypeError(f"shed_response must be bytes, got {type(shed_response).__name__}")
        cdef bytes response = bytes(shed_response)
        if len(response) > FA_SHED_RESPONSE_MAX:
            raise ValueError(f"shed_response must be at most {FA_SHED_RESPONSE_MAX} bytes, "
                             f"got {len(response)}")
        if end_listen not in END_LISTEN_CHOICES:
            raise ValueError(f"end_listen must be 'release' or 'keep', got {end_listen!r}")
        if dispatch not in DISPATCH_CHOICES:
            raise ValueError(f"dispatch must be 'readable' or 'accept', got {dispatch!r}")
        cdef int64_t idle_ns = _timeout_ns(idle_timeout) if idle_timeout is not None else 0
        if idle_timeout is not None and idle_ns <= 0:
            raise ValueError(f"idle_timeout must be None or > 0, got {idle_timeout!r}")
        conns = _int_arg("max_connections", max_connections, 1, FA_MAX_CONNS_MAX)
        if not isinstance(proxy, bool):
            raise TypeError(f"proxy must be a bool, got {type(proxy).__name__}")
        cdef int64_t proxy_ns = 0
        if proxy_timeout is not None:
            if isinstance(proxy_timeout, bool) or not isinstance(proxy_timeout, (int, float)):
                raise TypeError(f"proxy_timeout must be None or a number of seconds, "
                                f"got {type(proxy_timeout).__name__}")
            if not 0 < proxy_timeout <= 1e9:
                raise ValueError(f"proxy_timeout must be None or in (0, 1e9] seconds, "
                                 f"got {proxy_timeout!r}")
            if proxy:
                proxy_ns = max(1, <int64_t>(proxy_timeout * 1e9))
        cdef fa_http_limits lim
        cdef int64_t head_ns = 0
        cdef uint64_t body_max = 0
        if http:
            _http_limits(&lim, max_request_line, max_fields, max_head)
            if lim.max_request_line < 16 or lim.max_head < 64 or lim.max_fields < 1:
                raise ValueError("max_request_line must be >= 16, max_head >= 64 and "
                                 "max_fields >= 1")
            if head_timeout is not None:
                head_ns = _timeout_ns(head_timeout)
                if head_ns <= 0:
                    raise ValueError(f"head_timeout must be None or > 0, got {head_timeout!r}")
            if max_body is not None:
                body_max = _int_arg("max_body", max_body, 1, HTTP_MAX_BODY_LIMIT)
        if fd < 0:
            raise ValueError(f"fd must be a listening socket's descriptor, got {fd}")
        rc = fa_acceptor_init(&self.a, fd, cap, batch)
        if rc < 0:
            raise _os_error(rc)
        fa_acceptor_set_spin(&self.a, spin * 1000)
        fa_acceptor_set_nap(&self.a, nap * 1000)
        fa_acceptor_set_end_listen(&self.a, FA_END_KEEP if end_listen == "keep" else FA_END_RELEASE)
        rc = fa_acceptor_set_conns(
            &self.a, FA_DISPATCH_READABLE if dispatch == "readable" else FA_DISPATCH_ACCEPT,
            <uint64_t>idle_ns, conns)
        if rc == 0 and http:
            rc = fa_acceptor_set_http(&self.a, &lim, <uint64_t>head_ns, body_max)
        if rc == 0 and proxy:
            rc = fa_acceptor_set_proxy(&self.a, 1, <uint64_t>proxy_ns)
        fa_acceptor_set_exclusive(&self.a, 1 if exclusive else 0)
        fa_acceptor_set_realtime(&self.a, 1 if realtime else 0)
        if grace is not None:
            fa_acceptor_set_grace(&self.a, <uint64_t>_timeout_ns(grace))
        if rc < 0:
            fa_acceptor_destroy(&self.a)
            raise _os_error(rc)
        rc = fa_acceptor_set_overload(
            &self.a, FA_OVERLOAD_SHED if overload == "shed" else FA_OVERLOAD_QUEUE,
            <const char *>response, len(response))
        if rc < 0:
            fa_acceptor_destroy(&self.a)
            raise _os_error(rc)
        fa_hist_init(&self.waits)
        self.fd = fd
        self.ready = True
        self.state = IDLE
        self.pid = getpid()
        self.generation = _fork_generation

    def __dealloc__(self):
        # In a forked child the C state is a copy whose threads do not exist
        # (its mutex may be held forever): leave it alone.
        if self.ready and self.pid == getpid():
            fa_acceptor_destroy(&self.a)
        self.ready = False

    cdef int _check(self) except -1:
        if not self.ready:
            raise ValueError("acceptor is closed")
        # Not getpid(): that is a syscall, and pop() runs this per connection.
        if self.generation != _fork_generation:
            raise RuntimeError("acceptor belongs to the parent process (used after fork)")
        return 0

    @property
    def capacity(self):
        """Ring slots."""
        return self.a.ring.capacity

    @property
    def max_batch(self):
        """accept4() calls per wake-up of the loop."""
        return self.a.max_batch

    @property
    def spin_us(self):
        """Microseconds the loop keeps polling after its last accept."""
        return self.a.spin_ns // 1000

    @property
    def nap_us(self):
        """Longest nap in microseconds while the workers are busy (0: never)."""
        return self.a.nap_ns // 1000

    @property
    def overload(self):
        """What a connection that finds the ring full gets: "queue" or "shed"."""
        return "shed" if self.a.overload == FA_OVERLOAD_SHED else "queue"

    @property
    def dispatch(self):
        """Where a new connection goes: "readable" (waits in C) or "accept"."""
        return "readable" if self.a.dispatch == FA_DISPATCH_READABLE else "accept"

    @property
    def idle_timeout(self):
        """Seconds a connection may wait in C with nothing for a worker (None: for ever)."""
        return self.a.idle_ns / 1e9 if self.a.idle_ns else None

    @property
    def max_connections(self):
        """Open connections at most (waiting in C, in the ring, in workers)."""
        return self.a.max_conns

    @property
    def proxy(self):
        """True if every new connection must first send a PROXY protocol header."""
        return bool(self.a.proxy)

    @property
    def proxy_timeout(self):
        """Seconds a PROXY header may take after the accept (None: no deadline, or no PROXY)."""
        return self.a.proxy_ns / 1e9 if self.a.proxy_ns else None

    @property
    def end_listen(self):
        """What happens to the listening socket after the final drain: "release" or "keep"."""
        return "keep" if self.a.end_listen == FA_END_KEEP else "release"

    @property
    def running(self):
        """True while run() is executing."""
        return self.state == RUNNING

    def run(self):
        """Accept until stop() or abort(), with the GIL released throughout.

        Raise OSError if accept4() or epoll fails with an error the loop cannot
        recover from. Either way the ring is closed when this returns. After
        a stop() or abort() that came first, return at once (the thread that
        runs the loop may start after its owner gave up on it).
        """
        cdef int rc
        self._check()
        if self.state == STOPPED_EARLY:
            self.state = DONE
            return
        if self.state != IDLE:
            raise RuntimeError("Acceptor.run() may be called only once")
        self.state = RUNNING
        with nogil:
            rc = fa_acceptor_run(&self.a)
        self.state = DONE
        if rc < 0:
            raise _os_error(rc)

    def stop(self):
        """Stop accepting after one last drain of the kernel queue; close the ring."""
        self._check()
        fa_acceptor_stop(&self.a)
        if self.state == IDLE:
            self.state = STOPPED_EARLY
            fa_lot_close(&self.a.lot)

    def abort(self, keep_listening=False):
        """Stop at once, without the final drain; close the ring. With
        ``keep_listening``, leave the listener listening whatever
        ``end_listen`` says (an owner that will run a new loop on it)."""
        self._check()
        if keep_listening:
            fa_acceptor_set_end_listen(&self.a, FA_END_KEEP)
        fa_acceptor_abort(&self.a)
        if self.state == IDLE:
            self.state = STOPPED_EARLY
            fa_lot_close(&self.a.lot)

    def pop_entry(self, timeout=None):
        """Return (fd, peer_address, request), or None on timeout or once the
        ring is closed and empty: ``request`` is the Request the loop parsed
        (HTTP), or None. Waits without the GIL."""
        self._check()
        self.waiters += 1
        try:
            return _pop(&self.a.ring, &self.a.lot, &self.waits, timeout, True)
        finally:
            self.waiters -= 1

    def pop(self, timeout=None):
        """Return (fd, peer_address, accepted_ns), or None on timeout or
        once the ring is closed and empty. Waits without the GIL."""
        self._check()
        self.waiters += 1
        try:
            return _pop(&self.a.ring, &self.a.lot, &self.waits, timeout, False)
        finally:
            self.waiters -= 1

    def finish(self, int fd):
        """A worker is done with a popped connection: close fd (unless it is
        negative: the handler closed it or took it away) and count it out of
        the open connections. Does not release the GIL (close() of an
        accepted socket does not block)."""
        self._check()
        fa_acceptor_finish(&self.a, fd)

    def keep(self, int fd, rest=None):
        """Give a popped connection back to the loop, to wait in C for its
        next request (the handler's KEEP), with ``rest``: bytes already read
        from it past the request just served (an HTTP server's pipelined
        next request, or its start), which the loop parses first. Return
        True if the loop took it; False if it was closed instead (the loop
        stops, or is gone)."""
        cdef const unsigned char[:] view
        cdef void *data = NULL
        cdef Py_ssize_t n = 0
        self._check()
        if rest is not None and len(rest):
            view = rest
            n = view.shape[0]
            if n > 0xFFFFFFFF:
                raise ValueError("rest must be shorter than 4 GiB")
            data = malloc(n)
            if data == NULL:
                raise MemoryError()
            memcpy(data, &view[0], n)
        return fa_acceptor_keep(&self.a, fd, data, <uint32_t>n) == 1

    def stats(self):
        """Return the loop's counters as a dict (keys: STATS_KEYS)."""
        self._check()
        errors = {}
        cdef int e
        cdef uint64_t n
        cdef uint64_t counts[FA_HIST_BUCKETS]
        cdef uint64_t waited = fa_hist_snapshot(&self.waits, counts)
        for e in range(1, FA_ERRNO_SLOTS):
            n = fa_stat_errors(&self.a, e)
            if n:
                errors[_errno.errorcode.get(e, f"E{e}")] = n
        return {
            "accepted": fa_stat_accepted(&self.a),
            "accept_errors": errors,
            "emfile_pauses": fa_stat_emfile_pauses(&self.a),
            "shed": fa_stat_shed(&self.a),
            "ring_depth": fa_ring_depth(&self.a.ring),
            "ring_high_water": fa_ring_high_water(&self.a.ring),
            "ring_full_waits": fa_stat_ring_full_waits(&self.a),
            "ring_capacity": self.a.ring.capacity,
            "accept_batches": fa_stat_batches(&self.a),
            "accept_naps": fa_stat_naps(&self.a),
            "workers_parked": fa_lot_parked(&self.a.lot),
            "worker_wakeups": fa_lot_wake_calls(&self.a.lot),
            "worker_sleeps": fa_lot_sleeps(&self.a.lot),
            "queue_wait_count": waited,
            "queue_wait_p50_us": fa_hist_quantile_us(counts, waited, 0.50),
            "queue_wait_p99_us": fa_hist_quantile_us(counts, waited, 0.99),
            "conns_open": fa_stat_open(&self.a),
            "conns_waiting": fa_stat_waiting(&self.a),
            "dispatched": fa_stat_dispatched(&self.a),
            "kept": fa_stat_kept(&self.a),
            "idle_closed": fa_stat_idle_closed(&self.a),
            "peer_closed": fa_stat_peer_closed(&self.a),
            "stop_closed": fa_stat_stop_closed(&self.a),
            "max_connections_pauses": fa_stat_max_conns_pauses(&self.a),
            "http_requests": fa_stat_http_requests(&self.a),
            "http_rejected": {st: fa_stat_http_rejected(&self.a, st) for st in HTTP_REJECTED
                              if fa_stat_http_rejected(&self.a, st)},
            "proxy_rejected": {name: fa_stat_proxy_rejected(&self.a, rc)
                               for rc, name in PROXY_ERROR_NAMES.items()
                               if fa_stat_proxy_rejected(&self.a, rc)},
            "proxy_timeouts": fa_stat_proxy_timeouts(&self.a),
            "accept_realtime": fa_acceptor_running_realtime(&self.a),
        }

    def queue_wait_histogram(self, bounds_us):
        """Return (cumulative counts, sum_us) of the queue waits recorded so far.

        ``bounds_us`` are increasing upper bounds in microseconds; entry i of
        the list counts the waits of at most bounds_us[i] us, and a last entry
        counts them all (the +Inf bucket of a Prometheus histogram). A bound
        that falls inside one of the histogram's buckets counts that bucket
        only if it ends at or below the bound, so counts are exact only at
        powers of two and below 16 us; pick bounds there. Raise TypeError
        for a bound that is not an int, ValueError unless the bounds increase
        from 0 or more."""
        self._check()
        return _hist_cumulative(&self.waits, bounds_us)

    def discard(self):
        """Close every accepted connection still queued; return how many.

        For a shutdown that cannot wait for busy workers: safe while other
        threads pop, since each entry is taken exactly once. Each pop frees
        a slot as a worker's does, so a loop waiting for space goes on."""
        cdef fa_conn c
        cdef int n = 0
        self._check()
        while fa_try_pop(&self.a.ring, &self.a.lot, &c) == 0:
            free(c.data)
            fa_acceptor_finish(&self.a, c.fd)
            n += 1
        return n

    def close_inherited(self):
        """In a child forked while this acceptor was open: close the child's
        copies of the connections queued in the ring and of the loop's own
        descriptors; return how many connections.

        The parent's loop and ring are untouched (the child's ring is a copy,
        and closing a copied descriptor leaves the parent's open); without
        this, a connection the parent closes stays open for the client until
        the child exits too. Raise RuntimeError outside a forked child."""
        cdef fa_conn c
        cdef int n = 0
        # getpid(), not the generation: this may run in a fork handler that
        # comes before the one bumping the generation.
        if self.pid == getpid():
            raise RuntimeError("close_inherited() is for a forked child's copy")
        if not self.ready:
            return 0
        # No other thread exists in the child, so popping the copy is safe;
        # an entry a parent thread was pushing or popping at the fork is
        # skipped (its slot never reads as full), not waited for.
        while fa_ring_pop(&self.a.ring, &c) == 0:
            close(c.fd)
            n += 1
        # ... and of the connections waiting in C, or on their way back
        cdef int fd
        for lst in (0, 1, 2, 3):
            while True:
                fd = fa_list_pop(&self.a.conns,
                                 &self.a.conns.idle if lst == 0 else
                                 &self.a.conns.head if lst == 1 else
                                 &self.a.conns.proxy if lst == 2 else &self.a.conns.ready)
                if fd < 0:
                    break
                close(fd)
                n += 1
        cdef void *data
        cdef uint32_t dlen
        while True:
            fd = fa_backq_pop(&self.a.back, &data, &dlen)
            if fd < 0:
                break
            free(data)
            close(fd)
            n += 1
        if self.a.epoll_fd >= 0:
            close(self.a.epoll_fd)
            self.a.epoll_fd = -1
        if self.a.wake_fd >= 0:
            close(self.a.wake_fd)
            self.a.wake_fd = -1
        if self.a.placeholder_fd >= 0:
            close(self.a.placeholder_fd)
            self.a.placeholder_fd = -1
        return n

    def close(self):
        """Free the loop; close every accepted fd still queued. Idempotent."""
        if not self.ready:
            return
        if self.state == RUNNING or self.waiters:
            raise RuntimeError("close() while the acceptor is running or being popped")
        if self.pid == getpid():
            fa_acceptor_destroy(&self.a)
        self.ready = False


# ---------------------------------------------------------------------------
# HTTP/1.1 request heads, chunked bodies and percent-decoding (src/fa_http.h)
#
# The HTTP server calls this C from the accept loop, without the GIL; these
# wrappers give Python callers and the tests the same parser.

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc

HTTP_DEFAULT_MAX_REQUEST_LINE = FA_HTTP_DEFAULT_MAX_REQUEST_LINE
HTTP_DEFAULT_MAX_FIELDS = FA_HTTP_DEFAULT_MAX_FIELDS
HTTP_DEFAULT_MAX_HEAD = FA_HTTP_DEFAULT_MAX_HEAD
#: Largest max_request_line and max_head (offsets are 32-bit; this leaves room).
HTTP_MAX_LIMIT = 1 << 30
#: Largest max_fields.
HTTP_MAX_FIELDS_LIMIT = 1 << 16
#: Longest chunk-size line and trailer section a ChunkedDecoder takes.
HTTP_MAX_CHUNK_LINE = FA_HTTP_MAX_CHUNK_LINE
HTTP_MAX_TRAILER = FA_HTTP_MAX_TRAILER
#: Largest max_body.
HTTP_MAX_BODY_LIMIT = 2**63 - 1

# Fields up to this many are collected on the stack, not in PyMem_Malloc'ed
# memory (an enum so that Cython takes it as an array size).
cdef enum:
    _STACK_FIELDS = 128


class HTTPError(ValueError):
    """Malformed or oversized HTTP input; ``status`` is the status to answer."""

    def __init__(self, status, message=None):
        self.status = status
        super().__init__(message or f"HTTP {status}")


cdef bytes _as_bytes(str name, object data):
    if isinstance(data, bytes):
        return <bytes>data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{name} must be bytes, got {type(data).__name__}")


cdef int _http_limits(fa_http_limits *lim, object max_request_line, object max_fields,
                      object max_head) except -1:
    lim.max_request_line = _int_arg("max_request_line", max_request_line, 1, HTTP_MAX_LIMIT)
    lim.max_fields = _int_arg("max_fields", max_fields, 0, HTTP_MAX_FIELDS_LIMIT)
    lim.max_head = _int_arg("max_head", max_head, 1, HTTP_MAX_LIMIT)
    return 0


cdef object _head_dict(const char *b, fa_http_head *h, fa_http_field *f):
    cdef uint32_t i
    cdef uint32_t t = h.target_off
    cdef uint32_t m = h.method_off
    headers = []
    for i in range(h.nfields):
        headers.append((b[f[i].name_off:f[i].name_off + f[i].name_len],
                        b[f[i].value_off:f[i].value_off + f[i].value_len]))
    target = b[t:t + h.target_len].decode("ascii")
    return {
        "method": b[m:m + h.method_len].decode("ascii"),
        "target": target,
        "path": target[:h.path_len],
        "query": target[h.path_len + 1:],
        "version": "HTTP/1.1" if h.version_minor == 1 else "HTTP/1.0",
        "headers": headers,
        "content_length": None if h.content_length < 0 else h.content_length,
        "chunked": bool(h.chunked),
        "keep_alive": bool(h.keep_alive),
        "expect_continue": bool(h.expect_continue),
        "upgrade": bool(h.upgrade),
    }


cdef object _parse_head(const char *buf, size_t n, fa_http_scan *scan, fa_http_limits *lim):
    cdef fa_http_head h
    cdef fa_http_field small[_STACK_FIELDS]
    cdef fa_http_field *fields = small
    cdef int rc
    if lim.max_fields > _STACK_FIELDS:
        fields = <fa_http_field *>PyMem_Malloc(lim.max_fields * sizeof(fa_http_field))
        if fields == NULL:
            raise MemoryError()
    try:
        rc = fa_http_parse_head(buf, n, scan, lim, &h, fields)
        if rc <= 0:
            return (rc, None)
        return (rc, _head_dict(buf, &h, fields))
    finally:
        if fields != small:
            PyMem_Free(fields)


def parse_request_head(data, max_request_line=HTTP_DEFAULT_MAX_REQUEST_LINE,
                       max_fields=HTTP_DEFAULT_MAX_FIELDS, max_head=HTTP_DEFAULT_MAX_HEAD):
    """Parse the request head at the start of data (see _core.pyi)."""
    cdef fa_http_limits lim
    cdef fa_http_scan scan
    cdef bytes b = _as_bytes("data", data)
    _http_limits(&lim, max_request_line, max_fields, max_head)
    fa_http_scan_init(&scan)
    return _parse_head(PyBytes_AS_STRING(b), len(b), &scan, &lim)


cdef class HeadParser:
    """A request head fed as it arrives (see _core.pyi)."""
    cdef fa_http_scan scan
    cdef fa_http_limits lim
    cdef bytearray buf
    cdef object result

    def __cinit__(self, max_request_line=HTTP_DEFAULT_MAX_REQUEST_LINE,
                  max_fields=HTTP_DEFAULT_MAX_FIELDS, max_head=HTTP_DEFAULT_MAX_HEAD):
        _http_limits(&self.lim, max_request_line, max_fields, max_head)
        fa_http_scan_init(&self.scan)
        self.buf = bytearray()
        self.result = None

    def feed(self, data):
        """Append data and parse everything fed so far; once the result is
        final (complete or rejected) it is returned again and data ignored."""
        cdef bytes more = _as_bytes("data", data)
        if self.result is not None:
            return self.result
        self.buf += more
        r = _parse_head(PyByteArray_AS_STRING(self.buf), len(self.buf), &self.scan, &self.lim)
        if r[0] != 0:
            self.result = r
        return r

    @property
    def buffered(self):
        """Every byte fed so far."""
        return bytes(self.buf)

    @property
    def scanned(self):
        """Bytes the scan for the end of the head has examined so far."""
        return self.scan.pos


cdef class ChunkedDecoder:
    """Decoder of one chunked request body (see _core.pyi)."""
    cdef fa_http_chunked c

    def __cinit__(self, max_body):
        fa_http_chunked_init(&self.c, _int_arg("max_body", max_body, 0, HTTP_MAX_BODY_LIMIT))

    def feed(self, data):
        """Decode the next bytes; return (body bytes, bytes consumed, done)."""
        cdef bytearray buf = bytearray(_as_bytes("data", data))
        cdef char *p = PyByteArray_AS_STRING(buf)
        cdef size_t consumed = 0
        cdef size_t produced = 0
        # in place: the decoder never writes ahead of what it has read
        rc = fa_http_chunked_feed(&self.c, p, len(buf), p, &consumed, &produced)
        if rc < 0:
            if rc == -413:
                raise HTTPError(413, f"chunked body larger than max_body ({self.c.max_body})")
            raise HTTPError(-rc, "malformed chunked body")
        return (p[:produced], consumed, rc == 1)

    @property
    def done(self):
        """True once the last chunk, the trailer and the final CRLF were read."""
        cdef size_t consumed, produced
        # an empty feed consumes nothing and tells the state
        return fa_http_chunked_feed(&self.c, "", 0, NULL, &consumed, &produced) == 1

    @property
    def body_len(self):
        """Data bytes decoded so far."""
        return self.c.body

    @property
    def max_body(self):
        """The largest body this decoder accepts."""
        return self.c.max_body


def unquote(data):
    """Percent-decode data exactly like urllib.parse.unquote_to_bytes."""
    cdef bytes src = _as_bytes("data", data)
    cdef Py_ssize_t n = len(src)
    if n == 0:
        return b""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef size_t m = fa_http_unquote(PyBytes_AS_STRING(src), n, PyBytes_AS_STRING(out))
    return out if <Py_ssize_t>m == n else out[:m]


# ---------------------------------------------------------------------------
# Requests the accept loop parsed, and the worker's side of HTTP: the WSGI
# environ built from the parsed head in one pass, and a send that does not
# give up the GIL while the socket takes the bytes at once.

from cpython.dict cimport PyDict_Copy
from cpython.unicode cimport PyUnicode_DecodeLatin1

cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    cdef struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    Py_ssize_t sendmsg(int fd, const msghdr *msg, int flags)
    Py_ssize_t recv(int fd, void *buf, size_t n, int flags)
    int shutdown(int fd, int how)
    int SHUT_WR
    int MSG_DONTWAIT
    int MSG_NOSIGNAL
    int MSG_MORE

cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    short POLLOUT
    short POLLIN

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK

#: WSGI environ keys of header names already seen (bytes name -> key, or
#: None for a name the environ leaves out); bounded, so hostile names cannot
#: grow it.
cdef dict _env_keys = {}
cdef int _ENV_KEYS_MAX = 512
cdef dict _methods = {}


cdef object _env_key(const char *name, uint32_t n):
    """HTTP_FOO_BAR for "Foo-Bar"; CONTENT_TYPE, CONTENT_LENGTH; None for a
    name with "_" (it would be indistinguishable from one with "-": a
    client could spoof a header a proxy in front set)."""
    cdef bytes raw = name[:n]
    cdef object key = _env_keys.get(raw, False)
    if key is not False:
        return key
    cdef str text = raw.decode("latin-1")
    if "_" in text:
        key = None
    else:
        up = text.upper().replace("-", "_")
        key = up if up in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + up
    if len(_env_keys) < _ENV_KEYS_MAX:
        _env_keys[raw] = key
    return key


cdef class Request:
    """One HTTP/1.1 request head as the accept loop parsed it, and every byte
    the loop read from the connection after it (``rest``: the body's start,
    or the next pipelined request). Owns its C block."""
    cdef fa_http_req *r

    def __dealloc__(self):
        free(self.r)
        self.r = NULL

    cdef inline char *_buf(self):
        return fa_http_req_buf(self.r)

    @property
    def method(self):
        """The request method (str)."""
        cdef char *b = self._buf()
        return PyUnicode_DecodeLatin1(b + self.r.head.method_off, self.r.head.method_len, NULL)

    @property
    def target(self):
        """The request-target as sent (str)."""
        cdef char *b = self._buf()
        return PyUnicode_DecodeLatin1(b + self.r.head.target_off, self.r.head.target_len, NULL)

    @property
    def version_minor(self):
        """0 for HTTP/1.0, 1 for HTTP/1.1."""
        return self.r.head.version_minor

    @property
    def headers(self):
        """[(name, value)] as bytes, in order (values without surrounding OWS)."""
        cdef char *b = self._buf()
        cdef uint32_t i
        cdef fa_http_field *f
        out = []
        for i in range(self.r.head.nfields):
            f = &self.r.fields[i]
            out.append((b[f.name_off:f.name_off + f.name_len],
                        b[f.value_off:f.value_off + f.value_len]))
        return out

    @property
    def content_length(self):
        """The body's length (int), or None: no Content-Length."""
        return None if self.r.head.content_length < 0 else self.r.head.content_length

    @property
    def chunked(self):
        """True if the body is chunked."""
        return bool(self.r.head.chunked)

    @property
    def keep_alive(self):
        """True if the client may send another request on this connection."""
        return bool(self.r.head.keep_alive)

    @property
    def expect_continue(self):
        """True for an HTTP/1.1 Expect: 100-continue."""
        return bool(self.r.head.expect_continue)

    @property
    def upgrade(self):
        """True for an HTTP/1.1 Connection: upgrade with an Upgrade field."""
        return bool(self.r.head.upgrade)

    @property
    def head_len(self):
        """Bytes of the head."""
        return self.r.head.head_len

    @property
    def rest(self):
        """The bytes read after the head (bytes)."""
        cdef char *b = self._buf()
        return b[self.r.head.head_len:self.r.len]

    def environ(self, dict base):
        """A WSGI environ: a copy of ``base`` plus this request's keys.

        REQUEST_METHOD, PATH_INFO (the path percent-decoded, as latin-1),
        QUERY_STRING, SERVER_PROTOCOL, CONTENT_TYPE and CONTENT_LENGTH when
        sent, and HTTP_* for every other field (several of one name joined
        with ","; a name with "_" left out)."""
        cdef char *b = self._buf()
        cdef fa_http_head *h = &self.r.head
        cdef dict env = PyDict_Copy(base)
        cdef uint32_t i, t = h.target_off, plen = h.path_len, start = 0
        cdef fa_http_field *f
        cdef object key, old
        cdef bytes mraw = b[h.method_off:h.method_off + h.method_len]
        cdef object method = _methods.get(mraw)
        cdef char *path
        cdef size_t n
        cdef char small[512]
        cdef char *out = small
        if method is None:
            method = mraw.decode("latin-1")
            if len(_methods) < 64:
                _methods[mraw] = method
        env["REQUEST_METHOD"] = method
        # origin-form "/p"; absolute-form "http://host/p": the path after the
        # authority; "*" (OPTIONS) and authority-form (CONNECT) have no path:
        # PATH_INFO "", which PEP 3333 allows and "*" would not
        if plen and b[t] != 47:             # not "/"
            if plen > 3:
                for i in range(plen - 2):
                    if b[t + i] == 58 and b[t + i + 1] == 47 and b[t + i + 2] == 47:  # "://"
                        start = i + 3
                        while start < plen and b[t + start] != 47:
                            start += 1
                        break
            if start == 0:
                start = plen
        path = b + t + start
        n = plen - start
        if n > sizeof(small):
            out = <char *>malloc(n)
            if out == NULL:
                raise MemoryError()
        try:
            n = fa_http_unquote(path, n, out)
            env["PATH_INFO"] = PyUnicode_DecodeLatin1(out, n, NULL)
        finally:
            if out != small:
                free(out)
        if h.path_len < h.target_len:
            env["QUERY_STRING"] = PyUnicode_DecodeLatin1(b + t + h.path_len + 1,
                                                         h.target_len - h.path_len - 1, NULL)
        else:
            env["QUERY_STRING"] = ""
        env["SERVER_PROTOCOL"] = "HTTP/1.1" if h.version_minor == 1 else "HTTP/1.0"
        for i in range(h.nfields):
            f = &self.r.fields[i]
            key = _env_key(b + f.name_off, f.name_len)
            if key is None:
                continue
            value = PyUnicode_DecodeLatin1(b + f.value_off, f.value_len, NULL)
            if key in env:
                env[key] = env[key] + "," + value
            else:
                env[key] = value
        return env


def send_all(int fd, bufs, timeout=None, bint last=False):
    """Send every byte of ``bufs`` (a sequence of bytes-like objects) on fd,
    in as few sendmsg() calls as the socket allows; return the bytes sent.

    Each call is nonblocking and made with the GIL held, so a response the
    send buffer takes at once (nearly all) costs one system call and no GIL
    hand-off; only when the buffer is full does it release the GIL and poll,
    at most ``timeout`` seconds (None: for ever) per wait. Raise TimeoutError
    then, or OSError with the errno (BrokenPipeError, ConnectionResetError).

    ``last``: these are the last bytes of the connection. They are sent with
    MSG_MORE, then shutdown(SHUT_WR) sends the FIN, which joins the tail
    the MSG_MORE held back: the peer gets the end of the bytes and the FIN
    in one segment (one wake-up) instead of two, and the close after costs
    the sender less (its FIN is out)."""
    cdef iovec iov[16]
    cdef msghdr msg
    cdef list views = [memoryview(x) for x in bufs]
    cdef Py_ssize_t nb = len(views), first = 0, k
    cdef int flags = MSG_DONTWAIT | MSG_NOSIGNAL | (MSG_MORE if last else 0)
    cdef size_t off = 0, total = 0, sent_now
    cdef Py_ssize_t rc
    cdef int err
    cdef int64_t wait_ns = _timeout_ns(timeout)
    cdef const unsigned char[:] v
    cdef int ms = -1 if wait_ns < 0 else <int>((wait_ns + 999999) // 1000000)
    cdef list cviews = []
    for x in views:
        cviews.append(x.cast("B") if x.ndim == 1 and x.format != "B" else x)
    while first < nb:
        k = 0
        memset(&msg, 0, sizeof(msg))
        while first + k < nb and k < 16:
            v = cviews[first + k]
            if k == 0:
                iov[0].iov_base = <void *>(&v[0] + off) if v.shape[0] > off else NULL
                iov[0].iov_len = v.shape[0] - off
            else:
                iov[k].iov_base = <void *>&v[0] if v.shape[0] else NULL
                iov[k].iov_len = v.shape[0]
            k += 1
        msg.msg_iov = iov
        msg.msg_iovlen = k
        rc = sendmsg(fd, &msg, flags)
        if rc < 0:
            _on_io_error(errno, fd, POLLOUT, ms)
            continue
        sent_now = <size_t>rc
        total += sent_now
        # advance past what went out
        while sent_now and first < nb:
            v = cviews[first]
            if v.shape[0] - off <= sent_now:
                sent_now -= v.shape[0] - off
                first += 1
                off = 0
            else:
                off += sent_now
                sent_now = 0
        while first < nb:
            v = cviews[first]
            if v.shape[0] != off:
                break
            first += 1
            off = 0
    if last:
        while shutdown(fd, SHUT_WR) < 0:
            err = errno
            if err != EINTR:
                raise OSError(err, _os.strerror(err))
            PyErr_CheckSignals()
    return total


cdef int _on_io_error(int err, int fd, short events, int ms) except -1:
    """After a nonblocking send or receive on fd failed with err: for EINTR,
    run the signal handlers (they may raise); for EAGAIN, poll fd for
    events without the GIL, up to ms (-1: for ever), TimeoutError at the
    end; else raise OSError(err). Returning means: try again."""
    cdef pollfd pfd
    cdef int prc
    if err == EINTR:
        PyErr_CheckSignals()
        return 0
    if err != EAGAIN and err != EWOULDBLOCK:
        raise OSError(err, _os.strerror(err))
    pfd.fd = fd
    pfd.events = events
    with nogil:
        prc = poll(&pfd, 1, ms)
    if prc == 0:
        raise TimeoutError("timed out")
    if prc < 0:
        err = errno
        if err != EINTR:
            raise OSError(err, _os.strerror(err))
        PyErr_CheckSignals()
    return 0


def recv_some(int fd, Py_ssize_t size, timeout=None):
    """Read up to ``size`` bytes from fd (a connected socket) and return
    them; b"" at the end of the input.

    As ``send_all``: the read is nonblocking and made with the GIL held, so
    bytes that are already there cost one system call and no GIL hand-off;
    only when there are none does it release the GIL and poll, at most
    ``timeout`` seconds (None: for ever). Raise TimeoutError then, or
    OSError with the errno (ConnectionResetError)."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    cdef int64_t wait_ns = _timeout_ns(timeout)
    cdef int ms = -1 if wait_ns < 0 else <int>((wait_ns + 999999) // 1000000)
    cdef Py_ssize_t rc
    cdef char *buf
    if size == 0:
        return b""
    buf = <char *>PyMem_Malloc(<size_t>size)
    if buf == NULL:
        raise MemoryError()
    try:
        while True:
            rc = recv(fd, buf, <size_t>size, MSG_DONTWAIT)
            if rc >= 0:
                return PyBytes_FromStringAndSize(buf, rc)
            _on_io_error(errno, fd, POLLIN, ms)
    finally:
        PyMem_Free(buf)


# ---------------------------------------------------------------------------
# PROXY protocol headers, versions 1 and 2 (src/fa_proxy.h)
#
# The accept loop calls this C on the first bytes of each connection behind
# a load balancer; parse_proxy_header gives Python callers and the tests the
# same parser.

PROXY_V1_MAX = FA_PROXY_V1_MAX
PROXY_DEFAULT_MAX_LEN = FA_PROXY_DEFAULT_MAX_LEN
PROXY_MIN_MAX_LEN = FA_PROXY_MIN_MAX_LEN
PROXY_MAX_MAX_LEN = FA_PROXY_MAX_MAX_LEN
#: parse_proxy_header's results below zero, by name.
PROXY_ENOTPROXY = FA_PROXY_ENOTPROXY
PROXY_EMALFORMED = FA_PROXY_EMALFORMED
PROXY_EVERSION = FA_PROXY_EVERSION
PROXY_ECOMMAND = FA_PROXY_ECOMMAND
PROXY_EFAMILY = FA_PROXY_EFAMILY
PROXY_ETOOLONG = FA_PROXY_ETOOLONG
PROXY_ECHECKSUM = FA_PROXY_ECHECKSUM
#: A short description of each result below zero.
PROXY_ERRORS = {rc: fa_proxy_strerror(rc).decode("ascii") for rc in (
    FA_PROXY_ENOTPROXY, FA_PROXY_EMALFORMED, FA_PROXY_EVERSION, FA_PROXY_ECOMMAND,
    FA_PROXY_EFAMILY, FA_PROXY_ETOOLONG, FA_PROXY_ECHECKSUM)}
#: The name of each result below zero, as the C names it without FA_PROXY_:
#: the keys of stats()["proxy_rejected"], as errno names key accept_errors.
PROXY_ERROR_NAMES = {
    FA_PROXY_ENOTPROXY: "ENOTPROXY", FA_PROXY_EMALFORMED: "EMALFORMED",
    FA_PROXY_EVERSION: "EVERSION", FA_PROXY_ECOMMAND: "ECOMMAND", FA_PROXY_EFAMILY: "EFAMILY",
    FA_PROXY_ETOOLONG: "ETOOLONG", FA_PROXY_ECHECKSUM: "ECHECKSUM"}

# family (high nibble) and transport (low nibble) as the spec names them
_PROXY_FAMILIES = {
    (FA_PROXY_AF_UNSPEC, FA_PROXY_UNSPEC): "UNKNOWN",
    (FA_PROXY_AF_INET, FA_PROXY_STREAM): "TCP4",
    (FA_PROXY_AF_INET, FA_PROXY_DGRAM): "UDP4",
    (FA_PROXY_AF_INET6, FA_PROXY_STREAM): "TCP6",
    (FA_PROXY_AF_INET6, FA_PROXY_DGRAM): "UDP6",
    (FA_PROXY_AF_UNIX, FA_PROXY_STREAM): "UNIX",
    (FA_PROXY_AF_UNIX, FA_PROXY_DGRAM): "UNIX_DGRAM",
}


cdef object _proxy_dict(const char *b, const fa_proxy_result *r):
    cdef uint32_t off = r.tlv_off
    cdef uint32_t end = r.tlv_off + r.tlv_len
    cdef uint32_t vlen
    tlvs = []
    while off < end:                 # the parser checked that each TLV fits
        vlen = (<unsigned char>b[off + 1]) << 8 | <unsigned char>b[off + 2]
        tlvs.append((<unsigned char>b[off], b[off + 3:off + 3 + vlen]))
        off += 3 + vlen
    return {
        "version": r.version,
        "command": "PROXY" if r.command == FA_PROXY_PROXY else "LOCAL",
        "family": _PROXY_FAMILIES[(r.family, r.transport)],
        "src": _sockaddr_object(&r.src, r.src_len),
        "dst": _sockaddr_object(&r.dst, r.dst_len),
        "header_len": r.header_len,
        "tlvs": tlvs,
        "authority": (b[r.authority_off:r.authority_off + r.authority_len]
                      if r.has_authority else None),
        "ssl": (r.ssl_client, r.ssl_verify) if r.has_ssl else None,
        "crc32c": bool(r.has_crc32c),
    }


def parse_proxy_header(data, max_len=FA_PROXY_DEFAULT_MAX_LEN):
    """Parse the PROXY protocol header at the start of data (see _core.pyi)."""
    cdef bytes b = _as_bytes("data", data)
    cdef size_t limit = _int_arg("max_len", max_len, FA_PROXY_MIN_MAX_LEN, FA_PROXY_MAX_MAX_LEN)
    cdef fa_proxy_result r
    cdef const char *p = PyBytes_AS_STRING(b)
    cdef size_t n = len(b)
    cdef int rc
    with nogil:
        rc = fa_proxy_parse_max(p, n, limit, &r)
    if rc <= 0:
        return (rc, None)
    return (rc, _proxy_dict(p, &r))


def proxy_crc32c(data, crc=0):
    """CRC32c (Castagnoli) of data, continuing from crc: the checksum a
    version 2 PP2_TYPE_CRC32C TLV carries."""
    cdef bytes b = _as_bytes("data", data)
    cdef uint32_t start = _int_arg("crc", crc, 0, 0xFFFFFFFF)
    return fa_proxy_crc32c(start, PyBytes_AS_STRING(b), len(b))

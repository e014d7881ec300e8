# cython: language_level=3, boundscheck=False, wraparound=False
"""The native core of fastaccept: a GIL-free accept loop and its ring.

This module is a thin adapter over the C in ``src/``: it turns C results into
Python objects and negative errno values into ``OSError``. See ``_core.pyi``
for the typed surface.
"""
import errno as _errno
import os as _os

from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset
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


cdef object _os_error(int rc):
    return OSError(-rc, _os.strerror(-rc))


cdef object _peer_address(fa_conn *c):
    """Build the address tuple Python's socket module would report."""
    cdef char host[64]
    cdef int family = c.addr.ss_family
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    cdef sockaddr_un *un
    cdef size_t n
    if family == AF_INET:
        v4 = <sockaddr_in *>&c.addr
        inet_ntop(AF_INET, &v4.sin_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v4.sin_port))
    if family == AF_INET6:
        v6 = <sockaddr_in6 *>&c.addr
        inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(v6.sin6_port),
                ntohl(v6.sin6_flowinfo), v6.sin6_scope_id)
    if family == AF_UNIX:
        if c.addrlen <= offsetof_sun_path:
            return ""
        un = <sockaddr_un *>&c.addr
        n = c.addrlen - offsetof_sun_path
        if un.sun_path[0] == 0:          # abstract namespace: raw bytes
            return un.sun_path[:n]
        return _os.fsdecode(un.sun_path[:strnlen(un.sun_path, n)])
    if family == AF_UNSPEC:
        return None
    return (family, (<char *>&c.addr)[:c.addrlen])


cdef int64_t _timeout_ns(object timeout) except -2:
    if timeout is None:
        return -1
    t = float(timeout)
    if not t >= 0.0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout!r}")
    if t > 1e9:
        return -1
    return <int64_t>(t * 1e9)


cdef object _pop(fa_ring *ring, fa_lot *lot, object timeout):
    """Shared by Ring.pop and Acceptor.pop: wait without the GIL."""
    cdef fa_conn c
    cdef int rc
    cdef int64_t left_ns = _timeout_ns(timeout)
    cdef uint64_t deadline_ns = 0
    # Ready work is taken with the GIL held: releasing and re-taking it for
    # a pop that cannot block would cost a GIL hand-off per connection.
    if fa_try_pop(ring, lot, &c) == 0:
        return (c.fd, _peer_address(&c), c.accepted_ns)
    if left_ns >= 0:
        deadline_ns = fa_now_ns() + <uint64_t>left_ns
    while True:
        with nogil:
            rc = fa_pop_wait(ring, lot, &c, left_ns)
        if rc == 0:
            return (c.fd, _peer_address(&c), c.accepted_ns)
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
        if fa_ring_push(&self.ring, &c) < 0:
            return False
        fa_lot_wake_one(&self.lot)
        return True

    def pop(self, timeout=None):
        """Return (fd, None, queued_ns), or None on timeout or once closed and empty."""
        self.waiters += 1
        try:
            return _pop(&self.ring, &self.lot, timeout)
        finally:
            self.waiters -= 1

    def close(self):
        """Refuse further pushes; waiters drain what is left, then get None."""
        fa_lot_close(&self.lot)


cdef enum AcceptorState:
    IDLE = 0
    RUNNING = 1
    DONE = 2


cdef class Acceptor:
    """The GIL-free accept loop over one listening socket and its ring.

    ``run()`` blocks (without the GIL) until ``stop()`` or ``abort()``;
    worker threads call ``pop()`` to take accepted connections. The caller
    keeps ownership of the listening fd, which is switched to nonblocking.
    """
    cdef fa_acceptor a
    cdef bint ready
    cdef AcceptorState state
    cdef int waiters
    cdef pid_t pid
    cdef readonly int fd

    def __cinit__(self, int fd, ring_size=4096, max_batch=DEFAULT_MAX_BATCH):
        cap = int(ring_size)
        if not (0 <= cap < 2**63 and fa_ring_capacity_ok(cap)):
            raise ValueError(
                f"ring_size must be a power of two in [{FA_RING_MIN_CAPACITY}, "
                f"{FA_RING_MAX_CAPACITY}], got {ring_size!r}")
        batch = int(max_batch)
        if not 1 <= batch <= 65536:
            raise ValueError(f"max_batch must be in [1, 65536], got {max_batch!r}")
        if fd < 0:
            raise ValueError(f"fd must be a listening socket's descriptor, got {fd}")
        rc = fa_acceptor_init(&self.a, fd, cap, batch)
        if rc < 0:
            raise _os_error(rc)
        self.fd = fd
        self.ready = True
        self.state = IDLE
        self.pid = getpid()

    def __dealloc__(self):
        # In a forked child the C state is a copy whose threads do not exist
        # (its mutex may be held forever): leave it alone.
        if self.ready and self.pid == getpid():
            fa_acceptor_destroy(&self.a)
        self.ready = False

    cdef int _check(self) except -1:
        if not self.ready:
            raise ValueError("acceptor is closed")
        if self.pid != getpid():
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
    def running(self):
        """True while run() is executing."""
        return self.state == RUNNING

    def run(self):
        """Accept until stop() or abort(), with the GIL released throughout.

        Raise OSError if accept4() or epoll fails with an error the loop cannot
        recover from. Either way the ring is closed when this returns.
        """
        cdef int rc
        self._check()
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
            self.state = DONE
            fa_lot_close(&self.a.lot)

    def abort(self):
        """Stop at once, without the final drain; close the ring."""
        self._check()
        fa_acceptor_abort(&self.a)
        if self.state == IDLE:
            self.state = DONE
            fa_lot_close(&self.a.lot)

    def pop(self, timeout=None):
        """Return (fd, peer_address, accepted_ns), or None on timeout or
        once the ring is closed and empty. Waits without the GIL."""
        self._check()
        self.waiters += 1
        try:
            return _pop(&self.a.ring, &self.a.lot, timeout)
        finally:
            self.waiters -= 1

    def stats(self):
        """Return the loop's counters as a dict."""
        self._check()
        errors = {}
        cdef int e
        cdef uint64_t n
        for e in range(1, FA_ERRNO_SLOTS):
            n = fa_stat_errors(&self.a, e)
            if n:
                errors[_errno.errorcode.get(e, f"E{e}")] = n
        return {
            "accepted": fa_stat_accepted(&self.a),
            "accept_errors": errors,
            "emfile_pauses": fa_stat_emfile_pauses(&self.a),
            "ring_depth": fa_ring_depth(&self.a.ring),
            "ring_high_water": fa_ring_high_water(&self.a.ring),
            "ring_full_waits": fa_stat_ring_full_waits(&self.a),
            "ring_capacity": self.a.ring.capacity,
            "accept_batches": fa_stat_batches(&self.a),
            "workers_parked": fa_lot_parked(&self.a.lot),
            "worker_wakeups": fa_lot_wake_calls(&self.a.lot),
            "worker_sleeps": fa_lot_sleeps(&self.a.lot),
        }

    def discard(self):
        """Close every accepted connection still queued; return how many.

        For a shutdown that cannot wait for busy workers: safe while other
        threads pop, since each entry is taken exactly once."""
        cdef fa_conn c
        cdef int n = 0
        self._check()
        while fa_ring_pop(&self.a.ring, &c) == 0:
            close(c.fd)
            n += 1
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

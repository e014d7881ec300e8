#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fa_accept.h"
#include "fa_accept_errno.h"
#include "fa_fdtable.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <unistd.h>

/* The accept loop is the only writer of its counters, so a relaxed
 * load-and-store is enough and avoids a locked instruction per connection. */
static inline void count(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static inline void count_errno(fa_acceptor *a, int err)
{
    count(&a->stats.errors[err > 0 && err < FA_ERRNO_SLOTS ? err : FA_ERRNO_SLOTS - 1]);
}

int fa_acceptor_init(fa_acceptor *a, int listen_fd, uint64_t capacity, uint32_t max_batch)
{
    int rc;
    memset(a, 0, sizeof *a);
    a->listen_fd = listen_fd;
    a->epoll_fd = -1;
    a->stop_fd = -1;
    a->placeholder_fd = -1;
    if (max_batch < 1 || listen_fd < 0)
        return -EINVAL;
    a->max_batch = max_batch;
    a->spin_ns = FA_SPIN_DEFAULT_NS;
    a->nap_ns = FA_NAP_DEFAULT_NS;

    int flags = fcntl(listen_fd, F_GETFL);
    if (flags < 0)
        return -errno;
    if (!(flags & O_NONBLOCK) && fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;

    rc = fa_ring_init(&a->ring, capacity);
    if (rc < 0)
        return rc;
    rc = fa_lot_init(&a->lot);
    if (rc < 0)
        goto fail_ring;

    a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->stop_fd < 0) {
        rc = -errno;
        goto fail_lot;
    }
    a->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (a->epoll_fd < 0) {
        rc = -errno;
        goto fail_stop;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = a->stop_fd};
    if (epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, a->stop_fd, &ev) < 0) {
        rc = -errno;
        goto fail_epoll;
    }
    ev.data.fd = listen_fd;
    if (epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) < 0) {
        rc = -errno;
        goto fail_epoll;
    }
    /* Made now so that ending listening cannot fail for want of an fd. */
    a->placeholder_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->placeholder_fd < 0) {
        rc = -errno;
        goto fail_epoll;
    }
    fa_grow_fd_table(listen_fd, capacity + FA_FD_SLACK);
    return 0;

fail_epoll:
    close(a->epoll_fd);
    a->epoll_fd = -1;
fail_stop:
    close(a->stop_fd);
    a->stop_fd = -1;
fail_lot:
    fa_lot_destroy(&a->lot);
fail_ring:
    fa_ring_destroy(&a->ring, 1);
    return rc;
}

int fa_acceptor_set_spin(fa_acceptor *a, uint32_t spin_ns)
{
    if (spin_ns > FA_SPIN_MAX_NS)
        return -EINVAL;
    a->spin_ns = spin_ns;
    return 0;
}

int fa_acceptor_set_nap(fa_acceptor *a, uint32_t nap_ns)
{
    if (nap_ns > FA_NAP_MAX_NS)
        return -EINVAL;
    a->nap_ns = nap_ns;
    return 0;
}

int fa_acceptor_set_end_listen(fa_acceptor *a, int how)
{
    if (how != FA_END_RELEASE && how != FA_END_KEEP)
        return -EINVAL;
    atomic_store(&a->end_listen, how);
    return 0;
}

int fa_acceptor_set_overload(fa_acceptor *a, int policy, const void *response, size_t len)
{
    if ((policy != FA_OVERLOAD_QUEUE && policy != FA_OVERLOAD_SHED) ||
        len > FA_SHED_RESPONSE_MAX || (len > 0 && response == NULL))
        return -EINVAL;
    char *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL)
            return -ENOMEM;
        memcpy(copy, response, len);
    }
    free(a->shed_response);
    a->shed_response = copy;
    a->shed_len = (uint32_t)len;
    a->overload = policy;
    return 0;
}

void fa_acceptor_destroy(fa_acceptor *a)
{
    free(a->shed_response);
    a->shed_response = NULL;
    a->shed_len = 0;
    if (a->epoll_fd >= 0)
        close(a->epoll_fd);
    if (a->stop_fd >= 0)
        close(a->stop_fd);
    if (a->placeholder_fd >= 0)
        close(a->placeholder_fd);
    a->epoll_fd = a->stop_fd = a->placeholder_fd = -1;
    fa_lot_destroy(&a->lot);
    fa_ring_destroy(&a->ring, 1);
}

static void signal_stop_fd(fa_acceptor *a)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already nonzero: the loop will wake. */
    while (write(a->stop_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void fa_acceptor_stop(fa_acceptor *a)
{
    atomic_store(&a->stopping, 1);
    signal_stop_fd(a);
    fa_lot_wake_napper(&a->lot);    /* a nap would delay the stop by nap_ns */
}

void fa_acceptor_abort(fa_acceptor *a)
{
    atomic_store(&a->aborting, 1);
    atomic_store(&a->stopping, 1);
    signal_stop_fd(a);
    /* the loop may sleep in fa_wait_space rather than epoll_wait */
    atomic_fetch_add_explicit(&a->lot.space_word, 1, memory_order_release);
    fa_futex_wake(&a->lot.space_word, INT_MAX);
}

enum batch_end { QUEUE_EMPTY, BATCH_DONE, RING_FULL, PAUSE };

/*
 * Answers a connection the ring has no room for and closes it, without ever
 * blocking (fd is nonblocking): the response goes out in one send() as far
 * as the send buffer takes it, followed at once by a FIN (shutdown), so the
 * peer reads the response and then EOF. The input that has already arrived
 * (the request, typically) is read and discarded: closing a socket with
 * unread input sends a reset. Input arriving later still draws a reset, but
 * after the FIN, so the peer's reads are unaffected (only its writes fail).
 * Errors only mean the peer is gone; nothing more can be done for it.
 */
static void shed(fa_acceptor *a, int fd)
{
    char sink[4096];
    if (a->shed_len > 0)
        while (send(fd, a->shed_response, a->shed_len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
               errno == EINTR)
            ;
    shutdown(fd, SHUT_WR);
    for (uint32_t taken = 0; taken < FA_SHED_DISCARD_MAX;) {
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        taken += (uint32_t)n;
        if ((size_t)n < sizeof sink)
            break;          /* the queue is empty: saves the EAGAIN call */
    }
    /* counted before the close, so that a peer that has seen its EOF finds
     * itself counted */
    count(&a->stats.shed);
    close(fd);
}

/*
 * Accepts up to limit connections. Returns a batch_end, or -errno for an
 * error that must end the loop. *pushed counts what reached the ring; shed
 * connections count towards limit but not in *pushed.
 */
static int accept_batch(fa_acceptor *a, uint32_t limit, uint32_t *pushed)
{
    fa_conn c;
    uint32_t n = 0;
    *pushed = 0;
    while (n < limit) {
        /* Under the queue policy, never accept a connection the ring cannot
         * hold: leave it in the kernel queue instead of dropping it. (Not
         * depth >= capacity: a pop still copying its entry out holds its
         * slot after head moved.) Under the shed policy, accept it to answer
         * it at once, nonblocking so that answer cannot stall the loop. */
        int full = fa_ring_full(&a->ring);
        if (full && a->overload != FA_OVERLOAD_SHED)
            return RING_FULL;
        c.addrlen = sizeof c.addr;
        int fd = accept4(a->listen_fd, (struct sockaddr *)&c.addr, &c.addrlen,
                         full ? SOCK_CLOEXEC | SOCK_NONBLOCK : SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            switch (fa_accept_failure_of(err)) {
            case FA_ACCEPT_EMPTY:
                return QUEUE_EMPTY;
            case FA_ACCEPT_RETRY:
                continue;
            case FA_ACCEPT_SKIP:
                count_errno(a, err);
                n++;
                continue;
            case FA_ACCEPT_PAUSE:
                count_errno(a, err);
                return PAUSE;
            case FA_ACCEPT_FATAL:
                break;
            }
            count_errno(a, err);
            return -err;
        }
        if (full) {
            shed(a, fd);
            n++;
            continue;
        }
        c.fd = fd;
        c.accepted_ns = fa_now_ns();
        if (fa_ring_push(&a->ring, &c) < 0) {
            /* Unreachable with one producer (depth was checked above); if
             * it ever happens, close rather than leak. */
            close(fd);
            count_errno(a, ENOBUFS);
            return RING_FULL;
        }
        count(&a->stats.accepted);
        (*pushed)++;
        n++;
    }
    return BATCH_DONE;
}

/* Sleeps up to ms milliseconds, or until stop/abort is signalled. */
static int pause_ms(fa_acceptor *a, int ms)
{
    struct pollfd p = {.fd = a->stop_fd, .events = POLLIN};
    if (poll(&p, 1, ms) < 0 && errno != EINTR)
        return -errno;
    return 0;
}

/* How many connections wait in the kernel accept queue now, or -1 if the
 * socket cannot tell (not TCP). For a LISTEN socket Linux reports the
 * queue length in tcpi_unacked. */
static int64_t queued_now(fa_acceptor *a)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(a->listen_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        ti.tcpi_state != 10 /* TCP_LISTEN */)
        return -1;
    return ti.tcpi_unacked;
}

/* Accepts what was queued when the stop was asked for, so those clients are
 * served rather than reset when the listening socket closes. */
static int final_drain(fa_acceptor *a)
{
    int64_t left = queued_now(a);
    if (left < 0)
        left = (int64_t)a->ring.capacity + 4096;   /* bounded even if unknown */
    while (left > 0 && !atomic_load(&a->aborting)) {
        uint32_t pushed = 0;
        uint32_t limit = left < (int64_t)a->max_batch ? (uint32_t)left : a->max_batch;
        uint64_t shed_before = fa_stat_shed(a);
        int rc = accept_batch(a, limit, &pushed);
        /* Shed connections use up the budget too, or a steady stream of new
         * ones arriving during the drain under the shed policy would keep
         * it going for ever. */
        left -= (int64_t)(pushed + (fa_stat_shed(a) - shed_before));
        if (pushed)
            fa_lot_wake_one(&a->lot);
        if (rc < 0)
            return rc;
        if (rc == QUEUE_EMPTY || rc == PAUSE)
            break;
        if (rc == RING_FULL) {
            count(&a->stats.ring_full_waits);
            if (fa_wait_space(&a->ring, &a->lot, &a->aborting, -1) < 0)
                break;
        }
    }
    return 0;
}

/*
 * Asks the scheduler for a short time slice for this thread (Linux 6.12+
 * EEVDF custom slices; older kernels ignore the field). The loop sleeps
 * between bursts, and the wake-up that starts a burst often places it on a
 * CPU busy with someone else (the socket wake-up is a "sync" wake-up, which
 * pulls it next to the waker). With the default slice it then waited for
 * that task's slice to end: the first accept of a burst came 3-4 ms after
 * the first connection, while a 128 backlog fills in under 2 ms. A short
 * slice lets it preempt at once; it needs no privilege. Returns 1 if the
 * old attributes were saved in *saved (to restore), else 0.
 */
/* struct sched_attr of the kernel ABI (SCHED_ATTR_SIZE_VER0); glibc has no
 * wrapper and <linux/sched/types.h> clashes with <sched.h>. */
struct fa_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};
_Static_assert(sizeof(struct fa_sched_attr) == 48, "SCHED_ATTR_SIZE_VER0 is 48 bytes");

static int request_short_slice(struct fa_sched_attr *saved)
{
    struct fa_sched_attr attr;
    memset(saved, 0, sizeof *saved);
    if (syscall(SYS_sched_getattr, 0, saved, sizeof *saved, 0) < 0)
        return 0;
    if (saved->sched_policy != SCHED_OTHER)
        return 0;                       /* leave RT/batch/idle choices alone */
    attr = *saved;
    attr.size = sizeof attr;
    attr.sched_flags = 0;
    attr.sched_runtime = FA_ACCEPT_SLICE_NS;
    if (syscall(SYS_sched_setattr, 0, &attr, 0) < 0)
        return 0;                       /* EINVAL/EPERM: keep the default */
    return 1;
}

/* Ends listening after the final drain (see end_listen in fa_accept.h). */
static void end_listening(fa_acceptor *a)
{
    /* ENOENT/EBADF: already gone; nothing else can fail here */
    epoll_ctl(a->epoll_fd, EPOLL_CTL_DEL, a->listen_fd, NULL);
    if (atomic_load(&a->end_listen) != FA_END_RELEASE || a->placeholder_fd < 0)
        return;
    /* Atomic: listen_fd is never a free number another thread could take. */
    while (dup2(a->placeholder_fd, a->listen_fd) < 0 && errno == EINTR)
        ;
    close(a->placeholder_fd);
    a->placeholder_fd = -1;
}

/* Signals the kernel delivers to the thread that caused them. Blocking one
 * of those does not stop it: the kernel kills the process with the default
 * action instead, before faulthandler could print where it happened. */
static const int synchronous_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};

int fa_acceptor_run(fa_acceptor *a)
{
    sigset_t all, old;
    sigfillset(&all);
    for (size_t i = 0; i < sizeof synchronous_signals / sizeof synchronous_signals[0]; i++)
        sigdelset(&all, synchronous_signals[i]);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    struct fa_sched_attr sched_saved;
    int restore_sched = request_short_slice(&sched_saved);

    struct epoll_event events[2];
    int backoff_ms = 0;
    int rc = 0;
    uint64_t spin_until_ns = 0;     /* 0: not polling */
    /* How long the last epoll_wait slept: a stream denser than one
     * connection per nap_ns is worth napping for, a sparser one is not (a
     * nap that finds nothing costs a wake-up of its own). */
    uint64_t slept_ns = UINT64_MAX;
    int nap_next = 0;
    for (;;) {
        int napped = 0;
        if (atomic_load(&a->stopping))
            break;
        if (spin_until_ns && fa_now_ns() < spin_until_ns) {
            /* A burst is arriving: try accept4 again without sleeping. */
        } else if (backoff_ms > 0) {
            /* Out of fds or memory: the listening socket stays readable, so
             * waiting on it would spin. Wait on the stop fd alone. */
            rc = pause_ms(a, backoff_ms);
            if (rc < 0)
                break;
        } else if (nap_next) {
            /* The workers are busy with what we gave them: let connections
             * gather in the kernel queue rather than wake for each one. */
            nap_next = 0;
            napped = 1;
            count(&a->stats.naps);
            fa_nap(&a->ring, &a->lot, (int64_t)a->nap_ns);
        } else {
            spin_until_ns = 0;
            uint64_t t0 = fa_now_ns();
            int n = epoll_wait(a->epoll_fd, events, 2, -1);
            slept_ns = fa_now_ns() - t0;
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                rc = -errno;
                break;
            }
        }
        if (atomic_load(&a->stopping))
            break;

        uint32_t pushed = 0;
        int end = accept_batch(a, a->max_batch, &pushed);
        if (pushed) {
            /* Poll on only when the kernel queue had built up while we slept
             * (or we are polling already): then the wake-up latency is what
             * lets it overflow. Connections arriving one by one are cheaper
             * to sleep for, and polling would burn a CPU under steady load.
             * A batch gathered by a nap is expected to be large and is no
             * sign of a burst. */
            if (a->spin_ns && !napped &&
                (spin_until_ns || pushed >= FA_SPIN_TRIGGER || end == BATCH_DONE))
                spin_until_ns = fa_now_ns() + a->spin_ns;
            count(&a->stats.batches);
            /* Workers already running may have taken the whole batch; then
             * waking a parked one would only put it back to sleep. */
            if (fa_ring_depth(&a->ring) > 0) {
                fa_lot_wake_one(&a->lot);
                nap_next = a->nap_ns && !spin_until_ns && end == QUEUE_EMPTY &&
                           (napped || slept_ns < a->nap_ns);
            }
        }
        if (end < 0) {
            rc = end;
            break;
        }
        if (end == PAUSE) {
            spin_until_ns = 0;      /* no polling while out of fds */
            count(&a->stats.emfile_pauses);
            backoff_ms = backoff_ms == 0 ? FA_BACKOFF_MIN_MS : backoff_ms * 2;
            if (backoff_ms > FA_BACKOFF_MAX_MS)
                backoff_ms = FA_BACKOFF_MAX_MS;
            continue;
        }
        backoff_ms = 0;
        if (end == RING_FULL) {
            count(&a->stats.ring_full_waits);
            /* Only an abort or close ends this wait; a stop waits too, since
             * the final drain needs the same space. */
            if (fa_wait_space(&a->ring, &a->lot, &a->aborting, -1) < 0)
                break;
        }
    }
    if (rc == 0 && !atomic_load(&a->aborting))
        rc = final_drain(a);
    end_listening(a);
    fa_lot_close(&a->lot);
    if (restore_sched) {
        sched_saved.size = sizeof sched_saved;
        sched_saved.sched_flags = 0;
        syscall(SYS_sched_setattr, 0, &sched_saved, 0);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/*
 * fa_accept.c - the accept loop (see fa_accept.h for what it does and why).
 *
 * One thread owns the loop, the epoll set and the table of waiting
 * connections. Workers reach it only through atomics: the ring (they pop),
 * the way back (they push kept connections), the open-connection count and
 * the eventfd they kick it awake with. The kicks are Dekker handshakes with
 * seq_cst fences, like the parking in fa_park.h: the loop announces that it
 * may sleep (loop_sleeping, or the lot's producer_waiting for ring space),
 * fences, and looks once more at what a worker could have changed; a worker
 * changes it, fences, and kicks if the loop announced a sleep. Either the
 * loop sees the change or the worker sees the announcement.
 */
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
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The listener's and the eventfd's epoll cookies: no connection's cookie
 * (a descriptor in the low half) can equal them. */
#define COOKIE_LISTEN UINT64_MAX
#define COOKIE_WAKE (UINT64_MAX - 1)

/* The accept loop is the only writer of most counters, so a relaxed
 * load-and-store is enough and avoids a locked instruction per connection. */
static inline void count(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static inline void gauge_add(_Atomic uint64_t *g, int64_t d)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + (uint64_t)d,
                          memory_order_relaxed);
}

static inline void count_errno(fa_acceptor *a, int err)
{
    count(&a->stats.errors[err > 0 && err < FA_ERRNO_SLOTS ? err : FA_ERRNO_SLOTS - 1]);
}

static uint64_t backq_capacity(uint32_t max_conns)
{
    return (uint64_t)max_conns + 1;
}

int fa_acceptor_init(fa_acceptor *a, int listen_fd, uint64_t capacity, uint32_t max_batch)
{
    int rc;
    memset(a, 0, sizeof *a);
    a->listen_fd = listen_fd;
    a->epoll_fd = -1;
    a->wake_fd = -1;
    a->placeholder_fd = -1;
    if (max_batch < 1 || listen_fd < 0)
        return -EINVAL;
    a->max_batch = max_batch;
    a->spin_ns = FA_SPIN_DEFAULT_NS;
    a->nap_ns = FA_NAP_DEFAULT_NS;
    a->dispatch = FA_DISPATCH_ACCEPT;
    a->max_conns = FA_MAX_CONNS_DEFAULT;

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
    rc = fa_conns_init(&a->conns, (uint32_t)capacity + FA_FD_SLACK);
    if (rc < 0)
        goto fail_lot;
    rc = fa_backq_init(&a->back, backq_capacity(a->max_conns));
    if (rc < 0)
        goto fail_conns;

    a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->wake_fd < 0) {
        rc = -errno;
        goto fail_backq;
    }
    a->lot.wake_fd = a->wake_fd;
    a->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (a->epoll_fd < 0) {
        rc = -errno;
        goto fail_wake;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = COOKIE_WAKE};
    if (epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, a->wake_fd, &ev) < 0) {
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
fail_wake:
    close(a->wake_fd);
    a->wake_fd = -1;
fail_backq:
    fa_backq_destroy(&a->back);
fail_conns:
    fa_conns_destroy(&a->conns);
fail_lot:
    fa_lot_destroy(&a->lot);
fail_ring:
    fa_ring_destroy(&a->ring, 1);
    return rc;
}

int fa_acceptor_set_conns(fa_acceptor *a, int dispatch, uint64_t idle_ns, uint32_t max_conns)
{
    if ((dispatch != FA_DISPATCH_ACCEPT && dispatch != FA_DISPATCH_READABLE) || max_conns < 1 ||
        max_conns > FA_MAX_CONNS_MAX)
        return -EINVAL;
    if (max_conns > a->max_conns) {
        fa_backq bigger;
        int rc = fa_backq_init(&bigger, backq_capacity(max_conns));
        if (rc < 0)
            return rc;
        fa_backq_destroy(&a->back);
        a->back = bigger;
    }
    a->dispatch = dispatch;
    a->idle_ns = idle_ns;
    a->max_conns = max_conns;
    return 0;
}

int fa_acceptor_set_http(fa_acceptor *a, const fa_http_limits *lim, uint64_t head_ns,
                         uint64_t max_body)
{
    if (lim->max_request_line < 16 || lim->max_fields < 1 || lim->max_head < 64 ||
        lim->max_fields > (1u << 20) || lim->max_head > (1u << 30))
        return -EINVAL;
    fa_http_field *fields = malloc((size_t)lim->max_fields * sizeof *fields);
    /* room for a whole head in one read, when it comes whole */
    uint32_t cap = lim->max_head + 4096u < 65536u ? lim->max_head + 4096u : 65536u;
    char *rbuf = malloc(cap);
    if (fields == NULL || rbuf == NULL) {
        free(fields);
        free(rbuf);
        return -ENOMEM;
    }
    free(a->http_fields);
    free(a->rbuf);
    a->http_fields = fields;
    a->rbuf = rbuf;
    a->rbuf_cap = cap;
    a->http_lim = *lim;
    a->head_ns = head_ns;
    a->max_body = max_body;
    a->http = 1;
    a->dispatch = FA_DISPATCH_READABLE;
    return 0;
}

int fa_acceptor_set_proxy(fa_acceptor *a, int on, uint64_t deadline_ns)
{
    if (on && a->proxy_buf == NULL) {
        a->proxy_buf = malloc(FA_PROXY_MAX_HEADER);
        if (a->proxy_buf == NULL)
            return -ENOMEM;
    }
    a->proxy = on != 0;
    a->proxy_ns = on ? deadline_ns : 0;
    return 0;
}

uint64_t fa_stat_http_rejected(fa_acceptor *a, int status)
{
    static const int statuses[FA_HTTP_REJECT_SLOTS] = {400, 408, 413, 414, 431, 501, 505};
    for (int i = 0; i < FA_HTTP_REJECT_SLOTS; i++)
        if (statuses[i] == status)
            return fa_stat_load(&a->stats.http_rejected[i]);
    return 0;
}

void fa_acceptor_set_exclusive(fa_acceptor *a, int on)
{
    a->exclusive = on != 0;
}

void fa_acceptor_set_realtime(fa_acceptor *a, int on)
{
    a->realtime = on != 0;
}

void fa_acceptor_set_grace(fa_acceptor *a, uint64_t grace_ns)
{
    a->grace_ns = grace_ns;
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

/* Frees what a slot holds besides its connection: the bytes of a head on
 * its way, a request ready for the ring. */
static void slot_release(fa_slot *s)
{
    free(s->buf);
    s->buf = NULL;
    s->buf_len = s->buf_cap = 0;
    free(s->req);
    s->req = NULL;
    s->state = FA_SLOT_FREE;
}

/* Closes every connection still waiting in the table (an acceptor torn
 * down without running, or after an abort). */
static void close_waiting_all(fa_acceptor *a)
{
    fa_list *lists[] = {&a->conns.idle, &a->conns.head, &a->conns.proxy, &a->conns.ready};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        int fd;
        while ((fd = fa_list_pop(&a->conns, lists[i])) >= 0) {
            slot_release(&a->conns.slots[fd]);
            close(fd);
        }
    }
    atomic_store_explicit(&a->stats.waiting, 0, memory_order_relaxed);
}

void fa_acceptor_destroy(fa_acceptor *a)
{
    free(a->shed_response);
    a->shed_response = NULL;
    a->shed_len = 0;
    if (a->conns.slots != NULL)
        close_waiting_all(a);
    if (a->back.slots != NULL) {
        int fd;
        void *data;
        uint32_t len;
        while ((fd = fa_backq_pop(&a->back, &data, &len)) >= 0) {
            free(data);
            close(fd);
        }
        fa_backq_destroy(&a->back);
    }
    fa_conns_destroy(&a->conns);
    free(a->http_fields);
    free(a->rbuf);
    free(a->proxy_buf);
    a->http_fields = NULL;
    a->rbuf = NULL;
    a->proxy_buf = NULL;
    if (a->epoll_fd >= 0)
        close(a->epoll_fd);
    if (a->wake_fd >= 0)
        close(a->wake_fd);
    if (a->placeholder_fd >= 0)
        close(a->placeholder_fd);
    a->epoll_fd = a->wake_fd = a->placeholder_fd = -1;
    fa_lot_destroy(&a->lot);
    fa_ring_destroy(&a->ring, 1);
}

void fa_acceptor_stop(fa_acceptor *a)
{
    atomic_store(&a->stopping, 1);
    fa_eventfd_kick(a->wake_fd);
    fa_lot_wake_napper(&a->lot);    /* a nap would delay the stop by nap_ns */
}

void fa_acceptor_abort(fa_acceptor *a)
{
    atomic_store(&a->aborting, 1);
    atomic_store(&a->stopping, 1);
    fa_eventfd_kick(a->wake_fd);
    fa_lot_wake_napper(&a->lot);
}

/* Wakes the loop if it announced a sleep in epoll_wait. */
static void kick(fa_acceptor *a)
{
    /* pairs with the fence before the loop's last look (wait_events) */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&a->loop_sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&a->loop_sleeping, 0, memory_order_relaxed))
        fa_eventfd_kick(a->wake_fd);
}

void fa_acceptor_finish(fa_acceptor *a, int fd)
{
    if (fd >= 0)
        close(fd);
    atomic_fetch_sub_explicit(&a->open, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&a->accept_paused, memory_order_relaxed))
        kick(a);                /* the loop may accept again */
}

static void close_conn(fa_acceptor *a, int fd);

/* Closes what sits on the way back: the loop is gone, nobody re-arms it.
 * Each of those was given back with fa_acceptor_keep returning 1 (the loop
 * took it), so the loop counts it, in stop_closed, as it would had it
 * waited here at the stop; except own_fd, whose keep() is still running
 * and returns 0 for it (its caller counts it out). Any thread, once
 * loop_done is set: stop_closed is raised atomically. Returns 1 if own_fd
 * was among them. */
static int close_backq(fa_acceptor *a, int own_fd)
{
    int fd, own = 0;
    void *data;
    uint32_t len;
    while ((fd = fa_backq_pop(&a->back, &data, &len)) >= 0) {
        free(data);
        close_conn(a, fd);
        if (fd == own_fd)
            own = 1;
        else
            atomic_fetch_add_explicit(&a->stats.stop_closed, 1, memory_order_relaxed);
    }
    return own;
}

int fa_acceptor_keep(fa_acceptor *a, int fd, void *data, uint32_t len)
{
    if (fd < 0) {
        free(data);
        fa_acceptor_finish(a, fd);
        return 0;
    }
    if (atomic_load(&a->stopping) || atomic_load(&a->loop_done) ||
        fa_backq_push(&a->back, fd, data, len) < 0) {
        free(data);
        fa_acceptor_finish(a, fd);
        return 0;
    }
    /* pairs with the loop's store of loop_done and its last drain: either it
     * sees this fd, or this sees loop_done and closes what is left */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&a->loop_done, memory_order_relaxed))
        return close_backq(a, fd) ? 0 : 1;     /* 1: the loop closed it, counted */
    kick(a);
    return 1;
}

enum batch_end { QUEUE_EMPTY, BATCH_DONE, RING_FULL, PAUSE, MAXED };

/* Reads and drops the input a connection about to be closed has already
 * received (up to FA_SHED_DISCARD_MAX; nonblocking): closing a socket with
 * unread input sends a reset instead of a FIN. */
static void discard_input(int fd)
{
    char sink[4096];
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
}

/*
 * Answers a connection the ring has no room for and closes it, without ever
 * blocking (the send and the reads are nonblocking): the response goes out
 * in one send() as far as the send buffer takes it, followed at once by a
 * FIN (shutdown), so the peer reads the response and then EOF. The input
 * that has already arrived (the request, typically) is read and discarded:
 * closing a socket with unread input sends a reset. Input arriving later
 * still draws a reset, but after the FIN, so the peer's reads are
 * unaffected (only its writes fail). Errors only mean the peer is gone;
 * nothing more can be done for it. Counts it out of the open connections.
 */
static void shed(fa_acceptor *a, int fd)
{
    if (a->shed_len > 0)
        while (send(fd, a->shed_response, a->shed_len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
               errno == EINTR)
            ;
    shutdown(fd, SHUT_WR);
    discard_input(fd);
    /* counted before the close, so that a peer that has seen its EOF finds
     * itself counted */
    count(&a->stats.shed);
    close(fd);
    atomic_fetch_sub_explicit(&a->open, 1, memory_order_relaxed);
}

/* Closes a connection of ours from the loop; counts it out. Called before
 * the counter saying why is raised, so a reader who sees that counter sees
 * the connection gone from the open ones too. */
static void close_conn(fa_acceptor *a, int fd)
{
    close(fd);
    atomic_fetch_sub_explicit(&a->open, 1, memory_order_relaxed);
}

/* Takes slot s of a waiting connection off its list. */
static void unlist(fa_acceptor *a, int fd, fa_slot *s)
{
    fa_list_remove(&a->conns, fa_conns_list(&a->conns, s->list), fd);
    gauge_add(&a->stats.waiting, -1);
}

/* What a peek says about a connection's input. */
enum peeked { HAS_DATA, NO_DATA, GONE };

static enum peeked peek(int fd)
{
    char c;
    ssize_t n;
    while ((n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT)) < 0 && errno == EINTR)
        ;
    if (n > 0)
        return HAS_DATA;
    if (n == 0)
        return GONE;                    /* EOF: the peer closed without sending */
    return errno == EAGAIN || errno == EWOULDBLOCK ? NO_DATA : GONE;
}

/* Pushes the connection of slot s (descriptor fd) into the ring, or, with
 * the ring full, sheds it (shed policy) or keeps it ready in the FIFO. An
 * HTTP request ready in s->req goes with it. Returns 1 if it reached the
 * ring. */
static int dispatch(fa_acceptor *a, int fd, fa_slot *s)
{
    if (fa_ring_full(&a->ring)) {
        if (a->overload == FA_OVERLOAD_SHED) {
            slot_release(s);
            shed(a, fd);
            return 0;
        }
        s->state = FA_SLOT_READY;
        s->waited = 1;
        fa_list_push(&a->conns, &a->conns.ready, fd);
        gauge_add(&a->stats.waiting, 1);
        return 0;
    }
    fa_conn c;
    c.fd = fd;
    c.addrlen = s->addrlen;
    memcpy(&c.addr, &s->addr, s->addrlen);
    c.accepted_ns = s->accepted_ns;
    c.ready_ns = fa_now_ns();
    c.kind = s->kept ? FA_CONN_RESUMED : FA_CONN_NEW;
    c.data = s->req;
    c.data_len = s->req != NULL ? ((fa_http_req *)s->req)->len : 0;
    s->req = NULL;
    s->state = FA_SLOT_FREE;        /* out: in the ring, then a worker's */
    if (fa_ring_push(&a->ring, &c) < 0) {
        /* Unreachable with one producer (fullness was checked above); if
         * it ever happens, close rather than leak. */
        free(c.data);
        close_conn(a, fd);
        count_errno(a, ENOBUFS);
        return 0;
    }
    if (s->waited)
        count(&a->stats.dispatched);
    if (c.data != NULL)
        count(&a->stats.http_requests);
    return 1;
}

/* Arms the connection in the epoll set (one-shot) to wait for input.
 * Returns 0, or -1 (epoll refused it: errno). */
static int arm(fa_acceptor *a, int fd, fa_slot *s, int registered)
{
    s->gen++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT,
                             .data.u64 = fa_conn_cookie(fd, s->gen)};
    int rc = epoll_ctl(a->epoll_fd, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
    if (rc < 0 && registered && errno == ENOENT)
        rc = epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    if (rc < 0 && !registered && errno == EEXIST)
        rc = epoll_ctl(a->epoll_fd, EPOLL_CTL_MOD, fd, &ev);
    return rc;
}

/* Puts a connection in the epoll set (one-shot) to wait for input, on list
 * `list` with that list's deadline from now. A slot already waiting on that
 * list keeps its place and deadline (a head that came in pieces). Returns
 * 0, or -1 (it was closed: epoll refused it). */
static int start_waiting(fa_acceptor *a, int fd, fa_slot *s, int registered, int list)
{
    if (arm(a, fd, s, registered) < 0) {
        /* ENOMEM/ENOSPC (max_user_watches): nothing can wait for it */
        count_errno(a, errno);
        if (s->state == FA_SLOT_WAITING)
            unlist(a, fd, s);
        slot_release(s);
        close_conn(a, fd);
        return -1;
    }
    if (s->state == FA_SLOT_WAITING && s->list == list)
        return 0;
    if (s->state == FA_SLOT_WAITING)
        unlist(a, fd, s);
    uint64_t timeout = list == FA_ON_HEAD    ? a->head_ns
                       : list == FA_ON_PROXY ? a->proxy_ns
                                             : a->idle_ns;
    s->state = FA_SLOT_WAITING;
    s->waited = 1;
    s->list = (uint8_t)list;
    s->deadline_ns = timeout ? fa_now_ns() + timeout : 0;
    fa_list_push(&a->conns, fa_conns_list(&a->conns, list), fd);
    gauge_add(&a->stats.waiting, 1);
    return 0;
}

/* Closes a waiting (or just accepted) connection whose peer left. */
static void peer_gone(fa_acceptor *a, int fd, fa_slot *s)
{
    if (s->state == FA_SLOT_WAITING)
        unlist(a, fd, s);
    slot_release(s);
    close_conn(a, fd);
    count(&a->stats.peer_closed);
}

/* ---- HTTP: heads parsed here, before any worker wakes ---- */

/* The HTTP statuses the loop answers itself, for the stats. */
static const int http_reject_statuses[FA_HTTP_REJECT_SLOTS] = {400, 408, 413, 414, 431, 501,
                                                               505};

static const char *http_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* The body of a rejection: what was wrong, naming the limit. */
static int http_reject_body(fa_acceptor *a, int status, char *out, size_t cap)
{
    const fa_http_limits *l = &a->http_lim;
    switch (status) {
    case 408:
        return snprintf(out, cap, "request head not complete within %llu ms\n",
                        (unsigned long long)(a->head_ns / 1000000u));
    case 413:
        return snprintf(out, cap, "request body larger than max_body (%llu bytes)\n",
                        (unsigned long long)a->max_body);
    case 414:
        return snprintf(out, cap, "request line longer than max_request_line (%u bytes)\n",
                        l->max_request_line);
    case 431:
        return snprintf(out, cap, "request head larger than max_head (%u bytes) or with more "
                        "fields than max_fields (%u)\n", l->max_head, l->max_fields);
    case 501:
        return snprintf(out, cap, "transfer coding not implemented (only chunked)\n");
    case 505:
        return snprintf(out, cap, "HTTP version not supported (HTTP/1.0 and HTTP/1.1 only)\n");
    default:
        return snprintf(out, cap, "malformed request (RFC 9112)\n");
    }
}

/* Answers a request the loop refuses (status) and closes the connection:
 * the answer in one nonblocking send, a FIN, the input left discarded so
 * the close is no reset, as shed does. Counted by status. */
static void http_reject(fa_acceptor *a, int fd, fa_slot *s, int status)
{
    char body[256], resp[512];
    int blen = http_reject_body(a, status, body, sizeof body);
    if (blen < 0 || (size_t)blen >= sizeof body)
        blen = 0;
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nServer: fastaccept\r\nContent-Type: text/plain; "
                     "charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%.*s",
                     status, http_reason(status), blen, blen, body);
    if (s->state == FA_SLOT_WAITING)
        unlist(a, fd, s);
    slot_release(s);
    if (n > 0 && (size_t)n < sizeof resp)
        while (send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR)
            ;
    shutdown(fd, SHUT_WR);
    discard_input(fd);
    close_conn(a, fd);
    for (int i = 0; i < FA_HTTP_REJECT_SLOTS; i++)
        if (http_reject_statuses[i] == status)
            count(&a->stats.http_rejected[i]);
}

/* A complete head at buf[0, len) (parsed into a->http_head and
 * a->http_fields): the request goes to the ring with every byte read so
 * far, or is refused (413). Returns 1 if it reached the ring. */
static int http_complete(fa_acceptor *a, int fd, fa_slot *s, const char *buf, uint32_t len)
{
    const fa_http_head *h = &a->http_head;
    if (a->max_body && h->content_length > 0 && (uint64_t)h->content_length > a->max_body) {
        http_reject(a, fd, s, 413);
        return 0;
    }
    size_t fields = (size_t)h->nfields * sizeof(fa_http_field);
    fa_http_req *r = malloc(sizeof *r + fields + len);
    if (r == NULL) {
        count_errno(a, ENOMEM);
        if (s->state == FA_SLOT_WAITING)
            unlist(a, fd, s);
        slot_release(s);
        close_conn(a, fd);
        return 0;
    }
    r->head = *h;
    r->len = len;
    memcpy(r->fields, a->http_fields, fields);
    memcpy(fa_http_req_buf(r), buf, len);
    if (s->state == FA_SLOT_WAITING)
        unlist(a, fd, s);
    free(s->buf);
    s->buf = NULL;
    s->buf_len = s->buf_cap = 0;
    s->req = r;
    return dispatch(a, fd, s);
}

/* Parses what slot s (or buf) holds. Returns 1 (complete), 0 (more
 * needed), or -status. */
static int http_parse(fa_acceptor *a, fa_slot *s, const char *buf, uint32_t len)
{
    return fa_http_parse_head(buf, len, &s->scan, &a->http_lim, &a->http_head, a->http_fields);
}

/* The len bytes parsed so far are empty lines before any request line.
 * RFC 9112 section 2.2 has the server ignore them (a legacy client sends
 * one after a POST body): they start no head, so no head deadline and no
 * 408; the connection goes on waiting as it was. */
static int only_empty_lines(const fa_slot *s, uint32_t len)
{
    return s->scan.lines == 0 && s->scan.start == len;
}

/* Keeps the bytes of an unfinished head in the slot. Returns 0 or -1. */
static int http_keep_bytes(fa_slot *s, const char *buf, uint32_t len, uint32_t max)
{
    uint32_t cap = len * 2 < 1024 ? 1024 : len * 2;
    if (cap > max)
        cap = max;
    if (cap < len)
        cap = len;
    s->buf = malloc(cap);
    if (s->buf == NULL)
        return -1;
    memcpy(s->buf, buf, len);
    s->buf_len = len;
    s->buf_cap = cap;
    return 0;
}

/*
 * An HTTP connection that may have input: read what it has (nonblocking),
 * parse, and dispatch it once its head is complete, refuse it on a bad
 * head, close it if the peer left, or let it wait in the epoll set (on the
 * head list once it has sent part of a head, else on `list`). Bytes it
 * brought (s->buf, from a worker) are parsed first. Returns 1 if it
 * reached the ring.
 */
static int http_input(fa_acceptor *a, int fd, fa_slot *s, int registered, int list)
{
    /* The most a head can need: max_head, plus a read's worth past it. */
    uint32_t max = a->http_lim.max_head + 4096u;
    if (s->buf != NULL && s->buf_len > 0) {
        int rc = http_parse(a, s, s->buf, s->buf_len);
        if (rc > 0)
            return http_complete(a, fd, s, s->buf, s->buf_len);
        if (rc < 0) {
            http_reject(a, fd, s, -rc);
            return 0;
        }
        if (only_empty_lines(s, s->buf_len)) {
            free(s->buf);
            s->buf = NULL;
            s->buf_len = s->buf_cap = 0;
        }
    }
    for (int reads = 0; reads < 8; reads++) {
        ssize_t n;
        if (s->buf == NULL) {
            while ((n = recv(fd, a->rbuf, a->rbuf_cap, MSG_DONTWAIT)) < 0 && errno == EINTR)
                ;
            if (n > 0) {
                /* most heads arrive whole: parse them where they were read */
                fa_http_scan_init(&s->scan);
                int rc = http_parse(a, s, a->rbuf, (uint32_t)n);
                if (rc > 0)
                    return http_complete(a, fd, s, a->rbuf, (uint32_t)n);
                if (rc < 0) {
                    http_reject(a, fd, s, -rc);
                    return 0;
                }
                if (only_empty_lines(s, (uint32_t)n))
                    continue;
                if (http_keep_bytes(s, a->rbuf, (uint32_t)n, max) < 0) {
                    count_errno(a, ENOMEM);
                    peer_gone(a, fd, s);
                    return 0;
                }
                list = FA_ON_HEAD;
                continue;
            }
        } else {
            if (s->buf_len == s->buf_cap) {
                uint32_t cap = s->buf_cap * 2 > max ? max : s->buf_cap * 2;
                char *grown = cap > s->buf_cap ? realloc(s->buf, cap) : NULL;
                if (grown == NULL) {        /* cannot happen: the parser stops at max_head */
                    http_reject(a, fd, s, 431);
                    return 0;
                }
                s->buf = grown;
                s->buf_cap = cap;
            }
            while ((n = recv(fd, s->buf + s->buf_len, s->buf_cap - s->buf_len, MSG_DONTWAIT)) < 0 &&
                   errno == EINTR)
                ;
            if (n > 0) {
                s->buf_len += (uint32_t)n;
                int rc = http_parse(a, s, s->buf, s->buf_len);
                if (rc > 0)
                    return http_complete(a, fd, s, s->buf, s->buf_len);
                if (rc < 0) {
                    http_reject(a, fd, s, -rc);
                    return 0;
                }
                if (only_empty_lines(s, s->buf_len)) {
                    free(s->buf);
                    s->buf = NULL;
                    s->buf_len = s->buf_cap = 0;
                    continue;
                }
                list = FA_ON_HEAD;
                continue;
            }
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            /* EOF or a reset: before a complete head, there is nothing to
             * answer */
            peer_gone(a, fd, s);
            return 0;
        }
        break;      /* nothing more for now */
    }
    start_waiting(a, fd, s, registered, s->buf != NULL ? FA_ON_HEAD : list);
    return 0;
}

/* A connection that is to wait for input: if its input is there already,
 * dispatch it at once (1 if it reached the ring); if the peer is gone,
 * close it; else let it wait on `list`. */
static int wait_or_dispatch(fa_acceptor *a, int fd, fa_slot *s, int registered, int list)
{
    if (a->http)
        return http_input(a, fd, s, registered, list);
    switch (peek(fd)) {
    case HAS_DATA:
        return dispatch(a, fd, s);
    case GONE:
        peer_gone(a, fd, s);
        return 0;
    case NO_DATA:
        break;
    }
    start_waiting(a, fd, s, registered, list);
    return 0;
}

/* Where a new connection goes once it is ours to serve: accepted, or, behind
 * a balancer, once its PROXY header is in. Returns 1 if it reached the ring. */
static int new_conn(fa_acceptor *a, int fd, fa_slot *s, int registered)
{
    if (a->dispatch == FA_DISPATCH_READABLE)
        return wait_or_dispatch(a, fd, s, registered, a->http ? FA_ON_HEAD : FA_ON_IDLE);
    return dispatch(a, fd, s);
}

/* ---- PROXY protocol: the balancer's header, before anything else ---- */

/* Closes a connection whose PROXY header did not come right, with nothing
 * sent: the peer (the balancer, or a client that went around it) does not
 * speak the protocol an answer would be in, and the spec has the receiver
 * drop it. A FIN, then the input discarded, so the close is no reset. The
 * caller counts it. */
static void proxy_drop(fa_acceptor *a, int fd, fa_slot *s)
{
    if (s->state == FA_SLOT_WAITING)
        unlist(a, fd, s);
    slot_release(s);
    shutdown(fd, SHUT_WR);
    discard_input(fd);
    close_conn(a, fd);
}

/* Takes exactly len bytes from fd, which a peek has shown are there. Returns
 * 0, or -1 if the socket gave fewer (the peer reset it meanwhile). */
static int take_bytes(int fd, char *into, uint32_t len)
{
    while (len > 0) {
        ssize_t n = recv(fd, into, len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        into += n;
        len -= (uint32_t)n;
    }
    return 0;
}

/* Appends n bytes of an undecided header to the slot's. Returns 0 or -1. */
static int proxy_keep_bytes(fa_slot *s, const char *bytes, uint32_t n)
{
    uint32_t need = s->buf_len + n;     /* < FA_PROXY_MAX_HEADER: undecided */
    if (need > s->buf_cap) {
        uint32_t cap = need < 64u ? 128u : need * 2;
        if (cap > FA_PROXY_MAX_HEADER)
            cap = FA_PROXY_MAX_HEADER;
        char *grown = realloc(s->buf, cap);
        if (grown == NULL)
            return -1;
        s->buf = grown;
        s->buf_cap = cap;
    }
    memcpy(s->buf + s->buf_len, bytes, n);
    s->buf_len = need;
    return 0;
}

/* The header is complete: the connection is now as if freshly accepted
 * from the client it names (its own bytes, if any, still in the socket). */
static int proxy_done(fa_acceptor *a, int fd, fa_slot *s, const fa_proxy_result *r,
                      int registered)
{
    if (r->src_len > 0) {
        memcpy(&s->addr, &r->src, r->src_len);
        s->addrlen = r->src_len;
    }
    free(s->buf);
    s->buf = NULL;
    s->buf_len = s->buf_cap = 0;
    if (s->state == FA_SLOT_WAITING) {
        unlist(a, fd, s);
        s->state = FA_SLOT_FREE;
    }
    return new_conn(a, fd, s, registered);
}

/*
 * A new connection whose PROXY header is still to come, in whole or in
 * part: peeks at what it sent, parses the header bytes taken so far
 * followed by those, and takes from the socket only header bytes (see the
 * top of fa_accept.h): the rest of the header once it is complete, then
 * goes on as new_conn; everything peeked while it is undecided, then waits
 * for more on the proxy list. A bad header, or a peer that left, closes it.
 * Returns 1 if it reached the ring.
 */
static int proxy_input(fa_acceptor *a, int fd, fa_slot *s, int registered)
{
    char *p = a->proxy_buf;
    uint32_t have = s->buf_len;
    ssize_t n;
    if (have > 0)
        memcpy(p, s->buf, have);
    while ((n = recv(fd, p + have, FA_PROXY_MAX_HEADER - have, MSG_PEEK | MSG_DONTWAIT)) < 0 &&
           errno == EINTR)
        ;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        start_waiting(a, fd, s, registered, FA_ON_PROXY);
        return 0;
    }
    if (n <= 0) {                   /* EOF or a reset, the header not whole */
        peer_gone(a, fd, s);
        return 0;
    }
    fa_proxy_result r;
    int rc = fa_proxy_parse_max(p, have + (size_t)n, FA_PROXY_MAX_HEADER, &r);
    if (rc < 0) {
        proxy_drop(a, fd, s);
        count(&a->stats.proxy_rejected[-rc < FA_PROXY_REJECT_SLOTS ? -rc : 0]);
        return 0;
    }
    /* Undecided, all n bytes are header bytes, and they were all there was
     * (max_len bytes always decide); complete, the header ends within them
     * (it was undecided at `have`). */
    uint32_t take = rc > 0 ? (uint32_t)rc - have : (uint32_t)n;
    if (take_bytes(fd, p + have, take) < 0) {
        peer_gone(a, fd, s);
        return 0;
    }
    if (rc > 0)
        return proxy_done(a, fd, s, &r, registered);
    if (proxy_keep_bytes(s, p + have, take) < 0) {
        count_errno(a, ENOMEM);
        proxy_drop(a, fd, s);
        return 0;
    }
    start_waiting(a, fd, s, registered, FA_ON_PROXY);
    return 0;
}

/* Takes in the connections workers gave back; returns how many reached the
 * ring at once (their next request was already there). */
static uint32_t take_back(fa_acceptor *a)
{
    uint32_t pushed = 0;
    int fd;
    void *data;
    uint32_t len;
    while ((fd = fa_backq_pop(&a->back, &data, &len)) >= 0) {
        fa_slot *s = fa_conns_slot(&a->conns, fd);
        if (s == NULL) {            /* out of memory: nothing can wait for it */
            free(data);
            count_errno(a, ENOMEM);
            close_conn(a, fd);
            continue;
        }
        s->kept = 1;
        s->waited = 0;
        s->state = FA_SLOT_FREE;
        s->buf = data;
        s->buf_len = s->buf_cap = data != NULL ? len : 0;
        if (s->buf != NULL && len == 0) {
            free(s->buf);
            s->buf = NULL;
        }
        fa_http_scan_init(&s->scan);
        count(&a->stats.kept);
        pushed += (uint32_t)wait_or_dispatch(a, fd, s, 1, FA_ON_IDLE);
    }
    return pushed;
}

/* Moves ready connections into the ring while it has room; returns how
 * many. */
static uint32_t dispatch_ready(fa_acceptor *a)
{
    uint32_t pushed = 0;
    while (a->conns.ready.head >= 0 && !fa_ring_full(&a->ring)) {
        int fd = fa_list_pop(&a->conns, &a->conns.ready);
        gauge_add(&a->stats.waiting, -1);
        a->conns.slots[fd].state = FA_SLOT_FREE;
        pushed += (uint32_t)dispatch(a, fd, &a->conns.slots[fd]);
    }
    return pushed;
}

/* An epoll event for a waiting connection. Returns 1 if it reached the ring. */
static int on_conn_event(fa_acceptor *a, uint64_t cookie, uint32_t events)
{
    int fd = fa_cookie_fd(cookie);
    fa_slot *s = fa_conns_peek(&a->conns, fd);
    if (s == NULL || s->state != FA_SLOT_WAITING || s->gen != fa_cookie_gen(cookie))
        return 0;                   /* stale: that connection is gone */
    if (s->list == FA_ON_PROXY)
        return proxy_input(a, fd, s, 1);
    if (a->http)
        return http_input(a, fd, s, 1, s->list);
    unlist(a, fd, s);
    s->state = FA_SLOT_FREE;
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && peek(fd) != HAS_DATA) {
        /* the peer left (or reset) with nothing for a worker */
        peer_gone(a, fd, s);
        return 0;
    }
    return dispatch(a, fd, s);
}

/* Closes the waiting connections whose deadline has passed: idle ones with
 * a FIN, an HTTP head that did not complete in time with a 408, a PROXY
 * header that did not with a FIN too. */
static void expire(fa_acceptor *a, uint64_t now)
{
    fa_conns *t = &a->conns;
    while (t->proxy.head >= 0) {
        int fd = t->proxy.head;
        fa_slot *s = &t->slots[fd];
        if (s->deadline_ns == 0 || s->deadline_ns > now)
            break;
        proxy_drop(a, fd, s);
        count(&a->stats.proxy_timeouts);
    }
    while (t->idle.head >= 0) {
        int fd = t->idle.head;
        fa_slot *s = &t->slots[fd];
        if (s->deadline_ns == 0 || s->deadline_ns > now)
            break;
        unlist(a, fd, s);
        slot_release(s);
        close_conn(a, fd);          /* nothing unread: a FIN */
        count(&a->stats.idle_closed);
    }
    while (t->head.head >= 0) {
        int fd = t->head.head;
        fa_slot *s = &t->slots[fd];
        if (s->deadline_ns == 0 || s->deadline_ns > now)
            break;
        if (s->buf == NULL) {       /* a new connection that sent nothing */
            unlist(a, fd, s);
            slot_release(s);
            close_conn(a, fd);
            count(&a->stats.idle_closed);
        } else {
            http_reject(a, fd, s, 408);
        }
    }
}

/*
 * Accepts up to limit connections. Returns a batch_end, or -errno for an
 * error that must end the loop. *pushed counts what reached the ring; shed
 * and waiting connections count towards limit but not in *pushed.
 */
static int accept_batch(fa_acceptor *a, uint32_t limit, uint32_t *pushed)
{
    uint32_t n = 0;
    int readable = a->dispatch == FA_DISPATCH_READABLE;
    *pushed = 0;
    while (n < limit) {
        if (a->max_conns && atomic_load_explicit(&a->open, memory_order_relaxed) >=
                                (int64_t)a->max_conns)
            return MAXED;
        /* Under the queue policy, never accept a connection the ring cannot
         * hold, unless it will wait here: leave it in the kernel queue
         * instead of dropping it. (Not depth >= capacity: a pop still
         * copying its entry out holds its slot after head moved.) Under the
         * shed policy, accept it to answer it at once, nonblocking so that
         * answer cannot stall the loop. */
        int full = fa_ring_full(&a->ring);
        if (full && !readable && a->overload != FA_OVERLOAD_SHED)
            return RING_FULL;
        struct sockaddr_storage addr;
        socklen_t addrlen = sizeof addr;
        int fd = accept4(a->listen_fd, (struct sockaddr *)&addr, &addrlen,
                         full && !readable ? SOCK_CLOEXEC | SOCK_NONBLOCK : SOCK_CLOEXEC);
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
        atomic_fetch_add_explicit(&a->open, 1, memory_order_relaxed);
        count(&a->stats.accepted);  /* every one taken from the kernel queue */
        n++;
        if (full && !readable) {
            shed(a, fd);
            continue;
        }
        fa_slot *s = fa_conns_slot(&a->conns, fd);
        if (s == NULL) {            /* out of memory for the table */
            count_errno(a, ENOMEM);
            close_conn(a, fd);
            return PAUSE;
        }
        s->state = FA_SLOT_FREE;
        s->kept = 0;
        s->waited = 0;
        s->buf = NULL;
        s->req = NULL;
        s->buf_len = s->buf_cap = 0;
        s->addrlen = addrlen;
        memcpy(&s->addr, &addr, addrlen);
        s->accepted_ns = fa_now_ns();
        *pushed += (uint32_t)(a->proxy ? proxy_input(a, fd, s, 0) : new_conn(a, fd, s, 0));
    }
    return BATCH_DONE;
}

/* Puts the listener in the epoll set, or takes it out: out while the loop
 * must not accept (at max_conns, a full ring under FA_DISPATCH_ACCEPT, a
 * back-off), so a level-triggered listener cannot make it spin. */
static void set_listening(fa_acceptor *a, int on)
{
    if (on == a->listening)
        return;
    /* EPOLLEXCLUSIVE only with ADD (MOD refuses it): hence ADD and DEL */
    struct epoll_event ev = {.events = EPOLLIN | (a->exclusive ? EPOLLEXCLUSIVE : 0),
                             .data.u64 = COOKIE_LISTEN};
    if (epoll_ctl(a->epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, a->listen_fd, &ev) == 0 ||
        errno == EEXIST || errno == ENOENT)
        a->listening = on;
    /* else (ENOMEM): stay as we are; the next iteration tries again */
}

/* Ends listening after the final drain (see end_listen in fa_accept.h).
 * Idempotent. */
static void end_listening(fa_acceptor *a)
{
    set_listening(a, 0);
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

/* The backlog of the listening socket (its accept queue's length at most,
 * after the somaxconn cap), or 0 if the socket cannot tell. For a LISTEN
 * socket Linux reports it in tcpi_sacked. */
static uint32_t backlog_now(fa_acceptor *a)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(a->listen_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        ti.tcpi_state != 10 /* TCP_LISTEN */)
        return 0;
    return ti.tcpi_sacked;
}

/* Milliseconds until deadline_ns (rounded up, so a wait never ends early),
 * capped at cap_ms; cap_ms when there is no deadline. */
static int ms_until(uint64_t deadline_ns, uint64_t now, int cap_ms)
{
    if (deadline_ns == 0)
        return cap_ms;
    if (deadline_ns <= now)
        return 0;
    uint64_t ms = (deadline_ns - now + 999999u) / 1000000u;
    if (cap_ms >= 0 && ms > (uint64_t)cap_ms)
        return cap_ms;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/*
 * Sleeps in epoll_wait up to timeout_ms, after announcing it so that a
 * worker that gives a connection back, frees ring space the loop needs or
 * closes one below max_conns kicks it awake. want_space: the loop waits for
 * ring space (a full ring holds it back). Returns epoll_wait's result.
 */
static int wait_events(fa_acceptor *a, struct epoll_event *events, int timeout_ms,
                       int want_space)
{
    if (timeout_ms != 0) {
        atomic_store_explicit(&a->loop_sleeping, 1, memory_order_relaxed);
        if (want_space)
            atomic_store_explicit(&a->lot.producer_waiting, 1, memory_order_relaxed);
        /* pairs with the fences in kick() and fa_lot_space_freed() */
        atomic_thread_fence(memory_order_seq_cst);
        int64_t open = atomic_load_explicit(&a->open, memory_order_relaxed);
        if (atomic_load_explicit(&a->back.head, memory_order_relaxed) !=
                atomic_load_explicit(&a->back.tail, memory_order_relaxed) ||
            (want_space && !fa_ring_full(&a->ring)) ||
            (atomic_load_explicit(&a->accept_paused, memory_order_relaxed) &&
             open < (int64_t)a->max_conns))
            timeout_ms = 0;         /* (a stop or an abort kicks wake_fd itself) */
    }
    int n = epoll_wait(a->epoll_fd, events, FA_EVENTS, timeout_ms);
    int err = errno;
    atomic_store_explicit(&a->loop_sleeping, 0, memory_order_relaxed);
    atomic_store_explicit(&a->lot.producer_waiting, 0, memory_order_relaxed);
    errno = err;
    return n;
}

/* Reads the eventfd down to zero (its kicks are level-triggered). */
static void drain_wake(fa_acceptor *a)
{
    uint64_t v;
    while (read(a->wake_fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
}

/* Handles what epoll_wait returned; *listen_ready is set when the listener
 * has connections. Returns how many connections reached the ring. */
static uint32_t handle_events(fa_acceptor *a, const struct epoll_event *events, int n,
                              int *listen_ready)
{
    uint32_t pushed = 0;
    for (int i = 0; i < n; i++) {
        uint64_t cookie = events[i].data.u64;
        if (cookie == COOKIE_LISTEN)
            *listen_ready = 1;
        else if (cookie == COOKIE_WAKE)
            drain_wake(a);
        else
            pushed += (uint32_t)on_conn_event(a, cookie, events[i].events);
    }
    return pushed;
}

/* At a stop, once nothing more comes in: every connection still waiting
 * is served if its input has come (for HTTP: a whole head; behind a
 * balancer, its PROXY header first), else closed with a FIN (everything
 * readable was read, so the close is no reset; a head or a PROXY header
 * cut short by the stop is closed too). Returns how many reached the
 * ring. */
static uint32_t settle_idle(fa_acceptor *a)
{
    uint32_t pushed = 0;
    int fd;
    /* First those whose PROXY header may be in: they may go on to the idle
     * or head list, next. */
    while ((fd = a->conns.proxy.head) >= 0) {
        fa_slot *s = &a->conns.slots[fd];
        pushed += (uint32_t)proxy_input(a, fd, s, 1);
        if (s->state == FA_SLOT_WAITING && s->list == FA_ON_PROXY) {
            proxy_drop(a, fd, s);
            count(&a->stats.stop_closed);
        }
    }
    fa_list *lists[] = {&a->conns.idle, &a->conns.head};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        while ((fd = lists[i]->head) >= 0) {
            fa_slot *s = &a->conns.slots[fd];
            if (a->http) {
                if (http_input(a, fd, s, 1, s->list))
                    pushed++;
                else if (s->state != FA_SLOT_WAITING)
                    continue;       /* refused, gone, or ready for space */
            } else if (peek(fd) == HAS_DATA) {
                unlist(a, fd, s);
                s->state = FA_SLOT_FREE;
                pushed += (uint32_t)dispatch(a, fd, s);     /* or the ready FIFO */
                continue;
            }
            if (s->state != FA_SLOT_WAITING)
                continue;
            unlist(a, fd, s);
            slot_release(s);
            close_conn(a, fd);
            count(&a->stats.stop_closed);
        }
    }
    return pushed;
}

/*
 * The stop: accept what was queued when it was asked for (so those clients
 * are served rather than reset when the listener goes), serve every
 * connection that is readable by then, and close the idle ones with a FIN.
 * Waits for ring space as long as something readable needs it, unless an
 * abort comes.
 */
static int final_drain(fa_acceptor *a)
{
    struct epoll_event events[FA_EVENTS];
    int64_t left = queued_now(a);
    uint64_t grace_until = 0;
    if (left < 0)
        left = (int64_t)a->ring.capacity + 4096;   /* bounded even if unknown */
    /* Accepting is by direct calls from here on: a level-triggered
     * listener in the set would keep every epoll_wait below busy. */
    set_listening(a, 0);
    for (;;) {
        if (atomic_load(&a->aborting))
            return 0;
        uint32_t pushed = take_back(a) + dispatch_ready(a);
        int accept_blocked = 0;
        if (left > 0) {
            uint32_t got = 0;
            uint32_t limit = left < (int64_t)a->max_batch ? (uint32_t)left : a->max_batch;
            uint64_t before = fa_stat_accepted(a);
            int rc = accept_batch(a, limit, &got);
            pushed += got;
            /* Shed and waiting ones use up the budget too, or a steady
             * stream of new connections during the drain would keep it going
             * for ever. */
            left -= (int64_t)(fa_stat_accepted(a) - before);
            if (rc < 0)
                return rc;
            if (rc == QUEUE_EMPTY || rc == PAUSE || rc == MAXED)
                left = 0;       /* what is left is the kernel's to reset */
            else if (rc == RING_FULL) {
                count(&a->stats.ring_full_waits);
                accept_blocked = 1;
            }
        }
        /* the waiting connections whose input is already there */
        int n, ignored = 0;
        while ((n = epoll_wait(a->epoll_fd, events, FA_EVENTS, 0)) > 0)
            pushed += handle_events(a, events, n, &ignored);
        if (left <= 0 && !accept_blocked) {
            /* the grace: connections waiting in C may still bring a request.
             * The listener goes first, so that no client completes a
             * handshake meanwhile that the release would then reset. */
            if (grace_until == 0) {
                end_listening(a);
                grace_until = fa_now_ns() + a->grace_ns;
            }
            uint64_t now = fa_now_ns();
            expire(a, now);
            if (now < grace_until && fa_conns_armed(&a->conns) > 0 &&
                a->conns.ready.head < 0) {
                if (pushed)
                    fa_lot_wake_one(&a->lot);
                int t = ms_until(grace_until, now, -1);
                t = ms_until(fa_conns_next_deadline(&a->conns), now, t);
                n = wait_events(a, events, t, 0);
                if (n > 0 && handle_events(a, events, n, &ignored))
                    fa_lot_wake_one(&a->lot);
                continue;
            }
            pushed += settle_idle(a);
        }
        if (pushed)
            fa_lot_wake_one(&a->lot);
        int want_space = accept_blocked || a->conns.ready.head >= 0;
        if (!want_space && left <= 0)
            break;
        if (want_space && !pushed) {
            /* the ring is full: sleep until a worker frees a slot (or an
             * abort kicks) */
            n = wait_events(a, events, -1, 1);
            if (n > 0 && handle_events(a, events, n, &ignored))
                fa_lot_wake_one(&a->lot);
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

#define FA_SCHED_FLAG_RESET_ON_FORK 0x01

/* The loop thread's scheduling while it runs (see fa_acceptor_set_realtime). */
typedef struct {
    int managed;                    /* attributes changed: restore `saved` at the end */
    int rt_allowed;                 /* SCHED_FIFO was granted at start */
    int rt_now;
    struct fa_sched_attr saved, normal, rt;
} loop_sched;

static int set_attr(struct fa_sched_attr *attr)
{
    attr->size = sizeof *attr;
    return (int)syscall(SYS_sched_setattr, 0, attr, 0);
}

/* Realtime if asked and allowed, else the normal policy with a short slice,
 * so that the loop's wake-ups preempt what runs on its CPU. A thread the
 * caller made realtime, batch or idle is left as it is. */
static void sched_start(fa_acceptor *a, loop_sched *ls)
{
    memset(ls, 0, sizeof *ls);
    if (syscall(SYS_sched_getattr, 0, &ls->saved, sizeof ls->saved, 0) < 0 ||
        ls->saved.sched_policy != SCHED_OTHER)
        return;
    ls->normal = ls->saved;
    ls->normal.sched_flags = 0;
    ls->normal.sched_runtime = FA_ACCEPT_SLICE_NS;
    ls->rt = ls->saved;
    ls->rt.sched_policy = SCHED_FIFO;
    ls->rt.sched_priority = FA_ACCEPT_RT_PRIORITY;
    ls->rt.sched_nice = 0;
    ls->rt.sched_runtime = 0;
    ls->rt.sched_flags = FA_SCHED_FLAG_RESET_ON_FORK;  /* what it might fork starts normal */
    if (a->realtime && set_attr(&ls->rt) == 0) {
        ls->managed = ls->rt_allowed = ls->rt_now = 1;
        atomic_store_explicit(&a->running_realtime, 1, memory_order_relaxed);
        return;
    }
    ls->managed = set_attr(&ls->normal) == 0;  /* EINVAL (no EEVDF): keep the default */
}

/* Switches between realtime and normal (a system call only on a change). */
static void sched_want(fa_acceptor *a, loop_sched *ls, int rt)
{
    if (!ls->rt_allowed || rt == ls->rt_now)
        return;
    if (set_attr(rt ? &ls->rt : &ls->normal) == 0) {
        ls->rt_now = rt;
        atomic_store_explicit(&a->running_realtime, rt, memory_order_relaxed);
    }
}

static void sched_restore(fa_acceptor *a, loop_sched *ls)
{
    if (ls->managed) {
        ls->saved.sched_flags = 0;
        set_attr(&ls->saved);
    }
    atomic_store_explicit(&a->running_realtime, 0, memory_order_relaxed);
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
    loop_sched sched;
    sched_start(a, &sched);
    uint64_t last_burst_ns = 0;    /* when the kernel queue last held a burst */
    /* A burst: rt_burst connections taken before the queue ran empty. Half
     * the backlog, so that a steady load with fewer clients than that
     * never counts as one, however late a normal loop wakes for it. */
    uint32_t rt_burst = backlog_now(a) / 2;
    if (rt_burst < FA_RT_BURST)
        rt_burst = FA_RT_BURST;
    uint32_t run = 0;               /* taken since the queue was last empty */
    /* Named for top -H, perf and py-spy while it runs the loop; the thread
     * is the caller's, so its own name comes back afterwards. */
    char thread_name[16] = {0};
    int restore_name = prctl(PR_GET_NAME, thread_name) == 0 &&
                       prctl(PR_SET_NAME, "fa-accept") == 0;

    struct epoll_event events[FA_EVENTS];
    int rc = 0;
    int backoff_ms = 0;
    uint64_t backoff_until_ns = 0;  /* no accepting before this (EMFILE & co) */
    uint64_t spin_until_ns = 0;     /* 0: not polling */
    int ring_full = 0;              /* the last batch found the ring full */
    int maxed = 0;                  /* the last batch found max_conns open */
    /* How long the last epoll_wait slept: a stream denser than one
     * connection per nap_ns is worth napping for, a sparser one is not (a
     * nap that finds nothing costs a wake-up of its own). */
    uint64_t slept_ns = UINT64_MAX;
    uint64_t busy_since = 0;        /* since when every sleep was short (0: idle) */
    int nap_next = 0;
    set_listening(a, 1);
    for (;;) {
        int napped = 0;
        if (atomic_load(&a->stopping))
            break;
        uint64_t now = fa_now_ns();
        if (backoff_until_ns && now >= backoff_until_ns)
            backoff_until_ns = 0;
        if (ring_full && !fa_ring_full(&a->ring))
            ring_full = 0;
        if (maxed && atomic_load_explicit(&a->open, memory_order_relaxed) < (int64_t)a->max_conns) {
            maxed = 0;
            atomic_store(&a->accept_paused, 0);
        }
        uint32_t pushed = take_back(a) + dispatch_ready(a);
        int may_accept = !backoff_until_ns && !maxed &&
                         !(ring_full && a->dispatch == FA_DISPATCH_ACCEPT &&
                           a->overload != FA_OVERLOAD_SHED);
        set_listening(a, may_accept);

        int n = 0;
        int accept_now = 0;
        if (spin_until_ns && now < spin_until_ns && may_accept) {
            /* A burst is arriving: look without sleeping. */
            if (fa_conns_armed(&a->conns))
                n = epoll_wait(a->epoll_fd, events, FA_EVENTS, 0);
            accept_now = 1;
        } else if (nap_next && !pushed) {
            /* The workers are busy with what we gave them: let connections
             * gather in the kernel queue rather than wake for each one. */
            nap_next = 0;
            napped = 1;
            count(&a->stats.naps);
            fa_nap(&a->ring, &a->lot, (int64_t)a->nap_ns);
            accept_now = may_accept;
            if (fa_conns_armed(&a->conns))
                n = epoll_wait(a->epoll_fd, events, FA_EVENTS, 0);
        } else {
            spin_until_ns = 0;
            nap_next = 0;
            int timeout = pushed ? 0 : ms_until(fa_conns_next_deadline(&a->conns), now, -1);
            if (backoff_until_ns)
                timeout = ms_until(backoff_until_ns, now, timeout);
            /* Realtime while idle or in a burst, so that the first wake-up
             * of a burst is not late; normal under a steady load (see
             * fa_accept.h). */
            int steady = busy_since && now - busy_since >= FA_RT_STEADY_NS;
            sched_want(a, &sched, !steady || now - last_burst_ns < FA_RT_HOT_NS);
            int workers_idle = fa_ring_depth(&a->ring) == 0;
            /* A normal loop looks again after FA_RT_IDLE_NS, to be realtime
             * for the next wake-up if nothing came: that one may be a burst. */
            if (sched.rt_allowed && !sched.rt_now &&
                (timeout < 0 || timeout > (int)(FA_RT_IDLE_NS / 1000000u)))
                timeout = (int)(FA_RT_IDLE_NS / 1000000u);
            uint64_t t0 = fa_now_ns();
            n = wait_events(a, events, timeout, ring_full || a->conns.ready.head >= 0);
            slept_ns = fa_now_ns() - t0;
            /* (a sleep while workers still had work is no sign of an idle server) */
            if (workers_idle && slept_ns >= FA_RT_IDLE_NS)
                busy_since = 0;
            else if (!busy_since)
                busy_since = t0;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        pushed += handle_events(a, events, n, &accept_now);
        if (atomic_load(&a->stopping))
            break;

        int end = QUEUE_EMPTY;
        if (accept_now && may_accept) {
            uint32_t got = 0;
            uint64_t before = fa_stat_accepted(a);
            end = accept_batch(a, a->max_batch, &got);
            pushed += got;
            uint64_t accepted = fa_stat_accepted(a) - before;
            run = napped ? 0 : run + (uint32_t)accepted;   /* (a nap gathers on purpose) */
            if (run >= rt_burst)
                last_burst_ns = fa_now_ns();
            if (end != BATCH_DONE)
                run = 0;
            if (accepted) {
                /* Poll on only when the kernel queue had built up while we
                 * slept (or we are polling already): then the wake-up
                 * latency is what lets it overflow. Connections arriving one
                 * by one are cheaper to sleep for, and polling would burn a
                 * CPU under steady load. A batch gathered by a nap is
                 * expected to be large and is no sign of a burst. */
                if (a->spin_ns && !napped &&
                    (spin_until_ns || accepted >= FA_SPIN_TRIGGER || end == BATCH_DONE))
                    spin_until_ns = fa_now_ns() + a->spin_ns;
                count(&a->stats.batches);
            }
        }
        if (pushed && fa_ring_depth(&a->ring) > 0) {
            /* Workers already running may have taken the whole batch; then
             * waking a parked one would only put it back to sleep. */
            fa_lot_wake_one(&a->lot);
            nap_next = a->nap_ns && !spin_until_ns && end == QUEUE_EMPTY &&
                       (napped || slept_ns < a->nap_ns);
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
            backoff_until_ns = fa_now_ns() + (uint64_t)backoff_ms * 1000000u;
        } else if (accept_now && may_accept) {
            backoff_ms = 0;
        }
        if (end == RING_FULL && !ring_full) {
            ring_full = 1;
            spin_until_ns = 0;
            count(&a->stats.ring_full_waits);
        }
        if (end == MAXED && !maxed) {
            maxed = 1;
            spin_until_ns = 0;
            atomic_store(&a->accept_paused, 1);
            count(&a->stats.max_conns_pauses);
        }
        if (a->conns.ready.head >= 0 && !ring_full) {
            ring_full = 1;          /* ready connections wait for space too */
            count(&a->stats.ring_full_waits);
        }
        expire(a, fa_now_ns());
    }
    if (rc == 0 && !atomic_load(&a->aborting))
        rc = final_drain(a);
    end_listening(a);
    {
        /* after an abort or an error: nobody will serve these */
        fa_list *lists[] = {&a->conns.idle, &a->conns.head, &a->conns.proxy,
                            &a->conns.ready};
        for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
            int fd;
            while ((fd = fa_list_pop(&a->conns, lists[i])) >= 0) {
                slot_release(&a->conns.slots[fd]);
                close_conn(a, fd);
                count(&a->stats.stop_closed);
            }
        }
        atomic_store_explicit(&a->stats.waiting, 0, memory_order_relaxed);
    }
    /* No more re-arming: a worker keeping a connection from now on closes
     * it; what is on the way back already is closed here. (After the lists
     * above: from here on workers may raise stop_closed too.) */
    atomic_store(&a->loop_done, 1);
    atomic_thread_fence(memory_order_seq_cst);
    close_backq(a, -1);
    fa_lot_close(&a->lot);
    sched_restore(a, &sched);
    if (restore_name)
        prctl(PR_SET_NAME, thread_name);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* SOCK_NONBLOCK, MSG_NOSIGNAL; setup.py defines it too */
#endif
#include "fa_loadgen.h"
#include "fa_config.h"
#include "fa_fdtable.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24      /* Linux 4.2; older libc headers lack it */
#endif

#define NONE UINT32_MAX
#define SCRATCH_BYTES 16384
#define EVENTS_MAX 512
/* Host parts 1 .. 2^24 - 2 of 127.0.0.0/8: skips the network and broadcast
 * addresses. */
#define SOURCE_HOSTS 0xfffffeu

enum phase { CONNECTING, SENDING, READING };
enum outcome { COMPLETED, REFUSED, RESET, TIMED_OUT, OTHER };

typedef struct fa_load_conn {
    int fd;                 /* -1 while the slot is free */
    uint8_t phase;
    uint8_t got_reply;      /* at least one byte of the reply was read */
    uint32_t sent;          /* request bytes written */
    uint32_t prev, next;    /* start-order list of open connections */
    uint32_t deferred;      /* epoll events seen but not acted on yet; 0: none */
    uint32_t deferred_at;   /* its index in l->deferred while deferred != 0 */
    uint64_t start_ns;
} fa_load_conn;

/* Shared by every run in the process, so back-to-back runs keep moving
 * through fresh source addresses instead of reusing the first ones. */
static _Atomic uint32_t next_source_host;

int fa_load_target(fa_load_config *cfg, int family, const char *ip, uint16_t port,
                   uint32_t scope_id)
{
    memset(&cfg->target, 0, sizeof cfg->target);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&cfg->target;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1)
            return -EINVAL;
        cfg->target_len = sizeof *sin;
        return 0;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&cfg->target;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sin6->sin6_scope_id = scope_id;
        if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) != 1)
            return -EINVAL;
        cfg->target_len = sizeof *sin6;
        return 0;
    }
    return -EINVAL;
}

/* a * b, or UINT64_MAX when that does not fit */
static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* The default for max_ns: what a run of this shape needs at the worst that
 * is still normal (see fa_loadgen.h). It saturates rather than wrap. */
static uint64_t shape_bound_ns(const fa_load_config *cfg)
{
    uint64_t rounds = cfg->connections / cfg->concurrency +
                      (cfg->connections % cfg->concurrency != 0) + 1;
    uint64_t per_round = cfg->timeout_ns > UINT64_MAX - FA_LOAD_PAUSE_MAX_NS
                             ? UINT64_MAX : cfg->timeout_ns + FA_LOAD_PAUSE_MAX_NS;
    return mul_sat(rounds, per_round);
}

static int is_loopback_v4(const fa_load_config *cfg)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&cfg->target;
    return cfg->target.ss_family == AF_INET && (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
}

int fa_load_init(fa_load *l, const fa_load_config *cfg)
{
    memset(l, 0, sizeof *l);
    l->epoll_fd = -1;
    if (cfg->connections < 1 || cfg->connections > FA_LOAD_MAX_CONNECTIONS ||
        cfg->concurrency < 1 || cfg->concurrency > FA_LOAD_MAX_CONCURRENCY ||
        cfg->timeout_ns < 1 || cfg->request_len > FA_LOAD_MAX_REQUEST ||
        (cfg->request_len > 0 && cfg->request == NULL) ||
        (cfg->target.ss_family != AF_INET && cfg->target.ss_family != AF_INET6))
        return -EINVAL;
    l->cfg = *cfg;
    if (l->cfg.concurrency > l->cfg.connections)
        l->cfg.concurrency = (uint32_t)l->cfg.connections;
    if (l->cfg.max_ns == 0)
        l->cfg.max_ns = shape_bound_ns(&l->cfg);
    l->rotate_source = is_loopback_v4(cfg);

    uint32_t n = l->cfg.concurrency;
    l->slots = calloc(n, sizeof *l->slots);
    l->free_slots = calloc(n, sizeof *l->free_slots);
    l->deferred = calloc(n, sizeof *l->deferred);
    /* Untouched pages of the sample arrays cost nothing, so a run that ends
     * early does not pay for its full budget. */
    l->connect_ns = malloc(l->cfg.connections * sizeof *l->connect_ns);
    l->rtt_ns = malloc(l->cfg.connections * sizeof *l->rtt_ns);
    l->scratch = malloc(SCRATCH_BYTES);
    if (!l->slots || !l->free_slots || !l->deferred || !l->connect_ns || !l->rtt_ns ||
        !l->scratch) {
        /* calloc'd slots read as fd 0: keep destroy from closing it */
        free(l->slots);
        l->slots = NULL;
        fa_load_destroy(l);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        l->slots[i].fd = -1;
        /* popped from the top: slot 0 first */
        l->free_slots[i] = n - 1 - i;
    }
    l->free_count = n;
    l->oldest = l->newest = NONE;

    l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epoll_fd < 0) {
        int rc = -errno;
        fa_load_destroy(l);
        return rc;
    }
    /* The sockets take the lowest free numbers, and the epoll fd just took
     * the lowest: the run's descriptors end near epoll_fd + n. */
    fa_grow_fd_table(l->epoll_fd, (uint64_t)l->epoll_fd + n + FA_LOAD_FD_SLACK);
    l->res.source_rotation = l->rotate_source;
    return 0;
}

void fa_load_destroy(fa_load *l)
{
    if (l->slots) {
        for (uint32_t i = 0; i < l->cfg.concurrency; i++)
            if (l->slots[i].fd >= 0)
                close(l->slots[i].fd);
    }
    if (l->epoll_fd >= 0)
        close(l->epoll_fd);
    free(l->slots);
    free(l->free_slots);
    free(l->deferred);
    free(l->connect_ns);
    free(l->rtt_ns);
    free(l->scratch);
    l->slots = NULL;
    l->free_slots = NULL;
    l->deferred = NULL;
    l->connect_ns = l->rtt_ns = NULL;
    l->scratch = NULL;
    l->epoll_fd = -1;
}

static enum outcome classify(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return REFUSED;
    case ECONNRESET:
    case EPIPE:
        return RESET;
    case ETIMEDOUT:
        return TIMED_OUT;
    default:
        return OTHER;
    }
}

static int out_of_resources(int err)
{
    return err == EADDRNOTAVAIL || err == EAGAIN || err == EMFILE || err == ENFILE ||
           err == ENOBUFS || err == ENOMEM;
}

static void count(fa_load *l, enum outcome o, uint64_t t)
{
    switch (o) {
    case COMPLETED: l->res.completed++; break;
    case REFUSED:   l->res.refused++; break;
    case RESET:     l->res.reset++; break;
    case TIMED_OUT: l->res.timeout++; break;
    case OTHER:     l->res.other++; break;
    }
    if (t > l->last_end_ns)
        l->last_end_ns = t;
}

/* Out of ports, fds or memory: hold new connections back for a while
 * (doubling while it lasts) instead of burning the budget in a tight loop. */
static void back_off(fa_load *l, uint64_t t)
{
    l->pause_ns = l->pause_ns == 0 ? FA_LOAD_PAUSE_MIN_NS : l->pause_ns * 2;
    if (l->pause_ns > FA_LOAD_PAUSE_MAX_NS)
        l->pause_ns = FA_LOAD_PAUSE_MAX_NS;
    l->pause_until_ns = t + l->pause_ns;
}

static void list_append(fa_load *l, uint32_t i)
{
    fa_load_conn *c = &l->slots[i];
    c->prev = l->newest;
    c->next = NONE;
    if (l->newest != NONE)
        l->slots[l->newest].next = i;
    else
        l->oldest = i;
    l->newest = i;
    l->open++;
}

static void list_remove(fa_load *l, uint32_t i)
{
    fa_load_conn *c = &l->slots[i];
    if (c->prev != NONE)
        l->slots[c->prev].next = c->next;
    else
        l->oldest = c->next;
    if (c->next != NONE)
        l->slots[c->next].prev = c->prev;
    else
        l->newest = c->prev;
    l->open--;
}

/* Remembers events of connection i to act on once the starts pause: the set
 * is edge-triggered, so they would not be reported again. */
static void defer(fa_load *l, uint32_t i, uint32_t events)
{
    fa_load_conn *c = &l->slots[i];
    if (c->deferred == 0) {
        c->deferred_at = l->deferred_count;
        l->deferred[l->deferred_count++] = i;
    }
    c->deferred |= events;
}

static void undefer(fa_load *l, uint32_t i)
{
    fa_load_conn *c = &l->slots[i];
    uint32_t last = l->deferred[--l->deferred_count];
    l->deferred[c->deferred_at] = last;
    l->slots[last].deferred_at = c->deferred_at;
    c->deferred = 0;
}

/* Ends an open connection: closes it normally (no SO_LINGER games: the
 * rotating source addresses keep any TIME_WAIT from crowding the ports). */
static void finish(fa_load *l, uint32_t i, enum outcome o, uint64_t t)
{
    fa_load_conn *c = &l->slots[i];
    /* close() also removes the fd from the epoll set. Its only failure,
     * EINTR, still releases the fd on Linux, and EIO cannot happen on a
     * socket: nothing to handle. */
    close(c->fd);
    c->fd = -1;
    if (c->deferred)
        undefer(l, i);
    list_remove(l, i);
    l->free_slots[l->free_count++] = i;
    if (o == COMPLETED)
        l->rtt_ns[l->res.rtt.samples++] = t - c->start_ns;
    count(l, o, t);
}

/*
 * Moves connection i as far as it can go without blocking. events is what
 * epoll reported (EPOLLOUT alone right after connect() succeeded at once),
 * and ready_ns when it was known: the return of that epoll_wait (or of
 * connect()), which ends the connect sample. Returns 1 if the connection
 * ended.
 */
static int advance(fa_load *l, uint32_t i, uint32_t events, uint64_t ready_ns)
{
    fa_load_conn *c = &l->slots[i];
    uint64_t t;
    int err;

    if (c->phase == CONNECTING) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            if (err != 0) {
                finish(l, i, classify(err), fa_now_ns());
                return 1;
            }
        } else if (!(events & EPOLLOUT)) {
            return 0;
        }
        l->connect_ns[l->res.connect.samples++] = ready_ns - c->start_ns;
        c->phase = SENDING;
    }

    if (c->phase == SENDING) {
        const char *req = l->cfg.request;
        while (c->sent < l->cfg.request_len) {
            ssize_t n = send(c->fd, req + c->sent, l->cfg.request_len - c->sent, MSG_NOSIGNAL);
            if (n >= 0) {
                c->sent += (uint32_t)n;
                continue;
            }
            err = errno;
            if (err == EINTR)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return 0;   /* the next EPOLLOUT edge brings us back */
            finish(l, i, classify(err), fa_now_ns());
            return 1;
        }
        c->phase = READING;
    }

    /* Nothing to read unless epoll said so: input that arrives after epoll
     * polled this socket raises a new edge. This skips the read that would
     * say EAGAIN right after the request went out, and the wake-ups for
     * send-buffer space. */
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)))
        return 0;

    /* READING: drain until EAGAIN (the epoll set is edge-triggered) or EOF. */
    for (;;) {
        ssize_t n = read(c->fd, l->scratch, SCRATCH_BYTES);
        if (n > 0) {
            c->got_reply = 1;
            /* The peer's FIN was in when epoll reported RDHUP (and no RST,
             * which would add ERR and HUP), so a short read took everything
             * before it: EOF without another read. */
            if ((events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) == EPOLLRDHUP &&
                (size_t)n < SCRATCH_BYTES) {
                finish(l, i, COMPLETED, fa_now_ns());
                return 1;
            }
            continue;
        }
        t = fa_now_ns();
        if (n == 0) {
            finish(l, i, c->got_reply ? COMPLETED : OTHER, t);
            return 1;
        }
        err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return 0;
        finish(l, i, classify(err), t);
        return 1;
    }
}

static void bind_source(int fd)
{
    uint32_t k = atomic_fetch_add_explicit(&next_source_host, 1, memory_order_relaxed);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000000u | (1u + k % SOURCE_HOSTS));
    int one = 1;
    /* Without the option (ENOPROTOOPT on a kernel before 4.2) bind() picks
     * a port per address, which the rotation still keeps plentiful; and if
     * bind() fails, connect() picks an address itself. Neither failure is
     * worth losing the connection over. */
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    (void)bind(fd, (struct sockaddr *)&src, sizeof src);
}

/* Starts one connection attempt. Returns 0, or -1 if it failed at once from
 * lack of resources (the caller stops launching for now). */
static int launch(fa_load *l)
{
    uint64_t t = fa_now_ns();
    if (!l->started) {
        l->started = 1;
        l->first_start_ns = t;
    }
    l->last_start_ns = t;
    l->res.attempted++;

    int fd = socket(l->cfg.target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int err = errno;
        count(l, classify(err), t);
        if (!out_of_resources(err))
            return 0;
        back_off(l, t);
        return -1;
    }
    if (l->rotate_source)
        bind_source(fd);

    uint32_t i = l->free_slots[--l->free_count];
    fa_load_conn *c = &l->slots[i];
    c->fd = fd;
    c->phase = CONNECTING;
    c->got_reply = 0;
    c->sent = 0;
    c->deferred = 0;
    c->start_ns = fa_now_ns();
    list_append(l, i);

    if (connect(fd, (struct sockaddr *)&l->cfg.target, l->cfg.target_len) == 0) {
        /* Connected at once: that is the connect sample. The request goes
         * out on the EPOLLOUT the set reports when the fd is added. */
        l->connect_ns[l->res.connect.samples++] = fa_now_ns() - c->start_ns;
        c->phase = SENDING;
    } else {
        int err = errno;
        if (err != EINPROGRESS) {
            t = fa_now_ns();
            finish(l, i, classify(err), t);
            if (!out_of_resources(err))
                return 0;
            back_off(l, t);
            return -1;
        }
    }
    /* Added only now that the socket is connecting: an unconnected TCP
     * socket polls as EPOLLOUT|EPOLLHUP. The set reports readiness that is
     * already there when a fd is added, so no edge is lost in between. */
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.u32 = i,
    };
    if (epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        /* ENOMEM, or ENOSPC: past fs.epoll.max_user_watches */
        t = fa_now_ns();
        finish(l, i, OTHER, t);
        back_off(l, t);
        return -1;
    }
    return 0;
}

static int can_launch(const fa_load *l, uint64_t t)
{
    return l->free_count > 0 && l->res.attempted < l->cfg.connections &&
           t < l->launch_until_ns && t >= l->pause_until_ns;
}

/* Starts up to FA_LOAD_HARVEST_EVERY connections. Returns 1 if more could
 * start at once: the caller then polls without sleeping and comes back, so
 * the handshakes already done are timestamped between the groups. */
static int launch_some(fa_load *l, uint64_t t)
{
    if (!can_launch(l, t))
        return 0;
    for (int k = 0; k < FA_LOAD_HARVEST_EVERY; k++) {
        if (l->free_count == 0 || l->res.attempted >= l->cfg.connections)
            break;
        if (launch(l) < 0)
            return 0;
    }
    /* A group without a resource failure ends the back-off. */
    l->pause_ns = 0;
    return can_launch(l, t);
}

static void expire(fa_load *l, uint64_t t)
{
    while (l->oldest != NONE) {
        uint32_t i = l->oldest;
        if (t < l->slots[i].start_ns + l->cfg.timeout_ns)
            break;
        finish(l, i, TIMED_OUT, t);
    }
}

/* Milliseconds until the next thing the loop must do by itself, rounded up
 * (epoll_wait sleeps in whole milliseconds; waking early would spin). */
static int wait_ms(fa_load *l, uint64_t t)
{
    uint64_t until = UINT64_MAX;
    if (l->oldest != NONE)
        until = l->slots[l->oldest].start_ns + l->cfg.timeout_ns;
    if (l->res.attempted < l->cfg.connections && l->free_count > 0 &&
        t < l->launch_until_ns) {
        /* Starts are held back by a pause (or more would have started):
         * wake when it ends, or when no more may start (with nothing open,
         * the run is over then). */
        uint64_t next = l->pause_until_ns < l->launch_until_ns ? l->pause_until_ns
                                                               : l->launch_until_ns;
        if (next < until)
            until = next;
    }
    if (until <= t)
        return 0;
    uint64_t ms = (until - t + 999999) / 1000000;
    return ms > 60000 ? 60000 : (int)ms;
}

/*
 * Handles what a zero-timeout poll between two groups of starts reported:
 * only what keeps the samples true and costs next to nothing. A finished
 * handshake gets its connect sample now, a failed one is ended; sending the
 * request and reading the reply wait until the starts pause, so the client
 * opens connections at the same pace however fast the server answers.
 */
static void harvest(fa_load *l, uint32_t i, uint32_t events, uint64_t ready_ns)
{
    fa_load_conn *c = &l->slots[i];
    if (c->phase == CONNECTING) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            advance(l, i, events, ready_ns);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        l->connect_ns[l->res.connect.samples++] = ready_ns - c->start_ns;
        c->phase = SENDING;
    }
    defer(l, i, events);
}

/* Acts on every deferred event (the starts have paused). */
static void catch_up(fa_load *l)
{
    while (l->deferred_count > 0) {
        uint32_t i = l->deferred[l->deferred_count - 1];
        uint32_t events = l->slots[i].deferred;
        undefer(l, i);
        advance(l, i, events, fa_now_ns());
    }
}

int fa_load_run(fa_load *l)
{
    struct epoll_event events[EVENTS_MAX];
    if (l->launch_until_ns == 0) {
        uint64_t t0 = fa_now_ns();
        l->launch_until_ns = t0 > UINT64_MAX - l->cfg.max_ns ? UINT64_MAX : t0 + l->cfg.max_ns;
    }
    for (;;) {
        uint64_t t = fa_now_ns();
        expire(l, t);
        int more = launch_some(l, t);
        if (!more)
            catch_up(l);
        if (l->open == 0 &&
            (l->res.attempted >= l->cfg.connections || t >= l->launch_until_ns))
            return 0;
        /* Between groups of starts: see what is ready without sleeping. */
        int n = epoll_wait(l->epoll_fd, events, EVENTS_MAX, more ? 0 : wait_ms(l, fa_now_ns()));
        if (n < 0)
            return -errno;  /* -EINTR included: the caller retries */
        uint64_t ready = fa_now_ns();
        for (int k = 0; k < n; k++) {
            uint32_t i = events[k].data.u32;
            /* Only fds of open slots are in the set, and slots are reused
             * only between batches. */
            if (l->slots[i].fd < 0)
                continue;
            if (more)
                harvest(l, i, events[k].events, ready);
            else
                advance(l, i, events[k].events, ready);
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least q% of samples <= it. */
static uint64_t rank(const uint64_t *v, uint64_t n, uint64_t q)
{
    uint64_t r = (q * n + 99) / 100;
    return v[r > 0 ? r - 1 : 0];
}

static void percentiles(uint64_t *v, fa_load_percentiles *p)
{
    uint64_t n = p->samples;
    p->p50_ns = p->p90_ns = p->p99_ns = p->max_ns = 0;
    if (n == 0)
        return;
    qsort(v, n, sizeof *v, cmp_u64);
    p->p50_ns = rank(v, n, 50);
    p->p90_ns = rank(v, n, 90);
    p->p99_ns = rank(v, n, 99);
    p->max_ns = v[n - 1];
}

void fa_load_result_get(fa_load *l, fa_load_result *out)
{
    l->res.elapsed_ns = l->started && l->last_end_ns > l->first_start_ns
                            ? l->last_end_ns - l->first_start_ns : 0;
    l->res.issue_ns = l->started ? l->last_start_ns - l->first_start_ns : 0;
    percentiles(l->connect_ns, &l->res.connect);
    percentiles(l->rtt_ns, &l->res.rtt);
    *out = l->res;
}

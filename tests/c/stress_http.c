/*
 * stress_http.c - standalone stress test of the accept loop's HTTP mode
 * (fa_acceptor_set_http): request heads read and parsed in C, nonblocking,
 * before any worker sees them; bad heads answered from C; kept connections
 * given back with the bytes a worker read past its request. Meant to run
 * under ThreadSanitizer and AddressSanitizer+UBSan as well as in a plain
 * optimised build.
 *
 * Build (tests/test_c_stress.py and `make debug` do this):
 *   gcc -std=c11 -O1 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -Isrc \
 *       tests/c/stress_http.c src/fa_accept.c src/fa_park.c src/fa_conn.c \
 *       src/fa_http.c src/fa_proxy.c -o stress_http
 * plus -fsanitize=thread -Wno-tsan, or -fsanitize=address,undefined.
 *
 * The acceptor has small limits so that the edges are hit often: request
 * line 256 bytes, 16 fields, head 2048 bytes, head deadline 300 ms, idle
 * deadline 1 s, max_body 4096, and a ring of 2 or 4 slots so that complete
 * requests wait in C for ring space.
 *
 * Scenarios (all run by default, pick with -s):
 *  m  the main run. Client threads open many keep-alive connections and send
 *     each a sequence of requests whose targets carry the connection id, the
 *     sequence number and the shape of the head ("/c7/r3/x5/t1/b812/l0/v1/k0":
 *     5 extra fields, Content-Length framing, 812 body bytes, no leading
 *     empty line, HTTP/1.1, no Connection field); bodies by Content-Length or
 *     chunked; heads of exactly max_request_line and max_head bytes and with
 *     exactly max_fields fields now and then. Everything is written in random
 *     fragments (1 byte to the whole rest), several connections interleaved,
 *     with short pauses, and often pipelined (up to three requests queued
 *     before the first answer). Workers check each fa_http_req against its
 *     bytes (offsets inside the block, head_len <= len, every field where
 *     the target says it is), that it is the request expected next on that
 *     connection, from that socket (peer port, same server fd as the
 *     connection's first request, FA_CONN_NEW only for the first), and that
 *     no other worker holds the descriptor; read the rest of the body from
 *     the block and then the socket in random sizes (often past the body),
 *     answer, sometimes read a little more (nonblocking), and give the
 *     connection back with a malloc'd copy of every byte read past the body:
 *     the next request's start or all of it, or nothing. Sometimes they
 *     close instead (Connection: close, a shutdown and a drain).
 *     Connections end by a FIN, Connection: close, a half close, silence
 *     (EOF at the head deadline for a new connection, at the idle deadline
 *     for a kept one), or misbehaving: a head over each limit (414, 431 by
 *     fields, 431 by size), bare LF, bare CR, a CTL, other grammar errors
 *     (400), HTTP/2.0 (505), an unknown transfer coding (501), a
 *     Content-Length above max_body with and without its body (413), a head
 *     that stops half way (408 at the deadline, not before), a reset or a
 *     FIN mid-head; bad heads are sometimes pipelined behind good requests,
 *     so that they reach the loop through a worker's leftover bytes. Every
 *     bad head ends with the byte that makes it bad, so C never closes with
 *     input unread (no reset), and the client expects exactly the status,
 *     Connection: close, the body its Content-Length says, and EOF.
 *     At the end: every well-formed request answered once, in order, with
 *     the right bytes; the loop's counters (http_requests, http_rejected by
 *     status, idle_closed, peer_closed, accepted, kept, stop_closed) equal
 *     what the clients and workers did; every accepted connection ended
 *     exactly once; fa_stat_open and waiting back to 0; no fd leaked.
 *  s  stop, then abort, with work waiting in C: workers held at a gate
 *     while connections have a whole request in the ring and more wait
 *     READY for ring space (some with a pipelined next request in the same
 *     block), kept connections wait idle, new ones are silent or half way
 *     through a head. A stop must serve every READY request and close the
 *     rest with a FIN (stop_closed); an abort must return at once, leaving
 *     the ring to the workers and closing the READY ones (their request
 *     blocks freed: LeakSanitizer). Exact counts either way.
 *  x  abort under load: the traffic of m, and an abort at a random moment.
 *     Nothing about the clients' outcomes is checked after it, but every
 *     accepted connection must still end exactly once in the counters, every
 *     dispatched request reach a worker once, and nothing leak.
 *
 *  k  x reduced to one connection: a worker gives it back while the loop
 *     sleeps, and the loop is aborted at once (the loop and the caller on
 *     different CPUs, so the loop sees the abort before it takes the
 *     connection back). It must still be counted once.
 *  e  empty lines before a request line (RFC 9112 section 2.2: ignored):
 *     a kept connection that sent only the CRLF a legacy client writes
 *     after a POST body waits out its idle deadline and serves its next
 *     request, sent after the head deadline; a new one that sends only a
 *     CRLF is closed at its head deadline like a silent one. No 408.
 *
 * Any violation prints "FAIL: ..." to stderr and exits 1. A watchdog turns a
 * hang (no progress for -T seconds) into a failure with a message. Runs are
 * reproducible from the seed (-S) as far as thread scheduling allows: the
 * seed fixes every connection's plan, bytes and fragment sizes (a stream
 * per connection) and every choice a worker makes about a request (a
 * stream per request); only the interleaving, and so what a read happens
 * to find, is the scheduler's.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fa_accept.h"
#include "fa_http.h"
#include "fa_park.h"
#include "fa_ring.h"

/* The acceptor's limits: small, so that the edges come up often. */
#define H_MAX_REQUEST_LINE 256u
#define H_MAX_FIELDS 16u
#define H_MAX_HEAD 2048u
#define H_MAX_BODY 4096u
#define H_HEAD_NS 300000000ull          /* 300 ms */
#define H_IDLE_NS 1000000000ull         /* 1 s: far above any pause of a client */
#define H_MAX_FD 65536

/* A client thread's connections open at once. */
#define ACTIVE_MAX 16
/* Requests queued on a connection before the first answer. */
#define PIPELINE_MAX 3
/* A head a client started more than this long ago is sent in one go: the
 * interleaving must not make a well-behaved client miss the head deadline. */
#define HEAD_HURRY_NS 20000000ull
/* How much slower than planned a client may have been before a deadline it
 * met on its side counts as its own fault (the machine stalled it), not the
 * loop's (see tolerate()). */
#define SLOW_MARGIN_NS 100000000ull
/* A deadline event (408, EOF of a silent connection) later than this after
 * its deadline means the loop lost track of the deadline. */
#define LATE_MAX_NS 2000000000ull

static const int k_statuses[FA_HTTP_REJECT_SLOTS] = {400, 408, 413, 414, 431, 501, 505};

/* ------------------------------------------------------------------ */
/* options */

static struct {
    const char *scenarios;
    unsigned workers;       /* worker threads */
    unsigned clients;       /* client threads (m, x) */
    unsigned conns;         /* connections per client thread (m; x takes half) */
    unsigned requests;      /* most good requests on one connection */
    unsigned capacity;      /* ring capacity; 0: 2 or 4, from the seed */
    unsigned timeout_s;     /* bound on any single wait, and on no progress */
    uint64_t seed;
} opt = {"msxke", 3, 3, 60, 12, 0, 20, 0};

/* ------------------------------------------------------------------ */
/* failure, progress and the watchdog (as in stress_ring.c) */

static const char *_Atomic g_phase = "start";
static _Atomic uint64_t g_progress;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: [%s] (seed %llu) ", atomic_load(&g_phase),
            (unsigned long long)opt.seed);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    /* Other threads may be stuck for good (that can be the failure being
     * reported): do not wait for them, and skip exit-time leak checks that
     * would only report their stacks. */
    _exit(1);
}

static void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "[%s] ", atomic_load(&g_phase));
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

static void progress(void)
{
    atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    uint64_t last = atomic_load(&g_progress);
    uint64_t last_change_ns = fa_now_ns();
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        uint64_t now = fa_now_ns(), p = atomic_load(&g_progress);
        if (p != last) {
            last = p;
            last_change_ns = now;
        } else if (now - last_change_ns > (uint64_t)opt.timeout_s * 1000000000u) {
            fail("watchdog: no progress for %u s; a thread is stuck (lost wake-up, a "
                 "connection nobody serves?)", opt.timeout_s);
        }
    }
    return NULL;
}

static uint64_t deadline_after_s(unsigned s)
{
    return fa_now_ns() + (uint64_t)s * 1000000000u;
}

static void join_bounded(pthread_t t, const char *what, unsigned idx)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += opt.timeout_s;
    int rc = pthread_timedjoin_np(t, NULL, &ts);
    if (rc == ETIMEDOUT)
        fail("%s %u did not return within %u s", what, idx, opt.timeout_s);
    if (rc != 0)
        fail("pthread_timedjoin_np(%s %u): %s", what, idx, strerror(rc));
}

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0)
        fail("pthread_create: %s", strerror(rc));
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* xorshift64*: cheap per-thread randomness, reproducible from -S. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* A number in [lo, hi]. */
static uint32_t rnd_in(uint64_t *s, uint32_t lo, uint32_t hi)
{
    return lo + (uint32_t)(rnd(s) % ((uint64_t)hi - lo + 1));
}

/* The start of stream `stream` of the seed. Streams are numbered densely
 * (one per connection, one per request), and xorshift's first outputs from
 * neighbouring states are alike: the splitmix64 finalizer spreads them. */
static uint64_t seed_for(unsigned stream)
{
    uint64_t z = opt.seed + 0x9E3779B97F4A7C15ull * ((uint64_t)stream + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 1;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        fail("opendir(/proc/self/fd): %s", strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[256];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
    }
    closedir(d);
}

static void check_fds(int before, const char *what)
{
    int after = count_fds();
    if (after != before) {
        fprintf(stderr, "open fds now:\n");
        list_fds();
        fail("%d fds open before %s, %d after: leaked or double-closed", before, what, after);
    }
}

static int listener(int backlog, struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0)
        fail("bind/listen/getsockname on 127.0.0.1:0: %s", strerror(errno));
    return fd;
}

/* After a stop or an abort the released listener must refuse at once. */
static void check_refused(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    int rc;
    while ((rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr)) < 0 && errno == EINTR)
        ;
    if (rc == 0 || errno != ECONNREFUSED)
        fail("a connect after the loop returned got %s, not ECONNREFUSED",
             rc == 0 ? "connected" : strerror(errno));
    close(fd);
}

/* Every write goes out as its own segment at once. Without it, Nagle holds
 * a small write back until the previous one is acknowledged, and loopback
 * acknowledges late (the 40 ms delayed ACK): fragments would be merged
 * instead of arriving in pieces, and a head written in many of them would
 * take a multiple of 40 ms on the wire while send() had long returned. */
static void no_delay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        fail("TCP_NODELAY: %s", strerror(errno));
}

/* ------------------------------------------------------------------ */
/* growable byte buffers */

typedef struct {
    char *p;
    size_t len, cap;
} dbuf;

static void db_reserve(dbuf *d, size_t more)
{
    if (d->len + more <= d->cap)
        return;
    size_t cap = d->cap ? d->cap : 256;
    while (cap < d->len + more)
        cap *= 2;
    char *p = realloc(d->p, cap);
    if (p == NULL)
        fail("realloc(%zu)", cap);
    d->p = p;
    d->cap = cap;
}

static void db_put(dbuf *d, const void *s, size_t n)
{
    if (n == 0)
        return;             /* d->p may still be NULL: memcpy(NULL, .., 0) is UB */
    db_reserve(d, n);
    memcpy(d->p + d->len, s, n);
    d->len += n;
}

static void db_str(dbuf *d, const char *s)
{
    db_put(d, s, strlen(s));
}

static void db_fill(dbuf *d, char c, size_t n)
{
    if (n == 0)
        return;
    db_reserve(d, n);
    memset(d->p + d->len, c, n);
    d->len += n;
}

static void db_printf(dbuf *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void db_printf(dbuf *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        fail("vsnprintf");
    db_reserve(d, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(d->p + d->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    d->len += (size_t)n;
}

static void db_free(dbuf *d)
{
    free(d->p);
    d->p = NULL;
    d->len = d->cap = 0;
}

/* ------------------------------------------------------------------ */
/* shared state: connection records, expectations, worker controls */

/* One client connection, by its global id. */
typedef struct {
    _Atomic uint32_t next_seq;  /* the request a worker expects next */
    _Atomic int32_t srv_fd;     /* the server's descriptor of its first request, or -1 */
    _Atomic uint32_t port;      /* the client's local port, network order; 0: not yet */
    _Atomic uint32_t answered;  /* answers the client verified */
} conn_rec;

static conn_rec *g_conns;
static uint32_t g_nconns;
static _Atomic uint8_t *g_busy;         /* by server fd: a worker holds it */
static _Atomic int g_ending;            /* x: the abort is coming; tolerate any end */
static _Atomic int g_gate;              /* s: workers hold what they pop */
static _Atomic uint32_t g_at_gate;
static _Atomic int g_worker_may_close;  /* workers may end keep-alive connections */
static _Atomic unsigned g_clients_done;

/* What the clients did, hence what the loop's counters must say. */
static struct {
    _Atomic uint64_t opened, good_answered, worker_close, peer, idle, tolerated;
    _Atomic uint64_t rej[FA_HTTP_REJECT_SLOTS];
    _Atomic uint64_t fragments, pauses, pipelined, bad_pipelined, edge_line, edge_head,
        edge_fields, edge_body, chunked, late_max_ns;
} X;

static void conns_reset(uint32_t n)
{
    free(g_conns);
    g_conns = calloc(n, sizeof *g_conns);
    if (g_conns == NULL)
        fail("calloc");
    for (uint32_t i = 0; i < n; i++)
        atomic_init(&g_conns[i].srv_fd, -1);
    g_nconns = n;
    memset(&X, 0, sizeof X);
}

static int status_slot(int status)
{
    for (int i = 0; i < FA_HTTP_REJECT_SLOTS; i++)
        if (k_statuses[i] == status)
            return i;
    fail("status %d is none the loop answers", status);
}

static void note_late(uint64_t late)
{
    uint64_t m = atomic_load(&X.late_max_ns);
    while (late > m && !atomic_compare_exchange_weak(&X.late_max_ns, &m, late))
        ;
}

/* ------------------------------------------------------------------ */
/* requests: what a good client sends and a worker checks */

/* The shape of one well-formed request; its target spells all of it, so a
 * worker can check the parsed head against it. */
typedef struct {
    uint32_t conn, seq;
    unsigned minor;     /* HTTP/1.0 or HTTP/1.1 */
    unsigned k;         /* Connection field: 0 none, 1 close, 2 keep-alive */
    unsigned t;         /* framing: 0 none, 1 Content-Length, 2 chunked */
    unsigned nx;        /* X-F<i> fields */
    unsigned lead;      /* empty lines before the request line */
    uint32_t blen;      /* body bytes */
} rspec;

static int spec_keep_alive(const rspec *r)
{
    return r->k == 1 ? 0 : r->k == 2 ? 1 : r->minor == 1;
}

static uint8_t body_byte(uint32_t conn, uint32_t seq, uint32_t j)
{
    uint32_t x = conn * 2654435761u ^ seq * 40503u ^ j * 2246822519u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    return (uint8_t)x;
}

static uint32_t body_hash(uint32_t conn, uint32_t seq, uint32_t n)
{
    uint32_t h = 2166136261u;
    for (uint32_t j = 0; j < n; j++)
        h = (h ^ body_byte(conn, seq, j)) * 16777619u;
    return h;
}

/* The worker's answer to a request, byte for byte. */
static void build_response(dbuf *o, const rspec *r, uint32_t hash, int close)
{
    char body[96];
    int n = snprintf(body, sizeof body, "c%u r%u n%u s%08x\n", r->conn, r->seq, r->blen, hash);
    db_printf(o, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s", n,
              close ? "Connection: close\r\n" : "", body);
}

static const char *pick(uint64_t *rs, const char *const *v, size_t n)
{
    return v[rnd(rs) % n];
}
#define PICK(rs, ...) pick((rs), (const char *const[]){__VA_ARGS__}, \
                           sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

typedef struct {
    char name[24];
    char value[64];
    const char *pre, *post;     /* OWS around the value */
    uint32_t pad;               /* 'z' bytes after the value */
} fpart;

static size_t fpart_len(const fpart *f)
{
    return strlen(f->name) + 1 + strlen(f->pre) + strlen(f->value) + f->pad + strlen(f->post) + 2;
}

/* Where the head ends inside what build_request appended. */
typedef struct {
    size_t head_len, total_len;
} rbuilt;

/* Appends request r (head and body) to o. Edges on purpose, now and then:
 * a request line of exactly max_request_line bytes, a head of exactly
 * max_head bytes, exactly max_fields fields, a body of exactly max_body. */
static rbuilt build_request(dbuf *o, const rspec *r, uint64_t *rs, int count)
{
    size_t start = o->len;
    for (unsigned i = 0; i < r->lead; i++)
        db_str(o, "\r\n");
    const char *method = r->t ? "POST" : "GET";
    char target[H_MAX_REQUEST_LINE + 1];
    int tl = snprintf(target, sizeof target, "/c%u/r%u/x%u/t%u/b%u/l%u/v%u/k%u", r->conn, r->seq,
                      r->nx, r->t, r->blen, r->lead, r->minor, r->k);
    size_t line = strlen(method) + 1 + (size_t)tl + 1 + 8;
    size_t qpad = 0;    /* 'z' bytes after "?p=" */
    if (rnd(rs) % 8 == 0 && line + 3 <= H_MAX_REQUEST_LINE) {
        qpad = H_MAX_REQUEST_LINE - line - 3;   /* exactly max_request_line */
        if (count)
            atomic_fetch_add(&X.edge_line, 1);
    } else if (rnd(rs) % 3 == 0) {
        qpad = rnd(rs) % 40;
    }
    db_printf(o, "%s %s", method, target);
    if (qpad || rnd(rs) % 8 == 0) {
        db_str(o, "?p=");
        db_fill(o, 'z', qpad);
    }
    db_printf(o, " HTTP/1.%u\r\n", r->minor);

    fpart f[H_MAX_FIELDS];
    unsigned nf = 0;
    const char *ows[] = {"", "", " ", " ", "\t", "  ", " \t"};
#define OWS() ows[rnd(rs) % (sizeof ows / sizeof ows[0])]
    f[nf] = (fpart){.pre = OWS(), .post = OWS()};
    snprintf(f[nf].name, sizeof f[nf].name, "%s", PICK(rs, "Host", "host", "HOST", "hOsT"));
    snprintf(f[nf].value, sizeof f[nf].value, "h%u", r->conn);
    nf++;
    if (r->t == 1) {
        f[nf] = (fpart){.pre = OWS(), .post = OWS()};
        snprintf(f[nf].name, sizeof f[nf].name, "%s", PICK(rs, "Content-Length", "content-length"));
        snprintf(f[nf].value, sizeof f[nf].value, "%u", r->blen);
        nf++;
    } else if (r->t == 2) {
        /* no OWS after: the parser refuses "chunked " (a TE.TE disagreement) */
        f[nf] = (fpart){.pre = OWS(), .post = ""};
        snprintf(f[nf].name, sizeof f[nf].name, "%s",
                 PICK(rs, "Transfer-Encoding", "transfer-encoding"));
        snprintf(f[nf].value, sizeof f[nf].value, "%s", PICK(rs, "chunked", "Chunked"));
        nf++;
    }
    if (r->k) {
        f[nf] = (fpart){.pre = OWS(), .post = OWS()};
        snprintf(f[nf].name, sizeof f[nf].name, "%s", PICK(rs, "Connection", "connection"));
        snprintf(f[nf].value, sizeof f[nf].value, "%s",
                 r->k == 1 ? PICK(rs, "close", "Close") : PICK(rs, "keep-alive", "Keep-Alive"));
        nf++;
    }
    unsigned first_x = nf;
    for (unsigned i = 0; i < r->nx; i++) {
        f[nf] = (fpart){.pre = OWS(), .post = OWS()};
        snprintf(f[nf].name, sizeof f[nf].name, rnd(rs) % 2 ? "X-F%u" : "x-f%u", i);
        snprintf(f[nf].value, sizeof f[nf].value, "v%u.%u.%u", r->conn, r->seq, i);
        nf++;
    }
    if (nf == H_MAX_FIELDS && count)
        atomic_fetch_add(&X.edge_fields, 1);
    size_t head = o->len - start + 2;
    for (unsigned i = 0; i < nf; i++)
        head += fpart_len(&f[i]);
    if (head > H_MAX_HEAD)
        fail("build_request: a head of %zu bytes planned", head);
    if (r->nx > 0) {
        /* pad X-F0 to exactly max_head, or a little */
        if (rnd(rs) % 8 == 0) {
            f[first_x].pad = (uint32_t)(H_MAX_HEAD - head);
            if (count)
                atomic_fetch_add(&X.edge_head, 1);
        } else if (rnd(rs) % 4 == 0) {
            uint32_t room = (uint32_t)(H_MAX_HEAD - head);
            f[first_x].pad = room ? (uint32_t)(rnd(rs) % (room < 300 ? room : 300)) : 0;
        }
    }
    /* the fields in a random order */
    for (unsigned i = nf; i > 1; i--) {
        unsigned j = (unsigned)(rnd(rs) % i);
        fpart tmp = f[i - 1];
        f[i - 1] = f[j];
        f[j] = tmp;
    }
    for (unsigned i = 0; i < nf; i++) {
        db_printf(o, "%s:%s%s", f[i].name, f[i].pre, f[i].value);
        db_fill(o, 'z', f[i].pad);
        db_printf(o, "%s\r\n", f[i].post);
    }
    db_str(o, "\r\n");
#undef OWS
    rbuilt b = {.head_len = o->len - start};
    if (r->t == 1) {
        db_reserve(o, r->blen);
        for (uint32_t j = 0; j < r->blen; j++)
            o->p[o->len++] = (char)body_byte(r->conn, r->seq, j);
    } else if (r->t == 2) {
        /* random chunk sizes, hex in either case, leading zeros, extensions
         * and a trailer now and then */
        uint32_t j = 0;
        while (j < r->blen) {
            uint32_t left = r->blen - j;
            uint32_t n = rnd(rs) % 3 == 0 ? left : rnd_in(rs, 1, left < 1500 ? left : 1500);
            db_printf(o, rnd(rs) % 2 ? "%s%x" : "%s%X", rnd(rs) % 6 == 0 ? "00" : "", n);
            if (rnd(rs) % 5 == 0)
                db_str(o, PICK(rs, ";a=b", ";ext", ";q=\"x y\"", ";n=1;m"));
            db_str(o, "\r\n");
            db_reserve(o, n);
            for (uint32_t e = j + n; j < e; j++)
                o->p[o->len++] = (char)body_byte(r->conn, r->seq, j);
            db_str(o, "\r\n");
        }
        db_str(o, "0");
        if (rnd(rs) % 5 == 0)
            db_str(o, ";last");
        db_str(o, "\r\n");
        if (rnd(rs) % 4 == 0)
            db_str(o, "X-Trailer: done\r\n");
        db_str(o, "\r\n");
        if (count)
            atomic_fetch_add(&X.chunked, 1);
    }
    if (r->blen == H_MAX_BODY && r->t && count)
        atomic_fetch_add(&X.edge_body, 1);
    b.total_len = o->len - start;
    return b;
}

/* A random well-formed request; `last_close`: the connection's last one,
 * which asks for the close (Connection: close, or HTTP/1.0 without
 * keep-alive). */
static rspec make_spec(uint32_t conn, uint32_t seq, int last_close, uint64_t *rs)
{
    rspec r = {.conn = conn, .seq = seq};
    r.minor = rnd(rs) % 10 == 0 ? 0 : 1;
    if (last_close)
        r.k = r.minor == 0 ? (unsigned)(rnd(rs) % 2) : 1;
    else
        r.k = r.minor == 0 ? 2 : rnd(rs) % 10 < 7 ? 0 : 2;
    unsigned t = (unsigned)(rnd(rs) % 20);
    r.t = t < 10 ? 0 : t < 17 ? 1 : 2;
    if (r.t == 2 && r.minor == 0)
        r.t = 1;        /* chunked in HTTP/1.0 is a 400 */
    if (r.t) {
        unsigned b = (unsigned)(rnd(rs) % 20);
        r.blen = b == 0 ? H_MAX_BODY : b < 7 ? rnd_in(rs, 0, 64) : b < 15 ? rnd_in(rs, 65, 1024)
                                                                          : rnd_in(rs, 1025, H_MAX_BODY);
    }
    unsigned fixed = 1 + (r.t ? 1 : 0) + (r.k ? 1 : 0);
    r.nx = rnd(rs) % 6 == 0 ? H_MAX_FIELDS - fixed : (unsigned)(rnd(rs) % (H_MAX_FIELDS - fixed + 1));
    r.lead = rnd(rs) % 12 == 0 ? 1 + (unsigned)(rnd(rs) % 2) : 0;
    return r;
}

/* ------------------------------------------------------------------ */
/* the workers */

typedef struct {
    fa_acceptor *a;
    unsigned idx;
    unsigned stream;            /* of the requests' streams */
    uint64_t rs;
    dbuf in;                    /* the connection's bytes past the head */
    dbuf out;
    uint64_t popped, served, keeps, keep_refused, closes, eofs, resets, tolerant_ends;
    uint64_t leftover_keeps, leftover_bytes, over_reads, extra_reads, empty_data;
} worker_t;

/* A parsed field's value equals s, ignoring ASCII case. */
static int value_is(const char *b, const fa_http_field *f, const char *s)
{
    return f->value_len == strlen(s) && strncasecmp(b + f->value_off, s, f->value_len) == 0;
}

static int name_is(const char *b, const fa_http_field *f, const char *s)
{
    return f->name_len == strlen(s) && strncasecmp(b + f->name_off, s, f->name_len) == 0;
}

/* The i of a field named X-F<i> (any case, i without leading zeros), else
 * UINT_MAX. By hand: the block has no NUL to stop sscanf. */
static unsigned xf_index(const char *b, const fa_http_field *f)
{
    const char *n = b + f->name_off;
    if (f->name_len < 4 || f->name_len > 8 || strncasecmp(n, "x-f", 3) != 0 ||
        (n[3] == '0' && f->name_len > 4))
        return UINT_MAX;
    unsigned v = 0;
    for (uint32_t i = 3; i < f->name_len; i++) {
        if (n[i] < '0' || n[i] > '9')
            return UINT_MAX;
        v = v * 10 + (unsigned)(n[i] - '0');
    }
    return v;
}

/* Checks the loop's fa_http_req against its own bytes and against what the
 * target says the head holds; returns the request's shape. */
static rspec check_request(worker_t *w, const fa_conn *c, fa_http_req *r)
{
    const fa_http_head *h = &r->head;
    const char *b = fa_http_req_buf(r);
    if (c->data_len != r->len)
        fail("worker %u: fd %d: data_len %u but the block holds %u bytes", w->idx, c->fd,
             c->data_len, r->len);
    if (h->head_len < 18 || h->head_len > r->len || h->head_len > H_MAX_HEAD ||
        memcmp(b + h->head_len - 4, "\r\n\r\n", 4) != 0)
        fail("worker %u: fd %d: head_len %u of a %u-byte block does not end a head", w->idx,
             c->fd, h->head_len, r->len);
    if (h->nfields > H_MAX_FIELDS)
        fail("worker %u: %u fields, above max_fields", w->idx, h->nfields);
    if (h->method_off + h->method_len >= h->head_len || h->target_len == 0 ||
        h->target_off != h->method_off + h->method_len + 1 || b[h->target_off - 1] != ' ' ||
        h->target_off + h->target_len + 11 + 2 > h->head_len || h->target_len > H_MAX_REQUEST_LINE ||
        h->path_len > h->target_len)
        fail("worker %u: fd %d: method/target offsets %u+%u %u+%u outside the head (%u)", w->idx,
             c->fd, h->method_off, h->method_len, h->target_off, h->target_len, h->head_len);
    char target[H_MAX_REQUEST_LINE + 1];
    memcpy(target, b + h->target_off, h->target_len);
    target[h->target_len] = '\0';
    rspec s;
    int end = 0;
    if (sscanf(target, "/c%u/r%u/x%u/t%u/b%u/l%u/v%u/k%u%n", &s.conn, &s.seq, &s.nx, &s.t,
               &s.blen, &s.lead, &s.minor, &s.k, &end) != 8 || (target[end] != '\0' &&
                                                               target[end] != '?'))
        fail("worker %u: fd %d: target \"%s\" is none a client sent", w->idx, c->fd, target);
    if (s.conn >= g_nconns || s.t > 2 || s.k > 2 || s.minor > 1 || s.lead > 2 ||
        s.blen > H_MAX_BODY || s.nx > H_MAX_FIELDS)
        fail("worker %u: target \"%s\" out of range", w->idx, target);
    const char *q = strchr(target, '?');
    uint32_t path_len = q ? (uint32_t)(q - target) : h->target_len;
    const char *method = s.t ? "POST" : "GET";
    char version[12];
    snprintf(version, sizeof version, "HTTP/1.%u\r\n", s.minor);
    unsigned want_fields = 1 + s.nx + (s.t ? 1 : 0) + (s.k ? 1 : 0);
    /* The empty lines sent before the request line are in the block, or
     * some are not: a loop may drop those that came on their own (RFC 9112
     * section 2.2 lets it ignore them), never more than were sent. */
    if (h->method_off > 2 * s.lead || h->method_off % 2 != 0 ||
        h->method_len != strlen(method) ||
        memcmp(b + h->method_off, method, h->method_len) != 0 ||
        memcmp(b + h->target_off + h->target_len, " ", 1) != 0 ||
        memcmp(b + h->target_off + h->target_len + 1, version, 10) != 0 ||
        h->path_len != path_len || h->version_minor != s.minor ||
        h->keep_alive != spec_keep_alive(&s) || h->chunked != (s.t == 2) ||
        h->content_length != (s.t == 1 ? (int64_t)s.blen : -1) || h->expect_continue ||
        h->upgrade || h->nfields != want_fields)
        fail("worker %u: fd %d: \"%s\" parsed as method %u+%u path_len %u minor %u keep %u "
             "chunked %u length %lld fields %u", w->idx, c->fd, target, h->method_off,
             h->method_len, h->path_len, h->version_minor, h->keep_alive, h->chunked,
             (long long)h->content_length, h->nfields);
    for (unsigned i = 0; i < h->method_off / 2; i++)
        if (memcmp(b + 2 * i, "\r\n", 2) != 0)
            fail("worker %u: leading empty lines of \"%s\" not where they were sent", w->idx,
                 target);
    /* every field on its own line, in order, and as sent */
    uint32_t seen_x = 0, hosts = 0, lengths = 0, codings = 0, conns = 0;
    uint32_t prev_end = h->target_off + h->target_len + 11;
    for (uint32_t i = 0; i < h->nfields; i++) {
        const fa_http_field *f = &r->fields[i];
        if (f->name_off != prev_end || f->name_len == 0 || b[f->name_off + f->name_len] != ':' ||
            f->value_off < f->name_off + f->name_len + 1 ||
            f->value_off + f->value_len + 2 > h->head_len)
            fail("worker %u: \"%s\" field %u at %u+%u, value %u+%u: not a line of the head",
                 w->idx, target, i, f->name_off, f->name_len, f->value_off, f->value_len);
        if (f->value_len > 0 && (b[f->value_off] == ' ' || b[f->value_off] == '\t' ||
                                 b[f->value_off + f->value_len - 1] == ' ' ||
                                 b[f->value_off + f->value_len - 1] == '\t'))
            fail("worker %u: \"%s\" field %u: the value keeps its OWS", w->idx, target, i);
        const char *eol = memchr(b + f->value_off + f->value_len, '\r',
                                 h->head_len - (f->value_off + f->value_len));
        if (eol == NULL || eol[1] != '\n')
            fail("worker %u: \"%s\" field %u not ended by CRLF", w->idx, target, i);
        for (const char *p = b + f->value_off + f->value_len; p < eol; p++)
            if (*p != ' ' && *p != '\t')
                fail("worker %u: \"%s\" field %u: value cut short", w->idx, target, i);
        prev_end = (uint32_t)(eol + 2 - b);
        char want[64];
        unsigned xi;
        if (name_is(b, f, "host")) {
            snprintf(want, sizeof want, "h%u", s.conn);
            if (!value_is(b, f, want))
                fail("worker %u: \"%s\": Host is not %s", w->idx, target, want);
            hosts++;
        } else if (name_is(b, f, "content-length")) {
            snprintf(want, sizeof want, "%u", s.blen);
            if (!value_is(b, f, want))
                fail("worker %u: \"%s\": Content-Length is not %s", w->idx, target, want);
            lengths++;
        } else if (name_is(b, f, "transfer-encoding")) {
            if (!value_is(b, f, "chunked"))
                fail("worker %u: \"%s\": Transfer-Encoding is not chunked", w->idx, target);
            codings++;
        } else if (name_is(b, f, "connection")) {
            if (!value_is(b, f, s.k == 1 ? "close" : "keep-alive"))
                fail("worker %u: \"%s\": Connection field wrong", w->idx, target);
            conns++;
        } else if ((xi = xf_index(b, f)) < s.nx && !(seen_x & (1u << xi))) {
            int wl = snprintf(want, sizeof want, "v%u.%u.%u", s.conn, s.seq, xi);
            if (f->value_len < (uint32_t)wl || memcmp(b + f->value_off, want, (size_t)wl) != 0)
                fail("worker %u: \"%s\": X-F%u is not %s...", w->idx, target, xi, want);
            for (uint32_t j = (uint32_t)wl; j < f->value_len; j++)
                if (b[f->value_off + j] != 'z')
                    fail("worker %u: \"%s\": X-F%u padding damaged", w->idx, target, xi);
            seen_x |= 1u << xi;
        } else {
            fail("worker %u: \"%s\": field %u (%.*s) is none the client sent", w->idx, target,
                 i, (int)f->name_len, b + f->name_off);
        }
    }
    if (prev_end + 2 != h->head_len || hosts != 1 || lengths != (s.t == 1) ||
        codings != (s.t == 2) || conns != (s.k != 0) || seen_x != (s.nx ? (1u << s.nx) - 1 : 0))
        fail("worker %u: \"%s\": fields do not add up to the head", w->idx, target);
    return s;
}

/* Waits for input on fd; 0, or -1 (the peer left: only while g_ending). */
static void wait_readable(worker_t *w, int fd, const char *what)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    while ((rc = poll(&p, 1, (int)opt.timeout_s * 1000)) < 0 && errno == EINTR)
        ;
    if (rc == 0)
        fail("worker %u: fd %d: no %s for %u s", w->idx, fd, what, opt.timeout_s);
    if (rc < 0)
        fail("worker %u: poll: %s", w->idx, strerror(errno));
}

/* Reads up to ask more bytes (at least one) into w->in. Returns the count,
 * or 0 when the peer closed or reset (an error unless tolerated). */
static size_t read_more(worker_t *w, int fd, size_t ask, const char *what)
{
    wait_readable(w, fd, what);
    db_reserve(&w->in, ask);
    ssize_t n;
    while ((n = recv(fd, w->in.p + w->in.len, ask, 0)) < 0 && errno == EINTR)
        ;
    if (n <= 0) {
        if (atomic_load(&g_ending))
            return 0;
        fail("worker %u: fd %d: %s: recv returned %zd (%s)", w->idx, fd, what, n,
             n < 0 ? strerror(errno) : "EOF");
    }
    w->in.len += (size_t)n;
    return (size_t)n;
}

/* How much to ask for when `need` bytes of the body are missing: exactly
 * that, less, or more (then the next request's bytes come along). */
static size_t ask_size(worker_t *w, size_t need)
{
    switch (rnd(&w->rs) % 3) {
    case 0:
        return need;
    case 1:
        return rnd_in(&w->rs, 1, (uint32_t)need);
    default:
        w->over_reads++;
        return need + rnd_in(&w->rs, 1, 2048);
    }
}

/* Reads the body of s: from w->in (what the block held past the head), then
 * the socket. Returns where the bytes past the body start in w->in, or -1
 * when the peer left (tolerated only during an abort). */
static long read_body(worker_t *w, int fd, const rspec *s, char *body)
{
    if (s->t == 0)
        return 0;
    if (s->t == 1) {
        while (w->in.len < s->blen)
            if (read_more(w, fd, ask_size(w, s->blen - w->in.len), "body") == 0)
                return -1;
        if (s->blen > 0)
            memcpy(body, w->in.p, s->blen);     /* w->in.p may be NULL for 0 */
        return (long)s->blen;
    }
    fa_http_chunked ch;
    fa_http_chunked_init(&ch, H_MAX_BODY);
    size_t pos = 0, got = 0;
    for (;;) {
        size_t used, produced;
        int rc = fa_http_chunked_feed(&ch, w->in.p + pos, w->in.len - pos, body + got, &used,
                                      &produced);
        pos += used;
        got += produced;
        if (rc == 1)
            break;
        if (rc < 0)
            fail("worker %u: chunked body of /c%u/r%u: decoder says %d", w->idx, s->conn,
                 s->seq, rc);
        if (read_more(w, fd, rnd(&w->rs) % 2 ? rnd_in(&w->rs, 1, 64) : rnd_in(&w->rs, 1, 2048),
                      "chunked body") == 0)
            return -1;
    }
    if (got != s->blen)
        fail("worker %u: chunked body of /c%u/r%u: %zu bytes, sent %u", w->idx, s->conn, s->seq,
             got, s->blen);
    return (long)pos;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Ends a connection from the worker: it is no longer ours, then closed. */
static void worker_finish(worker_t *w, int fd)
{
    atomic_store(&g_busy[fd], 0);
    fa_acceptor_finish(w->a, fd);
}

/* Serves one popped connection: checks, body, answer, then keep or close. */
static void serve(worker_t *w, fa_conn *c)
{
    int fd = c->fd;
    if (fd < 0 || fd >= H_MAX_FD)
        fail("worker %u: fd %d out of range", w->idx, fd);
    if (atomic_exchange(&g_busy[fd], 1))
        fail("worker %u: fd %d handed to two workers at once", w->idx, fd);
    if (c->ready_ns < c->accepted_ns || c->ready_ns > fa_now_ns())
        fail("worker %u: entry times out of order", w->idx);
    fa_http_req *r = c->data;
    if (r == NULL)
        fail("worker %u: fd %d popped without a request block", w->idx, fd);
    rspec s = check_request(w, c, r);
    /* Every choice about this request (read sizes, delays, close or keep)
     * depends on the seed and the request alone, not on which worker got
     * it when. */
    w->rs = seed_for(w->stream + s.conn * 4096u + s.seq);
    conn_rec *cr = &g_conns[s.conn];
    uint32_t want = atomic_load(&cr->next_seq);
    if (s.seq != want)
        fail("worker %u: connection %u sent request %u, expected %u (lost, served twice or "
             "reordered)", w->idx, s.conn, s.seq, want);
    if (c->kind != (s.seq == 0 ? FA_CONN_NEW : FA_CONN_RESUMED))
        fail("worker %u: connection %u request %u came as kind %u", w->idx, s.conn, s.seq,
             c->kind);
    int32_t srv = atomic_load(&cr->srv_fd);
    if (s.seq == 0 ? srv != -1 : srv != fd)
        fail("worker %u: connection %u request %u on fd %d, its first on fd %d", w->idx,
             s.conn, s.seq, fd, srv);
    atomic_store(&cr->srv_fd, fd);
    if (s.seq == 0) {
        /* pipelined answers must not wait for the client's delayed ACK */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    /* the socket is that client's: the peer's port, in the entry and live */
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    const struct sockaddr_in *ea = (const struct sockaddr_in *)&c->addr;
    uint32_t port = atomic_load(&cr->port);
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0) {
        if (!atomic_load(&g_ending))
            fail("worker %u: getpeername(fd %d): %s", w->idx, fd, strerror(errno));
    } else if (peer.sin_port != port || ea->sin_port != port || c->addrlen != sizeof peer) {
        fail("worker %u: connection %u request %u on a socket from port %u (entry %u), the "
             "client's is %u", w->idx, s.conn, s.seq, ntohs(peer.sin_port), ntohs(ea->sin_port),
             ntohs((uint16_t)port));
    }
    /* the body: first what the loop read past the head, then the socket */
    w->in.len = 0;
    db_put(&w->in, fa_http_req_buf(r) + r->head.head_len, r->len - r->head.head_len);
    int keep_alive = r->head.keep_alive;
    free(r);
    c->data = NULL;
    char body[H_MAX_BODY];
    long past = read_body(w, fd, &s, body);
    if (past < 0) {
        w->tolerant_ends++;
        worker_finish(w, fd);
        return;
    }
    for (uint32_t j = 0; j < s.blen; j++)
        if ((uint8_t)body[j] != body_byte(s.conn, s.seq, j))
            fail("worker %u: /c%u/r%u: body byte %u damaged", w->idx, s.conn, s.seq, j);
    atomic_store(&cr->next_seq, want + 1);
    uint64_t x = rnd(&w->rs);
    if (x % 8 == 0)
        sched_yield();              /* move the KEEP race around */
    else if (x % 16 == 1)
        sleep_ns(rnd_in(&w->rs, 50, 300) * 1000u);    /* the ring fills meanwhile */
    int close = !keep_alive ||
                (atomic_load(&g_worker_may_close) && !atomic_load(&g_ending) &&
                 rnd(&w->rs) % 32 == 0);
    w->out.len = 0;
    build_response(&w->out, &s, body_hash(s.conn, s.seq, s.blen), close);
    if (send_all(fd, w->out.p, w->out.len) < 0) {
        if (!atomic_load(&g_ending))
            fail("worker %u: /c%u/r%u: send: %s", w->idx, s.conn, s.seq, strerror(errno));
        w->tolerant_ends++;
        worker_finish(w, fd);
        return;
    }
    w->served++;
    if (close) {
        /* The client stops at "Connection: close": a FIN, then whatever it
         * had pipelined is read and dropped until its own FIN, so the close
         * is no reset that could take the answer with it. */
        shutdown(fd, SHUT_WR);
        char sink[4096];
        for (;;) {
            wait_readable(w, fd, "EOF after Connection: close");
            ssize_t n = recv(fd, sink, sizeof sink, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
        }
        w->closes++;
        worker_finish(w, fd);
        return;
    }
    /* Bytes past this request: its successor's, whole or in part. Now and
     * then read a little more without waiting, as a server that reads
     * ahead does, so that what goes back is often a head cut anywhere. */
    size_t have = w->in.len - (size_t)past;
    if (!atomic_load(&g_ending) && rnd(&w->rs) % 2 == 0) {
        static const uint32_t sizes[] = {1, 2, 7, 64, 300, 4096};
        size_t ask = sizes[rnd(&w->rs) % (sizeof sizes / sizeof sizes[0])];
        db_reserve(&w->in, ask);
        ssize_t n = recv(fd, w->in.p + w->in.len, ask, MSG_DONTWAIT);
        if (n > 0) {
            w->in.len += (size_t)n;
            have += (size_t)n;
            w->extra_reads++;
        } else if (n == 0 && have == 0) {
            w->eofs++;              /* the client left after its answer */
            worker_finish(w, fd);
            return;
        } else if (n < 0 && errno == ECONNRESET) {
            w->resets++;            /* reset mid-head, under our feet */
            worker_finish(w, fd);
            return;
        }
        /* EOF with bytes in hand: they go back, and the loop sees the EOF */
    }
    void *data = NULL;
    if (have > 0) {
        data = malloc(have);
        if (data == NULL)
            fail("malloc");
        memcpy(data, w->in.p + past, have);
        w->leftover_keeps++;
        w->leftover_bytes += have;
    } else if (rnd(&w->rs) % 4 == 0) {
        data = malloc(1);           /* a block with no bytes: the loop frees it */
        w->empty_data++;
    }
    /* release before giving it back: once kept, the loop may hand it on */
    atomic_store(&g_busy[fd], 0);
    if (fa_acceptor_keep(w->a, fd, data, (uint32_t)have))
        w->keeps++;
    else
        w->keep_refused++;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (;;) {
        fa_conn c;
        int rc = fa_pop_wait(&w->a->ring, &w->a->lot, &c, -1);
        if (rc == -EINTR)
            continue;
        if (rc == -ESHUTDOWN)
            break;
        if (rc != 0)
            fail("worker %u: fa_pop_wait returned %d", w->idx, rc);
        w->popped++;
        if (atomic_load(&g_gate)) {
            /* scenario s: hold it, so the ring stays full behind us */
            atomic_fetch_add(&g_at_gate, 1);
            while (atomic_load(&g_gate)) {
                sleep_ns(1000000);
                progress();
            }
        }
        serve(w, &c);
        progress();
    }
    db_free(&w->in);
    db_free(&w->out);
    return NULL;
}

typedef struct {
    worker_t *w;
    pthread_t *t;
    unsigned n;
    uint64_t popped, served, keeps, keep_refused, closes, eofs, resets, tolerant_ends;
    uint64_t leftover_keeps, leftover_bytes, over_reads, extra_reads, empty_data;
} workers_t;

static void workers_start(workers_t *ws, fa_acceptor *a, unsigned n, unsigned stream)
{
    memset(ws, 0, sizeof *ws);
    ws->n = n;
    ws->w = calloc(n, sizeof *ws->w);
    ws->t = calloc(n, sizeof *ws->t);
    if (ws->w == NULL || ws->t == NULL)
        fail("calloc");
    for (unsigned i = 0; i < n; i++) {
        ws->w[i].a = a;
        ws->w[i].idx = i;
        ws->w[i].stream = stream;
        ws->w[i].rs = seed_for(stream);
        start_thread(&ws->t[i], worker_main, &ws->w[i]);
    }
}

static void workers_join(workers_t *ws)
{
    for (unsigned i = 0; i < ws->n; i++) {
        join_bounded(ws->t[i], "worker", i);
        worker_t *w = &ws->w[i];
        ws->popped += w->popped;
        ws->served += w->served;
        ws->keeps += w->keeps;
        ws->keep_refused += w->keep_refused;
        ws->closes += w->closes;
        ws->eofs += w->eofs;
        ws->resets += w->resets;
        ws->tolerant_ends += w->tolerant_ends;
        ws->leftover_keeps += w->leftover_keeps;
        ws->leftover_bytes += w->leftover_bytes;
        ws->over_reads += w->over_reads;
        ws->extra_reads += w->extra_reads;
        ws->empty_data += w->empty_data;
    }
    free(ws->w);
    free(ws->t);
    ws->w = NULL;
    ws->t = NULL;
}

/* Connections a worker ended: closed by it, or refused on the way back. */
static uint64_t worker_ends(const workers_t *ws)
{
    return ws->closes + ws->eofs + ws->resets + ws->tolerant_ends + ws->keep_refused;
}

/* ------------------------------------------------------------------ */
/* the acceptor */

typedef struct {
    fa_acceptor *a;
    int rc;
    _Atomic int done;
} runner_t;

static void *runner_main(void *arg)
{
    runner_t *r = arg;
    r->rc = fa_acceptor_run(r->a);
    atomic_store(&r->done, 1);
    return NULL;
}

/* Samples the gauges while the traffic runs: a double count out (or in)
 * shows as an open count below zero or above what was accepted, or a
 * waiting count that wrapped, even if it evens out by the end. The loads
 * are relaxed and not taken together, hence the slack of one: accept4's
 * connection is counted open just before it is counted accepted. */
typedef struct {
    fa_acceptor *a;
    _Atomic int stop;
    uint64_t samples;
    int64_t max_open;
    uint64_t max_waiting;
} monitor_t;

static void *monitor_main(void *arg)
{
    monitor_t *m = arg;
    while (!atomic_load(&m->stop)) {
        int64_t open = fa_stat_open(m->a);
        uint64_t waiting = fa_stat_waiting(m->a);
        uint64_t accepted = fa_stat_accepted(m->a);
        if (open < 0 || (uint64_t)open > accepted + 1 || waiting > (1u << 24))
            fail("gauges: open %lld, waiting %llu, accepted %llu", (long long)open,
                 (unsigned long long)waiting, (unsigned long long)accepted);
        m->samples++;
        if (open > m->max_open)
            m->max_open = open;
        if (waiting > m->max_waiting)
            m->max_waiting = waiting;
        sleep_ns(500000);
    }
    return NULL;
}

static void acceptor_setup(fa_acceptor *a, int lfd, unsigned capacity, uint64_t idle_ns,
                           uint64_t head_ns)
{
    int rc = fa_acceptor_init(a, lfd, capacity, 8);
    if (rc < 0)
        fail("fa_acceptor_init: %d", rc);
    /* set_conns first, then set_http: the order the Python layer uses */
    if ((rc = fa_acceptor_set_conns(a, FA_DISPATCH_READABLE, idle_ns, 4096)) < 0)
        fail("fa_acceptor_set_conns: %d", rc);
    fa_http_limits bad1 = {15, H_MAX_FIELDS, H_MAX_HEAD}, bad2 = {H_MAX_REQUEST_LINE, 0, H_MAX_HEAD},
                   bad3 = {H_MAX_REQUEST_LINE, H_MAX_FIELDS, 63};
    if (fa_acceptor_set_http(a, &bad1, head_ns, H_MAX_BODY) != -EINVAL ||
        fa_acceptor_set_http(a, &bad2, head_ns, H_MAX_BODY) != -EINVAL ||
        fa_acceptor_set_http(a, &bad3, head_ns, H_MAX_BODY) != -EINVAL)
        fail("fa_acceptor_set_http accepted a bad limit");
    fa_http_limits lim = {H_MAX_REQUEST_LINE, H_MAX_FIELDS, H_MAX_HEAD};
    /* twice: the second replaces (and frees) the first's buffers */
    if ((rc = fa_acceptor_set_http(a, &lim, head_ns, H_MAX_BODY)) < 0 ||
        (rc = fa_acceptor_set_http(a, &lim, head_ns, H_MAX_BODY)) < 0)
        fail("fa_acceptor_set_http: %d", rc);
}

static void check_no_errors(fa_acceptor *a)
{
    for (int e = 0; e < FA_ERRNO_SLOTS; e++)
        if (fa_stat_errors(a, e))
            fail("acceptor counted %llu errors with errno %d (%s)",
                 (unsigned long long)fa_stat_errors(a, e), e, strerror(e));
}

static uint64_t rejected_total(fa_acceptor *a)
{
    uint64_t n = 0;
    for (int i = 0; i < FA_HTTP_REJECT_SLOTS; i++)
        n += fa_stat_http_rejected(a, k_statuses[i]);
    return n;
}

/* Every accepted connection ends exactly once: in a worker (closed, or
 * refused on the way back) or closed by the loop, each way counted. */
static void check_conservation(fa_acceptor *a, const workers_t *ws)
{
    uint64_t ends = worker_ends(ws) + fa_stat_peer_closed(a) + fa_stat_idle_closed(a) +
                    fa_stat_stop_closed(a) + rejected_total(a) + fa_stat_shed(a);
    if (fa_stat_accepted(a) != ends)
        fail("accepted %llu connections but %llu ended: workers closed %llu, refused on the "
             "way back %llu; the loop closed peer %llu, idle %llu, stop %llu, rejected %llu "
             "(open now %lld, kept %llu)",
             (unsigned long long)fa_stat_accepted(a), (unsigned long long)ends,
             (unsigned long long)(worker_ends(ws) - ws->keep_refused),
             (unsigned long long)ws->keep_refused, (unsigned long long)fa_stat_peer_closed(a),
             (unsigned long long)fa_stat_idle_closed(a), (unsigned long long)fa_stat_stop_closed(a),
             (unsigned long long)rejected_total(a), (long long)fa_stat_open(a),
             (unsigned long long)fa_stat_kept(a));
    if (fa_stat_http_requests(a) != ws->popped)
        fail("the loop dispatched %llu requests, workers popped %llu",
             (unsigned long long)fa_stat_http_requests(a), (unsigned long long)ws->popped);
    if (fa_stat_open(a) != 0 || fa_stat_waiting(a) != 0)
        fail("open %lld, waiting %llu after the end", (long long)fa_stat_open(a),
             (unsigned long long)fa_stat_waiting(a));
}

/* ------------------------------------------------------------------ */
/* the clients */

enum ending { END_FIN, END_CLOSE, END_HALF, END_SILENT, END_BAD };

enum bad {
    BAD_414, BAD_431_FIELDS, BAD_431_SIZE, BAD_400_LF, BAD_400_CR, BAD_400_CTL, BAD_400_GRAMMAR,
    BAD_505, BAD_501, BAD_413_HEAD, BAD_413_BODY, BAD_408, BAD_RESET, BAD_FIN, BAD_KINDS
};

static const char *const bad_names[BAD_KINDS] = {
    "414", "431-fields", "431-size", "400-LF", "400-CR", "400-CTL", "400-grammar", "505", "501",
    "413-head", "413-body", "408", "reset-mid-head", "FIN-mid-head"};

/* Appends the bytes of bad head `kind` to o; the byte that makes it bad is
 * the last (so the loop never closes with input unread). Returns the status
 * the loop must answer, 0 for none. */
static int build_bad(dbuf *o, int kind, uint32_t conn, uint32_t seq, uint64_t *rs)
{
    size_t start = o->len;
    switch (kind) {
    case BAD_414:
        /* 257 bytes of request line: the 257th is too many */
        db_printf(o, "GET /c%u/r%u/", conn, seq);
        db_fill(o, 'u', H_MAX_REQUEST_LINE + 1 - (o->len - start));
        return 414;
    case BAD_431_FIELDS:
        /* the 17th field line's LF */
        db_printf(o, "GET /c%u/r%u HTTP/1.1\r\nHost: h%u\r\n", conn, seq, conn);
        for (unsigned i = 1; i <= H_MAX_FIELDS; i++)
            db_printf(o, "X-N%u: %u\r\n", i, i);
        return 431;
    case BAD_431_SIZE:
        /* max_head bytes and no end of the head */
        db_printf(o, "GET /c%u/r%u HTTP/1.1\r\nHost: h%u\r\nX-Pad: ", conn, seq, conn);
        db_fill(o, 'p', H_MAX_HEAD - (o->len - start));
        return 431;
    case BAD_400_LF:
        db_str(o, PICK(rs, "GET /lf HTTP/1.1\n", "GET /lf HTTP/1.1\r\nHost: h\n",
                       "GET /lf HTTP/1.1\r\nHost: h\r\nX-A: 1\n", "\n"));
        return 400;
    case BAD_400_CR:
        db_str(o, PICK(rs, "GET /cr HTTP/1.1\rX", "GET /cr HTTP/1.1\r\nHost: h\r\r",
                       "GET /cr HTTP/1.1\r\nHost: h\r\n\rX"));
        return 400;
    case BAD_400_CTL: {
        static const char ctl[] = {'\0', '\x01', '\x1b', '\x7f', '\x0b'};
        db_str(o, PICK(rs, "GET /ct", "GET /ctl HTTP/1.1\r\nHost: h\r\nX-A: a"));
        db_put(o, &ctl[rnd(rs) % sizeof ctl], 1);
        return 400;
    }
    case BAD_400_GRAMMAR:
        db_str(o, PICK(rs, "GET /g HTTP/1.1\r\n\r\n",
                       "GET /g HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                       "GET /g HTTP/1.1\r\nHost : a\r\n\r\n",
                       "GET /g HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
                       "POST /g HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                       "POST /g HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n",
                       "POST /g HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n",
                       "POST /g HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                       "POST /g HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                       "GET g HTTP/1.1\r\nHost: a\r\n\r\n", "GET /g#f HTTP/1.1\r\nHost: a\r\n\r\n",
                       "GET  /g HTTP/1.1\r\nHost: a\r\n\r\n", "GET /g HTTP/1.1 \r\nHost: a\r\n\r\n",
                       "GET /g HTTP/1.1\r\nHost: a b\r\n\r\n", "G(T /g HTTP/1.1\r\nHost: a\r\n\r\n",
                       "GET /g HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n"));
        return 400;
    case BAD_505:
        db_str(o, PICK(rs, "GET /v HTTP/2.0\r\nHost: a\r\n\r\n", "GET /v HTTP/1.2\r\nHost: a\r\n\r\n",
                       "GET /v HTTP/0.9\r\n\r\n"));
        return 505;
    case BAD_501:
        db_str(o, PICK(rs, "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                       "POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"));
        return 501;
    case BAD_413_HEAD:
    case BAD_413_BODY: {
        uint32_t n = rnd(rs) % 2 ? H_MAX_BODY + 1 : rnd_in(rs, H_MAX_BODY + 1, 3 * H_MAX_BODY);
        db_printf(o, "POST /c%u/r%u HTTP/1.1\r\nHost: h%u\r\nContent-Length: %u\r\n\r\n", conn,
                  seq, conn, kind == BAD_413_HEAD && rnd(rs) % 4 == 0 ? 999999999u : n);
        if (kind == BAD_413_BODY)
            db_fill(o, 'B', n);     /* sent in one write, discarded by the loop */
        return 413;
    }
    default:
        fail("build_bad(%d)", kind);
    }
}

/* A request sent and not answered yet. Offsets are in the connection's
 * byte stream; times are when its bytes went out (0: not yet): t_first
 * and t_last0 just before the send() that carried its first and its last
 * byte (the server may have them from then on), t_head and t_last when
 * the send() carrying the head's and the request's last byte returned
 * (the server has them by then). A deadline the loop starts on receiving
 * bytes starts after the earlier times; the later ones are when the client
 * was done. */
typedef struct {
    rspec sp;
    uint64_t start_off, head_off, end_off;
    uint64_t t_first, t_head, t_last0, t_last;
} pend_t;

enum cphase {
    P_RUN,          /* requests going out and answers coming back */
    P_EOF_WAIT,     /* nothing more may come but EOF */
    P_DONE,
};

/* What the EOF in P_EOF_WAIT means (for the counters). */
enum eof_kind { EOF_PLAIN, EOF_SILENT, EOF_HALF };

typedef struct {
    int fd;
    uint32_t cid;
    uint64_t rs;        /* the connection's own stream: its plan and bytes */
    uint64_t ws;        /* and its fragment sizes */
    uint32_t nreq, queued, answered;
    int ending, bad, bad_pipelined;
    int phase, eof_kind;
    uint64_t eof_lower, eof_planned;    /* EOF not before eof_lower; its deadline */
    int bad_queued, bad_sent, bad_status;
    uint64_t bad_start, bad_end, bad_t_first;
    int shut_wr, send_failed;
    dbuf out;
    size_t out_pos;
    uint64_t sent;                      /* stream offset of out.p[out_pos] */
    pend_t pend[PIPELINE_MAX];
    unsigned np;
    char in[8192];
    size_t in_len;
    uint64_t t_connect, t_prev_last0, t_progress;    /* t_last0 of the last answered */
} cconn;

typedef struct {
    unsigned idx;
    struct sockaddr_in addr;
    uint32_t first_id, nconns;
    unsigned stream;    /* of the connections' streams */
    uint64_t rs;        /* the thread's: interleaving, fragment sizes, pauses */
    cconn act[ACTIVE_MAX];
    unsigned nact;
    uint32_t opened;
} client_t;

static void cconn_describe(const cconn *k, char *buf, size_t cap)
{
    snprintf(buf, cap, "connection %u (plan: %u requests, end %d%s%s, queued %u, answered %u, "
             "pending %u, phase %d, %llu ms since connect)", k->cid, k->nreq, k->ending,
             k->ending == END_BAD ? " " : "", k->ending == END_BAD ? bad_names[k->bad] : "",
             k->queued, k->answered, k->np, k->phase,
             (unsigned long long)((fa_now_ns() - k->t_connect) / 1000000u));
}

#define CFAIL(k, fmt, ...)                                                              \
    do {                                                                                \
        char d_[256];                                                                   \
        cconn_describe((k), d_, sizeof d_);                                             \
        fail("client: %s: " fmt, d_, __VA_ARGS__);                                      \
    } while (0)

static void client_close(client_t *cl, cconn *k)
{
    (void)cl;
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    k->phase = P_DONE;
    atomic_store(&g_conns[k->cid].answered, k->answered);
    db_free(&k->out);
}

/* Sends a reset (SO_LINGER 0) instead of a FIN. */
static void client_reset(client_t *cl, cconn *k)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(k->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    client_close(cl, k);
}

static int client_open(client_t *cl, cconn *k)
{
    memset(k, 0, sizeof *k);
    k->cid = cl->first_id + cl->opened++;
    /* What a connection sends depends on the seed and its id alone, not on
     * how the threads happened to interleave. */
    k->rs = seed_for(cl->stream + k->cid);
    k->ws = seed_for(cl->stream + 50000 + k->cid);
    uint64_t *rs = &k->rs;
    unsigned e = (unsigned)(rnd(rs) % 100);
    k->ending = e < 30 ? END_FIN : e < 44 ? END_CLOSE : e < 51 ? END_HALF : e < 55 ? END_SILENT
                                                                                    : END_BAD;
    k->bad = (int)(rnd(rs) % BAD_KINDS);
    switch (k->ending) {
    case END_CLOSE:
    case END_HALF:
        k->nreq = rnd_in(rs, 1, opt.requests);
        break;
    case END_SILENT:
        k->nreq = (uint32_t)(rnd(rs) % 3);
        break;
    default:
        k->nreq = rnd(rs) % 5 == 0 ? 0 : rnd_in(rs, 1, opt.requests);
    }
    /* bad bytes right behind the last good request, so they reach the loop
     * through a worker's leftover; not for what must wait for the answers */
    k->bad_pipelined = k->ending == END_BAD && k->nreq > 0 && k->bad != BAD_RESET &&
                       k->bad != BAD_FIN && k->bad != BAD_413_BODY && rnd(rs) % 2;
    k->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (k->fd < 0)
        fail("client socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = opt.timeout_s};
    setsockopt(k->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    no_delay(k->fd);
    k->t_connect = fa_now_ns();
    int rc;
    while ((rc = connect(k->fd, (struct sockaddr *)&cl->addr, sizeof cl->addr)) < 0 &&
           errno == EINTR)
        ;
    if (rc < 0) {
        if (atomic_load(&g_ending)) {
            close(k->fd);
            k->fd = -1;
            k->phase = P_DONE;
            return -1;
        }
        fail("client connect: %s", strerror(errno));
    }
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    if (getsockname(k->fd, (struct sockaddr *)&me, &len) < 0)
        fail("getsockname: %s", strerror(errno));
    atomic_store(&g_conns[k->cid].port, me.sin_port);
    atomic_fetch_add(&X.opened, 1);
    k->t_progress = fa_now_ns();
    if (k->ending == END_SILENT) {
        k->eof_kind = EOF_SILENT;
        k->eof_lower = k->t_connect + H_HEAD_NS;    /* a new connection: the head deadline */
    }
    return 0;
}

/* Queues the bad bytes of the connection's plan. */
static void queue_bad(cconn *k)
{
    uint64_t off = k->sent + (k->out.len - k->out_pos);
    size_t before = k->out.len;
    if (k->bad == BAD_408 || k->bad == BAD_RESET || k->bad == BAD_FIN) {
        /* a strict prefix of a good head */
        dbuf tmp = {0};
        rspec sp = make_spec(k->cid, k->queued, 0, &k->rs);
        rbuilt b = build_request(&tmp, &sp, &k->rs, 0);
        /* a 408 needs a byte of the head proper: empty lines alone are no
         * head (RFC 9112 section 2.2), see scenario e */
        uint32_t from = k->bad == BAD_408 ? 2 * sp.lead + 1 : 1;
        size_t cut = k->bad == BAD_RESET ? rnd(&k->rs) % b.head_len
                                         : rnd_in(&k->rs, from, (uint32_t)b.head_len - 1);
        db_put(&k->out, tmp.p, cut);
        db_free(&tmp);
        k->bad_status = k->bad == BAD_408 ? 408 : 0;
    } else {
        k->bad_status = build_bad(&k->out, k->bad, k->cid, k->queued, &k->rs);
    }
    k->bad_queued = 1;
    k->bad_start = off;
    k->bad_end = off + (k->out.len - before);
    if (k->bad_end == k->bad_start)
        k->bad_sent = 1;            /* a reset with nothing sent */
}

/* Queues the connection's next good request. */
static void queue_request(cconn *k)
{
    int last = k->queued + 1 == k->nreq;
    rspec sp = make_spec(k->cid, k->queued, last && k->ending == END_CLOSE, &k->rs);
    uint64_t off = k->sent + (k->out.len - k->out_pos);
    rbuilt b = build_request(&k->out, &sp, &k->rs, 1);
    pend_t *p = &k->pend[k->np++];
    *p = (pend_t){.sp = sp, .start_off = off, .head_off = off + b.head_len,
                  .end_off = off + b.total_len};
    k->queued++;
    if (k->np > 1)
        atomic_fetch_add(&X.pipelined, 1);
    if (last && k->ending == END_BAD && k->bad_pipelined) {
        queue_bad(k);
        atomic_fetch_add(&X.bad_pipelined, 1);
    }
}

static void half_close(cconn *k);

/* Sends the next fragment of the connection's queued bytes: one byte, a
 * few, part of the rest, or all of it; a head started too long ago goes
 * out whole, so that interleaving never makes a good client late. */
static void client_send(cconn *k)
{
    size_t left = k->out.len - k->out_pos;
    if (left == 0 || k->send_failed)
        return;
    size_t n;
    uint64_t now = fa_now_ns();
    int hurry = 0;
    for (unsigned i = 0; i < k->np; i++)
        if (k->pend[i].t_first && !k->pend[i].t_head && now - k->pend[i].t_first > HEAD_HURRY_NS)
            hurry = 1;
    if (k->bad_queued && k->bad_t_first && !k->bad_sent && now - k->bad_t_first > HEAD_HURRY_NS)
        hurry = 1;
    switch (hurry ? 3 : rnd(&k->ws) % 4) {
    case 0:
        n = 1;
        break;
    case 1:
        n = rnd_in(&k->ws, 1, 32);
        break;
    case 2:
        n = rnd_in(&k->ws, 1, (uint32_t)(left / 2 + 1));
        break;
    default:
        n = left;
    }
    if (n > left)
        n = left;
    uint64_t t0 = fa_now_ns();
    ssize_t r = send(k->fd, k->out.p + k->out_pos, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    uint64_t t1 = fa_now_ns();
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        if (errno == EPIPE || errno == ECONNRESET) {
            k->send_failed = 1;     /* the server closed: the reads will tell why */
            return;
        }
        CFAIL(k, "send: %s", strerror(errno));
    }
    atomic_fetch_add(&X.fragments, 1);
    uint64_t z = k->sent + (uint64_t)r;
    for (unsigned i = 0; i < k->np; i++) {
        pend_t *p = &k->pend[i];
        if (!p->t_first && p->start_off < z)
            p->t_first = t0;
        if (!p->t_head && p->head_off <= z)
            p->t_head = t1;
        if (!p->t_last && p->end_off <= z) {
            p->t_last0 = t0;
            p->t_last = t1;
        }
    }
    if (k->bad_queued) {
        if (!k->bad_t_first && k->bad_start < z)
            k->bad_t_first = t0;
        if (k->bad_end <= z)
            k->bad_sent = 1;
    }
    k->out_pos += (size_t)r;
    k->sent = z;
    if (k->out_pos == k->out.len)
        k->out.len = k->out_pos = 0;
    k->t_progress = t1;
    half_close(k);
}

/* An end the plan did not call for (EOF, a reset, or a 408 for a good
 * request): the loop's fault unless this client was so slow that the
 * deadline passed on its side. Necessary conditions, from what the client
 * knows: a head deadline starts no earlier than the connect (first request)
 * or the first byte of the head, and an idle deadline no earlier than the
 * last byte of the request before. Returns 1 if tolerated. */
static int tolerate(cconn *k, int got_408)
{
    uint64_t now = fa_now_ns();
    if (atomic_load(&g_ending))
        return 1;
    if (got_408) {
        if (k->np == 0)
            return 0;
        pend_t *p = &k->pend[0];
        uint64_t start = p->sp.seq == 0 ? k->t_connect : p->t_first;
        uint64_t done = p->t_head ? p->t_head : now;
        return start != 0 && done + SLOW_MARGIN_NS >= start + H_HEAD_NS;
    }
    /* An EOF or a reset without an answer: closed idle, so nothing of what
     * comes next had arrived by the deadline. */
    uint64_t first = now;
    if (k->np > 0 && k->pend[0].t_first)
        first = k->pend[0].t_first;
    else if (k->np == 0 && k->bad_queued && k->bad_t_first)
        first = k->bad_t_first;
    if (k->answered == 0)
        return first + SLOW_MARGIN_NS >= k->t_connect + H_HEAD_NS;
    return first + SLOW_MARGIN_NS >= k->t_prev_last0 + H_IDLE_NS;
}

/* Parses one response at in[0, len): 0 needs more, else its length. */
static size_t parse_response(cconn *k, const char *in, size_t len, int *status, int *close)
{
    const char *end = memmem(in, len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len > 1024)
            CFAIL(k, "%zu bytes and no end of a response head", len);
        return 0;
    }
    size_t hl = (size_t)(end + 4 - in);
    /* the status by hand: in[] has no NUL for sscanf to stop at */
    if (len < 13 || memcmp(in, "HTTP/1.1 ", 9) != 0 || in[9] < '1' || in[9] > '5' ||
        in[10] < '0' || in[10] > '9' || in[11] < '0' || in[11] > '9' || in[12] != ' ')
        CFAIL(k, "not a response: \"%.*s\"", (int)(hl < 40 ? hl : 40), in);
    *status = (in[9] - '0') * 100 + (in[10] - '0') * 10 + (in[11] - '0');
    const char *cl = memmem(in, hl, "\r\nContent-Length: ", 18);
    if (cl == NULL)
        CFAIL(k, "response without Content-Length: \"%.*s\"", (int)hl, in);
    size_t blen = strtoul(cl + 18, NULL, 10);
    *close = memmem(in, hl, "\r\nConnection: close\r\n", 21) != NULL;
    if (len < hl + blen)
        return 0;
    return hl + blen;
}

/* END_HALF: the half close goes out right behind the last request's last
 * byte (before its answer can come back and end the plan). */
static void half_close(cconn *k)
{
    if (k->ending == END_HALF && !k->shut_wr && k->queued == k->nreq &&
        k->out.len == k->out_pos && !k->send_failed) {
        shutdown(k->fd, SHUT_WR);
        k->shut_wr = 1;
    }
}

/* Once every good request is answered, the endings that wait for the
 * server's EOF start waiting for it (at once: the EOF may be in the same
 * read as the last answer). */
static void await_end(cconn *k)
{
    if (k->phase != P_RUN || k->queued < k->nreq || k->np > 0)
        return;
    if (k->ending == END_HALF) {
        half_close(k);
        k->phase = P_EOF_WAIT;
        k->eof_kind = EOF_HALF;
    } else if (k->ending == END_SILENT) {
        k->phase = P_EOF_WAIT;
        k->eof_kind = EOF_SILENT;
        if (k->nreq > 0) {
            k->eof_lower = k->t_prev_last0 + H_IDLE_NS;    /* kept: the idle deadline */
            k->eof_planned = H_IDLE_NS;
        } else {
            k->eof_planned = H_HEAD_NS;                    /* new: the head deadline */
        }
    }
}

/* The answers in k->in, in order. */
static void client_answers(cconn *k)
{
    dbuf want = {0};
    for (;;) {
        int status = 0, close = 0;
        size_t n = parse_response(k, k->in, k->in_len, &status, &close);
        if (n == 0)
            break;
        uint64_t now = fa_now_ns();
        if (k->phase == P_EOF_WAIT)
            CFAIL(k, "a response (%d) after the last one", status);
        if (k->np > 0 && status == 200) {
            pend_t *p = &k->pend[0];
            int asked_close = !spec_keep_alive(&p->sp);
            if (asked_close && !close)
                CFAIL(k, "request %u asked for the close, the answer has no Connection: close",
                      p->sp.seq);
            want.len = 0;
            build_response(&want, &p->sp, body_hash(p->sp.conn, p->sp.seq, p->sp.blen), close);
            if (n != want.len || memcmp(k->in, want.p, n) != 0)
                CFAIL(k, "request %u: answer \"%.*s\", want \"%.*s\"", p->sp.seq, (int)n, k->in,
                      (int)want.len, want.p);
            if (!p->t_last)
                CFAIL(k, "request %u answered before all of it was sent", p->sp.seq);
            k->answered++;
            k->t_prev_last0 = p->t_last0;
            atomic_fetch_add(&X.good_answered, 1);
            memmove(&k->pend[0], &k->pend[1], (k->np - 1) * sizeof k->pend[0]);
            k->np--;
            await_end(k);
            if (close) {
                /* asked for, or the worker's choice: nothing more comes;
                 * what we pipelined behind it is dropped */
                atomic_fetch_add(&X.worker_close, 1);
                k->phase = P_EOF_WAIT;
                k->eof_kind = EOF_PLAIN;
                k->eof_lower = 0;
                k->out.len = k->out_pos = 0;
                k->np = 0;
            }
        } else if (k->np > 0 && status == 408 && tolerate(k, 1)) {
            atomic_fetch_add(&X.rej[status_slot(408)], 1);
            atomic_fetch_add(&X.tolerated, 1);
            k->phase = P_EOF_WAIT;
            k->eof_kind = EOF_PLAIN;
            k->eof_lower = 0;
            k->out.len = k->out_pos = 0;
            k->np = 0;
        } else if (k->np == 0 && k->bad_queued && k->bad_status && status == k->bad_status) {
            if (!k->bad_sent)
                CFAIL(k, "%d before the byte that makes the head bad was sent", status);
            if (!close)
                CFAIL(k, "%d without Connection: close", status);
            if (status == 408) {
                uint64_t start = k->answered == 0 && k->bad_start == 0 ? k->t_connect
                                                                       : k->bad_t_first;
                if (now < start + H_HEAD_NS)
                    CFAIL(k, "408 after %.1f ms, before the %llu ms head deadline",
                          (double)(now - start) / 1e6, H_HEAD_NS / 1000000u);
                if (now > start + H_HEAD_NS + LATE_MAX_NS)
                    CFAIL(k, "408 %.1f ms after the head deadline",
                          (double)(now - start - H_HEAD_NS) / 1e6);
                note_late(now - start - H_HEAD_NS);
            }
            atomic_fetch_add(&X.rej[status_slot(status)], 1);
            k->phase = P_EOF_WAIT;
            k->eof_kind = EOF_PLAIN;
            k->eof_lower = 0;
            k->bad_queued = 0;
        } else if (!atomic_load(&g_ending)) {
            CFAIL(k, "unexpected response \"%.*s\" (bad head %s queued %d, status %d wanted)",
                  (int)n, k->in, bad_names[k->bad], k->bad_queued, k->bad_status);
        } else {
            k->phase = P_EOF_WAIT;
        }
        memmove(k->in, k->in + n, k->in_len - n);
        k->in_len -= n;
        k->t_progress = now;
    }
    db_free(&want);
}

/* EOF or a reset on the connection. */
static void client_eof(client_t *cl, cconn *k, int reset)
{
    uint64_t now = fa_now_ns();
    if (atomic_load(&g_ending)) {
        client_close(cl, k);
        return;
    }
    if (k->phase == P_EOF_WAIT && !reset) {
        if (k->in_len != 0)
            CFAIL(k, "EOF in the middle of a response (%zu bytes)", k->in_len);
        if (k->eof_kind == EOF_SILENT) {
            if (now < k->eof_lower)
                CFAIL(k, "silent connection closed after %.1f ms, before its deadline",
                      (double)(now - (k->eof_lower - k->eof_planned)) / 1e6);
            if (now > k->eof_lower + LATE_MAX_NS)
                CFAIL(k, "silent connection closed %.1f ms after its deadline",
                      (double)(now - k->eof_lower) / 1e6);
            note_late(now - k->eof_lower);
            atomic_fetch_add(&X.idle, 1);
        } else if (k->eof_kind == EOF_HALF) {
            atomic_fetch_add(&X.peer, 1);
        }
        client_close(cl, k);
        return;
    }
    if (k->phase == P_RUN && k->in_len == 0 && tolerate(k, 0)) {
        atomic_fetch_add(&X.idle, 1);
        atomic_fetch_add(&X.tolerated, 1);
        client_close(cl, k);
        return;
    }
    CFAIL(k, "unexpected %s (%zu bytes of a response pending, bad head %s queued %d sent %d)",
          reset ? "reset" : "EOF", k->in_len, bad_names[k->bad], k->bad_queued, k->bad_sent);
}

static void client_read(client_t *cl, cconn *k)
{
    for (;;) {
        if (k->in_len == sizeof k->in)
            CFAIL(k, "%zu bytes of answers unparsed", k->in_len);
        ssize_t n = recv(k->fd, k->in + k->in_len, sizeof k->in - k->in_len, MSG_DONTWAIT);
        if (n > 0) {
            k->in_len += (size_t)n;
            client_answers(k);
            if (k->phase == P_DONE)
                return;
            continue;
        }
        if (n == 0) {
            client_eof(cl, k, 0);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET) {
            client_eof(cl, k, 1);
            return;
        }
        CFAIL(k, "recv: %s", strerror(errno));
    }
}

/* Moves the connection along its plan: more requests, the bad head, the end. */
static void client_advance(client_t *cl, cconn *k)
{
    if (k->phase != P_RUN)
        return;
    uint64_t *rs = &cl->rs;
    if (k->queued < k->nreq && k->np < PIPELINE_MAX && !k->send_failed &&
        (k->np == 0 || rnd(rs) % 3 == 0)) {
        unsigned n = rnd(rs) % 3 == 0 ? PIPELINE_MAX - k->np : 1;
        for (unsigned i = 0; i < n && k->queued < k->nreq; i++)
            queue_request(k);
    }
    half_close(k);
    if (k->queued < k->nreq || k->np > 0)
        return;
    /* every good request answered */
    switch (k->ending) {
    case END_FIN:
        atomic_fetch_add(&X.peer, 1);
        client_close(cl, k);
        return;
    case END_HALF:
    case END_SILENT:
        await_end(k);
        return;
    case END_CLOSE:
        CFAIL(k, "%s", "all answered, none with Connection: close");
    case END_BAD:
        if (!k->bad_queued)
            queue_bad(k);
        if (!k->bad_sent)
            return;
        if (k->bad == BAD_RESET) {
            atomic_fetch_add(&X.peer, 1);
            client_reset(cl, k);
        } else if (k->bad == BAD_FIN) {
            atomic_fetch_add(&X.peer, 1);
            client_close(cl, k);
        }
        return;     /* the answer comes, then EOF */
    }
}

/* One step of a client thread: open, advance, send a fragment, read. */
static void client_step(client_t *cl)
{
    uint64_t *rs = &cl->rs;
    if (cl->opened < cl->nconns && cl->nact < ACTIVE_MAX && (cl->nact < 2 || rnd(rs) % 4 == 0) &&
        !atomic_load(&g_ending)) {
        cconn *k = &cl->act[cl->nact];
        if (client_open(cl, k) == 0)
            cl->nact++;
    }
    for (unsigned i = 0; i < cl->nact; i++)
        client_advance(cl, &cl->act[i]);
    /* a fragment of one connection with bytes to send */
    unsigned with_out = 0;
    for (unsigned i = 0; i < cl->nact; i++)
        with_out += cl->act[i].phase == P_RUN && cl->act[i].out.len != cl->act[i].out_pos;
    if (with_out) {
        unsigned pickn = (unsigned)(rnd(rs) % with_out);
        for (unsigned i = 0; i < cl->nact; i++) {
            cconn *k = &cl->act[i];
            if (k->phase != P_RUN || k->out.len == k->out_pos || pickn--)
                continue;
            if (k->ending == END_BAD && k->bad == BAD_413_BODY && k->bad_queued &&
                k->out_pos == 0 && k->sent == k->bad_start) {
                /* a head over max_body with its body, in one write: all of it
                 * is in the server's socket before the loop rejects it */
                uint64_t t0 = fa_now_ns();
                if (send_all(k->fd, k->out.p, k->out.len) < 0 && !atomic_load(&g_ending))
                    CFAIL(k, "send: %s", strerror(errno));
                k->bad_t_first = t0;
                k->sent += k->out.len;
                k->out.len = k->out_pos = 0;
                k->bad_sent = 1;
                k->t_progress = fa_now_ns();
            } else {
                client_send(k);
            }
            break;
        }
        if (rnd(rs) % 64 == 0) {
            atomic_fetch_add(&X.pauses, 1);
            sleep_ns(rnd_in(rs, 20, 400) * 1000u);
        }
    }
    /* read what came */
    struct pollfd pf[ACTIVE_MAX];
    for (unsigned i = 0; i < cl->nact; i++)
        pf[i] = (struct pollfd){.fd = cl->act[i].fd, .events = POLLIN};
    int rc = poll(pf, cl->nact, with_out ? 0 : 1);
    if (rc < 0 && errno != EINTR)
        fail("client poll: %s", strerror(errno));
    for (unsigned i = 0; rc > 0 && i < cl->nact; i++) {
        cconn *k = &cl->act[i];
        if (pf[i].revents)
            client_read(cl, k);
    }
    uint64_t now = fa_now_ns();
    /* retire finished connections; none may wait for ever */
    for (unsigned i = 0; i < cl->nact;) {
        cconn *k = &cl->act[i];
        if (k->phase == P_DONE) {
            cl->act[i] = cl->act[--cl->nact];
            continue;
        }
        if (now - k->t_progress > (uint64_t)opt.timeout_s * 1000000000u)
            CFAIL(k, "no progress for %u s", opt.timeout_s);
        i++;
    }
    progress();
}

static void *client_main(void *arg)
{
    client_t *cl = arg;
    while (cl->opened < cl->nconns || cl->nact > 0) {
        if (atomic_load(&g_ending)) {
            /* the abort is coming or came: hang up on everything (a reset
             * where input is unread), so that workers reading a body see it */
            for (unsigned i = 0; i < cl->nact; i++)
                client_close(cl, &cl->act[i]);
            cl->nact = 0;
            break;
        }
        client_step(cl);
    }
    atomic_fetch_add(&g_clients_done, 1);
    return NULL;
}

typedef struct {
    client_t *c;
    pthread_t *t;
    unsigned n;
} clients_t;

static void clients_start(clients_t *cs, const struct sockaddr_in *addr, unsigned n,
                          uint32_t per_client, unsigned stream, unsigned conn_stream)
{
    cs->n = n;
    atomic_store(&g_clients_done, 0);
    cs->c = calloc(n, sizeof *cs->c);
    cs->t = calloc(n, sizeof *cs->t);
    if (cs->c == NULL || cs->t == NULL)
        fail("calloc");
    for (unsigned i = 0; i < n; i++) {
        cs->c[i].idx = i;
        cs->c[i].addr = *addr;
        cs->c[i].first_id = i * per_client;
        cs->c[i].nconns = per_client;
        cs->c[i].rs = seed_for(stream + i);
        cs->c[i].stream = conn_stream;
        start_thread(&cs->t[i], client_main, &cs->c[i]);
    }
}

static void clients_join(clients_t *cs)
{
    for (unsigned i = 0; i < cs->n; i++)
        join_bounded(cs->t[i], "client", i);
    free(cs->c);
    free(cs->t);
}

/* ------------------------------------------------------------------ */
/* m: the main run */

static unsigned ring_capacity(void)
{
    if (opt.capacity)
        return opt.capacity;
    uint64_t rs = seed_for(7);
    return rnd(&rs) % 2 ? 4 : 2;
}

static void wait_quiet(fa_acceptor *a)
{
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (fa_stat_open(a) != 0 || fa_stat_waiting(a) != 0) {
        if (fa_now_ns() > deadline)
            fail("%lld connections still open, %llu waiting, after every client finished",
                 (long long)fa_stat_open(a), (unsigned long long)fa_stat_waiting(a));
        sleep_ns(1000000);
        progress();
    }
}

/* What the clients, the loop and the workers counted, for a failure. */
static void m_summary(fa_acceptor *a, const workers_t *ws)
{
    fprintf(stderr, "m: clients: opened %llu answered %llu worker_close %llu peer %llu idle %llu "
            "tolerated %llu rej %llu/%llu/%llu/%llu/%llu/%llu/%llu\n"
            "m: loop: accepted %llu requests %llu peer %llu idle %llu stop %llu kept %llu "
            "rej %llu/%llu/%llu/%llu/%llu/%llu/%llu\n"
            "m: workers: popped %llu served %llu keeps %llu refused %llu closes %llu eofs %llu "
            "resets %llu\n",
            (unsigned long long)X.opened, (unsigned long long)X.good_answered,
            (unsigned long long)X.worker_close, (unsigned long long)X.peer,
            (unsigned long long)X.idle, (unsigned long long)X.tolerated,
            (unsigned long long)X.rej[0], (unsigned long long)X.rej[1],
            (unsigned long long)X.rej[2], (unsigned long long)X.rej[3],
            (unsigned long long)X.rej[4], (unsigned long long)X.rej[5],
            (unsigned long long)X.rej[6], (unsigned long long)fa_stat_accepted(a),
            (unsigned long long)fa_stat_http_requests(a),
            (unsigned long long)fa_stat_peer_closed(a), (unsigned long long)fa_stat_idle_closed(a),
            (unsigned long long)fa_stat_stop_closed(a), (unsigned long long)fa_stat_kept(a),
            (unsigned long long)fa_stat_http_rejected(a, 400),
            (unsigned long long)fa_stat_http_rejected(a, 408),
            (unsigned long long)fa_stat_http_rejected(a, 413),
            (unsigned long long)fa_stat_http_rejected(a, 414),
            (unsigned long long)fa_stat_http_rejected(a, 431),
            (unsigned long long)fa_stat_http_rejected(a, 501),
            (unsigned long long)fa_stat_http_rejected(a, 505), (unsigned long long)ws->popped,
            (unsigned long long)ws->served, (unsigned long long)ws->keeps,
            (unsigned long long)ws->keep_refused, (unsigned long long)ws->closes,
            (unsigned long long)ws->eofs, (unsigned long long)ws->resets);
}

static void scenario_m(void)
{
    atomic_store(&g_phase, "m main");
    int fds_before = count_fds();
    uint64_t t0 = fa_now_ns();
    unsigned cap = ring_capacity();
    uint32_t per_client = opt.conns;
    conns_reset(opt.clients * per_client);
    atomic_store(&g_worker_may_close, 1);
    struct sockaddr_in addr;
    int lfd = listener(1024, &addr);
    fa_acceptor a;
    acceptor_setup(&a, lfd, cap, H_IDLE_NS, H_HEAD_NS);
    runner_t run = {.a = &a};
    pthread_t run_tid;
    start_thread(&run_tid, runner_main, &run);
    workers_t ws;
    workers_start(&ws, &a, opt.workers, 300000000u);
    monitor_t mon = {.a = &a};
    pthread_t mon_tid;
    start_thread(&mon_tid, monitor_main, &mon);
    clients_t cs;
    clients_start(&cs, &addr, opt.clients, per_client, 400, 100000);
    clients_join(&cs);
    atomic_store(&mon.stop, 1);
    join_bounded(mon_tid, "monitor", 0);
    /* every client has seen its last answer or EOF; what C still holds
     * (a connection its client FIN'd while kept) closes on its own */
    wait_quiet(&a);
    fa_acceptor_stop(&a);
    join_bounded(run_tid, "acceptor after stop", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d", run.rc);
    workers_join(&ws);
    check_no_errors(&a);
    check_refused(&addr);

#define M_FAIL(...) (m_summary(&a, &ws), fail(__VA_ARGS__))
    for (uint32_t c = 0; c < g_nconns; c++)
        if (atomic_load(&g_conns[c].next_seq) != atomic_load(&g_conns[c].answered))
            M_FAIL("connection %u: workers served %u requests, the client saw %u answers", c,
                 atomic_load(&g_conns[c].next_seq), atomic_load(&g_conns[c].answered));
    uint64_t good = atomic_load(&X.good_answered);
    if (ws.served != good || fa_stat_http_requests(&a) != good || ws.popped != good)
        M_FAIL("%llu good requests answered, workers served %llu of %llu popped, the loop "
             "dispatched %llu", (unsigned long long)good, (unsigned long long)ws.served,
             (unsigned long long)ws.popped, (unsigned long long)fa_stat_http_requests(&a));
    for (int i = 0; i < FA_HTTP_REJECT_SLOTS; i++)
        if (fa_stat_http_rejected(&a, k_statuses[i]) != atomic_load(&X.rej[i]))
            M_FAIL("the loop answered %llu requests with %d, the clients saw %llu",
                 (unsigned long long)fa_stat_http_rejected(&a, k_statuses[i]), k_statuses[i],
                 (unsigned long long)atomic_load(&X.rej[i]));
    if (fa_stat_idle_closed(&a) != atomic_load(&X.idle))
        M_FAIL("idle_closed %llu, the clients saw %llu idle closes",
             (unsigned long long)fa_stat_idle_closed(&a), (unsigned long long)atomic_load(&X.idle));
    if (fa_stat_peer_closed(&a) + ws.eofs + ws.resets != atomic_load(&X.peer))
        M_FAIL("peer_closed %llu + worker EOFs %llu + worker resets %llu, the clients left %llu "
             "times", (unsigned long long)fa_stat_peer_closed(&a), (unsigned long long)ws.eofs,
             (unsigned long long)ws.resets, (unsigned long long)atomic_load(&X.peer));
    if (ws.closes != atomic_load(&X.worker_close))
        M_FAIL("workers closed %llu, the clients saw %llu closes", (unsigned long long)ws.closes,
             (unsigned long long)atomic_load(&X.worker_close));
    if (fa_stat_accepted(&a) != atomic_load(&X.opened) || fa_stat_stop_closed(&a) != 0 ||
        fa_stat_kept(&a) != ws.keeps || ws.keep_refused != 0 || ws.tolerant_ends != 0)
        M_FAIL("accepted %llu of %llu connections, stop_closed %llu, kept %llu (workers kept "
             "%llu, refused %llu), tolerant ends %llu", (unsigned long long)fa_stat_accepted(&a),
             (unsigned long long)atomic_load(&X.opened), (unsigned long long)fa_stat_stop_closed(&a),
             (unsigned long long)fa_stat_kept(&a), (unsigned long long)ws.keeps,
             (unsigned long long)ws.keep_refused, (unsigned long long)ws.tolerant_ends);
    check_conservation(&a, &ws);
#undef M_FAIL
    info("ok: %llu connections, %llu requests (%llu pipelined, %llu chunked; edges: line %llu, "
         "head %llu, fields %llu, body %llu) in %llu fragments with %llu pauses; capacity %u, "
         "%u workers, %u clients, %.2f s",
         (unsigned long long)atomic_load(&X.opened), (unsigned long long)good,
         (unsigned long long)atomic_load(&X.pipelined), (unsigned long long)atomic_load(&X.chunked),
         (unsigned long long)atomic_load(&X.edge_line), (unsigned long long)atomic_load(&X.edge_head),
         (unsigned long long)atomic_load(&X.edge_fields),
         (unsigned long long)atomic_load(&X.edge_body),
         (unsigned long long)atomic_load(&X.fragments), (unsigned long long)atomic_load(&X.pauses),
         cap, opt.workers, opt.clients, (double)(fa_now_ns() - t0) / 1e9);
    info("ok: rejected 400 %llu, 408 %llu, 413 %llu, 414 %llu, 431 %llu, 501 %llu, 505 %llu "
         "(%llu pipelined behind good requests); idle closed %llu, peer closed %llu, worker "
         "closes %llu, EOFs %llu, resets %llu; tolerated slow-client ends %llu; latest deadline "
         "%.1f ms late",
         (unsigned long long)atomic_load(&X.rej[0]), (unsigned long long)atomic_load(&X.rej[1]),
         (unsigned long long)atomic_load(&X.rej[2]), (unsigned long long)atomic_load(&X.rej[3]),
         (unsigned long long)atomic_load(&X.rej[4]), (unsigned long long)atomic_load(&X.rej[5]),
         (unsigned long long)atomic_load(&X.rej[6]),
         (unsigned long long)atomic_load(&X.bad_pipelined),
         (unsigned long long)fa_stat_idle_closed(&a), (unsigned long long)fa_stat_peer_closed(&a),
         (unsigned long long)ws.closes, (unsigned long long)ws.eofs, (unsigned long long)ws.resets,
         (unsigned long long)atomic_load(&X.tolerated),
         (double)atomic_load(&X.late_max_ns) / 1e6);
    info("ok: at most %lld open and %llu waiting in C at once (%llu samples)",
         (long long)mon.max_open, (unsigned long long)mon.max_waiting,
         (unsigned long long)mon.samples);
    info("ok: kept %llu (%llu with leftover bytes, %llu bytes; %llu empty blocks), worker "
         "over-reads %llu, read-aheads %llu; loop: dispatched %llu after waiting, ring full "
         "waits %llu",
         (unsigned long long)ws.keeps, (unsigned long long)ws.leftover_keeps,
         (unsigned long long)ws.leftover_bytes, (unsigned long long)ws.empty_data,
         (unsigned long long)ws.over_reads, (unsigned long long)ws.extra_reads,
         (unsigned long long)fa_stat_dispatched(&a),
         (unsigned long long)fa_stat_ring_full_waits(&a));
    fa_acceptor_destroy(&a);
    close(lfd);
    check_fds(fds_before, "scenario m");
}

/* ------------------------------------------------------------------ */
/* s: stop and abort with work waiting in C */

static int s_connect(const struct sockaddr_in *addr, uint32_t cid)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = opt.timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    no_delay(fd);
    int rc;
    while ((rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr)) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        fail("connect: %s", strerror(errno));
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &len);
    atomic_store(&g_conns[cid].port, me.sin_port);
    return fd;
}

/* Reads fd to EOF; returns how many whole answers to `first` (and the
 * request after it) came, failing on anything else. */
static unsigned s_read_to_eof(int fd, const rspec *first, const char *what, unsigned i)
{
    dbuf in = {0}, want = {0};
    for (;;) {
        db_reserve(&in, 4096);
        ssize_t n = recv(fd, in.p + in.len, 4096, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail("%s %u: recv: %s (no EOF)", what, i, strerror(errno));
        if (n == 0)
            break;
        in.len += (size_t)n;
    }
    unsigned answers = 0;
    if (in.len > 0) {
        if (first == NULL)
            fail("%s %u: %zu bytes (\"%.*s\") where only EOF may come", what, i, in.len,
                 (int)(in.len < 60 ? in.len : 60), in.p);
        build_response(&want, first, body_hash(first->conn, first->seq, first->blen), 0);
        if (in.len != want.len || memcmp(in.p, want.p, want.len) != 0)
            fail("%s %u: \"%.*s\", want one answer \"%.*s\"", what, i, (int)in.len, in.p,
                 (int)want.len, want.p);
        answers = 1;
    }
    db_free(&in);
    db_free(&want);
    return answers;
}

static void wait_for(const char *what, fa_acceptor *a, int (*cond)(fa_acceptor *, void *),
                     void *arg)
{
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (!cond(a, arg)) {
        if (fa_now_ns() > deadline)
            fail("%s after %u s: accepted %llu, http_requests %llu, waiting %llu, kept %llu, "
                 "at gate %u", what, opt.timeout_s, (unsigned long long)fa_stat_accepted(a),
                 (unsigned long long)fa_stat_http_requests(a),
                 (unsigned long long)fa_stat_waiting(a), (unsigned long long)fa_stat_kept(a),
                 atomic_load(&g_at_gate));
        sleep_ns(1000000);
        progress();
    }
}

typedef struct {
    uint64_t accepted, requests, waiting, kept;
    uint32_t at_gate;
} s_want;

static int s_reached(fa_acceptor *a, void *arg)
{
    const s_want *w = arg;
    return fa_stat_accepted(a) == w->accepted && fa_stat_http_requests(a) == w->requests &&
           fa_stat_waiting(a) == w->waiting && fa_stat_kept(a) == w->kept &&
           atomic_load(&g_at_gate) == w->at_gate;
}

static void scenario_s_one(int abort_it)
{
    atomic_store(&g_phase, abort_it ? "s abort with work in C" : "s stop with work in C");
    int fds_before = count_fds();
    enum { I = 3, S = 2, K = 3, R = 4 };
    const unsigned cap = 2, W = opt.workers, G = W + cap + R;
    const uint32_t n = I + S + K + G;
    conns_reset(n);
    atomic_store(&g_worker_may_close, 0);
    atomic_store(&g_gate, 0);
    atomic_store(&g_at_gate, 0);
    uint64_t rs = seed_for(abort_it ? 600 : 500);
    struct sockaddr_in addr;
    int lfd = listener(256, &addr);
    fa_acceptor a;
    /* deadlines far away: nothing may expire before the stop */
    acceptor_setup(&a, lfd, cap, 60000000000ull, 60000000000ull);
    runner_t run = {.a = &a};
    pthread_t run_tid;
    start_thread(&run_tid, runner_main, &run);
    workers_t ws;
    workers_start(&ws, &a, W, abort_it ? 610000000u : 510000000u);
    int *fd = calloc(n, sizeof *fd);
    rspec *first = calloc(n, sizeof *first);
    if (fd == NULL || first == NULL)
        fail("calloc");
    dbuf o = {0};

    /* I connections served once and kept: they wait idle in C */
    for (uint32_t i = 0; i < I; i++) {
        fd[i] = s_connect(&addr, i);
        rspec sp = make_spec(i, 0, 0, &rs);
        o.len = 0;
        build_request(&o, &sp, &rs, 0);
        if (send_all(fd[i], o.p, o.len) < 0)
            fail("send: %s", strerror(errno));
        dbuf want = {0}, got = {0};
        build_response(&want, &sp, body_hash(sp.conn, sp.seq, sp.blen), 0);
        db_reserve(&got, want.len);
        if (recv(fd[i], got.p, want.len, MSG_WAITALL) != (ssize_t)want.len ||
            memcmp(got.p, want.p, want.len) != 0)
            fail("idle connection %u: no answer to its first request", i);
        db_free(&want);
        db_free(&got);
    }
    s_want w1 = {.accepted = I, .requests = I, .waiting = I, .kept = I};
    wait_for("the first requests served and kept", &a, s_reached, &w1);

    atomic_store(&g_gate, 1);
    for (uint32_t i = I; i < I + S; i++)
        fd[i] = s_connect(&addr, i);            /* silent */
    for (uint32_t i = I + S; i < I + S + K; i++) {
        fd[i] = s_connect(&addr, i);            /* half a head */
        rspec sp = make_spec(i, 0, 0, &rs);
        o.len = 0;
        rbuilt b = build_request(&o, &sp, &rs, 0);
        if (send_all(fd[i], o.p, rnd_in(&rs, 2 * sp.lead + 1, (uint32_t)b.head_len - 1)) < 0)
            fail("send: %s", strerror(errno));
    }
    for (uint32_t i = I + S + K; i < n; i++) {
        /* a whole request, one write; now and then the next one behind it,
         * whole or in part, in the same write: it is in the block */
        fd[i] = s_connect(&addr, i);
        /* Small enough that the loop's first read takes the whole write
         * (its buffer is max_head + 4096): a connection closed from C with
         * input unread would be reset, and its answer could be lost. */
        first[i] = make_spec(i, 0, 0, &rs);
        if (first[i].blen > 1024)
            first[i].blen = 1024;
        o.len = 0;
        build_request(&o, &first[i], &rs, 0);
        unsigned more = (unsigned)(rnd(&rs) % 3);
        if (more) {
            rspec next = make_spec(i, 1, 0, &rs);
            if (next.blen > 1024)
                next.blen = 1024;
            size_t at = o.len;
            rbuilt b = build_request(&o, &next, &rs, 0);
            if (more == 2)
                o.len = at + rnd_in(&rs, 1, (uint32_t)b.head_len - 1);
            if (o.len > H_MAX_HEAD + 4000)
                o.len = at;
        }
        if (send_all(fd[i], o.p, o.len) < 0)
            fail("send: %s", strerror(errno));
    }
    /* W requests held by the workers, cap in the ring, R READY in C; the
     * idle, silent and half-way ones waiting */
    s_want w2 = {.accepted = n, .requests = I + W + cap, .waiting = I + S + K + R, .kept = I,
                 .at_gate = W};
    wait_for("requests in the workers, the ring and C", &a, s_reached, &w2);
    if (abort_it)
        fa_acceptor_abort(&a);
    else
        fa_acceptor_stop(&a);
    atomic_store(&g_gate, 0);
    join_bounded(run_tid, abort_it ? "acceptor after abort" : "acceptor after stop", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d", run.rc);
    workers_join(&ws);
    check_no_errors(&a);
    check_refused(&addr);

    unsigned answered = 0;
    for (uint32_t i = 0; i < I + S + K; i++)
        s_read_to_eof(fd[i], NULL, i < I ? "idle kept connection" : i < I + S ? "silent connection"
                                                                             : "half-way head",
                      i);
    for (uint32_t i = I + S + K; i < n; i++)
        answered += s_read_to_eof(fd[i], &first[i], "connection with a request", i);
    uint64_t want_answered = abort_it ? W + cap : G;
    uint64_t want_stop_closed = I + S + K + (abort_it ? R : 0);
    if (answered != want_answered || fa_stat_http_requests(&a) != I + want_answered ||
        ws.served != I + want_answered || fa_stat_stop_closed(&a) != want_stop_closed ||
        ws.keep_refused != want_answered || fa_stat_kept(&a) != I || fa_stat_accepted(&a) != n ||
        fa_stat_peer_closed(&a) != 0 || fa_stat_idle_closed(&a) != 0 || rejected_total(&a) != 0)
        fail("answered %u (want %llu), dispatched %llu, served %llu, stop_closed %llu (want "
             "%llu), refused on the way back %llu, kept %llu, accepted %llu, peer %llu, idle %llu, "
             "rejected %llu", answered, (unsigned long long)want_answered,
             (unsigned long long)fa_stat_http_requests(&a), (unsigned long long)ws.served,
             (unsigned long long)fa_stat_stop_closed(&a), (unsigned long long)want_stop_closed,
             (unsigned long long)ws.keep_refused, (unsigned long long)fa_stat_kept(&a),
             (unsigned long long)fa_stat_accepted(&a), (unsigned long long)fa_stat_peer_closed(&a),
             (unsigned long long)fa_stat_idle_closed(&a), (unsigned long long)rejected_total(&a));
    check_conservation(&a, &ws);
    info("ok: %u requests in workers, %u in the ring, %u READY in C; %u idle, %u silent, %u "
         "half-way: %llu answered, %llu closed by the %s", W, cap, R, I, S, K,
         (unsigned long long)answered, (unsigned long long)fa_stat_stop_closed(&a),
         abort_it ? "abort" : "stop");
    for (uint32_t i = 0; i < n; i++)
        close(fd[i]);
    free(fd);
    free(first);
    db_free(&o);
    fa_acceptor_destroy(&a);
    close(lfd);
    check_fds(fds_before, "scenario s");
}

static void scenario_s(void)
{
    scenario_s_one(0);
    scenario_s_one(1);
}

/* ------------------------------------------------------------------ */
/* x: abort under load */

static void scenario_x(void)
{
    atomic_store(&g_phase, "x abort under load");
    int fds_before = count_fds();
    uint64_t t0 = fa_now_ns();
    uint64_t rs = seed_for(700);
    unsigned cap = ring_capacity();
    uint32_t per_client = opt.conns / 2 > 4 ? opt.conns / 2 : 4;
    conns_reset(opt.clients * per_client);
    atomic_store(&g_worker_may_close, 1);
    atomic_store(&g_ending, 0);
    struct sockaddr_in addr;
    int lfd = listener(1024, &addr);
    fa_acceptor a;
    acceptor_setup(&a, lfd, cap, H_IDLE_NS, H_HEAD_NS);
    runner_t run = {.a = &a};
    pthread_t run_tid;
    start_thread(&run_tid, runner_main, &run);
    workers_t ws;
    workers_start(&ws, &a, opt.workers, 710000000u);
    monitor_t mon = {.a = &a};
    pthread_t mon_tid;
    start_thread(&mon_tid, monitor_main, &mon);
    clients_t cs;
    clients_start(&cs, &addr, opt.clients, per_client, 720, 200000);
    /* the abort comes at a random moment of the traffic: 20 to 500 ms in,
     * or when the clients are done (then it finds the loop idle) */
    uint64_t at = fa_now_ns() + rnd_in(&rs, 20, 500) * 1000000ull;
    while (fa_now_ns() < at && atomic_load(&g_clients_done) < opt.clients) {
        sleep_ns(200000);
        progress();
    }
    atomic_store(&g_ending, 1);
    fa_acceptor_abort(&a);
    join_bounded(run_tid, "acceptor after abort", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d", run.rc);
    clients_join(&cs);
    workers_join(&ws);
    atomic_store(&mon.stop, 1);
    join_bounded(mon_tid, "monitor", 0);
    check_no_errors(&a);
    check_refused(&addr);
    check_conservation(&a, &ws);
    info("ok: aborted after %llu answers: accepted %llu, dispatched %llu, workers ended %llu "
         "(refused on the way back %llu, gave up on a gone peer %llu), the loop closed peer "
         "%llu idle %llu stop %llu rejected %llu; %.2f s",
         (unsigned long long)atomic_load(&X.good_answered), (unsigned long long)fa_stat_accepted(&a),
         (unsigned long long)fa_stat_http_requests(&a), (unsigned long long)worker_ends(&ws),
         (unsigned long long)ws.keep_refused, (unsigned long long)ws.tolerant_ends,
         (unsigned long long)fa_stat_peer_closed(&a), (unsigned long long)fa_stat_idle_closed(&a),
         (unsigned long long)fa_stat_stop_closed(&a), (unsigned long long)rejected_total(&a),
         (double)(fa_now_ns() - t0) / 1e9);
    atomic_store(&g_ending, 0);
    fa_acceptor_destroy(&a);
    close(lfd);
    check_fds(fds_before, "scenario x");
}

/* ------------------------------------------------------------------ */
/* k: a connection given back right before an abort (x, reduced) */

/* The loop's thread, on a CPU of its own (k). */
typedef struct {
    runner_t run;
    int cpu;
} pinned_runner_t;

static void *pinned_runner_main(void *arg)
{
    pinned_runner_t *p = arg;
    if (p->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(p->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    return runner_main(&p->run);
}

/* One request is served by this thread, given back with fa_acceptor_keep
 * while the loop sleeps in epoll_wait, and the loop is aborted at once:
 * the keep's kick wakes it, and if it sees the abort before it takes
 * anything back, it closes the connection from the way back. keep()
 * returned 1 (the loop took it), so the loop must count that end
 * (stop_closed, as for a connection waiting here at the abort), not close
 * it uncounted. The loop and this thread run on different CPUs: on one,
 * the loop's wake-up preempts this thread (it asks for a short time
 * slice) and takes the connection back before the abort is even stored.
 * A round the loop wins that way counts the connection as waiting, which
 * is right too; only an uncounted end fails. */
static void scenario_k(void)
{
    atomic_store(&g_phase, "k keep right before an abort");
    int fds_before = count_fds();
    uint64_t rs = seed_for(800);
    unsigned uncounted = 0, won = 0, rounds = 5;
    conns_reset(rounds);
    int cpus[2] = {-1, -1};
    cpu_set_t mine, saved;
    if (sched_getaffinity(0, sizeof saved, &saved) == 0) {
        for (int c = 0, n = 0; c < CPU_SETSIZE && n < 2; c++)
            if (CPU_ISSET(c, &saved))
                cpus[n++] = c;
        if (cpus[1] >= 0) {
            CPU_ZERO(&mine);
            CPU_SET(cpus[0], &mine);
            sched_setaffinity(0, sizeof mine, &mine);
        }
    }
    for (unsigned round = 0; round < rounds; round++) {
        struct sockaddr_in addr;
        int lfd = listener(16, &addr);
        fa_acceptor a;
        acceptor_setup(&a, lfd, 2, 60000000000ull, 60000000000ull);
        /* no polling and no naps: between events the loop sleeps in epoll_wait */
        if (fa_acceptor_set_spin(&a, 0) < 0 || fa_acceptor_set_nap(&a, 0) < 0)
            fail("set_spin/set_nap");
        pinned_runner_t pr = {.run = {.a = &a}, .cpu = cpus[1]};
        pthread_t run_tid;
        start_thread(&run_tid, pinned_runner_main, &pr);
        int cfd = s_connect(&addr, round);
        rspec sp = make_spec(round, 0, 0, &rs);
        dbuf o = {0};
        build_request(&o, &sp, &rs, 0);
        if (send_all(cfd, o.p, o.len) < 0)
            fail("send: %s", strerror(errno));
        db_free(&o);
        fa_conn c;
        int rc = fa_pop_wait(&a.ring, &a.lot, &c, (int64_t)opt.timeout_s * 1000000000);
        if (rc != 0)
            fail("round %u: no request popped (%d)", round, rc);
        free(c.data);
        /* the body, if any, stays unread: the connection is closed from C
         * (a reset is fine here, the client only waits for the end) */
        uint64_t deadline = deadline_after_s(opt.timeout_s);
        while (!atomic_load(&a.loop_sleeping)) {
            if (fa_now_ns() > deadline)
                fail("round %u: the loop never went to sleep", round);
            sched_yield();
        }
        sleep_ns(2000000);          /* well inside epoll_wait by now */
        int kept = fa_acceptor_keep(&a, c.fd, NULL, 0);
        fa_acceptor_abort(&a);
        join_bounded(run_tid, "acceptor after abort", round);
        if (pr.run.rc != 0)
            fail("fa_acceptor_run returned %d", pr.run.rc);
        won += fa_stat_kept(&a) == 1;
        uint64_t ends = (kept ? 0 : 1) + fa_stat_peer_closed(&a) + fa_stat_idle_closed(&a) +
                        fa_stat_stop_closed(&a) + rejected_total(&a);
        if (fa_stat_accepted(&a) != ends && uncounted++ == 0) {
            fprintf(stderr, "round %u: accepted %llu, given back (keep returned %d) and closed "
                    "by the loop with kept %llu, stop_closed %llu, peer %llu, idle %llu: the "
                    "connection ended in no counter\n", round,
                    (unsigned long long)fa_stat_accepted(&a), kept,
                    (unsigned long long)fa_stat_kept(&a),
                    (unsigned long long)fa_stat_stop_closed(&a),
                    (unsigned long long)fa_stat_peer_closed(&a),
                    (unsigned long long)fa_stat_idle_closed(&a));
        }
        if (fa_stat_open(&a) != 0)
            fail("round %u: open %lld after the abort", round, (long long)fa_stat_open(&a));
        char b;
        ssize_t n = recv(cfd, &b, 1, 0);
        if (n > 0)
            fail("round %u: the client got data after its answerless request", round);
        close(cfd);
        fa_acceptor_destroy(&a);
        close(lfd);
    }
    if (cpus[1] >= 0)
        sched_setaffinity(0, sizeof saved, &saved);
    check_fds(fds_before, "scenario k");
    if (uncounted)
        fail("%u of %u connections given back with fa_acceptor_keep() == 1 right before an "
             "abort were closed by the loop (close_backq) without being counted in any stat: "
             "accepted != the sum of the ends", uncounted, rounds);
    info("ok: %u connections given back right before an abort, each counted once (%u taken "
         "back before the loop saw the abort)", rounds, won);
}

/* ------------------------------------------------------------------ */
/* e: empty lines before a request line start no head */

/* Reads one whole answer to sp from fd (SO_RCVTIMEO bounds it). */
static void e_expect_answer(int fd, const rspec *sp, const char *what)
{
    dbuf want = {0}, got = {0};
    build_response(&want, sp, body_hash(sp->conn, sp->seq, sp->blen), 0);
    db_reserve(&got, want.len);
    ssize_t n = recv(fd, got.p, want.len, MSG_WAITALL);
    if (n != (ssize_t)want.len || memcmp(got.p, want.p, want.len) != 0)
        fail("%s: got \"%.*s\" (%zd bytes), want the answer to /c%u/r%u", what,
             n > 0 ? (int)(n < 60 ? n : 60) : 0, got.p, n, sp->conn, sp->seq);
    db_free(&want);
    db_free(&got);
}

/* RFC 9112 section 2.2: a server SHOULD ignore at least one empty line
 * (CRLF) received before the request line; legacy clients send one after a
 * POST body. The parser skips such lines, but the loop must not take them
 * for the start of a head either: a kept connection that sent only a CRLF
 * is idle, not half way through a head, so it waits out its idle deadline
 * (a FIN, no answer) and its next request, sent after the head deadline,
 * is served; a new connection that sends only a CRLF is closed at its head
 * deadline as one that sent nothing, not answered 408.
 *  1. the CRLF right behind the body, in the same write: it reaches the
 *     loop as the worker's leftover;
 *  2. the CRLF written after the answer: the loop reads it itself;
 *  3. a new connection that sends only a CRLF. */
static void scenario_e(void)
{
    atomic_store(&g_phase, "e empty lines before a request");
    int fds_before = count_fds();
    uint64_t rs = seed_for(900);
    conns_reset(3);
    atomic_store(&g_worker_may_close, 0);
    struct sockaddr_in addr;
    int lfd = listener(16, &addr);
    fa_acceptor a;
    acceptor_setup(&a, lfd, 2, H_IDLE_NS, H_HEAD_NS);
    runner_t run = {.a = &a};
    pthread_t run_tid;
    start_thread(&run_tid, runner_main, &run);
    workers_t ws;
    workers_start(&ws, &a, 1, 910000000u);
    int fd[3];
    dbuf o = {0};
    for (uint32_t i = 0; i < 2; i++) {
        fd[i] = s_connect(&addr, i);
        rspec post = make_spec(i, 0, 0, &rs);
        post.t = 1;
        post.minor = 1;
        post.k = 0;
        post.blen = 1 + (uint32_t)(rnd(&rs) % 64);
        if (post.nx > H_MAX_FIELDS - 2)
            post.nx = H_MAX_FIELDS - 2;     /* room for Content-Length */
        o.len = 0;
        build_request(&o, &post, &rs, 0);
        if (i == 0)
            db_str(&o, "\r\n");    /* in the same write as the body */
        if (send_all(fd[i], o.p, o.len) < 0)
            fail("send: %s", strerror(errno));
        e_expect_answer(fd[i], &post, i == 0 ? "e1 POST" : "e2 POST");
        if (i == 1 && send_all(fd[i], "\r\n", 2) < 0)
            fail("send: %s", strerror(errno));
    }
    fd[2] = s_connect(&addr, 2);
    if (send_all(fd[2], "\r\n", 2) < 0)
        fail("send: %s", strerror(errno));
    uint64_t t_new = fa_now_ns();
    /* past the head deadline, well before the idle one */
    sleep_ns(H_HEAD_NS + H_HEAD_NS / 2);
    char b[512];
    for (uint32_t i = 0; i < 2; i++) {
        ssize_t n = recv(fd[i], b, sizeof b, MSG_DONTWAIT);
        if (n >= 0)
            fail("e%u: a kept connection that sent only a CRLF after its request got %s after "
                 "the head deadline (%.*s): the empty line was taken for the start of a head",
                 i + 1, n ? "an answer" : "EOF", (int)(n < 40 ? n : 40), b);
        rspec get = make_spec(i, 1, 0, &rs);
        get.t = 0;
        get.blen = 0;
        o.len = 0;
        build_request(&o, &get, &rs, 0);
        if (send_all(fd[i], o.p, o.len) < 0)
            fail("send: %s", strerror(errno));
        e_expect_answer(fd[i], &get, i == 0 ? "e1 next request" : "e2 next request");
    }
    ssize_t n = recv(fd[2], b, sizeof b, 0);
    if (n != 0)
        fail("e3: a new connection that sent only a CRLF got %zd bytes (%.*s), not EOF, at its "
             "head deadline", n, (int)(n > 0 ? (n < 40 ? n : 40) : 0), b);
    if (fa_now_ns() < t_new + H_HEAD_NS)
        fail("e3: closed before its head deadline");
    for (uint32_t i = 0; i < 3; i++)
        close(fd[i]);
    wait_quiet(&a);
    fa_acceptor_stop(&a);
    join_bounded(run_tid, "acceptor after stop", 0);
    workers_join(&ws);
    /* the two FINs: seen by the loop, or by the worker's read-ahead */
    if (fa_stat_http_rejected(&a, 408) != 0 || fa_stat_idle_closed(&a) != 1 ||
        fa_stat_http_requests(&a) != 4 || fa_stat_peer_closed(&a) + ws.eofs != 2)
        fail("408s %llu, idle closed %llu (want 1), requests %llu (want 4), peer closed %llu + "
             "worker EOFs %llu (want 2)", (unsigned long long)fa_stat_http_rejected(&a, 408),
             (unsigned long long)fa_stat_idle_closed(&a),
             (unsigned long long)fa_stat_http_requests(&a),
             (unsigned long long)fa_stat_peer_closed(&a), (unsigned long long)ws.eofs);
    check_conservation(&a, &ws);
    db_free(&o);
    fa_acceptor_destroy(&a);
    close(lfd);
    check_fds(fds_before, "scenario e");
    info("ok: a CRLF before the request line (leftover, read in C, on a new connection) "
         "started no head");
}

/* ------------------------------------------------------------------ */

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-s msxke] [-w workers] [-c clients] [-n conns] [-r requests]\n"
            "          [-q capacity] [-T timeout_s] [-S seed]\n"
            "  -s  scenarios: m (main run), s (stop and abort with work in C),\n"
            "      x (abort under load), k (a keep right before an abort),\n"
            "      e (empty lines before a request line); default msxke\n"
            "  -w  worker threads (default %u)       -c  client threads (default %u)\n"
            "  -n  connections per client (default %u) -r  most requests per connection (%u)\n"
            "  -q  ring capacity (default: 2 or 4 from the seed)\n"
            "  -T  hang bound in s (default %u)       -S  random seed (default: the clock)\n",
            argv0, opt.workers, opt.clients, opt.conns, opt.requests, opt.timeout_s);
    exit(2);
}

static uint64_t parse_u64(const char *s, const char *argv0)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end != '\0')
        usage(argv0);
    return v;
}

int main(int argc, char **argv)
{
    int ch, seeded = 0;
    while ((ch = getopt(argc, argv, "s:w:c:n:r:q:T:S:")) != -1) {
        switch (ch) {
        case 's': opt.scenarios = optarg; break;
        case 'w': opt.workers = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'c': opt.clients = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'n': opt.conns = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'r': opt.requests = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'q': opt.capacity = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'T': opt.timeout_s = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'S': opt.seed = parse_u64(optarg, argv[0]); seeded = 1; break;
        default: usage(argv[0]);
        }
    }
    if (optind != argc || opt.workers == 0 || opt.workers > 32 || opt.clients == 0 ||
        opt.clients > 32 || opt.conns == 0 || opt.requests == 0 || opt.timeout_s == 0 ||
        (opt.capacity && (opt.capacity < 2 || (opt.capacity & (opt.capacity - 1)))) ||
        strspn(opt.scenarios, "msxke") != strlen(opt.scenarios))
        usage(argv[0]);
    if (!seeded)
        opt.seed = fa_now_ns();
    printf("stress_http: scenarios %s, seed %llu\n", opt.scenarios, (unsigned long long)opt.seed);
    fflush(stdout);
    g_busy = calloc(H_MAX_FD, sizeof *g_busy);
    if (g_busy == NULL)
        fail("calloc");

    pthread_t wd;
    start_thread(&wd, watchdog_main, NULL);
    pthread_detach(wd);

    uint64_t t0 = fa_now_ns();
    if (strchr(opt.scenarios, 'm'))
        scenario_m();
    if (strchr(opt.scenarios, 's'))
        scenario_s();
    if (strchr(opt.scenarios, 'x'))
        scenario_x();
    if (strchr(opt.scenarios, 'k'))
        scenario_k();
    if (strchr(opt.scenarios, 'e'))
        scenario_e();
    atomic_store(&g_phase, "end");
    free(g_conns);
    free(g_busy);
    info("all passed in %.2f s", (double)(fa_now_ns() - t0) / 1e9);
    return 0;
}

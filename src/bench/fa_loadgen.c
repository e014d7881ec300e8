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

#define REQUEST_SAMPLES_MIN 4096u

enum phase { CONNECTING, SENDING, READING };
enum outcome { COMPLETED, REFUSED, RESET, TIMED_OUT, OTHER, CLOSED };

/* Where the HTTP response parser is (FA_LOAD_FRAMING_HTTP). */
enum http_state {
    H_STATUS,           /* the status line */
    H_LINE,             /* the start of a header line */
    H_NAME,             /* in a field name that may still be one we want */
    H_SKIP,             /* the rest of a line that does not matter */
    H_LENGTH,           /* a Content-Length value */
    H_CODING,           /* a Transfer-Encoding value */
    H_BODY,             /* `left` body bytes to go */
    H_BODY_EOF,         /* the body runs to EOF */
    H_CHUNK_SIZE,       /* a chunk-size line */
    H_CHUNK_EXT,        /* its extensions, up to LF */
    H_CHUNK_DATA,       /* `left` chunk bytes to go */
    H_CHUNK_END,        /* the CRLF after a chunk's data */
    H_TRAILER,          /* the start of a trailer line (LF: the end) */
    H_TRAILER_SKIP,     /* in a trailer line */
};

/* Field names the parser looks for, as bits of http_resp.names. */
#define NAME_LENGTH 1u
#define NAME_CODING 2u
/* http_resp.flags */
#define HAVE_LENGTH 1u
#define CHUNKED 2u
/* coding matcher (http_resp.col in H_CODING): matched "chunked" in full,
 * then only whitespace; or the current coding is not chunked */
#define CODING_CHUNKED 7u
#define CODING_CHUNKED_END 8u
#define CODING_OTHER 0xffu

typedef struct http_resp {
    uint8_t state;          /* enum http_state */
    uint8_t flags;
    uint8_t names;          /* candidates left while in H_NAME */
    uint8_t digits;         /* H_STATUS: status digits; H_LENGTH, H_CHUNK_SIZE:
                             * 0 none yet, 1 in the number, 2 after it */
    uint16_t status;
    uint32_t col;           /* position in the line (H_STATUS, H_NAME) or the
                             * coding matcher (H_CODING) */
    uint32_t head;          /* bytes of the head so far (or of a chunk line) */
    uint64_t length;        /* the Content-Length, once seen */
    uint64_t value;         /* the number being parsed */
    uint64_t left;          /* body or chunk bytes to go */
} http_resp;

typedef struct fa_load_conn {
    int fd;                 /* -1 while the slot is free */
    uint8_t phase;
    uint8_t got_reply;      /* at least one byte of the current response was read */
    uint8_t req_started;    /* the current request's send has begun */
    uint32_t sent;          /* request bytes written */
    uint32_t prev, next;    /* deadline-order list of open connections */
    uint32_t deferred;      /* epoll events seen but not acted on yet; 0: none */
    uint32_t deferred_at;   /* its index in l->deferred while deferred != 0 */
    uint64_t start_ns;      /* connect start */
    uint64_t timer_ns;      /* the current deadline runs from here */
    uint64_t req_start_ns;  /* the current request's send start */
    uint64_t done;          /* complete responses on this connection */
    uint64_t got;           /* FIXED: bytes of the current response */
    http_resp http;
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
    uint64_t per_conn = mul_sat(cfg->requests_per_conn, cfg->timeout_ns);
    uint64_t per_round = per_conn > UINT64_MAX - FA_LOAD_PAUSE_MAX_NS
                             ? UINT64_MAX : per_conn + FA_LOAD_PAUSE_MAX_NS;
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
        (cfg->target.ss_family != AF_INET && cfg->target.ss_family != AF_INET6) ||
        cfg->requests_per_conn < 1 || cfg->requests_per_conn > FA_LOAD_MAX_REQUESTS_PER_CONN ||
        (cfg->requests_per_conn > 1 &&
         (cfg->framing == FA_LOAD_FRAMING_EOF || cfg->request_len == 0)))
        return -EINVAL;
    switch (cfg->framing) {
    case FA_LOAD_FRAMING_EOF:
    case FA_LOAD_FRAMING_HTTP:
        if (cfg->response_len != 0)
            return -EINVAL;
        break;
    case FA_LOAD_FRAMING_FIXED:
        if (cfg->response_len < 1 || cfg->response_len > FA_LOAD_MAX_RESPONSE_LEN)
            return -EINVAL;
        break;
    default:
        return -EINVAL;
    }
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
    /* grown by doubling as responses complete (see record_request) */
    uint64_t total = mul_sat(l->cfg.connections, l->cfg.requests_per_conn);
    l->request_cap = total < REQUEST_SAMPLES_MIN ? total : REQUEST_SAMPLES_MIN;
    l->request_ns = malloc(l->request_cap * sizeof *l->request_ns);
    l->scratch = malloc(SCRATCH_BYTES);
    if (!l->slots || !l->free_slots || !l->deferred || !l->connect_ns || !l->rtt_ns ||
        !l->request_ns || !l->scratch) {
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
    free(l->request_ns);
    free(l->scratch);
    l->slots = NULL;
    l->free_slots = NULL;
    l->deferred = NULL;
    l->connect_ns = l->rtt_ns = l->request_ns = NULL;
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
    case CLOSED:    l->res.closed++; break;
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

/* Restarts connection i's deadline at t: every deadline is timer_ns +
 * timeout_ns with one timeout, so appending keeps the list in deadline
 * order. */
static void restart_timer(fa_load *l, uint32_t i, uint64_t t)
{
    l->slots[i].timer_ns = t;
    if (l->newest != i) {
        list_remove(l, i);
        list_append(l, i);
    }
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

/* Records a complete response of connection i at t. Returns 0, or -1 when
 * the samples could not grow (the run then stops with -ENOMEM). */
static int record_request(fa_load *l, uint32_t i, uint64_t t)
{
    fa_load_conn *c = &l->slots[i];
    if (l->res.request.samples == l->request_cap) {
        uint64_t cap = l->request_cap * 2;
        uint64_t *grown = cap > UINT64_MAX / sizeof *grown ? NULL
                                                             : realloc(l->request_ns,
                                                                       cap * sizeof *grown);
        if (grown == NULL) {
            l->out_of_memory = 1;
            return -1;
        }
        l->request_ns = grown;
        l->request_cap = cap;
    }
    l->request_ns[l->res.request.samples++] = t - c->req_start_ns;
    l->res.requests++;
    c->done++;
    return 0;
}

/* ---- response framing ---- */

enum frame { FRAME_MORE, FRAME_DONE, FRAME_BAD };

static int lower(int ch)
{
    return ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch;
}

static int is_ows(int ch)
{
    return ch == ' ' || ch == '\t';
}

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = lower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static const char LENGTH_NAME[] = "content-length";
static const char CODING_NAME[] = "transfer-encoding";
static const char CHUNKED_NAME[] = "chunked";

static void http_reset(http_resp *h)
{
    memset(h, 0, sizeof *h);
    h->state = H_STATUS;
}

/* The blank line ended a head: where does the body go? */
static enum frame http_head_done(http_resp *h)
{
    if (h->status >= 100 && h->status < 200) {
        if (h->status == 101)
            return FRAME_BAD;       /* another protocol follows: not ours */
        http_reset(h);              /* interim: the real response follows */
        return FRAME_MORE;
    }
    if (h->status == 204 || h->status == 304)
        return FRAME_DONE;
    if (h->flags & CHUNKED) {
        h->state = H_CHUNK_SIZE;
        h->digits = 0;
        h->value = 0;
        h->head = 0;
        return FRAME_MORE;
    }
    if (h->flags & HAVE_LENGTH) {
        if (h->length == 0)
            return FRAME_DONE;
        h->left = h->length;
        h->state = H_BODY;
        return FRAME_MORE;
    }
    h->state = H_BODY_EOF;
    return FRAME_MORE;
}

/* One byte of a field value we parse, or its end (ch == '\n'). */
static enum frame http_value_byte(http_resp *h, int ch)
{
    if (h->state == H_LENGTH) {
        if (ch >= '0' && ch <= '9' && h->digits < 2) {
            uint64_t d = (uint64_t)(ch - '0');
            if (h->value > (UINT64_MAX - d) / 10)
                return FRAME_BAD;
            h->value = h->value * 10 + d;
            h->digits = 1;
        } else if (is_ows(ch)) {
            if (h->digits == 1)
                h->digits = 2;
        } else if (ch == '\n') {
            if (h->digits == 0)
                return FRAME_BAD;
            if ((h->flags & HAVE_LENGTH) && h->length != h->value)
                return FRAME_BAD;
            h->length = h->value;
            h->flags |= HAVE_LENGTH;
            h->state = H_LINE;
        } else {
            return FRAME_BAD;
        }
        return FRAME_MORE;
    }
    /* H_CODING: is the last coding of the list "chunked"? */
    if (ch == '\n') {
        if (h->col == CODING_CHUNKED || h->col == CODING_CHUNKED_END)
            h->flags |= CHUNKED;
        else
            h->flags &= (uint8_t)~CHUNKED;
        h->state = H_LINE;
    } else if (ch == ',') {
        h->col = 0;
    } else if (is_ows(ch)) {
        if (h->col == CODING_CHUNKED)
            h->col = CODING_CHUNKED_END;
        else if (h->col != 0 && h->col != CODING_CHUNKED_END)
            h->col = CODING_OTHER;
    } else if (h->col < CODING_CHUNKED && lower(ch) == CHUNKED_NAME[h->col]) {
        h->col++;
    } else {
        h->col = CODING_OTHER;
    }
    return FRAME_MORE;
}

/* Feeds n response bytes to the HTTP parser of h. FRAME_DONE: the response
 * ended after *took bytes; FRAME_MORE: all were taken, it goes on. */
static enum frame http_frame(http_resp *h, const char *p, size_t n, size_t *took)
{
    size_t k = 0;
    while (k < n) {
        if (h->state == H_BODY || h->state == H_CHUNK_DATA) {
            size_t step = h->left < n - k ? (size_t)h->left : n - k;
            h->left -= step;
            k += step;
            if (h->left > 0)
                break;
            if (h->state == H_BODY) {
                *took = k;
                return FRAME_DONE;
            }
            h->state = H_CHUNK_END;
            continue;
        }
        if (h->state == H_BODY_EOF) {
            k = n;
            break;
        }
        int ch = (unsigned char)p[k++];
        if (++h->head > FA_LOAD_MAX_HEAD)
            return FRAME_BAD;
        if (ch == '\r')
            continue;       /* line ends are LF, CR before them optional */
        enum frame f = FRAME_MORE;
        switch (h->state) {
        case H_STATUS:
            /* "HTTP/" version SP 3DIGIT [SP reason] */
            if (h->col < 5) {
                if (ch != "HTTP/"[h->col])
                    return FRAME_BAD;
                h->col++;
            } else if (h->col == 5) {
                if (ch == ' ')
                    h->col = 6;
                else if (ch == '\n')
                    return FRAME_BAD;
            } else if (h->digits < 3) {
                if (ch < '0' || ch > '9')
                    return FRAME_BAD;
                h->status = (uint16_t)(h->status * 10 + (ch - '0'));
                h->digits++;
            } else if (ch == '\n') {
                h->state = H_LINE;
                h->digits = 0;
            } else if (h->col == 6) {
                if (ch != ' ')
                    return FRAME_BAD;
                h->col = 7;     /* the reason phrase: anything up to LF */
            }
            break;
        case H_LINE:
            if (ch == '\n') {
                f = http_head_done(h);
            } else if (is_ows(ch)) {
                h->state = H_SKIP;      /* an obsolete line folding */
            } else {
                h->state = H_NAME;
                h->names = NAME_LENGTH | NAME_CODING;
                h->col = 0;
                goto name;
            }
            break;
        case H_NAME:
        name:
            if (ch == ':') {
                if ((h->names & NAME_LENGTH) && h->col == sizeof LENGTH_NAME - 1) {
                    h->state = H_LENGTH;
                    h->digits = 0;
                    h->value = 0;
                } else if ((h->names & NAME_CODING) && h->col == sizeof CODING_NAME - 1) {
                    h->state = H_CODING;
                    h->col = 0;
                } else {
                    h->state = H_SKIP;
                }
                break;
            }
            if (ch == '\n') {
                h->state = H_LINE;      /* no colon: not a field we parse */
                break;
            }
            if (h->col >= sizeof LENGTH_NAME - 1 || lower(ch) != LENGTH_NAME[h->col])
                h->names &= (uint8_t)~NAME_LENGTH;
            if (h->col >= sizeof CODING_NAME - 1 || lower(ch) != CODING_NAME[h->col])
                h->names &= (uint8_t)~NAME_CODING;
            h->col++;
            if (h->names == 0)
                h->state = H_SKIP;
            break;
        case H_SKIP:
            if (ch == '\n')
                h->state = H_LINE;
            break;
        case H_LENGTH:
        case H_CODING:
            f = http_value_byte(h, ch);
            break;
        case H_CHUNK_SIZE: {
            int d = hex_value(ch);
            if (d >= 0 && h->digits < 2) {
                if (h->value > (UINT64_MAX >> 4))
                    return FRAME_BAD;
                h->value = (h->value << 4) | (uint64_t)d;
                h->digits = 1;
                break;
            }
            if (h->digits == 0)
                return FRAME_BAD;
            if (ch == ';' || is_ows(ch)) {
                h->state = H_CHUNK_EXT;
                break;
            }
            if (ch != '\n')
                return FRAME_BAD;
            /* the chunk-size line ends: as after its extensions */
        }
            /* fall through */
        case H_CHUNK_EXT:
            if (ch != '\n')
                break;
            h->head = 0;
            if (h->value == 0) {
                h->state = H_TRAILER;
            } else {
                h->left = h->value;
                h->state = H_CHUNK_DATA;
            }
            break;
        case H_CHUNK_END:
            if (ch != '\n')
                return FRAME_BAD;
            h->state = H_CHUNK_SIZE;
            h->digits = 0;
            h->value = 0;
            h->head = 0;
            break;
        case H_TRAILER:
            if (ch == '\n') {
                f = FRAME_DONE;
                break;
            }
            h->state = H_TRAILER_SKIP;
            break;
        case H_TRAILER_SKIP:
            if (ch == '\n')
                h->state = H_TRAILER;
            break;
        default:
            return FRAME_BAD;
        }
        if (f != FRAME_MORE) {
            *took = k;
            return f;
        }
    }
    *took = k;
    return FRAME_MORE;
}

/* Feeds n bytes of the current response of c to its framing. */
static enum frame frame(const fa_load *l, fa_load_conn *c, const char *p, size_t n,
                        size_t *took)
{
    if (l->cfg.framing == FA_LOAD_FRAMING_HTTP)
        return http_frame(&c->http, p, n, took);
    /* FIXED */
    uint64_t want = l->cfg.response_len - c->got;
    if (want > n) {
        c->got += n;
        *took = n;
        return FRAME_MORE;
    }
    c->got += want;
    *took = (size_t)want;
    return FRAME_DONE;
}

/* Gets connection i ready for its next request at t: a fresh response and
 * (R > 1: per request) a fresh deadline. */
static void next_request(fa_load *l, uint32_t i, uint64_t t)
{
    fa_load_conn *c = &l->slots[i];
    c->phase = SENDING;
    c->sent = 0;
    c->req_started = 0;
    c->got_reply = 0;
    c->got = 0;
    http_reset(&c->http);
    restart_timer(l, i, t);
}

/* Sends (the rest of) the current request of connection i. Returns 0 once
 * it is out (phase READING), -1 to wait for EPOLLOUT, 1 if it ended. */
static int send_request(fa_load *l, uint32_t i)
{
    fa_load_conn *c = &l->slots[i];
    const char *req = l->cfg.request;
    if (!c->req_started) {
        c->req_started = 1;
        c->req_start_ns = fa_now_ns();
    }
    while (c->sent < l->cfg.request_len) {
        ssize_t n = send(c->fd, req + c->sent, l->cfg.request_len - c->sent, MSG_NOSIGNAL);
        if (n >= 0) {
            c->sent += (uint32_t)n;
            continue;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return -1;      /* the next EPOLLOUT edge brings us back */
        /* a kept connection the server closed: its reset shows here */
        enum outcome o = classify(err);
        if (o == RESET && c->done > 0)
            o = CLOSED;
        finish(l, i, o, fa_now_ns());
        return 1;
    }
    c->phase = READING;
    return 0;
}

/* READING with EOF framing (the one response ends with the connection):
 * drain until EAGAIN (the epoll set is edge-triggered) or EOF. Returns 1 if
 * the connection ended. */
static int read_to_eof(fa_load *l, uint32_t i, uint32_t events)
{
    fa_load_conn *c = &l->slots[i];
    for (;;) {
        ssize_t n = read(c->fd, l->scratch, SCRATCH_BYTES);
        if (n > 0) {
            c->got_reply = 1;
            /* The peer's FIN was in when epoll reported RDHUP (and no RST,
             * which would add ERR and HUP), so a short read took everything
             * before it: EOF without another read. */
            if ((events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) == EPOLLRDHUP &&
                (size_t)n < SCRATCH_BYTES) {
                uint64_t t = fa_now_ns();
                if (record_request(l, i, t) == 0)
                    finish(l, i, COMPLETED, t);
                return 1;
            }
            continue;
        }
        uint64_t t = fa_now_ns();
        if (n == 0) {
            if (c->got_reply && record_request(l, i, t) < 0)
                return 1;
            finish(l, i, c->got_reply ? COMPLETED : OTHER, t);
            return 1;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return 0;
        finish(l, i, classify(err), t);
        return 1;
    }
}

/* READING with FIXED or HTTP framing: responses end by their framing; the
 * next request goes out as soon as one is complete. Returns 1 if the
 * connection ended (or the run must stop: l->out_of_memory). */
static int read_framed(fa_load *l, uint32_t i, uint32_t events)
{
    fa_load_conn *c = &l->slots[i];
    uint64_t t;
    for (;;) {
        ssize_t n = read(c->fd, l->scratch, SCRATCH_BYTES);
        if (n > 0) {
            size_t took = 0;
            c->got_reply = 1;
            enum frame f = frame(l, c, l->scratch, (size_t)n, &took);
            if (f == FRAME_MORE)
                continue;
            t = fa_now_ns();
            if (f == FRAME_BAD || took < (size_t)n) {
                /* a protocol error, or bytes beyond the response: nothing
                 * asked for them */
                finish(l, i, OTHER, t);
                return 1;
            }
            if (record_request(l, i, t) < 0)
                return 1;
            if (c->done >= l->cfg.requests_per_conn) {
                finish(l, i, COMPLETED, t);
                return 1;
            }
            next_request(l, i, t);
            int sent = send_request(l, i);
            if (sent != 0)
                return sent > 0;
            /* A short read emptied the receive queue: the next response
             * raises a new edge. After a full one, read on; and when the
             * peer's FIN (or a reset) was already in, read on to see it:
             * it raises no new edge. */
            if ((size_t)n < SCRATCH_BYTES && !(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                return 0;
            continue;
        }
        t = fa_now_ns();
        if (n == 0) {
            if (c->http.state == H_BODY_EOF && l->cfg.framing == FA_LOAD_FRAMING_HTTP) {
                /* a body without length ends here, and so does the connection */
                if (record_request(l, i, t) < 0)
                    return 1;
                finish(l, i, c->done >= l->cfg.requests_per_conn ? COMPLETED : CLOSED, t);
            } else {
                finish(l, i, !c->got_reply && c->done > 0 ? CLOSED : OTHER, t);
            }
            return 1;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return 0;
        enum outcome o = classify(err);
        if (o == RESET && !c->got_reply && c->done > 0)
            o = CLOSED;
        finish(l, i, o, t);
        return 1;
    }
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
        int sent = send_request(l, i);
        if (sent != 0)
            return sent > 0;
    }

    /* Nothing to read unless epoll said so: input that arrives after epoll
     * polled this socket raises a new edge. This skips the read that would
     * say EAGAIN right after the request went out, and the wake-ups for
     * send-buffer space. */
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)))
        return 0;
    if (l->cfg.framing == FA_LOAD_FRAMING_EOF)
        return read_to_eof(l, i, events);
    return read_framed(l, i, events);
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
    c->req_started = 0;
    c->sent = 0;
    c->deferred = 0;
    c->done = 0;
    c->got = 0;
    http_reset(&c->http);
    c->start_ns = fa_now_ns();
    c->timer_ns = c->start_ns;
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
        if (t < l->slots[i].timer_ns + l->cfg.timeout_ns)
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
        until = l->slots[l->oldest].timer_ns + l->cfg.timeout_ns;
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
        if (l->out_of_memory)
            return -ENOMEM;
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
            if (l->out_of_memory)
                return -ENOMEM;
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
    percentiles(l->request_ns, &l->res.request);
    *out = l->res;
}

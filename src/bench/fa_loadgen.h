/*
 * fa_loadgen.h - a load generator fast enough to stress an acceptor.
 *
 * One thread runs a fixed number of TCP connections through one epoll set of
 * nonblocking sockets. Each connection:
 *   1. socket(); on an IPv4 loopback target, bind to the next source address
 *      of a rotation through 127.0.0.1 .. 127.255.255.254 with
 *      IP_BIND_ADDRESS_NO_PORT, so the port is picked by connect() for the
 *      full 4-tuple and a long run never runs out of ephemeral ports;
 *   2. connect() (the start of both measured intervals);
 *   3. once writable (handshake done: the connect sample), send the request;
 *   4. read the response as its framing says (below); with
 *      requests_per_conn R > 1, send the request again as soon as a response
 *      is complete (back to back, never pipelined), R times in all;
 *   5. close: after the R-th response (the round-trip sample: connect start
 *      to that response's end), or when the server ended the connection.
 *
 * Framing: where a response ends.
 *   FA_LOAD_FRAMING_EOF    at the server's EOF, after a non-empty reply (R
 *                          must be 1: the EOF ends the connection too). The
 *                          behaviour of the load generator before keep-alive,
 *                          byte for byte.
 *   FA_LOAD_FRAMING_FIXED  after exactly response_len bytes (a line echo).
 *   FA_LOAD_FRAMING_HTTP   an HTTP/1.x response: a head up to its blank line
 *                          (CRLF CRLF; a bare LF is accepted), then a body
 *                          framed by the head's fields, names matched
 *                          case-insensitively: Transfer-Encoding whose last
 *                          coding is chunked (chunks, chunk extensions and
 *                          trailers are read through), else Content-Length
 *                          bytes, else up to EOF (the response then ends the
 *                          connection). 1xx interim responses are skipped;
 *                          204 and 304 have no body. A head over
 *                          FA_LOAD_MAX_HEAD bytes, a malformed status line,
 *                          chunk size or Content-Length, two differing
 *                          Content-Lengths, or 101 is a protocol error.
 * With FIXED or HTTP, response bytes beyond a complete response (the server
 * answered what was not asked) are a protocol error.
 *
 * A connection that received its R responses is completed. Every other end
 * is a failure of one kind:
 *   refused  ECONNREFUSED
 *   reset    ECONNRESET or EPIPE (except as "closed" below)
 *   timeout  a response not complete within timeout_ns (the socket is
 *            closed), or the kernel's own ETIMEDOUT. With R = 1 the time
 *            runs from the connect start to the end of the connection; with
 *            R > 1 it applies per request: the first from the connect start,
 *            each later one from the start of its send.
 *   closed   the server ended the connection (EOF, or a reset) between two
 *            responses, after at least one and before the R-th: a kept
 *            connection closed early. (Only with R > 1.)
 *   other    anything else: EOF without a reply or within a response, a
 *            protocol error of the framing, EADDRNOTAVAIL or EAGAIN from
 *            connect() (no port left), EMFILE from socket(), ...
 * Out-of-resource failures (EADDRNOTAVAIL EAGAIN EMFILE ENFILE ENOBUFS
 * ENOMEM) pause new connections for 1 ms, doubling to 64 ms while they
 * persist, so a starved run does not spin through its budget; connections
 * already open go on meanwhile.
 *
 * Requests. Every complete response counts in `requests`, whatever the end
 * of its connection, with a request sample: from the start of its request's
 * send to the end of the response (with EOF framing: the EOF).
 *
 * Connect time. The loop never sleeps while it has connections to start: it
 * starts at most FA_LOAD_HARVEST_EVERY of them, then polls with a zero
 * timeout and starts the next group. That poll only timestamps the finished
 * handshakes and ends the failed ones; sending requests and reading replies
 * wait until the starts pause (all started, or every slot busy), so a burst
 * (concurrency == connections) opens its N connections at the same pace
 * whatever the server does, and its round trips include the time spent
 * starting the rest. A connection's connect sample runs from just before
 * its connect() to the return of the first epoll_wait that reported it
 * writable (or to connect() itself when that returned 0): it overstates
 * the handshake by at most about FA_LOAD_HARVEST_EVERY connect() calls,
 * however many are started, while a handshake that waited for a SYN
 * retransmission shows as such (1 s and more).
 *
 * Bounds: at most `connections` attempts, at most `concurrency` open at once,
 * each request bounded by timeout_ns (so a connection by R timeouts), and no
 * connection started later than max_ns after the run's start; so the run
 * ends within max_ns + R * timeout_ns. max_ns 0 means the bound a run of
 * that shape needs when every request takes its whole timeout and every
 * start waits out the longest back-off:
 * (ceil(connections / concurrency) + 1) * (R * timeout_ns + FA_LOAD_PAUSE_MAX_NS).
 * Only a run starved of ports or fds (paused again and again) gets near it.
 * Every attempt ends in exactly one of the six counters, so
 * attempted == completed + refused + reset + timeout + closed + other.
 *
 * The loop never touches a Python object, so its caller can release the GIL
 * for the whole run. A signal delivered to the thread makes fa_load_run()
 * return -EINTR with the run intact: call it again to continue (the caller
 * checks for KeyboardInterrupt in between).
 *
 * Memory: two uint64_t samples per connection (connect and round trip) and
 * one per complete response (grown as they come), sorted at the end for the
 * percentiles, plus a slot of about 100 bytes per concurrent connection.
 */
#ifndef FA_LOADGEN_H
#define FA_LOADGEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define FA_LOAD_MAX_CONNECTIONS 100000000u
#define FA_LOAD_MAX_CONCURRENCY 1000000u
#define FA_LOAD_MAX_REQUEST (1u << 20)
#define FA_LOAD_MAX_REQUESTS_PER_CONN 1000000000u
#define FA_LOAD_MAX_RESPONSE_LEN (1ull << 40)   /* FIXED framing */
#define FA_LOAD_MAX_HEAD 65536u                 /* HTTP framing: head, or one chunk line */
#define FA_LOAD_FRAMING_EOF 0
#define FA_LOAD_FRAMING_FIXED 1
#define FA_LOAD_FRAMING_HTTP 2
#define FA_LOAD_HARVEST_EVERY 16                /* connects between zero-timeout polls */
#define FA_LOAD_PAUSE_MIN_NS 1000000ull         /* first back-off on a resource error */
#define FA_LOAD_PAUSE_MAX_NS 64000000ull
/* Descriptors beyond the run's own that fa_load_init grows the fd table for:
 * the caller's, opened meanwhile (see fa_fdtable.h). */
#define FA_LOAD_FD_SLACK 64u

typedef struct fa_load_config {
    struct sockaddr_storage target;
    socklen_t target_len;
    uint64_t connections;       /* attempts in the run */
    uint32_t concurrency;       /* open at once; == connections for a burst */
    uint64_t timeout_ns;        /* R == 1: per connection, from connect start to
                                 * its end; R > 1: per request (see above) */
    uint64_t max_ns;            /* start nothing later than this after the run's
                                 * start; 0: derived from the shape (see above) */
    const void *request;        /* borrowed for the run's lifetime */
    size_t request_len;         /* may be 0: the server speaks first (R must
                                 * then be 1) */
    uint64_t requests_per_conn; /* R: responses per connection, >= 1 */
    int framing;                /* FA_LOAD_FRAMING_* */
    uint64_t response_len;      /* FIXED: bytes per response, >= 1; else 0 */
} fa_load_config;

/* Nearest-rank percentiles of a sample set, in nanoseconds; all 0 when the
 * set is empty. */
typedef struct fa_load_percentiles {
    uint64_t p50_ns;
    uint64_t p90_ns;
    uint64_t p99_ns;
    uint64_t max_ns;
    uint64_t samples;
} fa_load_percentiles;

typedef struct fa_load_result {
    uint64_t attempted;
    uint64_t completed;
    uint64_t refused;
    uint64_t reset;
    uint64_t timeout;
    uint64_t other;
    uint64_t closed;            /* the server closed a kept connection early */
    uint64_t requests;          /* complete responses, on every connection */
    uint64_t elapsed_ns;        /* first connect start -> last connection end */
    uint64_t issue_ns;          /* first connect start -> last connect start */
    int source_rotation;        /* 1 if client sockets were bound to 127.x.y.z */
    fa_load_percentiles connect;    /* every connection whose handshake completed */
    fa_load_percentiles rtt;        /* completed connections */
    fa_load_percentiles request;    /* complete responses: send start -> end */
} fa_load_result;

struct fa_load_conn;

typedef struct fa_load {
    fa_load_config cfg;
    int epoll_fd;
    int rotate_source;
    int started;
    struct fa_load_conn *slots;     /* cfg.concurrency of them */
    uint32_t *free_slots;           /* stack of unused slot indices */
    uint32_t free_count;
    uint32_t *deferred;             /* slots with events not acted on yet */
    uint32_t deferred_count;
    uint32_t oldest, newest;        /* open connections in deadline order */
    uint32_t open;
    uint64_t *connect_ns;           /* samples */
    uint64_t *rtt_ns;
    uint64_t *request_ns;           /* one per complete response, grown */
    uint64_t request_cap;
    int out_of_memory;              /* growing request_ns failed: the run stops */
    char *scratch;                  /* replies are read into it and dropped */
    uint64_t launch_until_ns;       /* no connection starts at or after it */
    uint64_t pause_until_ns;
    uint64_t pause_ns;
    uint64_t first_start_ns;
    uint64_t last_start_ns;
    uint64_t last_end_ns;
    fa_load_result res;
} fa_load;

/* Fills cfg->target from a numeric address ("127.0.0.1", "::1"). Returns 0,
 * or -EINVAL if ip is not an address of that family (AF_INET or AF_INET6). */
int fa_load_target(fa_load_config *cfg, int family, const char *ip, uint16_t port,
                   uint32_t scope_id);

/* Copies cfg and allocates everything the run needs. Returns 0 or -errno
 * (-EINVAL for a count, concurrency, timeout, request, requests_per_conn,
 * framing or response_len out of range, or R > 1 with EOF framing or an
 * empty request). On error nothing is left allocated. */
int fa_load_init(fa_load *l, const fa_load_config *cfg);

/* Runs until every connection was started and has ended, or nothing is open
 * once max_ns has passed; returns 0.
 * Returns -EINTR when a signal interrupted the wait (call again to go on),
 * -ENOMEM when the request samples could not grow, or -errno if epoll
 * itself failed (the run cannot go on). */
int fa_load_run(fa_load *l);

/* Fills out with the counters and the percentiles (sorting the samples in
 * place). Call after fa_load_run() returned 0. */
void fa_load_result_get(fa_load *l, fa_load_result *out);

/* Closes every connection still open (not counted) and frees everything. */
void fa_load_destroy(fa_load *l);

#endif /* FA_LOADGEN_H */

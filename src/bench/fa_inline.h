/*
 * fa_inline.h - "c-inline": the machine's ceiling for the benchmark protocol.
 *
 * One thread, one level-triggered epoll set, no threads, queues or Python:
 *   1. the listening socket readable: accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)
 *      until EAGAIN (at most FA_INLINE_ACCEPT_BATCH per wake-up, so clients
 *      already accepted are not starved by a flood), and serve each client
 *      at once (step 2): on loopback its request is almost always in the
 *      socket by then, so it is answered and closed without ever entering
 *      the epoll set; only a client whose read says EAGAIN (or whose
 *      request is still incomplete) is added to it;
 *   2. serving a client: read until "\r\n\r\n" (or EOF, or
 *      FA_INLINE_MAX_HEAD bytes; one read per readiness), then write the
 *      response (waiting for EPOLLOUT if the socket buffer is full) and
 *      close: the same segments on the wire as a Python server's sendall()
 *      and close();
 *   3. the stop fd readable: close every client still open and return.
 * A connection counts as served once the whole response was written.
 *
 * Errors of accept4(): EINTR is retried; ECONNABORTED, EPROTO, EPERM and the
 * network errors Linux reports early skip that connection; EMFILE, ENFILE,
 * ENOBUFS and ENOMEM take the listening socket out of the set for 5 ms,
 * doubling to 1 s while they persist (the queue stays readable, so waiting on
 * it would spin) while open clients are still served, which frees fds;
 * anything else ends the loop with -errno. A client's read or write error
 * closes that client only.
 *
 * A signal delivered to the thread makes fa_inline_run() return -EINTR with
 * the state intact: call it again to go on. Clients that never finish their
 * request stay open until the stop.
 */
#ifndef FA_INLINE_H
#define FA_INLINE_H

#include <stddef.h>
#include <stdint.h>

#define FA_INLINE_ACCEPT_BATCH 1024
#define FA_INLINE_MAX_HEAD 65536
#define FA_INLINE_BACKOFF_MIN_MS 5
#define FA_INLINE_BACKOFF_MAX_MS 1000
#define FA_INLINE_MAX_RESPONSE (64u << 20)

struct fa_inline_conn;

typedef struct fa_inline {
    int listen_fd;              /* borrowed: the caller owns and closes it */
    int stop_fd;                /* borrowed, never read: it stays readable */
    int epoll_fd;
    const char *response;       /* borrowed for the server's lifetime */
    size_t response_len;
    struct fa_inline_conn *conns;   /* indexed by client fd */
    size_t conns_cap;
    uint64_t served;
    uint64_t open;              /* clients accepted and not yet closed */
    int backoff_ms;             /* 0, or the current pause of accepting */
    uint64_t resume_ns;         /* when a paused listening socket returns */
} fa_inline;

/* Sets listen_fd nonblocking and creates the epoll set watching listen_fd and
 * stop_fd. Returns 0 or -errno (-EINVAL for a negative fd or a response over
 * FA_INLINE_MAX_RESPONSE). On error nothing is left allocated. */
int fa_inline_init(fa_inline *s, int listen_fd, const void *response, size_t response_len,
                   int stop_fd);

/* Serves until stop_fd is readable (returns 0), a signal interrupts the wait
 * (-EINTR: call again), or an error the loop cannot recover from (-errno).
 * s->served counts the responses written in full. */
int fa_inline_run(fa_inline *s);

/* Closes every client still open and the epoll set (not listen_fd or
 * stop_fd); frees everything. */
void fa_inline_destroy(fa_inline *s);

#endif /* FA_INLINE_H */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* accept4, SOCK_NONBLOCK, MSG_NOSIGNAL; setup.py defines it too */
#endif
#include "fa_inline.h"
#include "fa_accept_errno.h"
#include "fa_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EVENTS_MAX 256
#define READ_BYTES 4096

typedef struct fa_inline_conn {
    uint8_t open;
    uint8_t watched;        /* in the epoll set */
    uint8_t writing;        /* the request is in; the response is going out */
    uint8_t match;          /* bytes of "\r\n\r\n" matched so far */
    uint32_t head_bytes;    /* request bytes read */
    size_t written;         /* response bytes written */
} fa_inline_conn;

int fa_inline_init(fa_inline *s, int listen_fd, const void *response, size_t response_len,
                   int stop_fd)
{
    memset(s, 0, sizeof *s);
    s->listen_fd = listen_fd;
    s->stop_fd = stop_fd;
    s->epoll_fd = -1;
    s->response = response;
    s->response_len = response_len;
    if (listen_fd < 0 || stop_fd < 0 || listen_fd == stop_fd ||
        response_len > FA_INLINE_MAX_RESPONSE || (response_len > 0 && response == NULL))
        return -EINVAL;

    int flags = fcntl(listen_fd, F_GETFL);
    if (flags < 0)
        return -errno;
    if (!(flags & O_NONBLOCK) && fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;

    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epoll_fd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = stop_fd};
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, stop_fd, &ev) < 0)
        goto fail;
    ev.data.fd = listen_fd;
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) < 0)
        goto fail;
    return 0;

fail:;
    int rc = -errno;
    close(s->epoll_fd);
    s->epoll_fd = -1;
    return rc;
}

void fa_inline_destroy(fa_inline *s)
{
    for (size_t fd = 0; fd < s->conns_cap; fd++)
        if (s->conns[fd].open)
            close((int)fd);
    free(s->conns);
    s->conns = NULL;
    s->conns_cap = 0;
    s->open = 0;
    if (s->epoll_fd >= 0)
        close(s->epoll_fd);
    s->epoll_fd = -1;
}

/* Makes room for client fd in the fd-indexed table. Returns 0 or -ENOMEM. */
static int reserve(fa_inline *s, int fd)
{
    size_t need = (size_t)fd + 1;
    if (need <= s->conns_cap)
        return 0;
    size_t cap = s->conns_cap ? s->conns_cap : 1024;
    while (cap < need)
        cap *= 2;
    fa_inline_conn *c = realloc(s->conns, cap * sizeof *c);
    if (c == NULL)
        return -ENOMEM;
    memset(c + s->conns_cap, 0, (cap - s->conns_cap) * sizeof *c);
    s->conns = c;
    s->conns_cap = cap;
    return 0;
}

static void drop(fa_inline *s, int fd)
{
    /* close() also leaves the epoll set; its only failure, EINTR, still
     * releases the fd on Linux. */
    close(fd);
    s->conns[fd].open = 0;
    s->open--;
}

/* Stops watching the listening socket for a while: out of fds or memory, it
 * stays readable, and watching it would spin. */
static int pause_accepting(fa_inline *s)
{
    s->backoff_ms = s->backoff_ms == 0 ? FA_INLINE_BACKOFF_MIN_MS : s->backoff_ms * 2;
    if (s->backoff_ms > FA_INLINE_BACKOFF_MAX_MS)
        s->backoff_ms = FA_INLINE_BACKOFF_MAX_MS;
    s->resume_ns = fa_now_ns() + (uint64_t)s->backoff_ms * 1000000u;
    struct epoll_event ev = {.events = 0, .data.fd = s->listen_fd};
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, s->listen_fd, &ev) < 0)
        return -errno;
    return 0;
}

static int resume_accepting(fa_inline *s)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s->listen_fd};
    s->resume_ns = 0;
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, s->listen_fd, &ev) < 0)
        return -errno;
    return 0;
}

/* Advances the "\r\n\r\n" matcher over buf; returns 1 once it is complete. */
static int scan_head(fa_inline_conn *c, const char *buf, size_t n)
{
    static const char end[4] = {'\r', '\n', '\r', '\n'};
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == end[c->match])
            c->match++;
        else
            c->match = buf[i] == '\r' ? 1 : 0;
        if (c->match == 4)
            return 1;
    }
    return 0;
}

/* Waits for fd to become readable (EPOLLIN) or writable (EPOLLOUT): adds it
 * to the set the first time, changes its events after. Returns 0 or -errno
 * (ENOMEM, or ENOSPC past fs.epoll.max_user_watches). */
static int watch(fa_inline *s, int fd, uint32_t events)
{
    fa_inline_conn *c = &s->conns[fd];
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(s->epoll_fd, c->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    c->watched = 1;
    return 0;
}

/*
 * Moves client fd on as far as it goes without blocking: read the request,
 * then write the response and close. Called right after accept (on
 * loopback the request is usually there already, so most clients are
 * served without ever entering the epoll set) and again on each event.
 * Returns 0, or -errno if the client had to wait but could not be watched
 * (it was dropped).
 */
static int serve_client(fa_inline *s, int fd)
{
    fa_inline_conn *c = &s->conns[fd];
    int rc;
    if (!c->writing) {
        char buf[READ_BYTES];
        ssize_t n;
        do
            n = read(fd, buf, sizeof buf);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                drop(s, fd);    /* ECONNRESET and the like: nobody to answer */
                return 0;
            }
            n = -1;
        } else {
            c->head_bytes += (uint32_t)n;
        }
        /* A request still coming waits in the level-triggered set: one read
         * per wake-up is enough, and saves the read that would say EAGAIN. */
        if (n < 0 ||
            (n > 0 && !scan_head(c, buf, (size_t)n) && c->head_bytes < FA_INLINE_MAX_HEAD)) {
            if (c->watched)
                return 0;
            if ((rc = watch(s, fd, EPOLLIN)) < 0)
                drop(s, fd);
            return rc;
        }
        c->writing = 1;
    }
    while (c->written < s->response_len) {
        /* No MSG_MORE on purpose: it would let close() send the data and
         * the FIN in one segment, ~20% cheaper on loopback, but the Python
         * servers (sendall, then close) send two. The ceiling must put the
         * same packets on the wire, so the ratio to it measures the server's
         * design, not a different packet sequence. */
        ssize_t n = send(fd, s->response + c->written, s->response_len - c->written,
                         MSG_NOSIGNAL);
        if (n >= 0) {
            c->written += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if ((rc = watch(s, fd, EPOLLOUT)) < 0)
                drop(s, fd);    /* cannot wait for it: give this client up */
            return rc;
        }
        drop(s, fd);            /* EPIPE, ECONNRESET: the client left */
        return 0;
    }
    s->served++;
    drop(s, fd);
    return 0;
}

static int accept_batch(fa_inline *s)
{
    for (int n = 0; n < FA_INLINE_ACCEPT_BATCH; n++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            switch (fa_accept_failure_of(err)) {
            case FA_ACCEPT_EMPTY:
                return 0;
            case FA_ACCEPT_RETRY:
            case FA_ACCEPT_SKIP:
                continue;
            case FA_ACCEPT_PAUSE:
                return pause_accepting(s);
            case FA_ACCEPT_FATAL:
                break;
            }
            return -err;
        }
        if (reserve(s, fd) < 0) {
            close(fd);
            return pause_accepting(s);
        }
        s->conns[fd] = (fa_inline_conn){.open = 1};
        s->open++;
        s->backoff_ms = 0;
        /* Serve it now: most often the request is already in, and the
         * client is answered and closed without an epoll_ctl or a wake-up. */
        if (serve_client(s, fd) < 0) {
            /* ENOMEM or ENOSPC: this client is lost; slow down like on
             * EMFILE. */
            return pause_accepting(s);
        }
    }
    return 0;
}

int fa_inline_run(fa_inline *s)
{
    struct epoll_event events[EVENTS_MAX];
    for (;;) {
        int wait_ms = -1;
        if (s->resume_ns) {
            uint64_t t = fa_now_ns();
            if (t >= s->resume_ns) {
                int rc = resume_accepting(s);
                if (rc < 0)
                    return rc;
            } else {
                wait_ms = (int)((s->resume_ns - t + 999999) / 1000000);
            }
        }
        int n = epoll_wait(s->epoll_fd, events, EVENTS_MAX, wait_ms);
        if (n < 0)
            return -errno;  /* -EINTR included: the caller retries */
        int stop = 0;
        for (int k = 0; k < n; k++) {
            int fd = events[k].data.fd;
            if (fd == s->stop_fd) {
                stop = 1;
            } else if (fd == s->listen_fd) {
                if (s->resume_ns == 0) {
                    int rc = accept_batch(s);
                    if (rc < 0)
                        return rc;
                }
            } else if ((size_t)fd < s->conns_cap && s->conns[fd].open) {
                (void)serve_client(s, fd);  /* a failure dropped that client alone */
            }
        }
        if (stop)
            return 0;
    }
}

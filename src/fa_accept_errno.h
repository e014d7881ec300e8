/*
 * fa_accept_errno.h - what an accept4() failure means for an accept loop.
 *
 * Shared by the accept loop (fa_accept.c) and the c-inline reference server
 * (fa_inline.c), so both treat every errno the same way.
 */
#ifndef FA_ACCEPT_ERRNO_H
#define FA_ACCEPT_ERRNO_H

#include <errno.h>

typedef enum fa_accept_failure {
    FA_ACCEPT_EMPTY,    /* EAGAIN: the kernel queue is drained */
    FA_ACCEPT_RETRY,    /* EINTR: call again, nothing happened */
    FA_ACCEPT_SKIP,     /* that connection is gone or refused: take the next */
    FA_ACCEPT_PAUSE,    /* out of fds or memory: back off, then retry */
    FA_ACCEPT_FATAL,    /* anything else: the loop cannot go on */
} fa_accept_failure;

static inline fa_accept_failure fa_accept_failure_of(int err)
{
    switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
        return FA_ACCEPT_EMPTY;
    case EINTR:
        return FA_ACCEPT_RETRY;
    /* The peer aborted, a firewall rule refused it, or (Linux) a network
     * error was pending on the new socket: accept(2) says to go on. */
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return FA_ACCEPT_SKIP;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
        return FA_ACCEPT_PAUSE;
    default:
        return FA_ACCEPT_FATAL;
    }
}

#endif /* FA_ACCEPT_ERRNO_H */

/* An LD_PRELOAD shim for children/command_server.py (tests/test_reliability.py
 * builds it with gcc -shared and preloads it).
 *
 * Fails accept4() with errno $FA_ACCEPT_ERRNO, in one of two ways:
 *  - while the file named by $FA_FAIL_WHILE exists, every call fails and
 *    the queue is left alone (a resource running out: ENFILE, ENOBUFS...);
 *  - with $FA_DROP_EVERY=N, every Nth connection really accepted is closed
 *    at once and reported as that error instead (how Linux reports a
 *    connection that died in the queue: ECONNABORTED, EPROTO, EPERM). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    static unsigned accepted;       /* one accept loop calls this */
    if (real == NULL)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    const char *e = getenv("FA_ACCEPT_ERRNO");
    int err = e != NULL ? atoi(e) : 0;
    const char *flag = getenv("FA_FAIL_WHILE");
    if (err && flag != NULL && access(flag, F_OK) == 0) {
        errno = err;
        return -1;
    }
    int got = real(fd, addr, len, flags);
    const char *every = getenv("FA_DROP_EVERY");
    if (got >= 0 && err && every != NULL && ++accepted % (unsigned)atoi(every) == 0) {
        close(got);
        errno = err;
        return -1;
    }
    return got;
}

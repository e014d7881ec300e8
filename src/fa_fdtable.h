/*
 * fa_fdtable.h - grow the process's fd table before a burst needs it.
 *
 * Shared by the accept loop (fa_accept.c) and the load generator
 * (fa_loadgen.c): both open many descriptors in a burst, in processes that
 * have other threads.
 */
#ifndef FA_FDTABLE_H
#define FA_FDTABLE_H

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

/*
 * Grows the process's fd table now so that it holds fds descriptors and never
 * grows during a burst. The kernel grows the table by reallocating it, and
 * in a multi-threaded process it then waits for an RCU grace period
 * (synchronize_rcu in expand_fdtable): measured here, accept4 stalled for
 * 8-23 ms at the 256th and 512th fd of a burst while the backlog overflowed,
 * and the bench's client stalled the same way (docs/design.md sections 1 and
 * 9). The kernel never shrinks the table, so this costs one dup and one
 * close. Best effort, within RLIMIT_NOFILE; some_fd is any open descriptor.
 */
static inline void fa_grow_fd_table(int some_fd, uint64_t fds)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        fds > rl.rlim_cur)
        fds = rl.rlim_cur;
    if (fds > INT_MAX)
        fds = INT_MAX;
    if (fds < 2)
        return;
    int fd = fcntl(some_fd, F_DUPFD_CLOEXEC, (int)(fds - 1));
    if (fd >= 0)
        close(fd);
    /* EMFILE/EINVAL: the limit is lower than asked; the table grows later. */
}

#endif /* FA_FDTABLE_H */

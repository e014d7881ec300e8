/*
 * fa_config.h - facts every C file of fastaccept shares: one copy each.
 *
 * The cache line the lock-free structures pad to, the one clock every
 * timestamp and deadline is read from, and the platform guarantees the
 * atomics rely on. The product (src/) and the bench's instruments
 * (src/bench/) both include it.
 */
#ifndef FA_CONFIG_H
#define FA_CONFIG_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* One x86-64/arm64 cache line. Fields that different threads write sit on
 * lines of their own so they never invalidate each other's (false sharing). */
#define FA_CACHE_LINE 64

_Static_assert(sizeof(_Atomic uint64_t) == 8 && ATOMIC_LLONG_LOCK_FREE == 2,
               "fastaccept needs lock-free 64-bit atomics");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "fastaccept needs lock-free 32-bit atomics");

/* CLOCK_MONOTONIC in ns: accept times, queue waits, deadlines, naps. A vDSO
 * call (no syscall) on Linux, so cheap enough per connection. */
static inline uint64_t fa_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif /* FA_CONFIG_H */

/*
 * fa_park.h - sleeping and waking around the ring, without lost wake-ups.
 *
 * Consumers (workers) that find the ring empty park on a LIFO stack, each on
 * its own futex word. The most recently parked worker is woken first: its
 * stack and caches are the warmest, and the workers at the bottom stay asleep
 * when there is little work, so no more workers run than there is work.
 *
 * Wake-up protocol (a Dekker handshake; both sides use seq_cst fences):
 *  consumer: push self on the stack, parked++ (under lot->lock)
 *            fence(seq_cst); pop again; if still empty, futex_wait(word == 0)
 *  producer: push entry; fence(seq_cst); if parked > 0, wake one
 * Either the consumer's second pop sees the entry, or the producer sees
 * parked > 0; never neither. A waker removes the waiter from the stack before
 * waking it, so a sleeping worker gets at most one wake syscall, and a
 * producer that finds parked == 0 makes no syscall at all.
 *
 * A woken consumer that pops an entry and still sees work in the ring wakes
 * the next parked worker (chain wake), so the producer pays for one wake per
 * batch and workers come up only while there is work for them.
 *
 * The producer has its own single-waiter futex, for "ring full" and for its
 * naps (fa_nap): consumers wake it only when it has announced that it waits,
 * a napping producer only when a pop leaves the ring empty.
 *
 * What runs once per connection (the checks before a wake, a pop that finds
 * work) is inline here; what sleeps or takes the lock is in fa_park.c.
 * Every timed wait runs to an absolute CLOCK_MONOTONIC deadline, so a
 * spurious futex return never restarts the whole timeout.
 */
#ifndef FA_PARK_H
#define FA_PARK_H

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fa_config.h"
#include "fa_ring.h"

typedef struct fa_waiter {
    _Atomic uint32_t word;          /* 0 parked, 1 woken: the futex word */
    struct fa_waiter *next;         /* guarded by fa_lot.lock */
} fa_waiter;

typedef struct fa_lot {
    pthread_mutex_t lock;           /* guards top; held only for list edits */
    fa_waiter *top;
    _Atomic uint32_t parked;        /* stack size; read lock-free by wakers */
    _Atomic uint32_t closed;        /* no more entries will come */
    _Atomic uint32_t producer_waiting;  /* producer sleeps on space_word */
    _Atomic uint32_t space_word;    /* bumped to wake the producer */
    _Atomic uint32_t producer_napping;  /* producer naps until the ring empties */
    _Atomic uint64_t wake_calls;    /* futex wakes issued to workers */
    _Atomic uint64_t sleeps;        /* futex waits entered by workers */
    int wake_fd;                    /* >= 0: an eventfd the producer sleeps on (in
                                       epoll) while it waits for space, instead of
                                       space_word; set before any pop */
} fa_lot;

/* Sleeps while *word == expected, until deadline_ns (CLOCK_MONOTONIC; 0:
 * no deadline). Returns 0, or -errno of the wait (ETIMEDOUT, EINTR, EAGAIN:
 * the word changed before we slept). */
int fa_futex_wait_until(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns);

static inline void fa_futex_wake(_Atomic uint32_t *word, int count)
{
    /* Cannot fail on a valid private futex address; nothing to handle. */
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

/* The absolute deadline timeout_ns from now; 0 (none) for timeout_ns < 0. */
static inline uint64_t fa_deadline_after(int64_t timeout_ns)
{
    return timeout_ns < 0 ? 0 : fa_now_ns() + (uint64_t)timeout_ns;
}

int fa_lot_init(fa_lot *lot);
void fa_lot_destroy(fa_lot *lot);

/* Relaxed snapshots for stats; never used to decide anything. */
static inline uint32_t fa_lot_parked(fa_lot *lot)
{
    return atomic_load_explicit(&lot->parked, memory_order_relaxed);
}
static inline uint64_t fa_lot_wake_calls(fa_lot *lot)
{
    return atomic_load_explicit(&lot->wake_calls, memory_order_relaxed);
}
static inline uint64_t fa_lot_sleeps(fa_lot *lot)
{
    return atomic_load_explicit(&lot->sleeps, memory_order_relaxed);
}
static inline int fa_lot_is_closed(fa_lot *lot)
{
    return (int)atomic_load_explicit(&lot->closed, memory_order_acquire);
}

/* Takes the most recently parked worker off the stack and wakes it. */
int fa_lot_wake_top(fa_lot *lot);

/* Wakes the most recently parked worker, if any. Returns 1 if one was woken. */
static inline int fa_lot_wake_one(fa_lot *lot)
{
    /* pairs with the fence in fa_pop_wait: our push is visible to a
     * consumer's second pop, or its parked++ is visible here */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&lot->parked, memory_order_relaxed) == 0)
        return 0;
    return fa_lot_wake_top(lot);
}

/* Marks the lot closed and wakes every parked worker and the producer.
 * Workers then drain what is left in the ring and get -ESHUTDOWN. */
void fa_lot_close(fa_lot *lot);

/* Writes 1 to an eventfd; EAGAIN (the counter is already huge) means a
 * wake-up is pending anyway. */
void fa_eventfd_kick(int fd);

/* Tells a producer waiting for space (fa_wait_space, or an accept loop in
 * epoll_wait on wake_fd) that a slot is free. */
static inline void fa_lot_space_freed(fa_lot *lot)
{
    /* pairs with the fence in fa_wait_space (or the accept loop's) */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&lot->producer_waiting, memory_order_relaxed) &&
        atomic_exchange_explicit(&lot->producer_waiting, 0, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&lot->space_word, 1, memory_order_release);
        if (lot->wake_fd >= 0)
            fa_eventfd_kick(lot->wake_fd);
        else
            fa_futex_wake(&lot->space_word, 1);
    }
}

/* Wakes the producer out of fa_nap, if it naps. */
static inline void fa_lot_wake_napper(fa_lot *lot)
{
    if (atomic_load_explicit(&lot->producer_napping, memory_order_relaxed) &&
        atomic_exchange_explicit(&lot->producer_napping, 0, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&lot->space_word, 1, memory_order_release);
        fa_futex_wake(&lot->space_word, 1);
    }
}

/* A successful pop: let a full-ring producer go on, pass the baton to one
 * more worker while the ring still holds work, and call a napping producer
 * back when the ring has run dry. */
static inline void fa_after_pop(fa_ring *r, fa_lot *lot)
{
    fa_lot_space_freed(lot);        /* its seq_cst fence orders our pop first */
    if (fa_ring_depth(r) > 0)
        fa_lot_wake_one(lot);
    else
        fa_lot_wake_napper(lot);
}

/* Pops one entry without ever sleeping. Returns 0 or -EAGAIN (empty). Lets a
 * caller that holds a lock of its own (Python's GIL) take ready work without
 * giving the lock up and winning it back. */
static inline int fa_try_pop(fa_ring *r, fa_lot *lot, fa_conn *out)
{
    if (fa_ring_pop(r, out) < 0)
        return -EAGAIN;
    fa_after_pop(r, lot);
    return 0;
}

/*
 * Producer side: sleeps up to timeout_ns while the ring still holds work, so
 * that connections arriving meanwhile are taken in one batch afterwards
 * instead of one wake-up each. Returns early when a pop empties the ring
 * (the workers want more), the lot closes, or fa_lot_wake_napper is called.
 * Never sleeps if the ring is already empty. (Dekker handshake with
 * fa_after_pop: either we see the pop that emptied the ring, or that pop
 * sees producer_napping.)
 */
void fa_nap(fa_ring *r, fa_lot *lot, int64_t timeout_ns);

/*
 * Pops one entry, sleeping while the ring is empty.
 * timeout_ns < 0 waits forever. Returns 0 with *out filled, -ETIMEDOUT,
 * -EINTR (a signal arrived: the caller runs its handlers and retries), or
 * -ESHUTDOWN once the lot is closed and the ring is empty.
 */
int fa_pop_wait(fa_ring *r, fa_lot *lot, fa_conn *out, int64_t timeout_ns);

/*
 * Producer side: sleeps until the ring has a free slot, the lot is closed,
 * *abort_flag is set, or timeout_ns passes (< 0: no timeout). Returns 0 when
 * a slot is free, -ESHUTDOWN (closed or aborted), -ETIMEDOUT.
 */
int fa_wait_space(fa_ring *r, fa_lot *lot, _Atomic uint32_t *abort_flag, int64_t timeout_ns);

#endif /* FA_PARK_H */

/*
 * fa_park.c - the slow paths of fa_park.h: everything that sleeps or takes
 * the lot's lock. See fa_park.h for the protocol.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fa_park.h"

#include <limits.h>
#include <time.h>

int fa_futex_wait_until(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    if (deadline_ns != 0) {
        if (fa_now_ns() >= deadline_ns)
            return -ETIMEDOUT;
        ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
        ts.tv_nsec = (long)(deadline_ns % 1000000000u);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (plain
     * FUTEX_WAIT a relative one), so a caller that loops after a spurious
     * return keeps its deadline instead of starting the timeout over. */
    if (syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, expected, tsp, NULL,
                FUTEX_BITSET_MATCH_ANY) == 0)
        return 0;
    return -errno;
}

int fa_lot_init(fa_lot *lot)
{
    int rc = pthread_mutex_init(&lot->lock, NULL);
    if (rc != 0)
        return -rc;
    lot->top = NULL;
    atomic_init(&lot->parked, 0);
    atomic_init(&lot->closed, 0);
    atomic_init(&lot->producer_waiting, 0);
    atomic_init(&lot->space_word, 0);
    atomic_init(&lot->producer_napping, 0);
    atomic_init(&lot->wake_calls, 0);
    atomic_init(&lot->sleeps, 0);
    lot->wake_fd = -1;
    return 0;
}

void fa_eventfd_kick(int fd)
{
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void fa_lot_destroy(fa_lot *lot)
{
    pthread_mutex_destroy(&lot->lock);
}

int fa_lot_wake_top(fa_lot *lot)
{
    pthread_mutex_lock(&lot->lock);
    fa_waiter *w = lot->top;
    if (w != NULL) {
        lot->top = w->next;
        atomic_fetch_sub_explicit(&lot->parked, 1, memory_order_relaxed);
        /* pairs with the acquire load of word in fa_pop_wait */
        atomic_store_explicit(&w->word, 1, memory_order_release);
    }
    pthread_mutex_unlock(&lot->lock);
    if (w == NULL)
        return 0;
    /* The waiter may already have seen word == 1 and returned, so w can be
     * a dead stack address here. FUTEX_WAKE only uses the address as a key
     * and never dereferences it; at worst a later waiter at the same address
     * wakes spuriously and re-checks its word. */
    fa_futex_wake(&w->word, 1);
    atomic_fetch_add_explicit(&lot->wake_calls, 1, memory_order_relaxed);
    return 1;
}

void fa_lot_close(fa_lot *lot)
{
    atomic_store_explicit(&lot->closed, 1, memory_order_seq_cst);
    while (fa_lot_wake_one(lot))
        ;
    atomic_fetch_add_explicit(&lot->space_word, 1, memory_order_release);
    fa_futex_wake(&lot->space_word, INT_MAX);
}

/* Removes w from the stack if a waker has not already done so.
 * Returns 1 if w was still parked, 0 if it had been woken. */
static int lot_cancel(fa_lot *lot, fa_waiter *w)
{
    int found = 0;
    pthread_mutex_lock(&lot->lock);
    for (fa_waiter **p = &lot->top; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            atomic_fetch_sub_explicit(&lot->parked, 1, memory_order_relaxed);
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&lot->lock);
    return found;
}

void fa_nap(fa_ring *r, fa_lot *lot, int64_t timeout_ns)
{
    uint64_t deadline_ns = fa_deadline_after(timeout_ns);
    uint32_t seen = atomic_load_explicit(&lot->space_word, memory_order_acquire);
    atomic_store_explicit(&lot->producer_napping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (fa_ring_depth(r) > 0 && !atomic_load(&lot->closed))
        fa_futex_wait_until(&lot->space_word, seen, deadline_ns);
    atomic_store_explicit(&lot->producer_napping, 0, memory_order_relaxed);
}

int fa_pop_wait(fa_ring *r, fa_lot *lot, fa_conn *out, int64_t timeout_ns)
{
    uint64_t deadline_ns = fa_deadline_after(timeout_ns);
    for (;;) {
        if (fa_ring_pop(r, out) == 0) {
            fa_after_pop(r, lot);
            return 0;
        }
        if (atomic_load_explicit(&lot->closed, memory_order_acquire)) {
            /* closed is set after the producer's last push; one more pop
             * sees that push */
            if (fa_ring_pop(r, out) == 0) {
                fa_after_pop(r, lot);
                return 0;
            }
            return -ESHUTDOWN;
        }
        if (deadline_ns != 0 && fa_now_ns() >= deadline_ns)
            return -ETIMEDOUT;

        fa_waiter w;
        atomic_init(&w.word, 0);
        pthread_mutex_lock(&lot->lock);
        w.next = lot->top;
        lot->top = &w;
        atomic_fetch_add_explicit(&lot->parked, 1, memory_order_relaxed);
        pthread_mutex_unlock(&lot->lock);
        /* pairs with the fence in fa_lot_wake_one (and fa_lot_close) */
        atomic_thread_fence(memory_order_seq_cst);
        if (fa_ring_pop(r, out) == 0) {
            /* The entry is ours now: going round the loop would pop again
             * and lose it. Unpark before fa_after_pop, so a chain wake
             * cannot pick this very waiter. */
            lot_cancel(lot, &w);
            fa_after_pop(r, lot);
            return 0;
        }
        if (atomic_load(&lot->closed)) {
            lot_cancel(lot, &w);
            continue;           /* the loop top drains or sees closed */
        }

        int rc = 0;
        atomic_fetch_add_explicit(&lot->sleeps, 1, memory_order_relaxed);
        /* pairs with the release store in fa_lot_wake_top */
        while (atomic_load_explicit(&w.word, memory_order_acquire) == 0) {
            rc = fa_futex_wait_until(&w.word, 0, deadline_ns);
            if (rc == -ETIMEDOUT || rc == -EINTR)
                break;
            /* 0 or EAGAIN: woken or word changed; the loop re-checks */
        }
        if (atomic_load_explicit(&w.word, memory_order_acquire) == 0 &&
            lot_cancel(lot, &w)) {
            /* Still parked: a true timeout or signal, nobody spent a wake on
             * us. Otherwise a waker got there first: treat it as a wake-up
             * so the entry it was meant for is not stranded. */
            if (fa_ring_pop(r, out) == 0) {
                fa_after_pop(r, lot);
                return 0;
            }
            if (rc == -EINTR)
                return -EINTR;
        }
        /* woken (or the deadline passed): the loop top decides */
    }
}

int fa_wait_space(fa_ring *r, fa_lot *lot, _Atomic uint32_t *abort_flag, int64_t timeout_ns)
{
    uint64_t deadline_ns = fa_deadline_after(timeout_ns);
    for (;;) {
        /* pairs with the release increments in fa_lot_space_freed/close */
        uint32_t seen = atomic_load_explicit(&lot->space_word, memory_order_acquire);
        atomic_store_explicit(&lot->producer_waiting, 1, memory_order_relaxed);
        /* pairs with the fence in fa_lot_space_freed: either we see the
         * slot a pop freed, or that pop sees producer_waiting */
        atomic_thread_fence(memory_order_seq_cst);
        if (!fa_ring_full(r)) {
            atomic_store_explicit(&lot->producer_waiting, 0, memory_order_relaxed);
            return 0;
        }
        if (atomic_load(&lot->closed) || (abort_flag && atomic_load(abort_flag))) {
            atomic_store_explicit(&lot->producer_waiting, 0, memory_order_relaxed);
            return -ESHUTDOWN;
        }
        if (fa_futex_wait_until(&lot->space_word, seen, deadline_ns) == -ETIMEDOUT) {
            atomic_store_explicit(&lot->producer_waiting, 0, memory_order_relaxed);
            return -ETIMEDOUT;
        }
    }
}

/*
 * fa_ring.h - bounded lock-free ring of accepted connections.
 *
 * A multi-producer multi-consumer queue with one sequence number per slot
 * (D. Vyukov's bounded MPMC queue). fastaccept has one producer (the accept
 * loop) and many consumers (the workers); MPMC costs the producer one
 * uncontended CAS and lets tests push from any thread.
 *
 * Algorithm (capacity C, a power of two; slot i starts with seq = i):
 *  1. push: read tail t; slot = t & (C-1). If slot.seq == t the slot is free:
 *     claim it by CAS tail t -> t+1, write the entry, then publish it with
 *     seq = t+1 (release). If slot.seq < t the ring is full (-EAGAIN).
 *     If slot.seq > t another producer won; reload tail and retry.
 *  2. pop: read head h; slot = h & (C-1). If slot.seq == h+1 the slot holds
 *     an entry: claim it by CAS head h -> h+1, copy the entry out, then free
 *     the slot for the next lap with seq = h+C (release). If slot.seq < h+1
 *     the ring is empty (-EAGAIN). Otherwise another consumer won; retry.
 *  3. depth = tail - head, read without a lock: exact when quiescent, an
 *     estimate while pushes and pops are in flight (used for stats and for
 *     "is there more work" hints, never for correctness).
 *
 * Guarantees: each pushed entry is popped exactly once; entries pushed by one
 * producer are popped in push order; no operation blocks or allocates.
 * Sleeping when empty or full is fa_park.h's job, not the ring's.
 */
#ifndef FA_RING_H
#define FA_RING_H

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fa_config.h"


/* Limits of the capacity argument; also enforced by the Python layer. */
#define FA_RING_MIN_CAPACITY 2u
#define FA_RING_MAX_CAPACITY (1u << 24)

/* What a connection brings a worker (fa_conn.kind). */
#define FA_CONN_NEW 0       /* accepted (and, dispatched when readable, readable) */
#define FA_CONN_RESUMED 1   /* given back by a worker, readable again */

/* What the accept loop learned about one connection: one ring entry. */
typedef struct fa_conn {
    int fd;
    socklen_t addrlen;              /* bytes of addr filled by accept4 */
    uint64_t accepted_ns;           /* CLOCK_MONOTONIC at accept4 return */
    uint64_t ready_ns;              /* when it was ready for a worker: its queue wait starts */
    uint32_t kind;                  /* FA_CONN_NEW or FA_CONN_RESUMED */
    uint32_t data_len;              /* bytes at data */
    void *data;                     /* bytes the loop already read from fd, or NULL;
                                       owned by the entry (the popper frees it) */
    struct sockaddr_storage addr;   /* peer address as accept4 returned it */
} fa_conn;

typedef struct fa_ring_slot {
    _Atomic uint64_t seq;
    fa_conn conn;
} fa_ring_slot;

typedef struct fa_ring {
    alignas(FA_CACHE_LINE) _Atomic uint64_t head;   /* next slot to pop */
    alignas(FA_CACHE_LINE) _Atomic uint64_t tail;   /* next slot to push */
    /* Read-mostly fields share the last line. high_water is written only
     * by pushes that raise it, so it rarely dirties the line. */
    alignas(FA_CACHE_LINE) uint64_t mask;
    uint64_t capacity;
    _Atomic uint64_t high_water;
    fa_ring_slot *slots;
} fa_ring;

_Static_assert(offsetof(fa_ring, tail) - offsetof(fa_ring, head) >= FA_CACHE_LINE,
               "head and tail must live on different cache lines");
_Static_assert(offsetof(fa_ring, mask) - offsetof(fa_ring, tail) >= FA_CACHE_LINE,
               "tail must not share a cache line with the read-mostly fields");

static inline int fa_ring_capacity_ok(uint64_t capacity)
{
    return capacity >= FA_RING_MIN_CAPACITY && capacity <= FA_RING_MAX_CAPACITY &&
           (capacity & (capacity - 1)) == 0;
}

/* Returns 0, -EINVAL (capacity not a power of two in range) or -ENOMEM. */
static inline int fa_ring_init(fa_ring *r, uint64_t capacity)
{
    if (!fa_ring_capacity_ok(capacity))
        return -EINVAL;
    /* Slots are not cache-line aligned on purpose: one slot is ~150 bytes,
     * so neighbours share at most the edge line, and padding to 192 would
     * cost 25% more memory for a contention the head/tail CAS dominates. */
    fa_ring_slot *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL)
        return -ENOMEM;
    for (uint64_t i = 0; i < capacity; i++)
        atomic_init(&slots[i].seq, i);
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->high_water, 0);
    r->mask = capacity - 1;
    r->capacity = capacity;
    r->slots = slots;
    return 0;
}


static inline uint64_t fa_ring_depth(fa_ring *r)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* head read first, so tail >= head except for a racing pop after the
     * tail load; clamp so callers never see a wrapped huge number. */
    return tail > head ? tail - head : 0;
}

/* Returns 1 when a push now would fail with -EAGAIN. Exact for the only
 * producer, a hint with several. Use it, not depth == capacity, to decide
 * whether there is room: a pop moves head before it has copied its entry out
 * and freed the slot, so depth can show a free slot that a push still finds
 * taken. */
static inline int fa_ring_full(fa_ring *r)
{
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* pairs with the release store of seq in fa_ring_pop (slot freed) */
    uint64_t seq = atomic_load_explicit(&r->slots[t & r->mask].seq, memory_order_acquire);
    return (int64_t)(seq - t) < 0;
}

/* Most entries the ring has held at once since init. */
static inline uint64_t fa_ring_high_water_get(fa_ring *r)
{
    return atomic_load_explicit(&r->high_water, memory_order_relaxed);
}

/* Returns 0, or -EAGAIN when the ring is full. */
static inline int fa_ring_push(fa_ring *r, const fa_conn *c)
{
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    fa_ring_slot *s;
    for (;;) {
        s = &r->slots[t & r->mask];
        /* pairs with the release store of seq in fa_ring_pop (slot freed) */
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - t);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->tail, &t, t + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (diff < 0) {
            return -EAGAIN;
        } else {
            t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        }
    }
    s->conn = *c;
    /* pairs with the acquire load of seq in fa_ring_pop: the entry is
     * visible before the slot reads as full */
    atomic_store_explicit(&s->seq, t + 1, memory_order_release);

    uint64_t depth = t + 1 - atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t hw = atomic_load_explicit(&r->high_water, memory_order_relaxed);
    while (depth > hw && depth <= r->capacity &&
           !atomic_compare_exchange_weak_explicit(&r->high_water, &hw, depth,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    return 0;
}

/* Returns 0 with *out filled, or -EAGAIN when the ring is empty. */
static inline int fa_ring_pop(fa_ring *r, fa_conn *out)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    fa_ring_slot *s;
    for (;;) {
        s = &r->slots[h & r->mask];
        /* pairs with the release store of seq in fa_ring_push (entry written) */
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - (h + 1));
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->head, &h, h + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (diff < 0) {
            return -EAGAIN;
        } else {
            h = atomic_load_explicit(&r->head, memory_order_relaxed);
        }
    }
    *out = s->conn;
    /* pairs with the acquire load of seq in fa_ring_push: our copy is done
     * before a producer may overwrite the slot on the next lap */
    atomic_store_explicit(&s->seq, h + r->capacity, memory_order_release);
    return 0;
}

/* Frees the slots. With close_fds, every fd still queued is closed first, so
 * a ring of accepted connections torn down early leaks no descriptor.
 * Single-threaded use only. */
static inline void fa_ring_destroy(fa_ring *r, int close_fds)
{
    fa_conn c;
    if (r->slots == NULL)
        return;
    while (fa_ring_pop(r, &c) == 0) {
        if (close_fds)
            close(c.fd);
        free(c.data);
    }
    free(r->slots);
    r->slots = NULL;
}

#endif /* FA_RING_H */

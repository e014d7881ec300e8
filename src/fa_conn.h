/*
 * fa_conn.h - connections that wait in C, and the way back to them.
 *
 * A connection that has nothing for a worker yet waits in the accept loop's
 * own epoll set instead of in a thread: a new one until its first bytes
 * arrive (dispatch "readable"), or first until its PROXY header is in
 * (behind a load balancer), one a handler gave back (KEEP) until its next
 * request. While it waits it costs one slot of this table (about 170
 * bytes, with its peer address) and an epoll registration in the kernel,
 * and it is closed by C when its list's deadline passes.
 *
 * The table (fa_conns) belongs to the accept loop's thread alone: nothing
 * here is atomic. It is indexed by descriptor number, which the kernel
 * keeps dense, and grows by doubling; epoll events carry the descriptor
 * and the slot's generation, never a pointer, so growing it is safe.
 *
 * Deadlines: the connections of one list all have the same timeout (idle,
 * an HTTP head's, a PROXY header's), so the order they join it in is the
 * order their deadlines come in. A doubly linked list in that order (new
 * waiters at the tail) is sorted by construction: adding, removing and
 * finding the next deadline are O(1), whatever the number of waiting
 * connections, and expiring k of them costs O(k). Another list in the same
 * slots holds connections that are ready for a worker while the ring is
 * full (FIFO, no deadline).
 *
 * The way back (fa_backq): a worker that keeps a connection pushes its
 * descriptor into a bounded lock-free queue (Vyukov's MPMC ring, as
 * fa_ring.h, with 64-bit entries) that only the accept loop drains; the
 * loop then re-arms it in its epoll set. Workers never touch the table or
 * the epoll set, so the loop stays the only producer of the ring and the
 * only owner of every waiting connection. Its capacity is at least
 * max_connections, and every open connection is in one place at a time,
 * so a push cannot fail; if it ever did, the worker closes the connection.
 */
#ifndef FA_CONN_H
#define FA_CONN_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "fa_config.h"
#include "fa_http.h"

/* What a slot holds. */
enum fa_slot_state {
    FA_SLOT_FREE = 0,       /* no connection of ours waits on this descriptor */
    FA_SLOT_WAITING,        /* in the epoll set, armed, on the idle or head list */
    FA_SLOT_READY,          /* readable, waiting for ring space, on the ready list */
};

/* Which list a waiting slot is on (fa_slot.list). */
enum fa_slot_list {
    FA_ON_IDLE = 0,         /* nothing of a request yet: the idle deadline */
    FA_ON_HEAD,             /* an HTTP request head on its way: the head deadline */
    FA_ON_PROXY,            /* its PROXY protocol header to come: the header deadline */
};

typedef struct fa_slot {
    int32_t prev, next;             /* neighbours on its list (descriptors), -1: none */
    uint32_t gen;                   /* bumped every time the slot is taken */
    uint8_t state;                  /* enum fa_slot_state */
    uint8_t kept;                   /* it came back from a worker (KEEP) */
    uint8_t waited;                 /* it waited here (counted as dispatched) */
    uint8_t list;                   /* enum fa_slot_list, while WAITING */
    socklen_t addrlen;
    /* HTTP: the bytes of a request head read so far (NULL when none), and
     * the parser's progress through them; on the PROXY list: the bytes of
     * the PROXY header taken from the socket so far */
    char *buf;
    uint32_t buf_len, buf_cap;
    fa_http_scan scan;
    void *req;                      /* HTTP: a complete request (fa_http_req) while READY */
    uint64_t deadline_ns;           /* when an idle wait ends (0: never) */
    uint64_t accepted_ns;           /* accept4's return, for the ring entry */
    struct sockaddr_storage addr;   /* the peer, as accept4 returned it */
} fa_slot;

typedef struct fa_list {
    int32_t head, tail;             /* -1 when empty */
    uint32_t len;
} fa_list;

typedef struct fa_conns {
    fa_slot *slots;
    uint32_t cap;                   /* slots allocated */
    fa_list idle;                   /* WAITING with nothing yet, by idle deadline */
    fa_list head;                   /* WAITING in an HTTP head, by head deadline */
    fa_list proxy;                  /* WAITING for a PROXY header, by header deadline */
    fa_list ready;                  /* READY, first come first served */
} fa_conns;

/* Returns 0 or -ENOMEM. initial is a size hint (descriptors). */
int fa_conns_init(fa_conns *t, uint32_t initial);

/* Frees the table; closes nothing (the caller closes what still waits). */
void fa_conns_destroy(fa_conns *t);

/* The slot of fd, growing the table to hold it. NULL for a negative fd or
 * when memory runs out. */
fa_slot *fa_conns_slot(fa_conns *t, int fd);

/* The slot of fd if the table holds one, else NULL (no growth). */
static inline fa_slot *fa_conns_peek(fa_conns *t, int fd)
{
    return fd >= 0 && (uint32_t)fd < t->cap ? &t->slots[fd] : NULL;
}

/* Appends fd to l (its slot must be on no list). */
void fa_list_push(fa_conns *t, fa_list *l, int fd);
/* Removes fd from l (its slot must be on it). */
void fa_list_remove(fa_conns *t, fa_list *l, int fd);
/* Removes and returns l's first descriptor, or -1. */
int fa_list_pop(fa_conns *t, fa_list *l);

/* The earliest deadline of list l, or 0 when nothing on it has one. Every
 * slot on a list has a deadline or none does (one timeout per list), so
 * the head of the list tells. */
static inline uint64_t fa_list_next_deadline(fa_conns *t, fa_list *l)
{
    return l->head >= 0 ? t->slots[l->head].deadline_ns : 0;
}

/* The list of waiting slots `list` (enum fa_slot_list) names. */
static inline fa_list *fa_conns_list(fa_conns *t, int list)
{
    return list == FA_ON_HEAD ? &t->head : list == FA_ON_PROXY ? &t->proxy : &t->idle;
}

/* Connections armed in the epoll set, waiting for input (not the ready ones). */
static inline uint32_t fa_conns_armed(const fa_conns *t)
{
    return t->idle.len + t->head.len + t->proxy.len;
}

static inline uint64_t fa_deadline_min(uint64_t a, uint64_t b)
{
    return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

/* The earliest deadline of all, or 0 for none. */
static inline uint64_t fa_conns_next_deadline(fa_conns *t)
{
    return fa_deadline_min(fa_deadline_min(fa_list_next_deadline(t, &t->idle),
                                           fa_list_next_deadline(t, &t->head)),
                           fa_list_next_deadline(t, &t->proxy));
}

/* The 64-bit epoll cookie of a waiting connection: its descriptor and its
 * slot's generation, so an event that outlived its connection is seen as
 * stale and dropped. */
static inline uint64_t fa_conn_cookie(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | (uint32_t)fd;
}
static inline int fa_cookie_fd(uint64_t cookie) { return (int)(uint32_t)cookie; }
static inline uint32_t fa_cookie_gen(uint64_t cookie) { return (uint32_t)(cookie >> 32); }

/* ---- the way back: workers -> the accept loop ---- */

typedef struct fa_backq_slot {
    _Atomic uint64_t seq;
    int64_t fd;
    void *data;                     /* bytes already read past its last request */
    uint32_t len;
} fa_backq_slot;

typedef struct fa_backq {
    alignas(FA_CACHE_LINE) _Atomic uint64_t head;
    alignas(FA_CACHE_LINE) _Atomic uint64_t tail;
    alignas(FA_CACHE_LINE) uint64_t mask;
    fa_backq_slot *slots;
} fa_backq;

/* capacity is rounded up to a power of two. Returns 0 or -ENOMEM/-EINVAL. */
int fa_backq_init(fa_backq *q, uint64_t capacity);
void fa_backq_destroy(fa_backq *q);
/* Returns 0, or -EAGAIN when full. Any thread. data (len bytes, malloc'd,
 * may be NULL) goes with fd: bytes a worker read past the request it served
 * (the start of the next one), now the loop's to use and free. */
int fa_backq_push(fa_backq *q, int fd, void *data, uint32_t len);
/* Returns a descriptor, or -1 when empty, with its bytes in *data, *len.
 * Any thread (the loop, or a worker that found the loop gone). */
int fa_backq_pop(fa_backq *q, void **data, uint32_t *len);

#endif /* FA_CONN_H */

/*
 * fa_conn.c - the table of connections waiting in C, its lists, and the
 * queue workers give connections back through. See fa_conn.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fa_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FA_CONNS_MIN 64u

int fa_conns_init(fa_conns *t, uint32_t initial)
{
    memset(t, 0, sizeof *t);
    t->idle.head = t->idle.tail = -1;
    t->head.head = t->head.tail = -1;
    t->proxy.head = t->proxy.tail = -1;
    t->ready.head = t->ready.tail = -1;
    uint32_t cap = FA_CONNS_MIN;
    while (cap < initial && cap < (1u << 30))
        cap <<= 1;
    t->slots = calloc(cap, sizeof *t->slots);
    if (t->slots == NULL)
        return -ENOMEM;
    t->cap = cap;
    for (uint32_t i = 0; i < cap; i++)
        t->slots[i].prev = t->slots[i].next = -1;
    return 0;
}

void fa_conns_destroy(fa_conns *t)
{
    for (uint32_t i = 0; t->slots != NULL && i < t->cap; i++)
        free(t->slots[i].buf);
    free(t->slots);
    t->slots = NULL;
    t->cap = 0;
}

fa_slot *fa_conns_slot(fa_conns *t, int fd)
{
    if (fd < 0)
        return NULL;
    if ((uint32_t)fd >= t->cap) {
        uint32_t cap = t->cap;
        while (cap <= (uint32_t)fd) {
            if (cap >= (1u << 30))
                return NULL;
            cap <<= 1;
        }
        fa_slot *grown = realloc(t->slots, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        memset(grown + t->cap, 0, (size_t)(cap - t->cap) * sizeof *grown);
        for (uint32_t i = t->cap; i < cap; i++)
            grown[i].prev = grown[i].next = -1;
        t->slots = grown;
        t->cap = cap;
    }
    return &t->slots[fd];
}

void fa_list_push(fa_conns *t, fa_list *l, int fd)
{
    fa_slot *s = &t->slots[fd];
    s->next = -1;
    s->prev = l->tail;
    if (l->tail >= 0)
        t->slots[l->tail].next = fd;
    else
        l->head = fd;
    l->tail = fd;
    l->len++;
}

void fa_list_remove(fa_conns *t, fa_list *l, int fd)
{
    fa_slot *s = &t->slots[fd];
    if (s->prev >= 0)
        t->slots[s->prev].next = s->next;
    else
        l->head = s->next;
    if (s->next >= 0)
        t->slots[s->next].prev = s->prev;
    else
        l->tail = s->prev;
    s->prev = s->next = -1;
    l->len--;
}

int fa_list_pop(fa_conns *t, fa_list *l)
{
    int fd = l->head;
    if (fd >= 0)
        fa_list_remove(t, l, fd);
    return fd;
}

int fa_backq_init(fa_backq *q, uint64_t capacity)
{
    uint64_t cap = 2;
    if (capacity > ((uint64_t)1 << 32))
        return -EINVAL;
    while (cap < capacity)
        cap <<= 1;
    q->slots = calloc(cap, sizeof *q->slots);
    if (q->slots == NULL)
        return -ENOMEM;
    for (uint64_t i = 0; i < cap; i++)
        atomic_init(&q->slots[i].seq, i);
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    q->mask = cap - 1;
    return 0;
}

void fa_backq_destroy(fa_backq *q)
{
    free(q->slots);
    q->slots = NULL;
}

/* The algorithm of fa_ring_push/fa_ring_pop (see fa_ring.h), with the
 * descriptor as the whole entry. */
int fa_backq_push(fa_backq *q, int fd, void *data, uint32_t len)
{
    uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    fa_backq_slot *s;
    for (;;) {
        s = &q->slots[t & q->mask];
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - t);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->tail, &t, t + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (diff < 0) {
            return -EAGAIN;
        } else {
            t = atomic_load_explicit(&q->tail, memory_order_relaxed);
        }
    }
    s->fd = fd;
    s->data = data;
    s->len = len;
    atomic_store_explicit(&s->seq, t + 1, memory_order_release);
    return 0;
}

int fa_backq_pop(fa_backq *q, void **data, uint32_t *len)
{
    uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    fa_backq_slot *s;
    for (;;) {
        s = &q->slots[h & q->mask];
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - (h + 1));
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->head, &h, h + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (diff < 0) {
            return -1;
        } else {
            h = atomic_load_explicit(&q->head, memory_order_relaxed);
        }
    }
    int fd = (int)s->fd;
    *data = s->data;
    *len = s->len;
    atomic_store_explicit(&s->seq, h + q->mask + 1, memory_order_release);
    return fd;
}

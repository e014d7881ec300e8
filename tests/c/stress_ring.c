/*
 * stress_ring.c - standalone stress test of src/: the ring, the parking lot
 * and the accept loop, meant to run under ThreadSanitizer and
 * AddressSanitizer+UBSan as well as in a plain optimised build.
 *
 * Build (tests/test_c_stress.py and `make debug` do this):
 *   gcc -std=c11 -O1 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE -Isrc \
 *       tests/c/stress_ring.c src/fa_accept.c src/fa_park.c src/fa_conn.c \
 *       src/fa_http.c src/fa_proxy.c -o stress_ring
 * plus -fsanitize=thread -Wno-tsan (GCC cannot instrument standalone fences
 * and says so; TSan treats them as no-ops, and no data access relies on them
 * for happens-before), or -fsanitize=address,undefined.
 *
 * Scenarios (all run by default, pick with -s):
 *  a  1 producer, N consumers, M items through a small ring: every item is
 *     delivered exactly once and intact, each consumer sees the producer's
 *     order, the producer never sleeps forever on a full ring and a push
 *     right after fa_wait_space said "room" succeeds, a producer napping
 *     without a timeout until the ring runs dry is always called back (the
 *     nap handshake loses no wake-up), and closing
 *     the lot with items still queued lets the consumers drain them and then
 *     return -ESHUTDOWN.
 *  b  lost wake-up hunt: rounds of "consumers park, the producer pushes one
 *     item (or two, relying on the chain wake)"; every item must be consumed
 *     within a bound, and a close must wake every parked consumer. Then a
 *     timed wait under a stream of spurious futex returns ends near its
 *     deadline (b2).
 *  c  the accept loop on a real loopback listener: every connection is
 *     accepted exactly once with its peer address, stop drains the kernel
 *     queue, abort returns while the loop waits on a full ring, the shed
 *     policy answers and closes what finds the ring full, and no fd leaks.
 *  d  connections waiting in C: dispatch when readable, workers giving
 *     connections back (KEEP) that the loop re-arms, a small ring so ready
 *     connections wait for space, clients that never send (closed at the
 *     idle deadline, a FIN), that reset, that close: every request is
 *     answered once and in order, a connection is never in two workers at
 *     once, never lost, never closed twice (no fd leaks, no fd reused under
 *     a worker: its next request would be another connection's).
 *
 * Any violation prints "FAIL: ..." to stderr and exits 1. A watchdog thread
 * turns a hang (no progress for -T seconds) into a failure with a message,
 * since a lost wake-up shows up as a thread that never returns.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fa_accept.h"
#include "fa_park.h"
#include "fa_ring.h"

/* ------------------------------------------------------------------ */
/* options */

static struct {
    const char *scenarios;
    uint64_t items;         /* a: items through the ring */
    unsigned consumers;     /* a, b, c: consumer threads */
    uint64_t capacity;      /* a: ring capacity */
    unsigned rounds;        /* b: park/push rounds */
    unsigned conns;         /* c: connections of the running phase */
    unsigned timeout_s;     /* bound on any single wait, and on no progress */
    uint64_t seed;
    int verbose;
} opt = {"abcd", 2000000, 4, 64, 20000, 2000, 20, 0, 0};

/* ------------------------------------------------------------------ */
/* failure, progress and the watchdog */

static const char *_Atomic g_phase = "start";
static _Atomic uint64_t g_progress;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: [%s] ", atomic_load(&g_phase));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    /* Other threads may be stuck for good (that can be the failure being
     * reported): do not wait for them, and skip exit-time leak checks that
     * would only report their stacks. */
    _exit(1);
}

static void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "[%s] ", atomic_load(&g_phase));
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

static void progress(void)
{
    atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    uint64_t last = atomic_load(&g_progress);
    uint64_t last_change_ns = fa_now_ns();
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        uint64_t now = fa_now_ns(), p = atomic_load(&g_progress);
        if (p != last) {
            last = p;
            last_change_ns = now;
        } else if (now - last_change_ns > (uint64_t)opt.timeout_s * 1000000000u) {
            fail("watchdog: no progress for %u s; a thread is stuck (lost wake-up?)",
                 opt.timeout_s);
        }
    }
    return NULL;
}

static uint64_t deadline_after_s(unsigned s)
{
    return fa_now_ns() + (uint64_t)s * 1000000000u;
}

/* Joins t, failing if it has not returned within opt.timeout_s. */
static void join_bounded(pthread_t t, const char *what, unsigned idx)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += opt.timeout_s;
    int rc = pthread_timedjoin_np(t, NULL, &ts);
    if (rc == ETIMEDOUT)
        fail("%s %u did not return within %u s (lost wake-up?)", what, idx, opt.timeout_s);
    if (rc != 0)
        fail("pthread_timedjoin_np(%s %u): %s", what, idx, strerror(rc));
}

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0)
        fail("pthread_create: %s", strerror(rc));
}

/* xorshift64*: cheap per-thread randomness, reproducible from -S. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static uint64_t seed_for(unsigned stream)
{
    uint64_t s = opt.seed * 0x9E3779B97F4A7C15ull + stream + 1;
    return s ? s : 1;
}

/* A fake connection whose every field derives from seq, so a torn or stale
 * copy out of a slot is caught. */
static void fake_conn(fa_conn *c, uint64_t seq)
{
    memset(c, 0, sizeof *c);
    c->fd = (int)seq;
    c->accepted_ns = seq * 0x9E3779B97F4A7C15ull;
    c->addrlen = (socklen_t)(seq % 251);
    memcpy(&c->addr, &seq, sizeof seq);
    memcpy((char *)&c->addr + sizeof c->addr - sizeof seq, &seq, sizeof seq);
}

static uint64_t check_fake_conn(const fa_conn *c)
{
    uint64_t seq = (uint64_t)(uint32_t)c->fd, head, tail;
    memcpy(&head, &c->addr, sizeof head);
    memcpy(&tail, (const char *)&c->addr + sizeof c->addr - sizeof tail, sizeof tail);
    if (c->accepted_ns != seq * 0x9E3779B97F4A7C15ull || c->addrlen != seq % 251 ||
        head != seq || tail != seq)
        fail("entry %llu torn: accepted_ns=%llx addrlen=%u addr=%llu..%llu",
             (unsigned long long)seq, (unsigned long long)c->accepted_ns,
             (unsigned)c->addrlen, (unsigned long long)head, (unsigned long long)tail);
    return seq;
}

/* ------------------------------------------------------------------ */
/* a: 1 producer, N consumers, M items through a small ring */

typedef struct {
    fa_ring ring;
    fa_lot lot;
    _Atomic uint8_t *seen;
    _Atomic uint64_t delivered;
} a_shared;

typedef struct {
    a_shared *sh;
    unsigned idx;
    uint64_t got, timeouts;
    int end_rc;
} a_consumer;

static void *a_consumer_main(void *arg)
{
    a_consumer *me = arg;
    a_shared *sh = me->sh;
    uint64_t rs = seed_for(100 + me->idx);
    int64_t last = -1;
    for (;;) {
        /* Mix forever, zero, short and long timeouts so both the timed and
         * the untimed futex path, and the cancel-after-timeout path, run. */
        static const int64_t timeouts_ns[] = {-1, 0, 20 * 1000, 1000 * 1000, -1};
        int64_t t = timeouts_ns[rnd(&rs) % (sizeof timeouts_ns / sizeof timeouts_ns[0])];
        fa_conn c;
        int rc = fa_pop_wait(&sh->ring, &sh->lot, &c, t);
        if (rc == -ETIMEDOUT) {
            if (t < 0)
                fail("consumer %u: fa_pop_wait without timeout returned -ETIMEDOUT", me->idx);
            me->timeouts++;
            continue;
        }
        if (rc == -EINTR)
            continue;
        if (rc == -ESHUTDOWN)
            break;
        if (rc != 0)
            fail("consumer %u: fa_pop_wait returned %d", me->idx, rc);
        uint64_t seq = check_fake_conn(&c);
        if (seq >= opt.items)
            fail("consumer %u: popped item %llu, never pushed", me->idx,
                 (unsigned long long)seq);
        if ((int64_t)seq <= last)
            fail("consumer %u: item %llu after item %lld: producer order lost",
                 me->idx, (unsigned long long)seq, (long long)last);
        last = (int64_t)seq;
        if (atomic_exchange_explicit(&sh->seen[seq], 1, memory_order_relaxed))
            fail("consumer %u: item %llu delivered twice", me->idx, (unsigned long long)seq);
        me->got++;
        atomic_fetch_add_explicit(&sh->delivered, 1, memory_order_relaxed);
        progress();
    }
    /* Closed and drained: every further call must say so at once. */
    fa_conn c;
    int rc = fa_pop_wait(&sh->ring, &sh->lot, &c, -1);
    if (rc != -ESHUTDOWN)
        fail("consumer %u: fa_pop_wait after shutdown returned %d", me->idx, rc);
    me->end_rc = -ESHUTDOWN;
    return NULL;
}

static void scenario_a(void)
{
    atomic_store(&g_phase, "a");
    uint64_t t0 = fa_now_ns();
    a_shared sh;
    int rc = fa_ring_init(&sh.ring, opt.capacity);
    if (rc < 0)
        fail("fa_ring_init(%llu): %d", (unsigned long long)opt.capacity, rc);
    if ((rc = fa_lot_init(&sh.lot)) < 0)
        fail("fa_lot_init: %d", rc);
    sh.seen = calloc(opt.items, sizeof *sh.seen);
    if (sh.seen == NULL)
        fail("calloc(%llu)", (unsigned long long)opt.items);
    atomic_init(&sh.delivered, 0);

    a_consumer *cons = calloc(opt.consumers, sizeof *cons);
    pthread_t *tids = calloc(opt.consumers, sizeof *tids);
    if (cons == NULL || tids == NULL)
        fail("calloc");
    for (unsigned i = 0; i < opt.consumers; i++) {
        cons[i] = (a_consumer){.sh = &sh, .idx = i, .end_rc = 1};
        start_thread(&tids[i], a_consumer_main, &cons[i]);
    }

    /* The producer: pushes in small batches and wakes once per batch, like
     * the accept loop; on a full ring it first wakes a consumer (the queued
     * batch must not wait for a wake that only comes after the sleep), then
     * sleeps in fa_wait_space. */
    uint64_t rs = seed_for(1);
    uint64_t full_waits = 0, wait_timeouts = 0, naps = 0;
    unsigned batch = 0, batch_len = 1;
    for (uint64_t seq = 0; seq < opt.items; seq++) {
        fa_conn c;
        fake_conn(&c, seq);
        int just_waited = 0;
        while (fa_ring_push(&sh.ring, &c) < 0) {
            /* The only producer was told there is room: the push must
             * succeed, or the accept loop would accept a connection it
             * cannot queue. */
            if (just_waited)
                fail("fa_wait_space returned 0 but the push of item %llu failed",
                     (unsigned long long)seq);
            fa_lot_wake_one(&sh.lot);
            full_waits++;
            int64_t t = rnd(&rs) % 4 == 0 ? 1000 * 1000 : -1;
            rc = fa_wait_space(&sh.ring, &sh.lot, NULL, t);
            if (rc == -ETIMEDOUT && t >= 0)
                wait_timeouts++;
            else if (rc != 0)
                fail("fa_wait_space(timeout %lld) returned %d at item %llu", (long long)t,
                     rc, (unsigned long long)seq);
            just_waited = rc == 0;
        }
        if (++batch >= batch_len) {
            fa_lot_wake_one(&sh.lot);
            batch = 0;
            batch_len = 1 + (unsigned)(rnd(&rs) % 8);
            /* Nap after a batch's wake, as the accept loop does; half the
             * naps have no timeout, so only the consumer that empties the
             * ring can end them: a lost wake-up hangs here. */
            if (rnd(&rs) % 4 == 0) {
                naps++;
                fa_nap(&sh.ring, &sh.lot, rnd(&rs) % 2 ? -1 : 50 * 1000);
            }
        }
        progress();
    }
    fa_lot_wake_one(&sh.lot);
    /* Closing right after the last push, with items likely still queued:
     * consumers must drain them before they see -ESHUTDOWN. */
    fa_lot_close(&sh.lot);

    for (unsigned i = 0; i < opt.consumers; i++)
        join_bounded(tids[i], "consumer", i);

    uint64_t total = 0, timeouts = 0;
    for (unsigned i = 0; i < opt.consumers; i++) {
        if (cons[i].end_rc != -ESHUTDOWN)
            fail("consumer %u ended with %d, not -ESHUTDOWN", i, cons[i].end_rc);
        total += cons[i].got;
        timeouts += cons[i].timeouts;
    }
    for (uint64_t seq = 0; seq < opt.items; seq++)
        if (!atomic_load_explicit(&sh.seen[seq], memory_order_relaxed))
            fail("item %llu never delivered", (unsigned long long)seq);
    if (total != opt.items || atomic_load(&sh.delivered) != opt.items)
        fail("delivered %llu items, pushed %llu", (unsigned long long)total,
             (unsigned long long)opt.items);
    if (fa_ring_depth(&sh.ring) != 0)
        fail("ring depth %llu after drain", (unsigned long long)fa_ring_depth(&sh.ring));
    if (fa_lot_parked(&sh.lot) != 0)
        fail("%u consumers still on the parking stack", fa_lot_parked(&sh.lot));
    if (fa_ring_high_water_get(&sh.ring) > opt.capacity)
        fail("high water %llu above capacity", (unsigned long long)fa_ring_high_water_get(&sh.ring));

    info("ok: %llu items, %u consumers, capacity %llu, %.2f s; producer full waits %llu "
         "(timed out %llu); naps %llu; consumer timeouts %llu; "
         "sleeps %llu, wake calls %llu, high water %llu",
         (unsigned long long)opt.items, opt.consumers, (unsigned long long)opt.capacity,
         (double)(fa_now_ns() - t0) / 1e9, (unsigned long long)full_waits,
         (unsigned long long)wait_timeouts, (unsigned long long)naps,
         (unsigned long long)timeouts, (unsigned long long)fa_lot_sleeps(&sh.lot),
         (unsigned long long)fa_lot_wake_calls(&sh.lot),
         (unsigned long long)fa_ring_high_water_get(&sh.ring));
    fa_lot_destroy(&sh.lot);
    fa_ring_destroy(&sh.ring, 0);
    free(sh.seen);
    free(cons);
    free(tids);
}

/* ------------------------------------------------------------------ */
/* b: lost wake-up hunt */

typedef struct {
    fa_ring ring;
    fa_lot lot;
    _Atomic uint8_t *seen;
    uint64_t nitems;
    _Atomic uint64_t consumed;
} b_shared;

typedef struct {
    b_shared *sh;
    unsigned idx;
    int end_rc;
} b_consumer;

static void *b_consumer_main(void *arg)
{
    b_consumer *me = arg;
    b_shared *sh = me->sh;
    /* Odd consumers sleep with a timeout far beyond the per-round bound:
     * the timed futex path must be woken as promptly as the untimed one. */
    int64_t t = me->idx % 2 ? (int64_t)opt.timeout_s * 4 * 1000000000 : -1;
    for (;;) {
        fa_conn c;
        int rc = fa_pop_wait(&sh->ring, &sh->lot, &c, t);
        if (rc == -ETIMEDOUT || rc == -EINTR)
            continue;
        if (rc == -ESHUTDOWN)
            break;
        if (rc != 0)
            fail("consumer %u: fa_pop_wait returned %d", me->idx, rc);
        uint64_t seq = check_fake_conn(&c);
        if (seq >= sh->nitems)
            fail("consumer %u: popped item %llu, never pushed", me->idx,
                 (unsigned long long)seq);
        if (atomic_exchange_explicit(&sh->seen[seq], 1, memory_order_relaxed))
            fail("consumer %u: item %llu delivered twice", me->idx, (unsigned long long)seq);
        atomic_fetch_add_explicit(&sh->consumed, 1, memory_order_release);
        progress();
    }
    me->end_rc = -ESHUTDOWN;
    return NULL;
}

/* Waits until exactly want consumers are parked, failing after opt.timeout_s. */
static void b_wait_parked(b_shared *sh, unsigned want, const char *why, unsigned round)
{
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (fa_lot_parked(&sh->lot) != want) {
        if (fa_now_ns() > deadline)
            fail("round %u: %u of %u consumers parked after %u s (%s)", round,
                 fa_lot_parked(&sh->lot), want, opt.timeout_s, why);
        sched_yield();
    }
}

static void scenario_b(void)
{
    atomic_store(&g_phase, "b");
    uint64_t t0 = fa_now_ns();
    b_shared sh;
    int rc = fa_ring_init(&sh.ring, 4);
    if (rc < 0)
        fail("fa_ring_init: %d", rc);
    if ((rc = fa_lot_init(&sh.lot)) < 0)
        fail("fa_lot_init: %d", rc);
    sh.nitems = 2 * (uint64_t)opt.rounds;
    sh.seen = calloc(sh.nitems, sizeof *sh.seen);
    if (sh.seen == NULL)
        fail("calloc");
    atomic_init(&sh.consumed, 0);

    b_consumer *cons = calloc(opt.consumers, sizeof *cons);
    pthread_t *tids = calloc(opt.consumers, sizeof *tids);
    if (cons == NULL || tids == NULL)
        fail("calloc");
    for (unsigned i = 0; i < opt.consumers; i++) {
        cons[i] = (b_consumer){.sh = &sh, .idx = i, .end_rc = 1};
        start_thread(&tids[i], b_consumer_main, &cons[i]);
    }

    uint64_t rs = seed_for(2), pushed = 0;
    unsigned modes[4] = {0};
    for (unsigned round = 0; round < opt.rounds; round++) {
        /* 0: everyone is asleep first (the plain wake path);
         * 1: push at once, racing the last consumer back into fa_pop_wait;
         * 2: push after a random spin, to move the race window around;
         * 3: two items and one wake: the second relies on the chain wake. */
        unsigned mode = (unsigned)(rnd(&rs) % 4);
        modes[mode]++;
        if (mode == 0)
            b_wait_parked(&sh, opt.consumers, "idle ring", round);
        else if (mode == 2)
            for (volatile unsigned spin = (unsigned)(rnd(&rs) % 4096); spin > 0; spin--)
                ;
        unsigned n = mode == 3 ? 2 : 1;
        for (unsigned k = 0; k < n; k++) {
            fa_conn c;
            fake_conn(&c, pushed);
            if (fa_ring_push(&sh.ring, &c) < 0)
                fail("round %u: push into a ring that should be empty failed", round);
            pushed++;
        }
        fa_lot_wake_one(&sh.lot);

        uint64_t deadline = deadline_after_s(opt.timeout_s);
        while (atomic_load_explicit(&sh.consumed, memory_order_acquire) != pushed) {
            if (fa_now_ns() > deadline)
                fail("round %u (mode %u): %llu of %llu items consumed after %u s with "
                     "%u consumers parked: lost wake-up", round, mode,
                     (unsigned long long)atomic_load(&sh.consumed),
                     (unsigned long long)pushed, opt.timeout_s, fa_lot_parked(&sh.lot));
            sched_yield();
        }
        progress();
    }

    /* Everyone parked: the close alone must wake them all. */
    b_wait_parked(&sh, opt.consumers, "before close", opt.rounds);
    fa_lot_close(&sh.lot);
    for (unsigned i = 0; i < opt.consumers; i++)
        join_bounded(tids[i], "consumer after close", i);
    for (unsigned i = 0; i < opt.consumers; i++)
        if (cons[i].end_rc != -ESHUTDOWN)
            fail("consumer %u ended with %d", i, cons[i].end_rc);
    for (uint64_t s = 0; s < pushed; s++)
        if (!atomic_load(&sh.seen[s]))
            fail("item %llu never delivered", (unsigned long long)s);

    info("ok: %u rounds (idle %u, racing %u, spin %u, two-item %u), %u consumers, %.2f s; "
         "sleeps %llu, wake calls %llu",
         opt.rounds, modes[0], modes[1], modes[2], modes[3], opt.consumers,
         (double)(fa_now_ns() - t0) / 1e9, (unsigned long long)fa_lot_sleeps(&sh.lot),
         (unsigned long long)fa_lot_wake_calls(&sh.lot));
    fa_lot_destroy(&sh.lot);
    fa_ring_destroy(&sh.ring, 0);
    free(sh.seen);
    free(cons);
    free(tids);
}

/* b2: spurious futex returns keep a timed wait's deadline. A spoiler wakes
 * the parked consumer's futex word over and over without setting it (as a
 * late FUTEX_WAKE at a reused stack address does); fa_pop_wait on an empty
 * ring must still time out near its deadline, not restart its timeout at
 * every spurious return. */
typedef struct {
    fa_lot *lot;
    _Atomic int stop;
    _Atomic uint64_t wakes;
} b2_spoiler;

static void *b2_spoiler_main(void *arg)
{
    b2_spoiler *sp = arg;
    struct timespec pause = {.tv_nsec = 2000000};      /* the pace of the wakes */
    /* Bounded, so that a wait that restarts at every wake still ends and
     * the check below reports it instead of the watchdog. */
    uint64_t until = fa_now_ns() + 3000000000u;
    while (!atomic_load(&sp->stop) && fa_now_ns() < until) {
        pthread_mutex_lock(&sp->lot->lock);
        fa_waiter *w = sp->lot->top;
        if (w != NULL) {
            fa_futex_wake(&w->word, 1);     /* word stays 0: a spurious return */
            atomic_fetch_add(&sp->wakes, 1);
        }
        pthread_mutex_unlock(&sp->lot->lock);
        nanosleep(&pause, NULL);
        progress();
    }
    return NULL;
}

static void scenario_b_deadline(void)
{
    atomic_store(&g_phase, "b2 deadline after spurious wakes");
    fa_ring ring;
    fa_lot lot;
    if (fa_ring_init(&ring, 4) < 0 || fa_lot_init(&lot) < 0)
        fail("fa_ring_init/fa_lot_init");
    b2_spoiler sp = {.lot = &lot};
    pthread_t tid;
    start_thread(&tid, b2_spoiler_main, &sp);
    const int64_t timeout_ns = 100000000;              /* 100 ms */
    uint64_t worst_ns = 0;
    for (int i = 0; i < 5; i++) {
        fa_conn c;
        uint64_t t0 = fa_now_ns();
        int rc = fa_pop_wait(&ring, &lot, &c, timeout_ns);
        uint64_t took = fa_now_ns() - t0;
        if (rc != -ETIMEDOUT)
            fail("fa_pop_wait on an empty ring returned %d, not -ETIMEDOUT", rc);
        if (took < (uint64_t)timeout_ns)
            fail("fa_pop_wait timed out after %.1f ms, before its 100 ms", (double)took / 1e6);
        if (took > worst_ns)
            worst_ns = took;
    }
    atomic_store(&sp.stop, 1);
    join_bounded(tid, "spoiler", 0);
    /* Each spurious return used to restart the whole timeout: with a wake
     * every 2 ms the wait never ended while the spoiler ran. A second is
     * ten timeouts: far beyond any scheduling delay on a loaded machine. */
    if (worst_ns > 1000000000u)
        fail("fa_pop_wait(100 ms) took %.1f ms with spurious wakes", (double)worst_ns / 1e6);
    if (atomic_load(&sp.wakes) == 0)
        fail("the spoiler never found the consumer parked");
    info("ok: 5 timed waits of 100 ms under %llu spurious wakes, worst %.1f ms",
         (unsigned long long)atomic_load(&sp.wakes), (double)worst_ns / 1e6);
    fa_lot_destroy(&lot);
    fa_ring_destroy(&ring, 0);
}

/* ------------------------------------------------------------------ */
/* c: the accept loop on a loopback listener */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        fail("opendir(/proc/self/fd): %s", strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[256];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
    }
    closedir(d);
}

static int listener(int backlog, struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0)
        fail("bind/listen/getsockname on 127.0.0.1:0: %s", strerror(errno));
    return fd;
}

/* Connections in the listener's accept queue (Linux reports it in
 * tcpi_unacked for a LISTEN socket). */
static uint32_t queued(int listen_fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(listen_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        fail("getsockopt(TCP_INFO): %s", strerror(errno));
    return ti.tcpi_unacked;
}

/* After a stop, a listener nobody else holds must refuse at once: the loop
 * released it (FA_END_RELEASE) right after its final drain. */
static void check_refused(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    int rc;
    while ((rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr)) < 0 && errno == EINTR)
        ;
    if (rc == 0 || errno != ECONNREFUSED)
        fail("a connect after the stop got %s, not ECONNREFUSED",
             rc == 0 ? "connected" : strerror(errno));
    close(fd);
}

typedef struct {
    struct sockaddr_in addr;
    uint32_t first_id, count;
} c_client;

/* Connects count times; each connection carries its 4-byte id and is closed
 * at once (the data and the FIN wait in the server socket). */
static void *c_client_main(void *arg)
{
    c_client *cl = arg;
    for (uint32_t i = 0; i < cl->count; i++) {
        uint32_t id = cl->first_id + i;
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            fail("client socket: %s", strerror(errno));
        /* SO_SNDTIMEO bounds connect() and send() on Linux. */
        struct timeval tv = {.tv_sec = opt.timeout_s};
        if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
            fail("SO_SNDTIMEO: %s", strerror(errno));
        int rc;
        while ((rc = connect(s, (struct sockaddr *)&cl->addr, sizeof cl->addr)) < 0 &&
               errno == EINTR)
            ;
        if (rc < 0)
            fail("client connect %u: %s", id, strerror(errno));
        if (send(s, &id, sizeof id, MSG_NOSIGNAL) != (ssize_t)sizeof id)
            fail("client send %u: %s", id, strerror(errno));
        close(s);
        progress();
    }
    return NULL;
}

typedef struct {
    fa_acceptor *a;
    _Atomic uint8_t *seen;
    uint32_t nids;
    unsigned idx;
    uint64_t got;
    int end_rc;
} c_consumer;

static void *c_consumer_main(void *arg)
{
    c_consumer *me = arg;
    for (;;) {
        fa_conn c;
        int rc = fa_pop_wait(&me->a->ring, &me->a->lot, &c, -1);
        if (rc == -EINTR)
            continue;
        if (rc == -ESHUTDOWN)
            break;
        if (rc != 0)
            fail("consumer %u: fa_pop_wait returned %d", me->idx, rc);

        /* The entry must describe this very socket. */
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        const struct sockaddr_in *got = (const struct sockaddr_in *)&c.addr;
        if (getpeername(c.fd, (struct sockaddr *)&peer, &plen) < 0)
            fail("consumer %u: getpeername(fd %d): %s", me->idx, c.fd, strerror(errno));
        if (c.addrlen != sizeof peer || got->sin_family != AF_INET ||
            got->sin_addr.s_addr != peer.sin_addr.s_addr || got->sin_port != peer.sin_port ||
            c.accepted_ns == 0 || c.accepted_ns > fa_now_ns())
            fail("consumer %u: entry of fd %d does not match the socket (addrlen %u)",
                 me->idx, c.fd, (unsigned)c.addrlen);

        uint32_t id;
        struct pollfd p = {.fd = c.fd, .events = POLLIN};
        rc = poll(&p, 1, (int)opt.timeout_s * 1000);
        if (rc <= 0)
            fail("consumer %u: fd %d: no id within %u s (%s)", me->idx, c.fd, opt.timeout_s,
                 rc < 0 ? strerror(errno) : "timeout");
        ssize_t n = recv(c.fd, &id, sizeof id, MSG_WAITALL);
        if (n != (ssize_t)sizeof id)
            fail("consumer %u: fd %d: recv returned %zd (%s)", me->idx, c.fd, n,
                 n < 0 ? strerror(errno) : "short");
        if (id >= me->nids)
            fail("consumer %u: id %u out of range", me->idx, id);
        if (atomic_exchange(&me->seen[id], 1))
            fail("consumer %u: connection %u accepted twice", me->idx, id);
        fa_acceptor_finish(me->a, c.fd);
        me->got++;
        progress();
    }
    me->end_rc = -ESHUTDOWN;
    return NULL;
}

typedef struct {
    fa_acceptor *a;
    int rc;
    _Atomic int done;
} c_runner;

static void *c_runner_main(void *arg)
{
    c_runner *r = arg;
    r->rc = fa_acceptor_run(r->a);
    atomic_store(&r->done, 1);
    return NULL;
}

static void c_start_consumers(c_consumer *cons, pthread_t *tids, unsigned n, fa_acceptor *a,
                              _Atomic uint8_t *seen, uint32_t nids)
{
    for (unsigned i = 0; i < n; i++) {
        cons[i] = (c_consumer){.a = a, .seen = seen, .nids = nids, .idx = i, .end_rc = 1};
        start_thread(&tids[i], c_consumer_main, &cons[i]);
    }
}

static uint64_t c_join_consumers(c_consumer *cons, pthread_t *tids, unsigned n)
{
    uint64_t got = 0;
    for (unsigned i = 0; i < n; i++) {
        join_bounded(tids[i], "consumer after the acceptor returned", i);
        if (cons[i].end_rc != -ESHUTDOWN)
            fail("consumer %u ended with %d", i, cons[i].end_rc);
        got += cons[i].got;
    }
    return got;
}

static void c_check_errors(fa_acceptor *a)
{
    for (int e = 0; e < FA_ERRNO_SLOTS; e++)
        if (fa_stat_errors(a, e))
            fail("acceptor counted %llu accept errors with errno %d (%s)",
                 (unsigned long long)fa_stat_errors(a, e), e, strerror(e));
}

static void c_check_all_seen(_Atomic uint8_t *seen, uint32_t n)
{
    for (uint32_t id = 0; id < n; id++)
        if (!atomic_load(&seen[id]))
            fail("connection %u was never handed to a consumer", id);
}

/* c1: clients, the loop and consumers all running; a small ring so the loop
 * waits for space over and over; then stop. */
static void scenario_c_run(void)
{
    atomic_store(&g_phase, "c1 run+stop");
    uint64_t t0 = fa_now_ns();
    uint32_t k = opt.conns;
    struct sockaddr_in addr;
    int lfd = listener(4096, &addr);
    fa_acceptor a;
    int rc = fa_acceptor_init(&a, lfd, 4, 8);
    if (rc < 0)
        fail("fa_acceptor_init: %d", rc);
    _Atomic uint8_t *seen = calloc(k, sizeof *seen);
    c_consumer *cons = calloc(opt.consumers, sizeof *cons);
    pthread_t *tids = calloc(opt.consumers, sizeof *tids);
    if (seen == NULL || cons == NULL || tids == NULL)
        fail("calloc");

    c_runner run = {.a = &a};
    pthread_t run_tid, client_tid;
    start_thread(&run_tid, c_runner_main, &run);
    c_start_consumers(cons, tids, opt.consumers, &a, seen, k);
    c_client cl = {.addr = addr, .first_id = 0, .count = k};
    start_thread(&client_tid, c_client_main, &cl);
    join_bounded(client_tid, "client", 0);

    /* Every connection is in the kernel queue or was accepted before the
     * stop, so the stop must deliver all of them. */
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (fa_stat_accepted(&a) + queued(lfd) < k) {
        c_check_errors(&a);
        if (fa_now_ns() > deadline)
            fail("%llu accepted + %u queued of %u connections after %u s",
                 (unsigned long long)fa_stat_accepted(&a), queued(lfd), k, opt.timeout_s);
        sched_yield();
    }
    fa_acceptor_stop(&a);
    fa_acceptor_stop(&a);   /* idempotent */
    join_bounded(run_tid, "acceptor after stop", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d after stop", run.rc);
    uint64_t got = c_join_consumers(cons, tids, opt.consumers);

    c_check_errors(&a);
    c_check_all_seen(seen, k);
    if (fa_stat_accepted(&a) != k || got != k)
        fail("accepted %llu, consumed %llu, connected %u", (unsigned long long)fa_stat_accepted(&a),
             (unsigned long long)got, k);
    check_refused(&addr);
    info("ok: %u connections, capacity 4, %u consumers, %.2f s; batches %llu, ring full waits "
         "%llu, worker sleeps %llu", k, opt.consumers, (double)(fa_now_ns() - t0) / 1e9,
         (unsigned long long)fa_stat_batches(&a), (unsigned long long)fa_stat_ring_full_waits(&a),
         (unsigned long long)fa_lot_sleeps(&a.lot));
    fa_acceptor_destroy(&a);
    close(lfd);
    free(seen);
    free(cons);
    free(tids);
}

/* c2: stop asked before the loop runs: the final drain alone must accept
 * every connection already queued, through a ring smaller than the queue. */
static void scenario_c_drain(void)
{
    atomic_store(&g_phase, "c2 stop-before-run drain");
    uint32_t k = opt.conns < 200 ? opt.conns : 200;
    struct sockaddr_in addr;
    int lfd = listener((int)k + 16, &addr);
    fa_acceptor a;
    int rc = fa_acceptor_init(&a, lfd, 4, 3);
    if (rc < 0)
        fail("fa_acceptor_init: %d", rc);
    _Atomic uint8_t *seen = calloc(k, sizeof *seen);
    c_consumer *cons = calloc(opt.consumers, sizeof *cons);
    pthread_t *tids = calloc(opt.consumers, sizeof *tids);
    if (seen == NULL || cons == NULL || tids == NULL)
        fail("calloc");

    c_client cl = {.addr = addr, .first_id = 0, .count = k};
    pthread_t client_tid, run_tid;
    start_thread(&client_tid, c_client_main, &cl);
    join_bounded(client_tid, "client", 0);
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (queued(lfd) < k) {
        if (fa_now_ns() > deadline)
            fail("%u of %u connections queued after %u s", queued(lfd), k, opt.timeout_s);
        sched_yield();
    }

    fa_acceptor_stop(&a);
    /* A second reference, as another process sharing the listener would
     * hold: the release drops the loop's, and this one still listens. */
    int shared = dup(lfd);
    if (shared < 0)
        fail("dup: %s", strerror(errno));
    c_runner run = {.a = &a};
    c_start_consumers(cons, tids, opt.consumers, &a, seen, k);
    start_thread(&run_tid, c_runner_main, &run);
    join_bounded(run_tid, "acceptor", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d", run.rc);
    uint64_t got = c_join_consumers(cons, tids, opt.consumers);
    c_check_errors(&a);
    c_check_all_seen(seen, k);
    if (fa_stat_accepted(&a) != k || got != k || queued(shared) != 0)
        fail("accepted %llu, consumed %llu, still queued %u, connected %u",
             (unsigned long long)fa_stat_accepted(&a), (unsigned long long)got, queued(shared), k);
    struct tcp_info ti;
    socklen_t tlen = sizeof ti;
    if (getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0)
        fail("listen_fd still refers to a TCP socket after the release");
    info("ok: %u queued connections drained through capacity 4; ring full waits %llu", k,
         (unsigned long long)fa_stat_ring_full_waits(&a));
    fa_acceptor_destroy(&a);
    close(lfd);
    close(shared);
    free(seen);
    free(cons);
    free(tids);
}

/* c3: abort while the loop sleeps on a full ring (capacity 2, no consumer
 * yet): run returns at once, nothing more is accepted, and the consumers
 * started afterwards drain the two entries and see -ESHUTDOWN. */
static void scenario_c_abort(void)
{
    atomic_store(&g_phase, "c3 abort on full ring");
    const uint32_t k = 6;
    struct sockaddr_in addr;
    int lfd = listener(64, &addr);
    fa_acceptor a;
    int rc = fa_acceptor_init(&a, lfd, 2, 16);
    if (rc < 0)
        fail("fa_acceptor_init: %d", rc);
    _Atomic uint8_t seen[6] = {0};
    c_consumer cons[2];
    pthread_t tids[2];

    c_runner run = {.a = &a};
    pthread_t run_tid, client_tid;
    start_thread(&run_tid, c_runner_main, &run);
    c_client cl = {.addr = addr, .first_id = 0, .count = k};
    start_thread(&client_tid, c_client_main, &cl);
    join_bounded(client_tid, "client", 0);

    /* The loop is inside fa_wait_space once it has announced itself there. */
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (fa_stat_accepted(&a) < 2 || !atomic_load(&a.lot.producer_waiting) ||
           fa_stat_ring_full_waits(&a) == 0) {
        if (fa_now_ns() > deadline)
            fail("the loop did not wait on the full ring: accepted %llu, waits %llu",
                 (unsigned long long)fa_stat_accepted(&a),
                 (unsigned long long)fa_stat_ring_full_waits(&a));
        if (atomic_load(&run.done))
            fail("fa_acceptor_run returned %d before the abort", run.rc);
        sched_yield();
    }
    fa_acceptor_abort(&a);
    join_bounded(run_tid, "acceptor after abort", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d after abort", run.rc);
    if (fa_stat_accepted(&a) != 2 || fa_ring_depth(&a.ring) != 2)
        fail("after abort: accepted %llu, ring depth %llu (want 2, 2)",
             (unsigned long long)fa_stat_accepted(&a),
             (unsigned long long)fa_ring_depth(&a.ring));
    if (!fa_lot_is_closed(&a.lot))
        fail("the lot is not closed after the loop returned");

    c_start_consumers(cons, tids, 2, &a, seen, k);
    uint64_t got = c_join_consumers(cons, tids, 2);
    if (got != 2)
        fail("consumers got %llu of the 2 queued entries", (unsigned long long)got);
    c_check_errors(&a);
    info("ok: abort returned with the ring full; 2 entries drained, %u left to the kernel",
         k - 2);
    fa_acceptor_destroy(&a);
    close(lfd);
}

/* c4: a stop and an abort with nothing to do; the destroy of a loop that
 * never ran; destroy closing fds still in the ring. */
static void scenario_c_edges(void)
{
    atomic_store(&g_phase, "c4 edges");
    struct sockaddr_in addr;
    int lfd = listener(16, &addr);
    fa_acceptor a;
    int rc = fa_acceptor_init(&a, lfd, 2, 1);
    if (rc < 0)
        fail("fa_acceptor_init: %d", rc);
    fa_acceptor_destroy(&a);

    if (fa_acceptor_init(&a, lfd, 3, 1) != -EINVAL || fa_acceptor_init(&a, lfd, 2, 0) != -EINVAL ||
        fa_acceptor_init(&a, -1, 2, 1) != -EINVAL)
        fail("fa_acceptor_init accepted a bad argument");

    /* An idle loop sleeping in epoll_wait: abort must end it. With
     * FA_END_KEEP the listener still listens afterwards, for the next. */
    if ((rc = fa_acceptor_init(&a, lfd, 2, 1)) < 0)
        fail("fa_acceptor_init: %d", rc);
    if (fa_acceptor_set_end_listen(&a, 7) != -EINVAL ||
        (rc = fa_acceptor_set_end_listen(&a, FA_END_KEEP)) < 0)
        fail("fa_acceptor_set_end_listen: %d", rc);
    c_runner run = {.a = &a};
    pthread_t run_tid, client_tid;
    start_thread(&run_tid, c_runner_main, &run);
    fa_acceptor_abort(&a);
    join_bounded(run_tid, "idle acceptor after abort", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d after abort", run.rc);
    fa_acceptor_destroy(&a);
    if (queued(lfd) != 0)       /* fails unless lfd is still a TCP listener */
        fail("queue of a kept listener: %u", queued(lfd));

    /* Entries never popped: destroy must close their fds. The ring has
     * room to spare, since a stop alone does not end a wait for space. */
    if ((rc = fa_acceptor_init(&a, lfd, 4, 16)) < 0)
        fail("fa_acceptor_init: %d", rc);
    c_client cl = {.addr = addr, .first_id = 0, .count = 2};
    start_thread(&client_tid, c_client_main, &cl);
    join_bounded(client_tid, "client", 0);
    run = (c_runner){.a = &a};
    start_thread(&run_tid, c_runner_main, &run);
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (fa_stat_accepted(&a) < 2) {
        if (fa_now_ns() > deadline)
            fail("accepted %llu of 2", (unsigned long long)fa_stat_accepted(&a));
        sched_yield();
    }
    fa_acceptor_stop(&a);
    join_bounded(run_tid, "acceptor after stop", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d after stop", run.rc);
    fa_acceptor_destroy(&a);
    close(lfd);
    info("ok");
}

/* c5: the shed policy. With no consumer, a ring of 2 holds the first two
 * connections; every later one must get the shed response and EOF at once
 * (no waiting in the kernel queue), and be counted in stats.shed. */
static void scenario_c_shed(void)
{
    atomic_store(&g_phase, "c5 shed");
    static const char response[] = "busy\n";
    const uint32_t k = 24;
    struct sockaddr_in addr;
    int lfd = listener(64, &addr);
    fa_acceptor a;
    int rc = fa_acceptor_init(&a, lfd, 2, 16);
    if (rc < 0)
        fail("fa_acceptor_init: %d", rc);
    if (fa_acceptor_set_overload(&a, 7, NULL, 0) != -EINVAL ||
        fa_acceptor_set_overload(&a, FA_OVERLOAD_SHED, response, FA_SHED_RESPONSE_MAX + 1) != -EINVAL)
        fail("fa_acceptor_set_overload accepted a bad argument");
    /* set twice: the second copy replaces (and frees) the first */
    if ((rc = fa_acceptor_set_overload(&a, FA_OVERLOAD_SHED, "x", 1)) < 0 ||
        (rc = fa_acceptor_set_overload(&a, FA_OVERLOAD_SHED, response, sizeof response - 1)) < 0)
        fail("fa_acceptor_set_overload: %d", rc);

    c_runner run = {.a = &a};
    pthread_t run_tid;
    start_thread(&run_tid, c_runner_main, &run);
    int socks[24];
    for (uint32_t i = 0; i < k; i++) {
        socks[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (socks[i] < 0)
            fail("client socket: %s", strerror(errno));
        struct timeval tv = {.tv_sec = opt.timeout_s};
        if (setsockopt(socks[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
            setsockopt(socks[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
            fail("SO_RCVTIMEO/SO_SNDTIMEO: %s", strerror(errno));
        while ((rc = connect(socks[i], (struct sockaddr *)&addr, sizeof addr)) < 0 &&
               errno == EINTR)
            ;
        if (rc < 0)
            fail("client connect %u: %s", i, strerror(errno));
        if (send(socks[i], &i, sizeof i, MSG_NOSIGNAL) != (ssize_t)sizeof i)
            fail("client send %u: %s", i, strerror(errno));
        progress();
    }
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    /* accepted is counted as a connection leaves the kernel queue, shed once
     * it has been answered: wait for both */
    while (fa_stat_accepted(&a) < k || fa_stat_shed(&a) < k - 2) {
        if (fa_now_ns() > deadline)
            fail("accepted %llu + shed %llu of %u", (unsigned long long)fa_stat_accepted(&a),
                 (unsigned long long)fa_stat_shed(&a), k);
        sched_yield();
    }
    /* accepted counts every connection taken from the kernel queue */
    if (fa_stat_accepted(&a) != k || fa_stat_shed(&a) != k - 2 || queued(lfd) != 0)
        fail("accepted %llu, shed %llu, queued %u (want %u, %u, 0)",
             (unsigned long long)fa_stat_accepted(&a), (unsigned long long)fa_stat_shed(&a),
             queued(lfd), k, k - 2);
    uint32_t answered = 0;
    for (uint32_t i = 0; i < k; i++) {
        char buf[64];
        /* The first two sit in the ring: nothing may have been sent to them.
         * The others were shed: their answer arrives (SO_RCVTIMEO bounds
         * the wait; loopback delivery can lag behind the send). */
        ssize_t n = recv(socks[i], buf, sizeof buf, i < 2 ? MSG_DONTWAIT : 0);
        if (i < 2) {
            if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                fail("queued connection %u: recv returned %zd (%s)", i, n,
                     n < 0 ? strerror(errno) : "data");
            continue;
        }
        if (n != (ssize_t)sizeof response - 1 || memcmp(buf, response, (size_t)n) != 0)
            fail("connection %u: shed answer of %zd bytes (%s)", i, n,
                 n < 0 ? strerror(errno) : "wrong");
        if ((n = recv(socks[i], buf, sizeof buf, 0)) != 0)
            fail("connection %u: no EOF after the shed answer (%zd, %s)", i, n,
                 n < 0 ? strerror(errno) : "data");
        answered++;
    }
    if (answered != k - 2)
        fail("%u shed answers for %u shed connections", answered, k - 2);
    fa_acceptor_stop(&a);
    join_bounded(run_tid, "acceptor after stop", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d after stop", run.rc);
    c_check_errors(&a);
    fa_acceptor_destroy(&a);    /* closes the 2 queued, frees the response */
    for (uint32_t i = 0; i < k; i++)
        close(socks[i]);
    close(lfd);
    info("ok: %u shed with a response and EOF, 2 queued", k - 2);
}

static void scenario_c(void)
{
    int before = count_fds();
    scenario_c_run();
    scenario_c_drain();
    scenario_c_abort();
    scenario_c_edges();
    scenario_c_shed();
    atomic_store(&g_phase, "c fd check");
    int after = count_fds();
    if (after != before) {
        fprintf(stderr, "open fds now:\n");
        list_fds();
        fail("%d fds open before scenario c, %d after: leaked or double-closed", before, after);
    }
    info("ok: %d fds before and after", before);
}

/* ------------------------------------------------------------------ */
/* d: connections waiting in C - dispatch when readable, KEEP, deadlines */

/* Sizes of scenario d. */
#define D_CLIENT_THREADS 2
#define D_MAX_FD 65536

typedef struct {
    uint32_t conn, seq;
} d_msg;

typedef struct {
    fa_acceptor *a;
    _Atomic uint8_t *busy;          /* by fd: a worker holds it now */
    _Atomic uint32_t *next_seq;     /* by connection id: the request expected next */
    uint32_t nconns;
    unsigned idx;
    uint64_t served, ends;
} d_worker;

/* A worker: pops, reads one request, checks it is the one expected next on
 * its connection and that no other worker holds this descriptor, answers,
 * then gives the connection back (KEEP), or finishes it at EOF. */
static void *d_worker_main(void *arg)
{
    d_worker *me = arg;
    uint64_t rs = seed_for(300 + me->idx);
    for (;;) {
        fa_conn c;
        int rc = fa_pop_wait(&me->a->ring, &me->a->lot, &c, -1);
        if (rc == -EINTR)
            continue;
        if (rc == -ESHUTDOWN)
            break;
        if (rc != 0)
            fail("worker %u: fa_pop_wait returned %d", me->idx, rc);
        if (c.fd < 0 || c.fd >= D_MAX_FD)
            fail("worker %u: fd %d out of range", me->idx, c.fd);
        if (atomic_exchange(&me->busy[c.fd], 1))
            fail("worker %u: fd %d handed to two workers at once", me->idx, c.fd);
        if (c.ready_ns < c.accepted_ns || c.ready_ns > fa_now_ns())
            fail("worker %u: entry times out of order", me->idx);
        d_msg m;
        ssize_t n = recv(c.fd, &m, sizeof m, MSG_WAITALL);
        if (n == 0) {
            /* dispatched readable, then the peer closed before we read */
            atomic_store(&me->busy[c.fd], 0);
            fa_acceptor_finish(me->a, c.fd);
            me->ends++;
            continue;
        }
        if (n != (ssize_t)sizeof m)
            fail("worker %u: fd %d: recv returned %zd (%s)", me->idx, c.fd, n,
                 n < 0 ? strerror(errno) : "short");
        if (m.conn >= me->nconns)
            fail("worker %u: connection id %u out of range", me->idx, m.conn);
        uint32_t want = atomic_load(&me->next_seq[m.conn]);
        if (m.seq != want)
            fail("worker %u: connection %u sent request %u, expected %u (lost or served "
                 "twice)", me->idx, m.conn, m.seq, want);
        atomic_store(&me->next_seq[m.conn], want + 1);
        uint64_t r = rnd(&rs);
        if (r % 8 == 0)
            sched_yield();          /* move the KEEP race around */
        else if (r % 16 == 1) {
            struct timespec slow = {.tv_nsec = 200000};    /* the ring fills meanwhile */
            nanosleep(&slow, NULL);
        }
        if (send(c.fd, &m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m)
            fail("worker %u: fd %d: send: %s", me->idx, c.fd, strerror(errno));
        me->served++;
        /* release before giving it back: once kept, the loop may hand it on */
        atomic_store(&me->busy[c.fd], 0);
        fa_acceptor_keep(me->a, c.fd, NULL, 0);
        progress();
    }
    return NULL;
}

typedef struct {
    struct sockaddr_in addr;
    uint32_t first_id, nconns, requests;
    unsigned idx;
} d_client;

static int d_connect(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("client socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = opt.timeout_s};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        fail("SO_RCVTIMEO: %s", strerror(errno));
    int rc;
    while ((rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr)) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        fail("client connect: %s", strerror(errno));
    return fd;
}

/* A client thread: nconns connections, each sending `requests` requests one
 * at a time (answer before the next on that connection), several
 * connections at once in a random interleaving, sometimes pausing so the
 * connections wait (idle, kept) in C; then a FIN each. */
static void *d_client_main(void *arg)
{
    d_client *me = arg;
    uint64_t rs = seed_for(400 + me->idx);
    int *fds = calloc(me->nconns, sizeof *fds);
    uint32_t *done = calloc(me->nconns, sizeof *done);
    if (fds == NULL || done == NULL)
        fail("calloc");
    for (uint32_t i = 0; i < me->nconns; i++)
        fds[i] = d_connect(&me->addr);
    uint32_t left = me->nconns;
    uint32_t batch[8];
    while (left) {
        /* up to 8 connections at once, one request each, then the answers:
         * more requests in flight than the ring holds */
        uint32_t k = 0, want = 1 + (uint32_t)(rnd(&rs) % 8);
        for (uint32_t tries = 0; k < want && tries < 64; tries++) {
            uint32_t i = (uint32_t)(rnd(&rs) % me->nconns);
            int dup = 0;
            for (uint32_t j = 0; j < k; j++)
                dup |= batch[j] == i;
            if (!dup && done[i] < me->requests)
                batch[k++] = i;
        }
        for (uint32_t j = 0; j < k; j++) {
            uint32_t i = batch[j];
            d_msg m = {.conn = me->first_id + i, .seq = done[i]};
            if (send(fds[i], &m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m)
                fail("client: send: %s", strerror(errno));
        }
        for (uint32_t j = 0; j < k; j++) {
            uint32_t i = batch[j];
            d_msg r;
            ssize_t n = recv(fds[i], &r, sizeof r, MSG_WAITALL);
            if (n != (ssize_t)sizeof r || r.conn != me->first_id + i || r.seq != done[i])
                fail("client: connection %u request %u: answer of %zd bytes (%s)",
                     me->first_id + i, done[i], n, n < 0 ? strerror(errno) : "wrong or missing");
            if (++done[i] == me->requests) {
                close(fds[i]);      /* a FIN: C closes its end, no worker */
                left--;
            }
        }
        if (rnd(&rs) % 64 == 0) {
            struct timespec pause = {.tv_nsec = 1000000};  /* kept ones wait in C */
            nanosleep(&pause, NULL);
        }
        progress();
    }
    free(fds);
    free(done);
    return NULL;
}

static void scenario_d(void)
{
    atomic_store(&g_phase, "d waiting in C");
    int before = count_fds();
    uint64_t t0 = fa_now_ns();
    const uint32_t per_client = 24, idle = 6, resets = 6;
    const uint32_t requests = opt.conns / 40 > 4 ? opt.conns / 40 : 4;
    const uint32_t nconns = D_CLIENT_THREADS * per_client;
    struct sockaddr_in addr;
    int lfd = listener(256, &addr);
    fa_acceptor a;
    /* a ring of 2: ready connections often wait in C for space */
    int rc = fa_acceptor_init(&a, lfd, 2, 8);
    if (rc < 0)
        fail("fa_acceptor_init: %d", rc);
    if (fa_acceptor_set_conns(&a, 7, 0, 10) != -EINVAL ||
        fa_acceptor_set_conns(&a, FA_DISPATCH_READABLE, 0, 0) != -EINVAL)
        fail("fa_acceptor_set_conns accepted a bad argument");
    /* idle deadline 200 ms: the clients' pauses (1 ms) stay far below it */
    if ((rc = fa_acceptor_set_conns(&a, FA_DISPATCH_READABLE, 200000000u, 256)) < 0)
        fail("fa_acceptor_set_conns: %d", rc);
    _Atomic uint8_t *busy = calloc(D_MAX_FD, sizeof *busy);
    _Atomic uint32_t *next_seq = calloc(nconns, sizeof *next_seq);
    d_worker *ws = calloc(opt.consumers, sizeof *ws);
    pthread_t *wt = calloc(opt.consumers, sizeof *wt);
    if (busy == NULL || next_seq == NULL || ws == NULL || wt == NULL)
        fail("calloc");
    c_runner run = {.a = &a};
    pthread_t run_tid;
    start_thread(&run_tid, c_runner_main, &run);
    for (unsigned i = 0; i < opt.consumers; i++) {
        ws[i] = (d_worker){.a = &a, .busy = busy, .next_seq = next_seq, .nconns = nconns,
                           .idx = i};
        start_thread(&wt[i], d_worker_main, &ws[i]);
    }
    /* silent clients: C must close them (a FIN) at the deadline */
    int silent[6], reset[6];
    for (uint32_t i = 0; i < idle; i++)
        silent[i] = d_connect(&addr);
    for (uint32_t i = 0; i < resets; i++) {
        reset[i] = d_connect(&addr);
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(reset[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(reset[i]);            /* a reset before sending anything */
    }
    d_client cl[D_CLIENT_THREADS];
    pthread_t ct[D_CLIENT_THREADS];
    for (unsigned i = 0; i < D_CLIENT_THREADS; i++) {
        cl[i] = (d_client){.addr = addr, .first_id = i * per_client, .nconns = per_client,
                           .requests = requests, .idx = i};
        start_thread(&ct[i], d_client_main, &cl[i]);
    }
    for (unsigned i = 0; i < D_CLIENT_THREADS; i++)
        join_bounded(ct[i], "client", i);
    for (uint32_t i = 0; i < idle; i++) {
        char b;
        ssize_t n = recv(silent[i], &b, 1, 0);      /* SO_RCVTIMEO bounds it */
        if (n != 0)
            fail("silent client %u: recv returned %zd (%s), not EOF", i, n,
                 n < 0 ? strerror(errno) : "data");
        close(silent[i]);
    }
    /* every connection closed by its client: C closes its ends; wait */
    uint64_t deadline = deadline_after_s(opt.timeout_s);
    while (fa_stat_open(&a) != 0 || fa_stat_waiting(&a) != 0) {
        if (fa_now_ns() > deadline)
            fail("%lld connections still open, %llu waiting", (long long)fa_stat_open(&a),
                 (unsigned long long)fa_stat_waiting(&a));
        sched_yield();
    }
    fa_acceptor_stop(&a);
    join_bounded(run_tid, "acceptor after stop", 0);
    if (run.rc != 0)
        fail("fa_acceptor_run returned %d", run.rc);
    uint64_t served = 0, ends = 0;
    for (unsigned i = 0; i < opt.consumers; i++) {
        join_bounded(wt[i], "worker", i);
        served += ws[i].served;
        ends += ws[i].ends;
    }
    c_check_errors(&a);
    for (uint32_t c = 0; c < nconns; c++)
        if (atomic_load(&next_seq[c]) != requests)
            fail("connection %u: %u of %u requests served", c, atomic_load(&next_seq[c]),
                 requests);
    uint64_t total = (uint64_t)nconns * requests;
    if (served != total || fa_stat_accepted(&a) != nconns + idle + resets ||
        fa_stat_idle_closed(&a) != idle ||
        fa_stat_peer_closed(&a) + ends != nconns + resets ||
        fa_stat_kept(&a) != total)
        fail("served %llu of %llu; accepted %llu, idle_closed %llu, peer_closed %llu, "
             "worker EOFs %llu, kept %llu", (unsigned long long)served,
             (unsigned long long)total, (unsigned long long)fa_stat_accepted(&a),
             (unsigned long long)fa_stat_idle_closed(&a),
             (unsigned long long)fa_stat_peer_closed(&a), (unsigned long long)ends,
             (unsigned long long)fa_stat_kept(&a));
    info("ok: %u connections x %u requests kept between, %u idle closed at the deadline, %u "
         "resets, %u workers, %.2f s; dispatched %llu, ring full waits %llu", nconns,
         requests, idle, resets, opt.consumers, (double)(fa_now_ns() - t0) / 1e9,
         (unsigned long long)fa_stat_dispatched(&a),
         (unsigned long long)fa_stat_ring_full_waits(&a));
    fa_acceptor_destroy(&a);
    close(lfd);
    free(busy);
    free(next_seq);
    free(ws);
    free(wt);
    int after = count_fds();
    if (after != before) {
        fprintf(stderr, "open fds now:\n");
        list_fds();
        fail("%d fds open before scenario d, %d after: leaked or double-closed", before, after);
    }
}

/* ------------------------------------------------------------------ */

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-s abc] [-m items] [-c consumers] [-q capacity] [-r rounds]\n"
            "          [-k connections] [-T timeout_s] [-S seed]\n"
            "  -s  scenarios to run: a (ring throughput), b (lost wake-up hunt),\n"
            "      c (accept loop), d (waiting in C: readable, KEEP, deadlines);\n"
            "      default abcd\n"
            "  -m  items for a (default %llu)      -c  consumer threads (default %u)\n"
            "  -q  ring capacity for a (default %llu) -r  rounds for b (default %u)\n"
            "  -k  connections for c (default %u)   -T  hang bound in s (default %u)\n"
            "  -S  random seed (default: from the clock)\n",
            argv0, (unsigned long long)opt.items, opt.consumers,
            (unsigned long long)opt.capacity, opt.rounds, opt.conns, opt.timeout_s);
    exit(2);
}

static uint64_t parse_u64(const char *s, const char *argv0)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end != '\0')
        usage(argv0);
    return v;
}

int main(int argc, char **argv)
{
    int ch;
    int seeded = 0;
    while ((ch = getopt(argc, argv, "s:m:c:q:r:k:T:S:")) != -1) {
        switch (ch) {
        case 's': opt.scenarios = optarg; break;
        case 'm': opt.items = parse_u64(optarg, argv[0]); break;
        case 'c': opt.consumers = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'q': opt.capacity = parse_u64(optarg, argv[0]); break;
        case 'r': opt.rounds = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'k': opt.conns = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'T': opt.timeout_s = (unsigned)parse_u64(optarg, argv[0]); break;
        case 'S': opt.seed = parse_u64(optarg, argv[0]); seeded = 1; break;
        default: usage(argv[0]);
        }
    }
    if (optind != argc || opt.items == 0 || opt.items > INT32_MAX || opt.consumers == 0 ||
        opt.consumers > 64 || opt.rounds == 0 || opt.conns == 0 || opt.timeout_s == 0 ||
        strspn(opt.scenarios, "abcd") != strlen(opt.scenarios))
        usage(argv[0]);
    if (!seeded)
        opt.seed = fa_now_ns();
    printf("stress_ring: scenarios %s, seed %llu\n", opt.scenarios, (unsigned long long)opt.seed);
    fflush(stdout);

    pthread_t wd;
    start_thread(&wd, watchdog_main, NULL);
    pthread_detach(wd);

    uint64_t t0 = fa_now_ns();
    if (strchr(opt.scenarios, 'a'))
        scenario_a();
    if (strchr(opt.scenarios, 'b')) {
        scenario_b();
        scenario_b_deadline();
    }
    if (strchr(opt.scenarios, 'c'))
        scenario_c();
    if (strchr(opt.scenarios, 'd'))
        scenario_d();
    atomic_store(&g_phase, "end");
    info("all passed in %.2f s", (double)(fa_now_ns() - t0) / 1e9);
    return 0;
}

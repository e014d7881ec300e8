/*
 * fa_accept.h - the accept loop: drains a listening socket into a ring, and
 * holds every connection that has nothing for a worker yet.
 *
 * One thread runs fa_acceptor_run(). It sleeps in epoll_wait on the listening
 * socket, an eventfd (stop, and the workers' kicks) and the connections that
 * wait in C (fa_conn.h); it accepts in batches with accept4() until EAGAIN.
 * It never touches a Python object, so its caller releases the GIL for the
 * loop's whole life. It is the only producer of the ring.
 *
 * Where a connection goes (fa_acceptor_set_conns):
 *  FA_DISPATCH_ACCEPT   into the ring at once, as accepted (for protocols
 *                       where the server speaks first).
 *  FA_DISPATCH_READABLE a connection whose first bytes have already arrived
 *                       (one peek tells) goes into the ring at once; any
 *                       other waits in the epoll set (one-shot) until they
 *                       do. A peer that closes before sending anything is
 *                       closed here, and one that sends nothing for idle_ns
 *                       is closed here too (a FIN): no worker ever sees it.
 * A connection a worker gives back (fa_acceptor_keep, the handler's KEEP)
 * waits in the epoll set the same way for its next request, whatever the
 * dispatch; the loop re-arms it, so workers never touch the epoll set.
 *
 * Behind a load balancer (fa_acceptor_set_proxy), every new connection
 * first sends a PROXY protocol header (fa_proxy.h, versions 1 and 2) that
 * carries its client's own address. The loop reads it before anything
 * else, waiting in the epoll set on a list of its own with its own
 * deadline, then goes on as with a connection freshly accepted from that
 * client: the header's source becomes the peer address (unless the header
 * is LOCAL, v1 UNKNOWN or family UNSPEC, as a balancer's health check
 * sends: then the balancer's connection stands), and the connection goes
 * where the dispatch sends a new one (for HTTP, its head deadline starts
 * then). A header is never guessed at (spec section 5): a connection whose
 * first bytes are not one is refused, a direct client too; and a kept
 * connection never sends another. The loop takes only the header's bytes
 * from the socket, so the client's own bytes behind it stay there for
 * whatever reads next: it peeks, parses the header bytes it took so far
 * followed by what it saw, then takes exactly the rest of the header once
 * it is complete, or everything it saw while the header is undecided (all
 * of it header). So no connection ever waits with header bytes unread in
 * its socket: a one-shot, level-triggered arm would fire again at once.
 * A bad header (counted by error in proxy_rejected), or none complete
 * within the deadline (proxy_timeouts), closes the connection without an
 * answer (the peer, the balancer or a client that went around it, does not
 * speak the protocol it would be in): a FIN, and its input read and
 * dropped so the close is no reset. A peer that leaves before its header
 * is whole is peer_closed. Addresses of a datagram transport (UDP4, UDP6)
 * or AF_UNIX are taken as sent: they name the client all the same.
 *
 * Limits. At most max_conns connections are open at once (waiting here, in
 * the ring, or in workers until fa_acceptor_finish): at the limit the loop
 * stops accepting and the kernel backlog is the buffer, as it is for a full
 * ring under FA_DISPATCH_ACCEPT. Under FA_DISPATCH_READABLE a full ring does
 * not stop accepting: connections keep leaving the kernel queue and wait
 * here, and the ones that become readable wait in a FIFO for ring space.
 *
 * Errors of accept4():
 *  EINTR                               retried
 *  EAGAIN                              queue drained: back to epoll_wait
 *  ECONNABORTED EPROTO EPERM and the   counted; the next connection is
 *  network errors Linux reports early  accepted (the peer is gone or was
 *  (ENETDOWN ENOPROTOOPT EHOSTDOWN     refused by a firewall rule)
 *  ENONET EHOSTUNREACH EOPNOTSUPP
 *  ENETUNREACH)
 *  EMFILE ENFILE ENOBUFS ENOMEM        counted; the loop stops accepting for
 *                                      5 ms, doubling to 1 s, then tries
 *                                      again (the listener leaves the epoll
 *                                      set meanwhile, so nothing spins, and
 *                                      waiting connections are still served)
 *  anything else                       the loop stops and returns -errno
 *
 * Under a steady stream that keeps every worker busy (a wake-up found the
 * ring still holding work and came soon after the one before), the loop naps
 * up to nap_ns before it looks again, instead of waking once per connection:
 * the workers could not start on a connection any sooner, and the ones that
 * arrive meanwhile are taken in one batch. A worker that empties the ring
 * ends the nap at once.
 *
 * During a burst (a wake-up that finds FA_SPIN_TRIGGER or more connections
 * queued) the loop keeps polling accept4 until spin_ns pass without a new
 * connection, instead of paying a wake-up per batch; it asks the scheduler
 * for a short time slice so that its wake-up preempts whatever runs on its
 * CPU; and it grows the fd table at init so no fd-table reallocation (an RCU
 * grace period in a threaded process) stalls it mid-burst.
 *
 * What a full ring does depends on the overload policy:
 *  FA_OVERLOAD_QUEUE (the default) waits for space: under FA_DISPATCH_ACCEPT
 *      the loop stops accepting (the kernel backlog becomes the second
 *      buffer), under FA_DISPATCH_READABLE ready connections wait here.
 *      Nothing is dropped.
 *  FA_OVERLOAD_SHED: a connection that finds the ring full is answered at
 *      once with the shed response (best effort: one nonblocking send) and a
 *      FIN, its pending input is discarded (so the close does not turn into
 *      a reset), and it is closed and counted in stats.shed. Clients fail
 *      fast instead of waiting.
 *
 * Stopping drains what sat in the kernel queue when the stop was asked for,
 * serves every connection that is readable by then (new, waiting or given
 * back), closes the idle ones with a FIN (never a reset), then ends
 * listening at once (see end_listen), so that a client arriving later is
 * refused instead of completing a handshake nobody will accept, and closes
 * the lot; aborting skips the drain and the serving.
 *
 * How listening ends (fa_acceptor_set_end_listen):
 *  FA_END_RELEASE (the default): this process lets go of the listening
 *      socket at once. A placeholder socket made at init is dup2()ed over
 *      listen_fd: the descriptor number stays valid for its owner (Python's
 *      socket object closes it later) but no longer refers to the listener.
 *      A listener only this process holds is then closed, and refuses new
 *      clients; one shared with other processes (inherited, systemd's)
 *      keeps listening for them.
 *  FA_END_KEEP: leave it listening, for an owner that serves it again
 *      (socketserver's shutdown() then serve_forever()).
 * Either way the listener leaves the loop's epoll set first: an epoll
 * registration lives as long as the socket, not the descriptor, and a dead
 * loop must not take the wake-ups of other processes sharing the socket.
 * Connections whose handshake completes in the instant between the drain's
 * last accept4 and the release are reset by the kernel with the rest of a
 * closing listener's queue: a window of one system call.
 */
#ifndef FA_ACCEPT_H
#define FA_ACCEPT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fa_conn.h"
#include "fa_park.h"
#include "fa_proxy.h"
#include "fa_ring.h"

/* errno values above this are counted in the last slot. */
#define FA_ERRNO_SLOTS 160

/* During a burst, keep polling this long after the last accepted connection
 * before sleeping in epoll_wait: a sleeping loop pays a wake-up (tens to
 * hundreds of microseconds on a virtual CPU) per batch, and during a burst
 * the kernel queue fills in that time. Idle servers and steady loads that
 * find one or two connections per wake-up never poll. */
#define FA_SPIN_DEFAULT_NS 200000u
#define FA_SPIN_MAX_NS 100000000u
/* A wake-up that finds at least this many connections queued starts polling. */
#define FA_SPIN_TRIGGER 4u

/* Longest nap while the workers are busy (see above). At most this long a
 * connection waits in the kernel queue for the loop while every worker is
 * busy anyway; a 128-connection backlog could only fill during a nap at over
 * 128 / nap_ns connections per second (640,000 at 200 us), above the
 * rate one thread can accept. 0 turns napping off. */
#define FA_NAP_DEFAULT_NS 200000u
#define FA_NAP_MAX_NS 1000000u

/* fds beyond a full ring that the fd table is grown for at init: workers'
 * connections in service, the kernel queue's next batch, the app's own. */
#define FA_FD_SLACK 1024u

/* Scheduler time slice the accept loop asks for when it runs under the
 * normal policy (see sched_start). */
#define FA_ACCEPT_SLICE_NS 100000u
/* SCHED_FIFO priority of a realtime loop: the lowest, above every normal
 * task and below any realtime task the machine's owner set up. */
#define FA_ACCEPT_RT_PRIORITY 1
/* A realtime loop turns normal once every sleep for FA_RT_STEADY_NS was
 * shorter than FA_RT_IDLE_NS (or the workers had work meanwhile), unless in
 * the last FA_RT_HOT_NS it took half the backlog (FA_RT_BURST at least)
 * from the kernel queue before the queue ran empty; see
 * fa_acceptor_set_realtime. */
#define FA_RT_STEADY_NS 100000000u
#define FA_RT_IDLE_NS 10000000u
#define FA_RT_BURST 16u
#define FA_RT_HOT_NS 100000000u

#define FA_BACKOFF_MIN_MS 5
#define FA_BACKOFF_MAX_MS 1000

/* epoll events handled per wake-up */
#define FA_EVENTS 64

/* Where a new connection goes (fa_acceptor_set_conns). */
#define FA_DISPATCH_ACCEPT 0
#define FA_DISPATCH_READABLE 1
/* The default limit on open connections, and the largest one. */
#define FA_MAX_CONNS_DEFAULT 10000u
#define FA_MAX_CONNS_MAX (1u << 24)

/* How listening ends after the final drain (fa_acceptor_set_end_listen). */
#define FA_END_RELEASE 0
#define FA_END_KEEP 1

/* HTTP rejections the loop counts (400 408 413 414 431 501 505). */
#define FA_HTTP_REJECT_SLOTS 7

/* PROXY header rejections the loop counts, at -rc for each FA_PROXY_E* rc
 * (slot 0: any other, which the parser never returns). */
#define FA_PROXY_REJECT_SLOTS 8
_Static_assert(-FA_PROXY_ECHECKSUM < FA_PROXY_REJECT_SLOTS && FA_PROXY_ENOTPROXY == -1,
               "a slot for every FA_PROXY_E* result");
/* The longest version 2 header the loop takes (the bound of fa_proxy.h's
 * default: balancers send a few hundred bytes at most). */
#define FA_PROXY_MAX_HEADER FA_PROXY_DEFAULT_MAX_LEN

/* What the loop hands a worker with an HTTP request (fa_conn.data): the
 * parsed head, its fields, then every byte read from the connection so far
 * (the head, and whatever came after it: the body's start, the next
 * pipelined request). One allocation; the popper frees it. Offsets in head
 * and fields are into fa_http_req_buf(). */
typedef struct fa_http_req {
    fa_http_head head;
    uint32_t len;                   /* bytes at fa_http_req_buf() */
    fa_http_field fields[];         /* head.nfields of them, then the bytes */
} fa_http_req;

static inline char *fa_http_req_buf(fa_http_req *r)
{
    return (char *)(r->fields + r->head.nfields);
}

/* Overload policies (fa_acceptor_set_overload). */
#define FA_OVERLOAD_QUEUE 0
#define FA_OVERLOAD_SHED 1
/* Longest shed response. It goes out in one nonblocking send() on a fresh
 * socket, so anything beyond the initial send buffer (net.ipv4.tcp_wmem,
 * 16 KiB by default) and the peer's first window may be cut. */
#define FA_SHED_RESPONSE_MAX 65536u
/* Input a shed connection may have sent that is read and discarded before
 * the close (unread input would turn the FIN into a reset). */
#define FA_SHED_DISCARD_MAX 65536u

/* Every accepted connection ends in exactly one of: a worker (then
 * fa_acceptor_finish or fa_acceptor_keep), shed, idle_closed, peer_closed,
 * stop_closed, http_rejected[], proxy_rejected[], proxy_timeouts, or an
 * errors[] count (epoll refused it, or memory ran out). */
typedef struct fa_accept_stats {
    _Atomic uint64_t accepted;          /* taken from the kernel queue, shed ones too */
    _Atomic uint64_t batches;           /* wake-ups (or polls) that accepted */
    _Atomic uint64_t naps;              /* naps taken while the workers were busy */
    _Atomic uint64_t ring_full_waits;   /* times the loop waited for space */
    _Atomic uint64_t emfile_pauses;     /* back-offs on EMFILE/ENFILE/ENOBUFS/ENOMEM */
    _Atomic uint64_t shed;              /* answered and closed: the ring was full */
    _Atomic uint64_t dispatched;        /* pushed into the ring after waiting here */
    _Atomic uint64_t kept;              /* given back by a worker and re-armed */
    _Atomic uint64_t idle_closed;       /* closed here: idle past idle_ns */
    _Atomic uint64_t peer_closed;       /* closed here: the peer left while it waited */
    _Atomic uint64_t stop_closed;       /* closed here, idle, at a stop */
    _Atomic uint64_t max_conns_pauses;  /* times accepting stopped at max_conns */
    _Atomic uint64_t waiting;           /* gauge: connections waiting here now */
    _Atomic uint64_t http_requests;     /* HTTP heads parsed here and dispatched */
    _Atomic uint64_t http_rejected[FA_HTTP_REJECT_SLOTS];  /* answered here and closed */
    _Atomic uint64_t proxy_rejected[FA_PROXY_REJECT_SLOTS]; /* bad PROXY header: closed */
    _Atomic uint64_t proxy_timeouts;    /* no whole PROXY header by its deadline: closed */
    _Atomic uint64_t errors[FA_ERRNO_SLOTS];   /* accept4 failures by errno */
} fa_accept_stats;

typedef struct fa_acceptor {
    fa_ring ring;
    fa_lot lot;
    fa_accept_stats stats;
    fa_conns conns;         /* the waiting connections: the loop's thread only */
    fa_backq back;          /* kept connections on their way back to the loop */
    int listen_fd;          /* borrowed: the caller owns and closes it */
    int epoll_fd;
    int wake_fd;            /* eventfd: stop, abort, and the workers' kicks */
    int placeholder_fd;     /* dup2()ed over listen_fd by FA_END_RELEASE */
    _Atomic int end_listen; /* FA_END_RELEASE or FA_END_KEEP */
    int dispatch;           /* FA_DISPATCH_ACCEPT or FA_DISPATCH_READABLE */
    uint64_t idle_ns;       /* how long a connection may wait here idle; 0: for ever */
    uint32_t max_conns;     /* open connections at most */
    uint32_t max_batch;     /* accept4 calls per epoll wake-up */
    uint32_t spin_ns;       /* poll this long after the last accept */
    uint32_t nap_ns;        /* nap this long while the workers are busy */
    int overload;           /* FA_OVERLOAD_QUEUE or FA_OVERLOAD_SHED */
    uint32_t shed_len;
    char *shed_response;    /* owned: copied by set_overload, freed by destroy */
    int listening;          /* the listener is in the epoll set (loop only) */
    int exclusive;          /* register it with EPOLLEXCLUSIVE (a listener shared by processes) */
    uint64_t grace_ns;      /* at a stop, waiting connections get this long for a request */
    int realtime;           /* ask for SCHED_FIFO while the loop runs */
    _Atomic int running_realtime;       /* the loop runs under SCHED_FIFO now */
    int http;               /* heads are read and parsed here (fa_acceptor_set_http) */
    fa_http_limits http_lim;
    uint64_t head_ns;       /* a request head must be complete this long after it starts */
    uint64_t max_body;      /* Content-Length above it: 413 from here (0: no limit) */
    fa_http_head http_head; /* the parser's output (loop only) */
    fa_http_field *http_fields;     /* http_lim.max_fields of them (loop only) */
    char *rbuf;             /* where the loop reads heads into (loop only) */
    uint32_t rbuf_cap;
    int proxy;              /* a PROXY header first (fa_acceptor_set_proxy) */
    uint64_t proxy_ns;      /* ... complete this long after the accept; 0: no deadline */
    char *proxy_buf;        /* FA_PROXY_MAX_HEADER bytes: where headers are parsed (loop only) */
    alignas(FA_CACHE_LINE) _Atomic int64_t open;   /* open connections of ours */
    _Atomic uint32_t loop_sleeping;     /* the loop may sleep in epoll_wait: kick it */
    _Atomic uint32_t accept_paused;     /* at max_conns: a close must kick */
    _Atomic uint32_t loop_done;         /* no more re-arming: keep() closes */
    _Atomic uint32_t stopping;
    _Atomic uint32_t aborting;
} fa_acceptor;

/* Sets listen_fd nonblocking and allocates the ring, lot, epoll, eventfd,
 * the table of waiting connections, the way back and the placeholder
 * socket. Dispatch FA_DISPATCH_ACCEPT, no idle deadline, max_conns
 * FA_MAX_CONNS_DEFAULT. Returns 0 or -errno (-EINVAL for a bad capacity or
 * max_batch). On error nothing is left allocated. */
int fa_acceptor_init(fa_acceptor *a, int listen_fd, uint64_t capacity, uint32_t max_batch);

/* Sets the dispatch (FA_DISPATCH_*), the idle timeout of a waiting
 * connection (0: none) and the limit on open connections (1 ..
 * FA_MAX_CONNS_MAX). Returns 0, -EINVAL, or -ENOMEM (the previous setting is
 * kept). Call before fa_acceptor_run. */
int fa_acceptor_set_conns(fa_acceptor *a, int dispatch, uint64_t idle_ns, uint32_t max_conns);

/* Makes the loop an HTTP/1.1 front: it reads every connection's request
 * head and parses it (fa_http.h, with these limits) before a worker sees
 * it, and pushes it with an fa_http_req in fa_conn.data. Empty lines
 * before a request line are ignored (RFC 9112 section 2.2): alone they
 * start no head. A head not complete head_ns after its first byte (or
 * after the accept, for a new connection) gets a 408, a malformed one its
 * 4xx/5xx, a Content-Length above max_body (0: none) a 413, all from
 * here; a kept connection idle past idle_ns is closed with a FIN. Implies
 * FA_DISPATCH_READABLE. Returns 0, -EINVAL or -ENOMEM. Call before
 * fa_acceptor_run. */
int fa_acceptor_set_http(fa_acceptor *a, const fa_http_limits *lim, uint64_t head_ns,
                         uint64_t max_body);

/* Behind a load balancer: with on, every new connection must start with a
 * PROXY protocol header (see the top of this file), complete within
 * deadline_ns of its accept (0: no deadline); its source address becomes
 * the connection's peer. Works with either dispatch and with HTTP. Off
 * (the default), nothing is read before the dispatch. Returns 0 or
 * -ENOMEM. Call before fa_acceptor_run. */
int fa_acceptor_set_proxy(fa_acceptor *a, int on, uint64_t deadline_ns);

/* A listener shared by several processes (each runs a loop on it): with
 * on, it joins the epoll set with EPOLLEXCLUSIVE, so a new connection wakes
 * one loop, not all (the others would find the queue empty). Call before
 * fa_acceptor_run. */
void fa_acceptor_set_exclusive(fa_acceptor *a, int on);

/* At a stop, once the kernel queue is drained and the listener let go,
 * connections waiting in C get up to grace_ns for their next request
 * (served: the server answers it and closes), before the idle ones are
 * closed with a FIN. A client sending its next request on a kept connection
 * at the moment of a stop (a reload) is then answered, not reset. 0 (the
 * default): close the idle ones at once. Call before fa_acceptor_run. */
void fa_acceptor_set_grace(fa_acceptor *a, uint64_t grace_ns);

/* With on, the loop asks for SCHED_FIFO at FA_ACCEPT_RT_PRIORITY when it
 * starts (fa_acceptor_running_realtime says whether it runs so now). A
 * normal task at the loop's weight, woken on a CPU where another one runs,
 * can wait for that one's slice to end: a whole scheduler tick (4 ms at
 * HZ=250), in which a burst overflows a 128-connection backlog. A realtime
 * loop preempts at once; it never spins on another thread (the ring and the
 * way back are lock-free and never wait), and its work per event is bounded.
 * Preempting on every event has a price, though: under a steady load (a
 * stream of requests on open connections, or of connections one or two at
 * a time) the loop would take the CPU from a worker or the client once per
 * event instead of once per batch. So the loop turns normal under a steady
 * load (FA_RT_STEADY_NS without a sleep of FA_RT_IDLE_NS with the ring
 * empty) unless it is in a burst (in the last FA_RT_HOT_NS it took half the
 * backlog from the kernel queue before the queue ran empty), and realtime
 * again once it idles (a normal loop sleeps FA_RT_IDLE_NS at most, so its
 * next wake-up after a quiet spell is a realtime one) or a burst comes; each
 * switch is one sched_setattr. Refused at start (no CAP_SYS_NICE and RLIMIT_RTPRIO 0,
 * or a cgroup without a realtime budget), the loop runs under the normal
 * policy with a short time slice throughout. Call before fa_acceptor_run. */
void fa_acceptor_set_realtime(fa_acceptor *a, int on);
static inline int fa_acceptor_running_realtime(fa_acceptor *a)
{
    return atomic_load_explicit(&a->running_realtime, memory_order_relaxed);
}

/* Sets how long the loop keeps polling after its last accepted connection
 * (0: sleep in epoll_wait at once). Returns 0 or -EINVAL above FA_SPIN_MAX_NS.
 * Call before fa_acceptor_run. */
int fa_acceptor_set_spin(fa_acceptor *a, uint32_t spin_ns);

/* Sets the longest nap while the workers are busy (0: never nap). Returns 0,
 * or -EINVAL above FA_NAP_MAX_NS. Call before fa_acceptor_run. */
int fa_acceptor_set_nap(fa_acceptor *a, uint32_t nap_ns);

/* Sets what the loop does with a connection that finds the ring full (see
 * the top of this file); response (len bytes, may be 0) is copied. Returns 0,
 * -EINVAL for an unknown policy or len above FA_SHED_RESPONSE_MAX, or
 * -ENOMEM (the previous setting is kept). Call before fa_acceptor_run. */
int fa_acceptor_set_overload(fa_acceptor *a, int policy, const void *response, size_t len);

/* Sets how listening ends once the loop returns (see the top of this file).
 * Returns 0 or -EINVAL. Safe from any thread, also while the loop runs: it
 * takes effect when the loop returns (an owner giving up on a start sets
 * FA_END_KEEP, then aborts, to serve the same listener again later). */
int fa_acceptor_set_end_listen(fa_acceptor *a, int how);

/* Runs the loop until stopped or a fatal error. Blocks the asynchronous
 * signals in the calling thread while it runs, so they reach the other
 * threads (the synchronous ones, SIGSEGV and its kin, stay deliverable so
 * that a fault here reaches faulthandler instead of killing the process
 * silently). Ends listening and closes the lot on return, so workers drain
 * the ring and then see -ESHUTDOWN. Returns 0 after a stop, or -errno of the
 * error that ended it. */
int fa_acceptor_run(fa_acceptor *a);

/* Asks the loop to drain the kernel queue once more, serve what is
 * readable, close what is idle and return. Safe from any thread, any number
 * of times, before or during run. */
void fa_acceptor_stop(fa_acceptor *a);

/* Asks the loop to return at once, even while it waits for ring space. */
void fa_acceptor_abort(fa_acceptor *a);

/* A worker is done with a connection it popped: closes fd (unless it is
 * negative: the handler closed it or took it away) and counts it out of the
 * open connections. Any thread. */
void fa_acceptor_finish(fa_acceptor *a, int fd);

/* A worker gives a connection back to wait for its next request, with the
 * bytes it already read past the request it served (data, len: malloc'd,
 * or NULL; they become the loop's). Returns 1 when the loop takes it (from
 * then on its end is the loop's to count: a loop that ends before taking
 * it back closes it and counts it in stop_closed), 0 when it was closed
 * instead (the server stops, or the way back was full) and counted out like
 * fa_acceptor_finish. Any thread. */
int fa_acceptor_keep(fa_acceptor *a, int fd, void *data, uint32_t len);

/* Frees everything; closes the fds still queued in the ring, waiting here
 * or on the way back (not listen_fd). Call only when no thread runs or
 * waits on the acceptor. */
void fa_acceptor_destroy(fa_acceptor *a);

/* Relaxed snapshots of the counters, for stats. */
static inline uint64_t fa_stat_load(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}
static inline uint64_t fa_stat_accepted(fa_acceptor *a) { return fa_stat_load(&a->stats.accepted); }
static inline uint64_t fa_stat_batches(fa_acceptor *a) { return fa_stat_load(&a->stats.batches); }
static inline uint64_t fa_stat_naps(fa_acceptor *a) { return fa_stat_load(&a->stats.naps); }
static inline uint64_t fa_stat_ring_full_waits(fa_acceptor *a) { return fa_stat_load(&a->stats.ring_full_waits); }
static inline uint64_t fa_stat_emfile_pauses(fa_acceptor *a) { return fa_stat_load(&a->stats.emfile_pauses); }
static inline uint64_t fa_stat_shed(fa_acceptor *a) { return fa_stat_load(&a->stats.shed); }
static inline uint64_t fa_stat_dispatched(fa_acceptor *a) { return fa_stat_load(&a->stats.dispatched); }
static inline uint64_t fa_stat_kept(fa_acceptor *a) { return fa_stat_load(&a->stats.kept); }
static inline uint64_t fa_stat_idle_closed(fa_acceptor *a) { return fa_stat_load(&a->stats.idle_closed); }
static inline uint64_t fa_stat_peer_closed(fa_acceptor *a) { return fa_stat_load(&a->stats.peer_closed); }
static inline uint64_t fa_stat_stop_closed(fa_acceptor *a) { return fa_stat_load(&a->stats.stop_closed); }
static inline uint64_t fa_stat_max_conns_pauses(fa_acceptor *a) { return fa_stat_load(&a->stats.max_conns_pauses); }
static inline uint64_t fa_stat_waiting(fa_acceptor *a) { return fa_stat_load(&a->stats.waiting); }
static inline uint64_t fa_stat_http_requests(fa_acceptor *a) { return fa_stat_load(&a->stats.http_requests); }
/* Rejections with `status` (400 408 413 414 431 501 505), 0 for another. */
uint64_t fa_stat_http_rejected(fa_acceptor *a, int status);
/* PROXY headers refused with fa_proxy_parse's result rc (FA_PROXY_E*), 0 for
 * another rc. */
static inline uint64_t fa_stat_proxy_rejected(fa_acceptor *a, int rc)
{
    return rc < 0 && -rc < FA_PROXY_REJECT_SLOTS ? fa_stat_load(&a->stats.proxy_rejected[-rc])
                                                 : 0;
}
static inline uint64_t fa_stat_proxy_timeouts(fa_acceptor *a) { return fa_stat_load(&a->stats.proxy_timeouts); }
static inline int64_t fa_stat_open(fa_acceptor *a)
{
    return atomic_load_explicit(&a->open, memory_order_relaxed);
}
static inline uint64_t fa_stat_errors(fa_acceptor *a, int err)
{
    return err >= 0 && err < FA_ERRNO_SLOTS ? fa_stat_load(&a->stats.errors[err]) : 0;
}

#endif /* FA_ACCEPT_H */

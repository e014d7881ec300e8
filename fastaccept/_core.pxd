# Declarations of the C core in src/. Every function here is safe to call
# without the GIL; none of them touches a Python object.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct sockaddr_storage:
        unsigned short ss_family


cdef extern from "fa_config.h" nogil:
    uint64_t fa_now_ns()


cdef extern from "fa_ring.h" nogil:
    int FA_CONN_NEW
    int FA_CONN_RESUMED

    ctypedef struct fa_conn:
        int fd
        socklen_t addrlen
        uint64_t accepted_ns
        uint64_t ready_ns
        uint32_t kind
        uint32_t data_len
        void *data
        sockaddr_storage addr

    ctypedef struct fa_ring:
        uint64_t capacity

    unsigned int FA_RING_MIN_CAPACITY
    unsigned int FA_RING_MAX_CAPACITY
    bint fa_ring_capacity_ok(uint64_t capacity)
    int fa_ring_init(fa_ring *r, uint64_t capacity)
    void fa_ring_destroy(fa_ring *r, int close_fds)
    uint64_t fa_ring_depth(fa_ring *r)
    uint64_t fa_ring_high_water "fa_ring_high_water_get"(fa_ring *r)
    int fa_ring_push(fa_ring *r, const fa_conn *c)
    int fa_ring_pop(fa_ring *r, fa_conn *out)


cdef extern from "fa_park.h" nogil:
    ctypedef struct fa_lot:
        pass

    int fa_lot_init(fa_lot *lot)
    void fa_lot_destroy(fa_lot *lot)
    int fa_lot_wake_one(fa_lot *lot)
    void fa_lot_close(fa_lot *lot)
    uint32_t fa_lot_parked(fa_lot *lot)
    uint64_t fa_lot_wake_calls(fa_lot *lot)
    uint64_t fa_lot_sleeps(fa_lot *lot)
    bint fa_lot_is_closed(fa_lot *lot)
    int fa_try_pop(fa_ring *r, fa_lot *lot, fa_conn *out)
    int fa_pop_wait(fa_ring *r, fa_lot *lot, fa_conn *out, int64_t timeout_ns)


cdef extern from "fa_conn.h" nogil:
    ctypedef struct fa_list:
        int32_t head
        uint32_t len

    ctypedef struct fa_conns:
        fa_list idle
        fa_list head
        fa_list proxy
        fa_list ready

    ctypedef struct fa_backq:
        pass

    int fa_list_pop(fa_conns *t, fa_list *l)
    int fa_backq_pop(fa_backq *q, void **data, uint32_t *len)


cdef extern from "fa_accept.h" nogil:
    int FA_ERRNO_SLOTS

    ctypedef struct fa_accept_stats:
        pass

    ctypedef struct fa_acceptor:
        fa_ring ring
        fa_lot lot
        fa_conns conns
        fa_backq back
        int dispatch
        uint64_t idle_ns
        uint32_t max_conns
        uint32_t max_batch
        uint32_t spin_ns
        uint32_t nap_ns
        int overload
        int epoll_fd
        int wake_fd
        int placeholder_fd
        int end_listen
        int proxy
        uint64_t proxy_ns

    int fa_acceptor_init(fa_acceptor *a, int listen_fd, uint64_t capacity, uint32_t max_batch)
    int FA_DISPATCH_ACCEPT
    int FA_DISPATCH_READABLE
    unsigned int FA_MAX_CONNS_DEFAULT
    unsigned int FA_MAX_CONNS_MAX
    int fa_acceptor_set_conns(fa_acceptor *a, int dispatch, uint64_t idle_ns, uint32_t max_conns)
    unsigned int FA_SPIN_DEFAULT_NS
    unsigned int FA_SPIN_MAX_NS
    int fa_acceptor_set_spin(fa_acceptor *a, uint32_t spin_ns)
    unsigned int FA_NAP_DEFAULT_NS
    unsigned int FA_NAP_MAX_NS
    int fa_acceptor_set_nap(fa_acceptor *a, uint32_t nap_ns)
    int FA_OVERLOAD_QUEUE
    int FA_OVERLOAD_SHED
    unsigned int FA_SHED_RESPONSE_MAX
    int fa_acceptor_set_overload(fa_acceptor *a, int policy, const void *response, size_t len)
    int FA_END_RELEASE
    int FA_END_KEEP
    int fa_acceptor_set_end_listen(fa_acceptor *a, int how)
    void fa_acceptor_set_exclusive(fa_acceptor *a, int on)
    void fa_acceptor_set_grace(fa_acceptor *a, uint64_t grace_ns)
    void fa_acceptor_set_realtime(fa_acceptor *a, int on)
    int fa_acceptor_set_proxy(fa_acceptor *a, int on, uint64_t deadline_ns)
    int fa_acceptor_running_realtime(fa_acceptor *a)
    int fa_acceptor_run(fa_acceptor *a)
    void fa_acceptor_stop(fa_acceptor *a)
    void fa_acceptor_abort(fa_acceptor *a)
    void fa_acceptor_destroy(fa_acceptor *a)
    void fa_acceptor_finish(fa_acceptor *a, int fd)
    int fa_acceptor_keep(fa_acceptor *a, int fd, void *data, uint32_t len)
    uint64_t fa_stat_accepted(fa_acceptor *a)
    uint64_t fa_stat_batches(fa_acceptor *a)
    uint64_t fa_stat_naps(fa_acceptor *a)
    uint64_t fa_stat_ring_full_waits(fa_acceptor *a)
    uint64_t fa_stat_emfile_pauses(fa_acceptor *a)
    uint64_t fa_stat_shed(fa_acceptor *a)
    uint64_t fa_stat_dispatched(fa_acceptor *a)
    uint64_t fa_stat_kept(fa_acceptor *a)
    uint64_t fa_stat_idle_closed(fa_acceptor *a)
    uint64_t fa_stat_peer_closed(fa_acceptor *a)
    uint64_t fa_stat_stop_closed(fa_acceptor *a)
    uint64_t fa_stat_max_conns_pauses(fa_acceptor *a)
    uint64_t fa_stat_waiting(fa_acceptor *a)
    int64_t fa_stat_open(fa_acceptor *a)
    uint64_t fa_stat_http_requests(fa_acceptor *a)
    uint64_t fa_stat_http_rejected(fa_acceptor *a, int status)
    uint64_t fa_stat_proxy_rejected(fa_acceptor *a, int rc)
    uint64_t fa_stat_proxy_timeouts(fa_acceptor *a)
    uint64_t fa_stat_errors(fa_acceptor *a, int err)


cdef extern from "fa_hist.h" nogil:
    enum: FA_HIST_BUCKETS       # an enum so that Cython takes it as an array size

    ctypedef struct fa_hist:
        pass

    void fa_hist_init(fa_hist *h)
    void fa_hist_record_ns(fa_hist *h, uint64_t ns)
    uint64_t fa_hist_snapshot(fa_hist *h, uint64_t *counts)
    uint64_t fa_hist_sum_us(fa_hist *h)
    uint64_t fa_hist_quantile_us(const uint64_t *counts, uint64_t total, double q)
    uint64_t fa_hist_bucket_low(unsigned int idx)
    unsigned int fa_hist_index(uint64_t us)


# ---------------------------------------------------------------------------
# HTTP/1.1 request heads, chunked bodies and percent-decoding (src/fa_http.h)

from libc.stdint cimport uint8_t, uint16_t


cdef extern from "fa_http.h" nogil:
    unsigned int FA_HTTP_DEFAULT_MAX_REQUEST_LINE
    unsigned int FA_HTTP_DEFAULT_MAX_FIELDS
    unsigned int FA_HTTP_DEFAULT_MAX_HEAD
    unsigned int FA_HTTP_MAX_CHUNK_LINE
    unsigned int FA_HTTP_MAX_TRAILER

    ctypedef struct fa_http_limits:
        uint32_t max_request_line
        uint32_t max_fields
        uint32_t max_head

    ctypedef struct fa_http_field:
        uint32_t name_off
        uint32_t name_len
        uint32_t value_off
        uint32_t value_len

    ctypedef struct fa_http_head:
        uint32_t head_len
        uint32_t method_off
        uint32_t method_len
        uint32_t target_off
        uint32_t target_len
        uint32_t path_len
        uint32_t nfields
        int64_t content_length
        uint8_t version_minor
        uint8_t chunked
        uint8_t keep_alive
        uint8_t expect_continue
        uint8_t upgrade

    ctypedef struct fa_http_scan:
        uint32_t pos

    void fa_http_scan_init(fa_http_scan *s)
    int fa_http_parse_head(const char *buf, size_t len, fa_http_scan *scan,
                           const fa_http_limits *lim, fa_http_head *out,
                           fa_http_field *fields)

    ctypedef struct fa_http_chunked:
        uint64_t max_body
        uint64_t body
        uint16_t state
        int status

    void fa_http_chunked_init(fa_http_chunked *c, uint64_t max_body)
    int fa_http_chunked_feed(fa_http_chunked *c, const char *inp, size_t len, char *out,
                             size_t *consumed, size_t *produced)
    size_t fa_http_unquote(const char *inp, size_t len, char *out)


# The HTTP side of the accept loop (src/fa_accept.h): a request the loop
# parsed, as it reaches a worker, and the switch that makes the loop parse.
cdef extern from "fa_accept.h" nogil:
    ctypedef struct fa_http_req:
        fa_http_head head
        uint32_t len
        fa_http_field fields[1]

    char *fa_http_req_buf(fa_http_req *r)
    int fa_acceptor_set_http(fa_acceptor *a, const fa_http_limits *lim, uint64_t head_ns,
                             uint64_t max_body)


# ---------------------------------------------------------------------------
# PROXY protocol headers, versions 1 and 2 (src/fa_proxy.h)

cdef extern from "fa_proxy.h" nogil:
    unsigned int FA_PROXY_V1_MAX
    unsigned int FA_PROXY_V1_MIN
    unsigned int FA_PROXY_V2_FIXED
    unsigned int FA_PROXY_DEFAULT_MAX_LEN
    unsigned int FA_PROXY_MIN_MAX_LEN
    unsigned int FA_PROXY_MAX_MAX_LEN

    int FA_PROXY_ENOTPROXY
    int FA_PROXY_EMALFORMED
    int FA_PROXY_EVERSION
    int FA_PROXY_ECOMMAND
    int FA_PROXY_EFAMILY
    int FA_PROXY_ETOOLONG
    int FA_PROXY_ECHECKSUM

    int FA_PROXY_LOCAL
    int FA_PROXY_PROXY
    int FA_PROXY_AF_UNSPEC
    int FA_PROXY_AF_INET
    int FA_PROXY_AF_INET6
    int FA_PROXY_AF_UNIX
    int FA_PROXY_UNSPEC
    int FA_PROXY_STREAM
    int FA_PROXY_DGRAM

    ctypedef struct fa_proxy_result:
        uint32_t header_len
        uint8_t version
        uint8_t command
        uint8_t family
        uint8_t transport
        socklen_t src_len
        socklen_t dst_len
        sockaddr_storage src
        sockaddr_storage dst
        uint32_t tlv_off
        uint32_t tlv_len
        uint32_t authority_off
        uint32_t authority_len
        uint8_t has_authority
        uint8_t has_ssl
        uint8_t has_crc32c
        uint8_t ssl_client
        uint32_t ssl_verify

    int fa_proxy_parse_max(const char *buf, size_t len, size_t max_len, fa_proxy_result *out)
    int fa_proxy_parse(const char *buf, size_t len, fa_proxy_result *out)
    uint32_t fa_proxy_crc32c(uint32_t crc, const void *buf, size_t len)
    const char *fa_proxy_strerror(int rc)

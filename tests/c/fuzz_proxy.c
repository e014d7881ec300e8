/*
 * fuzz_proxy.c - libFuzzer target for src/fa_proxy.c: the PROXY protocol
 * header parser (versions 1 and 2).
 *
 * Each input is treated as the first bytes of a connection:
 *  - It is parsed at once with the default bound and with a bound derived
 *    from a hash of the input; the two agree wherever the bound does not
 *    decide, and a version 2 header longer than the bound is ETOOLONG.
 *  - Arriving in pieces: every prefix (up to 600 bytes, and at the header's
 *    end and at hashed offsets beyond) gives 0 or the whole input's result,
 *    0 before the point where the result is decided and the result from
 *    there on; a complete header is reported exactly when its last byte
 *    arrives. Prefixes at hashed offsets and at the header's end are parsed
 *    from a buffer of exactly that size, so that ASan sees any read past len.
 *  - A complete header's result is checked for its invariants: version,
 *    command, family and transport in range and consistent with the bytes;
 *    header_len inside the input and the bounds; v1 starting "PROXY " and
 *    ending at its only CRLF, its addresses and ports exactly the text
 *    (IPv4 and ports printed back must equal it; IPv6 text must give the
 *    same 16 bytes through glibc's inet_pton); v2 starting with the
 *    signature, its addresses the bytes of the address block, its TLV area
 *    the rest of the header and made of whole TLVs, a reported
 *    PP2_TYPE_AUTHORITY inside it; src_len/dst_len 0 exactly when the
 *    connection's own addresses stand.
 *  - A v2 header rejected only for its PP2_TYPE_CRC32C is parsed again
 *    with the right checksum written in (computed by a bitwise reference,
 *    not the parser's table): it must then be accepted, whole.
 *  - No error outside the FA_PROXY_E* values, and never 0 (undecided) for
 *    an input of max_len bytes or more.
 *
 * Build: `make fuzz` (clang, -fsanitize=fuzzer,address,undefined). With
 * -DFA_FUZZ_STANDALONE it has its own main that replays the files and
 * directories named on the command line, so it also runs under gcc's
 * sanitizers (tests/proxy/test_fuzz_replay.py does that over the corpus).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "fa_proxy.h"

/* Always on, whatever NDEBUG says: a failed check is a finding. */
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t fnv1a(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    return p;
}

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int is_error(int rc)
{
    return rc >= FA_PROXY_ECHECKSUM && rc <= FA_PROXY_ENOTPROXY;
}

/* Bit by bit, from the definition: the reference for the parser's table.
 * The 4 bytes at zero_at count as zero (NO_ZERO: none). */
#define NO_ZERO SIZE_MAX
static uint32_t crc32c_ref(const uint8_t *p, size_t n, size_t zero_at)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        uint8_t byte = (i >= zero_at && i - zero_at < 4) ? 0 : p[i];
        crc ^= byte;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int same_result(int ra, const fa_proxy_result *a, int rb, const fa_proxy_result *b)
{
    if (ra != rb)
        return 0;
    if (ra <= 0)
        return 1;
    return a->header_len == b->header_len && a->version == b->version &&
           a->command == b->command && a->family == b->family &&
           a->transport == b->transport && a->src_len == b->src_len &&
           a->dst_len == b->dst_len && memcmp(&a->src, &b->src, a->src_len) == 0 &&
           memcmp(&a->dst, &b->dst, a->dst_len) == 0 && a->tlv_off == b->tlv_off &&
           a->tlv_len == b->tlv_len && a->has_authority == b->has_authority &&
           a->authority_off == b->authority_off && a->authority_len == b->authority_len &&
           a->has_ssl == b->has_ssl && a->ssl_client == b->ssl_client &&
           a->ssl_verify == b->ssl_verify && a->has_crc32c == b->has_crc32c;
}

/* Parses data[0, k) from a buffer of exactly k bytes. */
static int parse_exact(const uint8_t *data, size_t k, size_t max_len, fa_proxy_result *out)
{
    char *copy = xmalloc(k);
    memcpy(copy, data, k);
    int rc = fa_proxy_parse_max(copy, k, max_len, out);
    free(copy);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Invariants of a complete header                                     */

static size_t field_end(const uint8_t *d, size_t at, size_t end, uint8_t stop)
{
    while (at < end && d[at] != stop)
        at++;
    return at;
}

/* text d[a, b) equals the decimal of v */
static void check_decimal(const uint8_t *d, size_t a, size_t b, unsigned v)
{
    char want[16];
    int n = snprintf(want, sizeof want, "%u", v);
    CHECK(n > 0 && (size_t)n == b - a && memcmp(want, d + a, b - a) == 0);
}

static void check_inet_text(const uint8_t *d, size_t a, size_t b, int af, const void *addr)
{
    char text[64];
    unsigned char bin[16];
    CHECK(b > a && b - a < sizeof text);
    memcpy(text, d + a, b - a);
    text[b - a] = 0;
    CHECK(inet_pton(af, text, bin) == 1);
    CHECK(memcmp(bin, addr, af == AF_INET ? 4 : 16) == 0);
    if (af == AF_INET) {
        const unsigned char *q = addr;
        char back[16];
        snprintf(back, sizeof back, "%u.%u.%u.%u", q[0], q[1], q[2], q[3]);
        CHECK(strcmp(back, text) == 0);     /* no leading zeros: one spelling */
    }
}

static void check_v1(const uint8_t *d, const fa_proxy_result *r)
{
    size_t n = r->header_len;
    CHECK(n >= FA_PROXY_V1_MIN && n <= FA_PROXY_V1_MAX);
    CHECK(memcmp(d, "PROXY ", 6) == 0);
    CHECK(d[n - 2] == '\r' && d[n - 1] == '\n');
    for (size_t i = 0; i < n - 2; i++)
        CHECK(d[i] >= 0x20 && d[i] <= 0x7E);
    CHECK(r->tlv_off == 0 && r->tlv_len == 0 && !r->has_authority && !r->has_ssl &&
          !r->has_crc32c);
    if (r->command == FA_PROXY_LOCAL) {
        CHECK(memcmp(d + 6, "UNKNOWN", 7) == 0 && (d[13] == '\r' || d[13] == ' '));
        CHECK(r->family == FA_PROXY_AF_UNSPEC && r->transport == FA_PROXY_UNSPEC);
        CHECK(r->src_len == 0 && r->dst_len == 0);
        return;
    }
    CHECK(r->command == FA_PROXY_PROXY && r->transport == FA_PROXY_STREAM);
    int v6 = r->family == FA_PROXY_AF_INET6;
    CHECK(v6 || r->family == FA_PROXY_AF_INET);
    CHECK(memcmp(d + 6, v6 ? "TCP6 " : "TCP4 ", 5) == 0);
    /* src dst sport dport: four fields separated by single spaces, then CRLF;
     * field k is d[f[k], f[k + 1] - 1) */
    size_t end = n - 2, f[5];
    f[0] = 11;
    for (int k = 1; k < 4; k++) {
        f[k] = field_end(d, f[k - 1], end, ' ');
        CHECK(f[k] < end && f[k] > f[k - 1]);
        f[k]++;
    }
    f[4] = end + 1;
    CHECK(field_end(d, f[3], end, ' ') == end);
    int af = v6 ? AF_INET6 : AF_INET;
    socklen_t want = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    CHECK(r->src_len == want && r->dst_len == want);
    CHECK(r->src.ss_family == af && r->dst.ss_family == af);
    const void *sa, *da;
    unsigned sp, dp;
    if (v6) {
        const struct sockaddr_in6 *s = (const void *)&r->src, *t = (const void *)&r->dst;
        sa = &s->sin6_addr;
        da = &t->sin6_addr;
        sp = ntohs(s->sin6_port);
        dp = ntohs(t->sin6_port);
        CHECK(s->sin6_flowinfo == 0 && s->sin6_scope_id == 0);
    } else {
        const struct sockaddr_in *s = (const void *)&r->src, *t = (const void *)&r->dst;
        sa = &s->sin_addr;
        da = &t->sin_addr;
        sp = ntohs(s->sin_port);
        dp = ntohs(t->sin_port);
    }
    check_inet_text(d, f[0], f[1] - 1, af, sa);
    check_inet_text(d, f[1], f[2] - 1, af, da);
    check_decimal(d, f[2], f[3] - 1, sp);
    check_decimal(d, f[3], f[4] - 1, dp);
}

static void check_tlvs(const uint8_t *d, size_t off, size_t end)
{
    while (off < end) {
        CHECK(end - off >= 3);
        size_t vlen = (size_t)d[off + 1] << 8 | d[off + 2];
        CHECK(end - off - 3 >= vlen);
        off += 3 + vlen;
    }
}

static void check_v2(const uint8_t *d, const fa_proxy_result *r, size_t max_len)
{
    size_t n = r->header_len;
    CHECK(n >= FA_PROXY_V2_FIXED && n <= max_len);
    CHECK(memcmp(d, SIG, 12) == 0 && d[12] >> 4 == 2);
    CHECK(r->command == (d[12] & 0x0F) && r->command <= FA_PROXY_PROXY);
    CHECK(r->family == d[13] >> 4 && r->transport == (d[13] & 0x0F));
    CHECK(n == 16u + ((size_t)d[14] << 8 | d[15]));
    size_t asize = 0;
    switch (d[13]) {
    case 0x00: asize = 0; break;
    case 0x11: case 0x12: asize = 12; break;
    case 0x21: case 0x22: asize = 36; break;
    case 0x31: case 0x32: asize = 216; break;
    default: CHECK(!"a family byte outside the seven");
    }
    CHECK(r->tlv_off == 16 + asize && r->tlv_off + r->tlv_len == n);
    check_tlvs(d, r->tlv_off, n);
    if (r->has_authority)
        CHECK(r->authority_off >= r->tlv_off + 3 &&
              r->authority_off + r->authority_len <= n &&
              d[r->authority_off - 3] == FA_PP2_TYPE_AUTHORITY);
    const uint8_t *a = d + 16;
    if (r->command == FA_PROXY_LOCAL || r->family == FA_PROXY_AF_UNSPEC) {
        CHECK(r->src_len == 0 && r->dst_len == 0);
        return;
    }
    if (r->family == FA_PROXY_AF_INET) {
        const struct sockaddr_in *s = (const void *)&r->src, *t = (const void *)&r->dst;
        CHECK(r->src_len == sizeof *s && r->dst_len == sizeof *t);
        CHECK(s->sin_family == AF_INET && t->sin_family == AF_INET);
        CHECK(memcmp(&s->sin_addr, a, 4) == 0 && memcmp(&t->sin_addr, a + 4, 4) == 0);
        CHECK(memcmp(&s->sin_port, a + 8, 2) == 0 && memcmp(&t->sin_port, a + 10, 2) == 0);
    } else if (r->family == FA_PROXY_AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)&r->src, *t = (const void *)&r->dst;
        CHECK(r->src_len == sizeof *s && r->dst_len == sizeof *t);
        CHECK(s->sin6_family == AF_INET6 && t->sin6_family == AF_INET6);
        CHECK(memcmp(&s->sin6_addr, a, 16) == 0 && memcmp(&t->sin6_addr, a + 16, 16) == 0);
        CHECK(memcmp(&s->sin6_port, a + 32, 2) == 0 && memcmp(&t->sin6_port, a + 34, 2) == 0);
    } else {
        CHECK(r->family == FA_PROXY_AF_UNIX);
        const struct sockaddr_un *s = (const void *)&r->src, *t = (const void *)&r->dst;
        size_t base = offsetof(struct sockaddr_un, sun_path);
        CHECK(s->sun_family == AF_UNIX && t->sun_family == AF_UNIX);
        CHECK(r->src_len >= base && r->src_len <= base + 108);
        CHECK(r->dst_len >= base && r->dst_len <= base + 108);
        CHECK(memcmp(s->sun_path, a, r->src_len - base) == 0);
        CHECK(memcmp(t->sun_path, a + 108, r->dst_len - base) == 0);
    }
}

static void check_complete(const uint8_t *d, size_t size, int rc, const fa_proxy_result *r,
                           size_t max_len)
{
    CHECK((size_t)rc == r->header_len && (size_t)rc <= size);
    CHECK(r->version == 1 || r->version == 2);
    if (r->version == 1)
        check_v1(d, r);
    else
        check_v2(d, r, max_len);
}

/* ------------------------------------------------------------------ */

/* The input arriving in pieces: every prefix up to 600 bytes gives 0 until
 * the result is decided and the whole input's result from there on. */
static void check_prefixes(const uint8_t *data, size_t size, size_t max_len, int rc,
                           const fa_proxy_result *whole, uint64_t h)
{
    size_t walk = size < 600 ? size : 600;
    int decided = 0;
    for (size_t k = 0; k <= walk; k++) {
        fa_proxy_result r;
        int got = fa_proxy_parse_max((const char *)data, k, max_len, &r);
        if (got == 0) {
            CHECK(!decided);        /* once decided, more bytes do not undecide */
            continue;
        }
        decided = 1;
        CHECK(same_result(got, &r, rc, whole));
    }
    if (rc > 0) {
        /* complete exactly when its last byte arrives */
        fa_proxy_result r;
        CHECK(parse_exact(data, (size_t)rc - 1, max_len, &r) == 0);
        CHECK(same_result(parse_exact(data, (size_t)rc, max_len, &r), &r, rc, whole));
    }
    if (walk == size && !decided)
        CHECK(rc == 0);
    /* three more cut points anywhere, from exact-size buffers */
    for (int t = 0; t < 3; t++) {
        size_t k = size ? (size_t)((h >> (16 * t)) % (size + 1)) : 0;
        fa_proxy_result r;
        int got = parse_exact(data, k, max_len, &r);
        CHECK(got == 0 || same_result(got, &r, rc, whole));
        if (rc > 0 && k >= (size_t)rc)
            CHECK(got == rc);
    }
}

/* A v2 header refused only for its checksum, with the right one written in. */
static void check_fixed_checksum(const uint8_t *data, size_t size, size_t max_len)
{
    CHECK(size >= 16 && memcmp(data, SIG, 12) == 0);
    size_t total = 16u + ((size_t)data[14] << 8 | data[15]);
    CHECK(total <= size && total <= max_len);
    size_t asize = 0;
    switch (data[13]) {
    case 0x11: case 0x12: asize = 12; break;
    case 0x21: case 0x22: asize = 36; break;
    case 0x31: case 0x32: asize = 216; break;
    default: break;
    }
    size_t off = 16 + asize, crc_at = 0;
    while (off < total) {
        size_t vlen = (size_t)data[off + 1] << 8 | data[off + 2];
        if (data[off] == FA_PP2_TYPE_CRC32C)
            crc_at = off + 3;
        off += 3 + vlen;
    }
    CHECK(off == total && crc_at != 0);
    uint8_t *copy = xmalloc(total);
    memcpy(copy, data, total);
    uint32_t crc = crc32c_ref(copy, total, crc_at);
    copy[crc_at] = (uint8_t)(crc >> 24);
    copy[crc_at + 1] = (uint8_t)(crc >> 16);
    copy[crc_at + 2] = (uint8_t)(crc >> 8);
    copy[crc_at + 3] = (uint8_t)crc;
    CHECK(fa_proxy_crc32c(0, copy, crc_at) ==
          crc32c_ref(copy, crc_at, NO_ZERO));    /* the table on a prefix */
    fa_proxy_result r;
    int rc = fa_proxy_parse_max((const char *)copy, total, max_len, &r);
    CHECK(rc == (int)total && r.has_crc32c);
    check_complete(copy, total, rc, &r, max_len);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = fnv1a(data, size);
    fa_proxy_result whole, bounded;
    int rc = fa_proxy_parse((const char *)data, size, &whole);
    CHECK(rc >= 0 || is_error(rc));
    if (rc > 0)
        check_complete(data, size, rc, &whole, FA_PROXY_DEFAULT_MAX_LEN);
    check_prefixes(data, size, FA_PROXY_DEFAULT_MAX_LEN, rc, &whole, h);

    /* a bound from the hash: FA_PROXY_MIN_MAX_LEN and a little over it
     * often, anything up to the format's bound sometimes */
    size_t max_len = (h >> 48) & 1 ? FA_PROXY_MIN_MAX_LEN + (h >> 8) % 64
                                   : (size_t)((h >> 8) % (FA_PROXY_MAX_MAX_LEN + 100));
    int rb = fa_proxy_parse_max((const char *)data, size, max_len, &bounded);
    CHECK(rb >= 0 || is_error(rb));
    size_t eff = max_len < FA_PROXY_MIN_MAX_LEN ? FA_PROXY_MIN_MAX_LEN
               : max_len > FA_PROXY_MAX_MAX_LEN ? FA_PROXY_MAX_MAX_LEN : max_len;
    /* max_len bytes always decide */
    if (size >= eff)
        CHECK(rb != 0);
    if (size >= FA_PROXY_DEFAULT_MAX_LEN)
        CHECK(rc != 0);
    if (size >= 16 && memcmp(data, SIG, 12) == 0 && data[12] >> 4 == 2 &&
        (data[12] & 0x0F) <= 1) {
        size_t total = 16u + ((size_t)data[14] << 8 | data[15]);
        int fam_ok = rc != FA_PROXY_EFAMILY && rb != FA_PROXY_EFAMILY;
        if (fam_ok && total > eff)
            CHECK(rb == FA_PROXY_ETOOLONG);
        if (fam_ok && total > FA_PROXY_DEFAULT_MAX_LEN)
            CHECK(rc == FA_PROXY_ETOOLONG);
        if (total <= eff && total <= FA_PROXY_DEFAULT_MAX_LEN)
            CHECK(same_result(rb, &bounded, rc, &whole));
        if (rb > 0)
            check_complete(data, size, rb, &bounded, eff);
        if (rb == FA_PROXY_ECHECKSUM)
            check_fixed_checksum(data, size, eff);
    } else {
        CHECK(same_result(rb, &bounded, rc, &whole));   /* the bound is for v2 only */
    }
    if (rb != 0 && (h >> 40) % 4 == 0)
        check_prefixes(data, size, max_len, rb, &bounded, h >> 3);
    return 0;
}

#ifdef FA_FUZZ_STANDALONE
#include <dirent.h>
#include <sys/stat.h>

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            buf = realloc(buf, cap *= 2);
            CHECK(buf != NULL);
        }
    }
    fclose(f);
    /* an exact-size copy, as libFuzzer gives, so that ASan sees over-reads */
    uint8_t *exact = xmalloc(n);
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

/* Replays every file named, and every file in every directory named. */
int main(int argc, char **argv)
{
    int count = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed |= replay_file(argv[i]) != 0;
            count++;
            continue;
        }
        DIR *dir = opendir(argv[i]);
        if (dir == NULL) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            char path[4096];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            failed |= replay_file(path) != 0;
            count++;
        }
        closedir(dir);
    }
    printf("replayed %d inputs\n", count);
    return failed;
}
#endif

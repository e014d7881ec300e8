/*
 * fa_proxy.c - the PROXY protocol header parser described in fa_proxy.h.
 */
#include "fa_proxy.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

/* Internal: a byte-reading step succeeded. 0 (more bytes needed) and the
 * FA_PROXY_E* values pass through every step unchanged. */
#define FA_PP_OK 1

static inline int fa_pp_digit(unsigned c) { return c - '0' < 10u; }

static inline int fa_pp_hexval(unsigned c)
{
    if (c - '0' < 10u)
        return (int)(c - '0');
    c |= 0x20;
    if (c - 'a' < 6u)
        return (int)(c - 'a' + 10);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Version 1: one line, checked byte by byte as it arrives.            */

/* Byte k of the line: FA_PP_OK with *c set, 0 when it has not arrived,
 * FA_PROXY_ETOOLONG when it would be past the 107 bytes a line may have. */
static inline int fa_pp_at(const unsigned char *b, size_t len, size_t k, unsigned *c)
{
    if (k >= FA_PROXY_V1_MAX)
        return FA_PROXY_ETOOLONG;
    if (k >= len)
        return 0;
    *c = b[k];
    return FA_PP_OK;
}

#define FA_PP_GET(k, c)                                   \
    do {                                                  \
        int r_ = fa_pp_at(b, len, (k), &(c));             \
        if (r_ != FA_PP_OK)                               \
            return r_;                                    \
    } while (0)

/* A decimal number at *pos: one or more digits, no leading zero, at most
 * max. Leaves *pos at the first byte after the digits (which has arrived). */
static int fa_pp_decimal(const unsigned char *b, size_t len, size_t *pos, unsigned max,
                         unsigned *out)
{
    size_t i = *pos;
    unsigned c, v = 0, nd = 0;
    for (;;) {
        FA_PP_GET(i, c);
        if (!fa_pp_digit(c))
            break;
        if (nd == 1 && v == 0)
            return FA_PROXY_EMALFORMED;     /* a leading zero */
        v = v * 10 + (c - '0');
        if (v > max)
            return FA_PROXY_EMALFORMED;
        nd++;
        i++;
    }
    if (nd == 0)
        return FA_PROXY_EMALFORMED;
    *pos = i;
    *out = v;
    return FA_PP_OK;
}

/* A dotted quad at *pos; *pos is left after its last digit. */
static int fa_pp_ipv4(const unsigned char *b, size_t len, size_t *pos, unsigned char out[4])
{
    size_t i = *pos;
    unsigned c, v;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            FA_PP_GET(i, c);
            if (c != '.')
                return FA_PROXY_EMALFORMED;
            i++;
        }
        int r = fa_pp_decimal(b, len, &i, 255, &v);
        if (r != FA_PP_OK)
            return r;
        out[part] = (unsigned char)v;
    }
    *pos = i;
    return FA_PP_OK;
}

/* RFC 4291 §2.2 text at *pos (groups, one "::", a final dotted quad);
 * *pos is left at the first byte that cannot continue it. */
static int fa_pp_ipv6(const unsigned char *b, size_t len, size_t *pos, unsigned char out[16])
{
    unsigned groups[8];
    int n = 0;          /* groups so far */
    int dc = -1;        /* groups before the "::", -1 before one is seen */
    size_t i = *pos;
    unsigned c;

    FA_PP_GET(i, c);
    if (c == ':') {
        FA_PP_GET(i + 1, c);
        if (c != ':')
            return FA_PROXY_EMALFORMED;
        dc = 0;
        i += 2;
        FA_PP_GET(i, c);
        if (fa_pp_hexval(c) < 0)
            goto end;                       /* "::" alone */
    }
    for (;;) {
        /* A group (or the dotted quad) starts at i. "::" stands for at
         * least one group, so with one there is room for 7. */
        int room = (dc < 0 ? 8 : 7) - n;
        if (room <= 0)
            return FA_PROXY_EMALFORMED;
        size_t start = i;
        unsigned v = 0;
        int nd = 0, h;
        for (;;) {
            FA_PP_GET(i, c);
            if ((h = fa_pp_hexval(c)) < 0)
                break;
            if (nd == 4)
                return FA_PROXY_EMALFORMED;
            v = v << 4 | (unsigned)h;
            nd++;
            i++;
        }
        if (nd == 0)
            return FA_PROXY_EMALFORMED;     /* ":::", or ":" then no group */
        if (c == '.') {                     /* the last 32 bits as a dotted quad */
            unsigned char q[4];
            if (room < 2)
                return FA_PROXY_EMALFORMED;
            i = start;
            int r = fa_pp_ipv4(b, len, &i, q);
            if (r != FA_PP_OK)
                return r;
            groups[n++] = (unsigned)q[0] << 8 | q[1];
            groups[n++] = (unsigned)q[2] << 8 | q[3];
            break;
        }
        groups[n++] = v;
        if (c != ':')
            break;
        FA_PP_GET(i + 1, c);
        if (c == ':') {
            if (dc >= 0 || n == 8)
                return FA_PROXY_EMALFORMED; /* a second "::", or no room for it */
            dc = n;
            i += 2;
            FA_PP_GET(i, c);
            if (fa_pp_hexval(c) < 0)
                break;                      /* "::" at the end */
            continue;
        }
        if (n == (dc < 0 ? 8 : 7))
            return FA_PROXY_EMALFORMED;     /* a ninth group */
        i++;
    }
end:
    if (dc < 0 && n != 8)
        return FA_PROXY_EMALFORMED;         /* fewer than 128 bits */
    memset(out, 0, 16);
    int head = dc < 0 ? n : dc;
    for (int k = 0; k < head; k++) {
        out[2 * k] = (unsigned char)(groups[k] >> 8);
        out[2 * k + 1] = (unsigned char)groups[k];
    }
    for (int k = head, at = 8 - (n - head); k < n; k++, at++) {
        out[2 * at] = (unsigned char)(groups[k] >> 8);
        out[2 * at + 1] = (unsigned char)groups[k];
    }
    *pos = i;
    return FA_PP_OK;
}

/* The byte at *pos must be want; *pos moves past it. */
static int fa_pp_expect(const unsigned char *b, size_t len, size_t *pos, unsigned want)
{
    unsigned c;
    FA_PP_GET(*pos, c);
    if (c != want)
        return FA_PROXY_EMALFORMED;
    (*pos)++;
    return FA_PP_OK;
}

#define FA_PP_STEP(call)                  \
    do {                                  \
        int r_ = (call);                  \
        if (r_ != FA_PP_OK)               \
            return r_;                    \
    } while (0)

static void fa_pp_sin(struct sockaddr_storage *ss, socklen_t *sl, const unsigned char *addr,
                      unsigned port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    memcpy(&sin->sin_addr, addr, 4);
    *sl = (socklen_t)sizeof(struct sockaddr_in);
}

static void fa_pp_sin6(struct sockaddr_storage *ss, socklen_t *sl, const unsigned char *addr,
                       unsigned port)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    memcpy(&sin6->sin6_addr, addr, 16);
    *sl = (socklen_t)sizeof(struct sockaddr_in6);
}

enum { FA_PP_TCP4, FA_PP_TCP6, FA_PP_UNKNOWN, FA_PP_NWORDS };
static const char fa_pp_words[FA_PP_NWORDS][8] = {"TCP4", "TCP6", "UNKNOWN"};
static const unsigned char fa_pp_word_len[FA_PP_NWORDS] = {4, 4, 7};

static int fa_pp_v1(const unsigned char *b, size_t len, fa_proxy_result *out)
{
    static const char lead[] = "PROXY ";
    unsigned c;
    size_t i;
    for (i = 0; i < 6; i++) {
        FA_PP_GET(i, c);
        if (c != (unsigned char)lead[i])
            return i < 5 ? FA_PROXY_ENOTPROXY : FA_PROXY_EMALFORMED;
    }

    /* The protocol word: its bytes must stay a prefix of one of the three. */
    unsigned live = (1u << FA_PP_NWORDS) - 1;
    size_t j = 0;
    int word = -1;
    for (;;) {
        FA_PP_GET(i + j, c);
        if (c == ' ' || c == '\r') {
            if (j == 0)
                return FA_PROXY_EMALFORMED;
            for (int w = 0; w < FA_PP_NWORDS; w++)
                if ((live >> w & 1) && fa_pp_word_len[w] == j)
                    word = w;
            if (word < 0)
                return FA_PROXY_EFAMILY;
            break;
        }
        if (c < 0x21 || c > 0x7E)
            return FA_PROXY_EMALFORMED;
        for (int w = 0; w < FA_PP_NWORDS; w++)
            if (j >= fa_pp_word_len[w] || (unsigned char)fa_pp_words[w][j] != c)
                live &= ~(1u << w);
        if (live == 0)
            return FA_PROXY_EFAMILY;
        j++;
    }
    i += j;                                 /* at the SP or CR after the word */

    if (word == FA_PP_UNKNOWN) {
        if (c == ' ') {                     /* ignored up to the CRLF */
            for (i++;; i++) {
                FA_PP_GET(i, c);
                if (c == '\r')
                    break;
                if (c < 0x20 || c > 0x7E)
                    return FA_PROXY_EMALFORMED;
            }
        }
        i++;
        FA_PP_STEP(fa_pp_expect(b, len, &i, '\n'));
        memset(out, 0, sizeof(*out));
        out->header_len = (uint32_t)i;
        out->version = 1;
        out->command = FA_PROXY_LOCAL;
        out->family = FA_PROXY_AF_UNSPEC;
        out->transport = FA_PROXY_UNSPEC;
        return (int)i;
    }

    if (c != ' ')
        return FA_PROXY_EMALFORMED;         /* "PROXY TCP4\r": no addresses */
    i++;
    unsigned char src[16], dst[16];
    unsigned sport, dport;
    if (word == FA_PP_TCP4) {
        FA_PP_STEP(fa_pp_ipv4(b, len, &i, src));
        FA_PP_STEP(fa_pp_expect(b, len, &i, ' '));
        FA_PP_STEP(fa_pp_ipv4(b, len, &i, dst));
    } else {
        FA_PP_STEP(fa_pp_ipv6(b, len, &i, src));
        FA_PP_STEP(fa_pp_expect(b, len, &i, ' '));
        FA_PP_STEP(fa_pp_ipv6(b, len, &i, dst));
    }
    FA_PP_STEP(fa_pp_expect(b, len, &i, ' '));
    FA_PP_STEP(fa_pp_decimal(b, len, &i, 65535, &sport));
    FA_PP_STEP(fa_pp_expect(b, len, &i, ' '));
    FA_PP_STEP(fa_pp_decimal(b, len, &i, 65535, &dport));
    FA_PP_STEP(fa_pp_expect(b, len, &i, '\r'));
    FA_PP_STEP(fa_pp_expect(b, len, &i, '\n'));

    memset(out, 0, sizeof(*out));
    out->header_len = (uint32_t)i;
    out->version = 1;
    out->command = FA_PROXY_PROXY;
    out->transport = FA_PROXY_STREAM;
    if (word == FA_PP_TCP4) {
        out->family = FA_PROXY_AF_INET;
        fa_pp_sin(&out->src, &out->src_len, src, sport);
        fa_pp_sin(&out->dst, &out->dst_len, dst, dport);
    } else {
        out->family = FA_PROXY_AF_INET6;
        fa_pp_sin6(&out->src, &out->src_len, src, sport);
        fa_pp_sin6(&out->dst, &out->dst_len, dst, dport);
    }
    return (int)i;
}

/* ------------------------------------------------------------------ */
/* Version 2: a fixed part that gives the length, then the rest at once. */

static const unsigned char fa_pp_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                            0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define FA_PP_UNIX_PATH 108u

static inline unsigned fa_pp_be16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static inline uint32_t fa_pp_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A 108-byte path as accept4() would report it. */
static void fa_pp_sun(struct sockaddr_storage *ss, socklen_t *sl, const unsigned char *path)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)ss;
    size_t n;
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, FA_PP_UNIX_PATH);
    if (path[0] != 0) {
        /* a pathname: up to its NUL, which counts when there is one */
        const unsigned char *nul = memchr(path, 0, FA_PP_UNIX_PATH);
        n = nul ? (size_t)(nul - path) + 1 : FA_PP_UNIX_PATH;
    } else {
        /* abstract (or all zero: unnamed): without the trailing NULs */
        n = FA_PP_UNIX_PATH;
        while (n > 0 && path[n - 1] == 0)
            n--;
    }
    *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

/* TLVs fill b[off, end) exactly. */
static int fa_pp_tlvs_fit(const unsigned char *b, size_t off, size_t end)
{
    while (off < end) {
        if (end - off < 3)
            return 0;
        size_t vlen = fa_pp_be16(b + off + 1);
        if (end - off - 3 < vlen)
            return 0;
        off += 3 + vlen;
    }
    return 1;
}

static int fa_pp_v2(const unsigned char *b, size_t len, size_t max_len, fa_proxy_result *out)
{
    size_t n = len < 12 ? len : 12;
    for (size_t k = 0; k < n; k++)
        if (b[k] != fa_pp_sig[k])
            return FA_PROXY_ENOTPROXY;
    if (len < 13)
        return 0;
    if (b[12] >> 4 != 2)
        return FA_PROXY_EVERSION;
    unsigned command = b[12] & 0x0F;
    if (command > FA_PROXY_PROXY)
        return FA_PROXY_ECOMMAND;
    if (len < 14)
        return 0;
    unsigned fam = b[13];
    size_t asize;
    switch (fam) {
    case 0x00: asize = 0; break;
    case 0x11: case 0x12: asize = 12; break;
    case 0x21: case 0x22: asize = 36; break;
    case 0x31: case 0x32: asize = 2 * FA_PP_UNIX_PATH; break;
    default: return FA_PROXY_EFAMILY;
    }
    if (len < FA_PROXY_V2_FIXED)
        return 0;
    size_t total = FA_PROXY_V2_FIXED + fa_pp_be16(b + 14);
    if (total > max_len)
        return FA_PROXY_ETOOLONG;
    if (total - FA_PROXY_V2_FIXED < asize)
        return FA_PROXY_EMALFORMED;
    if (len < total)
        return 0;

    /* The TLVs: each must fit; the three this parser reads at most once. */
    size_t tlv_off = FA_PROXY_V2_FIXED + asize;
    size_t auth_off = 0, auth_len = 0, crc_off = 0, ssl_off = 0;
    int seen_auth = 0, seen_crc = 0, seen_ssl = 0;
    for (size_t off = tlv_off; off < total;) {
        if (total - off < 3)
            return FA_PROXY_EMALFORMED;
        unsigned type = b[off];
        size_t vlen = fa_pp_be16(b + off + 1);
        size_t v = off + 3;
        if (total - v < vlen)
            return FA_PROXY_EMALFORMED;
        switch (type) {
        case FA_PP2_TYPE_AUTHORITY:
            if (seen_auth++)
                return FA_PROXY_EMALFORMED;
            auth_off = v;
            auth_len = vlen;
            break;
        case FA_PP2_TYPE_CRC32C:
            if (seen_crc++ || vlen != 4)
                return FA_PROXY_EMALFORMED;
            crc_off = v;
            break;
        case FA_PP2_TYPE_SSL:
            if (seen_ssl++ || vlen < 5 || !fa_pp_tlvs_fit(b, v + 5, v + vlen))
                return FA_PROXY_EMALFORMED;
            ssl_off = v;
            break;
        default:
            break;
        }
        off = v + vlen;
    }
    if (seen_crc) {
        static const unsigned char zero[4] = {0, 0, 0, 0};
        uint32_t crc = fa_proxy_crc32c(0, b, crc_off);
        crc = fa_proxy_crc32c(crc, zero, 4);
        crc = fa_proxy_crc32c(crc, b + crc_off + 4, total - crc_off - 4);
        if (crc != fa_pp_be32(b + crc_off))
            return FA_PROXY_ECHECKSUM;
    }

    memset(out, 0, sizeof(*out));
    out->header_len = (uint32_t)total;
    out->version = 2;
    out->command = (uint8_t)command;
    out->family = (uint8_t)(fam >> 4);
    out->transport = (uint8_t)(fam & 0x0F);
    out->tlv_off = (uint32_t)tlv_off;
    out->tlv_len = (uint32_t)(total - tlv_off);
    out->has_authority = (uint8_t)seen_auth;
    out->authority_off = (uint32_t)auth_off;
    out->authority_len = (uint32_t)auth_len;
    out->has_crc32c = (uint8_t)seen_crc;
    if (seen_ssl) {
        out->has_ssl = 1;
        out->ssl_client = b[ssl_off];
        out->ssl_verify = fa_pp_be32(b + ssl_off + 1);
    }
    if (command == FA_PROXY_PROXY) {
        const unsigned char *a = b + FA_PROXY_V2_FIXED;
        switch (fam >> 4) {
        case FA_PROXY_AF_INET:
            fa_pp_sin(&out->src, &out->src_len, a, fa_pp_be16(a + 8));
            fa_pp_sin(&out->dst, &out->dst_len, a + 4, fa_pp_be16(a + 10));
            break;
        case FA_PROXY_AF_INET6:
            fa_pp_sin6(&out->src, &out->src_len, a, fa_pp_be16(a + 32));
            fa_pp_sin6(&out->dst, &out->dst_len, a + 16, fa_pp_be16(a + 34));
            break;
        case FA_PROXY_AF_UNIX:
            fa_pp_sun(&out->src, &out->src_len, a);
            fa_pp_sun(&out->dst, &out->dst_len, a + FA_PP_UNIX_PATH);
            break;
        default:                            /* UNSPEC: the connection's own */
            break;
        }
    }
    return (int)total;
}

/* ------------------------------------------------------------------ */

int fa_proxy_parse_max(const char *buf, size_t len, size_t max_len, fa_proxy_result *out)
{
    const unsigned char *b = (const unsigned char *)buf;
    if (max_len < FA_PROXY_MIN_MAX_LEN)
        max_len = FA_PROXY_MIN_MAX_LEN;
    if (max_len > FA_PROXY_MAX_MAX_LEN)
        max_len = FA_PROXY_MAX_MAX_LEN;
    if (len == 0)
        return 0;
    if (b[0] == 'P')
        return fa_pp_v1(b, len, out);
    if (b[0] == 0x0D)
        return fa_pp_v2(b, len, max_len, out);
    return FA_PROXY_ENOTPROXY;
}

int fa_proxy_parse(const char *buf, size_t len, fa_proxy_result *out)
{
    return fa_proxy_parse_max(buf, len, FA_PROXY_DEFAULT_MAX_LEN, out);
}

/* CRC32c, reflected polynomial 0x82F63B78: fa_pp_crc[i] is the CRC of the
 * byte i (generated; tests/proxy/test_proxy.py checks known values). */
static const uint32_t fa_pp_crc[256] = {
    0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
    0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
    0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
    0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
    0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
    0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
    0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
    0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
    0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
    0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
    0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
    0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
    0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
    0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
    0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
    0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
    0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
    0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
    0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
    0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
    0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
    0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
    0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
    0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
    0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
    0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
    0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
    0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
    0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
    0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
    0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
    0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
    0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
    0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
    0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
    0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
    0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
    0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
    0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
    0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
    0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
    0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
    0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

uint32_t fa_proxy_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = fa_pp_crc[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

const char *fa_proxy_strerror(int rc)
{
    switch (rc) {
    case FA_PROXY_ENOTPROXY: return "not a PROXY protocol header";
    case FA_PROXY_EMALFORMED: return "malformed PROXY protocol header";
    case FA_PROXY_EVERSION: return "unsupported PROXY protocol version";
    case FA_PROXY_ECOMMAND: return "unsupported PROXY protocol command";
    case FA_PROXY_EFAMILY: return "unsupported PROXY protocol family";
    case FA_PROXY_ETOOLONG: return "PROXY protocol header too long";
    case FA_PROXY_ECHECKSUM: return "PROXY protocol header checksum mismatch";
    default: return NULL;
    }
}

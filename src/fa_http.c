/*
 * fa_http.c - the request-head parser, chunked decoder and percent-decoder
 * described in fa_http.h.
 */
#include "fa_http.h"

#include <string.h>

/* Character classes, one bit each (RFC 9110 §5.6.2, RFC 9112, RFC 3986). */
enum {
    FA_C_PLAIN = 0x01,  /* 0x20-0x7E and 0x80-0xFF: not CTL, not DEL */
    FA_C_TCHAR = 0x02,  /* token: ALPHA DIGIT ! # $ % & ' * + - . ^ _ ` | ~ */
    FA_C_TARGET = 0x04, /* request-target: VCHAR (0x21-0x7E) except "#" */
    FA_C_HOST = 0x08,   /* Host: unreserved sub-delims ":" "[" "]" "%" */
    FA_C_HEX = 0x10,    /* HEXDIG, either case */
    FA_C_QDTEXT = 0x20, /* qdtext: HTAB SP 0x21 0x23-0x5B 0x5D-0x7E obs-text */
    FA_C_FVALUE = 0x40, /* field value bytes: VCHAR obs-text SP HTAB */
};

/* Generated from the definitions above; tests/http/test_parser.py checks
 * every byte of each class through the parser. */
static const uint8_t fa_cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  /* 0x00 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  /* 0x10 */
    0x61, 0x6f, 0x45, 0x63, 0x6f, 0x6f, 0x6f, 0x6f, 0x6d, 0x6d, 0x6f, 0x6f, 0x6d, 0x6f, 0x6f, 0x65,  /* 0x20 */
    0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x6d, 0x6d, 0x65, 0x6d, 0x65, 0x65,  /* 0x30 */
    0x65, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f,  /* 0x40 */
    0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6d, 0x45, 0x6d, 0x67, 0x6f,  /* 0x50 */
    0x67, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f,  /* 0x60 */
    0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x6f, 0x65, 0x67, 0x65, 0x6f, 0x00,  /* 0x70 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0x80 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0x90 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0xa0 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0xb0 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0xc0 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0xd0 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0xe0 */
    0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,  /* 0xf0 */
};

#define FA_IS(c, k) (fa_cls[(unsigned char)(c)] & (k))

static inline int fa_is_digit(unsigned char c) { return (unsigned)(c - '0') < 10u; }
static inline int fa_is_alpha(unsigned char c) { return (unsigned)((c | 0x20) - 'a') < 26u; }
static inline int fa_is_ws(unsigned char c) { return c == ' ' || c == '\t'; }

/* The value of a byte known to be HEXDIG. */
static inline unsigned fa_hexval(unsigned char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

/* a[0, n) equals lit (lower case) ignoring ASCII case. */
static int fa_ieq(const unsigned char *a, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = a[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}
#define FA_IEQ(a, n, lit) fa_ieq((a), (n), (lit), sizeof(lit) - 1)

static int fa_all(const unsigned char *a, size_t n, unsigned cls)
{
    for (size_t i = 0; i < n; i++)
        if (!FA_IS(a[i], cls))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Phase 1: line ends, CTLs and limits, resumable.                     */

#define FA_ONES 0x0101010101010101ull
#define FA_HIGHS 0x8080808080808080ull

/* Returns the first index in [p, end) whose byte is not FA_C_PLAIN (a CTL,
 * HTAB, CR, LF or DEL), or end. Eight bytes at a time: a word has a byte
 * below 0x20 iff (x - 0x20..) & ~x & 0x80.. is non-zero, and a DEL iff
 * x ^ 0x7F.. has a zero byte; both tests are exact for "any byte". */
static size_t fa_skip_plain(const unsigned char *b, size_t p, size_t end)
{
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, b + p, 8);
        uint64_t y = x ^ (FA_ONES * 0x7F);
        if ((((x - FA_ONES * 0x20) & ~x) | ((y - FA_ONES) & ~y)) & FA_HIGHS)
            break;
        p += 8;
    }
    while (p < end && FA_IS(b[p], FA_C_PLAIN))
        p++;
    return p;
}

/* ------------------------------------------------------------------ */
/* Phase 2: grammar of the complete head.                              */

/* scheme "://" authority [ ("/" / "?") ... ], a scheme of letters only
 * and an authority of Host bytes. */
static int fa_absolute_form(const unsigned char *t, size_t n)
{
    size_t i = 0;
    while (i < n && fa_is_alpha(t[i]))
        i++;
    if (i == 0 || n - i < 3 || t[i] != ':' || t[i + 1] != '/' || t[i + 2] != '/')
        return 0;
    i += 3;
    size_t a = i;
    while (i < n && FA_IS(t[i], FA_C_HOST))
        i++;
    return i > a && (i == n || t[i] == '/' || t[i] == '?');
}

/* host ":" 1*DIGIT, host non-empty, all of Host bytes. */
static int fa_authority_form(const unsigned char *t, size_t n)
{
    size_t colon = n;
    for (size_t i = 0; i < n; i++) {
        if (!FA_IS(t[i], FA_C_HOST))
            return 0;
        if (t[i] == ':')
            colon = i;
    }
    if (colon == 0 || colon >= n - 1)
        return 0;
    for (size_t i = colon + 1; i < n; i++)
        if (!fa_is_digit(t[i]))
            return 0;
    return 1;
}

/* What the framing and connection fields said, gathered over all lines. */
typedef struct fa_fieldinfo {
    int64_t content_length;     /* -1: none */
    uint32_t hosts;
    uint8_t te;                 /* a Transfer-Encoding field was seen */
    uint8_t te_chunked;         /* chunked was listed */
    uint8_t te_last_chunked;    /* the last coding listed so far is chunked */
    uint8_t te_other;           /* another coding was listed */
    uint8_t close, keep_alive, conn_upgrade, upgrade_field, expect;
} fa_fieldinfo;

/* 1*DIGIT up to 2^63-1; -1 otherwise. */
static int64_t fa_content_length(const unsigned char *v, size_t n)
{
    uint64_t x = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!fa_is_digit(v[i]))
            return -1;
        unsigned d = (unsigned)(v[i] - '0');
        if (x > ((uint64_t)INT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    return (int64_t)x;
}

/* Splits v[0, n) at commas, trims OWS off each element and passes it to
 * the Transfer-Encoding (te) or Connection (!te) rules. Returns 0 or -status. */
static int fa_list(const unsigned char *v, size_t n, int te, fa_fieldinfo *fi)
{
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t a = i, z = j;
        while (a < z && fa_is_ws(v[a]))
            a++;
        while (z > a && fa_is_ws(v[z - 1]))
            z--;
        const unsigned char *e = v + a;
        size_t len = z - a;
        if (te) {
            if (len == 0 || !fa_all(e, len, FA_C_TCHAR))
                return -400;
            if (FA_IEQ(e, len, "chunked")) {
                if (fi->te_chunked)
                    return -400;
                fi->te_chunked = fi->te_last_chunked = 1;
            } else {
                fi->te_other = 1;
                fi->te_last_chunked = 0;
            }
        } else if (len != 0) {
            if (!fa_all(e, len, FA_C_TCHAR))
                return -400;
            if (FA_IEQ(e, len, "close"))
                fi->close = 1;
            else if (FA_IEQ(e, len, "keep-alive"))
                fi->keep_alive = 1;
            else if (FA_IEQ(e, len, "upgrade"))
                fi->conn_upgrade = 1;
        }
        if (j >= n)
            return 0;
        i = j + 1;
    }
}

/* Applies the rules of the fields that frame the message or steer the
 * connection; the rest are only recorded. trailing_ows tells whether the
 * value had whitespace after it. Returns 0 or -status. */
static int fa_field_rules(const unsigned char *name, size_t nlen, const unsigned char *v,
                          size_t vlen, int trailing_ows, fa_fieldinfo *fi)
{
    /* Dispatch on length first: most fields match none of these. */
    switch (nlen) {
    case 4:
        if (FA_IEQ(name, nlen, "host")) {
            if (++fi->hosts > 1 || !fa_all(v, vlen, FA_C_HOST))
                return -400;
        }
        break;
    case 6:
        if (FA_IEQ(name, nlen, "expect") && FA_IEQ(v, vlen, "100-continue"))
            fi->expect = 1;
        break;
    case 7:
        if (FA_IEQ(name, nlen, "upgrade"))
            fi->upgrade_field = 1;
        break;
    case 10:
        if (FA_IEQ(name, nlen, "connection"))
            return fa_list(v, vlen, 0, fi);
        break;
    case 14:
        if (FA_IEQ(name, nlen, "content-length")) {
            if (fi->content_length >= 0)
                return -400;
            fi->content_length = fa_content_length(v, vlen);
            if (fi->content_length < 0)
                return -400;
        }
        break;
    case 17:
        if (FA_IEQ(name, nlen, "transfer-encoding")) {
            /* "chunked\t" and "chunked " are TE.TE obfuscations: parsers on
             * the path strip trailing whitespace differently (llhttp takes
             * the one and refuses the other), so refuse both. */
            if (trailing_ows)
                return -400;
            fi->te = 1;
            return fa_list(v, vlen, 1, fi);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Parses the head b[start, head_len), which phase 1 found complete: every
 * line ends in CRLF and holds no CTL but HTAB. Scans stop at the first byte
 * outside their class, at the latest at the CR that phase 1 verified at
 * head_len - 2 in this call, so none needs a bounds check; memchr is bounded
 * by head_len. */
static int fa_parse_complete(const unsigned char *b, size_t start, size_t head_len,
                             const fa_http_limits *lim, fa_http_head *out,
                             fa_http_field *fields)
{
    const unsigned char *cr = memchr(b + start, '\r', head_len - start);
    if (cr == NULL)
        return -400;
    size_t eol = (size_t)(cr - b);

    /* request-line = method SP request-target SP HTTP-version */
    size_t m = start;
    while (FA_IS(b[m], FA_C_TCHAR))
        m++;
    if (m == start || b[m] != ' ')
        return -400;
    size_t t0 = m + 1, t = t0;
    while (FA_IS(b[t], FA_C_TARGET))
        t++;
    if (t == t0 || b[t] != ' ')
        return -400;
    const unsigned char *ver = b + t + 1;
    if (eol - (t + 1) != 8 || memcmp(ver, "HTTP/", 5) != 0 || !fa_is_digit(ver[5]) ||
        ver[6] != '.' || !fa_is_digit(ver[7]))
        return -400;
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1'))
        return -505;
    uint8_t minor = (uint8_t)(ver[7] - '0');

    const unsigned char *method = b + start, *target = b + t0;
    size_t mlen = m - start, tlen = t - t0;
    int connect = mlen == 7 && memcmp(method, "CONNECT", 7) == 0;
    if (target[0] == '/') {
        if (connect)
            return -400;
    } else if (tlen == 1 && target[0] == '*') {
        if (!(mlen == 7 && memcmp(method, "OPTIONS", 7) == 0))
            return -400;
    } else if (connect) {
        if (!fa_authority_form(target, tlen))
            return -400;
    } else if (!fa_absolute_form(target, tlen)) {
        return -400;
    }
    const unsigned char *q = memchr(target, '?', tlen);

    /* field-line = field-name ":" OWS field-value OWS, up to the empty line */
    fa_fieldinfo fi;
    memset(&fi, 0, sizeof fi);
    fi.content_length = -1;
    uint32_t nf = 0;
    size_t last = head_len - 2;     /* the CR of the empty line */
    size_t p = eol + 2;
    while (p < last) {
        size_t n = p;
        while (FA_IS(b[n], FA_C_TCHAR))
            n++;
        /* An empty name covers obs-fold and a leading SP/HTAB; a non-colon
         * stop covers whitespace before the colon. */
        if (n == p || b[n] != ':')
            return -400;
        size_t v = n + 1;
        while (fa_is_ws(b[v]))
            v++;
        const unsigned char *e = memchr(b + v, '\r', head_len - v);
        if (e == NULL)
            return -400;
        size_t le = (size_t)(e - b), ve = le;
        while (ve > v && fa_is_ws(b[ve - 1]))
            ve--;
        /* Phase 1 counted the lines; this guards fields[] on its own. */
        if (nf >= lim->max_fields)
            return -431;
        fields[nf].name_off = (uint32_t)p;
        fields[nf].name_len = (uint32_t)(n - p);
        fields[nf].value_off = (uint32_t)v;
        fields[nf].value_len = (uint32_t)(ve - v);
        nf++;
        int rc = fa_field_rules(b + p, n - p, b + v, ve - v, ve != le, &fi);
        if (rc < 0)
            return rc;
        p = le + 2;
    }

    if (minor == 1 && fi.hosts == 0)
        return -400;
    if (fi.te) {
        if (fi.content_length >= 0 || minor == 0 || !fi.te_last_chunked)
            return -400;
        if (fi.te_other)
            return -501;
    }

    out->head_len = (uint32_t)head_len;
    out->method_off = (uint32_t)start;
    out->method_len = (uint32_t)mlen;
    out->target_off = (uint32_t)t0;
    out->target_len = (uint32_t)tlen;
    out->path_len = (uint32_t)(q ? (size_t)(q - target) : tlen);
    out->nfields = nf;
    out->content_length = fi.content_length;
    out->version_minor = minor;
    out->chunked = fi.te;
    out->keep_alive = (uint8_t)(!fi.close && (minor == 1 || fi.keep_alive));
    out->expect_continue = (uint8_t)(minor == 1 && fi.expect);
    out->upgrade = (uint8_t)(minor == 1 && fi.conn_upgrade && fi.upgrade_field);
    return (int)head_len;
}

int fa_http_parse_head(const char *buf, size_t len, fa_http_scan *s,
                       const fa_http_limits *lim, fa_http_head *out,
                       fa_http_field *fields)
{
    const unsigned char *b = (const unsigned char *)buf;
    /* Nothing at or past max_head is ever read: a head that has not ended
     * by then is too large whatever follows. */
    size_t end = len < lim->max_head ? len : lim->max_head;
    size_t p = s->pos, line = s->line;

    /* A scan state that does not fit this buffer is a caller's bug; refuse
     * it rather than read outside buf. */
    if (p > end || line > p || s->start > line)
        return -400;

    for (;;) {
        p = fa_skip_plain(b, p, end);
        if (s->lines == 0 && p - line > lim->max_request_line)
            return -414;
        if (p == end)
            break;
        if (b[p] == '\t') {         /* allowed in values; phase 2 places it */
            p++;
            continue;
        }
        if (b[p] != '\r')           /* bare LF, NUL, another CTL, DEL */
            return -400;
        if (p + 1 == end)           /* its LF has not arrived (or is past max_head) */
            break;
        if (b[p + 1] != '\n')       /* bare CR */
            return -400;
        if (p == line) {            /* an empty line */
            if (s->lines != 0) {
                s->pos = (uint32_t)p;
                s->line = (uint32_t)line;
                return fa_parse_complete(b, s->start, p + 2, lim, out, fields);
            }
            s->start = (uint32_t)(p + 2);   /* before the request line: skip */
        } else {
            /* lines counts the request line, so it is the number of field
             * lines once this one is in. */
            if (s->lines > lim->max_fields)
                return -431;
            s->lines++;
        }
        p += 2;
        line = p;
    }
    s->pos = (uint32_t)p;
    s->line = (uint32_t)line;
    return len >= lim->max_head ? -431 : 0;
}

/* ------------------------------------------------------------------ */
/* Chunked bodies.                                                     */

enum {
    CS_SIZE0,       /* the first digit of a chunk size */
    CS_SIZE,        /* more digits, or what follows them */
    CS_BWS_SEMI,    /* BWS that must lead to ";" */
    CS_EXT_NAME0,   /* after ";": BWS, then the name */
    CS_EXT_NAME,
    CS_EXT_BWS_EQ,  /* BWS after a name: "=" or the next ";" */
    CS_EXT_VAL0,    /* after "=": BWS, then a token or quoted-string */
    CS_EXT_TOKEN,
    CS_EXT_QUOTED,
    CS_EXT_QPAIR,   /* after a backslash in a quoted-string */
    CS_EXT_QEND,    /* after the closing quote */
    CS_SIZE_LF,     /* the LF ending the size line (the last size-line state) */
    CS_DATA,
    CS_DATA_CR,
    CS_DATA_LF,
    CS_TR_LINE,     /* start of a trailer line, or the final CR */
    CS_TR_NAME,
    CS_TR_VALUE,
    CS_TR_LF,
    CS_FINAL_LF,
    CS_DONE,
};

void fa_http_chunked_init(fa_http_chunked *c, uint64_t max_body)
{
    memset(c, 0, sizeof *c);
    c->max_body = max_body;
    c->state = CS_SIZE0;
}

/* One byte of chunk-size. Returns 0 or -413. */
static int fa_size_digit(fa_http_chunked *c, unsigned char ch)
{
    unsigned d = fa_hexval(ch);
    if (c->digits == 0 && d == 0)   /* a leading zero: the line bound limits them */
        return 0;
    /* 16 digits fit in 64 bits; a 17th means a size past any max_body. */
    if (++c->digits > 16)
        return -413;
    c->left = c->left << 4 | d;
    return c->left > c->max_body - c->body ? -413 : 0;
}

/* After the size or an extension value: BWS ";" or the CR. */
static uint16_t fa_after_ext(unsigned char ch)
{
    if (fa_is_ws(ch))
        return CS_BWS_SEMI;
    if (ch == ';')
        return CS_EXT_NAME0;
    if (ch == '\r')
        return CS_SIZE_LF;
    return CS_DONE + 1;     /* no state: an error */
}

int fa_http_chunked_feed(fa_http_chunked *c, const char *in_, size_t len, char *out_,
                         size_t *consumed, size_t *produced)
{
    const unsigned char *in = (const unsigned char *)in_;
    unsigned char *out = (unsigned char *)out_;
    size_t i = 0, o = 0;
    int rc = 0;

    *consumed = *produced = 0;
    if (c->status != 0)
        return c->status;
    if (c->state == CS_DONE)
        return 1;

    while (i < len) {
        if (c->state == CS_DATA) {
            size_t n = len - i;
            if (n > c->left)
                n = (size_t)c->left;
            /* o <= i always, so this moves data back or not at all */
            if (out + o != in + i)
                memmove(out + o, in + i, n);
            i += n;
            o += n;
            c->left -= n;
            c->body += n;
            if (c->left == 0)
                c->state = CS_DATA_CR;
            continue;
        }

        unsigned char ch = in[i++];
        unsigned st = c->state;
        if (st < CS_SIZE_LF && ch != '\r' && ++c->meta > FA_HTTP_MAX_CHUNK_LINE) {
            rc = -400;
            break;
        }
        if (st >= CS_TR_LINE && ++c->meta > FA_HTTP_MAX_TRAILER) {
            rc = -400;
            break;
        }
        switch (st) {
        case CS_SIZE0:
            if (!FA_IS(ch, FA_C_HEX)) {
                rc = -400;
                break;
            }
            rc = fa_size_digit(c, ch);
            st = CS_SIZE;
            break;
        case CS_SIZE:
            if (FA_IS(ch, FA_C_HEX))
                rc = fa_size_digit(c, ch);
            else
                st = fa_after_ext(ch);
            break;
        case CS_BWS_SEMI:
            if (ch == ';')
                st = CS_EXT_NAME0;
            else if (!fa_is_ws(ch))
                rc = -400;
            break;
        case CS_EXT_NAME0:
            if (FA_IS(ch, FA_C_TCHAR))
                st = CS_EXT_NAME;
            else if (!fa_is_ws(ch))
                rc = -400;
            break;
        case CS_EXT_NAME:
            if (FA_IS(ch, FA_C_TCHAR))
                break;
            if (fa_is_ws(ch))
                st = CS_EXT_BWS_EQ;
            else if (ch == '=')
                st = CS_EXT_VAL0;
            else
                st = fa_after_ext(ch);
            break;
        case CS_EXT_BWS_EQ:
            if (ch == '=')
                st = CS_EXT_VAL0;
            else if (ch == ';')
                st = CS_EXT_NAME0;
            else if (!fa_is_ws(ch))
                rc = -400;
            break;
        case CS_EXT_VAL0:
            if (FA_IS(ch, FA_C_TCHAR))
                st = CS_EXT_TOKEN;
            else if (ch == '"')
                st = CS_EXT_QUOTED;
            else if (!fa_is_ws(ch))
                rc = -400;
            break;
        case CS_EXT_TOKEN:
            if (!FA_IS(ch, FA_C_TCHAR))
                st = fa_after_ext(ch);
            break;
        case CS_EXT_QUOTED:
            if (ch == '"')
                st = CS_EXT_QEND;
            else if (ch == '\\')
                st = CS_EXT_QPAIR;
            else if (!FA_IS(ch, FA_C_QDTEXT))
                rc = -400;
            break;
        case CS_EXT_QPAIR:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (FA_IS(ch, FA_C_FVALUE))
                st = CS_EXT_QUOTED;
            else
                rc = -400;
            break;
        case CS_EXT_QEND:
            st = fa_after_ext(ch);
            break;
        case CS_SIZE_LF:
            if (ch != '\n') {
                rc = -400;
                break;
            }
            c->meta = 0;
            st = c->left == 0 ? CS_TR_LINE : CS_DATA;
            break;
        case CS_DATA_CR:
            if (ch == '\r')
                st = CS_DATA_LF;
            else
                rc = -400;
            break;
        case CS_DATA_LF:
            if (ch != '\n') {
                rc = -400;
                break;
            }
            c->digits = 0;
            st = CS_SIZE0;
            break;
        case CS_TR_LINE:
            if (ch == '\r')
                st = CS_FINAL_LF;
            else if (FA_IS(ch, FA_C_TCHAR))
                st = CS_TR_NAME;
            else
                rc = -400;      /* obs-fold, whitespace, a non-token */
            break;
        case CS_TR_NAME:
            if (ch == ':')
                st = CS_TR_VALUE;
            else if (!FA_IS(ch, FA_C_TCHAR))
                rc = -400;
            break;
        case CS_TR_VALUE:
            if (ch == '\r')
                st = CS_TR_LF;
            else if (!FA_IS(ch, FA_C_FVALUE))
                rc = -400;
            break;
        case CS_TR_LF:
            if (ch == '\n')
                st = CS_TR_LINE;
            else
                rc = -400;
            break;
        case CS_FINAL_LF:
            if (ch == '\n')
                st = CS_DONE;
            else
                rc = -400;
            break;
        default:
            rc = -400;
            break;
        }
        if (rc == 0 && st > CS_DONE)
            rc = -400;
        if (rc < 0)
            break;
        c->state = (uint16_t)st;
        if (st == CS_DONE) {
            *consumed = i;
            *produced = o;
            return 1;
        }
    }
    *consumed = i;
    *produced = o;
    if (rc < 0) {
        c->status = rc;
        return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ */

size_t fa_http_unquote(const char *in_, size_t len, char *out_)
{
    const unsigned char *in = (const unsigned char *)in_;
    unsigned char *out = (unsigned char *)out_;
    size_t i = 0, o = 0;
    while (i < len) {
        const unsigned char *pct = memchr(in + i, '%', len - i);
        size_t run = (pct ? (size_t)(pct - in) : len) - i;
        /* o <= i always: in place this moves bytes back or not at all */
        if (run != 0 && out + o != in + i)
            memmove(out + o, in + i, run);
        i += run;
        o += run;
        if (pct == NULL)
            break;
        if (len - i >= 3 && FA_IS(in[i + 1], FA_C_HEX) && FA_IS(in[i + 2], FA_C_HEX)) {
            unsigned char ch = (unsigned char)(fa_hexval(in[i + 1]) << 4 | fa_hexval(in[i + 2]));
            out[o++] = ch;
            i += 3;
        } else {
            out[o++] = '%';
            i++;
        }
    }
    return o;
}

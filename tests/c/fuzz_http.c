/*
 * fuzz_http.c - libFuzzer target for src/fa_http.c: the request-head parser,
 * the chunked decoder and unquote.
 *
 * Each input is treated as bytes arriving on a connection:
 *  - The head is parsed at once, then again in three pieces (split at
 *    offsets derived from a hash of the input, the first piece in a buffer
 *    of exactly its size so that ASan sees any read past len), then a byte
 *    at a time; all must give the same result, and a complete head must be
 *    reported exactly when its last byte arrives. This is done with the
 *    default limits and with tight ones (also derived from the hash), so the
 *    414/431 paths are reached.
 *  - A complete head's result is checked for its invariants: offsets and
 *    lengths inside the head, head_len <= len and <= max_head, the head
 *    ending in CRLFCRLF, values without surrounding OWS, flags 0 or 1, no
 *    status outside 400 414 431 501 505.
 *  - The chunked decoder is run on the body after a chunked head, and on the
 *    whole input as a body: at once into a separate buffer, at once in
 *    place, split in two, and a byte at a time. All must agree on the data,
 *    the bytes consumed and the outcome; produced <= consumed <= len always.
 *  - unquote must equal a plain reference implementation, in place too, and
 *    never grow its input.
 *
 * Build: `make fuzz` (clang, -fsanitize=fuzzer,address,undefined). With
 * -DFA_FUZZ_STANDALONE it has its own main that replays the files and
 * directories named on the command line, so it also runs under gcc's
 * sanitizers (tests/http/test_fuzz_replay.py does that over the corpus).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_http.h"

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

static int is_ows(uint8_t c) { return c == ' ' || c == '\t'; }

/* ------------------------------------------------------------------ */
/* Head                                                                */

typedef struct head_result {
    int rc;
    fa_http_head head;
    fa_http_field *fields;      /* lim->max_fields entries */
} head_result;

static int same_head(const head_result *a, const head_result *b)
{
    if (a->rc != b->rc)
        return 0;
    if (a->rc <= 0)
        return 1;
    const fa_http_head *x = &a->head, *y = &b->head;
    if (x->head_len != y->head_len || x->method_off != y->method_off ||
        x->method_len != y->method_len || x->target_off != y->target_off ||
        x->target_len != y->target_len || x->path_len != y->path_len ||
        x->nfields != y->nfields || x->content_length != y->content_length ||
        x->version_minor != y->version_minor || x->chunked != y->chunked ||
        x->keep_alive != y->keep_alive || x->expect_continue != y->expect_continue ||
        x->upgrade != y->upgrade)
        return 0;
    for (uint32_t i = 0; i < x->nfields; i++) {
        const fa_http_field *f = &a->fields[i], *g = &b->fields[i];
        if (f->name_off != g->name_off || f->name_len != g->name_len ||
            f->value_off != g->value_off || f->value_len != g->value_len)
            return 0;
    }
    return 1;
}

static void check_head_invariants(const uint8_t *d, size_t len, const fa_http_limits *lim,
                                  const head_result *r)
{
    int rc = r->rc;
    CHECK(rc >= 0 || rc == -400 || rc == -414 || rc == -431 || rc == -501 || rc == -505);
    if (rc <= 0)
        return;
    const fa_http_head *h = &r->head;
    size_t n = (size_t)rc;
    CHECK(n <= len && n <= lim->max_head && h->head_len == n);
    CHECK(n >= 4 && memcmp(d + n - 4, "\r\n\r\n", 4) == 0);
    /* no CTL but HTAB and the CRLFs, no DEL; CR and LF only as CRLF */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = d[i];
        CHECK((c >= 0x20 && c != 0x7f) || c == '\t' || c == '\r' || c == '\n');
        if (c == '\r')
            CHECK(i + 1 < n && d[i + 1] == '\n');
        if (c == '\n')
            CHECK(i > 0 && d[i - 1] == '\r');
    }
    CHECK(h->method_len > 0 && h->method_off + h->method_len < n);
    CHECK(h->target_off == h->method_off + h->method_len + 1);
    CHECK(d[h->method_off + h->method_len] == ' ');
    CHECK(h->target_len > 0 && h->target_off + h->target_len < n);
    CHECK(d[h->target_off + h->target_len] == ' ');
    CHECK(h->path_len <= h->target_len);
    CHECK(h->path_len == h->target_len || d[h->target_off + h->path_len] == '?');
    CHECK(memchr(d + h->target_off, '?', h->path_len) == NULL);
    /* the request line: exactly max_request_line or less, then CRLF */
    size_t line_end = h->target_off + h->target_len + 9;
    CHECK(line_end + 2 <= n && d[line_end] == '\r' && d[line_end + 1] == '\n');
    CHECK(line_end - h->method_off <= lim->max_request_line);
    CHECK(memcmp(d + h->target_off + h->target_len + 1, "HTTP/1.", 7) == 0);
    CHECK(h->version_minor <= 1 && d[line_end - 1] == '0' + h->version_minor);
    /* only empty lines before the request line */
    for (size_t i = 0; i < h->method_off; i += 2)
        CHECK(d[i] == '\r' && d[i + 1] == '\n');
    CHECK(h->nfields <= lim->max_fields);
    CHECK(h->version_minor == 0 || h->nfields >= 1);    /* Host */
    size_t prev_end = line_end + 2;
    for (uint32_t i = 0; i < h->nfields; i++) {
        const fa_http_field *f = &r->fields[i];
        CHECK(f->name_off == prev_end && f->name_len > 0);
        CHECK(d[f->name_off + f->name_len] == ':');
        CHECK(f->value_off > f->name_off + f->name_len);
        CHECK(f->value_off + f->value_len <= n - 4);
        if (f->value_len > 0)
            CHECK(!is_ows(d[f->value_off]) && !is_ows(d[f->value_off + f->value_len - 1]));
        const uint8_t *cr = memchr(d + f->value_off, '\r', n - f->value_off);
        CHECK(cr != NULL && cr[1] == '\n');
        CHECK((size_t)(cr - d) >= f->value_off + f->value_len);
        for (size_t j = f->name_off + f->name_len + 1; j < f->value_off; j++)
            CHECK(is_ows(d[j]));
        for (size_t j = f->value_off + f->value_len; j < (size_t)(cr - d); j++)
            CHECK(is_ows(d[j]));
        prev_end = (size_t)(cr - d) + 2;
    }
    CHECK(prev_end == n - 2);
    CHECK(h->content_length >= -1);
    CHECK(!(h->chunked && h->content_length >= 0));
    CHECK(!(h->chunked && h->version_minor == 0));
    CHECK(h->chunked <= 1 && h->keep_alive <= 1 && h->expect_continue <= 1 && h->upgrade <= 1);
    CHECK(!(h->upgrade && h->version_minor == 0));
    CHECK(!(h->expect_continue && h->version_minor == 0));
}

static head_result parse_at_once(const uint8_t *d, size_t len, const fa_http_limits *lim)
{
    head_result r;
    fa_http_scan s;
    r.fields = xmalloc(sizeof(fa_http_field) * (lim->max_fields + 1));
    fa_http_scan_init(&s);
    r.rc = fa_http_parse_head((const char *)d, len, &s, lim, &r.head, r.fields);
    return r;
}

/* Feeds d at the lengths cuts[0] < cuts[1] < ... <= len; the first piece is
 * copied into a buffer of exactly its size. Returns the first final result
 * and sets *at to the length it came at. */
static head_result parse_in_pieces(const uint8_t *d, size_t len, const size_t *cuts,
                                   size_t ncuts, const fa_http_limits *lim, size_t *at)
{
    head_result r;
    fa_http_scan s;
    r.fields = xmalloc(sizeof(fa_http_field) * (lim->max_fields + 1));
    r.rc = 0;
    fa_http_scan_init(&s);
    *at = len;
    for (size_t i = 0; i < ncuts; i++) {
        size_t k = cuts[i];
        uint8_t *exact = NULL;
        const uint8_t *buf = d;
        if (i == 0) {
            exact = xmalloc(k);
            memcpy(exact, d, k);
            buf = exact;
        }
        r.rc = fa_http_parse_head((const char *)buf, k, &s, lim, &r.head, r.fields);
        CHECK(s.pos <= k);
        free(exact);
        if (r.rc != 0) {
            *at = k;
            break;
        }
    }
    return r;
}

static void check_head(const uint8_t *d, size_t len, const fa_http_limits *lim, uint64_t h,
                       head_result *out)
{
    head_result once = parse_at_once(d, len, lim);
    check_head_invariants(d, len, lim, &once);

    size_t a = len ? (size_t)(h % (len + 1)) : 0;
    size_t b = len ? (size_t)((h >> 20) % (len + 1)) : 0;
    size_t cuts[3] = {a < b ? a : b, a < b ? b : a, len};
    size_t at;
    head_result pieces = parse_in_pieces(d, len, cuts, 3, lim, &at);
    CHECK(same_head(&once, &pieces));
    free(pieces.fields);

    /* a byte at a time (len is bounded by the fuzzer's max_len) */
    size_t *all = xmalloc(sizeof(size_t) * (len + 1));
    size_t nall = 0;
    for (size_t k = 1; k <= len; k++)
        all[nall++] = k;
    head_result bytewise = parse_in_pieces(d, len, all, nall, lim, &at);
    free(all);
    CHECK(same_head(&once, &bytewise));
    if (once.rc > 0)
        CHECK(at == (size_t)once.rc);
    free(bytewise.fields);

    if (out)
        *out = once;
    else
        free(once.fields);
}

/* ------------------------------------------------------------------ */
/* Chunked bodies                                                      */

typedef struct chunk_result {
    int rc;
    size_t consumed, produced;
    uint8_t *data;              /* produced bytes */
} chunk_result;

/* Feeds body at the given cut lengths (the last is len); out of place
 * unless in_place. */
static chunk_result decode(const uint8_t *body, size_t len, uint64_t max_body,
                           const size_t *cuts, size_t ncuts, int in_place)
{
    chunk_result r = {0, 0, 0, xmalloc(len)};
    fa_http_chunked c;
    uint8_t *work = NULL;
    if (in_place) {
        work = xmalloc(len);
        memcpy(work, body, len);
    }
    fa_http_chunked_init(&c, max_body);
    size_t prev = 0;
    for (size_t i = 0; i < ncuts; i++) {
        size_t k = cuts[i], consumed = 99, produced = 99;
        CHECK(k >= prev && k <= len);
        int rc;
        if (in_place) {
            rc = fa_http_chunked_feed(&c, (char *)work + prev, k - prev, (char *)work + prev,
                                      &consumed, &produced);
            memcpy(r.data + r.produced, work + prev, produced);
        } else {
            rc = fa_http_chunked_feed(&c, (const char *)body + prev, k - prev,
                                      (char *)r.data + r.produced, &consumed, &produced);
        }
        CHECK(rc == 1 || rc == 0 || rc == -400 || rc == -413);
        CHECK(produced <= consumed && consumed <= k - prev);
        CHECK(rc != 0 || consumed == k - prev);
        r.consumed += consumed;
        r.produced += produced;
        r.rc = rc;
        CHECK(c.body == r.produced && c.body <= max_body);
        if (rc != 0) {
            /* final: another feed changes nothing */
            size_t c2 = 99, p2 = 99;
            char one = 'x';
            CHECK(fa_http_chunked_feed(&c, &one, 1, &one, &c2, &p2) == rc);
            CHECK(p2 == 0 && (rc < 0 || c2 == 0));
            break;
        }
        prev = k;
    }
    free(work);
    return r;
}

static int same_chunks(const chunk_result *a, const chunk_result *b)
{
    if (a->rc != b->rc || a->produced != b->produced || a->consumed != b->consumed)
        return 0;
    return memcmp(a->data, b->data, a->produced) == 0;
}

static void check_chunked(const uint8_t *body, size_t len, uint64_t h)
{
    /* small (413 on ordinary sizes), large, and the largest (so that a 17th
     * significant digit is what refuses the size) */
    uint64_t max_body = (h & 3) == 0 ? (uint64_t)INT64_MAX
                        : (h & 3) == 1 ? (uint64_t)1 << 40 : (h >> 2) % 4096;
    size_t whole[1] = {len};
    chunk_result once = decode(body, len, max_body, whole, 1, 0);
    chunk_result inplace = decode(body, len, max_body, whole, 1, 1);
    CHECK(same_chunks(&once, &inplace));

    size_t k = len ? (size_t)((h >> 8) % (len + 1)) : 0;
    size_t two[2] = {k, len};
    chunk_result split = decode(body, len, max_body, two, 2, (h >> 7) & 1);
    CHECK(same_chunks(&once, &split));

    size_t *all = xmalloc(sizeof(size_t) * (len + 1));
    size_t nall = 0;
    for (size_t i = 1; i <= len; i++)
        all[nall++] = i;
    chunk_result bytewise = decode(body, len, max_body, all, nall, 0);
    free(all);
    CHECK(same_chunks(&once, &bytewise));
    if (once.rc == 1)
        CHECK(once.consumed >= 5);      /* at least "0\r\n\r\n" */

    free(once.data);
    free(inplace.data);
    free(split.data);
    free(bytewise.data);
}

/* ------------------------------------------------------------------ */
/* unquote                                                             */

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void check_unquote(const uint8_t *d, size_t len)
{
    uint8_t *ref = xmalloc(len), *out = xmalloc(len), *work = xmalloc(len);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] == '%' && i + 2 < len && hexval(d[i + 1]) >= 0 && hexval(d[i + 2]) >= 0) {
            ref[n++] = (uint8_t)(hexval(d[i + 1]) * 16 + hexval(d[i + 2]));
            i += 2;
        } else {
            ref[n++] = d[i];
        }
    }
    size_t m = fa_http_unquote((const char *)d, len, (char *)out);
    CHECK(m == n && m <= len && memcmp(out, ref, n) == 0);
    memcpy(work, d, len);
    m = fa_http_unquote((const char *)work, len, (char *)work);
    CHECK(m == n && memcmp(work, ref, n) == 0);
    free(ref);
    free(out);
    free(work);
}

/* ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = fnv1a(data, size);

    fa_http_limits defaults = {FA_HTTP_DEFAULT_MAX_REQUEST_LINE, FA_HTTP_DEFAULT_MAX_FIELDS,
                               FA_HTTP_DEFAULT_MAX_HEAD};
    head_result head;
    check_head(data, size, &defaults, h, &head);

    fa_http_limits tight = {1 + (uint32_t)((h >> 32) % 200), (uint32_t)((h >> 40) % 10),
                            1 + (uint32_t)((h >> 44) % 1024)};
    check_head(data, size, &tight, h * 31, NULL);

    if (head.rc > 0 && head.head.chunked)
        check_chunked(data + head.rc, size - (size_t)head.rc, h);
    free(head.fields);
    check_chunked(data, size, h >> 3);
    check_unquote(data, size);
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
